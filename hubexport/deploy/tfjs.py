"""TF.js variants of TF1 Hub format modules: a graph model (``model.json`` + weight shards).

Public entry points: :func:`write_tfjs`, :func:`read_graph_model` (the
files back into a runnable TensorFlow graph) and :func:`measure` (a written
graph model against its module). TensorFlow.js's official converter
(``tensorflowjs`` on PyPI) cannot be installed beside TensorFlow 2.21 (it
pins tensorflow-decision-forests, which pins TensorFlow 2.19), so the format
is written here, as tensorflow/tfjs documents it
(``tfjs-converter/python/tensorflowjs/converters/tf_saved_model_conversion_v2.py``,
``write_weights.py``; ``tfjs-core/src/io/types.ts``):

* ``model.json``: ``{"format": "graph-model", "generatedBy", "convertedBy",
  "modelTopology": GRAPH_DEF, "signature": SIGNATURE_DEF, "weightsManifest":
  [{"paths": [...], "weights": [{"name", "shape", "dtype"[, "quantization"]}]}]}``;
  ``GRAPH_DEF`` and ``SIGNATURE_DEF`` are the protos as protobuf JSON.
* ``group1-shard{i}of{n}.bin``: the weights' bytes (little-endian, in
  manifest order) cut into :data:`SHARD_BYTES` pieces.

The graph is the module's inference graph (the ``default`` signature of tag
set ``{}``, the graph tf.loadGraphModel users run), its variables folded into
constants (``convert_variables_to_constants``); the constants' values move to
the weight shards (the ``Const`` nodes stay, without values, as the
converter leaves them). The input-size ``Assert`` of variable-size modules is
removed (TF.js has no ``Assert`` op; the converter strips it too), and so
are ``Identity`` nodes between ops. Every op left must be one TF.js 4.22
implements (:data:`TFJS_OPS`); anything else is a BuildError.

Quantizations (:data:`QUANTIZATIONS`, the converter's
``--quantize_float16`` / ``--quantize_uint8``): ``float32`` (none);
``float16`` (weights stored as IEEE half floats); ``uint8`` (affine, per
weight: value = q * scale + min, ``scale = (max - min) / 255``). TF.js turns
them back into float32 when it loads the model; compute stays float32.
"""

import functools
import json
import os
import shutil

from hubexport import __version__
from hubexport.errors import BuildError, UsageError

QUANTIZATIONS = ("float32", "float16", "uint8")
#: Bytes per weight shard file (tfjs-converter's default: 4 MiB).
SHARD_BYTES = 4 * 1024 * 1024
#: Ops the written graphs may hold: all implemented by TF.js 4.22
#: (tfjs-converter/src/operations/op_list).
TFJS_OPS = frozenset({
    "Placeholder", "Const", "Identity", "Conv2D", "DepthwiseConv2dNative", "FusedBatchNormV3",
    "Relu", "Relu6", "BiasAdd", "Add", "AddV2", "Sub", "Mul", "RealDiv", "Maximum", "Minimum",
    "Sqrt", "Rsqrt", "Square", "Mean", "Squeeze", "Reshape", "MatMul", "ConcatV2", "AvgPool",
    "MaxPool", "Pad", "Softmax", "Shape", "StridedSlice", "Slice", "Pack", "ExpandDims", "Fill",
    "ZerosLike", "OnesLike", "Cast", "Tile"})
_CLEARED = ("tensor_content", "half_val", "float_val", "double_val", "int_val", "string_val",
            "int64_val", "bool_val", "uint32_val", "uint64_val")
_DTYPES = {"float32": "float32", "int32": "int32"}


def write_tfjs(module_dir, out_dir, *, quantization="float32"):
    """Converts a TF1 Hub format module (version 1 or 3) to a TF.js graph model directory.

    Args:
      module_dir: the module directory (str or Path).
      out_dir: the directory to create (must not exist); written as
        ``.<name>.tmp-<pid>`` beside it, then renamed, so a failed conversion
        leaves nothing there.
      quantization: one of :data:`QUANTIZATIONS`.

    Returns:
      dict: ``files`` (name -> size in bytes), ``input`` (tensor name and
      shape, -1 for any size), ``output`` (tensor name and shape), ``ops``
      (sorted op types of the graph) and ``weights`` (count).

    Raises:
      UsageError: an unknown quantization.
      BuildError: the module is not in the TF1 Hub format, its graph holds an
        op TF.js lacks, or the files cannot be written.
    """
    import numpy as np
    import tensorflow as tf
    from google.protobuf import json_format
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow.python.framework import tensor_util

    if quantization not in QUANTIZATIONS:
        raise UsageError("quantization %r: use one of %s" % (quantization,
                                                              ", ".join(QUANTIZATIONS)))
    from tensorflow.core.framework import graph_pb2

    serialized, inp, out = _frozen_inference_graph(os.path.abspath(module_dir))
    frozen = graph_pb2.GraphDef.FromString(serialized)
    unsupported = sorted({n.op for n in frozen.node} - TFJS_OPS)
    if unsupported:
        raise BuildError("%s: its inference graph holds ops TF.js 4.22 lacks (%s); cannot "
                         "write a TF.js variant" % (module_dir, ", ".join(unsupported)))
    weights, blobs = [], []
    for node in frozen.node:
        if node.op != "Const":
            continue
        value = tensor_util.MakeNdarray(node.attr["value"].tensor)
        dtype = _DTYPES.get(value.dtype.name)
        if dtype is None:
            raise BuildError("%s: constant %s has dtype %s, which the writer does not handle"
                             % (module_dir, node.name, value.dtype.name))
        entry = {"name": node.name, "shape": list(value.shape), "dtype": dtype}
        data = value.astype("<f4" if dtype == "float32" else "<i4")
        if dtype == "float32" and quantization == "float16":
            data = value.astype("<f2")
            entry["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
        elif dtype == "float32" and quantization == "uint8":
            lo, hi = (float(value.min()), float(value.max())) if value.size else (0.0, 0.0)
            scale = (hi - lo) / 255 if hi > lo else 1.0
            data = np.clip(np.round((value - lo) / scale), 0, 255).astype(np.uint8)
            entry["quantization"] = {"dtype": "uint8", "min": lo, "scale": scale,
                                     "original_dtype": "float32"}
        weights.append(entry)
        blobs.append(data.tobytes())
        for field in _CLEARED:
            node.attr["value"].tensor.ClearField(field)
    payload = b"".join(blobs)
    count = max(1, -(-len(payload) // SHARD_BYTES))
    paths = ["group1-shard%dof%d.bin" % (i + 1, count) for i in range(count)]
    signature = meta_graph_pb2.SignatureDef()
    for where, (name, shape) in ((signature.inputs, inp), (signature.outputs, out)):
        info = where[name]
        info.name = name
        info.dtype = tf.float32.as_datatype_enum
        for size in shape:
            info.tensor_shape.dim.add().size = size
    model = {"format": "graph-model", "generatedBy": tf.__version__,
             "convertedBy": "hubexport %s" % __version__,
             "modelTopology": json_format.MessageToDict(frozen),
             "signature": json_format.MessageToDict(signature),
             "weightsManifest": [{"paths": paths, "weights": weights}]}
    out_dir = os.fspath(out_dir)
    tmp = os.path.join(os.path.dirname(out_dir) or ".",
                       ".%s.tmp-%d" % (os.path.basename(out_dir), os.getpid()))
    files = {}
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        for i, name in enumerate(paths):
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(payload[i * SHARD_BYTES:(i + 1) * SHARD_BYTES])
            files[name] = os.path.getsize(os.path.join(tmp, name))
        text = json.dumps(model, sort_keys=True, separators=(",", ":"))
        with open(os.path.join(tmp, "model.json"), "w", encoding="utf-8") as f:
            f.write(text)
        files["model.json"] = len(text.encode())
        os.replace(tmp, out_dir)
    except OSError as e:
        raise BuildError("cannot write %s: %s; check free space and permissions"
                         % (out_dir, e.strerror or e)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"files": dict(sorted(files.items())), "input": {"name": inp[0], "shape": inp[1]},
            "output": {"name": out[0], "shape": out[1]},
            "ops": sorted({n.op for n in frozen.node}), "weights": len(weights)}


@functools.lru_cache(maxsize=1)  # the variants of one module, one after another
def _frozen_inference_graph(module_dir):
    """(serialized GraphDef, (input name, shape), (output name, shape)) of a module's ``default``.

    Loads tag set ``{}`` in a TF1 session, folds the variables into
    constants, removes the ``Assert`` ops (and the control inputs that wait
    for them) and the ``Identity`` nodes, keeping what the output needs.
    """
    import tensorflow as tf

    graph = tf.Graph()
    try:
        with graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
            meta_graph = tf.compat.v1.saved_model.loader.load(sess, [], module_dir)
            signature = meta_graph.signature_def["default"]
            inp = signature.inputs["images"]
            out = signature.outputs["default"]
            out_node = out.name.split(":")[0]
            graph_def = graph.as_graph_def()
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                sess, graph_def, [out_node])
    except (KeyError, RuntimeError, ValueError, OSError, tf.errors.OpError) as e:
        raise BuildError("%s: cannot read it as a TF1 Hub format module with a default "
                         "signature (%s)" % (module_dir, str(e).strip().splitlines()[0]
                                             if str(e).strip() else type(e).__name__)) from None
    asserts = {n.name for n in frozen.node if n.op == "Assert"}
    for node in frozen.node:
        kept = [i for i in node.input if i.lstrip("^") not in asserts]
        del node.input[:]
        node.input.extend(kept)
    kept = [n for n in frozen.node if n.name not in asserts]
    del frozen.node[:]
    frozen.node.extend(kept)
    frozen = tf.compat.v1.graph_util.extract_sub_graph(frozen, [out_node])
    frozen = tf.compat.v1.graph_util.remove_training_nodes(
        frozen, protected_nodes=[out_node, inp.name.split(":")[0]])
    frozen.versions.CopyFrom(graph_def.versions)  # TF.js reads the producer version

    def shape(info):
        return [d.size for d in info.tensor_shape.dim]

    return frozen.SerializeToString(), (inp.name, shape(inp)), (out.name, shape(out))


def write_variant_files(module_dir, path, target):
    """Writes a deploy target's graph model directory (:func:`write_tfjs`; for :mod:`hubexport.deploy`).

    Returns:
      ``{"input": {"name", "shape"}, "output": {"name", "shape"}}`` of the
      graph (-1 for a size it takes any of).
    """
    info = write_tfjs(module_dir, path, quantization=target.quantization)
    return {"input": info["input"], "output": info["output"]}


def read_graph_model(model_dir):
    """Reads a graph model directory back into a GraphDef with every weight's value.

    Weights are decoded as TF.js decodes them (tfjs-core ``io.decodeWeights``):
    float16 widened to float32, uint8 as ``q * scale + min``.

    Args:
      model_dir: a directory with ``model.json`` and its weight shards.

    Returns:
      (GraphDef, model dict): the graph with its ``Const`` nodes' values
      filled in, and the parsed ``model.json``.

    Raises:
      BuildError: a file is missing, the manifest names more bytes than the
        shards hold (or fewer), or a weight names no ``Const`` node.
    """
    import numpy as np
    from google.protobuf import json_format
    from tensorflow.core.framework import graph_pb2
    from tensorflow.python.framework import tensor_util

    try:
        model = json.loads((open(os.path.join(model_dir, "model.json"), encoding="utf-8")).read())
        graph = json_format.ParseDict(model["modelTopology"], graph_pb2.GraphDef())
        (group,) = model["weightsManifest"]
        payload = b"".join(open(os.path.join(model_dir, p), "rb").read() for p in group["paths"])
    except (OSError, ValueError, KeyError, json_format.ParseError) as e:
        raise BuildError("%s: not a readable TF.js graph model (%s)" % (model_dir, e)) from None
    consts = {n.name: n for n in graph.node if n.op == "Const"}
    offset = 0
    for spec in group["weights"]:
        count = int(np.prod(spec["shape"], dtype=np.int64))
        q = spec.get("quantization")
        stored = np.dtype({"float16": "<f2", "uint8": "u1"}[q["dtype"]] if q else
                          {"float32": "<f4", "int32": "<i4"}[spec["dtype"]])
        nbytes = count * stored.itemsize
        if spec["name"] not in consts:
            raise BuildError("%s: weight %s names no Const node of the graph"
                             % (model_dir, spec["name"]))
        if offset + nbytes > len(payload):
            raise BuildError("%s: the shards end before weight %s" % (model_dir, spec["name"]))
        value = np.frombuffer(payload, stored, count, offset).reshape(spec["shape"])
        offset += nbytes
        if q and q["dtype"] == "uint8":
            value = value.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
        value = value.astype(spec["dtype"])
        consts[spec["name"]].attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))
    if offset != len(payload):
        raise BuildError("%s: the shards hold %d bytes, the manifest's weights %d"
                         % (model_dir, len(payload), offset))
    return graph, model


def run(model_dir, images):
    """Runs a graph model directory (read back by :func:`read_graph_model`) in TensorFlow.

    Args:
      model_dir: the graph model directory.
      images: float32 numpy array [n, H, W, 3].

    Returns:
      float64 numpy array [n, ...]: the model's output.
    """
    import numpy as np
    import tensorflow as tf

    graph_def, model = read_graph_model(model_dir)
    (inp,) = model["signature"]["inputs"]
    (out,) = model["signature"]["outputs"]
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as sess:
            return sess.run(out, {inp: images}).astype(np.float64)


_MODULE_OUTPUTS = {}  # the last module's outputs on the last images (measure)


def measure(path, module_dir, images):
    """How far a graph model's outputs are from its TF1 Hub module's ``default`` signature.

    The graph model runs as :func:`run` runs it (weights decoded as TF.js
    decodes them), the module through ``hub.load``.

    Args:
      path: the graph model directory (from :func:`write_tfjs`).
      module_dir: the module it was converted from.
      images: float32 numpy array [n, S, S, 3] in [0, 1].

    Returns:
      dict of floats: ``max_abs_diff``, ``max_abs_output`` (of the module)
      and ``max_rel_diff`` (their ratio).
    """
    import numpy as np
    import tensorflow as tf
    import tensorflow_hub as hub

    got = run(path, images)
    key = (os.path.abspath(module_dir), images.shape, images.tobytes())
    if _MODULE_OUTPUTS.get("key") != key:  # the variants of one module, one after another
        _MODULE_OUTPUTS.clear()
        _MODULE_OUTPUTS.update(key=key, value=hub.load(str(module_dir)).signatures["default"](
            images=tf.constant(images))["default"].numpy().astype(np.float64))
    want = _MODULE_OUTPUTS["value"]
    from hubexport.deploy import difference

    return difference(got, want)
