"""ResNet V1 and V2 at depths 50, 101 and 152, as TF-Slim defines them: one definition.

Sources:
  * Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun, "Deep Residual
    Learning for Image Recognition" (https://arxiv.org/abs/1512.03385), 2015:
    ResNet V1, bottleneck units with batch norm after each convolution;
  * the same authors, "Identity Mappings in Deep Residual Networks"
    (https://arxiv.org/abs/1603.05027), 2016: ResNet V2, full pre-activation
    units (batch norm and ReLU before each convolution);
  * TF-Slim's ``nets/resnet_utils.py`` (``Block``, ``subsample``,
    ``conv2d_same``, ``stack_blocks_dense``, ``resnet_arg_scope``),
    ``nets/resnet_v1.py`` and ``nets/resnet_v2.py`` of tf-slim 1.1.0 (the
    reference of tests/test_reference_resnet.py; tensorflow/models'
    ``research/slim/nets/`` builds the same layers with its default options),
    with their defaults ``global_pool=True``, ``output_stride=None``,
    ``include_root_block=True``.

Variable names, shapes and dtypes (all float32) equal those of the checkpoints
``resnet_v1_{50,101,152}_2016_08_28/resnet_v1_N.ckpt`` (1000 classes, no
background class: converted from Caffe) and
``resnet_v2_{50,101,152}_2017_04_14/resnet_v2_N.ckpt`` (1001 classes), see
``hubexport/data/resnet_v*_manifest.json``. Variables and numbers (moving
statistics included, ``global_step`` excluded; a feature_vector module drops
the ``logits`` layer, 2048 x C + C numbers):

  ============== ========= ============ ================
  architecture   variables numbers      without logits
  ============== ========= ============ ================
  resnet_v1_50   267       25,610,152   23,561,152
  resnet_v1_101  522       44,654,504   42,605,504
  resnet_v1_152  777       60,344,232   58,295,232
  resnet_v2_50   272       25,615,849   23,564,800
  resnet_v2_101  544       44,677,609   42,626,560
  resnet_v2_152  816       60,382,697   58,331,648
  ============== ========= ============ ================

Layout (scope ``resnet_vV_D``, e.g. ``resnet_v1_50``):
  * root: ``conv1`` 7x7/2 ``conv2d_same`` to 64 channels (V1: batch norm +
    ReLU; V2: biases, no batch norm, no activation), ``pool1`` 3x3/2 max pool
    (SAME);
  * 4 blocks ``block1`` .. ``block4`` of bottleneck units ``unit_1`` ..
    ``unit_K`` (:data:`UNITS`), unit ``i`` of block ``b`` with bottleneck
    depth ``BASE_DEPTHS[b]`` (64, 128, 256, 512) and output depth 4x that;
    the LAST unit of blocks 1-3 has stride 2 (in its 3x3 ``conv2``), all
    others stride 1 (TF-Slim subsamples at the end of a block, not at the
    start of the next one as the papers do);
  * V1 unit ``bottleneck_v1``: ``conv1`` 1x1 + BN + ReLU, ``conv2`` 3x3
    ``conv2d_same`` + BN + ReLU, ``conv3`` 1x1 + BN; shortcut: identity when
    the depth does not change (strided: TF-Slim's ``subsample``, a 1x1 max
    pool with stride 2), else ``shortcut`` 1x1 conv + BN with the unit's
    stride; output ``relu(shortcut + residual)``;
  * V2 unit ``bottleneck_v2``: ``preact`` BN + ReLU of the input, then
    ``conv1``, ``conv2`` as in V1 on ``preact`` and ``conv3`` 1x1 with biases
    (no BN, no activation); shortcut: identity of the (un-activated) input,
    subsampled when strided, or ``shortcut`` 1x1 conv with biases (no BN) on
    ``preact``; output ``shortcut + residual``;
  * V2 only: ``postnorm`` BN + ReLU after ``block4``;
  * global average pooling, ``logits`` 1x1 conv with biases (no BN), squeezed
    to [batch, num_classes].

Layer defaults: TF-Slim's ``resnet_arg_scope()`` (:data:`ARG_SCOPE`): batch
norm with ``gamma``, epsilon 1e-5, decay 0.997; L2 weight decay 1e-4 on every
``conv2d`` weight (``weights_regularizer``; biases and batch norm variables
are not regularized). ResNets have no dropout.

Input size: every spatial step maps a side of n pixels to n or ceil(n / 2):
``conv1`` pads 3 + 3 pixels explicitly and convolves 7x7/2 VALID
(floor((n + 6 - 7) / 2) + 1 = ceil(n / 2)); ``pool1`` is SAME; ``conv2``
of a strided unit pads 1 + 1 and convolves 3x3/2 VALID (ceil(n / 2)); a
strided shortcut (1x1/2 conv or max pool, SAME) gives ceil(n / 2) as well,
so residual and shortcut always agree. Hence any input of at least 1x1
pixels yields a non-empty map (``MIN_IMAGE_SIZE`` = 1, tests/test_nets.py and
tests/test_nets_resnet.py): the map after ``block4`` is
ceil(h / 32) x ceil(w / 32), 7x7 at the default 224x224, 11x9 at 331x257.
"""

import collections
import functools

import tensorflow as tf

from hubexport.nets import layers

DEFAULT_IMAGE_SIZE = 224
MIN_IMAGE_SIZE = 1
FEATURE_SIZE = 2048

#: TF-Slim's ``resnet_arg_scope()`` defaults (tf_slim/nets/resnet_utils.py).
ARG_SCOPE = {
    "batch_norm_scale": True,
    "batch_norm_epsilon": 1e-5,
    "batch_norm_decay": 0.997,
    "weight_decay": 1e-4,
}

#: Bottleneck depth of the units of block1 .. block4 (output depth is 4x).
BASE_DEPTHS = (64, 128, 256, 512)
#: Stride of the last unit of block1 .. block4 (all other units: 1).
BLOCK_STRIDES = (2, 2, 2, 1)
#: Units per block, by depth (TF-Slim's resnet_v1_50 ... resnet_v2_152).
UNITS = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}

#: One residual unit: output depth, bottleneck depth, stride (TF-Slim's unit args).
Unit = collections.namedtuple("Unit", ["depth", "depth_bottleneck", "stride"])
#: One block: its scope (``block1`` ...) and its units in order.
Block = collections.namedtuple("Block", ["scope", "units"])


def blocks(units):
    """TF-Slim's ``resnet_v{1,2}_block`` table for one depth.

    Args:
      units: number of units per block, e.g. ``UNITS[50]`` = (3, 4, 6, 3).

    Returns:
      list of 4 :class:`Block`: ``block<b>`` has ``units[b-1]`` units of
      ``Unit(4 * base, base, 1)`` with base = ``BASE_DEPTHS[b-1]``, except
      that the last one has the block's stride (:data:`BLOCK_STRIDES`).
    """
    table = []
    for i, (count, base, stride) in enumerate(zip(units, BASE_DEPTHS, BLOCK_STRIDES)):
        units_of_block = [Unit(4 * base, base, 1)] * (count - 1) + [Unit(4 * base, base, stride)]
        table.append(Block("block%d" % (i + 1), units_of_block))
    return table


def _collect(ctx, end_points, name, tensor):
    """TF-Slim's ``collect_named_outputs``: records ``tensor`` as end point ``<scopes>/name``.

    The key leaves out the net's own scope (``block1/unit_1/bottleneck_v1/conv1``
    for TF-Slim's ``resnet_v1_50/block1/unit_1/bottleneck_v1/conv1``); the
    format writers add it back.
    """
    end_points[ctx.full_name(name).split("/", 1)[1]] = tensor
    return tensor


def _subsample(x, stride):
    """TF-Slim's ``resnet_utils.subsample``: a 1x1 max pool with ``stride`` (SAME), or x."""
    if stride == 1:
        return x
    with tf.name_scope("shortcut"):
        return layers.max_pool(x, 1, stride, "SAME")


def _bottleneck(ctx, net, unit, version, end_points):
    """One bottleneck unit (scope ``bottleneck_v1`` / ``bottleneck_v2``).

    Args:
      net: float32 [batch, h, w, c], the unit's input.
      unit: a :class:`Unit`.
      version: 1 (BN after each convolution) or 2 (pre-activation).

    Returns:
      float32 [batch, ceil(h / stride), ceil(w / stride), unit.depth].
    """
    name = "bottleneck_v%d" % version
    v2 = version == 2
    with ctx.scope(name):
        if v2:
            preact = tf.nn.relu(layers.batch_norm(ctx, net, scope="preact"))
        source = preact if v2 else net
        if unit.depth == int(net.shape[-1]):
            shortcut = _subsample(net, unit.stride)
        else:
            # V1: 1x1 conv + BN, no ReLU; V2: 1x1 conv with biases on preact.
            shortcut = layers.conv2d(ctx, source, unit.depth, 1, unit.stride, scope="shortcut",
                                     normalize=not v2, activation=None)
            _collect(ctx, end_points, "shortcut", shortcut)
        residual = layers.conv2d(ctx, source, unit.depth_bottleneck, 1, scope="conv1")
        _collect(ctx, end_points, "conv1", residual)
        residual = layers.conv2d_same(ctx, residual, unit.depth_bottleneck, 3, unit.stride,
                                      scope="conv2")
        _collect(ctx, end_points, "conv2", residual)
        residual = layers.conv2d(ctx, residual, unit.depth, 1, scope="conv3",
                                 normalize=not v2, activation=None)
        _collect(ctx, end_points, "conv3", residual)
        net = shortcut + residual
        if not v2:
            net = tf.nn.relu(net)
    return _collect(ctx, end_points, name, net)


def resnet(ctx, images, num_classes, version, units, scope):
    """Builds ResNet V1 or V2 of any depth (TF-Slim's ``resnet_v1`` / ``resnet_v2``).

    Args:
      ctx: a :class:`hubexport.nets.layers.NetContext`.
      images: float32 [batch, height, width, 3], height and width >= 1 pixel,
        in the checkpoint's input range: V1 VGG-style (RGB in [0, 255] minus
        the ImageNet means 123.68, 116.78, 103.94), V2 [-1, 1].
      num_classes: logits per image (1000 for the V1 checkpoints, 1001 for
        V2, index 0 background), or None for no logits layer (the
        feature_vector module).
      version: 1 or 2.
      units: units per block, e.g. ``UNITS[50]``.
      scope: the variable scope, e.g. ``"resnet_v1_50"``.

    Returns:
      (logits, end_points): logits float32 [batch, num_classes] or None;
      end_points maps TF-Slim's end point names without the scope prefix to
      float32 tensors: ``conv1`` [batch, ceil(h/2), ceil(w/2), 64]; per unit
      ``block<b>/unit_<i>/bottleneck_v<V>/{shortcut (projections only),
      conv1, conv2, conv3}`` and ``block<b>/unit_<i>/bottleneck_v<V>`` (the
      unit's output); ``block1`` .. ``block4`` (256, 512, 1024, 2048
      channels; 28, 14, 7, 7 pixels at 224x224; V2's ``block4`` is before
      ``postnorm``); ``global_pool`` [batch, 1, 1, 2048] (after V2's
      ``postnorm``) and, with logits, ``Logits`` [batch, num_classes]
      (TF-Slim's ``logits`` [batch, 1, 1, num_classes], squeezed).
    """
    if version not in (1, 2):
        raise ValueError("ResNet version must be 1 or 2, not %r" % (version,))
    end_points = {}
    with ctx.arg_scope(**ARG_SCOPE), ctx.scope(scope):
        if version == 1:
            net = layers.conv2d_same(ctx, images, 64, 7, 2, scope="conv1")
        else:
            net = layers.conv2d_same(ctx, images, 64, 7, 2, scope="conv1",
                                     normalize=False, activation=None)
        _collect(ctx, end_points, "conv1", net)
        with tf.name_scope("pool1"):
            net = layers.max_pool(net, 3, 2, "SAME")
        for block in blocks(units):
            with ctx.scope(block.scope):
                for i, unit in enumerate(block.units):
                    with ctx.scope("unit_%d" % (i + 1)):
                        net = _bottleneck(ctx, net, unit, version, end_points)
            _collect(ctx, end_points, block.scope, net)
        if version == 2:
            net = tf.nn.relu(layers.batch_norm(ctx, net, scope="postnorm"))
        with tf.name_scope("pool5"):
            net = layers.global_avg_pool(net)
        end_points["global_pool"] = net
        if num_classes is None:
            return None, end_points
        logits = layers.conv2d(ctx, net, num_classes, 1, scope="logits",
                               normalize=False, activation=None)
        logits = tf.squeeze(logits, [1, 2], name="SpatialSqueeze")
        end_points["Logits"] = logits
    return logits, end_points


def _net(version, depth):
    name = "resnet_v%d_%d" % (version, depth)
    return layers.Net(
        name=name, scope=name, default_image_size=DEFAULT_IMAGE_SIZE,
        min_image_size=MIN_IMAGE_SIZE, feature_size=FEATURE_SIZE,
        logits_scope=name + "/logits",
        build=functools.partial(resnet, version=version, units=UNITS[depth], scope=name))


NETS = {net.name: net for net in (_net(v, d) for v in (1, 2) for d in sorted(UNITS))}
