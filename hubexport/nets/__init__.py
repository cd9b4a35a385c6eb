"""The nets stage: one architecture definition per TF-Slim net family, for every format.

Public entry point: :func:`build_net`. Each net module defines ``NETS``, a
dict architecture name -> :class:`hubexport.nets.layers.Net` (scope, default
and smallest image size in pixels, feature size, logits scope and the
function that builds it). One module may define several architectures from
one definition (``resnet``: V1 and V2 at depths 50, 101 and 152;
``mobilenet_v1`` / ``mobilenet_v2``: one per depth multiplier).

Importing this package does not import TensorFlow; :func:`get_net` does.
"""

import dataclasses
import importlib

from hubexport.errors import UsageError

#: Architecture name -> the module of hubexport/nets/ that defines it.
ARCHITECTURES = {
    "inception_v1": "inception_v1",
    "inception_v2": "inception_v2",
    "inception_v3": "inception_v3",
    "inception_resnet_v2": "inception_resnet_v2",
    "resnet_v1_50": "resnet",
    "resnet_v1_101": "resnet",
    "resnet_v1_152": "resnet",
    "resnet_v2_50": "resnet",
    "resnet_v2_101": "resnet",
    "resnet_v2_152": "resnet",
    "mobilenet_v1_025": "mobilenet_v1",
    "mobilenet_v1_050": "mobilenet_v1",
    "mobilenet_v1_075": "mobilenet_v1",
    "mobilenet_v1_100": "mobilenet_v1",
    "mobilenet_v2_035": "mobilenet_v2",
    "mobilenet_v2_050": "mobilenet_v2",
    "mobilenet_v2_075": "mobilenet_v2",
    "mobilenet_v2_100": "mobilenet_v2",
    "mobilenet_v2_130": "mobilenet_v2",
    "mobilenet_v2_140": "mobilenet_v2",
}


@dataclasses.dataclass(frozen=True)
class InputMapping:
    """How module inputs in [0, 1] become what the checkpoint was trained on.

    ``x -> multiply * x - subtract[channel]`` per RGB channel.

    Attributes:
      multiply: float, e.g. 2.0 (TF-Slim's Inception preprocessing,
        ``x -> 2x - 1``) or 255.0 (VGG preprocessing of the ResNet V1
        checkpoints).
      subtract: tuple of 3 floats (R, G, B), e.g. (1.0, 1.0, 1.0) or the
        VGG means (123.68, 116.78, 103.94) of TF-Slim's
        ``vgg_preprocessing.py``.
    """

    multiply: float = 2.0
    subtract: tuple = (1.0, 1.0, 1.0)


#: TF-Slim's Inception preprocessing: [0, 1] -> [-1, 1].
INCEPTION_INPUT_MAPPING = InputMapping()


def get_net(architecture):
    """Returns the :class:`hubexport.nets.layers.Net` of ``architecture`` (imports TensorFlow).

    Raises:
      UsageError: the architecture is not one of :data:`ARCHITECTURES`.
    """
    if architecture not in ARCHITECTURES:
        raise UsageError("unknown architecture %r; known: %s"
                         % (architecture, ", ".join(ARCHITECTURES)))
    module = importlib.import_module("hubexport.nets." + ARCHITECTURES[architecture])
    return module.NETS[architecture]


def build_net(architecture, ctx, images, num_classes=1001,
              input_mapping=INCEPTION_INPUT_MAPPING):
    """Builds a net on module inputs: float32 images in [0, 1].

    Maps the images to the checkpoint's input range (``input_mapping``, the
    spec's ``input_mapping``), checks at run time that height and width are
    at least the net's ``min_image_size`` pixels, and builds the net.

    Args:
      architecture: a name of :data:`ARCHITECTURES`.
      ctx: a :class:`hubexport.nets.layers.NetContext`.
      images: float32 [batch, height, width, 3], RGB values in [0, 1].
      num_classes: number of logits (the checkpoint's: 1001, or 1000 for
        ResNet V1), or None for no logits layer.
      input_mapping: an :class:`InputMapping`.

    Returns:
      (logits, features, end_points): logits float32 [batch, num_classes] or
      None; features float32 [batch, feature_size] (the global average pool);
      end_points the net's dict of TF-Slim end points.

    Raises:
      UsageError: unknown architecture.
      tf.errors.InvalidArgumentError (at run time): an image smaller than
        ``min_image_size`` pixels, with a message saying so.
    """
    import tensorflow as tf

    net = get_net(architecture)
    with tf.name_scope("preprocess"):
        shape = tf.shape(images)
        size = net.min_image_size
        message = ("%s needs input images of at least %dx%d pixels (height x width)"
                   % (architecture, size, size))
        checks = [tf.debugging.assert_greater_equal(shape[1], size, message=message),
                  tf.debugging.assert_greater_equal(shape[2], size, message=message)]
        with tf.control_dependencies(checks):
            scaled = tf.identity(images) * float(input_mapping.multiply)
        subtract = tuple(float(v) for v in input_mapping.subtract)
        if len(set(subtract)) == 1:
            scaled = scaled - subtract[0]
        else:
            scaled = scaled - tf.constant(subtract, tf.float32)
    logits, end_points = net.build(ctx, scaled, num_classes=num_classes)
    features = tf.squeeze(end_points["global_pool"], [1, 2], name="feature_vector")
    return logits, features, end_points


def variable_requests(architecture, num_classes=1001):
    """Lists the variables a net asks for, without creating any.

    Builds the net once in a throwaway graph at its default image size.

    Args:
      architecture: a name of :data:`ARCHITECTURES`.
      num_classes: the checkpoint's class count, or None for the
        feature_vector variant.

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
        size = net.default_image_size
        images = tf.compat.v1.placeholder(tf.float32, [1, size, size, 3])
        build_net(architecture, NetContext(factory), images, num_classes=num_classes)
    return requests


def checkpoint_function(architecture, values, num_classes=1001,
                        input_mapping=INCEPTION_INPUT_MAPPING):
    """The net run directly on checkpoint values, as one TF2 graph function.

    This is the reference a built module must reproduce: the same net
    definition, variables made from ``values``, inference mode.

    Args:
      architecture: a name of :data:`ARCHITECTURES`.
      values: dict variable name -> numpy float32 array (e.g. from
        :meth:`hubexport.checkpoint.Checkpoint.values`); extra names ignored.
      num_classes: the checkpoint's class count, or None for features only.
      input_mapping: an :class:`InputMapping` (the spec's).

    Returns:
      A ``tf.function`` mapping float32 images [batch, height, width, 3] in
      [0, 1] to ``(logits [batch, num_classes] or None, features
      [batch, feature_size])``.

    Raises:
      KeyError: ``values`` lacks a variable the net needs (raised here, not
        at the first call).
    """
    import tensorflow as tf

    from hubexport.nets.layers import NetContext

    # The variables are made here, eagerly, before the function is traced:
    # made inside the trace, each one's initializer is lifted out of the graph
    # on its own. For ResNet-152 (TF 2.21, 2 cores) that first call took
    # 15.5 s; now listing (0.4 s), making (0.8 s) and the first call (1.9 s)
    # take 3.1 s.
    variables = {}
    for request in variable_requests(architecture, num_classes):
        if request.name not in variables:
            variables[request.name] = tf.Variable(values[request.name], name=request.name,
                                                  trainable=request.trainable)

    ctx = NetContext(lambda request: variables[request.name])

    @tf.function(autograph=False)
    def run(images):
        logits, features, _ = build_net(architecture, ctx, images, num_classes=num_classes,
                                        input_mapping=input_mapping)
        return logits, features

    run.variables_by_name = variables
    return run
