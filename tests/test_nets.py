"""Tests of hubexport.nets: variable layout against the checked-in manifests, shapes, input sizes.

The manifests (hubexport/data/*_manifest.json) were read off TF-Slim's own
net definitions by scripts/make_manifest.py, not from these nets, so the
variable tests compare against an independent ground truth. Numerical
agreement with independent implementations is in tests/test_reference_nets.py.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from hubexport import nets
from hubexport.nets import layers

DATA = Path(__file__).resolve().parent.parent / "hubexport" / "data"
# Every architecture hubexport defines: each needs its manifest and a net.
ARCHS = tuple(nets.ARCHITECTURES)
# The auxiliary heads of the Inception V3 and IRv2 checkpoints, which the
# modules do not build.
AUX = "/AuxLogits/"


def manifest(arch):
    with open(DATA / ("%s_manifest.json" % arch), encoding="utf-8") as f:
        return json.load(f)


def logits_prefix(arch):
    """The logits layer's scope (absent from feature_vector modules), with a slash."""
    return nets.get_net(arch).logits_scope + "/"


def manifest_net_variables(arch):
    """{name: shape} of the checkpoint variables the classification net uses."""
    return {v["name"]: tuple(v["shape"]) for v in manifest(arch)["variables"]
            if v["name"] != "global_step" and AUX not in v["name"]}


def num_classes(arch):
    """The checkpoint's class count: the length of its logits biases."""
    (shape,) = [v["shape"] for v in manifest(arch)["variables"]
                if v["name"] == logits_prefix(arch) + "biases"]
    return shape[0]


def requested_variables(arch, num_classes):
    """Builds the net in a fresh graph; returns the list of VariableRequests."""
    requests = []

    def factory(request):
        requests.append(request)
        return tf.zeros(request.shape, tf.float32)

    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        nets.build_net(arch, layers.NetContext(factory), images, num_classes=num_classes)
    return requests


@pytest.mark.parametrize("arch", ARCHS)
def test_manifest_header_and_counts(arch):
    m = manifest(arch)
    assert m["header"]["architecture"] == arch
    assert m["num_variables"] == len(m["variables"])
    total = sum(int(np.prod(v["shape"])) for v in m["variables"] if v["name"] != "global_step")
    assert total == m["num_parameters"]
    step = [v for v in m["variables"] if v["name"] == "global_step"]
    assert step == [{"name": "global_step", "shape": [], "dtype": "int64"}]
    assert {v["dtype"] for v in m["variables"] if v["name"] != "global_step"} == {"float32"}


def test_inception_v2_manifest_matches_facts():
    # FACTS.md: 277 variables, 11,199,137 numbers with 1001 classes (no global_step).
    m = manifest("inception_v2")
    assert m["num_variables"] == 277 + 1
    assert m["num_parameters"] == 11_199_137


def test_inception_resnet_v2_manifest_layout():
    # FACTS.md: the 2016-08-30 checkpoint's scopes.
    names = [v["name"] for v in manifest("inception_resnet_v2")["variables"]]
    blocks = {(n.split("/")[1], n.split("/")[2]) for n in names if "/Repeat" in n}
    assert blocks == ({("Repeat", "block35_%d" % i) for i in range(1, 11)}
                      | {("Repeat_1", "block17_%d" % i) for i in range(1, 21)}
                      | {("Repeat_2", "block8_%d" % i) for i in range(1, 10)})
    for scope in ("Block8", "Conv2d_7b_1x1", "AuxLogits", "Mixed_5b", "Mixed_6a", "Mixed_7a"):
        assert any(n.startswith("InceptionResnetV2/%s/" % scope) for n in names), scope
    shapes = {v["name"]: v["shape"] for v in manifest("inception_resnet_v2")["variables"]}
    assert shapes["InceptionResnetV2/Logits/Logits/weights"] == [1536, 1001]
    assert shapes["InceptionResnetV2/Logits/Logits/biases"] == [1001]
    assert not any(n.endswith("/gamma") for n in names)


@pytest.mark.parametrize("arch", ARCHS)
def test_classification_variables_equal_manifest(arch):
    requests = requested_variables(arch, num_classes(arch))
    names = [r.name for r in requests]
    assert len(names) == len(set(names)), "a variable was requested twice"
    assert {r.name: r.shape for r in requests} == manifest_net_variables(arch)
    # Moving statistics are the only non-trainable variables.
    for r in requests:
        assert r.trainable == (not r.name.split("/")[-1].startswith("moving_")), r.name


@pytest.mark.parametrize("arch", ARCHS)
def test_feature_vector_variables_equal_manifest_minus_logits(arch):
    requests = requested_variables(arch, None)
    expected = {n: s for n, s in manifest_net_variables(arch).items()
                if not n.startswith(logits_prefix(arch))}
    assert len(expected) == len(manifest_net_variables(arch)) - 2
    assert {r.name: r.shape for r in requests} == expected


@pytest.fixture(scope="module", params=ARCHS)
def running_net(request):
    """(arch, run) where run(images) -> (logits, features, end_points) as numpy."""
    arch = request.param
    graph = tf.Graph()
    with graph.as_default():
        def factory(req):
            # Small random weights, unit variances: values do not matter here.
            if req.name.endswith("moving_variance"):
                init = tf.compat.v1.ones_initializer()
            else:
                init = tf.compat.v1.random_normal_initializer(stddev=0.01, seed=0)
            return tf.compat.v1.get_variable(req.name, req.shape, tf.float32, init)

        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        logits, features, end_points = nets.build_net(
            arch, layers.NetContext(factory), images, num_classes=num_classes(arch))
        init = tf.compat.v1.global_variables_initializer()
    sess = tf.compat.v1.Session(graph=graph)
    sess.run(init)

    def run(batch):
        return sess.run((logits, features, end_points), {images: batch})

    yield arch, run
    sess.close()


def _images(n, h, w):
    return np.random.default_rng(1).uniform(0, 1, (n, h, w, 3)).astype(np.float32)


# End point shapes (without batch) at the default size, read off TF-Slim's
# nets; the other architectures' tables are in tests/test_nets_*.py.
END_POINTS = {
    "inception_v2": {"Mixed_5c": (7, 7, 1024), "Conv2d_1a_7x7": (112, 112, 64)},
    "inception_resnet_v2": {
        "Conv2d_1a_3x3": (149, 149, 32), "Conv2d_2a_3x3": (147, 147, 32),
        "Conv2d_2b_3x3": (147, 147, 64), "MaxPool_3a_3x3": (73, 73, 64),
        "Conv2d_3b_1x1": (73, 73, 80), "Conv2d_4a_3x3": (71, 71, 192),
        "MaxPool_5a_3x3": (35, 35, 192), "Mixed_5b": (35, 35, 320),
        "Mixed_6a": (17, 17, 1088), "PreAuxLogits": (17, 17, 1088),
        "Mixed_7a": (8, 8, 2080), "Conv2d_7b_1x1": (8, 8, 1536), "PreLogitsFlatten": (1536,)},
}


def test_output_shapes_default_size(running_net):
    arch, run = running_net
    net = nets.get_net(arch)
    size = net.default_image_size
    logits, features, ep = run(_images(2, size, size))
    classes = num_classes(arch)
    assert logits.shape == (2, classes) and logits.dtype == np.float32
    assert features.shape == (2, net.feature_size)
    assert ep["global_pool"].shape == (2, 1, 1, net.feature_size)
    assert np.all(np.isfinite(logits))
    for name, shape in END_POINTS.get(arch, {}).items():
        assert ep[name].shape == (2,) + shape, name
    assert ep["Logits"].shape == (2, classes)
    np.testing.assert_allclose(features, ep["global_pool"][:, 0, 0, :])


def test_default_sizes_and_feature_sizes_are_tf_slims():
    """ZOO.md / FACTS.md: default image size and feature size of every architecture."""
    expected = {"inception_v1": (224, 1024), "inception_v2": (224, 1024),
                "inception_v3": (299, 2048), "inception_resnet_v2": (299, 1536)}
    expected.update({"resnet_v%d_%d" % (v, d): (224, 2048) for v in (1, 2) for d in (50, 101, 152)})
    # MobileNets: 1024 x DM (V1); 1280 for DM <= 1, 1664 (1.3), 1792 (1.4) (V2).
    expected.update({"mobilenet_v1_%s" % m: (224, f) for m, f in
                     (("025", 256), ("050", 512), ("075", 768), ("100", 1024))})
    expected.update({"mobilenet_v2_%s" % m: (224, f) for m, f in
                     (("035", 1280), ("050", 1280), ("075", 1280), ("100", 1280),
                      ("130", 1664), ("140", 1792))})
    assert set(expected) == set(ARCHS)
    for arch, (size, features) in expected.items():
        net = nets.get_net(arch)
        assert (net.default_image_size, net.feature_size) == (size, features), arch


def test_output_shapes_331x257(running_net):
    arch, run = running_net
    net = nets.get_net(arch)
    logits, features, ep = run(_images(1, 331, 257))
    assert logits.shape == (1, num_classes(arch))
    assert features.shape == (1, net.feature_size)
    if arch == "inception_v2":
        assert ep["Mixed_5c"].shape == (1, 11, 9, 1024)  # ceil(331/32), ceil(257/32)
    elif arch == "inception_resnet_v2":
        # 331 -> 165 -> 163 -> 81 -> 79 -> 39 -> 19 -> 9;
        # 257 -> 128 -> 126 -> 62 -> 60 -> 29 -> 14 -> 6.
        assert ep["Conv2d_7b_1x1"].shape == (1, 9, 6, 1536)
    assert np.all(np.isfinite(logits))


def test_min_image_size_boundary(running_net):
    arch, run = running_net
    net = nets.get_net(arch)
    lo = net.min_image_size
    logits, features, _ = run(_images(1, lo, lo + 3))
    assert logits.shape == (1, num_classes(arch)) and features.shape == (1, net.feature_size)
    for h, w in ((lo - 1, lo), (lo, lo - 1)):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match="at least %dx%d pixels" % (lo, lo)):
            run(_images(1, h, w))


def test_inception_resnet_v2_min_image_size_is_tight():
    """The net itself (without build_net's check) fails below 75 and gives a 1x1 map at 75."""
    from hubexport.nets import inception_resnet_v2 as irv2

    assert irv2.MIN_IMAGE_SIZE == 75

    def build(size):
        with tf.Graph().as_default():
            ctx = layers.NetContext(lambda r: tf.zeros(r.shape, tf.float32))
            images = tf.zeros([1, size, size, 3])
            return irv2.inception_resnet_v2(ctx, images)[1]

    assert build(75)["Mixed_7a"].shape.as_list() == [1, 1, 1, 2080]
    with pytest.raises(ValueError):
        build(74)


def test_unknown_architecture():
    from hubexport.errors import UsageError

    with pytest.raises(UsageError, match="unknown architecture 'vgg_16'; known: inception_v1"):
        nets.get_net("vgg_16")
