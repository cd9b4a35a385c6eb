"""The layers TF-Slim's Inception nets are made of, written once for every format.

A net is a plain function of a :class:`NetContext` and an image tensor. The
context decides where variables come from (``tf.compat.v1.get_variable`` in a
TF1 graph, pre-made ``tf.Variable`` objects in a TF2 SavedModel), whether batch
norm runs in training mode, and what becomes of update ops and weight-decay
terms. The layer functions below only compute; so the same net definition
serves the TF1 Hub format (versions 1 and 3) and the TF2 SavedModels
(versions 4 and 5).

Variable names follow TF-Slim exactly (``<scope>/weights``,
``<scope>/BatchNorm/moving_mean``, ...), because they are the checkpoint's keys.

Defaults (TF-Slim's ``inception_arg_scope`` in
``research/slim/nets/inception_utils.py``), which a net changes for its
layers with :meth:`NetContext.arg_scope` as TF-Slim's nets do with their own
arg scope (``resnet_arg_scope``: gamma, epsilon 1e-5, decay 0.997, weight
decay 1e-4):
  * batch norm epsilon 0.001, no scale (gamma), decay 0.9997;
  * L2 weight decay 4e-5 on convolution and fully connected weights
    (``slim.l2_regularizer(4e-5)`` = ``4e-5 * sum(w**2) / 2``);
  * ReLU after every normalized convolution.
"""

import contextlib
import dataclasses
from typing import Any, Callable, Optional

import tensorflow as tf

BATCH_NORM_EPSILON = 0.001
BATCH_NORM_DECAY = 0.9997
WEIGHT_DECAY = 4e-5

#: The layer defaults a net may change with :meth:`NetContext.arg_scope`.
DEFAULT_HPARAMS = {
    "batch_norm_decay": BATCH_NORM_DECAY,
    "batch_norm_epsilon": BATCH_NORM_EPSILON,
    "batch_norm_scale": False,
    "weight_decay": WEIGHT_DECAY,
}


@dataclasses.dataclass(frozen=True)
class Net:
    """One architecture: what the writers and checks need to know of a net.

    Attributes:
      name: the architecture name, e.g. ``"resnet_v2_50"``.
      scope: the checkpoint's top variable scope, e.g. ``"resnet_v2_50"``.
      default_image_size: height and width in pixels the checkpoint was
        trained on.
      min_image_size: smallest height and width in pixels the net accepts
        (a non-empty feature map), found by experiment (tests/test_nets.py).
      feature_size: length of the feature vector (channels of the last
        feature map, float32 values).
      logits_scope: variable scope of the logits layer (absent from
        feature_vector modules), e.g. ``"resnet_v2_50/logits"``.
      build: callable ``(ctx, images, num_classes)`` returning ``(logits,
        end_points)``; images float32 [batch, height, width, 3] already
        mapped to the checkpoint's input range.
    """

    name: str
    scope: str
    default_image_size: int
    min_image_size: int
    feature_size: int
    logits_scope: str
    build: Callable[..., Any]


@dataclasses.dataclass
class VariableRequest:
    """What a net asks for when it needs a variable.

    Attributes:
      name: full TF-Slim name without ``:0``, e.g.
        ``InceptionV2/Conv2d_2b_1x1/weights``.
      shape: tuple of ints.
      trainable: False for batch norm moving statistics.
      weight_decay: L2 coefficient for a regularization loss, or None.
    """

    name: str
    shape: tuple
    trainable: bool = True
    weight_decay: Optional[float] = None


class NetContext:
    """Where a net's variables come from and how its layers behave.

    Args:
      variable_factory: callable taking a :class:`VariableRequest` and
        returning a float32 variable of that shape (created or looked up).
      training: Python bool; True runs batch norm on batch statistics,
        updates the moving averages and applies dropout.
      batch_norm_momentum: float or scalar float32 tensor; the decay of the
        moving averages (TF-Slim's ``decay``), used only when training; None
        (the default) for the net's own decay (its arg scope's
        ``batch_norm_decay``, 0.9997 for the Inception nets).
      on_update: callable receiving each moving-average update op (graph
        mode collects them into ``UPDATE_OPS``); None to ignore them (inside
        a ``tf.function`` the assignments run by automatic control
        dependencies).
      on_regularizer: callable ``(request, variable)`` called once for every
        variable with a weight decay; None to ignore.
    """

    def __init__(
        self,
        variable_factory: Callable[[VariableRequest], Any],
        training: bool = False,
        batch_norm_momentum: Any = None,
        on_update: Optional[Callable[[Any], None]] = None,
        on_regularizer: Optional[Callable[[VariableRequest, Any], None]] = None,
    ):
        self._factory = variable_factory
        self.training = bool(training)
        self.batch_norm_momentum = batch_norm_momentum
        self._on_update = on_update
        self._on_regularizer = on_regularizer
        self._scopes = []
        self.hparams = dict(DEFAULT_HPARAMS)

    @contextlib.contextmanager
    def arg_scope(self, **hparams):
        """Changes layer defaults (keys of :data:`DEFAULT_HPARAMS`) inside the block.

        Raises:
          KeyError: an unknown hyperparameter name.
        """
        unknown = set(hparams) - set(DEFAULT_HPARAMS)
        if unknown:
            raise KeyError("unknown layer hyperparameters: %s" % ", ".join(sorted(unknown)))
        saved = dict(self.hparams)
        self.hparams.update(hparams)
        try:
            yield
        finally:
            self.hparams = saved

    def momentum(self):
        """The batch norm momentum for training: the caller's, else the net's decay."""
        if self.batch_norm_momentum is None:
            return self.hparams["batch_norm_decay"]
        return self.batch_norm_momentum

    @contextlib.contextmanager
    def scope(self, name: str):
        """Enters variable scope ``name`` (and a TF name scope of that name)."""
        self._scopes.append(name)
        try:
            with tf.name_scope(name):
                yield
        finally:
            self._scopes.pop()

    def full_name(self, name: str) -> str:
        """Returns ``name`` prefixed with the current scopes, joined by '/'."""
        return "/".join(self._scopes + [name])

    def variable(self, name, shape, trainable=True, weight_decay=None):
        """Returns the float32 variable ``<scopes>/name`` of ``shape``."""
        request = VariableRequest(
            self.full_name(name), tuple(int(d) for d in shape), trainable, weight_decay
        )
        var = self._factory(request)
        if weight_decay is not None and self._on_regularizer is not None:
            self._on_regularizer(request, var)
        return var

    def add_update(self, op):
        """Hands a moving-average update op to ``on_update``."""
        if self._on_update is not None:
            self._on_update(op)


def _read(var):
    """The value of a variable as a tensor (works for graph and eager)."""
    return tf.convert_to_tensor(var)


def batch_norm(ctx: NetContext, x, scope="BatchNorm"):
    """TF-Slim batch norm: ``beta``, ``moving_mean``, ``moving_variance`` (+ ``gamma``).

    ``gamma`` exists when the arg scope's ``batch_norm_scale`` is True (TF-Slim
    creates it before ``beta``); epsilon is ``batch_norm_epsilon``.

    Args:
      ctx: the net context.
      x: float32 [batch, height, width, channels].
    Returns:
      float32 tensor of x's shape.
    """
    channels = int(x.shape[-1])
    epsilon = ctx.hparams["batch_norm_epsilon"]
    with ctx.scope(scope):
        if ctx.hparams["batch_norm_scale"]:
            gamma = _read(ctx.variable("gamma", [channels]))
        else:
            gamma = tf.ones([channels], tf.float32)
        beta = ctx.variable("beta", [channels])
        mean = ctx.variable("moving_mean", [channels], trainable=False)
        variance = ctx.variable("moving_variance", [channels], trainable=False)
        if not ctx.training:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, _read(beta), mean=_read(mean), variance=_read(variance),
                epsilon=epsilon, is_training=False)
            return y
        y, batch_mean, batch_variance = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, _read(beta), epsilon=epsilon, is_training=True)
        momentum = tf.cast(ctx.momentum(), tf.float32)
        # TF-Slim's assign_moving_average without zero debiasing:
        #   moving <- moving - (moving - batch) * (1 - momentum)
        for var, value in ((mean, batch_mean), (variance, batch_variance)):
            update = var.assign_sub((_read(var) - value) * (1.0 - momentum))
            ctx.add_update(update)
        return y


def conv2d(ctx: NetContext, x, num_outputs, kernel, stride=1, padding="SAME",
           scope=None, normalize=True, activation=tf.nn.relu, use_bias=None,
           bias_weight_decay=None):
    """TF-Slim ``conv2d``: weights [kh, kw, in, out], then batch norm and ReLU.

    Args:
      ctx: the net context.
      x: float32 [batch, height, width, in_channels].
      num_outputs: output channels.
      kernel: int or (kh, kw) in pixels.
      stride: int, in pixels.
      padding: "SAME" or "VALID".
      scope: variable scope name, e.g. ``Conv2d_1a_3x3``.
      normalize: batch norm after the convolution (no bias then).
      activation: callable or None.
      use_bias: defaults to ``not normalize`` (a ``biases`` variable).
      bias_weight_decay: L2 coefficient for ``biases`` (Inception-ResNet-V2's
        arg scope sets ``biases_regularizer``), or None.
    Returns:
      float32 [batch, out_height, out_width, num_outputs].
    """
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    if use_bias is None:
        use_bias = not normalize
    with ctx.scope(scope):
        w = ctx.variable("weights", [kh, kw, int(x.shape[-1]), num_outputs],
                         weight_decay=ctx.hparams["weight_decay"])
        y = tf.nn.conv2d(x, _read(w), strides=[1, stride, stride, 1], padding=padding)
        if use_bias:
            y = tf.nn.bias_add(y, _read(ctx.variable("biases", [num_outputs],
                                                     weight_decay=bias_weight_decay)))
        if normalize:
            y = batch_norm(ctx, y)
        if activation is not None:
            y = activation(y)
    return y


def conv2d_same(ctx: NetContext, x, num_outputs, kernel, stride, scope=None, **kwargs):
    """TF-Slim ``resnet_utils.conv2d_same``: a strided convolution with explicit padding.

    With stride 1 it is ``conv2d(..., padding="SAME")``; otherwise the input
    is padded by ``kernel - 1`` pixels (``(kernel - 1) // 2`` before, the
    rest after) in height and width and convolved with VALID padding, so the
    output does not depend on the input size's parity the way SAME's does.

    Args:
      ctx: the net context.
      x: float32 [batch, height, width, in_channels].
      num_outputs: output channels.
      kernel: int, square kernel size in pixels.
      stride: int, in pixels.
      scope: variable scope name.
      **kwargs: passed on to :func:`conv2d` (``normalize``, ``activation``, ...).
    Returns:
      float32 [batch, ceil(height / stride), ceil(width / stride), num_outputs].
    """
    if stride == 1:
        return conv2d(ctx, x, num_outputs, kernel, 1, padding="SAME", scope=scope, **kwargs)
    pad_beg = (kernel - 1) // 2
    pad_end = kernel - 1 - pad_beg
    x = tf.pad(x, [[0, 0], [pad_beg, pad_end], [pad_beg, pad_end], [0, 0]])
    return conv2d(ctx, x, num_outputs, kernel, stride, padding="VALID", scope=scope, **kwargs)


def separable_conv2d(ctx: NetContext, x, num_outputs, kernel, depth_multiplier,
                     stride=1, padding="SAME", scope=None):
    """TF-Slim ``separable_conv2d`` without batch norm or weight decay, with biases and ReLU.

    Variables ``depthwise_weights`` [kh, kw, in, depth_multiplier],
    ``pointwise_weights`` [1, 1, in * depth_multiplier, num_outputs] and
    ``biases`` [num_outputs] (as in Inception V2's ``Conv2d_1a_7x7``).

    Args:
      x: float32 [batch, height, width, in_channels].
    Returns:
      float32 [batch, out_height, out_width, num_outputs].
    """
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    channels = int(x.shape[-1])
    with ctx.scope(scope):
        # No weight decay: TF-Slim's inception_arg_scope regularizes only
        # conv2d and fully_connected weights, not separable_conv2d's.
        dw = ctx.variable("depthwise_weights", [kh, kw, channels, depth_multiplier])
        pw = ctx.variable("pointwise_weights",
                          [1, 1, channels * depth_multiplier, num_outputs])
        y = tf.nn.separable_conv2d(x, _read(dw), _read(pw),
                                   strides=[1, stride, stride, 1], padding=padding)
        y = tf.nn.bias_add(y, _read(ctx.variable("biases", [num_outputs])))
        y = tf.nn.relu(y)
    return y


def depthwise_conv2d(ctx: NetContext, x, kernel, stride=1, padding="SAME", scope=None,
                     activation=tf.nn.relu6, weight_decay=None):
    """TF-Slim ``separable_conv2d(x, None, ...)``: a depthwise convolution, batch norm, activation.

    With ``num_outputs=None`` and ``depth_multiplier=1`` (as the MobileNets
    call it) TF-Slim builds only the depthwise step: variable
    ``depthwise_weights`` [kh, kw, in, 1], no biases (batch norm follows,
    with the arg scope's ``batch_norm_*``), then the activation.

    Args:
      ctx: the net context.
      x: float32 [batch, height, width, channels].
      kernel: int or (kh, kw) in pixels.
      stride: int, in pixels.
      padding: "SAME" or "VALID".
      scope: variable scope name, e.g. ``Conv2d_1_depthwise`` or ``depthwise``.
      activation: callable or None; ReLU6 by default (the MobileNets').
      weight_decay: L2 coefficient for ``depthwise_weights``, or None: TF-Slim's
        ``mobilenet_v1_arg_scope(regularize_depthwise=False)`` and
        ``mobilenet.training_scope()`` do not regularize them.
    Returns:
      float32 [batch, out_height, out_width, channels].
    """
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    channels = int(x.shape[-1])
    with ctx.scope(scope):
        w = ctx.variable("depthwise_weights", [kh, kw, channels, 1], weight_decay=weight_decay)
        y = tf.nn.depthwise_conv2d(x, _read(w), strides=[1, stride, stride, 1],
                                   padding=padding)
        y = batch_norm(ctx, y)
        if activation is not None:
            y = activation(y)
    return y


def fully_connected(ctx: NetContext, x, num_outputs, scope=None,
                    bias_weight_decay=None):
    """TF-Slim ``fully_connected`` without activation: ``x @ weights + biases``.

    Variables ``weights`` [in, num_outputs] (L2 weight decay of the arg
    scope, 4e-5 by default) and
    ``biases`` [num_outputs].

    Args:
      ctx: the net context.
      x: float32 [batch, in].
      num_outputs: output units.
      scope: variable scope name, e.g. ``Logits``.
      bias_weight_decay: L2 coefficient for ``biases``, or None.
    Returns:
      float32 [batch, num_outputs].
    """
    with ctx.scope(scope):
        w = ctx.variable("weights", [int(x.shape[-1]), num_outputs],
                         weight_decay=ctx.hparams["weight_decay"])
        b = ctx.variable("biases", [num_outputs], weight_decay=bias_weight_decay)
        y = tf.nn.bias_add(tf.matmul(x, _read(w)), _read(b))
    return y


def max_pool(x, kernel, stride, padding="SAME"):
    """Max pooling over [batch, h, w, c] with a square ``kernel`` (pixels)."""
    return tf.nn.max_pool2d(x, kernel, stride, padding)


def avg_pool(x, kernel, stride, padding="SAME"):
    """Average pooling over [batch, h, w, c] with a square ``kernel`` (pixels)."""
    return tf.nn.avg_pool2d(x, kernel, stride, padding)


def global_avg_pool(x):
    """Mean over height and width: [b, h, w, c] -> [b, 1, 1, c]."""
    return tf.reduce_mean(x, axis=[1, 2], keepdims=True)


def dropout(ctx: NetContext, x, keep_prob=0.8):
    """Dropout with TF-Slim's keep probability 0.8, active only when training."""
    if not ctx.training:
        return x
    return tf.nn.dropout(x, rate=1.0 - keep_prob)
