"""hub.Module checks of hubexport's v1/v3 modules in the legacy client.

Runs in the legacy venv (tensorflow-cpu 2.15.1 + tensorflow-hub 0.15.0, the
last client with ``hub.Module``), started by tests/test_legacy_hub_module.py.
It never imports hubexport: it sees the modules only as directories on disk,
as a consumer does, and reports what it observed; the pytest side judges.

Usage (with the legacy interpreter):
    python hub_module_checks.py PLAN.json

PLAN.json:
  ``images``   an .npz with ``images`` float32 [2, S, S, 3] in [0, 1]
               (S = the default size) and ``images_other`` float32
               [1, H, W, 3] (another size, for version 3);
  ``work_dir`` a directory for the exports written here;
  ``report``   where to write the JSON report;
  ``outputs``  where to write an .npz of the computed outputs;
  ``architecture``  the net, e.g. "inception_v2" or "resnet_v2_50";
  ``batch_norm_decay``  TF-Slim's batch norm decay for that net (its arg
               scope: 0.9997 for the Inception nets, 0.997 for the ResNets),
               the momentum version 1's train graph must use;
  ``weight_decay``  TF-Slim's L2 weight decay for that net (4e-5 Inception,
               1e-4 ResNet);
  ``tf_slim_net`` (optional) the name of tf_slim 1.1.0's net function of the
               same architecture (``tf_slim.nets.<module>.<name>``), whose
               regularized variables are reported;
  ``modules``  a list of {"key", "path", "kind", "version", "bn_hparams",
               "variable_size"}; key is "<architecture>/<kind>/<version>";
               ``bn_hparams`` (the *_with_bn_hparams signatures) and
               ``variable_size`` (``images_other`` runs too) default to
               ``version == 3``, as for every model but MobileNet V2;
  ``delete_exports`` (optional) remove each module's exports once compared;
  ``checks``   (optional) the checks to run: a subset of "spec", "inference",
               "reexport", "finetune", "compare" (default: all).

For every module the report holds, under ``modules[key]``:
  ``spec``      ModuleSpec view (both tag sets): tags, signature names,
                input/output dtypes and shapes, the ``image_module_info``
                attachment;
  ``inference`` ``hub.Module(path)``: signature names, info dicts,
                ``hub.get_expected_image_size``; output names written to
                the outputs .npz (``<key>|<signature>|<images>``, images
                = ``images`` or ``images_other``);
  ``reexport``  ``module.export(dir, session)`` of that module, loaded again
                with ``hub.Module`` (outputs ``<key>|reexport|images``);
  ``finetune``  ``hub.Module(path, trainable=True, tags={"train"})`` as the
                cards show: batch norm update arithmetic on one moving mean
                and variance (batch statistics recomputed with numpy from
                the batch norm's input tensor), optimizer steps, changed
                variables, the REGULARIZATION_LOSSES collection and its
                values recomputed with numpy;
  ``compare``   differences between hubexport's files and (a) the
                re-export (checkpoint included), (b) what tensorflow-hub
                0.15's own exporter (``hub.create_module_spec(module_fn)``)
                writes for the same graphs (without variables, see
                :func:`hub_exporter_export`), as lists of {"code", "detail"};
  ``errors``    check name -> traceback of any check that raised;
  ``seconds``   check name -> wall time.
Top level: ``tf_slim_regularized`` (when the plan names ``tf_slim_net``): the
variables tf_slim's own net under its own arg scope regularizes.

Sessions of the output check use TensorFlow's default configuration (what a
consumer gets); the training and re-export sessions turn graph rewriting
(grappler) off, which only saves time (the same ops run, in float32).
"""

import json
import os
import resource
import shutil
import sys
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_hub as hub  # noqa: E402
from tensorflow_hub import image_module_info_pb2, module_attachment_pb2, module_def_pb2  # noqa: E402
from tensorflow_hub import native_module  # noqa: E402

from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2  # noqa: E402
from tensorflow.python.framework import meta_graph as meta_graph_lib  # noqa: E402

ATTACHMENTS = "hub_module_attachments"
UPDATE_OPS = tf.compat.v1.GraphKeys.UPDATE_OPS
REGULARIZATION_LOSSES = tf.compat.v1.GraphKeys.REGULARIZATION_LOSSES
# The cards' fine-tuning example and the v3 default; TF-Slim's own decay and
# weight decay of the net come with the plan (batch_norm_decay, weight_decay).
CARD_MOMENTUM = 0.997
V3_DEFAULT_MOMENTUM = 0.99
SLIM = {"batch_norm_decay": None, "weight_decay": None}
STATE_OPS = ("VarHandleOp", "VariableV2", "Variable")
BN_OPS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")


def fast_config():
    """Session config without grappler's graph rewriting (saves minutes on big graphs)."""
    config = tf.compat.v1.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    return config


def info_dict(infos):
    """{name: ParsedTensorInfo} -> {name: {"dtype", "shape"}} (shape None if unknown rank)."""
    out = {}
    for name, info in sorted(infos.items()):
        shape = info.get_shape()
        out[name] = {"dtype": info.dtype.name,
                     "shape": None if shape.rank is None else shape.as_list(),
                     "is_sparse": bool(info.is_sparse)}
    return out


def image_module_info(obj, **kwargs):
    msg = obj.get_attached_message("image_module_info", image_module_info_pb2.ImageModuleInfo,
                                   **kwargs)
    if msg is None:
        return None
    return [msg.default_image_size.height, msg.default_image_size.width]


# --------------------------------------------------------------------------
# The checks. Each returns a JSON-able dict; outputs go to OUTPUTS.

OUTPUTS = {}


def check_spec(mod):
    spec = hub.load_module_spec(mod["path"])
    result = {"tags": sorted(sorted(t) for t in spec.get_tags()), "by_tags": {}}
    for tags in spec.get_tags():
        names = sorted(spec.get_signature_names(tags=tags))
        result["by_tags"][",".join(sorted(tags))] = {
            "signatures": names,
            "inputs": {s: info_dict(spec.get_input_info_dict(s, tags=tags)) for s in names},
            "outputs": {s: info_dict(spec.get_output_info_dict(s, tags=tags)) for s in names},
            "image_module_info": image_module_info(spec, tags=tags),
        }
    return result


def check_inference(mod, batches, work_dir):
    """hub.Module(path) as the cards' usage shows; outputs; module.export(...)."""
    key = mod["key"]
    result = {}
    start = time.time()
    with tf.Graph().as_default():
        module = hub.Module(mod["path"])
        result["signatures"] = sorted(module.get_signature_names())
        result["inputs"] = {s: info_dict(module.get_input_info_dict(s))
                            for s in result["signatures"]}
        result["outputs"] = {s: info_dict(module.get_output_info_dict(s))
                             for s in result["signatures"]}
        result["expected_image_size"] = [int(d) for d in hub.get_expected_image_size(module)]
        result["image_module_info"] = image_module_info(module)
        result["variable_map_size"] = len(module.variable_map)
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="images")
        fetches = {"default": module(images)}  # the cards: logits = module(images)
        names = ["image_feature_vector"]
        if mod["kind"] == "classification":
            names.append("image_classification")
        for name in names:
            fetches[name] = module(images, signature=name)
        # v1 fixed size: the input's static shape must be exactly the documented one.
        result["graph_seconds"] = round(time.time() - start, 2)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            result["init_seconds"] = round(time.time() - start, 2)
            for batch_name, batch in batches.items():
                if batch_name != "images" and not mod.get("variable_size", mod["version"] == 3):
                    continue
                values = sess.run(fetches, {images: batch})
                for sig, value in values.items():
                    OUTPUTS["%s|%s|%s" % (key, sig, batch_name)] = value
            result["run_seconds"] = round(time.time() - start, 2)
            out_dir = os.path.join(work_dir, "reexport", key.replace("/", "_"))
            module.export(out_dir, sess)
            result["reexport_dir"] = out_dir
    result["output_keys"] = sorted(k for k in OUTPUTS if k.startswith(key + "|"))
    return result


def check_reexport(mod, batches, out_dir):
    """The re-export loads in hub.Module and computes the same outputs."""
    with tf.Graph().as_default():
        module = hub.Module(out_dir)
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        logits = module(images)
        with tf.compat.v1.Session(config=fast_config()) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            OUTPUTS["%s|reexport|images" % mod["key"]] = sess.run(logits, {images: batches["images"]})
        return {"signatures": sorted(module.get_signature_names()),
                "tags": sorted(sorted(t) for t in hub.load_module_spec(out_dir).get_tags()),
                "expected_image_size": [int(d) for d in hub.get_expected_image_size(module)]}


def _variable_of(tensor):
    """The name of the variable a (regularization) tensor is computed from."""
    seen, stack = set(), [tensor.op]
    found = set()
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        if op.type in STATE_OPS:
            found.add(op.name)
            continue
        stack.extend(t.op for t in op.inputs)
    return sorted(found)


def _batch_norm_probe(graph, apply_scope, variable_name):
    """The FusedBatchNorm op of ``variable_name``'s batch norm in an apply scope."""
    bn_scope = variable_name.split("/", 1)[1].rsplit("/", 1)[0]  # strip "module/", "/moving_mean"
    candidates = [op for op in graph.get_operations()
                  if op.type in BN_OPS and op.name.startswith(apply_scope + bn_scope + "/")]
    if len(candidates) != 1:
        raise RuntimeError("expected one batch norm op under %s%s, found %s"
                           % (apply_scope, bn_scope, [op.name for op in candidates]))
    return candidates[0]


def momentum_arithmetic(old_mean, old_var, x, new_mean, new_var, momentum):
    """Checks new = m * old + (1 - m) * batch statistic for one batch norm.

    Args:
      old_mean, old_var: the moving statistics before the run, float32 [C].
      x: the batch norm's input in that run, float32 [N, H, W, C].
      new_mean, new_var: the moving statistics after the run.
      momentum: the momentum the caller asked for.

    The batch statistics are recomputed here with numpy in float64: the mean
    over N, H, W and the Bessel-corrected variance (what TF-Slim's fused
    batch norm feeds its moving variance).
    """
    x = x.astype(np.float64)
    n = x.shape[0] * x.shape[1] * x.shape[2]
    batch_mean = x.mean(axis=(0, 1, 2))
    batch_var = x.var(axis=(0, 1, 2)) * n / (n - 1)

    def err(old, new, batch, m):
        expected = m * old.astype(np.float64) + (1 - m) * batch
        return float(np.max(np.abs(new - expected)))

    valid = np.abs(batch_mean - old_mean) > 1e-3 * (1 + np.abs(old_mean))
    implied = (new_mean - batch_mean)[valid] / (old_mean - batch_mean)[valid]
    others = sorted({V3_DEFAULT_MOMENTUM, CARD_MOMENTUM, SLIM["batch_norm_decay"], 0.9997, 0.9,
                     0.999} - {momentum})
    return {
        "batch_norm_input_shape": list(x.shape),
        "momentum": momentum,
        "mean_error": err(old_mean, new_mean, batch_mean, momentum),
        "variance_error": err(old_var, new_var, batch_var, momentum),
        "mean_scale": float(np.max(np.abs(np.concatenate([old_mean, batch_mean])))),
        "variance_scale": float(np.max(np.abs(np.concatenate([old_var, batch_var])))),
        "mean_error_other_momenta": {str(m): err(old_mean, new_mean, batch_mean, m) for m in others},
        "implied_momentum_median": float(np.median(implied)) if implied.size else None,
        "channels": int(old_mean.size),
        "mean_changed": bool(np.any(new_mean != old_mean)),
    }


def check_finetune(mod, batches, default_momentum_check):
    """Fine-tuning as the cards show, on a batch of 2 images, 3 optimizer steps.

    The train op depends on the signature's UPDATE_OPS (the usual TF1 recipe).
    The first step also fetches the input of the net's first batch norm, so
    its moving mean and variance before and after that step check the update
    arithmetic. With ``default_momentum_check`` (version 3), the default
    signature is applied too, and one run of its update ops checks its
    default momentum 0.99.
    """
    version, kind = mod["version"], mod["kind"]
    result = {}
    phases, t0 = {}, [time.time()]

    def phase(name):
        phases[name] = round(time.time() - t0[0], 2)
        t0[0] = time.time()

    result["phases"] = phases
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(0)
        module = hub.Module(mod["path"], trainable=True, tags={"train"})
        result["signatures"] = sorted(module.get_signature_names())
        images = tf.constant(batches["images"])
        if mod.get("bn_hparams", version == 3):
            signature = ("image_classification" if kind == "classification"
                         else "image_feature_vector") + "_with_bn_hparams"
            output = module(inputs=dict(images=images, batch_norm_momentum=CARD_MOMENTUM),
                            signature=signature)
            momentum = CARD_MOMENTUM
        else:
            signature = "default"
            output = module(images)
            momentum = SLIM["batch_norm_decay"]
        main_scope = "module_apply_%s/" % signature
        result["signature"], result["momentum"] = signature, momentum
        if kind == "classification":
            logits = output
        else:  # a new classification head on the features, as in transfer learning
            # (plain variables: tf.compat.v1.layers needs a Keras path TF 2.15 lacks)
            kernel = tf.compat.v1.get_variable(
                "new_head/kernel", [int(output.shape[-1]), 3],
                initializer=tf.compat.v1.glorot_uniform_initializer(seed=0))
            bias = tf.compat.v1.get_variable("new_head/bias", [3],
                                             initializer=tf.compat.v1.zeros_initializer())
            logits = tf.matmul(output, kernel) + bias
        labels = tf.constant([1, 2], tf.int64)
        tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
        total_loss = tf.compat.v1.losses.get_total_loss()  # LOSSES + REGULARIZATION_LOSSES
        default_scope = None
        if default_momentum_check:  # the default signature of the train graph: momentum 0.99
            module(images)
            default_scope = "module_apply_default/"

        all_updates = tf.compat.v1.get_collection(UPDATE_OPS)
        main_updates = [u for u in all_updates if u.name.startswith(main_scope)]
        default_updates = [u for u in all_updates
                           if default_scope and u.name.startswith(default_scope)]
        result["update_ops"] = len(main_updates)
        result["update_ops_total"] = len(all_updates)
        module_vars = [v for v in tf.compat.v1.global_variables() if v.op.name.startswith("module/")]
        trainable = [v for v in tf.compat.v1.trainable_variables() if v.op.name.startswith("module/")]
        moving = [v for v in module_vars if v.op.name.endswith(("moving_mean", "moving_variance"))]
        result["module_variables"] = len(module_vars)
        result["module_trainable_variables"] = len(trainable)
        result["moving_statistics"] = len(moving)
        regs = tf.compat.v1.get_collection(REGULARIZATION_LOSSES)
        reg_vars = [_variable_of(r) for r in regs]
        result["regularization_losses"] = len(regs)
        result["regularized_variables"] = sorted(
            v[0][len("module/"):] for v in reg_vars if len(v) == 1 and v[0].startswith("module/"))
        result["regularization_losses_not_one_module_variable"] = [
            r.name for r, v in zip(regs, reg_vars) if len(v) != 1 or not v[0].startswith("module/")]
        by_name = {v.op.name: v for v in module_vars}
        # The net's first batch norm (the module's first moving mean).
        first_mean = next(v for v in module_vars if v.op.name.endswith("moving_mean"))
        first_var = by_name[first_mean.op.name[:-len("moving_mean")] + "moving_variance"]
        result["momentum_variable"] = first_mean.op.name
        probe = _batch_norm_probe(graph, main_scope, first_mean.op.name)
        result["batch_norm_op"] = probe.name
        phase("graph")

        optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.01)
        with tf.control_dependencies(main_updates):
            train_op = optimizer.minimize(total_loss)
        phase("gradients")

        with tf.compat.v1.Session(config=fast_config()) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            phase("init")
            state = {"regs": regs, "trainable": {v.op.name: v for v in trainable},
                     "moving": {v.op.name: v for v in moving}}
            first = sess.run(state)
            before, before_moving = first["trainable"], first["moving"]
            # Regularization arithmetic: each term is weight_decay * sum(w**2) / 2
            # (slim.l2_regularizer).
            decay = SLIM["weight_decay"]
            errors, coeffs = [], []
            for value, names in zip(first["regs"], reg_vars):
                if len(names) != 1 or names[0] not in before:
                    continue
                w = before[names[0]].astype(np.float64)
                l2 = float(np.sum(w * w) / 2)
                coeffs.append(float(value) / l2 if l2 else None)
                errors.append(abs(float(value) - decay * l2) / max(decay * l2, 1e-30))
            result["regularization_terms_checked"] = len(errors)
            result["regularization_max_relative_error"] = max(errors) if errors else None
            result["regularization_coefficients"] = sorted({round(c, 9) for c in coeffs if c})
            phase("before")
            losses = []
            for step in range(3):  # the same fetches each step: one executor
                _, loss, x = sess.run([train_op, total_loss, probe.inputs[0]])
                if step == 0:
                    new_mean, new_var = sess.run([first_mean, first_var])
                    result["momentum_check"] = momentum_arithmetic(
                        before_moving[first_mean.op.name], before_moving[first_var.op.name],
                        x, new_mean, new_var, momentum)
                losses.append(float(loss))
                phase("step_%d" % step)
            result["losses"] = losses
            if default_scope:
                default_probe = _batch_norm_probe(graph, default_scope, first_mean.op.name)
                old_mean, old_var = sess.run([first_mean, first_var])
                x, _ = sess.run([default_probe.inputs[0], default_updates])
                new_mean, new_var = sess.run([first_mean, first_var])
                result["default_momentum_check"] = momentum_arithmetic(
                    old_mean, old_var, x, new_mean, new_var, V3_DEFAULT_MOMENTUM)
                result["default_update_ops"] = len(default_updates)
                phase("default_momentum")
            last = sess.run(state)
            after, after_moving = last["trainable"], last["moving"]
        changed = [n for n in before if not np.array_equal(before[n], after[n])]
        result["trainable_changed"] = len(changed)
        result["trainable_unchanged"] = sorted(set(before) - set(changed))[:20]
        result["trainable_max_change"] = max(
            (float(np.max(np.abs(after[n] - before[n]))) for n in before), default=0.0)
        result["trainable_finite"] = all(bool(np.all(np.isfinite(v))) for v in after.values())
        moved = [n for n in before_moving if not np.array_equal(before_moving[n], after_moving[n])]
        result["moving_changed"] = len(moved)
    phase("after")
    return result


def _patch_tf215_batch_norm():
    """Points TF 2.15.1's lazy Keras import for tf_slim's batch_norm at Keras 2.15's layer.

    TF 2.15.1's tensorflow/python/layers/normalization.py imports
    ``tf_keras.legacy_tf_layers.normalization``, a path no tf-keras release has.
    """
    from tensorflow.python.layers import normalization as tf_layers_normalization

    try:
        import tf_keras.legacy_tf_layers.normalization  # noqa: F401
    except ImportError:
        from keras.src.legacy_tf_layers import normalization as keras_normalization
        tf_layers_normalization.normalization = keras_normalization


def tf_slim_regularized(net_name, image_size, num_classes):
    """The variables tf_slim's own net ``net_name`` regularizes under its own arg scope.

    ``net_name`` is ``inception_v1/v2/v3`` (tf_slim.nets.inception,
    ``<name>_arg_scope()``) or ``resnet_v1_N`` / ``resnet_v2_N``
    (tf_slim.nets.resnet_v1 / resnet_v2, ``resnet_arg_scope()``), built in
    training mode on [1, image_size, image_size, 3].
    """
    import tf_slim
    from tf_slim.nets import inception, resnet_v1, resnet_v2

    _patch_tf215_batch_norm()
    if net_name.startswith("inception"):
        net_fn = getattr(inception, net_name)
        arg_scope = getattr(inception, net_name + "_arg_scope")()
    else:
        module = resnet_v1 if net_name.startswith("resnet_v1") else resnet_v2
        net_fn, arg_scope = getattr(module, net_name), module.resnet_arg_scope()
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, image_size, image_size, 3])
        with tf_slim.arg_scope(arg_scope):
            net_fn(images, num_classes=num_classes, is_training=True)
        names = []
        for loss in tf.compat.v1.get_collection(REGULARIZATION_LOSSES):
            (name,) = _variable_of(loss)
            names.append(name)
    return sorted(name for name in names if "/AuxLogits/" not in name)


# --------------------------------------------------------------------------
# tensorflow-hub 0.15's own exporter on the same graph.

def hub_exporter_export(path, out_dir):
    """Writes, with tensorflow-hub's exporter, the graphs of the module at ``path``.

    ``hub.create_module_spec(module_fn, tags_and_args)``: ``module_fn``
    recreates each graph variant of hubexport's module exactly
    (``import_scoped_meta_graph`` of its MetaGraphDef: same nodes, variables
    and collections), then declares its signatures with ``hub.add_signature``
    and its attachments with ``hub.attach_message``, as a module author using
    tensorflow-hub would. The spec is written by ``_ModuleSpec._export``, the
    function both ``ModuleSpec.export`` and ``Module.export`` end in, without
    a variables saver: the variables hub's exporter writes are those of
    ``Module.export`` (the re-export check), and skipping them here saves
    instantiating and saving the module a third time (220 MB for
    Inception-ResNet-V2).

    Returns:
      list of the warnings hub.add_signature would log (multi-output inputs).
    """
    proto = saved_model_pb2.SavedModel.FromString(
        open(os.path.join(path, "saved_model.pb"), "rb").read())
    variants = [(frozenset(m.meta_info_def.tags), m) for m in proto.meta_graphs]
    warnings = []

    def module_fn(meta_graph):
        meta = meta_graph_pb2.MetaGraphDef()
        meta.CopyFrom(meta_graph)
        attached = dict(
            (a.key, a.value) for a in (
                module_attachment_pb2.ModuleAttachment.FromString(b)
                for b in meta.collection_def[ATTACHMENTS].bytes_list.value))
        del meta.collection_def[ATTACHMENTS]
        signatures = {name: meta.signature_def[name] for name in meta.signature_def}
        meta.ClearField("signature_def")
        meta_graph_lib.import_scoped_meta_graph(meta)
        graph = tf.compat.v1.get_default_graph()
        for name in sorted(signatures):
            sig = signatures[name]
            inputs = {k: graph.get_tensor_by_name(v.name) for k, v in sig.inputs.items()}
            outputs = {k: graph.get_tensor_by_name(v.name) for k, v in sig.outputs.items()}
            message = native_module.find_signature_inputs_from_multivalued_ops(inputs)
            if message:
                warnings.append("%s: %s" % (name, message))
            hub.add_signature(name, inputs=inputs, outputs=outputs)
        for key, value in attached.items():
            if key == "image_module_info":
                hub.attach_message(key, image_module_info_pb2.ImageModuleInfo.FromString(value))
            else:
                raise ValueError("unknown attachment %r" % key)

    spec = hub.create_module_spec(
        module_fn, tags_and_args=[(set(tags), {"meta_graph": m}) for tags, m in variants])
    spec._export(out_dir, variables_saver=None)  # pylint: disable=protected-access
    return warnings


def _files(root):
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            out.add(os.path.normpath(os.path.join(rel, d)) + "/")
        for f in filenames:
            out.add(os.path.normpath(os.path.join(rel, f)))
    return out


def _shape(tensor_shape):
    return None if tensor_shape.unknown_rank else [d.size for d in tensor_shape.dim]


def _tensor_info(info):
    return {"name": info.name, "dtype": info.dtype, "shape": _shape(info.tensor_shape),
            "encoding": info.WhichOneof("encoding")}


def compare_modules(ours, theirs, variables=True):
    """Differences a consumer could see between two TF1 Hub module directories.

    Args:
      ours: hubexport's module directory.
      theirs: the other module directory.
      variables: compare the checkpoints too (else ``theirs`` has none and
        ``variables/`` is left out of the file comparison).

    Returns:
      list of {"code": str, "detail": str}; codes name the aspect (see README,
      "TF1 Hub format: differences from tensorflow-hub 0.15's exporter").
    """
    diffs = []

    def diff(code, detail):
        diffs.append({"code": code, "detail": detail[:2000]})

    fa, fb = _files(ours), _files(theirs)
    if not variables:
        fa = {f for f in fa if not f.startswith("variables/")}
    if fa != fb:
        diff("files", "only in hubexport's: %s; only in the other: %s"
             % (sorted(fa - fb), sorted(fb - fa)))
    mod_a, mod_b = (module_def_pb2.ModuleDef.FromString(
        open(os.path.join(p, "tfhub_module.pb"), "rb").read()) for p in (ours, theirs))
    if mod_a != mod_b:
        diff("module_def", "%s vs %s" % (mod_a, mod_b))
    sm_a, sm_b = (saved_model_pb2.SavedModel.FromString(
        open(os.path.join(p, "saved_model.pb"), "rb").read()) for p in (ours, theirs))
    if sm_a.saved_model_schema_version != sm_b.saved_model_schema_version:
        diff("saved_model_schema_version", "%d vs %d" % (
            sm_a.saved_model_schema_version, sm_b.saved_model_schema_version))
    tags_a = [list(m.meta_info_def.tags) for m in sm_a.meta_graphs]
    tags_b = [list(m.meta_info_def.tags) for m in sm_b.meta_graphs]
    if sorted(map(sorted, tags_a)) != sorted(map(sorted, tags_b)):
        diff("meta_graph_tags", "%s vs %s" % (tags_a, tags_b))
    elif tags_a != tags_b:
        diff("meta_graph_order", "%s vs %s" % (tags_a, tags_b))
    by_b = {frozenset(m.meta_info_def.tags): m for m in sm_b.meta_graphs}
    for ma in sm_a.meta_graphs:
        tags = frozenset(ma.meta_info_def.tags)
        mb = by_b.get(tags)
        if mb is None:
            continue
        where = "tags %s: " % sorted(tags)
        _compare_meta_graphs(ma, mb, lambda c, d: diff(c, where + d))
    if variables:
        _compare_checkpoints(ours, theirs, diff)
    return diffs


def _compare_meta_graphs(ma, mb, diff):
    ia, ib = ma.meta_info_def, mb.meta_info_def
    for field in ("meta_graph_version", "tensorflow_version", "tensorflow_git_version"):
        if getattr(ia, field) != getattr(ib, field):
            diff("meta_info_def." + field, "%r vs %r" % (getattr(ia, field), getattr(ib, field)))
    for field in ("any_info", "function_aliases"):
        if getattr(ia, field) != getattr(ib, field):
            diff("meta_info_def." + field, "differs")
    ops_a = {op.name: op for op in ia.stripped_op_list.op}
    ops_b = {op.name: op for op in ib.stripped_op_list.op}
    if set(ops_a) != set(ops_b):
        diff("stripped_op_list.ops", "only hubexport's: %s; only the other: %s"
             % (sorted(set(ops_a) - set(ops_b)), sorted(set(ops_b) - set(ops_a))))
    changed = sorted(n for n in set(ops_a) & set(ops_b) if ops_a[n] != ops_b[n])
    if changed:
        diff("stripped_op_list.op_defs", "OpDefs differ for %s" % changed)
    if ma.HasField("saver_def") != mb.HasField("saver_def") or ma.saver_def != mb.saver_def:
        diff("saver_def", "%s vs %s" % (ma.HasField("saver_def"), mb.HasField("saver_def")))
    if ma.HasField("object_graph_def") or mb.HasField("object_graph_def"):
        diff("object_graph_def", "present: %s vs %s"
             % (ma.HasField("object_graph_def"), mb.HasField("object_graph_def")))
    if list(ma.asset_file_def) != list(mb.asset_file_def):
        diff("asset_file_def", "differs")
    # The graph.
    ga, gb = ma.graph_def, mb.graph_def
    if ga.versions != gb.versions:
        diff("graph_def.versions", "producer %d min_consumer %d vs producer %d min_consumer %d"
             % (ga.versions.producer, ga.versions.min_consumer,
                gb.versions.producer, gb.versions.min_consumer))
    if ga.library != gb.library:
        diff("graph_def.library", "%d vs %d functions" % (len(ga.library.function),
                                                         len(gb.library.function)))
    na = {n.name: n for n in ga.node}
    nb = {n.name: n for n in gb.node}
    if set(na) != set(nb):
        diff("graph_def.nodes", "%d vs %d nodes; only hubexport's: %s; only the other: %s"
             % (len(na), len(nb), sorted(set(na) - set(nb))[:10], sorted(set(nb) - set(na))[:10]))
    if [n.name for n in ga.node if n.name in nb] != [n.name for n in gb.node if n.name in na]:
        diff("graph_def.node_order", "nodes in another order")
    bad_op, bad_inputs, bad_device, attr_diffs = [], [], [], {}
    for name in sorted(set(na) & set(nb)):
        a, b = na[name], nb[name]
        if a.op != b.op:
            bad_op.append("%s: %s vs %s" % (name, a.op, b.op))
        if list(a.input) != list(b.input):
            bad_inputs.append(name)
        if a.device != b.device:
            bad_device.append(name)
        for attr in set(a.attr) | set(b.attr):
            if attr not in a.attr or attr not in b.attr or a.attr[attr] != b.attr[attr]:
                what = ("only hubexport's" if attr not in b.attr else
                        "only the other's" if attr not in a.attr else "values differ")
                attr_diffs.setdefault((a.op, attr, what), []).append(name)
    if bad_op:
        diff("graph_def.node_ops", "; ".join(bad_op[:10]))
    if bad_inputs:
        diff("graph_def.node_inputs", "%d nodes, e.g. %s" % (len(bad_inputs), bad_inputs[:5]))
    if bad_device:
        diff("graph_def.node_devices", "%d nodes, e.g. %s" % (len(bad_device), bad_device[:5]))
    for (op, attr, what), names in sorted(attr_diffs.items()):
        diff("graph_def.node_attrs", "op %s attr %s (%s) on %d nodes, e.g. %s"
             % (op, attr, what, len(names), names[0]))
    # Collections.
    ca, cb = ma.collection_def, mb.collection_def
    if set(ca) != set(cb):
        diff("collection_keys", "%s vs %s" % (sorted(ca), sorted(cb)))
    for key in sorted(set(ca) & set(cb)):
        kind_a, kind_b = ca[key].WhichOneof("kind"), cb[key].WhichOneof("kind")
        if kind_a != kind_b:
            diff("collection_kinds", "%s: %s vs %s" % (key, kind_a, kind_b))
            continue
        if key == ATTACHMENTS:
            att = [sorted((x.key, x.value) for x in (
                module_attachment_pb2.ModuleAttachment.FromString(v)
                for v in c[key].bytes_list.value)) for c in (ca, cb)]
            if att[0] != att[1]:
                diff("attachments", "%s vs %s" % (att[0], att[1]))
            if list(ca[key].bytes_list.value) != list(cb[key].bytes_list.value):
                diff("attachment_bytes", "serialized attachments differ")
            continue
        va, vb = list(getattr(ca[key], kind_a).value), list(getattr(cb[key], kind_b).value)
        if va != vb:
            if key in (tf.compat.v1.GraphKeys.GLOBAL_VARIABLES,
                       tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES,
                       tf.compat.v1.GraphKeys.MODEL_VARIABLES):
                from tensorflow.core.framework import variable_pb2
                pa = [variable_pb2.VariableDef.FromString(v) for v in va]
                pb = [variable_pb2.VariableDef.FromString(v) for v in vb]
                if pa != pb:
                    diff("collection_values", "%s: VariableDefs differ, e.g. %s vs %s" % (
                        key, next((str(x) for x, y in zip(pa, pb) if x != y), len(pa)),
                        next((str(y) for x, y in zip(pa, pb) if x != y), len(pb))))
                else:
                    diff("collection_bytes", "%s: same VariableDefs, other bytes" % key)
            elif sorted(va) == sorted(vb):
                diff("collection_order", "%s: same values in another order" % key)
            else:
                diff("collection_values", "%s: %d vs %d values" % (key, len(va), len(vb)))
    # Signatures.
    sa, sb = ma.signature_def, mb.signature_def
    if set(sa) != set(sb):
        diff("signature_names", "%s vs %s" % (sorted(sa), sorted(sb)))
    for name in sorted(set(sa) & set(sb)):
        a, b = sa[name], sb[name]
        for part in ("inputs", "outputs"):
            ta = {k: _tensor_info(v) for k, v in getattr(a, part).items()}
            tb = {k: _tensor_info(v) for k, v in getattr(b, part).items()}
            if ta != tb:
                diff("signature_" + part, "%s: %s vs %s" % (
                    name, {k: v for k, v in ta.items() if tb.get(k) != v},
                    {k: v for k, v in tb.items() if ta.get(k) != v}))
        if a.method_name != b.method_name:
            diff("signature_method_name", "%s: %r vs %r" % (name, a.method_name, b.method_name))
        if a != b and all(getattr(a, p) == getattr(b, p) for p in ("inputs", "outputs", "method_name")):
            diff("signature_other_fields", name)


def _compare_checkpoints(ours, theirs, diff):
    ra, rb = (tf.train.load_checkpoint(os.path.join(p, "variables", "variables"))
              for p in (ours, theirs))
    sa, sb = ra.get_variable_to_shape_map(), rb.get_variable_to_shape_map()
    da, db = ra.get_variable_to_dtype_map(), rb.get_variable_to_dtype_map()
    if set(sa) != set(sb):
        diff("checkpoint_variables", "%d vs %d; only hubexport's: %s; only the other: %s"
             % (len(sa), len(sb), sorted(set(sa) - set(sb))[:10], sorted(set(sb) - set(sa))[:10]))
    common = sorted(set(sa) & set(sb))
    bad_shape = [n for n in common if sa[n] != sb[n] or da[n] != db[n]]
    if bad_shape:
        diff("checkpoint_shapes", "shape or dtype differs for %s" % bad_shape[:10])
    bad_values = [n for n in common if n not in bad_shape
                  and not np.array_equal(ra.get_tensor(n), rb.get_tensor(n))]
    if bad_values:
        diff("checkpoint_values", "values differ for %d variables, e.g. %s"
             % (len(bad_values), bad_values[:5]))


def check_compare(mod, reexport_dir, work_dir):
    out_dir = os.path.join(work_dir, "hub_exporter", mod["key"].replace("/", "_"))
    start = time.time()
    result = {"hub_exporter_dir": out_dir,
              "hub_exporter_warnings": hub_exporter_export(mod["path"], out_dir)}
    result["export_seconds"] = round(time.time() - start, 2)
    result["vs_hub_exporter"] = compare_modules(mod["path"], out_dir, variables=False)
    result["vs_reexport"] = compare_modules(mod["path"], reexport_dir) if reexport_dir else None
    return result


# --------------------------------------------------------------------------

def run_check(record, name, fn, *args):
    start = time.time()
    try:
        record[name] = fn(*args)
        return record[name]
    except Exception:  # noqa: BLE001 -- reported to the pytest side, which fails on it
        record.setdefault("errors", {})[name] = traceback.format_exc()[-6000:]
        return None
    finally:
        record.setdefault("seconds", {})[name] = round(time.time() - start, 2)
        print("%-45s %-10s %6.1f s" % (record.get("key", ""), name, time.time() - start),
              file=sys.stderr, flush=True)


def main(plan_path):
    with open(plan_path) as f:
        plan = json.load(f)
    tf.compat.v1.disable_eager_execution()
    with np.load(plan["images"]) as data:
        batches = {k: data[k] for k in data.files}
    report = {"tensorflow": tf.__version__, "tensorflow_hub": hub.__version__,
              "architecture": plan["architecture"], "modules": {}}
    start = time.time()
    SLIM.update(batch_norm_decay=plan["batch_norm_decay"], weight_decay=plan["weight_decay"])
    if plan.get("tf_slim_net"):
        run_check(report, "tf_slim_regularized", tf_slim_regularized, plan["tf_slim_net"],
                  plan["image_size"], plan["num_classes"])
    checks = set(plan.get("checks") or ("spec", "inference", "reexport", "finetune", "compare"))
    for mod in plan["modules"]:
        record = report["modules"][mod["key"]] = {"key": mod["key"]}
        run_check(record, "spec", check_spec, mod)
        inference = run_check(record, "inference", check_inference, mod, batches, plan["work_dir"])
        reexport_dir = inference and inference.get("reexport_dir")
        if reexport_dir and "reexport" in checks:
            run_check(record, "reexport", check_reexport, mod, batches, reexport_dir)
        if "finetune" in checks:
            run_check(record, "finetune", check_finetune, mod, batches,
                      mod.get("bn_hparams", mod["version"] == 3)
                      and mod["kind"] == "classification")
        compare = None
        if "compare" in checks:
            compare = run_check(record, "compare", check_compare, mod, reexport_dir,
                                plan["work_dir"])
        if plan.get("delete_exports"):  # the big IRv2 exports are no longer needed
            for path in (reexport_dir, compare and compare.get("hub_exporter_dir")):
                if path:
                    shutil.rmtree(path, ignore_errors=True)
    report["seconds"] = round(time.time() - start, 1)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 1)
    report["max_rss_mb"] = round(usage.ru_maxrss / 1024)  # Linux: kilobytes
    np.savez(plan["outputs"], **{k: np.asarray(v) for k, v in OUTPUTS.items()})
    tmp = plan["report"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    os.replace(tmp, plan["report"])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: hub_module_checks.py PLAN.json")
    main(sys.argv[1])
