"""The TF2 SavedModel writer: module versions 4 and 5 (``hub.load``, ``hub.KerasLayer``).

Public entry point: :func:`write_saved_model_2`.

The written SavedModel implements TensorFlow Hub's reusable SavedModel API
(https://www.tensorflow.org/hub/reusable_saved_models). Its root object has

  * ``__call__(inputs, training=False, batch_norm_momentum=0.99)``: a
    ``tf.function`` with two concrete functions, ``training=True`` and
    ``training=False``, each taking ``inputs`` float32
    [batch, height, width, 3] (RGB, values in [0, 1], any batch size; any
    height and width for a variable input size, exactly the spec's
    image_size S, i.e. [batch, S, S, 3], for a fixed input size) and
    ``batch_norm_momentum`` a float32 scalar (a Python float is accepted
    too). It returns float32 logits [batch, num_classes] for a
    classification module or float32 features [batch, FEATURE_SIZE] for a
    feature_vector module. At a fixed size (mobilenet_v2's TF2 versions,
    ZOO.md section 1), a call with other images fails with TensorFlow's
    ``ValueError`` "Could not find matching concrete function to call loaded
    from the SavedModel", which lists the accepted shape; callers that
    TensorFlow lets through anyway (a loaded ``serving_default``, a tf-keras
    model built at S x S then called on other images) hit the graph's own
    check, an ``InvalidArgumentError`` "this module takes only SxS pixel
    images (height x width)", the TF1 Hub format writer's message;
  * ``variables``: every ``tf.Variable`` of the net (checkpoint names,
    e.g. ``InceptionV2/Conv2d_2b_1x1/weights``), in the order the net asks
    for them;
  * ``trainable_variables``: the subset the net marks trainable (all but the
    batch norm moving statistics);
  * ``regularization_losses``: one argument-less ``tf.function`` per weight
    decay term, returning the float32 scalar ``weight_decay * tf.nn.l2_loss(w)``
    (TF-Slim's ``l2_regularizer(4e-5)``).

Version 5 also has the SignatureDef ``serving_default`` (tag set ``serve``):

  * input ``inputs``: float32 [None, None, None, 3] (variable input size)
    or [None, S, S, 3] (fixed input size S), values in [0, 1];
  * output ``logits`` (classification, float32 [None, num_classes]) or
    ``feature_vector`` (feature_vector, float32 [None, FEATURE_SIZE]),
    computed in inference mode (``training=False``).

The net is the single definition in :mod:`hubexport.nets`, built through a
:class:`hubexport.nets.layers.NetContext` whose variables are pre-made
``tf.Variable`` objects.
"""

import functools
import os

from hubexport.errors import BuildError, CheckpointError, UsageError
from hubexport.formats import LABELS_FILE

#: Default of ``batch_norm_momentum`` in ``__call__``: the value
#: ``image_*_with_bn_hparams`` signatures of version 3 use (see FACTS.md,
#: "The published module family").
DEFAULT_BATCH_NORM_MOMENTUM = 0.99

#: The spec's input_size values (hubexport/spec.schema.yaml).
INPUT_SIZES = ("fixed", "variable")

#: Name of the version-5 serving signature and of its input.
SERVING_SIGNATURE = "serving_default"
SERVING_INPUT = "inputs"
#: Output key of the serving signature by module kind.
CLASSIFICATION_OUTPUT = "logits"
FEATURE_VECTOR_OUTPUT = "feature_vector"


@functools.lru_cache(maxsize=None)
def _image_module_class():
    """Defines the root class once; deferred so that importing this file needs no TensorFlow."""
    import numpy as np
    import tensorflow as tf

    from hubexport.nets import build_net
    from hubexport.nets.layers import NetContext

    class ImageModule(tf.Module):
        """A reusable SavedModel root for one TF-Slim image net.

        Args:
          architecture: a name of :data:`hubexport.nets.ARCHITECTURES`.
          values: dict variable name -> numpy array (the checkpoint's values;
            names the net does not ask for are ignored).
          num_classes: the checkpoint's class count for classification, None
            for feature_vector.
          image_size: height and width in pixels of the tiny eager batch run
            once to create the variables (the net's default size).
          input_mapping: a :class:`hubexport.nets.InputMapping` (the spec's).
          fixed_size: None (any input size), or the only height and width
            in pixels ``__call__`` accepts: its graph then checks the images'
            size at run time (an ``InvalidArgumentError`` for other sizes),
            for the callers that TensorFlow lets through whatever the
            signature's shape (a loaded ``serving_default`` runs on any
            shape in TF 2.21).

        Raises:
          CheckpointError: ``values`` lacks variables the net asks for, or
            holds one with the wrong shape.
        """

        # The reusable SavedModel API wants plain attributes with these names;
        # the class attributes shadow tf.Module's properties so that
        # __init__ can assign (and SavedModel track) them.
        variables = ()
        trainable_variables = ()
        regularization_losses = ()

        def __init__(self, architecture, values, num_classes, image_size, input_mapping,
                     fixed_size=None):
            super().__init__(name=None)
            self._architecture = architecture
            self._fixed_size = fixed_size
            self._num_classes = num_classes
            self._input_mapping = input_mapping
            by_name = {}
            order = []
            missing = []
            wrong = []
            decayed = []

            def create(request):
                if request.name in by_name:
                    return by_name[request.name]
                if request.name not in values:
                    missing.append(request.name)
                    value = np.zeros(request.shape, np.float32)
                else:
                    value = np.asarray(values[request.name])
                    if tuple(value.shape) != tuple(request.shape):
                        wrong.append("%s has shape %s, the net needs %s"
                                     % (request.name, list(value.shape), list(request.shape)))
                        value = np.zeros(request.shape, np.float32)
                    value = value.astype(np.float32, copy=False)
                # Outside the net's name scopes, so that the variable's name is
                # exactly the checkpoint name (not prefixed by the scopes again).
                with tf.compat.v1.name_scope(None):
                    var = tf.Variable(value, name=request.name, trainable=request.trainable)
                by_name[request.name] = var
                order.append(var)
                return var

            def on_regularizer(request, var):
                if all(v is not var for _, v in decayed):
                    decayed.append((request.weight_decay, var))

            ctx = NetContext(create, training=False, on_regularizer=on_regularizer)
            dummy = tf.zeros([1, image_size, image_size, 3], tf.float32)
            build_net(architecture, ctx, dummy, num_classes=num_classes,
                      input_mapping=input_mapping)
            if missing:
                raise CheckpointError(
                    "checkpoint lacks %d variable(s) the %s net needs: %s; use the "
                    "checkpoint this architecture was trained with"
                    % (len(missing), architecture, ", ".join(missing)))
            if wrong:
                raise CheckpointError("checkpoint variables do not fit the %s net: %s"
                                      % (architecture, "; ".join(wrong)))

            def lookup(request):
                var = by_name.get(request.name)
                if var is None or tuple(var.shape) != tuple(request.shape):
                    raise BuildError("the %s net asked for variable %s %s that the first "
                                     "build did not create"
                                     % (architecture, request.name, list(request.shape)))
                return var

            self._lookup = lookup  # a plain function: not tracked, not saved
            self.variables = list(order)
            self.trainable_variables = [v for v in order if v.trainable]
            self.regularization_losses = [_l2_loss_fn(tf, var, decay) for decay, var in decayed]

        def _forward(self, inputs, training, batch_norm_momentum):
            if self._fixed_size is not None:
                inputs = _check_fixed_size(tf, inputs, self._fixed_size)
            ctx = NetContext(self._lookup, training=training,
                             batch_norm_momentum=batch_norm_momentum)
            logits, features, _ = build_net(self._architecture, ctx, inputs,
                                            num_classes=self._num_classes,
                                            input_mapping=self._input_mapping)
            return features if self._num_classes is None else logits

        @tf.function(autograph=False)
        def __call__(self, inputs, training=False,
                     batch_norm_momentum=DEFAULT_BATCH_NORM_MOMENTUM):
            """Runs the net.

            Args:
              inputs: float32 [batch, height, width, 3], RGB in [0, 1]
                (height = width = the spec's image_size for a fixed-size
                module).
              training: Python bool; True runs batch norm on batch
                statistics, updates the moving averages
                (``moving -= (moving - batch) * (1 - batch_norm_momentum)``)
                and applies dropout (keep 0.8) before the logits.
              batch_norm_momentum: float32 scalar, used only when training.

            Returns:
              float32 logits [batch, num_classes] or features
              [batch, FEATURE_SIZE].
            """
            return self._forward(inputs, training, batch_norm_momentum)

    return ImageModule


def _check_fixed_size(tf, images, size):
    """``images`` (float32 [batch, h, w, 3]) once a run-time check says h = w = ``size`` pixels.

    The same check, with the same message, as the TF1 Hub format writer's
    fixed size (hubexport.formats.hub_tf1.build_graph).
    """
    with tf.name_scope("check_fixed_size"):
        check = tf.debugging.assert_equal(
            tf.shape(images)[1:3], tf.constant([size, size]),
            message="this module takes only %dx%d pixel images (height x width)"
                    % (size, size))
        with tf.control_dependencies([check]):
            return tf.identity(images, name="images_checked")


def _l2_loss_fn(tf, var, weight_decay):
    """An argument-less tf.function returning ``weight_decay * l2_loss(var)`` (float32 scalar)."""

    @tf.function(input_signature=[], autograph=False)
    def l2_loss():
        return tf.multiply(tf.constant(weight_decay, tf.float32), tf.nn.l2_loss(var))

    return l2_loss


def write_saved_model_2(architecture, values, out_dir, *, num_classes, image_size,
                        input_size, serving_default, input_mapping, labels=None):
    """Writes a TF2 reusable SavedModel (module version 4, or 5 with a serving signature).

    Must be called with TensorFlow in eager mode (the TF2 default). The API of
    the written object is described in this module's docstring: root
    ``__call__(inputs, training=False, batch_norm_momentum=0.99)`` with
    ``variables``, ``trainable_variables``, ``regularization_losses``; for
    version 5 also the SignatureDef ``serving_default`` with input ``inputs``
    (float32 [None, None, None, 3], or [None, S, S, 3] at a fixed size S) and
    output ``logits`` (classification) or ``feature_vector``
    (feature_vector).

    Args:
      architecture: a name of :data:`hubexport.nets.ARCHITECTURES`.
      values: dict variable name -> numpy array, the restored checkpoint
        values; may hold more names than the net uses (e.g. ``global_step``).
      out_dir: path of a directory that does not exist yet; written directly
        (the caller writes to a temporary path and renames).
      num_classes: the checkpoint's class count for a classification
        module, None for a feature_vector module.
      image_size: the net's default input size S in pixels (the spec's
        image_size); used for the tiny batch that creates the variables.
      input_size: "variable" (``__call__`` and ``serving_default`` take
        images of any size from the net's min_image_size on, shape
        [None, None, None, 3]) or "fixed" (only S x S pixels, shape
        [None, S, S, 3], as the TF1 Hub format writer's fixed size), the
        spec's input_size.
      serving_default: True for version 5 (adds the ``serving_default``
        SignatureDef), False for version 4 (no SignatureDefs).
      input_mapping: a :class:`hubexport.nets.InputMapping` (the spec's),
        from inputs in [0, 1] to the checkpoint's input range.
      labels: the text of a class label file (one label per line, str), or
        None. It becomes the SavedModel asset ``assets/labels.txt``, tracked
        as the root's ``labels_file`` (``tf.saved_model.Asset``; after
        ``hub.load``, ``obj.labels_file.asset_path`` is its path).

    Raises:
      UsageError: unknown architecture, or input_size neither "fixed" nor
        "variable".
      CheckpointError: ``values`` lacks variables the net needs (all missing
        names are listed) or a value has the wrong shape.
      BuildError: ``out_dir`` exists already, or TensorFlow is not in eager
        mode.
    """
    import tensorflow as tf

    from hubexport.nets import get_net

    get_net(architecture)  # UsageError for an unknown architecture, before any work
    if input_size not in INPUT_SIZES:
        raise UsageError("input_size %r: use one of %s" % (input_size, ", ".join(INPUT_SIZES)))
    if os.path.exists(out_dir):
        raise BuildError("%s exists already; the SavedModel writer needs a new directory"
                         % out_dir)
    if not tf.executing_eagerly():
        raise BuildError("write_saved_model_2 needs TensorFlow's eager mode (TF2 behaviour)")

    size = int(image_size) if input_size == "fixed" else None  # None: any height, width
    module = _image_module_class()(architecture, values, num_classes, int(image_size),
                                   input_mapping, fixed_size=size)
    images = tf.TensorSpec([None, size, size, 3], tf.float32, name=SERVING_INPUT)
    momentum = tf.TensorSpec([], tf.float32, name="batch_norm_momentum")
    for training in (False, True):
        module.__call__.get_concrete_function(images, training=training,
                                              batch_norm_momentum=momentum)

    signatures = {}
    if serving_default:
        output_key = FEATURE_VECTOR_OUTPUT if num_classes is None else CLASSIFICATION_OUTPUT

        @tf.function(input_signature=[images], autograph=False)
        def serve(inputs):
            outputs = module.__call__(
                inputs, training=False,
                batch_norm_momentum=tf.constant(DEFAULT_BATCH_NORM_MOMENTUM, tf.float32))
            return {output_key: outputs}

        signatures[SERVING_SIGNATURE] = serve.get_concrete_function()
    if labels is None:
        tf.saved_model.save(module, out_dir, signatures=signatures)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hubexport-labels-") as staging:
        path = os.path.join(staging, LABELS_FILE)  # the asset keeps its file name
        with open(path, "w", encoding="utf-8") as f:
            f.write(labels)
        module.labels_file = tf.saved_model.Asset(path)
        tf.saved_model.save(module, out_dir, signatures=signatures)
