"""TFLite variants of TF2 modules: a ``.tflite`` flat buffer from a version 5 module.

Public entry points: :func:`write_tflite`, :func:`run` (a flat buffer in
TensorFlow's TFLite interpreter), :func:`module_outputs` and :func:`measure`
(a written flat buffer against its module). The flat buffer is converted with
TensorFlow's own ``tf.lite.TFLiteConverter`` from the module's
``serving_default`` signature (so it computes what the module computes, from
the same net and checkpoint values), at a fixed input shape: one image of
the module's default size, float32 RGB in [0, 1]
(``images: [1, S, S, 3]``); its single output is the module's (``logits``
[1, num_classes] or ``feature_vector`` [1, features]). Only TFLite's builtin
ops are allowed, so LiteRT's interpreter (``ai-edge-litert``) runs it without
the Flex delegate.

Quantizations (:data:`QUANTIZATIONS`):

* ``float32``: weights and compute in float32.
* ``dynamic_range``: weights stored as int8 with per-channel scales
  (``tf.lite.Optimize.DEFAULT`` without a representative dataset); activations
  stay float32, so inputs and outputs are float32 too. About 4x smaller, at an
  accuracy cost that tests measure (see tests/test_deploy_tflite.py).
"""

import os
import warnings

from hubexport.errors import BuildError, UsageError

QUANTIZATIONS = ("float32", "dynamic_range")
# The flat buffer's input name and its signature's name.
INPUT_NAME = "images"
SIGNATURE = "serving_default"


def write_tflite(module_dir, path, *, image_size, quantization="float32"):
    """Converts a version 5 module (TF2 SavedModel with serving_default) to a ``.tflite`` file.

    Args:
      module_dir: the module directory (str or Path).
      path: the ``.tflite`` file to write; written to a temporary name beside
        it, then renamed, so a failed conversion leaves nothing there.
      image_size: the input height and width S in pixels (the spec's
        image_size): the flat buffer takes float32 [1, S, S, 3] in [0, 1].
      quantization: one of :data:`QUANTIZATIONS`.

    Returns:
      int: the file's size in bytes.

    Raises:
      UsageError: an unknown quantization.
      BuildError: the module has no serving_default signature, the
        conversion fails, or the file cannot be written.
    """
    import tensorflow as tf

    if quantization not in QUANTIZATIONS:
        raise UsageError("quantization %r: use one of %s" % (quantization,
                                                              ", ".join(QUANTIZATIONS)))
    loaded = tf.saved_model.load(str(module_dir))
    if SIGNATURE not in loaded.signatures:
        raise BuildError("%s has no %s signature (a version 5 module has); cannot convert it "
                         "to TFLite" % (module_dir, SIGNATURE))
    serve = loaded.signatures[SIGNATURE]
    (input_key,) = serve.structured_input_signature[1]
    (output_key,) = serve.structured_outputs

    @tf.function(input_signature=[tf.TensorSpec([1, image_size, image_size, 3], tf.float32,
                                                name=INPUT_NAME)])
    def infer(images):
        return {output_key: serve(**{input_key: images})[output_key]}

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [infer.get_concrete_function()], loaded)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "dynamic_range":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        flat = converter.convert()
    except Exception as e:  # the converter raises ConverterError and others
        raise BuildError("cannot convert %s to TFLite (%s)" % (
            module_dir, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)) \
            from None
    tmp = "%s.tmp-%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(flat)
        os.replace(tmp, path)
    except OSError as e:
        raise BuildError("cannot write %s: %s; check free space and permissions"
                         % (path, e.strerror or e)) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return len(flat)


def write_variant_files(module_dir, path, target):
    """Writes a deploy target's ``.tflite`` (:func:`write_tflite`; for :mod:`hubexport.deploy`).

    Returns:
      ``{"input": {"name", "shape"}, "output": {"name", "shape"}}`` of the file.
    """
    spec, kind = target.parent.spec, target.parent.kind
    write_tflite(module_dir, path, image_size=spec.image_size, quantization=target.quantization)
    width = spec.num_classes if kind == "classification" else spec.feature_size
    return {"input": {"name": INPUT_NAME, "shape": [1, spec.image_size, spec.image_size, 3]},
            "output": {"name": "logits" if kind == "classification" else "feature_vector",
                       "shape": [1, width]}}


def run(path, images):
    """Runs a ``.tflite`` file on images, one per invocation, in TensorFlow's TFLite interpreter.

    The interpreter is ``tf.lite.Interpreter`` with TFLite's builtin kernels
    and no default delegate.

    Args:
      path: the ``.tflite`` file.
      images: float32 numpy array [n, S, S, 3], S the file's input size.

    Returns:
      (outputs, info): float64 numpy array [n, ...] of the single output;
      dict ``input`` and ``output`` (each ``{"name", "shape", "dtype"}``) and
      ``signatures`` (list of signature names).

    Raises:
      BuildError: the file is no flat buffer TFLite can load and run.
    """
    import numpy as np
    import tensorflow as tf

    resolver = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with warnings.catch_warnings():  # its deprecation in favour of ai-edge-litert
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(model_path=str(path),
                                              experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        info = {"signatures": sorted(interpreter.get_signature_list())}
        for key, details in (("input", inputs), ("output", outputs)):
            if len(details) != 1:
                raise ValueError("%d %ss, expected 1" % (len(details), key))
            info[key] = {"name": details[0]["name"], "shape": details[0]["shape"].tolist(),
                         "dtype": np.dtype(details[0]["dtype"]).name}
        got = []
        for image in images:
            interpreter.set_tensor(inputs[0]["index"], image[None].astype(np.float32))
            interpreter.invoke()
            got.append(interpreter.get_tensor(outputs[0]["index"])[0].astype(np.float64))
    except (ValueError, RuntimeError) as e:
        raise BuildError("cannot run %s in TFLite's interpreter (%s)" % (path, e)) from None
    return np.stack(got), info


def module_outputs(module_dir, images):
    """The module's ``serving_default`` outputs (float64 numpy array [n, ...]) on ``images``.

    Args:
      module_dir: a version 5 module (TF2 SavedModel with serving_default).
      images: float32 numpy array [n, S, S, 3] in [0, 1]; one call per image.
    """
    import numpy as np
    import tensorflow as tf

    serve = tf.saved_model.load(str(module_dir)).signatures[SIGNATURE]
    (input_key,) = serve.structured_input_signature[1]
    (output_key,) = serve.structured_outputs
    return np.stack([serve(**{input_key: tf.constant(image[None])})[output_key].numpy()[0]
                     for image in images]).astype(np.float64)


def measure(path, module_dir, images, want=None):
    """How far a ``.tflite`` file's outputs are from its module's ``serving_default``.

    The flat buffer runs as :func:`run` runs it, the module as
    :func:`module_outputs` runs it.

    Args:
      path: the ``.tflite`` file (from :func:`write_tflite`).
      module_dir: the module it was converted from.
      images: float32 numpy array [n, S, S, 3] in [0, 1], S the file's input size.
      want: the module's outputs on ``images`` if already computed, else None.

    Returns:
      dict of floats: ``max_abs_diff`` (the largest absolute difference of
      any output value), ``max_abs_output`` (the largest output magnitude of
      the module) and ``max_rel_diff`` (their ratio).

    Raises:
      BuildError: the flat buffer cannot be loaded or run.
    """
    from hubexport.deploy import difference

    got, _ = run(path, images)
    if want is None:
        want = module_outputs(module_dir, images)
    return difference(got, want)
