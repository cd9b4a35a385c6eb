"""TF2 SavedModels (versions 4 and 5) at a fixed input size, as mobilenet_v2's are published.

ZOO.md section 1: mobilenet_v2's input size is "fixed in every version",
its TF2 versions 4 and 5 included. Here the real CLI builds versions 3
(TF1 Hub format, variable size), 4 and 5 (``input_size: fixed``) of a
small existing net (inception_v1, from its stand-in checkpoint,
hubexport.standin) with a temporary spec, both kinds. The modules are then
read through the clients users run, not hubexport's code: ``hub.load``
(the ``__call__`` concrete functions and ``serving_default`` take float32
[None, 224, 224, 3], compute what version 3 and the net on the checkpoint's
values compute on [2, 224, 224, 3] images, and refuse [1, 200, 200, 3]),
``hub.KerasLayer`` in tf-keras (a second interpreter with
TF_USE_LEGACY_KERAS=1), ``saved_model_cli show``; then the cards and
``hubexport verify``, which passes on them and fails on copies whose
``serving_default`` or ``__call__`` was edited to another size.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from client_checks import VENV_BIN, run
from registry_support import link_copy, replace_file
from spec_build_support import build_with_edited_spec, cli as _cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SIZE = 224  # inception_v1's image size (ZOO.md section 3)
OTHER = 200  # a size the fixed-size modules must refuse
KINDS = ("classification", "feature_vector")
WIDTH = {"classification": 1001, "feature_vector": 1024}  # ZOO.md section 3
OUTPUT_KEY = {"classification": "logits", "feature_vector": "feature_vector"}
DISPATCH_ERROR = "Could not find matching concrete function to call loaded from the SavedModel"
SIZE_ERROR = "this module takes only 224x224 pixel images (height x width)"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(output dir, spec dir): versions 3 (variable), 4 and 5 (fixed) of inception_v1."""

    def edit(doc):
        for family in doc["modules"].values():
            versions = family["versions"]
            assert versions[4]["input_size"] == versions[5]["input_size"] == "variable"
            family["versions"] = {3: versions[3],
                                  4: dict(versions[4], input_size="fixed"),
                                  5: dict(versions[5], input_size="fixed")}

    return build_with_edited_spec(tmp_path_factory.mktemp("sm2-fixed"), "inception_v1", edit)


def _module(output, kind, version):
    return output / "google" / "imagenet" / "inception_v1" / kind / str(version)


def _images(count, size=SIZE):
    """Structured images in [0, 1]: gradients and stripes that differ from image to image."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    batch = [np.stack([x * (i + 1) % 1.0, y, (x + y + 0.25 * i) % 1.0], axis=-1)
             for i in range(count)]
    return np.stack(batch).astype(np.float32)


def _close(got, want, tolerance=1e-5):
    """At most ``tolerance`` apart, relative to the reference's scale (at least 1)."""
    scale = max(1.0, float(np.abs(want).max()))
    return float(np.abs(got - want).max()) <= tolerance * scale


@pytest.fixture(scope="module")
def reference(built):
    """kind -> output on _images(2) of version 3 (hub.load, signature default) and of the
    net run on the stand-in checkpoint's values (hubexport.nets.checkpoint_function)."""
    import tensorflow as tf
    import tensorflow_hub as hub

    from hubexport.nets import INCEPTION_INPUT_MAPPING, checkpoint_function
    from hubexport.standin import load_manifest, standin_values

    output, _ = built
    images = tf.constant(_images(2))
    function = checkpoint_function("inception_v1", standin_values(load_manifest("inception_v1"),
                                                                  seed=0),
                                   1001, input_mapping=INCEPTION_INPUT_MAPPING)
    logits, features = (t.numpy() for t in function(images))
    result = {}
    for kind in KINDS:
        v3 = hub.load(str(_module(output, kind, 3))).signatures["default"]
        result[kind] = (v3(images=images)["default"].numpy(),
                        logits if kind == "classification" else features)
    return result


@pytest.mark.parametrize("kind", KINDS)
def test_call_and_serving_default_take_the_fixed_size(built, kind):
    import tensorflow as tf
    import tensorflow_hub as hub

    output, _ = built
    for version in (4, 5):
        module = hub.load(str(_module(output, kind, version)))
        functions = module.__call__.concrete_functions
        assert len(functions) == 2  # training=False and training=True
        assert sorted(f.structured_input_signature[0][1] for f in functions) == [False, True]
        for f in functions:
            spec = f.structured_input_signature[0][0]
            assert spec.shape.as_list() == [None, SIZE, SIZE, 3] and spec.dtype == tf.float32
        if version == 4:
            assert list(module.signatures) == []
            continue
        serving = module.signatures["serving_default"]
        spec = serving.structured_input_signature[1]["inputs"]
        assert spec.shape.as_list() == [None, SIZE, SIZE, 3] and spec.dtype == tf.float32
        assert serving.structured_outputs[OUTPUT_KEY[kind]].shape.as_list() == [None, WIDTH[kind]]


@pytest.mark.parametrize("kind", KINDS)
def test_hub_load_matches_v3_and_the_checkpoint_and_refuses_other_sizes(built, reference, kind):
    import tensorflow as tf
    import tensorflow_hub as hub

    output, _ = built
    v3, direct = reference[kind]
    assert v3.shape == (2, WIDTH[kind])
    assert not np.allclose(v3[0], v3[1], atol=1e-3)  # the images differ, so do the outputs
    assert _close(v3, direct)
    images = tf.constant(_images(2))
    small = tf.constant(_images(1, OTHER))
    v4 = hub.load(str(_module(output, kind, 4)))
    v5 = hub.load(str(_module(output, kind, 5)))
    serving = v5.signatures["serving_default"]
    for name, got in (("v4", v4(images)),
                      ("v5", v5(images, training=False, batch_norm_momentum=0.997)),
                      ("v5 serving_default", serving(inputs=images)[OUTPUT_KEY[kind]])):
        assert got.shape == (2, WIDTH[kind]), name
        assert _close(got.numpy(), v3), name
        assert _close(got.numpy(), direct), name
    # __call__: TensorFlow's dispatch error, naming the one shape it takes.
    for module, training in ((v4, False), (v5, False), (v5, True)):
        with pytest.raises(ValueError) as err:
            module(small, training=training)
        message = str(err.value)
        assert DISPATCH_ERROR in message
        assert "shape=(1, 200, 200, 3)" in message
        assert "TensorSpec(shape=(None, 224, 224, 3), dtype=tf.float32, name='inputs')" in message
    # serving_default: a loaded signature runs on any shape, so the graph checks it.
    with pytest.raises(tf.errors.InvalidArgumentError, match=SIZE_ERROR.replace("(", r"\(")
                       .replace(")", r"\)")):
        serving(inputs=small)


KERAS_SCRIPT = r"""
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tensorflow as tf
import tensorflow_hub as hub

images, small = np.load(sys.argv[1]), np.load(sys.argv[2])
results = {}
for name, path in json.loads(sys.argv[3]).items():
    model = tf.keras.Sequential([hub.KerasLayer(path, trainable=True,
                                                arguments=dict(batch_norm_momentum=0.997))])
    model.build([None, 224, 224, 3])
    out = model(images, training=False).numpy()
    np.save(os.path.join(sys.argv[4], name + ".npy"), out)
    refused = {}
    for how in ("build", "layer", "model"):
        try:
            if how == "build":
                tf.keras.Sequential([hub.KerasLayer(path)]).build([None, 200, 200, 3])
            elif how == "layer":
                hub.KerasLayer(path)(small)
            else:
                model(small)
            refused[how] = None
        except Exception as e:
            refused[how] = [type(e).__name__, str(e)]
    results[name] = {"shape": list(out.shape), "refused": refused}
print("RESULTS " + json.dumps(results))
"""


def test_keras_layer_takes_the_fixed_size_and_refuses_others(built, reference, tmp_path):
    """hub.KerasLayer (tf-keras): built at [None, 224, 224, 3] it computes what version 3
    computes; built at 200 x 200 or called on such images, TensorFlow refuses: the
    dispatch error naming the shape, except for a model built at 224 x 224 and then
    called on 200 x 200 pixels, which tf-keras runs in a graph of its own: the
    module's run-time size check."""
    output, _ = built
    np.save(tmp_path / "images.npy", _images(2))
    np.save(tmp_path / "small.npy", _images(1, OTHER))
    cases = {"%s_%d" % (kind, version): str(_module(output, kind, version))
             for kind in KINDS for version in (4, 5)}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", KERAS_SCRIPT, str(tmp_path / "images.npy"),
                           str(tmp_path / "small.npy"), json.dumps(cases), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULTS ")][-1]
    results = json.loads(line[len("RESULTS "):])
    assert sorted(results) == sorted(cases)
    for name, result in results.items():
        kind = name.rsplit("_", 1)[0]
        assert result["shape"] == [2, WIDTH[kind]], name
        assert _close(np.load(tmp_path / (name + ".npy")), reference[kind][0]), name
        assert sorted(result["refused"]) == ["build", "layer", "model"]
        for how, refused in result["refused"].items():
            assert refused is not None, (name, how)
            error, message = refused
            if how == "model":
                assert error == "InvalidArgumentError", (name, how, message[:500])
                assert SIZE_ERROR in message, (name, how, message[:500])
            else:
                assert error == "ValueError", (name, how, message[:500])
                assert DISPATCH_ERROR in message, (name, how, message[:500])
                assert "TensorSpec(shape=(None, 224, 224, 3)" in message, (name, how)


def test_saved_model_cli_shows_the_fixed_size(built):
    output, _ = built
    shown = run([str(VENV_BIN / "saved_model_cli"), "show", "--dir",
                 str(_module(output, "classification", 5)), "--tag_set", "serve",
                 "--signature_def", "serving_default"])
    assert shown.returncode == 0, shown.stderr
    assert "inputs['inputs']" in shown.stdout and "outputs['logits']" in shown.stdout
    assert "shape: (-1, 224, 224, 3)" in shown.stdout
    assert "shape: (-1, 1001)" in shown.stdout


def test_cards_say_fixed_size(built):
    from hubexport.cards import render_card
    from hubexport.specs import load_specs

    output, _ = built
    for kind in KINDS:
        for version in (4, 5):
            card = (_module(output, kind, version).parent / ("%d.md" % version)).read_text()
            assert "the size of the input images is fixed to\n`height` x `width` = 224 x 224" \
                in card, (kind, version)
            assert "other input sizes are possible" not in card
            assert "m.build([None, 224, 224, 3])" in card
            if version == 5:
                assert "`inputs` (float32, shape [batch_size, 224, 224, 3])" in card
            else:
                assert "serving_default" not in card
    # The shipped (variable-size) spec's card still says height, width.
    (target,) = load_specs()["inception_v1"].targets(version=5, kind="classification")
    assert target.version.input_size == "variable"
    card = render_card(target, 32)
    assert "`inputs` (float32, shape [batch_size, height, width, 3])" in card
    assert "other input sizes are possible" in card


def _edit_saved_model(module, edit):
    """Rewrites module/saved_model.pb after ``edit(meta_graph)`` on its meta graph."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString((module / "saved_model.pb").read_bytes())
    for meta_graph in proto.meta_graphs:
        edit(meta_graph)
    replace_file(module / "saved_model.pb", proto.SerializeToString())


def _copy(output, tmp_path, kind, version):
    """A hard-link copy of a module and its card at tmp/<handle>/<version>."""
    src = _module(output, kind, version)
    dst = tmp_path / src.relative_to(output)
    link_copy(src, dst)
    link_copy(src.parent / ("%d.md" % version), dst.parent / ("%d.md" % version))
    return dst


def _serving_to_other_size(meta_graph):
    dims = meta_graph.signature_def["serving_default"].inputs["inputs"].tensor_shape.dim
    dims[1].size = dims[2].size = OTHER


def _call_to_variable_size(meta_graph):
    """Every concrete function's first argument (the images) to [-1, -1, -1, 3]."""
    graph = meta_graph.object_graph_def
    (call,) = [c.node_id for c in graph.nodes[0].children if c.local_name == "__call__"]
    for name in graph.nodes[call].function.concrete_functions:
        args = graph.concrete_functions[name].canonicalized_input_signature.tuple_value.values[0]
        dims = args.tuple_value.values[0].tensor_spec_value.shape.dim
        dims[1].size = dims[2].size = -1


def test_verify_passes_and_fails_on_another_size(built, tmp_path):
    from hubexport.verify import verify

    output, spec_dir = built
    lines = _cli("verify", output, "--specs", spec_dir).stdout.splitlines()
    assert lines[-1] == "verified 6 modules: ok", lines
    report = json.loads(_cli("verify", _module(output, "feature_vector", 5), "--specs", spec_dir,
                             "--json").stdout)
    (signatures,) = [c for c in report["modules"][0]["checks"] if c["check"] == "signatures"]
    assert signatures == {"check": "signatures", "ok": True,
                          "detail": "serving_default and __call__ (reusable SavedModel API); "
                                    "images [-1, 224, 224, 3]"}, signatures

    damaged = _copy(output, tmp_path / "serving", "classification", 5)
    _edit_saved_model(damaged, _serving_to_other_size)
    (module,) = verify(str(damaged), specs_dir=spec_dir).modules
    assert module.failures == [
        "signatures: tag set {serve}: serving_default input inputs has float32 "
        "[-1, 200, 200, 3], expected float32 [-1, 224, 224, 3]"]

    for version in (4, 5):
        damaged = _copy(output, tmp_path / "call", "feature_vector", version)
        _edit_saved_model(damaged, _call_to_variable_size)
        (module,) = verify(str(damaged), specs_dir=spec_dir).modules
        assert module.failures == [
            "signatures: __call__ input inputs has float32 [-1, -1, -1, 3], "
            "expected float32 [-1, 224, 224, 3]"], version
    proc = _cli("verify", damaged, "--specs", spec_dir, check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "__call__ input inputs has float32 [-1, -1, -1, 3]" in proc.stdout + proc.stderr
