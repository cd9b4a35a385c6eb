"""Inception-ResNet-V2 as TF-Slim defines it (``research/slim/nets/inception_resnet_v2.py``).

Sources: Szegedy, Ioffe, Vanhoucke & Alemi, "Inception-v4, Inception-ResNet
and the Impact of Residual Connections on Learning"
(https://arxiv.org/abs/1602.07261), 2016, and TF-Slim's
``inception_resnet_v2`` with its defaults (``output_stride=16``,
``align_feature_maps=False``, ReLU) and ``inception_resnet_v2_arg_scope``
(batch norm without scale, L2 weight decay 4e-5 on weights AND biases).
Variable names, shapes and dtypes equal those of the checkpoint
``inception_resnet_v2_2016_08_30.ckpt`` (see
``hubexport/data/inception_resnet_v2_manifest.json``), except that the
auxiliary head ``AuxLogits`` is not built (the modules do not use it).

Layout: stem ``Conv2d_1a_3x3`` ... ``MaxPool_5a_3x3`` (VALID padding),
``Mixed_5b``, 10 x block35 (``Repeat/block35_{1..10}``, residual scale 0.17),
``Mixed_6a``, 20 x block17 (``Repeat_1/block17_{1..20}``, scale 0.10),
``Mixed_7a``, 9 x block8 (``Repeat_2/block8_{1..9}``, scale 0.20), a final
``Block8`` (scale 1.0, no activation), ``Conv2d_7b_1x1`` (1536 channels),
global average pooling, dropout and the fully connected
``Logits/Logits`` (weights [1536, num_classes], biases [num_classes]).

Input size: the stem and the reductions ``Mixed_6a`` / ``Mixed_7a`` use
VALID padding, so the smallest input that yields a non-empty feature map is
75 x 75 pixels (found by experiment, tests/test_nets.py): 75 -> 37 -> 35 ->
35 -> 17 -> 17 -> 15 -> 7 (Mixed_5b) -> 3 (Mixed_6a) -> 1 (Mixed_7a). At the
default 299 x 299 the final map is 8 x 8. In general, with
``r(n) = floor((n - 3) / 2) + 1`` (3x3, stride 2, VALID), a side of n pixels
becomes ``r(r(r(r(r(n) - 2) - 2)))`` (Conv2d_1a r, Conv2d_2a -2,
MaxPool_3a r, Conv2d_4a -2, MaxPool_5a r, Mixed_6a r, Mixed_7a r).
Global average pooling replaces TF-Slim's fixed-size average pool; they
agree whenever the input shape is static.
"""

import tensorflow as tf

from hubexport.nets import layers

SCOPE = "InceptionResnetV2"
DEFAULT_IMAGE_SIZE = 299
MIN_IMAGE_SIZE = 75
FEATURE_SIZE = 1536

# Residual scales (TF-Slim's slim.repeat(..., scale=...)).
BLOCK35_SCALE = 0.17
BLOCK17_SCALE = 0.10
BLOCK8_SCALE = 0.20

# inception_resnet_v2_arg_scope sets biases_regularizer = l2(4e-5) too.
_BIAS_DECAY = layers.WEIGHT_DECAY


def _conv(ctx, x, depth, kernel, stride=1, padding="SAME", scope=None):
    """Convolution + batch norm (no scale) + ReLU."""
    return layers.conv2d(ctx, x, depth, kernel, stride, padding=padding, scope=scope)


def _residual(ctx, net, mixed, scale, activation):
    """``net + scale * Conv2d_1x1(mixed)`` (linear 1x1 conv with biases), then activation."""
    up = layers.conv2d(ctx, mixed, int(net.shape[-1]), 1, scope="Conv2d_1x1",
                       normalize=False, activation=None, bias_weight_decay=_BIAS_DECAY)
    net = net + scale * up
    if activation is not None:
        net = activation(net)
    return net


def _block35(ctx, net, scale, activation=tf.nn.relu):
    """The 35x35 residual block (320 channels in and out)."""
    with ctx.scope("Branch_0"):
        b0 = _conv(ctx, net, 32, 1, scope="Conv2d_1x1")
    with ctx.scope("Branch_1"):
        b1 = _conv(ctx, net, 32, 1, scope="Conv2d_0a_1x1")
        b1 = _conv(ctx, b1, 32, 3, scope="Conv2d_0b_3x3")
    with ctx.scope("Branch_2"):
        b2 = _conv(ctx, net, 32, 1, scope="Conv2d_0a_1x1")
        b2 = _conv(ctx, b2, 48, 3, scope="Conv2d_0b_3x3")
        b2 = _conv(ctx, b2, 64, 3, scope="Conv2d_0c_3x3")
    return _residual(ctx, net, tf.concat([b0, b1, b2], 3), scale, activation)


def _block17(ctx, net, scale, activation=tf.nn.relu):
    """The 17x17 residual block (1088 channels in and out)."""
    with ctx.scope("Branch_0"):
        b0 = _conv(ctx, net, 192, 1, scope="Conv2d_1x1")
    with ctx.scope("Branch_1"):
        b1 = _conv(ctx, net, 128, 1, scope="Conv2d_0a_1x1")
        b1 = _conv(ctx, b1, 160, (1, 7), scope="Conv2d_0b_1x7")
        b1 = _conv(ctx, b1, 192, (7, 1), scope="Conv2d_0c_7x1")
    return _residual(ctx, net, tf.concat([b0, b1], 3), scale, activation)


def _block8(ctx, net, scale, activation=tf.nn.relu):
    """The 8x8 residual block (2080 channels in and out)."""
    with ctx.scope("Branch_0"):
        b0 = _conv(ctx, net, 192, 1, scope="Conv2d_1x1")
    with ctx.scope("Branch_1"):
        b1 = _conv(ctx, net, 192, 1, scope="Conv2d_0a_1x1")
        b1 = _conv(ctx, b1, 224, (1, 3), scope="Conv2d_0b_1x3")
        b1 = _conv(ctx, b1, 256, (3, 1), scope="Conv2d_0c_3x1")
    return _residual(ctx, net, tf.concat([b0, b1], 3), scale, activation)


def _repeat(ctx, net, repeat_scope, block, block_name, count, scale):
    """TF-Slim's ``slim.repeat``: scopes ``<repeat_scope>/<block_name>_{1..count}``."""
    with ctx.scope(repeat_scope):
        for i in range(1, count + 1):
            with ctx.scope("%s_%d" % (block_name, i)):
                net = block(ctx, net, scale)
    return net


def _max_pool(x, stride, padding, name):
    with tf.name_scope(name):
        return layers.max_pool(x, 3, stride, padding)


def inception_resnet_v2(ctx, images, num_classes=1001):
    """Builds Inception-ResNet-V2 on images in [-1, 1].

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
      ``Conv2d_3b_1x1``, ``Conv2d_4a_3x3``, ``MaxPool_5a_3x3``, ``Mixed_5b``,
      ``Mixed_6a``, ``PreAuxLogits``, ``Mixed_7a``, ``Conv2d_7b_1x1``,
      ``global_pool`` [batch, 1, 1, 1536], and with logits
      ``PreLogitsFlatten`` [batch, 1536] and ``Logits``) to tensors.
    """
    end_points = {}
    with ctx.scope(SCOPE):
        # Stem: 299 -> 149 -> 147 -> 147 -> 73 -> 73 -> 71 -> 35.
        net = _conv(ctx, images, 32, 3, stride=2, padding="VALID", scope="Conv2d_1a_3x3")
        end_points["Conv2d_1a_3x3"] = net
        net = _conv(ctx, net, 32, 3, padding="VALID", scope="Conv2d_2a_3x3")
        end_points["Conv2d_2a_3x3"] = net
        net = _conv(ctx, net, 64, 3, scope="Conv2d_2b_3x3")
        end_points["Conv2d_2b_3x3"] = net
        net = _max_pool(net, 2, "VALID", "MaxPool_3a_3x3")
        end_points["MaxPool_3a_3x3"] = net
        net = _conv(ctx, net, 80, 1, padding="VALID", scope="Conv2d_3b_1x1")
        end_points["Conv2d_3b_1x1"] = net
        net = _conv(ctx, net, 192, 3, padding="VALID", scope="Conv2d_4a_3x3")
        end_points["Conv2d_4a_3x3"] = net
        net = _max_pool(net, 2, "VALID", "MaxPool_5a_3x3")
        end_points["MaxPool_5a_3x3"] = net

        # 35 x 35 x 320
        with ctx.scope("Mixed_5b"):
            with ctx.scope("Branch_0"):
                b0 = _conv(ctx, net, 96, 1, scope="Conv2d_1x1")
            with ctx.scope("Branch_1"):
                b1 = _conv(ctx, net, 48, 1, scope="Conv2d_0a_1x1")
                b1 = _conv(ctx, b1, 64, 5, scope="Conv2d_0b_5x5")
            with ctx.scope("Branch_2"):
                b2 = _conv(ctx, net, 64, 1, scope="Conv2d_0a_1x1")
                b2 = _conv(ctx, b2, 96, 3, scope="Conv2d_0b_3x3")
                b2 = _conv(ctx, b2, 96, 3, scope="Conv2d_0c_3x3")
            with ctx.scope("Branch_3"):
                with tf.name_scope("AvgPool_0a_3x3"):
                    b3 = layers.avg_pool(net, 3, 1, "SAME")
                b3 = _conv(ctx, b3, 64, 1, scope="Conv2d_0b_1x1")
            net = tf.concat([b0, b1, b2, b3], 3)
        end_points["Mixed_5b"] = net
        net = _repeat(ctx, net, "Repeat", _block35, "block35", 10, BLOCK35_SCALE)

        # 17 x 17 x 1088
        with ctx.scope("Mixed_6a"):
            with ctx.scope("Branch_0"):
                b0 = _conv(ctx, net, 384, 3, stride=2, padding="VALID", scope="Conv2d_1a_3x3")
            with ctx.scope("Branch_1"):
                b1 = _conv(ctx, net, 256, 1, scope="Conv2d_0a_1x1")
                b1 = _conv(ctx, b1, 256, 3, scope="Conv2d_0b_3x3")
                b1 = _conv(ctx, b1, 384, 3, stride=2, padding="VALID", scope="Conv2d_1a_3x3")
            with ctx.scope("Branch_2"):
                b2 = _max_pool(net, 2, "VALID", "MaxPool_1a_3x3")
            net = tf.concat([b0, b1, b2], 3)
        end_points["Mixed_6a"] = net
        net = _repeat(ctx, net, "Repeat_1", _block17, "block17", 20, BLOCK17_SCALE)
        end_points["PreAuxLogits"] = net

        # 8 x 8 x 2080
        with ctx.scope("Mixed_7a"):
            with ctx.scope("Branch_0"):
                b0 = _conv(ctx, net, 256, 1, scope="Conv2d_0a_1x1")
                b0 = _conv(ctx, b0, 384, 3, stride=2, padding="VALID", scope="Conv2d_1a_3x3")
            with ctx.scope("Branch_1"):
                b1 = _conv(ctx, net, 256, 1, scope="Conv2d_0a_1x1")
                b1 = _conv(ctx, b1, 288, 3, stride=2, padding="VALID", scope="Conv2d_1a_3x3")
            with ctx.scope("Branch_2"):
                b2 = _conv(ctx, net, 256, 1, scope="Conv2d_0a_1x1")
                b2 = _conv(ctx, b2, 288, 3, scope="Conv2d_0b_3x3")
                b2 = _conv(ctx, b2, 320, 3, stride=2, padding="VALID", scope="Conv2d_1a_3x3")
            with ctx.scope("Branch_3"):
                b3 = _max_pool(net, 2, "VALID", "MaxPool_1a_3x3")
            net = tf.concat([b0, b1, b2, b3], 3)
        end_points["Mixed_7a"] = net
        net = _repeat(ctx, net, "Repeat_2", _block8, "block8", 9, BLOCK8_SCALE)
        with ctx.scope("Block8"):
            net = _block8(ctx, net, 1.0, activation=None)

        # 8 x 8 x 1536
        net = _conv(ctx, net, FEATURE_SIZE, 1, scope="Conv2d_7b_1x1")
        end_points["Conv2d_7b_1x1"] = net

        with ctx.scope("Logits"):
            net = layers.global_avg_pool(net)
            end_points["global_pool"] = net
            if num_classes is None:
                return None, end_points
            net = tf.reshape(net, [-1, FEATURE_SIZE])  # slim.flatten
            net = layers.dropout(ctx, net)
            end_points["PreLogitsFlatten"] = net
            logits = layers.fully_connected(ctx, net, num_classes, scope="Logits",
                                            bias_weight_decay=_BIAS_DECAY)
        end_points["Logits"] = logits
    return logits, end_points


NETS = {"inception_resnet_v2": layers.Net(
    name="inception_resnet_v2", scope=SCOPE, default_image_size=DEFAULT_IMAGE_SIZE,
    min_image_size=MIN_IMAGE_SIZE, feature_size=FEATURE_SIZE,
    logits_scope=SCOPE + "/Logits/Logits", build=inception_resnet_v2)}
