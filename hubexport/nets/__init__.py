"""The nets stage: one architecture definition per TF-Slim net, for every format.

Public entry point: :func:`build_net`. Each net module defines ``SCOPE``,
``DEFAULT_IMAGE_SIZE``, ``MIN_IMAGE_SIZE`` and ``FEATURE_SIZE`` (pixels,
channels) and one function ``<architecture>(ctx, images, num_classes)``
returning ``(logits, end_points)``.

Importing this package does not import TensorFlow; :func:`get_net` does.
"""

import importlib

from hubexport.errors import UsageError

ARCHITECTURES = ("inception_v2", "inception_resnet_v2")


def get_net(architecture):
    """Returns the module defining ``architecture``.

    Raises:
      UsageError: the architecture is not one of :data:`ARCHITECTURES`.
    """
    if architecture not in ARCHITECTURES:
        raise UsageError("unknown architecture %r; known: %s"
                         % (architecture, ", ".join(ARCHITECTURES)))
    return importlib.import_module("hubexport.nets." + architecture)


def build_net(architecture, ctx, images, num_classes=1001):
    """Builds a net on module inputs: float32 images in [0, 1].

    Maps the images to [-1, 1] (TF-Slim's Inception preprocessing,
    ``x -> 2x - 1``), checks at run time that height and width are at least
    the net's ``MIN_IMAGE_SIZE`` pixels, and builds the net.

    Args:
      architecture: "inception_v2" or "inception_resnet_v2".
      ctx: a :class:`hubexport.nets.layers.NetContext`.
      images: float32 [batch, height, width, 3], values in [0, 1].
      num_classes: number of logits (1001), or None for no logits layer.

    Returns:
      (logits, features, end_points): logits float32 [batch, num_classes] or
      None; features float32 [batch, FEATURE_SIZE] (the global average pool);
      end_points the net's dict of TF-Slim end points.

    Raises:
      UsageError: unknown architecture.
      tf.errors.InvalidArgumentError (at run time): an image smaller than
        ``MIN_IMAGE_SIZE`` pixels, with a message saying so.
    """
    import tensorflow as tf

    net = get_net(architecture)
    with tf.name_scope("preprocess"):
        shape = tf.shape(images)
        message = ("%s needs input images of at least %dx%d pixels (height x width)"
                   % (architecture, net.MIN_IMAGE_SIZE, net.MIN_IMAGE_SIZE))
        checks = [tf.debugging.assert_greater_equal(shape[1], net.MIN_IMAGE_SIZE, message=message),
                  tf.debugging.assert_greater_equal(shape[2], net.MIN_IMAGE_SIZE, message=message)]
        with tf.control_dependencies(checks):
            scaled = tf.identity(images) * 2.0 - 1.0
    logits, end_points = getattr(net, architecture)(ctx, scaled, num_classes=num_classes)
    features = tf.squeeze(end_points["global_pool"], [1, 2], name="feature_vector")
    return logits, features, end_points


def variable_requests(architecture, num_classes=1001):
    """Lists the variables a net asks for, without creating any.

    Builds the net once in a throwaway graph at its default image size.

    Args:
      architecture: "inception_v2" or "inception_resnet_v2".
      num_classes: 1001, or None for the feature_vector variant.

    Returns:
      list of :class:`hubexport.nets.layers.VariableRequest` in creation order.
    """
    import tensorflow as tf

    from hubexport.nets.layers import NetContext

    net = get_net(architecture)
    requests = []

    def factory(request):
        requests.append(request)
        return tf.zeros(request.shape, tf.float32)

    with tf.Graph().as_default():
        size = net.DEFAULT_IMAGE_SIZE
        images = tf.compat.v1.placeholder(tf.float32, [1, size, size, 3])
        build_net(architecture, NetContext(factory), images, num_classes=num_classes)
    return requests


def checkpoint_function(architecture, values, num_classes=1001):
    """The net run directly on checkpoint values, as one TF2 graph function.

    This is the reference a built module must reproduce: the same net
    definition, variables made from ``values``, inference mode.

    Args:
      architecture: "inception_v2" or "inception_resnet_v2".
      values: dict variable name -> numpy float32 array (e.g. from
        :meth:`hubexport.checkpoint.Checkpoint.values`); extra names ignored.
      num_classes: 1001, or None for features only.

    Returns:
      A ``tf.function`` mapping float32 images [batch, height, width, 3] in
      [0, 1] to ``(logits [batch, num_classes] or None, features
      [batch, FEATURE_SIZE])``.

    Raises:
      KeyError: ``values`` lacks a variable the net needs.
    """
    import tensorflow as tf

    from hubexport.nets.layers import NetContext

    variables = {}

    def factory(request):
        if request.name not in variables:
            variables[request.name] = tf.Variable(values[request.name], name=request.name,
                                                  trainable=request.trainable)
        return variables[request.name]

    ctx = NetContext(factory)

    @tf.function(autograph=False)
    def run(images):
        logits, features, _ = build_net(architecture, ctx, images, num_classes=num_classes)
        return logits, features

    run.variables_by_name = variables
    return run
