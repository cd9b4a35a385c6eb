"""The built Inception V1 and V3 modules against tf_slim 1.1.0's own nets.

Reference: ``tf_slim.nets.inception_v1.inception_v1`` and
``tf_slim.nets.inception_v3.inception_v3`` of PyPI tf-slim 1.1.0
(TensorFlow 2.15, the legacy venv), run by
tests/legacy/reference_slim_inception.py through the interpreter
``$HUBEXPORT_LEGACY_PYTHON`` (default ``.venv-legacy/bin/python``) on the
stand-in checkpoint the session's ``family`` modules were built from
(``family.checkpoint(model)``; made from the manifest, never from our nets).
tf_slim 1.1.0's nets have no ``global_pool`` option, so the script runs
their base (``inception_v1_base`` / ``inception_v3_base``) with the global
average pooling head of TF-Slim's research/slim version at every size, and
the unmodified full net at the default size (224 / 299), where its fixed
average pool equals global pooling.

Checked, at the default size and at one other size (V1 257x331, V3
331x257), to 1e-4 relative (``max|ours - ref| / max|ref|``):
  * v3 classification (TF1 Hub format, ``hub.load``): signature
    ``image_classification`` -> tf_slim's logits, ``image_feature_vector``
    -> its features (the pooled ``Mixed_5c`` / ``Mixed_7c``);
  * v3 feature_vector: signature ``image_feature_vector`` -> features;
  * v5 classification and v5 feature_vector (TF2 SavedModels): the loaded
    object called on the images -> logits / features;
  * hubexport's net itself (``build_net`` on the checkpoint's values).
Module inputs are in [0, 1]; the reference gets ``2 x - 1`` (the specs'
input mapping). One legacy process per architecture (module-scoped fixture).
"""

import numpy as np
import pytest

from reference_support import assert_meaningful, max_rel, run_legacy, structured_images

pytestmark = pytest.mark.slow

LEGACY_SCRIPT = "reference_slim_inception.py"
TOLERANCE = 1e-4
# Architecture -> (default size, other size), height x width in pixels.
SIZES = {"inception_v1": ((224, 224), (257, 331)),
         "inception_v3": ((299, 299), (331, 257))}
FEATURES = {"inception_v1": 1024, "inception_v3": 2048}
MODULES = [("classification", 3), ("feature_vector", 3),
           ("classification", 5), ("feature_vector", 5)]


def _batches(arch):
    """Two images per size in [0, 1]; the second with tripled contrast.

    With the stand-in checkpoints, contrast and brightness move the outputs
    far more than the blobs' layout does; two images of different contrast
    make the outputs clearly differ (``assert_meaningful``).
    """
    batches = []
    for i, (height, width) in enumerate(SIZES[arch]):
        batch = structured_images(20 + i, 2, height, width)
        batch[1] = np.clip((batch[1] - 0.5) * 3.0 + 0.5, 0.0, 1.0)
        batches.append(batch.astype(np.float32))
    return batches


@pytest.fixture(scope="module", params=sorted(SIZES))
def reference(request, family, tmp_path_factory):
    """(arch, batches, outputs): tf_slim's outputs (dict of numpy arrays) for ``batches``."""
    arch = request.param
    batches = _batches(arch)
    work = tmp_path_factory.mktemp("reference_" + arch)
    np.savez(work / "in.npz", **{"images_%d" % i: b * 2.0 - 1.0 for i, b in enumerate(batches)})
    run_legacy(LEGACY_SCRIPT, arch, family.checkpoint(arch), work / "in.npz",
               work / "out.npz", timeout=1800)
    with np.load(work / "out.npz") as out:
        outputs = {k: out[k] for k in out.files}
    assert sorted(outputs) == ["features_0", "features_1", "full_logits_0",
                               "logits_0", "logits_1"]
    for i, batch in enumerate(batches):
        assert outputs["logits_%d" % i].shape == (len(batch), 1001)
        assert outputs["features_%d" % i].shape == (len(batch), FEATURES[arch])
        assert_meaningful(outputs["logits_%d" % i])
        assert_meaningful(outputs["features_%d" % i])
    return arch, batches, outputs


def _check(what, arch, batch, got, expected):
    diff = max_rel(np.asarray(got), expected)
    print("%s %s %dx%d: max relative difference %.3g"
          % (arch, what, batch.shape[1], batch.shape[2], diff))
    assert diff <= TOLERANCE, "%s %s at %dx%d differs from tf_slim by %g (relative)" % (
        arch, what, batch.shape[1], batch.shape[2], diff)


def test_global_pool_reference_equals_tf_slims_full_net(reference):
    """The reference's global-pool head is tf_slim's unmodified net at the default size."""
    arch, batches, ref = reference
    _check("full net vs global-pool head", arch, batches[0], ref["logits_0"],
           ref["full_logits_0"])


def test_net_matches_tf_slim(reference, family):
    import tensorflow as tf

    arch, batches, ref = reference
    run = family.checkpoint_function(arch)
    for i, batch in enumerate(batches):
        logits, features = run(tf.constant(batch))
        _check("build_net logits", arch, batch, logits, ref["logits_%d" % i])
        _check("build_net features", arch, batch, features, ref["features_%d" % i])
    logits, _ = run(tf.constant(batches[0]))
    _check("build_net logits vs full net", arch, batches[0], logits, ref["full_logits_0"])


@pytest.mark.parametrize("kind,version", MODULES, ids=["%s/%d" % m for m in MODULES])
def test_module_matches_tf_slim(reference, family, kind, version):
    import tensorflow as tf
    import tensorflow_hub as hub

    arch, batches, ref = reference
    module = hub.load(str(family.module(arch, kind, version)))
    for i, batch in enumerate(batches):
        images = tf.constant(batch)
        name = "%s/%d" % (kind, version)
        if version == 3:
            features = module.signatures["image_feature_vector"](images=images)["default"]
            _check(name + " image_feature_vector", arch, batch, features, ref["features_%d" % i])
            if kind == "classification":
                logits = module.signatures["image_classification"](images=images)["default"]
                _check(name + " image_classification", arch, batch, logits, ref["logits_%d" % i])
                if i == 0:
                    _check(name + " image_classification vs full net", arch, batch, logits,
                           ref["full_logits_0"])
        else:
            out = module(images)
            key = "logits" if kind == "classification" else "features"
            assert out.shape == ref["%s_%d" % (key, i)].shape
            _check(name, arch, batch, out, ref["%s_%d" % (key, i)])
            if kind == "classification" and i == 0:
                _check(name + " vs full net", arch, batch, out, ref["full_logits_0"])
