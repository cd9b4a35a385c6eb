"""MobileNet V2 at depth multipliers 0.35 to 1.4, as TF-Slim defines it: one definition.

Sources:
  * Mark Sandler, Andrew Howard, Menglong Zhu, Andrey Zhmoginov, Liang-Chieh
    Chen, "MobileNetV2: Inverted Residuals and Linear Bottlenecks"
    (https://arxiv.org/abs/1801.04381), 2018;
  * TF-Slim's ``research/slim/nets/mobilenet/mobilenet_v2.py`` (``V2_DEF``,
    ``mobilenet`` with ``finegrain_classification_mode`` for multipliers
    below 1), ``mobilenet.py`` (``depth_multiplier``, ``_make_divisible``,
    ``mobilenet``'s head, ``training_scope``) and ``conv_blocks.py``
    (``expanded_conv``) in tensorflow/models. tf_slim 1.1.0 does not ship
    them; the reference of tests/test_reference_mobilenet.py is
    ``tf_keras.applications.MobileNetV2``.

Variable names, shapes and dtypes (all float32) equal those of the
checkpoints ``mobilenet_v2_{DM}_{RES}.tgz`` (prefix
``mobilenet_v2_{DM}_{RES}.ckpt``, a V2 checkpoint; the resolution RES does
not change them), see ``hubexport/data/mobilenet_v2_*_manifest.json`` (read
off Keras' MobileNetV2 by scripts/make_mobilenet_manifest.py, not off this
net). Each has 262 variables (plus ``global_step``): 52 convolution weights
(17 depthwise), 52 batch norms (gamma, beta, moving mean and variance) and
the logits' weights and biases. Numbers (moving statistics included; a
feature_vector module drops the logits layer ``Logits/Conv2d_1c_1x1``,
F x 1001 + 1001 numbers):

  ================= ===== ========= ============== ================
  architecture      DM    features  numbers        without logits
  ================= ===== ========= ============== ================
  mobilenet_v2_035  0.35  1280      1,692,489      410,208
  mobilenet_v2_050  0.5   1280      1,988,505      706,224
  mobilenet_v2_075  0.75  1280      2,664,345      1,382,064
  mobilenet_v2_100  1.0   1280      3,540,265      2,257,984
  mobilenet_v2_130  1.3   1664      5,432,713      3,766,048
  mobilenet_v2_140  1.4   1792      6,158,505      4,363,712
  ================= ===== ========= ============== ================

Layout (scope ``MobilenetV2``; every convolution SAME padding and batch norm
with gamma; ``d(n) = make_divisible(n * DM)``, :func:`make_divisible`):
  * ``Conv``: 3x3/2 convolution to d(32), ReLU6 (end point ``layer_1``);
  * 17 inverted residual blocks (:data:`BLOCKS`, TF-Slim's ``expanded_conv``)
    ``expanded_conv``, ``expanded_conv_1`` .. ``expanded_conv_16`` (end
    points ``layer_2`` .. ``layer_18``), each: ``expand`` 1x1 convolution to
    ``make_divisible(6 * in)`` + ReLU6 (absent from the first block, whose
    expansion is 1), ``depthwise`` 3x3 depthwise convolution with the
    block's stride + ReLU6, ``project`` 1x1 convolution to d(out), linear
    (no activation); plus the input when the stride is 1 and in == d(out);
  * ``Conv_1``: 1x1 convolution + ReLU6 to 1280 for DM <= 1 (TF-Slim's
    finegrain classification mode keeps the last layer large) and to
    ``make_divisible(1280 * DM)`` above (1664 at 1.3, 1792 at 1.4): the
    feature size (end point ``layer_19``);
  * head (``Logits``): global average pooling (``global_pool``), dropout
    (keep 0.8, ``training_scope()``'s, only when training), the 1x1
    convolution ``Conv2d_1c_1x1`` with biases and without batch norm or
    activation, squeezed to [batch, num_classes].

Layer defaults: ``mobilenet.training_scope()`` and ``V2_DEF`` (:data:`ARG_SCOPE`):
batch norm with scale (gamma), decay 0.997 (``bn_decay``), epsilon 0.001
(``slim.batch_norm``'s default); L2 weight decay 4e-5 on every ``conv2d``'s
weights (expand, project, ``Conv``, ``Conv_1``, logits), none on depthwise
weights (``separable_conv2d``'s ``weights_regularizer=None``), biases or
batch norm.

Input size: as in MobileNet V1, SAME padding maps a side of n pixels to
ceil(n / 2) at each of the 5 stride-2 steps, so the last map is
ceil(h / 32) x ceil(w / 32) (7 x 7 at 224, 3 x 3 at 96) and any input of at
least 1 x 1 pixels runs (``MIN_IMAGE_SIZE`` = 1, found by experiment:
tests/test_nets_mobilenet.py). Residual additions always see equal shapes:
they are only made at stride 1.
"""

import functools

import tensorflow as tf

from hubexport.nets import layers

SCOPE = "MobilenetV2"
DEFAULT_IMAGE_SIZE = 224
MIN_IMAGE_SIZE = 1
#: TF-Slim's ``depth_multiplier(divisible_by=8, min_depth=8)``.
DIVISIBLE_BY = 8
#: TF-Slim's ``expand_input_by_factor(6)``.
EXPANSION = 6
#: Depth of ``Conv_1`` before the multiplier (kept for multipliers <= 1).
LAST_DEPTH = 1280
#: TF-Slim's ``mobilenet.training_scope(dropout_keep_prob=0.8)``.
DROPOUT_KEEP_PROB = 0.8
LOGITS_SCOPE = SCOPE + "/Logits/Conv2d_1c_1x1"

#: TF-Slim's ``mobilenet.training_scope()`` (bn_decay 0.997, weight_decay
#: 4e-5) and ``V2_DEF`` (batch norm center and scale; epsilon: slim's 0.001).
ARG_SCOPE = {
    "batch_norm_scale": True,
    "batch_norm_decay": 0.997,
    "batch_norm_epsilon": 0.001,
    "weight_decay": 4e-5,
}

#: TF-Slim's ``V2_DEF`` spec between ``Conv`` and ``Conv_1``: (stride,
#: output depth before the multiplier) of ``expanded_conv``,
#: ``expanded_conv_1`` .. ``expanded_conv_16``.
BLOCKS = (
    (1, 16),
    (2, 24), (1, 24),
    (2, 32), (1, 32), (1, 32),
    (2, 64), (1, 64), (1, 64), (1, 64),
    (1, 96), (1, 96), (1, 96),
    (2, 160), (1, 160), (1, 160),
    (1, 320),
)

#: Architecture name suffix -> depth multiplier (tfhub.dev's model names).
DEPTH_MULTIPLIERS = {"035": 0.35, "050": 0.5, "075": 0.75, "100": 1.0, "130": 1.3,
                     "140": 1.4}


def make_divisible(value, divisor=DIVISIBLE_BY, min_value=None):
    """TF-Slim's ``_make_divisible``: ``value`` rounded to a multiple of ``divisor``.

    Rounds to the nearest multiple (halves up), at least ``min_value``
    (default ``divisor``), and one multiple up if rounding lost more than
    10% of ``value``.

    Args:
      value: float, e.g. 32 * 0.35 = 11.2.
      divisor: int, 8 for every MobileNet V2 depth.
      min_value: int or None.

    Returns:
      int, e.g. 16 for 11.2 (8 would lose 29%).
    """
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def feature_size(depth_multiplier):
    """Channels of ``Conv_1`` (the feature vector's length) for a depth multiplier."""
    if depth_multiplier <= 1.0:
        return LAST_DEPTH
    return make_divisible(LAST_DEPTH * depth_multiplier)


def _expanded_conv(ctx, net, stride, num_outputs, expansion, end_point, end_points):
    """TF-Slim's ``expanded_conv``: expand (if wider), depthwise, linear project, residual.

    Args:
      net: float32 [batch, h, w, in].
      stride: stride of the depthwise step, 1 or 2.
      num_outputs: output depth (already multiplied and made divisible).
      expansion: 6, or 1 for the first block (no ``expand`` layer).
      end_point: ``layer_K``, the prefix of its end points.

    Returns:
      float32 [batch, ceil(h / stride), ceil(w / stride), num_outputs].
    """
    inputs = net
    channels = int(net.shape[-1])
    # The first block's expand_input_by_factor(1, divisible_by=1) is the
    # input depth itself, which adds no layer.
    inner = make_divisible(channels * expansion) if expansion != 1 else channels
    if inner > channels:
        net = layers.conv2d(ctx, net, inner, 1, scope="expand", activation=tf.nn.relu6)
        end_points[end_point + "/expansion_output"] = net
    net = layers.depthwise_conv2d(ctx, net, 3, stride, scope="depthwise")
    end_points[end_point + "/depthwise_output"] = net
    net = layers.conv2d(ctx, net, num_outputs, 1, scope="project", activation=None)
    if stride == 1 and num_outputs == channels:
        net = net + inputs
    net = tf.identity(net, name="output")
    end_points[end_point + "/output"] = net
    return net


def mobilenet_v2(ctx, images, num_classes=1001, depth_multiplier=1.0):
    """Builds MobileNet V2 on images in [-1, 1] (TF-Slim's ``mobilenet_v2.mobilenet``).

    Args:
      ctx: a :class:`hubexport.nets.layers.NetContext`.
      images: float32 [batch, height, width, 3], values in [-1, 1], height
        and width >= ``MIN_IMAGE_SIZE`` (1) pixel.
      num_classes: logits per image (1001: index 0 is background), or None
        for no logits layer (the feature_vector module).
      depth_multiplier: float > 0, e.g. 1.4 (the checkpoint's); below 1
        ``Conv_1`` keeps 1280 channels (finegrain classification mode).

    Returns:
      (logits, end_points): logits float32 [batch, num_classes] or None;
      end_points maps TF-Slim's end point names to float32 tensors:
      ``layer_1`` (``Conv``, [batch, ceil(h/2), ceil(w/2), d(32)]),
      ``layer_2`` .. ``layer_18`` (the blocks' outputs) with
      ``layer_K/expansion_output`` (K >= 3), ``layer_K/depthwise_output``
      and ``layer_K/output`` (the block's output again), ``layer_19``
      (``Conv_1``, [batch, ceil(h/32), ceil(w/32), feature size]),
      ``global_pool`` [batch, 1, 1, feature size] and, with logits,
      ``Logits`` [batch, num_classes].

    Raises:
      ValueError: ``depth_multiplier`` is not positive.
    """
    if not depth_multiplier > 0:
        raise ValueError("depth_multiplier must be greater than zero, not %r"
                         % (depth_multiplier,))
    end_points = {}
    with ctx.arg_scope(**ARG_SCOPE), ctx.scope(SCOPE):
        net = layers.conv2d(ctx, images, make_divisible(32 * depth_multiplier), 3, 2,
                            scope="Conv", activation=tf.nn.relu6)
        end_points["layer_1"] = net
        for i, (stride, depth) in enumerate(BLOCKS):
            end_point = "layer_%d" % (i + 2)
            with ctx.scope("expanded_conv_%d" % i if i else "expanded_conv"):
                net = _expanded_conv(ctx, net, stride, make_divisible(depth * depth_multiplier),
                                     EXPANSION if i else 1, end_point, end_points)
            end_points[end_point] = net
        net = layers.conv2d(ctx, net, feature_size(depth_multiplier), 1, scope="Conv_1",
                            activation=tf.nn.relu6)
        end_points["layer_%d" % (len(BLOCKS) + 2)] = net
        with ctx.scope("Logits"):
            with tf.name_scope("global_pool"):
                net = layers.global_avg_pool(net)
            end_points["global_pool"] = net
            if num_classes is None:
                return None, end_points
            with tf.name_scope("Dropout"):
                net = layers.dropout(ctx, net, keep_prob=DROPOUT_KEEP_PROB)
            logits = layers.conv2d(ctx, net, num_classes, 1, scope="Conv2d_1c_1x1",
                                   normalize=False, activation=None)
            logits = tf.squeeze(logits, [1, 2], name="SpatialSqueeze")
        end_points["Logits"] = logits
    return logits, end_points


def _net(suffix):
    multiplier = DEPTH_MULTIPLIERS[suffix]
    return layers.Net(
        name="mobilenet_v2_" + suffix, scope=SCOPE, default_image_size=DEFAULT_IMAGE_SIZE,
        min_image_size=MIN_IMAGE_SIZE, feature_size=feature_size(multiplier),
        logits_scope=LOGITS_SCOPE,
        build=functools.partial(mobilenet_v2, depth_multiplier=multiplier))


NETS = {net.name: net for net in (_net(s) for s in sorted(DEPTH_MULTIPLIERS))}
