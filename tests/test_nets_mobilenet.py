"""MobileNet-specific checks of hubexport/nets/mobilenet_v1.py and mobilenet_v2.py.

Ground truth: the manifests hubexport/data/mobilenet_v*_manifest.json, read
off tf_keras.applications.MobileNet / MobileNetV2 by
scripts/make_mobilenet_manifest.py (never off our nets); TF-Slim's
research/slim/nets/mobilenet_v1.py (its docstring's parameter counts,
``_CONV_DEFS``, ``mobilenet_v1_arg_scope``) and nets/mobilenet/ (``V2_DEF``,
``training_scope``); and the MobileNetV2 paper's Table 2
(https://arxiv.org/abs/1801.04381). The generic checks of every net are in
tests/test_nets.py; numerical agreement with Keras is in
tests/test_reference_mobilenet.py.

Shapes are checked by static shape inference (a graph with zero-valued
variables, never run), which is exact for these ops; the smallest input also
runs.
"""

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from hubexport import nets
from hubexport.nets import layers, mobilenet_v1, mobilenet_v2

DATA = Path(__file__).resolve().parent.parent / "hubexport" / "data"
V1 = {"mobilenet_v1_025": 0.25, "mobilenet_v1_050": 0.5, "mobilenet_v1_075": 0.75,
      "mobilenet_v1_100": 1.0}
V2 = {"mobilenet_v2_035": 0.35, "mobilenet_v2_050": 0.5, "mobilenet_v2_075": 0.75,
      "mobilenet_v2_100": 1.0, "mobilenet_v2_130": 1.3, "mobilenet_v2_140": 1.4}
ARCHS = sorted(V1) + sorted(V2)
MULTIPLIERS = {**V1, **V2}
# ZOO.md section 3: 1024 x DM (V1), 1280 for DM <= 1, 1664 (1.3), 1792 (1.4).
FEATURES = {"mobilenet_v1_025": 256, "mobilenet_v1_050": 512, "mobilenet_v1_075": 768,
            "mobilenet_v1_100": 1024, "mobilenet_v2_035": 1280, "mobilenet_v2_050": 1280,
            "mobilenet_v2_075": 1280, "mobilenet_v2_100": 1280, "mobilenet_v2_130": 1664,
            "mobilenet_v2_140": 1792}
# ZOO.md section 2: how the tarballs spell the depth multiplier.
SPELLED = {0.25: "0.25", 0.35: "0.35", 0.5: "0.5", 0.75: "0.75", 1.0: "1.0", 1.3: "1.3",
           1.4: "1.4"}
# The MobileNetV2 paper's Table 2 between the first and the last convolution:
# (expansion t, output channels c, repeats n, stride s of the first repeat).
PAPER_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1)]


def _manifest(arch):
    with open(DATA / ("%s_manifest.json" % arch), encoding="utf-8") as f:
        return json.load(f)


def _family(arch):
    return arch.split("_")[1]


def _module(arch):
    return mobilenet_v1 if _family(arch) == "v1" else mobilenet_v2


@functools.lru_cache(maxsize=None)
def _build(arch, height, width, num_classes=1001, training=False):
    """Builds the net (no preprocessing) on [2, height, width, 3]; returns what it made.

    Variables are zeros (graph variables when training, whose batch norm
    assigns to them); builds are cached, so callers must not mutate results.

    Returns:
      (logits, end_points, requests, updates, regularized, graph).
    """
    requests, updates, regularized = [], [], []

    def factory(request):
        requests.append(request)
        if not training:
            return tf.zeros(request.shape, tf.float32)
        return tf.compat.v1.get_variable(request.name, request.shape, tf.float32,
                                         tf.compat.v1.zeros_initializer())

    graph = tf.Graph()
    with graph.as_default():
        ctx = layers.NetContext(factory, training=training, on_update=updates.append,
                                on_regularizer=lambda r, v: regularized.append(r))
        images = tf.compat.v1.placeholder(tf.float32, [2, height, width, 3])
        logits, end_points = nets.get_net(arch).build(ctx, images, num_classes=num_classes)
    return logits, end_points, requests, updates, regularized, graph


def _shape(tensor):
    return tuple(tensor.shape.as_list()[1:])


# ---------------------------------------------------------------------------
# Registry and manifests.

def test_registry_has_all_ten_from_two_definitions():
    for arch in ARCHS:
        net = nets.get_net(arch)
        module = _module(arch)
        assert net is module.NETS[arch]
        scope = "MobilenetV1" if _family(arch) == "v1" else "MobilenetV2"
        assert (net.name, net.scope, net.logits_scope) == (arch, scope,
                                                          scope + "/Logits/Conv2d_1c_1x1")
        assert (net.default_image_size, net.min_image_size) == (224, 1)
        assert net.feature_size == FEATURES[arch]
        assert net.build.func is getattr(module, "mobilenet_" + _family(arch))
        assert net.build.keywords == {"depth_multiplier": MULTIPLIERS[arch]}
    assert set(mobilenet_v1.NETS) == set(V1) and set(mobilenet_v2.NETS) == set(V2)
    assert set(ARCHS) <= set(nets.ARCHITECTURES)


@pytest.mark.parametrize("arch", ARCHS)
def test_manifest_header_names_the_real_224_tarball(arch):
    header = _manifest(arch)["header"]
    stem = "mobilenet_%s_%s_224" % (_family(arch), SPELLED[MULTIPLIERS[arch]])
    assert header["checkpoint"] == {"tarball": stem + ".tgz", "member": stem + ".ckpt",
                                    "image_size": 224, "format": "v2"}
    assert header["architecture"] == arch
    assert header["depth_multiplier"] == MULTIPLIERS[arch]
    assert header["source"].startswith("tf_keras.applications.MobileNet")
    assert header["generated_by"] == "scripts/make_mobilenet_manifest.py"


@pytest.mark.parametrize("arch", ARCHS)
def test_variables_equal_manifest_in_order(arch):
    """Names, shapes and creation order of every variable; feature_vector: all but logits."""
    manifest = [(v["name"], tuple(v["shape"])) for v in _manifest(arch)["variables"]
                if v["name"] != "global_step"]
    _, _, requests, _, _, _ = _build(arch, 224, 224)
    assert [(r.name, r.shape) for r in requests] == manifest
    for r in requests:
        assert r.trainable == (not r.name.split("/")[-1].startswith("moving_")), r.name
    _, _, requests, _, _, _ = _build(arch, 224, 224, num_classes=None)
    logits = nets.get_net(arch).logits_scope + "/"
    assert [(r.name, r.shape) for r in requests] == [v for v in manifest
                                                     if not v[0].startswith(logits)]
    assert len(requests) == len(manifest) - 2


def test_v1_manifests_match_tf_slims_parameter_table():
    """TF-Slim's mobilenet_v1.py docstring: convolution weights of the base net.

    100% MobileNet V1: 3,185,088 numbers; 75%: 1,800,144 (Conv2d_0 ..
    Conv2d_13_pointwise, weights only: no batch norm, no logits).
    """
    for arch, expected in (("mobilenet_v1_100", 3_185_088), ("mobilenet_v1_075", 1_800_144)):
        total = sum(int(np.prod(v["shape"])) for v in _manifest(arch)["variables"]
                    if v["name"].endswith("weights") and "/Logits/" not in v["name"])
        assert total == expected, arch


@pytest.mark.parametrize("arch", sorted(V1))
def test_v1_depths_follow_conv_defs_and_min_depth(arch):
    """max(int(d x DM), 8) for TF-Slim's _CONV_DEFS depths; depthwise kernels [3, 3, in, 1]."""
    multiplier = MULTIPLIERS[arch]
    shapes = {v["name"]: v["shape"] for v in _manifest(arch)["variables"]}
    conv_defs = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    depths = [max(int(d * multiplier), 8) for d in conv_defs]
    assert shapes["MobilenetV1/Conv2d_0/weights"] == [3, 3, 3, depths[0]]
    for i in range(1, 14):
        prefix = "MobilenetV1/Conv2d_%d_" % i
        assert shapes[prefix + "depthwise/depthwise_weights"] == [3, 3, depths[i - 1], 1]
        assert shapes[prefix + "pointwise/weights"] == [1, 1, depths[i - 1], depths[i]]
    assert shapes["MobilenetV1/Logits/Conv2d_1c_1x1/weights"] == [1, 1, depths[-1], 1001]
    assert [s for s, _ in mobilenet_v1.LAYOUT] == [2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert [d for _, d in mobilenet_v1.LAYOUT] == conv_defs


def test_v2_blocks_are_the_papers_table():
    expanded = [(c, s if i == 0 else 1) for _, c, n, s in PAPER_V2 for i in range(n)]
    assert [(c, s) for s, c in mobilenet_v2.BLOCKS] == expanded
    assert len(mobilenet_v2.BLOCKS) == 17


@pytest.mark.parametrize("arch", sorted(V2))
def test_v2_blocks_in_the_manifest(arch):
    """expanded_conv has no expand; expanded_conv_1..16 expand 6x; depths divisible by 8."""
    shapes = {v["name"]: v["shape"] for v in _manifest(arch)["variables"]}
    names = set(shapes)
    prefix = "MobilenetV2/"
    assert not any(n.startswith(prefix + "expanded_conv/expand/") for n in names)
    scopes = ["expanded_conv"] + ["expanded_conv_%d" % i for i in range(1, 17)]
    assert {n.split("/")[1] for n in names if "expanded_conv" in n} == set(scopes)
    depth_in = shapes[prefix + "Conv/weights"][3]
    for scope in scopes:
        s = prefix + scope + "/"
        inner = depth_in if scope == "expanded_conv" else 6 * depth_in
        if scope != "expanded_conv":
            assert shapes[s + "expand/weights"] == [1, 1, depth_in, inner]
        assert shapes[s + "depthwise/depthwise_weights"] == [3, 3, inner, 1]
        out = shapes[s + "project/weights"][3]
        assert shapes[s + "project/weights"] == [1, 1, inner, out] and out % 8 == 0
        for bn in ("expand", "depthwise", "project"):
            if bn == "expand" and scope == "expanded_conv":
                continue
            assert s + bn + "/BatchNorm/gamma" in names
        depth_in = out
    assert shapes[prefix + "Conv_1/weights"] == [1, 1, depth_in, FEATURES[arch]]
    assert shapes[prefix + "Logits/Conv2d_1c_1x1/weights"] == [1, 1, FEATURES[arch], 1001]


def test_make_divisible_is_tf_slims():
    """TF-Slim's _make_divisible(v, 8): nearest multiple of 8, >= 8, never 10% down."""
    cases = {11.2: 16, 5.6: 8, 8.4: 8, 22.4: 24, 33.6: 32, 56.0: 56, 112.0: 112,
             1664.0: 1664, 1792.0: 1792, 44.8: 48, 12.0: 16, 20.0: 24, 17.0: 16, 19.9: 24}
    assert {v: mobilenet_v2.make_divisible(v) for v in cases} == cases
    assert [mobilenet_v2.feature_size(m) for m in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)] == [
        1280, 1280, 1280, 1280, 1664, 1792]


# ---------------------------------------------------------------------------
# Layers: activations, residuals, weight decay, training mode.

def _op_types(graph):
    return [op.type for op in graph.get_operations()]


@pytest.mark.parametrize("arch", ["mobilenet_v1_025", "mobilenet_v1_100"])
def test_v1_relu6_after_every_batch_norm(arch):
    _, _, requests, _, _, graph = _build(arch, 224, 224)
    types = _op_types(graph)
    assert types.count("Relu6") == 27 and "Relu" not in types
    assert types.count("FusedBatchNormV3") == 27
    assert types.count("DepthwiseConv2dNative") == 13


@pytest.mark.parametrize("arch", ["mobilenet_v2_035", "mobilenet_v2_100", "mobilenet_v2_140"])
def test_v2_linear_projections_and_residuals(arch):
    """ReLU6 after Conv, expand, depthwise and Conv_1 only; residual adds as the paper has them."""
    _, end_points, _, _, _, graph = _build(arch, 224, 224)
    types = _op_types(graph)
    assert types.count("Relu6") == 1 + 16 + 17 + 1 and "Relu" not in types
    assert types.count("FusedBatchNormV3") == 1 + 16 + 17 + 17 + 1
    adds = sorted(op.name.split("/")[1] for op in graph.get_operations()
                  if op.type in ("AddV2", "Add"))
    # Stride 1 and the same depth: every repeat but the first of each row of Table 2.
    expected, i = [], 0
    for _, _, n, _ in PAPER_V2:
        expected += ["expanded_conv_%d" % j for j in range(i + 1, i + n)]
        i += n
    assert adds == sorted(expected) and len(adds) == 10
    assert end_points["layer_2/output"] is end_points["layer_2"]
    assert "layer_2/expansion_output" not in end_points
    assert "layer_3/expansion_output" in end_points


@pytest.mark.parametrize("arch", ["mobilenet_v1_050", "mobilenet_v2_075"])
def test_weight_decay_on_conv_weights_only(arch):
    """4e-5 on conv2d weights (logits included); none on depthwise weights, biases, batch norm."""
    _, _, requests, _, regularized, _ = _build(arch, 224, 224)
    for r in requests:
        leaf = r.name.rsplit("/", 1)[-1]
        assert r.weight_decay == (4e-5 if leaf == "weights" else None), r.name
    assert [r.name for r in regularized] == [r.name for r in requests
                                             if r.name.endswith("/weights")]
    # V1: Conv2d_0, 13 pointwise, logits; V2: Conv, 16 expand, 17 project, Conv_1, logits.
    assert len(regularized) == (1 + 13 + 1 if _family(arch) == "v1" else 1 + 16 + 17 + 1 + 1)


@pytest.mark.parametrize("arch", ["mobilenet_v1_025", "mobilenet_v2_035"])
def test_training_updates_every_batch_norm(arch):
    """Training mode: two moving-average updates per batch norm; none at inference."""
    _, _, requests, updates, _, _ = _build(arch, 64, 64, training=True)
    moving = [r for r in requests if r.name.endswith("/moving_mean")]
    assert len(moving) == (27 if _family(arch) == "v1" else 52)
    assert len(updates) == 2 * len(moving)
    assert _build(arch, 64, 64, training=False)[3] == []


@pytest.mark.parametrize("arch,decay,keep", [("mobilenet_v1_075", 0.9997, 0.999),
                                             ("mobilenet_v2_130", 0.997, 0.8)])
def test_arg_scope_and_dropout_are_tf_slims_and_undone(arch, decay, keep, monkeypatch):
    """mobilenet_v1_arg_scope (decay 0.9997) / training_scope (0.997); dropout keep 0.999 / 0.8."""
    module = _module(arch)
    assert module.ARG_SCOPE == {"batch_norm_scale": True, "batch_norm_decay": decay,
                                "batch_norm_epsilon": 0.001, "weight_decay": 4e-5}
    assert module.DROPOUT_KEEP_PROB == keep
    seen, keeps = [], []
    real_dropout = layers.dropout

    def dropout(ctx, x, keep_prob=0.8):
        keeps.append(keep_prob)
        return real_dropout(ctx, x, keep_prob)

    monkeypatch.setattr(layers, "dropout", dropout)

    def factory(request):
        seen.append((dict(ctx.hparams), ctx.momentum()))
        return tf.compat.v1.get_variable(request.name, request.shape, tf.float32,
                                         tf.compat.v1.zeros_initializer())

    ctx = layers.NetContext(factory, training=True)
    with tf.Graph().as_default():
        nets.get_net(arch).build(ctx, tf.zeros([1, 32, 32, 3]), num_classes=10)
    assert seen and all(h == module.ARG_SCOPE and m == decay for h, m in seen)
    assert keeps == [keep]
    assert ctx.hparams == layers.DEFAULT_HPARAMS


# ---------------------------------------------------------------------------
# Shapes and input sizes.

def _v1_expected(arch, h, w):
    """End point -> (h, w, c) from TF-Slim's _CONV_DEFS: stride 2 = ceil(n / 2)."""
    depth = functools.partial(mobilenet_v1.depth, depth_multiplier=MULTIPLIERS[arch])
    out = {}
    for i, (stride, channels) in enumerate(mobilenet_v1.LAYOUT):
        if stride == 2:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        if i == 0:
            out["Conv2d_0"] = (h, w, depth(channels))
            previous = depth(channels)
        else:
            out["Conv2d_%d_depthwise" % i] = (h, w, previous)
            out["Conv2d_%d_pointwise" % i] = (h, w, depth(channels))
            previous = depth(channels)
    out["global_pool"] = (1, 1, FEATURES[arch])
    out["Logits"] = (1001,)
    return out


def _v2_expected(arch, h, w):
    """End point -> (h, w, c) from the paper's table and TF-Slim's make_divisible."""
    multiplier = MULTIPLIERS[arch]
    h, w = math.ceil(h / 2), math.ceil(w / 2)
    depth = mobilenet_v2.make_divisible(32 * multiplier)
    out = {"layer_1": (h, w, depth)}
    k = 2
    for t, c, n, s in PAPER_V2:
        for i in range(n):
            if t != 1:
                out["layer_%d/expansion_output" % k] = (h, w, depth * t)
            if i == 0 and s == 2:
                h, w = math.ceil(h / 2), math.ceil(w / 2)
            out["layer_%d/depthwise_output" % k] = (h, w, depth * t)
            depth = mobilenet_v2.make_divisible(c * multiplier)
            out["layer_%d/output" % k] = out["layer_%d" % k] = (h, w, depth)
            k += 1
    out["layer_19"] = (h, w, FEATURES[arch])
    out["global_pool"] = (1, 1, FEATURES[arch])
    out["Logits"] = (1001,)
    return out


def _expected(arch, h, w):
    return (_v1_expected if _family(arch) == "v1" else _v2_expected)(arch, h, w)


@pytest.mark.parametrize("size", [(224, 224), (331, 257)], ids=["224x224", "331x257"])
@pytest.mark.parametrize("arch", ARCHS)
def test_end_point_names_and_shapes(arch, size):
    logits, end_points, _, _, _, _ = _build(arch, *size)
    expected = _expected(arch, *size)
    assert {k: _shape(v) for k, v in end_points.items()} == expected
    assert logits is end_points["Logits"] and logits.dtype == tf.float32
    last = "Conv2d_13_pointwise" if _family(arch) == "v1" else "layer_19"
    # ceil(n / 32): 224 -> 7; 331 -> 11, 257 -> 9.
    assert expected[last] == ((7, 7) if size == (224, 224) else (11, 9)) + (FEATURES[arch],)


@pytest.mark.parametrize("n", [1, 2, 3, 32, 33, 63])
@pytest.mark.parametrize("arch", ["mobilenet_v1_025", "mobilenet_v2_140"])
def test_any_size_from_one_pixel(arch, n):
    """MIN_IMAGE_SIZE = 1: SAME padding maps n to ceil(n / 2) at each of 5 strides."""
    _, end_points, _, _, _, _ = _build(arch, n, n + 1)
    assert {k: _shape(v) for k, v in end_points.items()} == _expected(arch, n, n + 1)
    last = "Conv2d_13_pointwise" if _family(arch) == "v1" else "layer_19"
    assert _shape(end_points[last])[:2] == (math.ceil(n / 32), math.ceil((n + 1) / 32))


@pytest.mark.parametrize("arch", ["mobilenet_v1_025", "mobilenet_v2_035"])
def test_one_pixel_runs_and_zero_is_refused(arch):
    """A 1x1 image runs through build_net (finite logits); 0 pixels fail its size check."""
    assert _module(arch).MIN_IMAGE_SIZE == 1
    graph = tf.Graph()
    with graph.as_default():
        def factory(req):
            if req.name.endswith("moving_variance"):
                init = tf.compat.v1.ones_initializer()
            else:
                init = tf.compat.v1.random_normal_initializer(stddev=0.05, seed=1)
            return tf.compat.v1.get_variable(req.name, req.shape, tf.float32, init)

        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        logits, features, _ = nets.build_net(arch, layers.NetContext(factory), images)
        init = tf.compat.v1.global_variables_initializer()
    with tf.compat.v1.Session(graph=graph) as sess:
        sess.run(init)
        rng = np.random.default_rng(0)
        out, feats = sess.run((logits, features),
                              {images: rng.uniform(0, 1, (2, 1, 1, 3)).astype(np.float32)})
        assert out.shape == (2, 1001) and np.all(np.isfinite(out))
        assert feats.shape == (2, FEATURES[arch])
        for shape in ((1, 0, 1, 3), (1, 1, 0, 3)):
            with pytest.raises(tf.errors.InvalidArgumentError, match="at least 1x1 pixels"):
                sess.run(logits, {images: np.zeros(shape, np.float32)})


def test_feature_vector_build_has_no_logits():
    for arch in ("mobilenet_v1_100", "mobilenet_v2_100"):
        logits, end_points, requests, _, _, _ = _build(arch, 224, 224, num_classes=None)
        assert logits is None and "Logits" not in end_points
        assert _shape(end_points["global_pool"]) == (1, 1, FEATURES[arch])
        assert not any("/Logits/" in r.name for r in requests)


@pytest.mark.parametrize("builder", [mobilenet_v1.mobilenet_v1, mobilenet_v2.mobilenet_v2])
def test_depth_multiplier_must_be_positive(builder):
    ctx = layers.NetContext(lambda r: tf.zeros(r.shape, tf.float32))
    with tf.Graph().as_default(), pytest.raises(ValueError, match="greater than zero"):
        builder(ctx, tf.zeros([1, 32, 32, 3]), 10, depth_multiplier=0.0)
