"""The built ResNet V1 / V2 modules (depths 50, 101, 152) against tf_slim 1.1.0's own nets.

Reference: ``tf_slim.nets.resnet_v1.resnet_v1_{50,101,152}`` and
``tf_slim.nets.resnet_v2.resnet_v2_{50,101,152}`` of PyPI tf-slim 1.1.0
(TensorFlow 2.15, the legacy venv), unmodified, under their
``resnet_arg_scope()`` with ``global_pool=True`` and ``is_training=False``,
run by tests/legacy/reference_slim_resnet.py through the interpreter
``$HUBEXPORT_LEGACY_PYTHON`` (default ``.venv-legacy/bin/python``) on the
stand-in checkpoint the session's ``family`` modules were built from
(``family.checkpoint(model)``; made from the manifest, never from our nets).
One legacy process serves all six models (module-scoped fixture).

Checked per model, at 224x224 and 257x331, to 1e-4 relative
(``max|ours - ref| / max|ref|``):
  * v3 classification (TF1 Hub format, ``hub.load``): signature
    ``image_classification`` -> tf_slim's logits ([B, 1, 1, C] squeezed; C =
    1000 for V1, 1001 for V2), ``image_feature_vector`` -> its global pool
    (``<scope>/pool5``, for V2 after ``postnorm``);
  * v3 feature_vector: ``image_feature_vector`` -> features;
  * v5 classification and v5 feature_vector (TF2 SavedModels): the loaded
    object called on the images -> logits / features;
  * hubexport's net itself (``build_net`` on the checkpoint's values);
  * the v3 ``image_feature_vector`` outputs are tf_slim's end point names
    (``predictions`` and the unsqueezed ``logits`` aside, plus
    ``global_pool``), and ``<scope>/block1`` .. ``block4`` have tf_slim's
    shapes.
Module inputs are in [0, 1]; the reference gets them mapped by the spec's
``input_mapping`` (V1 ``255 x - [123.68, 116.78, 103.94]``, V2 ``2 x - 1``).
"""

import numpy as np
import pytest

from family_support import MODELS
from reference_support import assert_meaningful, max_rel, run_legacy, structured_images

pytestmark = pytest.mark.slow

LEGACY_SCRIPT = "reference_slim_resnet.py"
TOLERANCE = 1e-4
RESNETS = ["resnet_v1_50", "resnet_v1_101", "resnet_v1_152",
           "resnet_v2_50", "resnet_v2_101", "resnet_v2_152"]
SIZES = ((224, 224), (257, 331))  # height x width in pixels
MODULES = [("classification", 3), ("feature_vector", 3),
           ("classification", 5), ("feature_vector", 5)]


def _batches():
    """Two images per size in [0, 1]: coloured blobs, and other blobs in grey.

    With the stand-in checkpoints the outputs depend on an image's colour
    balance far more than on the blobs' layout; a coloured and a grey image
    make them clearly differ (``assert_meaningful``: by 0.7 or more relative).
    """
    batches = []
    for i, (height, width) in enumerate(SIZES):
        batch = structured_images(30 + i, 2, height, width)
        batch[1] = batch[1].mean(axis=-1, keepdims=True)
        batches.append(batch.astype(np.float32))
    return batches


def _mapped(spec, batch):
    """The module inputs mapped as the module maps them (float32)."""
    mapping = spec.input_mapping
    subtract = np.asarray([float(v) for v in mapping.subtract], np.float32)
    return (batch * np.float32(mapping.multiply) - subtract).astype(np.float32)


@pytest.fixture(scope="module")
def references(family, tmp_path_factory):
    """dict model -> tf_slim's outputs (dict of numpy arrays) on :func:`_batches`, one process."""
    models = [m for m in RESNETS if m in MODELS]
    if not models:
        return {}
    work = tmp_path_factory.mktemp("reference_resnet")
    batches = _batches()
    args = []
    for model in models:
        spec = family.spec(model)
        np.savez(work / ("%s_in.npz" % model),
                 **{"images_%d" % i: _mapped(spec, b) for i, b in enumerate(batches)})
        args += [spec.architecture, family.checkpoint(model), work / ("%s_in.npz" % model),
                 work / ("%s_out.npz" % model)]
    run_legacy(LEGACY_SCRIPT, *args, timeout=3000)
    result = {}
    for model in models:
        with np.load(work / ("%s_out.npz" % model)) as out:
            result[model] = {k: out[k] for k in out.files}
    return result


@pytest.fixture(params=RESNETS)
def reference(request, references, family):
    """(model, spec, batches, outputs) of one ResNet model; fails without its modules."""
    model = request.param
    assert model in references, ("%s is not in this session's family (no shipped spec, or "
                                 "HUBEXPORT_TEST_MODELS leaves it out)" % model)
    spec = family.spec(model)
    outputs = references[model]
    batches = _batches()
    for i, batch in enumerate(batches):
        assert outputs["logits_%d" % i].shape == (len(batch), spec.num_classes)
        assert outputs["features_%d" % i].shape == (len(batch), 2048)
        assert_meaningful(outputs["logits_%d" % i])
        assert_meaningful(outputs["features_%d" % i])
    return model, spec, batches, outputs


def _check(what, model, batch, got, expected):
    got = np.asarray(got)
    assert got.shape == expected.shape, (what, got.shape, expected.shape)
    diff = max_rel(got, expected)
    print("%s %s %dx%d: max relative difference %.3g"
          % (model, what, batch.shape[1], batch.shape[2], diff))
    assert diff <= TOLERANCE, "%s %s at %dx%d differs from tf_slim by %g (relative)" % (
        model, what, batch.shape[1], batch.shape[2], diff)


def test_spec_matches_the_reference_checkpoint(reference):
    """The spec's class count and input mapping are what ZOO.md says for V1 / V2."""
    model, spec, _, _ = reference
    assert spec.architecture == model and spec.scope == model
    if model.startswith("resnet_v1_"):
        assert spec.num_classes == 1000
        assert (spec.input_mapping.multiply, tuple(spec.input_mapping.subtract)) == (
            255.0, (123.68, 116.78, 103.94))
    else:
        assert spec.num_classes == 1001
        assert (spec.input_mapping.multiply, tuple(spec.input_mapping.subtract)) == (
            2.0, (1.0, 1.0, 1.0))


def test_net_matches_tf_slim(reference, family):
    import tensorflow as tf

    model, _, batches, ref = reference
    run = family.checkpoint_function(model)
    for i, batch in enumerate(batches):
        logits, features = run(tf.constant(batch))
        _check("build_net logits", model, batch, logits, ref["logits_%d" % i])
        _check("build_net features", model, batch, features, ref["features_%d" % i])


@pytest.mark.parametrize("kind,version", MODULES, ids=["%s/%d" % m for m in MODULES])
def test_module_matches_tf_slim(reference, family, kind, version):
    import tensorflow as tf
    import tensorflow_hub as hub

    model, _, batches, ref = reference
    module = hub.load(str(family.module(model, kind, version)))
    name = "%s/%d" % (kind, version)
    for i, batch in enumerate(batches):
        images = tf.constant(batch)
        if version == 3:
            features = module.signatures["image_feature_vector"](images=images)["default"]
            _check(name + " image_feature_vector", model, batch, features,
                   ref["features_%d" % i])
            if kind == "classification":
                logits = module.signatures["image_classification"](images=images)["default"]
                _check(name + " image_classification", model, batch, logits,
                       ref["logits_%d" % i])
        else:
            key = "logits" if kind == "classification" else "features"
            _check(name, model, batch, module(images), ref["%s_%d" % (key, i)])


def test_end_points_are_tf_slims(reference, family):
    """v3's image_feature_vector outputs: tf_slim's end point names; blocks of its shapes."""
    import tensorflow as tf
    import tensorflow_hub as hub

    model, _, batches, ref = reference
    module = hub.load(str(family.module(model, "classification", 3)))
    signature = module.signatures["image_feature_vector"]
    slim_names = set(ref["end_points"].tolist()) - {"predictions", model + "/logits"}
    assert set(signature.structured_outputs) == slim_names | {"default", model + "/global_pool"}
    for i, batch in enumerate(batches):
        out = signature(images=tf.constant(batch))
        shapes = [list(out["%s/block%d" % (model, b)].shape[1:]) for b in (1, 2, 3, 4)]
        assert shapes == ref["block_shapes_%d" % i].tolist(), (batch.shape, shapes)
