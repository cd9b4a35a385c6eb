"""Child process of figure 5: inference throughput of exported modules vs their references.

Usage::

    python benchmarks/inference_child.py MODE SPECS CACHE MODULES ARCHS BATCH REPS OUT_JSON

MODE ``hub_load``: per architecture, the version 3 classification module
through ``hub.load(...).signatures["default"]`` vs the net run directly from
the checkpoint (``hubexport.nets.checkpoint_function``), in this process.
MODE ``keras_layer`` (run with TF_USE_LEGACY_KERAS=1): the version 5
classification module through ``hub.KerasLayer`` vs ``checkpoint_function``,
and for inception_resnet_v2 also ``tf_keras.applications.InceptionResNetV2(
weights=None)``. The layer and the Keras model are each called inside a
``tf.function`` (as Keras' predict does); so is ``checkpoint_function``.

All candidates get the same float32 batch [BATCH, size, size, 3] in [0, 1]
at the spec's default size. Each is called WARMUP times untimed (tracing, warm-up),
then REPS rounds run every candidate once per round, interleaved, each call
timed to its numpy result. OUT_JSON receives per architecture the call
times (s), the largest |module - checkpoint| difference of the logits, and
op-type counts of each candidate's graph (functions followed through calls).
"""

from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path


WARMUP = 2  # untimed calls per candidate (the first one traces and optimizes the graph)


def op_histogram(concrete_function) -> dict:
    """Op types in a concrete function's graph, following calls into library functions."""
    graph_def = concrete_function.graph.as_graph_def()
    library = {f.signature.name: f for f in graph_def.library.function}
    counts = collections.Counter()
    seen = set()

    def visit(nodes):
        for node in nodes:
            name = node.op if node.op in library else None
            if name is None and "f" in node.attr and node.attr["f"].func.name in library:
                name = node.attr["f"].func.name
            if name is None:
                counts[node.op] += 1
            elif name not in seen:
                seen.add(name)
                visit(library[name].node_def)

    visit(graph_def.node)
    return dict(counts)


def main(argv):
    mode, specs_dir, cache, modules, archs, batch, reps, out_json = argv[1:9]
    batch, reps = int(batch), int(reps)
    import numpy as np
    import tensorflow as tf
    import tensorflow_hub as hub

    from hubexport import fetch
    from hubexport.checkpoint import Checkpoint
    from hubexport.nets import checkpoint_function, variable_requests
    from hubexport.specs import load_specs

    specs = load_specs(specs_dir)
    results = {"mode": mode, "threads": [tf.config.threading.get_intra_op_parallelism_threads(),
                                         tf.config.threading.get_inter_op_parallelism_threads()]}
    for arch in archs.split(","):
        spec = specs[arch]
        size = spec.image_size
        handle = spec.modules["classification"].handle
        setup = {}
        t0 = time.perf_counter()
        ckpt = fetch.fetch_checkpoint(spec, cache_dir=cache, mirror="http://127.0.0.1:9/unused",
                                      progress=False)
        values = Checkpoint(ckpt).values(r.name for r in variable_requests(arch))
        reference = checkpoint_function(arch, values)
        images = tf.constant(np.random.default_rng(5).random((batch, size, size, 3),
                                                             dtype=np.float32))
        spec_in = tf.TensorSpec([batch, size, size, 3], tf.float32)
        candidates = {"checkpoint": (lambda x: reference(x)[0],
                                     reference.get_concrete_function(spec_in))}
        setup["checkpoint"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if mode == "hub_load":
            module = hub.load(str(Path(modules) / handle / "3"))
            sig = module.signatures["default"]
            candidates["module"] = (lambda x: sig(images=x)["default"], sig)
        else:
            import tf_keras

            layer = hub.KerasLayer(str(Path(modules) / handle / "5"))
            run_layer = tf.function(lambda x: layer(x), autograph=False)
            candidates["module"] = (run_layer, run_layer.get_concrete_function(spec_in))
            setup["module"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            if arch == "inception_resnet_v2":
                model = tf_keras.applications.InceptionResNetV2(weights=None)
                run_keras = tf.function(lambda x: model(x, training=False), autograph=False)
                candidates["keras"] = (run_keras, run_keras.get_concrete_function(spec_in))
                setup["keras"] = time.perf_counter() - t0
        setup.setdefault("module", time.perf_counter() - t0)
        outputs = {}
        warmup = {}
        for name, (fn, _) in candidates.items():
            t0 = time.perf_counter()
            for _ in range(WARMUP):
                outputs[name] = fn(images).numpy()
            warmup[name] = time.perf_counter() - t0
        times = {name: [] for name in candidates}
        for _ in range(reps):
            for name, (fn, _) in candidates.items():
                t0 = time.perf_counter()
                fn(images).numpy()
                times[name].append(time.perf_counter() - t0)
        results[arch] = {
            "batch": batch, "size": size, "times": times, "setup": setup, "warmup": warmup,
            "max_abs_diff": float(np.max(np.abs(outputs["module"] - outputs["checkpoint"]))),
            "ops": {name: op_histogram(cf) for name, (_, cf) in candidates.items()},
        }
        del candidates, outputs, values, reference
    with open(out_json, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main(sys.argv)
