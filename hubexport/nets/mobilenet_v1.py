"""MobileNet V1 at depth multipliers 0.25, 0.5, 0.75 and 1.0, as TF-Slim defines it: one definition.

Sources:
  * Andrew G. Howard, Menglong Zhu, Bo Chen, Dmitry Kalenichenko, Weijun
    Wang, Tobias Weyand, Marco Andreetto, Hartwig Adam, "MobileNets:
    Efficient Convolutional Neural Networks for Mobile Vision Applications"
    (https://arxiv.org/abs/1704.04861), 2017;
  * TF-Slim's ``research/slim/nets/mobilenet_v1.py`` (tensorflow/models):
    ``_CONV_DEFS``, ``mobilenet_v1_base``, ``mobilenet_v1`` with
    ``global_pool=True`` and ``mobilenet_v1_arg_scope()``. tf_slim 1.1.0
    does not ship it; the reference of tests/test_reference_mobilenet.py is
    ``tf_keras.applications.MobileNet``.

Variable names, shapes and dtypes (all float32) equal those of the
checkpoints ``mobilenet_v1_2018_08_02/mobilenet_v1_{DM}_{RES}.tgz``
(prefix ``mobilenet_v1_{DM}_{RES}.ckpt``, a V2 checkpoint; DM spelled
1.0, 0.75, 0.5, 0.25; the resolution RES does not change them), see
``hubexport/data/mobilenet_v1_*_manifest.json`` (read off Keras' MobileNet
by scripts/make_mobilenet_manifest.py, not off this net). Each has 137
variables (plus ``global_step``): 27 convolution weights, 27 batch norms
(gamma, beta, moving mean and variance) and the logits' weights and biases.
Numbers (moving statistics included; a feature_vector module drops the
logits layer ``Logits/Conv2d_1c_1x1``, F x 1001 + 1001 numbers):

  ================= ======== ========= ============== ================
  architecture      DM       features  numbers        without logits
  ================= ======== ========= ============== ================
  mobilenet_v1_025  0.25     256       475,801        218,544
  mobilenet_v1_050  0.5      512       1,343,049      829,536
  mobilenet_v1_075  0.75     768       2,602,745      1,832,976
  mobilenet_v1_100  1.0      1024      4,254,889      3,228,864
  ================= ======== ========= ============== ================

Layout (scope ``MobilenetV1``; every convolution SAME padding, batch norm
with gamma, then ReLU6; ``depth(d) = max(int(d * DM), 8)``, TF-Slim's
``min_depth=8``):
  * ``Conv2d_0``: 3x3/2 convolution to depth(32);
  * ``Conv2d_N_depthwise`` (N = 1..13): 3x3 depthwise convolution
    (``depthwise_weights`` [3, 3, in, 1]) with stride :data:`LAYOUT` [N]
    (2 for N = 2, 4, 6, 12), then ``Conv2d_N_pointwise``: 1x1 convolution to
    depth(64, 128, 128, 256, 256, 512 x 6, 1024, 1024);
  * head (``Logits``): global average pooling (end point ``global_pool``),
    dropout ``Dropout_1b`` (keep 0.999, only when training), the 1x1
    convolution ``Conv2d_1c_1x1`` with biases and without batch norm or
    activation, squeezed to [batch, num_classes].

Layer defaults: ``mobilenet_v1_arg_scope()`` (:data:`ARG_SCOPE`): batch norm
with scale (gamma), decay 0.9997, epsilon 0.001; L2 weight decay 4e-5 on
every ``conv2d``'s weights (the logits' included); none on depthwise
weights (``regularize_depthwise=False``), biases or batch norm.

Input size: with SAME padding a stride-2 step maps a side of n pixels to
ceil(n / 2) and a stride-1 step keeps it, so the last map is
ceil(h / 32) x ceil(w / 32) (7 x 7 at 224, 4 x 4 at 128) and any input of
at least 1 x 1 pixels gives a non-empty map (``MIN_IMAGE_SIZE`` = 1, found
by experiment: tests/test_nets_mobilenet.py runs 1 x 1 and sees 0 refused).
Global average pooling is TF-Slim's ``global_pool=True`` head; its default
head (a 7 x 7 VALID average pool, shrunk for smaller maps) agrees with it
whenever the last map is at most 7 x 7, i.e. at every published resolution
(128 to 224 pixels).
"""

import functools

import tensorflow as tf

from hubexport.nets import layers

SCOPE = "MobilenetV1"
DEFAULT_IMAGE_SIZE = 224
MIN_IMAGE_SIZE = 1
#: TF-Slim's ``min_depth``: no convolution gets fewer channels.
MIN_DEPTH = 8
#: TF-Slim's ``mobilenet_v1(dropout_keep_prob=0.999)``.
DROPOUT_KEEP_PROB = 0.999
LOGITS_SCOPE = SCOPE + "/Logits/Conv2d_1c_1x1"

#: TF-Slim's ``mobilenet_v1_arg_scope()`` defaults (research/slim/nets/mobilenet_v1.py).
ARG_SCOPE = {
    "batch_norm_scale": True,
    "batch_norm_decay": 0.9997,
    "batch_norm_epsilon": 0.001,
    "weight_decay": 4e-5,
}

#: TF-Slim's ``_CONV_DEFS``: (stride, depth before the multiplier) of
#: ``Conv2d_0`` (a 3x3 convolution) and of ``Conv2d_1`` .. ``Conv2d_13``
#: (3x3 depthwise with that stride + 1x1 pointwise to that depth).
LAYOUT = (
    (2, 32),
    (1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
    (1, 512), (1, 512), (1, 512), (1, 512), (1, 512),
    (2, 1024), (1, 1024),
)

#: Architecture name suffix -> depth multiplier (tfhub.dev's model names).
DEPTH_MULTIPLIERS = {"025": 0.25, "050": 0.5, "075": 0.75, "100": 1.0}


def depth(channels, depth_multiplier):
    """TF-Slim's ``max(int(channels * depth_multiplier), min_depth)`` (an int)."""
    return max(int(channels * depth_multiplier), MIN_DEPTH)


def mobilenet_v1(ctx, images, num_classes=1001, depth_multiplier=1.0):
    """Builds MobileNet V1 on images in [-1, 1] (TF-Slim's ``mobilenet_v1``, ``global_pool=True``).

    Args:
      ctx: a :class:`hubexport.nets.layers.NetContext`.
      images: float32 [batch, height, width, 3], values in [-1, 1], height
        and width >= ``MIN_IMAGE_SIZE`` (1) pixel.
      num_classes: logits per image (1001: index 0 is background), or None
        for no logits layer (the feature_vector module).
      depth_multiplier: float > 0, e.g. 0.25 (the checkpoint's).

    Returns:
      (logits, end_points): logits float32 [batch, num_classes] or None;
      end_points maps TF-Slim's end point names to float32 tensors:
      ``Conv2d_0`` [batch, ceil(h/2), ceil(w/2), depth(32)],
      ``Conv2d_N_depthwise`` and ``Conv2d_N_pointwise`` for N = 1..13
      (``Conv2d_13_pointwise`` [batch, ceil(h/32), ceil(w/32), depth(1024)]),
      ``global_pool`` [batch, 1, 1, depth(1024)] and, with logits,
      ``Logits`` [batch, num_classes].

    Raises:
      ValueError: ``depth_multiplier`` is not positive.
    """
    if not depth_multiplier > 0:
        raise ValueError("depth_multiplier must be greater than zero, not %r"
                         % (depth_multiplier,))
    end_points = {}
    with ctx.arg_scope(**ARG_SCOPE), ctx.scope(SCOPE):
        stride, channels = LAYOUT[0]
        net = layers.conv2d(ctx, images, depth(channels, depth_multiplier), 3, stride,
                            scope="Conv2d_0", activation=tf.nn.relu6)
        end_points["Conv2d_0"] = net
        for i, (stride, channels) in enumerate(LAYOUT[1:], 1):
            name = "Conv2d_%d_depthwise" % i
            net = layers.depthwise_conv2d(ctx, net, 3, stride, scope=name)
            end_points[name] = net
            name = "Conv2d_%d_pointwise" % i
            net = layers.conv2d(ctx, net, depth(channels, depth_multiplier), 1, scope=name,
                                activation=tf.nn.relu6)
            end_points[name] = net
        with ctx.scope("Logits"):
            with tf.name_scope("global_pool"):
                net = layers.global_avg_pool(net)
            end_points["global_pool"] = net
            if num_classes is None:
                return None, end_points
            with tf.name_scope("Dropout_1b"):
                net = layers.dropout(ctx, net, keep_prob=DROPOUT_KEEP_PROB)
            logits = layers.conv2d(ctx, net, num_classes, 1, scope="Conv2d_1c_1x1",
                                   normalize=False, activation=None)
            logits = tf.squeeze(logits, [1, 2], name="SpatialSqueeze")
        end_points["Logits"] = logits
    return logits, end_points


def _net(suffix):
    multiplier = DEPTH_MULTIPLIERS[suffix]
    return layers.Net(
        name="mobilenet_v1_" + suffix, scope=SCOPE, default_image_size=DEFAULT_IMAGE_SIZE,
        min_image_size=MIN_IMAGE_SIZE, feature_size=depth(LAYOUT[-1][1], multiplier),
        logits_scope=LOGITS_SCOPE,
        build=functools.partial(mobilenet_v1, depth_multiplier=multiplier))


NETS = {net.name: net for net in (_net(s) for s in sorted(DEPTH_MULTIPLIERS))}
