"""Inception V1 (GoogLeNet) as TF-Slim defines it (``research/slim/nets/inception_v1.py``).

Sources: Szegedy, Liu, Jia, Sermanet, Reed, Anguelov, Erhan, Vanhoucke &
Rabinovich, "Going deeper with convolutions" (https://arxiv.org/abs/1409.4842),
2014, with batch norm after every convolution as TF-Slim adds it, and
TF-Slim's ``inception_v1_base`` / ``inception_v1`` (tf_slim 1.1.0's
``tf_slim/nets/inception_v1.py``; research/slim's adds the ``global_pool``
head option this net always takes). Variable
names, shapes and dtypes equal those of the checkpoint
``inception_v1_2016_08_28/inception_v1.ckpt`` (see
``hubexport/data/inception_v1_manifest.json``): with 1001 classes there are
230 variables (plus ``global_step``) holding 6,633,209 numbers -- 116
trainable ones (58 convolution weights, 57 batch norm betas, the logits'
biases; 6,618,649 numbers) and 114 moving statistics (14,560 numbers). The
net builds every one of them; the feature_vector net all but the logits
layer ``Logits/Conv2d_0c_1x1`` (228 variables, 5,607,184 numbers, the count
tf_slim's ``inception_v1_test.py`` expects of ``inception_v1_base``).

Layers (``inception_v1_arg_scope()``): every convolution but the logits is
followed by batch norm without scale (no gamma), epsilon 0.001, decay
0.9997, and ReLU; L2 weight decay 4e-5 on every convolution's weights,
logits included, none on biases or batch norm -- exactly the defaults of
:mod:`hubexport.nets.layers`, so no arg scope is needed here.

Layout: stem ``Conv2d_1a_7x7`` (stride 2), ``MaxPool_2a_3x3`` (stride 2),
``Conv2d_2b_1x1``, ``Conv2d_2c_3x3``, ``MaxPool_3a_3x3`` (stride 2); blocks
``Mixed_3b``, ``Mixed_3c``, ``MaxPool_4a_3x3`` (stride 2), ``Mixed_4b`` ...
``Mixed_4f``, ``MaxPool_5a_2x2`` (2x2, stride 2), ``Mixed_5b``, ``Mixed_5c``
(1024 channels). Each block concatenates a 1x1 | 1x1-3x3 | 1x1-3x3 |
3x3 max pool-1x1 branch (TF-Slim's 5x5 branch is a 3x3 one). A quirk of the
checkpoint: ``Mixed_5b/Branch_2``'s 3x3 convolution is scoped
``Conv2d_0a_3x3`` (everywhere else ``Conv2d_0b_3x3``). Head (``Logits``):
global average pooling, dropout (keep 0.8, only when training), the 1x1
convolution ``Conv2d_0c_1x1`` with biases and without batch norm, squeezed
to [batch, num_classes].

Padding and sizes: every convolution and pooling uses SAME padding, so
each of the five stride-2 steps maps a side of n pixels to ceil(n / 2) and
the final map is ceil(height / 32) x ceil(width / 32); at the default
224 x 224 it is 7 x 7. Any input of at least 1 x 1 pixels runs (1 -> 1 at
every step; found by experiment, tests/test_nets_inception.py), so
``MIN_IMAGE_SIZE`` is 1. Global average pooling replaces TF-Slim's fixed
7 x 7 VALID average pool (``Logits/MaxPool_0a_7x7`` in tf_slim 1.1.0,
``AvgPool_0a_7x7`` in research/slim); the two agree at 224 x 224, where the
map is 7 x 7.
"""

import tensorflow as tf

from hubexport.nets import layers

SCOPE = "InceptionV1"
DEFAULT_IMAGE_SIZE = 224
MIN_IMAGE_SIZE = 1
FEATURE_SIZE = 1024
DROPOUT_KEEP_PROB = 0.8

# The net from the stem to Mixed_5c, in order (depths read off TF-Slim's
# inception_v1_base; every layer SAME padding):
#   ("conv", end point, depth, kernel, stride)
#   ("max", end point, kernel, stride)
#   ("mixed", end point, b0, (b1a, b1b), (b2a, b2b), b3): an Inception block,
#     Branch_0 1x1 | Branch_1 1x1-3x3 | Branch_2 1x1-3x3 | Branch_3 3x3 max
#     pool (stride 1)-1x1.
_LAYOUT = [
    ("conv", "Conv2d_1a_7x7", 64, 7, 2),
    ("max", "MaxPool_2a_3x3", 3, 2),
    ("conv", "Conv2d_2b_1x1", 64, 1, 1),
    ("conv", "Conv2d_2c_3x3", 192, 3, 1),
    ("max", "MaxPool_3a_3x3", 3, 2),
    ("mixed", "Mixed_3b", 64, (96, 128), (16, 32), 32),
    ("mixed", "Mixed_3c", 128, (128, 192), (32, 96), 64),
    ("max", "MaxPool_4a_3x3", 3, 2),
    ("mixed", "Mixed_4b", 192, (96, 208), (16, 48), 64),
    ("mixed", "Mixed_4c", 160, (112, 224), (24, 64), 64),
    ("mixed", "Mixed_4d", 128, (128, 256), (24, 64), 64),
    ("mixed", "Mixed_4e", 112, (144, 288), (32, 64), 64),
    ("mixed", "Mixed_4f", 256, (160, 320), (32, 128), 128),
    ("max", "MaxPool_5a_2x2", 2, 2),
    ("mixed", "Mixed_5b", 256, (160, 320), (32, 128), 128),
    ("mixed", "Mixed_5c", 384, (192, 384), (48, 128), 128),
]

# Scope of Branch_2's 3x3 convolution; the checkpoint's quirk in Mixed_5b.
_BRANCH_2_3X3 = {"Mixed_5b": "Conv2d_0a_3x3"}


def _mixed(ctx, net, end_point, b0, b1, b2, b3):
    """One Inception block (SAME padding, stride 1): channels b0 + b1[1] + b2[1] + b3."""
    with ctx.scope(end_point):
        with ctx.scope("Branch_0"):
            branch_0 = layers.conv2d(ctx, net, b0, 1, scope="Conv2d_0a_1x1")
        with ctx.scope("Branch_1"):
            branch_1 = layers.conv2d(ctx, net, b1[0], 1, scope="Conv2d_0a_1x1")
            branch_1 = layers.conv2d(ctx, branch_1, b1[1], 3, scope="Conv2d_0b_3x3")
        with ctx.scope("Branch_2"):
            branch_2 = layers.conv2d(ctx, net, b2[0], 1, scope="Conv2d_0a_1x1")
            branch_2 = layers.conv2d(ctx, branch_2, b2[1], 3,
                                     scope=_BRANCH_2_3X3.get(end_point, "Conv2d_0b_3x3"))
        with ctx.scope("Branch_3"):
            with tf.name_scope("MaxPool_0a_3x3"):
                branch_3 = layers.max_pool(net, 3, 1, "SAME")
            branch_3 = layers.conv2d(ctx, branch_3, b3, 1, scope="Conv2d_0b_1x1")
        return tf.concat([branch_0, branch_1, branch_2, branch_3], 3)


def inception_v1(ctx, images, num_classes=1001):
    """Builds Inception V1 on images in [-1, 1].

    Args:
      ctx: a :class:`hubexport.nets.layers.NetContext`.
      images: float32 [batch, height, width, 3], values in [-1, 1], height
        and width >= ``MIN_IMAGE_SIZE`` (1) pixel.
      num_classes: logits per image (1001: index 0 is background), or None
        for no logits layer (the feature_vector module).

    Returns:
      (logits, end_points): logits float32 [batch, num_classes] or None;
      end_points maps TF-Slim's end point names (``Conv2d_1a_7x7``,
      ``MaxPool_2a_3x3``, ``Conv2d_2b_1x1``, ``Conv2d_2c_3x3``,
      ``MaxPool_3a_3x3``, ``Mixed_3b``, ``Mixed_3c``, ``MaxPool_4a_3x3``,
      ``Mixed_4b`` ... ``Mixed_4f``, ``MaxPool_5a_2x2``, ``Mixed_5b``,
      ``Mixed_5c`` [batch, ceil(height/32), ceil(width/32), 1024],
      ``global_pool`` float32 [batch, 1, 1, 1024] and, with logits,
      ``Logits`` [batch, num_classes]) to float32 tensors.
    """
    end_points = {}
    with ctx.scope(SCOPE):
        net = images
        for kind, end_point, *args in _LAYOUT:
            if kind == "conv":
                depth, kernel, stride = args
                net = layers.conv2d(ctx, net, depth, kernel, stride, scope=end_point)
            elif kind == "max":
                kernel, stride = args
                with tf.name_scope(end_point):
                    net = layers.max_pool(net, kernel, stride, "SAME")
            else:
                net = _mixed(ctx, net, end_point, *args)
            end_points[end_point] = net
        with ctx.scope("Logits"):
            with tf.name_scope("global_pool"):
                net = layers.global_avg_pool(net)
            end_points["global_pool"] = net
            if num_classes is None:
                return None, end_points
            with tf.name_scope("Dropout_0b"):
                net = layers.dropout(ctx, net, keep_prob=DROPOUT_KEEP_PROB)
            logits = layers.conv2d(ctx, net, num_classes, 1, scope="Conv2d_0c_1x1",
                                   normalize=False, activation=None)
            logits = tf.squeeze(logits, [1, 2], name="SpatialSqueeze")
        end_points["Logits"] = logits
    return logits, end_points


NETS = {"inception_v1": layers.Net(
    name="inception_v1", scope=SCOPE, default_image_size=DEFAULT_IMAGE_SIZE,
    min_image_size=MIN_IMAGE_SIZE, feature_size=FEATURE_SIZE,
    logits_scope=SCOPE + "/Logits/Conv2d_0c_1x1", build=inception_v1)}
