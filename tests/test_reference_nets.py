"""hubexport's nets against implementations we did not write, on stand-in checkpoints.

* Inception-ResNet-V2 vs ``tf_keras.applications.InceptionResNetV2``
  (include_top=False, pooling='avg') in this venv, its weights mapped from the
  stand-in checkpoint; logits as ``features @ W + b`` with the checkpoint's
  ``InceptionResnetV2/Logits/Logits``.
* Inception V2 vs TF-Slim's ``tf_slim.nets.inception_v2`` (PyPI tf-slim) in
  the legacy venv (TensorFlow 2.15), run by tests/legacy/reference_inception_v2.py
  through the interpreter ``$HUBEXPORT_LEGACY_PYTHON`` (default
  ``.venv-legacy/bin/python`` in the repository root).

The stand-in checkpoints come from the manifests (hubexport.standin), never
from hubexport's nets. Our nets read the same values through
``hubexport.nets.build_net`` with a NetContext whose variables are made from
the checkpoint's arrays. Tolerance: 1e-4 max absolute difference (float32).
"""

import re

import numpy as np
import pytest
import tensorflow as tf

from hubexport import nets, standin
from hubexport.nets import layers
from reference_support import (assert_differ_by, extract_member, max_abs, run_legacy,
                               structured_images)

LEGACY_SCRIPT = "reference_inception_v2.py"
TOLERANCE = 1e-4


def run_ours(arch, checkpoint, batches):
    """Our build_net (images in [0, 1]) on the checkpoint's values: [(logits, features)]."""
    reader = tf.train.load_checkpoint(str(checkpoint))
    variables = {}

    def factory(request):
        if request.name not in variables:
            value = reader.get_tensor(request.name)
            assert value.shape == request.shape, request.name
            variables[request.name] = tf.Variable(value, name=request.name.replace("/", "_"),
                                                  trainable=request.trainable)
        return variables[request.name]

    ctx = layers.NetContext(factory, training=False)
    out = []
    for batch in batches:
        logits, features, _ = nets.build_net(arch, ctx, tf.constant(batch))
        out.append((logits.numpy(), features.numpy()))
    return out


# ---------------------------------------------------------------------------
# Inception-ResNet-V2 vs tf_keras.applications.InceptionResNetV2.

_AUTO = re.compile(r"^(conv2d|batch_normalization)(?:_(\d+))?$")
_UP = re.compile(r"^InceptionResnetV2/(?:Repeat(?:_\d)?/block(35|17|8)_(\d+)|Block8)/Conv2d_1x1$")


def keras_irv2_with_checkpoint(values):
    """Builds Keras' InceptionResNetV2 and loads the checkpoint's values into it.

    The mapping walks TF-Slim's variables (manifest order, i.e. TF-Slim's
    creation order) and Keras' layers in creation order side by side: Keras
    names its unnamed Conv2D / BatchNormalization layers ``conv2d_N`` /
    ``batch_normalization_N`` by creation (after clear_session), and names the
    residual projections ``block35_N_conv``, ``block17_N_conv``,
    ``block8_N_conv`` (``block8_10_conv`` for TF-Slim's final ``Block8``) and
    the last layer ``conv_7b`` / ``conv_7b_bn``. Every shape is asserted and
    every Keras weight must be assigned exactly once.

    Args:
      values: dict checkpoint name -> numpy array.
    Returns:
      the Keras model (input [-1, 1] images, output [batch, 1536]).
    """
    import tf_keras

    tf_keras.backend.clear_session()
    model = tf_keras.applications.InceptionResNetV2(
        weights=None, include_top=False, pooling="avg", input_shape=(None, None, 3))
    auto = {"conv2d": [], "batch_normalization": []}
    named = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        m = _AUTO.match(layer.name)
        if m:
            auto[m.group(1)].append((int(m.group(2) or 0), layer))
        else:
            named[layer.name] = layer
    convs = [layer for _, layer in sorted(auto["conv2d"], key=lambda t: t[0])]
    bns = [layer for _, layer in sorted(auto["batch_normalization"], key=lambda t: t[0])]
    assigned = set()

    def assign(layer, arrays):
        assert layer.name not in assigned, layer.name
        assert [tuple(w.shape) for w in layer.weights] == [a.shape for a in arrays], layer.name
        layer.set_weights(arrays)
        assigned.add(layer.name)

    manifest = standin.load_manifest("inception_resnet_v2")
    scopes = [v["name"][: -len("/weights")] for v in manifest["variables"]
              if v["name"].endswith("/weights") and len(v["shape"]) == 4
              and "/AuxLogits/" not in v["name"]]
    for scope in scopes:
        weights = values[scope + "/weights"]
        up = _UP.match(scope)
        if up:
            name = "block%s_%s_conv" % up.groups() if up.group(1) else "block8_10_conv"
            assign(named[name], [weights, values[scope + "/biases"]])
            continue
        bn_values = [values[scope + "/BatchNorm/" + k] for k in ("beta", "moving_mean",
                                                                   "moving_variance")]
        if scope == "InceptionResnetV2/Conv2d_7b_1x1":
            conv, bn = named["conv_7b"], named["conv_7b_bn"]
        else:
            conv, bn = convs.pop(0), bns.pop(0)
        assign(conv, [weights])
        assign(bn, bn_values)
    assert not convs and not bns
    assert assigned == {layer.name for layer in model.layers if layer.weights}
    return model


@pytest.fixture(scope="module")
def irv2_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("irv2_standin")
    result = standin.make_standin("inception_resnet_v2", out, seed=7)
    return extract_member(result.tarball, out / "ckpt")


@pytest.mark.slow
def test_inception_resnet_v2_matches_keras_applications(irv2_checkpoint):
    reader = tf.train.load_checkpoint(str(irv2_checkpoint))
    values = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    model = keras_irv2_with_checkpoint(values)
    w = values["InceptionResnetV2/Logits/Logits/weights"].astype(np.float64)
    b = values["InceptionResnetV2/Logits/Logits/biases"].astype(np.float64)

    batches = [structured_images(0, 2, 299, 299), structured_images(1, 1, 331, 257)]
    ours = run_ours("inception_resnet_v2", irv2_checkpoint, batches)
    for batch, (logits, features) in zip(batches, ours):
        # Keras' preprocess_input for this net is x / 127.5 - 1: images in [-1, 1].
        keras_features = model(batch * 2.0 - 1.0, training=False).numpy()
        keras_logits = keras_features.astype(np.float64) @ w + b
        assert_differ_by(keras_features, 1000 * TOLERANCE)
        diff_f = max_abs(features, keras_features)
        diff_l = max_abs(logits, keras_logits)
        print("IRv2 %s: max abs diff features %.3g, logits %.3g"
              % (batch.shape, diff_f, diff_l))
        assert features.shape == (batch.shape[0], 1536)
        assert diff_f < TOLERANCE, diff_f
        assert diff_l < TOLERANCE, diff_l


# ---------------------------------------------------------------------------
# Inception V2 vs tf_slim.nets.inception_v2 (legacy venv).

@pytest.mark.slow
def test_inception_v2_matches_tf_slim(tmp_path):
    result = standin.make_standin("inception_v2", tmp_path / "standin", seed=5)
    checkpoint = extract_member(result.tarball, tmp_path / "ckpt")

    batches = [structured_images(2, 2, 224, 224), structured_images(3, 1, 331, 257)]
    np.savez(tmp_path / "in.npz",
             **{"images_%d" % i: b * 2.0 - 1.0 for i, b in enumerate(batches)})
    run_legacy(LEGACY_SCRIPT, checkpoint, tmp_path / "in.npz", tmp_path / "out.npz", timeout=600)

    ours = run_ours("inception_v2", checkpoint, batches)
    with np.load(tmp_path / "out.npz") as ref:
        assert sorted(ref.files) == ["features_0", "features_1", "full_logits_0",
                                     "logits_0", "logits_1"]
        for i, (logits, features) in enumerate(ours):
            assert_differ_by(ref["features_%d" % i], 1000 * TOLERANCE)
            diff_f = max_abs(features, ref["features_%d" % i])
            diff_l = max_abs(logits, ref["logits_%d" % i])
            print("V2 %s: max abs diff features %.3g, logits %.3g"
                  % (batches[i].shape, diff_f, diff_l))
            assert features.shape == (batches[i].shape[0], 1024)
            assert diff_f < TOLERANCE, diff_f
            assert diff_l < TOLERANCE, diff_l
        # TF-Slim's unmodified inception_v2() (7x7 average pool) at 224x224.
        diff_full = max_abs(ours[0][0], ref["full_logits_0"])
        print("V2 full-net logits max abs diff %.3g" % diff_full)
        assert diff_full < TOLERANCE, diff_full
