"""Inception V1 and V3 specifics: manifest facts, end point shapes, the smallest input size.

The generic checks (variables equal the manifest, feature_vector = manifest
minus logits, output shapes, the size check of build_net) are in
tests/test_nets.py; numerical agreement with tf_slim 1.1.0's nets in
tests/test_reference_inception.py. The end point tables at the default
sizes are those of tf_slim 1.1.0's own ``inception_v1_test.py`` /
``inception_v3_test.py`` (``testBuildEndPoints`` / ``testBuildBaseNetwork``).
Shapes here are the static shapes of graphs built on zero-filled variables
(nothing runs).
"""

import json
import math
from pathlib import Path

import pytest
import tensorflow as tf

from hubexport import nets
from hubexport.nets import inception_v1, inception_v3, layers

DATA = Path(__file__).resolve().parent.parent / "hubexport" / "data"


def manifest(arch):
    with open(DATA / ("%s_manifest.json" % arch), encoding="utf-8") as f:
        return json.load(f)


def count(variables):
    return sum(math.prod(v["shape"]) for v in variables)


def build(fn, height, width, num_classes=1001, batch=1):
    """Builds net ``fn`` on zeros [batch, height, width, 3]; returns {end point: shape list}."""
    with tf.Graph().as_default():
        ctx = layers.NetContext(lambda r: tf.zeros(r.shape, tf.float32))
        images = tf.zeros([batch, height, width, 3])
        _, end_points = fn(ctx, images, num_classes=num_classes)
        return {k: v.shape.as_list() for k, v in end_points.items()}


# ---------------------------------------------------------------------------
# Manifests (read off tf_slim 1.1.0 by scripts/make_manifest.py).

def test_inception_v1_manifest_facts():
    m = manifest("inception_v1")
    assert m["header"]["checkpoint"] == {"tarball": "inception_v1_2016_08_28.tar.gz",
                                         "member": "inception_v1.ckpt", "image_size": 224}
    assert m["num_variables"] == 230 + 1  # + global_step
    assert m["num_parameters"] == 6_633_209
    variables = [v for v in m["variables"] if v["name"] != "global_step"]
    shapes = {v["name"]: v["shape"] for v in variables}
    # ZOO.md's quirk: Mixed_5b Branch_2's 3x3 conv is Conv2d_0a_3x3.
    assert shapes["InceptionV1/Mixed_5b/Branch_2/Conv2d_0a_3x3/weights"] == [3, 3, 32, 128]
    assert "InceptionV1/Mixed_5b/Branch_2/Conv2d_0b_3x3/weights" not in shapes
    assert "InceptionV1/Mixed_5c/Branch_2/Conv2d_0b_3x3/weights" in shapes
    assert shapes["InceptionV1/Logits/Conv2d_0c_1x1/weights"] == [1, 1, 1024, 1001]
    assert shapes["InceptionV1/Logits/Conv2d_0c_1x1/biases"] == [1001]
    assert not any(n.endswith("/gamma") or "AuxLogits" in n for n in shapes)
    # The only biases are the logits'.
    assert [n for n in shapes if n.endswith("/biases")] == [
        "InceptionV1/Logits/Conv2d_0c_1x1/biases"]
    # tf_slim's inception_v1_test: inception_v1_base has 5,607,184 numbers.
    base = [v for v in variables if "/Logits/" not in v["name"]]
    assert count(base) == 5_607_184


def test_inception_v3_manifest_facts():
    m = manifest("inception_v3")
    assert m["header"]["checkpoint"] == {"tarball": "inception_v3_2016_08_28.tar.gz",
                                         "member": "inception_v3.ckpt", "image_size": 299}
    assert m["num_variables"] == 388 + 1  # + global_step
    assert m["num_parameters"] == 27_182_194
    variables = [v for v in m["variables"] if v["name"] != "global_step"]
    shapes = {v["name"]: v["shape"] for v in variables}
    aux = [v for v in variables if "/AuxLogits/" in v["name"]]
    assert len(aux) == 10 and count(aux) == 3_328_361
    # ZOO.md's quirk, and TF-Slim's names of Mixed_6a's strided 3x3 convs.
    assert shapes["InceptionV3/Mixed_5c/Branch_1/Conv_1_0c_5x5/weights"] == [5, 5, 48, 64]
    assert shapes["InceptionV3/Mixed_5c/Branch_1/Conv2d_0b_1x1/weights"] == [1, 1, 256, 48]
    assert shapes["InceptionV3/Mixed_6a/Branch_0/Conv2d_1a_1x1/weights"] == [3, 3, 288, 384]
    assert shapes["InceptionV3/Logits/Conv2d_1c_1x1/weights"] == [1, 1, 2048, 1001]
    assert shapes["InceptionV3/Logits/Conv2d_1c_1x1/biases"] == [1001]
    assert not any(n.endswith("/gamma") for n in shapes)
    # tf_slim's inception_v3_test: inception_v3_base has 21,802,784 numbers.
    base = [v for v in variables if "/Logits/" not in v["name"] and "/AuxLogits/" not in v["name"]]
    assert count(base) == 21_802_784


@pytest.mark.parametrize("arch", ["inception_v1", "inception_v3"])
def test_weight_decay_as_in_tf_slims_arg_scope(arch):
    """4e-5 on every convolution's weights (logits included), none elsewhere."""
    requests = nets.variable_requests(arch)
    for r in requests:
        expected = 4e-5 if r.name.endswith("/weights") else None
        assert r.weight_decay == expected, r.name
    assert not any(r.name.endswith("/gamma") for r in requests)


def test_net_records():
    for module, name, logits in (
            (inception_v1, "inception_v1", "InceptionV1/Logits/Conv2d_0c_1x1"),
            (inception_v3, "inception_v3", "InceptionV3/Logits/Conv2d_1c_1x1")):
        net = module.NETS[name]
        assert net is nets.get_net(name)
        assert (net.scope, net.default_image_size, net.min_image_size, net.feature_size,
                net.logits_scope) == (module.SCOPE, module.DEFAULT_IMAGE_SIZE,
                                      module.MIN_IMAGE_SIZE, module.FEATURE_SIZE, logits)


# ---------------------------------------------------------------------------
# End points.

V1_END_POINTS = {  # at 224 x 224
    "Conv2d_1a_7x7": [112, 112, 64], "MaxPool_2a_3x3": [56, 56, 64],
    "Conv2d_2b_1x1": [56, 56, 64], "Conv2d_2c_3x3": [56, 56, 192],
    "MaxPool_3a_3x3": [28, 28, 192], "Mixed_3b": [28, 28, 256], "Mixed_3c": [28, 28, 480],
    "MaxPool_4a_3x3": [14, 14, 480], "Mixed_4b": [14, 14, 512], "Mixed_4c": [14, 14, 512],
    "Mixed_4d": [14, 14, 512], "Mixed_4e": [14, 14, 528], "Mixed_4f": [14, 14, 832],
    "MaxPool_5a_2x2": [7, 7, 832], "Mixed_5b": [7, 7, 832], "Mixed_5c": [7, 7, 1024],
}

V3_END_POINTS = {  # at 299 x 299
    "Conv2d_1a_3x3": [149, 149, 32], "Conv2d_2a_3x3": [147, 147, 32],
    "Conv2d_2b_3x3": [147, 147, 64], "MaxPool_3a_3x3": [73, 73, 64],
    "Conv2d_3b_1x1": [73, 73, 80], "Conv2d_4a_3x3": [71, 71, 192],
    "MaxPool_5a_3x3": [35, 35, 192], "Mixed_5b": [35, 35, 256], "Mixed_5c": [35, 35, 288],
    "Mixed_5d": [35, 35, 288], "Mixed_6a": [17, 17, 768], "Mixed_6b": [17, 17, 768],
    "Mixed_6c": [17, 17, 768], "Mixed_6d": [17, 17, 768], "Mixed_6e": [17, 17, 768],
    "Mixed_7a": [8, 8, 1280], "Mixed_7b": [8, 8, 2048], "Mixed_7c": [8, 8, 2048],
}


def test_inception_v1_end_points_default_size():
    shapes = build(inception_v1.inception_v1, 224, 224, batch=2)
    assert set(shapes) == set(V1_END_POINTS) | {"global_pool", "Logits"}
    for name, shape in V1_END_POINTS.items():
        assert shapes[name] == [2] + shape, name
    assert shapes["global_pool"] == [2, 1, 1, 1024]
    assert shapes["Logits"] == [2, 1001]
    fv = build(inception_v1.inception_v1, 224, 224, num_classes=None, batch=2)
    assert set(fv) == set(V1_END_POINTS) | {"global_pool"}


def test_inception_v3_end_points_default_size():
    shapes = build(inception_v3.inception_v3, 299, 299, batch=2)
    assert set(shapes) == set(V3_END_POINTS) | {"global_pool", "PreLogits", "Logits"}
    for name, shape in V3_END_POINTS.items():
        assert shapes[name] == [2] + shape, name
    assert shapes["global_pool"] == shapes["PreLogits"] == [2, 1, 1, 2048]
    assert shapes["Logits"] == [2, 1001]
    fv = build(inception_v3.inception_v3, 299, 299, num_classes=None, batch=2)
    assert set(fv) == set(V3_END_POINTS) | {"global_pool"}


def test_inception_v1_end_points_331x257():
    # SAME padding everywhere: each stride-2 step is ceil(n / 2).
    shapes = build(inception_v1.inception_v1, 331, 257)
    assert shapes["Conv2d_1a_7x7"] == [1, 166, 129, 64]
    assert shapes["MaxPool_2a_3x3"] == [1, 83, 65, 64]
    assert shapes["MaxPool_3a_3x3"] == [1, 42, 33, 192]
    assert shapes["Mixed_3c"] == [1, 42, 33, 480]
    assert shapes["MaxPool_4a_3x3"] == [1, 21, 17, 480]
    assert shapes["Mixed_4f"] == [1, 21, 17, 832]
    assert shapes["MaxPool_5a_2x2"] == [1, 11, 9, 832]
    assert shapes["Mixed_5c"] == [1, 11, 9, 1024]  # ceil(331/32), ceil(257/32)
    assert shapes["global_pool"] == [1, 1, 1, 1024]
    assert shapes["Logits"] == [1, 1001]


def test_inception_v3_end_points_331x257():
    # 331 -> 165 -> 163 -> 81 -> 79 -> 39 -> 19 -> 9;
    # 257 -> 128 -> 126 -> 62 -> 60 -> 29 -> 14 -> 6.
    shapes = build(inception_v3.inception_v3, 331, 257)
    expected = {
        "Conv2d_1a_3x3": [165, 128, 32], "Conv2d_2a_3x3": [163, 126, 32],
        "Conv2d_2b_3x3": [163, 126, 64], "MaxPool_3a_3x3": [81, 62, 64],
        "Conv2d_3b_1x1": [81, 62, 80], "Conv2d_4a_3x3": [79, 60, 192],
        "MaxPool_5a_3x3": [39, 29, 192], "Mixed_5d": [39, 29, 288],
        "Mixed_6a": [19, 14, 768], "Mixed_6e": [19, 14, 768],
        "Mixed_7a": [9, 6, 1280], "Mixed_7c": [9, 6, 2048],
    }
    for name, shape in expected.items():
        assert shapes[name] == [1] + shape, name
    assert shapes["global_pool"] == [1, 1, 1, 2048]
    assert shapes["Logits"] == [1, 1001]


def test_unknown_spatial_size_keeps_channels():
    """With a [None, None, None, 3] input the channel counts are still static."""
    for fn, key, features in ((inception_v1.inception_v1, "Mixed_5c", 1024),
                              (inception_v3.inception_v3, "Mixed_7c", 2048)):
        with tf.Graph().as_default():
            ctx = layers.NetContext(lambda r: tf.zeros(r.shape, tf.float32))
            images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
            logits, ep = fn(ctx, images)
            assert ep[key].shape.as_list() == [None, None, None, features]
            assert ep["global_pool"].shape.as_list() == [None, 1, 1, features]
            assert logits.shape.as_list() == [None, 1001]


# ---------------------------------------------------------------------------
# The smallest input size.

def _v3_side(n):
    """Side of V3's final map for an input side of n pixels (module docstring)."""
    r = lambda m: (m - 3) // 2 + 1  # noqa: E731 (3x3, stride 2, VALID)
    return r(r(r(r(r(n) - 2) - 2)))


def test_inception_v1_min_image_size_is_tight():
    """1 x 1 gives a 1 x 1 final map (SAME padding throughout); 0 x 0 an empty one."""
    assert inception_v1.MIN_IMAGE_SIZE == 1
    assert build(inception_v1.inception_v1, 1, 1)["Mixed_5c"] == [1, 1, 1, 1024]
    assert build(inception_v1.inception_v1, 1, 2)["Mixed_5c"] == [1, 1, 1, 1024]
    assert build(inception_v1.inception_v1, 32, 33)["Mixed_5c"] == [1, 1, 2, 1024]
    assert build(inception_v1.inception_v1, 0, 1)["Mixed_5c"] == [1, 0, 1, 1024]


def test_inception_v3_min_image_size_is_tight():
    """The net itself (without build_net's check) fails below 75 and gives a 1x1 map at 75."""
    assert inception_v3.MIN_IMAGE_SIZE == 75
    assert build(inception_v3.inception_v3, 75, 75)["Mixed_7c"] == [1, 1, 1, 2048]
    for h, w in ((74, 75), (75, 74)):
        with pytest.raises(ValueError, match="Negative dimension size"):
            build(inception_v3.inception_v3, h, w)


def test_inception_v3_final_map_follows_the_docstrings_formula():
    for h, w in ((76, 77), (89, 90), (91, 106), (107, 299)):
        assert build(inception_v3.inception_v3, h, w)["Mixed_7c"] == [
            1, _v3_side(h), _v3_side(w), 2048], (h, w)
    assert (_v3_side(74), _v3_side(75), _v3_side(299)) == (0, 1, 8)
