"""Writes the MobileNet V1 and V2 checkpoints' variable manifests, read off tf_keras.applications.

The manifests in ``hubexport/data/`` are the ground truth the tests and the
stand-in checkpoints are made from (see scripts/make_manifest.py). They must
NOT come from hubexport's nets. tf_slim 1.1.0 (the legacy venv) ships no
MobileNets, so this script reads the variables off implementations we did
not write either: ``tf_keras.applications.MobileNet`` (V1) and
``tf_keras.applications.MobileNetV2`` (V2), built with ``weights=None``,
``alpha`` = the depth multiplier, ``input_shape=(224, 224, 3)``,
``include_top=True``, ``classes=1001`` (the checkpoints' 1000 ImageNet
classes plus background) and ``classifier_activation=None``, and maps
Keras' layer names onto TF-Slim's checkpoint names (:func:`slim_scope`):

  V1 (``MobilenetV1/``, TF-Slim's research/slim/nets/mobilenet_v1.py):
    ``conv1``            -> ``Conv2d_0``
    ``conv_dw_N``        -> ``Conv2d_N_depthwise`` (N = 1..13)
    ``conv_pw_N``        -> ``Conv2d_N_pointwise``
    ``conv_preds``       -> ``Logits/Conv2d_1c_1x1`` (1x1 conv with biases)
  V2 (``MobilenetV2/``, research/slim/nets/mobilenet/{mobilenet,mobilenet_v2,conv_blocks}.py):
    ``Conv1``            -> ``Conv``
    ``expanded_conv_X``  -> ``expanded_conv/X`` (X = depthwise, project; no expand)
    ``block_N_X``        -> ``expanded_conv_N/X`` (N = 1..16; X = expand, depthwise, project)
    ``Conv_1``           -> ``Conv_1``
    ``predictions``      -> ``Logits/Conv2d_1c_1x1`` (Keras' Dense kernel [C, 1001]
                            becomes TF-Slim's 1x1 conv weights [1, 1, C, 1001])
  and every layer's batch norm (V1 ``<layer>_bn``, V2 ``<layer>_BN``,
  ``bn_Conv1``, ``Conv_1_bn``) -> ``<scope>/BatchNorm``.

Weight names: Keras ``kernel`` -> ``weights``, ``depthwise_kernel`` ->
``depthwise_weights``, ``bias`` -> ``biases``; ``gamma``, ``beta``,
``moving_mean``, ``moving_variance`` keep their names. Keras creates them
in TF-Slim's order (layer by layer; weights before batch norm; gamma, beta,
moving_mean, moving_variance), so the manifest keeps Keras' order, with
``global_step`` (int64 scalar, which every TF-Slim training checkpoint
holds) last. Every Keras weight must map to exactly one new name, or the
script fails.

The resolution does not change the variables: one manifest per depth
multiplier, whose header names the 224-pixel tarball (ZOO.md section 2):
V1 ``mobilenet_v1_{1.0,0.75,0.5,0.25}_224.tgz`` (release
``mobilenet_v1_2018_08_02/``), V2 ``mobilenet_v2_{1.4,1.3,1.0,0.75,0.5,0.35}_224.tgz``,
each holding a V2 checkpoint with prefix ``<tarball stem>.ckpt``
(``"format": "v2"``).

Run in hubexport's main venv (TensorFlow 2.21 + tf-keras 2.21):

    .venv/bin/python scripts/make_mobilenet_manifest.py            # all ten
    .venv/bin/python scripts/make_mobilenet_manifest.py mobilenet_v2_140

Output: ``hubexport/data/<architecture>_manifest.json`` (``--out-dir`` to
write elsewhere) in scripts/make_manifest.py's format: ``{"header": {...},
"num_variables", "num_parameters", "variables": [{"name", "shape",
"dtype"}, ...]}``; ``num_parameters`` counts every variable but
``global_step``. Written to a temporary file, then renamed.
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGE_SIZE = 224
NUM_CLASSES = 1001

#: Architecture -> (family, depth multiplier, how the tarball spells it).
ARCHITECTURES = {
    "mobilenet_v1_025": ("v1", 0.25, "0.25"),
    "mobilenet_v1_050": ("v1", 0.5, "0.5"),
    "mobilenet_v1_075": ("v1", 0.75, "0.75"),
    "mobilenet_v1_100": ("v1", 1.0, "1.0"),
    "mobilenet_v2_035": ("v2", 0.35, "0.35"),
    "mobilenet_v2_050": ("v2", 0.5, "0.5"),
    "mobilenet_v2_075": ("v2", 0.75, "0.75"),
    "mobilenet_v2_100": ("v2", 1.0, "1.0"),
    "mobilenet_v2_130": ("v2", 1.3, "1.3"),
    "mobilenet_v2_140": ("v2", 1.4, "1.4"),
}

_SCOPES = {"v1": "MobilenetV1", "v2": "MobilenetV2"}
_KERAS_CLASSES = {"v1": "MobileNet", "v2": "MobileNetV2"}
_LOGITS = "Logits/Conv2d_1c_1x1"

# Keras layer name -> TF-Slim scope below the net's scope, per family; the
# batch norm of a layer maps to "<its scope>/BatchNorm".
_V1_RULES = [
    (re.compile(r"^conv1$"), "Conv2d_0"),
    (re.compile(r"^conv1_bn$"), "Conv2d_0/BatchNorm"),
    (re.compile(r"^conv_dw_(\d+)$"), r"Conv2d_\1_depthwise"),
    (re.compile(r"^conv_dw_(\d+)_bn$"), r"Conv2d_\1_depthwise/BatchNorm"),
    (re.compile(r"^conv_pw_(\d+)$"), r"Conv2d_\1_pointwise"),
    (re.compile(r"^conv_pw_(\d+)_bn$"), r"Conv2d_\1_pointwise/BatchNorm"),
    (re.compile(r"^conv_preds$"), _LOGITS),
]
_V2_RULES = [
    (re.compile(r"^Conv1$"), "Conv"),
    (re.compile(r"^bn_Conv1$"), "Conv/BatchNorm"),
    (re.compile(r"^expanded_conv_(depthwise|project)$"), r"expanded_conv/\1"),
    (re.compile(r"^expanded_conv_(depthwise|project)_BN$"), r"expanded_conv/\1/BatchNorm"),
    (re.compile(r"^block_(\d+)_(expand|depthwise|project)$"), r"expanded_conv_\1/\2"),
    (re.compile(r"^block_(\d+)_(expand|depthwise|project)_BN$"),
     r"expanded_conv_\1/\2/BatchNorm"),
    (re.compile(r"^Conv_1$"), "Conv_1"),
    (re.compile(r"^Conv_1_bn$"), "Conv_1/BatchNorm"),
    (re.compile(r"^predictions$"), _LOGITS),
]
_RULES = {"v1": _V1_RULES, "v2": _V2_RULES}

# Keras weight name -> TF-Slim variable name.
_WEIGHT_NAMES = {"kernel": "weights", "depthwise_kernel": "depthwise_weights",
                 "bias": "biases", "gamma": "gamma", "beta": "beta",
                 "moving_mean": "moving_mean", "moving_variance": "moving_variance"}


def checkpoint_header(architecture):
    """The ``header.checkpoint`` of an architecture: the real 224-pixel tarball.

    Returns:
      dict ``tarball`` (file name), ``member`` (V2 checkpoint prefix inside
      it), ``image_size`` (224 pixels), ``format`` ("v2").
    """
    family, _, spelled = ARCHITECTURES[architecture]
    stem = "mobilenet_%s_%s_%d" % (family, spelled, IMAGE_SIZE)
    return {"tarball": stem + ".tgz", "member": stem + ".ckpt", "image_size": IMAGE_SIZE,
            "format": "v2"}


def slim_scope(family, keras_layer_name):
    """TF-Slim's scope (below ``MobilenetV1/`` / ``MobilenetV2/``) of a Keras layer.

    Raises:
      KeyError: the layer name matches no rule of the family.
    """
    for pattern, replacement in _RULES[family]:
        if pattern.match(keras_layer_name):
            return pattern.sub(replacement, keras_layer_name)
    raise KeyError("no TF-Slim name for Keras layer %r" % keras_layer_name)


def build_variables(architecture):
    """Builds the Keras model and lists its weights under TF-Slim's names.

    Returns:
      (variables, versions): list of dicts (name, shape, dtype) in creation
      order with ``global_step`` last; versions a dict of library versions.

    Raises:
      SystemExit: a weight is unmapped, mapped twice or of an unexpected kind.
    """
    import tensorflow as tf
    import tf_keras

    family, multiplier, _ = ARCHITECTURES[architecture]
    tf_keras.backend.clear_session()
    model = getattr(tf_keras.applications, _KERAS_CLASSES[family])(
        weights=None, alpha=multiplier, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
        include_top=True, classes=NUM_CLASSES, classifier_activation=None)
    variables, seen = [], set()
    for layer in model.layers:
        if not layer.weights:
            continue
        scope = "%s/%s" % (_SCOPES[family], slim_scope(family, layer.name))
        for weight in layer.weights:
            leaf = weight.name.split("/")[-1].split(":")[0]
            if leaf not in _WEIGHT_NAMES:
                sys.exit("error: %s: unexpected weight %s" % (architecture, weight.name))
            shape = [int(d) for d in weight.shape]
            if scope.endswith(_LOGITS) and leaf == "kernel" and len(shape) == 2:
                shape = [1, 1] + shape  # Dense [C, N] -> 1x1 conv [1, 1, C, N]
            name = "%s/%s" % (scope, _WEIGHT_NAMES[leaf])
            if name in seen:
                sys.exit("error: %s: %s mapped twice" % (architecture, name))
            seen.add(name)
            variables.append({"name": name, "shape": shape,
                              "dtype": weight.dtype.base_dtype.name})
    variables.append({"name": "global_step", "shape": [], "dtype": "int64"})
    versions = {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__}
    return variables, versions


def _dumps(manifest):
    """JSON text with one variable per line (as scripts/make_manifest.py writes it)."""
    head = {k: v for k, v in manifest.items() if k != "variables"}
    text = json.dumps(head, indent=2)[:-2]
    rows = ",\n".join("    " + json.dumps(v) for v in manifest["variables"])
    return text + ',\n  "variables": [\n' + rows + "\n  ]\n}\n"


def make_manifest(architecture):
    """The manifest dict of one architecture (see the module docstring)."""
    family, multiplier, _ = ARCHITECTURES[architecture]
    variables, versions = build_variables(architecture)
    num_parameters = 0
    for v in variables:
        if v["name"] != "global_step":
            n = 1
            for d in v["shape"]:
                n *= d
            num_parameters += n
    source = ("tf_keras.applications.%s(weights=None, alpha=%s, input_shape=(%d, %d, 3), "
              "include_top=True, classes=%d, classifier_activation=None) (PyPI tf-keras %s), "
              "Keras layer names mapped to TF-Slim's by scripts/make_mobilenet_manifest.py"
              % (_KERAS_CLASSES[family], multiplier, IMAGE_SIZE, IMAGE_SIZE, NUM_CLASSES,
                 versions["tf_keras"]))
    return {
        "header": {
            "architecture": architecture,
            "checkpoint": checkpoint_header(architecture),
            "depth_multiplier": multiplier,
            "source": source,
            "generated_by": "scripts/make_mobilenet_manifest.py",
            "tensorflow": versions["tensorflow"],
            "note": ("Variables of the real TF-Slim checkpoint (global variables + "
                     "global_step), read off an independent implementation (Keras) under "
                     "TF-Slim's names, in creation order. The resolution does not change "
                     "them: the tarballs of the other resolutions hold the same variables. "
                     "num_parameters excludes global_step."),
        },
        "num_variables": len(variables),
        "num_parameters": num_parameters,
        "variables": variables,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("architectures", nargs="*", metavar="ARCHITECTURE",
                        help="architectures to write, of: %s (default: all ten)"
                        % ", ".join(sorted(ARCHITECTURES)))
    parser.add_argument("--out-dir", default=str(REPO / "hubexport" / "data"),
                        help="directory of the <architecture>_manifest.json files")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.architectures) - set(ARCHITECTURES))
    if unknown:
        parser.error("unknown architecture(s) %s; known: %s"
                     % (", ".join(unknown), ", ".join(sorted(ARCHITECTURES))))
    for architecture in args.architectures or sorted(ARCHITECTURES):
        manifest = make_manifest(architecture)
        output = os.path.join(args.out_dir, "%s_manifest.json" % architecture)
        tmp = output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(_dumps(manifest))
        os.replace(tmp, output)
        print("%s: %d variables, %d parameters (excluding global_step)"
              % (output, manifest["num_variables"], manifest["num_parameters"]))


if __name__ == "__main__":
    main()
