"""Versions 4 and 5 (TF2 SavedModels) of every handle compute what version 3 computes (issue 5)."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow

from family_support import HANDLES, SPECS, ids


@pytest.mark.parametrize("arch,kind", HANDLES, ids=ids(HANDLES))
def test_v4_v5_equal_v3(family, arch, kind):
    import tensorflow as tf
    import tensorflow_hub as hub

    rng = np.random.default_rng(1)
    v3 = hub.load(str(family.module(arch, kind, 3))).signatures["default"]
    v4 = hub.load(str(family.module(arch, kind, 4)))
    v5 = hub.load(str(family.module(arch, kind, 5)))
    assert not hasattr(v4, "signatures") or "serving_default" not in v4.signatures
    output_key = "logits" if kind == "classification" else "feature_vector"
    for height, width in ((SPECS[arch].image_size,) * 2, (257, 331)):
        images = tf.constant(rng.uniform(0, 1, (2, height, width, 3)).astype(np.float32))
        expected = v3(images=images)["default"].numpy()
        for name, got in (("v4", v4(images).numpy()),
                          ("v5", v5(images, training=False).numpy()),
                          ("v5 serving_default",
                           v5.signatures["serving_default"](inputs=images)[output_key].numpy())):
            assert got.shape == expected.shape, name
            diff = float(np.abs(got - expected).max()) / max(1.0, float(np.abs(expected).max()))
            assert diff <= 1e-5, "%s differs from v3 by %g (relative) at %dx%d" % (
                name, diff, height, width)


@pytest.mark.parametrize("arch,kind", HANDLES, ids=ids(HANDLES))
def test_v4_reusable_savedmodel_attributes(family, arch, kind):
    import tensorflow_hub as hub

    obj = hub.load(str(family.module(arch, kind, 4)))
    names = {v.name.split(":")[0] for v in obj.variables}
    trainable = {v.name.split(":")[0] for v in obj.trainable_variables}
    expected = set(family.values(arch))
    if kind == "feature_vector":
        from hubexport.nets import get_net

        logits_scope = get_net(SPECS[arch].architecture).logits_scope + "/"
        expected = {n for n in expected if not n.startswith(logits_scope)}
    assert names == expected
    assert trainable and trainable < names
    assert not {n for n in trainable if "moving_" in n}
    losses = [float(f()) for f in obj.regularization_losses]
    assert len(losses) > 50 and all(x > 0 for x in losses)
