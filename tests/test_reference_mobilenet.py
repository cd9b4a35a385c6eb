"""hubexport's MobileNet V1 and V2 against tf_keras.applications, on stand-in checkpoint values.

References (implementations we did not write, in this venv):
  * ``tf_keras.applications.MobileNet(weights=None, alpha=DM,
    input_shape=(R, R, 3), include_top=True, classes=1000,
    classifier_activation=None)`` for MobileNet V1;
  * ``tf_keras.applications.MobileNetV2(...)`` with the same arguments for
    MobileNet V2.

Variants (depth multiplier @ resolution in pixels), spread over both:
V1 0.25@128, 0.5@160, 0.75@192, 1.0@224; V2 0.35@96, 0.75@160, 1.0@224,
1.4@224. At these sizes every strided step sees an even side, where Keras'
explicit (0, 1) zero padding equals TF-Slim's SAME padding.

The values come from the checked-in manifest (hubexport.standin.standin_values,
never from our nets). Our net runs through hubexport.nets.checkpoint_function
on images in [0, 1] with TF-Slim's input mapping x -> 2x - 1; Keras gets the
same images as 2x - 1 and the same values, mapped onto its layers by name
(:func:`keras_layer_name`; every Keras weight is assigned exactly once, each
shape asserted). Keras' 1000-class head gets the checkpoint's logits for
classes 1..1000 (``weights[..., 1:]``, ``biases[1:]``; class 0 is TF-Slim's
background). Compared: the pooled feature vectors and logits 1..1000,
max |ours - Keras| / max |Keras| < 1e-4; and the reference's outputs must
differ clearly between images (:func:`assert_images_differ`).
"""

import re
import time

import numpy as np
import pytest
import tensorflow as tf

from hubexport import nets, standin
from reference_support import max_rel, structured_images

TOLERANCE = 1e-4
LOGITS = "Logits/Conv2d_1c_1x1"

# (architecture, resolution in pixels, depth multiplier, stand-in seed).
VARIANTS = [
    ("mobilenet_v1_025", 128, 0.25, 11),
    ("mobilenet_v1_050", 160, 0.5, 12),
    ("mobilenet_v1_075", 192, 0.75, 13),
    ("mobilenet_v1_100", 224, 1.0, 14),
    ("mobilenet_v2_035", 96, 0.35, 15),
    ("mobilenet_v2_075", 160, 0.75, 16),
    ("mobilenet_v2_100", 224, 1.0, 17),
    ("mobilenet_v2_140", 224, 1.4, 18),
]

# TF-Slim scope (below MobilenetV1/ or MobilenetV2/) -> Keras layer name.
_V1_NAMES = [
    (re.compile(r"^Conv2d_0(/BatchNorm)?$"), lambda m: "conv1" + ("_bn" if m[1] else "")),
    (re.compile(r"^Conv2d_(\d+)_(depthwise|pointwise)(/BatchNorm)?$"),
     lambda m: "conv_%s_%s%s" % ({"depthwise": "dw", "pointwise": "pw"}[m[2]], m[1],
                                 "_bn" if m[3] else "")),
    (re.compile(r"^Logits/Conv2d_1c_1x1$"), lambda m: "conv_preds"),
]
_V2_NAMES = [
    (re.compile(r"^Conv$"), lambda m: "Conv1"),
    (re.compile(r"^Conv/BatchNorm$"), lambda m: "bn_Conv1"),
    (re.compile(r"^expanded_conv/(depthwise|project)(/BatchNorm)?$"),
     lambda m: "expanded_conv_%s%s" % (m[1], "_BN" if m[2] else "")),
    (re.compile(r"^expanded_conv_(\d+)/(expand|depthwise|project)(/BatchNorm)?$"),
     lambda m: "block_%s_%s%s" % (m[1], m[2], "_BN" if m[3] else "")),
    (re.compile(r"^Conv_1(/BatchNorm)?$"), lambda m: "Conv_1" + ("_bn" if m[1] else "")),
    (re.compile(r"^Logits/Conv2d_1c_1x1$"), lambda m: "predictions"),
]


def keras_layer_name(family, scope):
    """The Keras layer holding a TF-Slim scope's variables (``family`` "v1" or "v2")."""
    for pattern, name in (_V1_NAMES if family == "v1" else _V2_NAMES):
        m = pattern.match(scope)
        if m:
            return name(m)
    raise KeyError(scope)


def keras_with_values(arch, size, multiplier, values):
    """Keras' MobileNet / MobileNetV2 at ``size`` pixels holding the checkpoint's values.

    Returns:
      a Keras model: images [batch, size, size, 3] in [-1, 1] ->
      (pooled features [batch, F] , logits [batch, 1000]).
    """
    import tf_keras

    family = arch.split("_")[1]
    prefix = "MobilenetV1/" if family == "v1" else "MobilenetV2/"
    tf_keras.backend.clear_session()
    make = tf_keras.applications.MobileNet if family == "v1" else \
        tf_keras.applications.MobileNetV2
    model = make(weights=None, alpha=multiplier, input_shape=(size, size, 3),
                 include_top=True, classes=1000, classifier_activation=None)
    by_scope = {}
    for name in values:
        if name != "global_step":
            scope, leaf = name[len(prefix):].rsplit("/", 1)
            by_scope.setdefault(scope, {})[leaf] = values[name]
    assigned = set()
    for scope, arrays in by_scope.items():
        layer = model.get_layer(keras_layer_name(family, scope))
        if "gamma" in arrays:
            new = [arrays[k] for k in ("gamma", "beta", "moving_mean", "moving_variance")]
        elif scope == LOGITS:
            w, b = arrays["weights"], arrays["biases"]
            kernel = w[..., 1:] if family == "v1" else w[0, 0, :, 1:]  # Dense: [C, 1000]
            new = [kernel, b[1:]]
        else:  # a convolution followed by batch norm: its weights only
            (new,) = [[a] for k, a in arrays.items() if k in ("weights", "depthwise_weights")]
            assert len(arrays) == 1, scope
        assert [tuple(v.shape) for v in layer.weights] == [a.shape for a in new], scope
        assert layer.name not in assigned, layer.name
        layer.set_weights(new)
        assigned.add(layer.name)
    assert assigned == {layer.name for layer in model.layers if layer.weights}
    (pool,) = [layer for layer in model.layers
               if isinstance(layer, tf_keras.layers.GlobalAveragePooling2D)]
    return tf_keras.Model(model.inputs, [pool.output, model.output])


def assert_images_differ(reference, diff):
    """The reference's outputs for images 0 and 1 differ by > 100 x TOLERANCE and > 1000 x ``diff``.

    Relative to their scale (max_rel). reference_support.assert_meaningful
    asks for 1000 x TOLERANCE; MobileNet V1's 27 plain layers on stand-in
    values leave only 5-15% between images (V2: 10-27%), so the bar here is
    1% -- still 100 times the tolerance -- and 1000 times the measured
    disagreement with our net, so a net that ignored its input could not pass.

    Returns:
      the relative difference between the two images' outputs (float).
    """
    assert np.all(np.isfinite(reference))
    between = max_rel(reference[0], reference[1])
    assert between > 100 * TOLERANCE, between
    assert between > 1000 * diff, (between, diff)
    return between


@pytest.mark.parametrize("arch,size,multiplier,seed", VARIANTS,
                         ids=["%s@%d" % (v[0], v[1]) for v in VARIANTS])
def test_matches_keras_applications(arch, size, multiplier, seed):
    start = time.perf_counter()
    manifest = standin.load_manifest(arch)
    values = standin.standin_values(manifest, seed)
    assert set(values) == {v["name"] for v in manifest["variables"]}
    keras = keras_with_values(arch, size, multiplier, values)
    ours = nets.checkpoint_function(arch, values, input_mapping=nets.INCEPTION_INPUT_MAPPING)

    images = structured_images(seed, 3, size, size)
    keras_features, keras_logits = (t.numpy() for t in keras(images * 2.0 - 1.0,
                                                             training=False))
    keras_features = keras_features.reshape(len(images), -1)  # V1 pools to [b, 1, 1, F]
    logits, features = (t.numpy() for t in ours(tf.constant(images)))

    feature_size = nets.get_net(arch).feature_size
    assert features.shape == keras_features.shape == (3, feature_size)
    assert logits.shape == (3, 1001) and keras_logits.shape == (3, 1000)
    diff_f = max_rel(features, keras_features)
    diff_l = max_rel(logits[:, 1:], keras_logits)
    between_f = assert_images_differ(keras_features, diff_f)
    between_l = assert_images_differ(keras_logits, diff_l)
    print("%s@%d: max rel diff features %.3g, logits %.3g; between images %.3g, %.3g (%.1f s)"
          % (arch, size, diff_f, diff_l, between_f, between_l, time.perf_counter() - start))
    assert diff_f < TOLERANCE, diff_f
    assert diff_l < TOLERANCE, diff_l
