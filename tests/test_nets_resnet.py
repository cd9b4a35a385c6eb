"""ResNet-specific checks of hubexport/nets/resnet.py (the generic ones are in tests/test_nets.py).

Ground truth: the manifests hubexport/data/resnet_v*_manifest.json, read off
tf_slim 1.1.0's resnet_v1 / resnet_v2 by scripts/make_manifest.py (never off
our net), and TF-Slim's layout (stride 2 in the last unit of blocks 1-3, in
its 3x3 conv; explicit padding of strided convolutions). Numerical agreement
with tf_slim itself is in tests/test_reference_resnet.py.

Shapes are checked by static shape inference (a graph with zero-valued
variables, never run), which is exact for these ops; the smallest input also
runs.
"""

import functools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from hubexport import nets
from hubexport.nets import layers, resnet

DATA = Path(__file__).resolve().parent.parent / "hubexport" / "data"
ARCHS = ["resnet_v%d_%d" % (v, d) for v in (1, 2) for d in (50, 101, 152)]
_UNIT = re.compile(r"^resnet_v\d_\d+/block(\d)/unit_(\d+)/")


def _manifest(arch):
    with open(DATA / ("%s_manifest.json" % arch), encoding="utf-8") as f:
        return json.load(f)


def _version_depth(arch):
    _, v, d = arch.split("_")
    return int(v[1:]), int(d)


def _classes(arch):
    return 1000 if _version_depth(arch)[0] == 1 else 1001


@functools.lru_cache(maxsize=None)
def _build(arch, height, width, num_classes="checkpoint", training=False):
    """Builds the net (no preprocessing) on [2, height, width, 3]; returns what it made.

    Variables are zeros (graph variables when training, whose batch norm
    assigns to them); builds are cached, so callers must not mutate results.

    Returns:
      (logits, end_points, requests, updates): static-shaped tensors of a
      throwaway graph, the VariableRequests and the update ops (training).
    """
    requests, updates = [], []

    def factory(request):
        requests.append(request)
        if not training:
            return tf.zeros(request.shape, tf.float32)
        return tf.compat.v1.get_variable(request.name, request.shape, tf.float32,
                                         tf.compat.v1.zeros_initializer())

    classes = _classes(arch) if num_classes == "checkpoint" else num_classes
    with tf.Graph().as_default():
        ctx = layers.NetContext(factory, training=training, on_update=updates.append)
        images = tf.compat.v1.placeholder(tf.float32, [2, height, width, 3])
        logits, end_points = nets.get_net(arch).build(ctx, images, num_classes=classes)
    return logits, end_points, requests, updates


def _shape(tensor):
    return tuple(tensor.shape.as_list()[1:])


def test_registry_has_all_six_from_one_definition():
    for arch in ARCHS:
        net = nets.get_net(arch)
        assert net is resnet.NETS[arch]
        assert (net.name, net.scope, net.logits_scope) == (arch, arch, arch + "/logits")
        assert (net.default_image_size, net.min_image_size, net.feature_size) == (224, 1, 2048)
        assert net.build.func is resnet.resnet
        version, depth = _version_depth(arch)
        assert net.build.keywords == {"version": version, "units": resnet.UNITS[depth],
                                      "scope": arch}
    assert set(resnet.NETS) == set(ARCHS)


def test_block_table_is_tf_slims():
    """TF-Slim's resnet_v{1,2}_block(scope, base_depth, num_units, stride) per depth."""
    assert resnet.UNITS == {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
    table = resnet.blocks(resnet.UNITS[50])
    assert [b.scope for b in table] == ["block1", "block2", "block3", "block4"]
    for block, base, stride in zip(table, (64, 128, 256, 512), (2, 2, 2, 1)):
        assert block.units[:-1] == [resnet.Unit(4 * base, base, 1)] * (len(block.units) - 1)
        assert block.units[-1] == resnet.Unit(4 * base, base, stride)
    assert [len(b.units) for b in table] == [3, 4, 6, 3]


@pytest.mark.parametrize("arch", ARCHS)
def test_block_table_matches_manifest_units_and_depths(arch):
    version, depth = _version_depth(arch)
    shapes = {v["name"]: v["shape"] for v in _manifest(arch)["variables"]}
    units = {}
    for name in shapes:
        m = _UNIT.match(name)
        if m:
            units.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    counts = tuple(len(units[b]) for b in (1, 2, 3, 4))
    assert counts == resnet.UNITS[depth]
    for b in (1, 2, 3, 4):
        assert units[b] == set(range(1, counts[b - 1] + 1))
    unit = "%s/block%%d/unit_%%d/bottleneck_v%d/" % (arch, version)
    for block in resnet.blocks(resnet.UNITS[depth]):
        b = int(block.scope[-1])
        for i, u in enumerate(block.units, 1):
            prefix = unit % (b, i)
            depth_in = shapes[prefix + "conv1/weights"][2]
            assert shapes[prefix + "conv1/weights"] == [1, 1, depth_in, u.depth_bottleneck]
            assert shapes[prefix + "conv2/weights"] == [3, 3, u.depth_bottleneck,
                                                        u.depth_bottleneck]
            assert shapes[prefix + "conv3/weights"] == [1, 1, u.depth_bottleneck, u.depth]
            # A projection shortcut exactly where the depth changes (unit_1).
            assert (prefix + "shortcut/weights" in shapes) == (depth_in != u.depth) == (i == 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_layer_kinds_and_weight_decay(arch):
    """resnet_arg_scope: gamma; L2 1e-4 on conv weights only. V2: biases where BN is absent."""
    version, _ = _version_depth(arch)
    _, _, requests, _ = _build(arch, 224, 224)
    for r in requests:
        leaf = r.name.rsplit("/", 1)[-1]
        assert r.weight_decay == (1e-4 if leaf == "weights" else None), r.name
    names = {r.name for r in requests}
    scopes = {n.rsplit("/", 1)[0] for n in names if n.endswith("/weights")}
    for scope in scopes:
        has_bn = scope + "/BatchNorm/gamma" in names
        has_bias = scope + "/biases" in names
        assert has_bn != has_bias, scope
        leaf = scope.rsplit("/", 1)[-1]
        if leaf == "logits" or (version == 2 and leaf in ("conv3", "shortcut")) \
                or (version == 2 and scope == arch + "/conv1"):
            assert has_bias, scope
        else:
            assert has_bn, scope
    if version == 2:
        assert arch + "/postnorm/gamma" in names
        assert sum(n.endswith("/preact/gamma") for n in names) == sum(resnet.UNITS[
            _version_depth(arch)[1]])
    else:
        assert not any("/preact/" in n or "/postnorm/" in n for n in names)


def _expected_shapes(arch, height, width):
    """End point -> (h, w, c) from TF-Slim's layout: stride 2 = ceil(n / 2)."""
    version, depth = _version_depth(arch)

    def half(n):
        return -(-n // 2)

    h, w = half(height), half(width)
    out = {"conv1": (h, w, 64)}
    h, w = half(h), half(w)  # pool1
    for block in resnet.blocks(resnet.UNITS[depth]):
        for i, unit in enumerate(block.units, 1):
            prefix = "%s/unit_%d/bottleneck_v%d" % (block.scope, i, version)
            out[prefix + "/conv1"] = (h, w, unit.depth_bottleneck)
            if unit.stride == 2:
                h, w = half(h), half(w)
            out[prefix + "/conv2"] = (h, w, unit.depth_bottleneck)
            out[prefix + "/conv3"] = (h, w, unit.depth)
            if i == 1:
                out[prefix + "/shortcut"] = (h, w, unit.depth)
            out[prefix] = (h, w, unit.depth)
        out[block.scope] = (h, w, block.units[-1].depth)
    out["global_pool"] = (1, 1, 2048)
    out["Logits"] = (_classes(arch),)
    return out


@pytest.mark.parametrize("size", [(224, 224), (331, 257)], ids=["224x224", "331x257"])
@pytest.mark.parametrize("arch", ARCHS)
def test_end_point_names_and_shapes(arch, size):
    logits, end_points, _, _ = _build(arch, *size)
    expected = _expected_shapes(arch, *size)
    assert {k: _shape(v) for k, v in end_points.items()} == expected
    assert logits is end_points["Logits"] and logits.dtype == tf.float32
    blocks = [expected["block%d" % b] for b in (1, 2, 3, 4)]
    if size == (224, 224):
        assert blocks == [(28, 28, 256), (14, 14, 512), (7, 7, 1024), (7, 7, 2048)]
        # The stride sits in the LAST unit of block1: unit_2 is still 56x56.
        version = _version_depth(arch)[0]
        assert expected["block1/unit_2/bottleneck_v%d" % version] == (56, 56, 256)
        assert expected["block1/unit_3/bottleneck_v%d/conv1" % version] == (56, 56, 64)
    else:
        # 331 -> 166 -> 83 -> 42 -> 21 -> 11; 257 -> 129 -> 65 -> 33 -> 17 -> 9.
        assert blocks == [(42, 33, 256), (21, 17, 512), (11, 9, 1024), (11, 9, 2048)]


@pytest.mark.parametrize("arch", ARCHS)
def test_end_points_are_the_manifests_layers(arch):
    """Every conv scope of the checkpoint (but logits) is an end point, as TF-Slim collects them."""
    version, depth = _version_depth(arch)
    _, end_points, _, _ = _build(arch, 224, 224)
    convs = {v["name"][len(arch) + 1:-len("/weights")] for v in _manifest(arch)["variables"]
             if v["name"].endswith("/weights") and "/logits/" not in v["name"]}
    units = {k.rsplit("/", 1)[0] for k in convs if "/unit_" in k}
    assert len(units) == sum(resnet.UNITS[depth])
    blocks = {"block%d" % b for b in (1, 2, 3, 4)}
    assert set(end_points) == convs | units | blocks | {"global_pool", "Logits"}


def test_feature_vector_build_has_no_logits():
    logits, end_points, requests, _ = _build("resnet_v2_50", 224, 224, num_classes=None)
    assert logits is None and "Logits" not in end_points
    assert _shape(end_points["global_pool"]) == (1, 1, 2048)
    assert not any("/logits/" in r.name for r in requests)


@pytest.mark.parametrize("n", [1, 2, 3, 32, 33, 63])
@pytest.mark.parametrize("arch", ["resnet_v1_50", "resnet_v2_50"])
def test_any_size_from_one_pixel(arch, n):
    """MIN_IMAGE_SIZE = 1: every step maps n to n or ceil(n / 2); block4 is ceil(n / 32)."""
    _, end_points, _, _ = _build(arch, n, n + 1)
    assert _shape(end_points["conv1"]) == (math.ceil(n / 2), math.ceil((n + 1) / 2), 64)
    assert _shape(end_points["block4"]) == (math.ceil(n / 32), math.ceil((n + 1) / 32), 2048)
    assert _expected_shapes(arch, n, n + 1) == {k: _shape(v) for k, v in end_points.items()}


@pytest.mark.parametrize("arch", ["resnet_v1_50", "resnet_v2_50"])
def test_one_pixel_runs_and_zero_is_refused(arch):
    """A 1x1 image runs through build_net (finite logits); 0 pixels fail its size check."""
    graph = tf.Graph()
    with graph.as_default():
        def factory(req):
            if req.name.endswith("moving_variance"):
                init = tf.compat.v1.ones_initializer()
            else:
                init = tf.compat.v1.random_normal_initializer(stddev=0.05, seed=1)
            return tf.compat.v1.get_variable(req.name, req.shape, tf.float32, init)

        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        logits, features, end_points = nets.build_net(
            arch, layers.NetContext(factory), images, num_classes=_classes(arch))
        init = tf.compat.v1.global_variables_initializer()
    with tf.compat.v1.Session(graph=graph) as sess:
        sess.run(init)
        rng = np.random.default_rng(0)
        out, block4 = sess.run((logits, end_points["block4"]),
                               {images: rng.uniform(0, 1, (2, 1, 1, 3)).astype(np.float32)})
        assert out.shape == (2, _classes(arch)) and np.all(np.isfinite(out))
        assert block4.shape == (2, 1, 1, 2048)
        for shape in ((1, 0, 1, 3), (1, 1, 0, 3)):
            with pytest.raises(tf.errors.InvalidArgumentError, match="at least 1x1 pixels"):
                sess.run(logits, {images: np.zeros(shape, np.float32)})


@pytest.mark.parametrize("arch", ["resnet_v1_50", "resnet_v2_50"])
def test_training_updates_every_batch_norm(arch):
    """Training mode: two moving-average updates per batch norm (decay from the arg scope)."""
    _, _, requests, updates = _build(arch, 64, 64, training=True)
    moving = [r for r in requests if r.name.endswith("/moving_mean")]
    assert len(updates) == 2 * len(moving) > 0
    _, _, _, none = _build(arch, 64, 64, training=False)
    assert none == []


def test_arg_scope_is_resnet_arg_scope_and_is_undone():
    """TF-Slim's resnet_arg_scope() defaults hold while the net builds, and only then."""
    assert resnet.ARG_SCOPE == {"batch_norm_scale": True, "batch_norm_epsilon": 1e-5,
                                "batch_norm_decay": 0.997, "weight_decay": 1e-4}
    seen = []

    def factory(request):
        seen.append((dict(ctx.hparams), ctx.momentum()))
        return tf.zeros(request.shape, tf.float32)

    ctx = layers.NetContext(factory)
    with tf.Graph().as_default():
        resnet.resnet(ctx, tf.zeros([1, 32, 32, 3]), 10, version=1, units=resnet.UNITS[50],
                      scope="resnet_v1_50")
    assert seen and all(h == resnet.ARG_SCOPE and m == 0.997 for h, m in seen)
    assert ctx.hparams == layers.DEFAULT_HPARAMS


def test_unknown_version():
    ctx = layers.NetContext(lambda r: tf.zeros(r.shape, tf.float32))
    with tf.Graph().as_default(), pytest.raises(ValueError, match="version must be 1 or 2"):
        resnet.resnet(ctx, tf.zeros([1, 32, 32, 3]), 10, version=3, units=resnet.UNITS[50],
                      scope="resnet_v3_50")
