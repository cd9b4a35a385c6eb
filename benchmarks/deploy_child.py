"""Child process of figure 7: throughput of a module and of its .tflite variant.

Usage::

    python benchmarks/deploy_child.py MODE MODEL_PATH SIZE REPS OUT_JSON

MODE ``module`` (the main venv): the version 5 module's ``serving_default``
(``tf.saved_model.load``) called on float32 batches [1, S, S, 3] and
[16, S, S, 3]. MODE ``module_tf1``: the same for a version 3 module's
``default`` signature (the parent of the TF.js variants). MODE ``litert`` (run with .venv-litert's python, which has
``ai-edge-litert`` and no TensorFlow): the ``.tflite`` file in LiteRT's
interpreter with 2 threads (its default XNNPACK delegate), one image per
invocation, as the flat buffer takes; batch 16 is 16 invocations. Each
batch is run WARMUP times untimed, then REPS timed rounds; OUT_JSON gets the
per-round wall times (s) per batch size.
"""

import json
import sys
import time

WARMUP = 2
BATCHES = (1, 16)


def main(mode, path, size, reps, out_json):
    import numpy as np

    size, reps = int(size), int(reps)
    images = np.random.default_rng(7).random((max(BATCHES), size, size, 3), dtype=np.float32)
    if mode in ("module", "module_tf1"):
        import tensorflow as tf

        loaded = (tf.saved_model.load(path) if mode == "module"
                  else tf.saved_model.load(path, tags=[]))  # TF1 Hub format: tag set {}
        serve = loaded.signatures["serving_default" if mode == "module" else "default"]
        (key,) = serve.structured_input_signature[1]

        def call(batch):
            list(serve(**{key: tf.constant(batch)}).values())[0].numpy()
    else:
        from ai_edge_litert import interpreter as litert

        interp = litert.Interpreter(model_path=path, num_threads=2)
        interp.allocate_tensors()
        (inp,), (out,) = interp.get_input_details(), interp.get_output_details()

        def call(batch):
            for image in batch:
                interp.set_tensor(inp["index"], image[None])
                interp.invoke()
                interp.get_tensor(out["index"])
    times = {}
    for n in BATCHES:
        batch = images[:n]
        for _ in range(WARMUP):
            call(batch)
        times[n] = []
        for _ in range(reps):
            t0 = time.perf_counter()
            call(batch)
            times[n].append(time.perf_counter() - t0)
    with open(out_json, "w") as f:
        json.dump({"times": times}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
