"""The TF1 Hub format writer (module versions 1 and 3), as ``hub.Module`` reads it.

Public entry point: :func:`write_hub_module`. It writes what tensorflow-hub
<= 0.15's own exporter (``hub.create_module_spec(...).export``) writes:

* ``tfhub_module.pb``: ``ModuleDef(format=FORMAT_V3)``;
* ``saved_model.pb``: a SavedModel with one MetaGraphDef per graph variant,
  the empty tag set (inference) and ``{"train"}`` (batch norm on batch
  statistics with its update ops in ``UPDATE_OPS``, dropout active), each made
  by ``export_meta_graph(strip_default_attrs=True)`` with resource variables,
  the module's SignatureDefs, the L2 weight-decay terms in
  ``REGULARIZATION_LOSSES`` and the ``image_module_info`` attachment in the
  ``hub_module_attachments`` collection; no SaverDef (as hub's exporter);
* ``variables/variables.{index,data-*}``: a TF V2 checkpoint keyed by the
  variable names (TF-Slim's, so ``hub.Module`` restores by name);
* ``assets/``: empty, and ``saved_model_schema_version`` unset, as hub's
  exporter leaves them (tests/test_legacy_hub_module.py compares the files
  with what tensorflow-hub 0.15 writes for the same graph).

Signatures (https://www.tensorflow.org/hub/common_signatures/images):
  ``image_classification``: input ``images`` float32 [batch, h, w, 3] in
  [0, 1]; output ``default`` float32 [batch, num_classes] logits.
  ``image_feature_vector``: same input; output ``default`` float32
  [batch, feature_size], plus every TF-Slim end point as ``<SCOPE>/<name>``.
  ``*_with_bn_hparams`` (version 3): an extra input ``batch_norm_momentum``,
  a float32 scalar defaulting to 0.99, at a variable or (mobilenet_v2's
  version 3) a fixed input size.
  ``default``: ``image_classification`` in a classification module,
  ``image_feature_vector`` in a feature_vector module.
"""

import os

from hubexport.errors import BuildError
from hubexport.formats import LABELS_FILE, hub_protos
from hubexport.nets import build_net, get_net
from hubexport.nets.layers import NetContext

# Batch norm momentum default of version 3 (the seed cards: "defaults to
# 0.99 ... in order to accelerate training on small datasets").
V3_BATCH_NORM_MOMENTUM = 0.99
TAG_SETS = (frozenset(), frozenset(["train"]))
_BN_SUFFIX = "_with_bn_hparams"


def build_graph(architecture, *, num_classes, image_size, input_size, signatures,
                training, variable_factory, input_mapping):
    """Builds one graph variant in the current (graph-mode) default graph.

    Args:
      architecture: a name of :data:`hubexport.nets.ARCHITECTURES`.
      num_classes: the checkpoint's class count, or None for a feature_vector module.
      image_size: default height and width in pixels (the spec's image_size).
      input_size: "fixed" (images [batch, image_size, image_size, 3]) or
        "variable" (images [batch, height, width, 3]).
      signatures: signature names to define (from the spec).
      training: True for the ``{"train"}`` variant.
      variable_factory: see :class:`hubexport.nets.layers.NetContext`.
      input_mapping: a :class:`hubexport.nets.InputMapping` (the spec's).

    Returns:
      dict signature name -> (inputs dict, outputs dict) of graph tensors.
    """
    import tensorflow as tf

    size = image_size if input_size == "fixed" else None
    placeholder = tf.compat.v1.placeholder(tf.float32, [None, size, size, 3], name="images")
    images = placeholder
    if size is not None:
        # hub.Module checks the static shape; clients that feed the graph
        # directly (hub.load) get this run-time check instead.
        with tf.name_scope("check_fixed_size"):
            check = tf.debugging.assert_equal(
                tf.shape(images)[1:3], tf.constant([size, size]),
                message="this module takes only %dx%d pixel images (height x width)"
                        % (size, size))
            with tf.control_dependencies([check]):
                images = tf.identity(images, name="images_checked")
    with_bn = any(name.endswith(_BN_SUFFIX) for name in signatures)
    if with_bn:
        momentum = tf.compat.v1.placeholder_with_default(
            tf.constant(V3_BATCH_NORM_MOMENTUM, tf.float32), [], name="batch_norm_momentum")
    else:
        momentum = None  # the net's own decay (TF-Slim's arg scope)

    def on_regularizer(request, var):
        loss = tf.multiply(request.weight_decay, tf.nn.l2_loss(var),
                           name=request.name.replace("/", "_") + "_l2")
        tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES, loss)

    ctx = NetContext(
        variable_factory, training=training, batch_norm_momentum=momentum,
        on_update=lambda op: tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS, op),
        on_regularizer=on_regularizer)
    logits, features, end_points = build_net(architecture, ctx, images, num_classes=num_classes,
                                             input_mapping=input_mapping)
    scope = get_net(architecture).scope
    feature_outputs = {"default": features}
    feature_outputs.update({"%s/%s" % (scope, k): v for k, v in end_points.items() if k != "Logits"})
    base = {"image_classification": {"default": logits} if logits is not None else None,
            "image_feature_vector": feature_outputs}
    base["default"] = base["image_classification" if num_classes else "image_feature_vector"]
    result = {}
    for name in signatures:
        plain = name[:-len(_BN_SUFFIX)] if name.endswith(_BN_SUFFIX) else name
        outputs = base.get(plain)
        if outputs is None:
            raise BuildError("signature %r cannot be defined for a %s module"
                             % (name, "classification" if num_classes else "feature_vector"))
        inputs = {"images": placeholder}
        if name.endswith(_BN_SUFFIX):
            inputs["batch_norm_momentum"] = momentum
        result[name] = (inputs, outputs)
    return result


def write_hub_module(architecture, values, out_dir, *, num_classes, image_size,
                     input_size, signatures, input_mapping, labels=None):
    """Writes a module in the TF1 Hub format.

    Args:
      architecture: a name of :data:`hubexport.nets.ARCHITECTURES`.
      values: dict variable name -> numpy float32 array, the restored
        checkpoint (extra names are ignored; see :mod:`hubexport.checkpoint`).
      out_dir: directory to create (must not exist; the caller renames it
        into place when complete).
      num_classes: the checkpoint's class count (classification) or None
        (feature_vector).
      image_size: default image size in pixels, recorded as
        ``image_module_info``.
      input_size: "fixed" (version 1) or "variable" (version 3).
      signatures: the SignatureDef names to write.
      input_mapping: a :class:`hubexport.nets.InputMapping` (the spec's),
        from module inputs in [0, 1] to the checkpoint's input range.
      labels: the text of a class label file (one label per line, str),
        written to ``assets/labels.txt`` as a plain file, or None.

    Raises:
      CheckpointError: ``values`` lacks a variable the net needs.
      BuildError: a signature does not fit the module kind.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    from hubexport.errors import CheckpointError

    missing = []

    def factory(request):
        if request.name not in values:
            missing.append(request.name)
        init = (tf.compat.v1.ones_initializer() if request.name.endswith("moving_variance")
                else tf.compat.v1.zeros_initializer())
        return tf.compat.v1.get_variable(request.name, shape=request.shape, dtype=tf.float32,
                                         initializer=init, trainable=request.trainable,
                                         use_resource=True)

    # Like hub's SavedModelHandler: saved_model_schema_version left unset (0).
    saved_model = saved_model_pb2.SavedModel()
    attachment = hub_protos.image_module_info_attachment(image_size, image_size)
    os.makedirs(out_dir)
    # hub's exporter always creates assets/ (empty unless there are labels).
    os.makedirs(os.path.join(out_dir, "assets"))
    if labels is not None:  # a plain file beside the graph: hub.Module reads no asset here
        with open(os.path.join(out_dir, "assets", LABELS_FILE), "w", encoding="utf-8") as f:
            f.write(labels)
    for tags in TAG_SETS:
        graph = tf.Graph()
        with graph.as_default():
            sigs = build_graph(architecture, num_classes=num_classes, image_size=image_size,
                               input_size=input_size, signatures=signatures,
                               training="train" in tags, variable_factory=factory,
                               input_mapping=input_mapping)
            if missing:
                raise CheckpointError("checkpoint lacks %d variables the net needs: %s"
                                      % (len(missing), ", ".join(missing[:8])))
            meta_graph = tf.compat.v1.train.export_meta_graph(graph=graph, strip_default_attrs=True)
            meta_graph.meta_info_def.tags.extend(sorted(tags))
            for name in sorted(sigs):
                inputs, outputs = sigs[name]
                meta_graph.signature_def[name].CopyFrom(
                    tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
                        inputs={k: tf.compat.v1.saved_model.utils.build_tensor_info(v)
                                for k, v in inputs.items()},
                        outputs={k: tf.compat.v1.saved_model.utils.build_tensor_info(v)
                                 for k, v in outputs.items()}))
            meta_graph.collection_def[hub_protos.ATTACHMENT_COLLECTION].bytes_list.value[:] = [attachment]
            saved_model.meta_graphs.append(meta_graph)
            if not tags:
                _save_variables(graph, values, os.path.join(out_dir, "variables", "variables"))
    with open(os.path.join(out_dir, "saved_model.pb"), "wb") as f:
        f.write(saved_model.SerializeToString(deterministic=True))
    with open(os.path.join(out_dir, "tfhub_module.pb"), "wb") as f:
        f.write(hub_protos.module_def_bytes())


def _save_variables(graph, values, prefix):
    """Writes the graph's variables with their checkpoint values to a V2 checkpoint."""
    import tensorflow as tf

    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    with graph.as_default():
        variables = tf.compat.v1.global_variables()
        by_name = {v.op.name: v for v in variables}
        placeholders, assigns = {}, []
        for name, var in by_name.items():
            ph = tf.compat.v1.placeholder(tf.float32, var.shape)
            placeholders[ph] = values[name]
            assigns.append(var.assign(ph))
        saver = tf.compat.v1.train.Saver(by_name, sharded=True,
                                         write_version=tf.compat.v1.train.SaverDef.V2)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(assigns, feed_dict=placeholders)
            saver.save(sess, prefix, write_meta_graph=False, write_state=False)
