"""Inception V2 as TF-Slim defines it (``research/slim/nets/inception_v2.py``).

Sources: Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network
Training by Reducing Internal Covariate Shift" (https://arxiv.org/abs/1502.03167),
2015, and TF-Slim's ``inception_v2_base`` with its defaults
(``depth_multiplier=1.0``, ``use_separable_conv=True``, NHWC). Variable names,
shapes and dtypes equal those of the checkpoint
``inception_v2_2016_08_28/inception_v2.ckpt``: with 1001 classes there are
277 variables holding 11,199,137 numbers (moving statistics included).

Every convolution and pooling uses SAME padding, so any input of at least
1x1 pixels runs; the net was trained on 224x224 and the feature map before
pooling is ceil(height/32) x ceil(width/32). Global average pooling replaces
TF-Slim's fixed 7x7 average pool; at 224x224 (a 7x7 map) the two agree.
"""

import tensorflow as tf

from hubexport.nets import layers

SCOPE = "InceptionV2"
DEFAULT_IMAGE_SIZE = 224
MIN_IMAGE_SIZE = 1
FEATURE_SIZE = 1024

# (end point, [branch, ...]); a branch is a list of layers:
#   ("conv", name, depth, kernel, stride) or ("avg"|"max", name, stride).
# Depths read off TF-Slim's inception_v2_base.
_BLOCKS = [
    ("Mixed_3b", [[("conv", "Conv2d_0a_1x1", 64, 1, 1)],
                  [("conv", "Conv2d_0a_1x1", 64, 1, 1), ("conv", "Conv2d_0b_3x3", 64, 3, 1)],
                  [("conv", "Conv2d_0a_1x1", 64, 1, 1), ("conv", "Conv2d_0b_3x3", 96, 3, 1),
                   ("conv", "Conv2d_0c_3x3", 96, 3, 1)],
                  [("avg", "AvgPool_0a_3x3", 1), ("conv", "Conv2d_0b_1x1", 32, 1, 1)]]),
    ("Mixed_3c", [[("conv", "Conv2d_0a_1x1", 64, 1, 1)],
                  [("conv", "Conv2d_0a_1x1", 64, 1, 1), ("conv", "Conv2d_0b_3x3", 96, 3, 1)],
                  [("conv", "Conv2d_0a_1x1", 64, 1, 1), ("conv", "Conv2d_0b_3x3", 96, 3, 1),
                   ("conv", "Conv2d_0c_3x3", 96, 3, 1)],
                  [("avg", "AvgPool_0a_3x3", 1), ("conv", "Conv2d_0b_1x1", 64, 1, 1)]]),
    ("Mixed_4a", [[("conv", "Conv2d_0a_1x1", 128, 1, 1), ("conv", "Conv2d_1a_3x3", 160, 3, 2)],
                  [("conv", "Conv2d_0a_1x1", 64, 1, 1), ("conv", "Conv2d_0b_3x3", 96, 3, 1),
                   ("conv", "Conv2d_1a_3x3", 96, 3, 2)],
                  [("max", "MaxPool_1a_3x3", 2)]]),
]


def _mixed(b0, b1, b2a, b2b, pool, b3):
    """A stride-1 Inception block: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 | pool-1x1."""
    return [[("conv", "Conv2d_0a_1x1", b0, 1, 1)],
            [("conv", "Conv2d_0a_1x1", b1[0], 1, 1), ("conv", "Conv2d_0b_3x3", b1[1], 3, 1)],
            [("conv", "Conv2d_0a_1x1", b2a, 1, 1), ("conv", "Conv2d_0b_3x3", b2b, 3, 1),
             ("conv", "Conv2d_0c_3x3", b2b, 3, 1)],
            [(pool, "AvgPool_0a_3x3" if pool == "avg" else "MaxPool_0a_3x3", 1),
             ("conv", "Conv2d_0b_1x1", b3, 1, 1)]]


_BLOCKS += [
    ("Mixed_4b", _mixed(224, (64, 96), 96, 128, "avg", 128)),
    ("Mixed_4c", _mixed(192, (96, 128), 96, 128, "avg", 128)),
    ("Mixed_4d", _mixed(160, (128, 160), 128, 160, "avg", 96)),
    ("Mixed_4e", _mixed(96, (128, 192), 160, 192, "avg", 96)),
    ("Mixed_5a", [[("conv", "Conv2d_0a_1x1", 128, 1, 1), ("conv", "Conv2d_1a_3x3", 192, 3, 2)],
                  [("conv", "Conv2d_0a_1x1", 192, 1, 1), ("conv", "Conv2d_0b_3x3", 256, 3, 1),
                   ("conv", "Conv2d_1a_3x3", 256, 3, 2)],
                  [("max", "MaxPool_1a_3x3", 2)]]),
    ("Mixed_5b", _mixed(352, (192, 320), 160, 224, "avg", 128)),
    ("Mixed_5c", _mixed(352, (192, 320), 192, 224, "max", 128)),
]


def _branch(ctx, net, branch):
    for kind, name, *args in branch:
        if kind == "conv":
            depth, kernel, stride = args
            net = layers.conv2d(ctx, net, depth, kernel, stride, scope=name)
        else:
            with tf.name_scope(name):
                pool = layers.avg_pool if kind == "avg" else layers.max_pool
                net = pool(net, 3, args[0])
    return net


def inception_v2(ctx, images, num_classes=1001):
    """Builds Inception V2 on images in [-1, 1].

    Args:
      ctx: a :class:`hubexport.nets.layers.NetContext`.
      images: float32 [batch, height, width, 3], values in [-1, 1], height
        and width >= 1 pixel.
      num_classes: logits per image (1001: index 0 is background), or None
        for no logits layer (the feature_vector module).

    Returns:
      (logits, end_points): logits float32 [batch, num_classes] or None;
      end_points maps TF-Slim's end point names (``Conv2d_1a_7x7`` ...
      ``Mixed_5c``, ``global_pool`` [batch, 1, 1, 1024], ``Logits``) to
      tensors.
    """
    end_points = {}
    with ctx.scope(SCOPE):
        # Depthwise multiplier min(int(64 / 3), 8) = 8, as in TF-Slim.
        net = layers.separable_conv2d(ctx, images, 64, 7, depth_multiplier=8, stride=2,
                                      scope="Conv2d_1a_7x7")
        end_points["Conv2d_1a_7x7"] = net
        net = layers.max_pool(net, 3, 2)
        end_points["MaxPool_2a_3x3"] = net
        net = layers.conv2d(ctx, net, 64, 1, scope="Conv2d_2b_1x1")
        end_points["Conv2d_2b_1x1"] = net
        net = layers.conv2d(ctx, net, 192, 3, scope="Conv2d_2c_3x3")
        end_points["Conv2d_2c_3x3"] = net
        net = layers.max_pool(net, 3, 2)
        end_points["MaxPool_3a_3x3"] = net
        for end_point, branches in _BLOCKS:
            with ctx.scope(end_point):
                outs = []
                for i, branch in enumerate(branches):
                    with ctx.scope("Branch_%d" % i):
                        outs.append(_branch(ctx, net, branch))
                net = tf.concat(outs, axis=3)
            end_points[end_point] = net
        with ctx.scope("Logits"):
            net = layers.global_avg_pool(net)
            end_points["global_pool"] = net
            if num_classes is None:
                return None, end_points
            net = layers.dropout(ctx, net)
            logits = layers.conv2d(ctx, net, num_classes, 1, scope="Conv2d_1c_1x1",
                                   normalize=False, activation=None)
            logits = tf.squeeze(logits, [1, 2], name="SpatialSqueeze")
        end_points["Logits"] = logits
    return logits, end_points


NETS = {"inception_v2": layers.Net(
    name="inception_v2", scope=SCOPE, default_image_size=DEFAULT_IMAGE_SIZE,
    min_image_size=MIN_IMAGE_SIZE, feature_size=FEATURE_SIZE,
    logits_scope=SCOPE + "/Logits/Conv2d_1c_1x1", build=inception_v2)}
