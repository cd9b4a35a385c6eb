"""Inception V3 as TF-Slim defines it (``research/slim/nets/inception_v3.py``).

Sources: Szegedy, Vanhoucke, Ioffe, Shlens & Wojna, "Rethinking the
Inception Architecture for Computer Vision" (https://arxiv.org/abs/1512.00567),
2015, and TF-Slim's ``inception_v3_base`` / ``inception_v3`` with their
defaults (``depth_multiplier=1.0``, ``min_depth=16``, which then changes no
depth; tf_slim 1.1.0's ``tf_slim/nets/inception_v3.py``; research/slim's adds
the ``global_pool`` head option this net always takes). Variable names,
shapes and dtypes equal those of the checkpoint
``inception_v3_2016_08_28/inception_v3.ckpt`` (see
``hubexport/data/inception_v3_manifest.json``): with 1001 classes there are
388 variables (plus ``global_step``) holding 27,182,194 numbers. Of these the
auxiliary head ``AuxLogits`` (10 variables, 3,328,361 numbers) is not built:
the modules do not use it, and its checkpoint values are ignored. The net
builds the other 378 variables (23,853,833 numbers: 190 trainable -- 95
convolution weights, 94 batch norm betas, the logits' biases -- and 188
moving statistics with 34,432 numbers); the feature_vector net all but the
logits layer ``Logits/Conv2d_1c_1x1`` (376 variables, 21,802,784 numbers,
the count tf_slim's ``inception_v3_test.py`` expects of ``inception_v3_base``).

Layers (``inception_v3_arg_scope()``): every convolution but the logits is
followed by batch norm without scale (no gamma), epsilon 0.001, decay
0.9997, and ReLU; L2 weight decay 4e-5 on every convolution's weights,
logits included, none on biases or batch norm -- exactly the defaults of
:mod:`hubexport.nets.layers`, so no arg scope is needed here.

Layout: stem ``Conv2d_1a_3x3`` (stride 2), ``Conv2d_2a_3x3``,
``Conv2d_2b_3x3``, ``MaxPool_3a_3x3`` (stride 2), ``Conv2d_3b_1x1``,
``Conv2d_4a_3x3``, ``MaxPool_5a_3x3`` (stride 2); the 35 x 35 blocks
``Mixed_5b`` ... ``Mixed_5d`` (5x5 branch), the reduction ``Mixed_6a``, the
17 x 17 blocks ``Mixed_6b`` ... ``Mixed_6e`` (factorized 1x7 / 7x1
branches), the reduction ``Mixed_7a`` and the 8 x 8 blocks ``Mixed_7b``,
``Mixed_7c`` (2048 channels; their 1x3 and 3x1 convolutions on one input are
concatenated). Scopes are TF-Slim's, quirks included: ``Mixed_5c/Branch_1``
holds ``Conv2d_0b_1x1`` and ``Conv_1_0c_5x5``; ``Mixed_6a``'s strided 3x3
convolutions are scoped ``Conv2d_1a_1x1``; ``Mixed_7b/Branch_1``'s 3x1 is
``Conv2d_0b_3x1`` (``Conv2d_0c_3x1`` in ``Mixed_7c``). Head (``Logits``):
global average pooling, dropout (keep 0.8, only when training; end point
``PreLogits``), the 1x1 convolution ``Conv2d_1c_1x1`` with biases and
without batch norm, squeezed to [batch, num_classes].

Padding and sizes: the stem (but ``Conv2d_2b_3x3``) and the strided layers
of the reductions ``Mixed_6a`` / ``Mixed_7a`` use VALID padding, everything
else SAME. With ``r(n) = floor((n - 3) / 2) + 1`` (3x3, stride 2, VALID), a
side of n pixels becomes ``r(r(r(r(r(n) - 2) - 2)))`` (Conv2d_1a r,
Conv2d_2a -2, MaxPool_3a r, Conv2d_4a -2, MaxPool_5a r, Mixed_6a r,
Mixed_7a r): 299 -> 149 -> 147 -> 73 -> 71 -> 35 -> 17 -> 8 at the default
299 x 299. The smallest input that yields a non-empty final map is 75 x 75
pixels (found by experiment, tests/test_nets_inception.py): 75 -> 37 -> 35
-> 17 -> 15 -> 7 -> 3 -> 1, while 74 -> 36 -> 34 -> 16 -> 14 -> 6 -> 2 leaves
Mixed_7a a 2 x 2 map, too small for its 3x3 VALID layers (r(2) = 0;
TensorFlow refuses to build it: "Negative dimension size").
Global average pooling replaces TF-Slim's fixed average pool
(``AvgPool_1a_8x8``, its kernel min(8, map size) from the static shape);
they agree whenever the final map is at most 8 x 8 and its size is known
when the graph is built, e.g. at 299 x 299.
"""

import tensorflow as tf

from hubexport.nets import layers

SCOPE = "InceptionV3"
DEFAULT_IMAGE_SIZE = 299
MIN_IMAGE_SIZE = 75
FEATURE_SIZE = 2048
DROPOUT_KEEP_PROB = 0.8

# Layers, as tuples (depths read off TF-Slim's inception_v3_base):
#   ("conv", scope, depth, kernel, stride, padding); kernel an int or (kh, kw)
#   ("avg"|"max", scope, kernel, stride, padding)
#   ("fork", [layer, ...]): each layer on the same input, outputs concatenated
# A branch is a list of layers applied in turn; a block a list of branches
# (scopes Branch_0, Branch_1, ...) whose outputs are concatenated.


def _conv(scope, depth, kernel, stride=1, padding="SAME"):
    return ("conv", scope, depth, kernel, stride, padding)


_AVG_1X1 = ("avg", "AvgPool_0a_3x3", 3, 1, "SAME")


def _block_35(pool_depth, branch_1_scopes=("Conv2d_0a_1x1", "Conv2d_0b_5x5")):
    """Mixed_5b ... Mixed_5d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool-1x1."""
    return [[_conv("Conv2d_0a_1x1", 64, 1)],
            [_conv(branch_1_scopes[0], 48, 1), _conv(branch_1_scopes[1], 64, 5)],
            [_conv("Conv2d_0a_1x1", 64, 1), _conv("Conv2d_0b_3x3", 96, 3),
             _conv("Conv2d_0c_3x3", 96, 3)],
            [_AVG_1X1, _conv("Conv2d_0b_1x1", pool_depth, 1)]]


def _block_17(depth):
    """Mixed_6b ... Mixed_6e: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avg pool-1x1."""
    return [[_conv("Conv2d_0a_1x1", 192, 1)],
            [_conv("Conv2d_0a_1x1", depth, 1), _conv("Conv2d_0b_1x7", depth, (1, 7)),
             _conv("Conv2d_0c_7x1", 192, (7, 1))],
            [_conv("Conv2d_0a_1x1", depth, 1), _conv("Conv2d_0b_7x1", depth, (7, 1)),
             _conv("Conv2d_0c_1x7", depth, (1, 7)), _conv("Conv2d_0d_7x1", depth, (7, 1)),
             _conv("Conv2d_0e_1x7", 192, (1, 7))],
            [_AVG_1X1, _conv("Conv2d_0b_1x1", 192, 1)]]


def _block_8(branch_1_3x1):
    """Mixed_7b, Mixed_7c: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | avg pool-1x1."""
    return [[_conv("Conv2d_0a_1x1", 320, 1)],
            [_conv("Conv2d_0a_1x1", 384, 1),
             ("fork", [_conv("Conv2d_0b_1x3", 384, (1, 3)), _conv(branch_1_3x1, 384, (3, 1))])],
            [_conv("Conv2d_0a_1x1", 448, 1), _conv("Conv2d_0b_3x3", 384, 3),
             ("fork", [_conv("Conv2d_0c_1x3", 384, (1, 3)),
                       _conv("Conv2d_0d_3x1", 384, (3, 1))])],
            [_AVG_1X1, _conv("Conv2d_0b_1x1", 192, 1)]]


# The stem, in order; each layer's scope is its end point.
_STEM = [
    _conv("Conv2d_1a_3x3", 32, 3, 2, "VALID"),
    _conv("Conv2d_2a_3x3", 32, 3, 1, "VALID"),
    _conv("Conv2d_2b_3x3", 64, 3, 1, "SAME"),
    ("max", "MaxPool_3a_3x3", 3, 2, "VALID"),
    _conv("Conv2d_3b_1x1", 80, 1, 1, "VALID"),
    _conv("Conv2d_4a_3x3", 192, 3, 1, "VALID"),
    ("max", "MaxPool_5a_3x3", 3, 2, "VALID"),
]

# The blocks: (end point, branches), in order.
_BLOCKS = [
    ("Mixed_5b", _block_35(32)),                                       # 35 x 35 x 256
    ("Mixed_5c", _block_35(64, ("Conv2d_0b_1x1", "Conv_1_0c_5x5"))),   # 35 x 35 x 288
    ("Mixed_5d", _block_35(64)),                                       # 35 x 35 x 288
    ("Mixed_6a", [[_conv("Conv2d_1a_1x1", 384, 3, 2, "VALID")],        # 17 x 17 x 768
                  [_conv("Conv2d_0a_1x1", 64, 1), _conv("Conv2d_0b_3x3", 96, 3),
                   _conv("Conv2d_1a_1x1", 96, 3, 2, "VALID")],
                  [("max", "MaxPool_1a_3x3", 3, 2, "VALID")]]),
    ("Mixed_6b", _block_17(128)),
    ("Mixed_6c", _block_17(160)),
    ("Mixed_6d", _block_17(160)),
    ("Mixed_6e", _block_17(192)),                                      # 17 x 17 x 768
    ("Mixed_7a", [[_conv("Conv2d_0a_1x1", 192, 1),                     # 8 x 8 x 1280
                   _conv("Conv2d_1a_3x3", 320, 3, 2, "VALID")],
                  [_conv("Conv2d_0a_1x1", 192, 1), _conv("Conv2d_0b_1x7", 192, (1, 7)),
                   _conv("Conv2d_0c_7x1", 192, (7, 1)),
                   _conv("Conv2d_1a_3x3", 192, 3, 2, "VALID")],
                  [("max", "MaxPool_1a_3x3", 3, 2, "VALID")]]),
    ("Mixed_7b", _block_8("Conv2d_0b_3x1")),                           # 8 x 8 x 2048
    ("Mixed_7c", _block_8("Conv2d_0c_3x1")),                           # 8 x 8 x 2048
]


def _layer(ctx, net, layer):
    """Applies one layer tuple (see above) to float32 [batch, h, w, c]."""
    kind = layer[0]
    if kind == "conv":
        _, scope, depth, kernel, stride, padding = layer
        return layers.conv2d(ctx, net, depth, kernel, stride, padding=padding, scope=scope)
    if kind == "fork":
        return tf.concat([_layer(ctx, net, sub) for sub in layer[1]], 3)
    _, scope, kernel, stride, padding = layer
    pool = layers.avg_pool if kind == "avg" else layers.max_pool
    with tf.name_scope(scope):
        return pool(net, kernel, stride, padding)


def inception_v3(ctx, images, num_classes=1001):
    """Builds Inception V3 (without its auxiliary head) on images in [-1, 1].

    Args:
      ctx: a :class:`hubexport.nets.layers.NetContext`.
      images: float32 [batch, height, width, 3], values in [-1, 1], height
        and width >= ``MIN_IMAGE_SIZE`` (75) pixels.
      num_classes: logits per image (1001: index 0 is background), or None
        for no logits layer (the feature_vector module).

    Returns:
      (logits, end_points): logits float32 [batch, num_classes] or None;
      end_points maps TF-Slim's end point names (``Conv2d_1a_3x3``,
      ``Conv2d_2a_3x3``, ``Conv2d_2b_3x3``, ``MaxPool_3a_3x3``,
      ``Conv2d_3b_1x1``, ``Conv2d_4a_3x3``, ``MaxPool_5a_3x3``, ``Mixed_5b``
      ... ``Mixed_7c`` [batch, h, w, 2048] (8 x 8 at 299 x 299),
      ``global_pool`` float32 [batch, 1, 1, 2048] and, with logits,
      ``PreLogits`` [batch, 1, 1, 2048] and ``Logits`` [batch, num_classes])
      to float32 tensors. No ``AuxLogits``.
    """
    end_points = {}
    with ctx.scope(SCOPE):
        net = images
        for layer in _STEM:
            net = _layer(ctx, net, layer)
            end_points[layer[1]] = net
        for end_point, branches in _BLOCKS:
            with ctx.scope(end_point):
                outs = []
                for i, branch in enumerate(branches):
                    with ctx.scope("Branch_%d" % i):
                        out = net
                        for layer in branch:
                            out = _layer(ctx, out, layer)
                        outs.append(out)
                net = tf.concat(outs, 3)
            end_points[end_point] = net
        with ctx.scope("Logits"):
            with tf.name_scope("GlobalPool"):
                net = layers.global_avg_pool(net)
            end_points["global_pool"] = net
            if num_classes is None:
                return None, end_points
            with tf.name_scope("Dropout_1b"):
                net = layers.dropout(ctx, net, keep_prob=DROPOUT_KEEP_PROB)
            end_points["PreLogits"] = net
            logits = layers.conv2d(ctx, net, num_classes, 1, scope="Conv2d_1c_1x1",
                                   normalize=False, activation=None)
            logits = tf.squeeze(logits, [1, 2], name="SpatialSqueeze")
        end_points["Logits"] = logits
    return logits, end_points


NETS = {"inception_v3": layers.Net(
    name="inception_v3", scope=SCOPE, default_image_size=DEFAULT_IMAGE_SIZE,
    min_image_size=MIN_IMAGE_SIZE, feature_size=FEATURE_SIZE,
    logits_scope=SCOPE + "/Logits/Conv2d_1c_1x1", build=inception_v3)}
