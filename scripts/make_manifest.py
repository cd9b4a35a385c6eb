"""Writes the variable manifest of a TF-Slim checkpoint, read off TF-Slim's own net.

The manifests in ``hubexport/data/`` are the ground truth the tests and the
stand-in checkpoints are made from: the name, shape and dtype of every
variable the real TF-Slim checkpoint holds. They are NOT derived from
hubexport's nets (that would make the tests circular); this script builds
TF-Slim's own definition of the net in a TF1 graph and lists its global
variables plus ``global_step``.

It runs in the legacy venv (tensorflow 2.15 + the ``tf-slim`` package from
PyPI; ``make install-legacy`` creates ``.venv-legacy``), not in hubexport's
main venv (tf-slim does not import on TF >= 2.16):

    # Inception V1, V2 and V3: tf_slim 1.1.0 ships them (tf_slim.nets).
    .venv-legacy/bin/python scripts/make_manifest.py inception_v1 \\
        hubexport/data/inception_v1_manifest.json
    .venv-legacy/bin/python scripts/make_manifest.py inception_v2 \\
        hubexport/data/inception_v2_manifest.json
    .venv-legacy/bin/python scripts/make_manifest.py inception_v3 \\
        hubexport/data/inception_v3_manifest.json
    # Inception-ResNet-V2: tf_slim does not ship it. Save TF-Slim's
    # research/slim/nets/inception_resnet_v2.py from github.com/tensorflow/models
    # (the manifest was made from commit 608bd2211d0ed7c8e3c61d2ffa1277d464048ab8)
    # OUTSIDE this repository, e.g. /tmp/irv2_src/inception_resnet_v2.py, then:
    .venv-legacy/bin/python scripts/make_manifest.py inception_resnet_v2 \\
        hubexport/data/inception_resnet_v2_manifest.json \\
        --slim-source /tmp/irv2_src/inception_resnet_v2.py \\
        --slim-commit 608bd2211d0ed7c8e3c61d2ffa1277d464048ab8

The TF-Slim source file imports ``tensorflow.contrib.slim`` (TF 1.x); this
script loads it with that import pointed at the ``tf_slim`` package and
changes nothing else. Inception V3 and Inception-ResNet-V2 are built with
``create_aux_logits=True`` (their checkpoints, 2016-08-28 and 2016-08-30,
hold the auxiliary head ``AuxLogits``). Every Inception net is built with
``num_classes=1001`` and ``is_training=False`` on a [1, size, size, 3]
float32 placeholder (224 for V1 and V2, 299 for V3 and
Inception-ResNet-V2) under the net's own arg scope
(``inception_v1_arg_scope()``, ...).

ResNets (tf_slim 1.1.0's ``tf_slim.nets.resnet_v1`` / ``resnet_v2``, depths
50, 101 and 152) are built as ``resnet_vV_D(images, num_classes=C,
is_training=False)`` under that module's ``resnet_arg_scope()`` on a
[1, 224, 224, 3] placeholder, with C = 1000 for V1 (the README's
checkpoints, converted from Caffe, have no background class) and 1001 for
V2:

    for n in resnet_v1_50 resnet_v1_101 resnet_v1_152 \\
             resnet_v2_50 resnet_v2_101 resnet_v2_152; do
        .venv-legacy/bin/python scripts/make_manifest.py $n hubexport/data/${n}_manifest.json
    done

Output: JSON ``{"header": {...}, "num_variables", "num_parameters",
"variables": [{"name", "shape", "dtype"}, ...]}`` in creation order;
``num_parameters`` counts the numbers of all variables except
``global_step`` (moving statistics included).
"""

import argparse
import json
import os
import sys
import types

# Sources of the TF-Slim definitions.
_IRV2_IMPORT_LINES = (
    "from tensorflow.contrib import slim as contrib_slim",
    "slim = tf.contrib.slim",
)

_CHECKPOINTS = {
    "inception_v1": {
        "tarball": "inception_v1_2016_08_28.tar.gz",
        "member": "inception_v1.ckpt",
        "image_size": 224,
    },
    "inception_v2": {
        "tarball": "inception_v2_2016_08_28.tar.gz",
        "member": "inception_v2.ckpt",
        "image_size": 224,
    },
    "inception_v3": {
        "tarball": "inception_v3_2016_08_28.tar.gz",
        "member": "inception_v3.ckpt",
        "image_size": 299,
    },
    "inception_resnet_v2": {
        "tarball": "inception_resnet_v2_2016_08_30.tar.gz",
        "member": "inception_resnet_v2_2016_08_30.ckpt",
        "image_size": 299,
    },
    # ResNets: tf_slim.nets.resnet_v1 / resnet_v2 (see _RESNET_CLASSES).
    "resnet_v1_50": {
        "tarball": "resnet_v1_50_2016_08_28.tar.gz",
        "member": "resnet_v1_50.ckpt",
        "image_size": 224,
    },
    "resnet_v1_101": {
        "tarball": "resnet_v1_101_2016_08_28.tar.gz",
        "member": "resnet_v1_101.ckpt",
        "image_size": 224,
    },
    "resnet_v1_152": {
        "tarball": "resnet_v1_152_2016_08_28.tar.gz",
        "member": "resnet_v1_152.ckpt",
        "image_size": 224,
    },
    "resnet_v2_50": {
        "tarball": "resnet_v2_50_2017_04_14.tar.gz",
        "member": "resnet_v2_50.ckpt",
        "image_size": 224,
    },
    "resnet_v2_101": {
        "tarball": "resnet_v2_101_2017_04_14.tar.gz",
        "member": "resnet_v2_101.ckpt",
        "image_size": 224,
    },
    "resnet_v2_152": {
        "tarball": "resnet_v2_152_2017_04_14.tar.gz",
        "member": "resnet_v2_152.ckpt",
        "image_size": 224,
    },
}

# Logits per ResNet checkpoint: the README's V1 checkpoints (converted from
# Caffe) have the 1000 ImageNet classes without a background class; the V2
# ones 1001 (index 0 background).
_RESNET_CLASSES = {"resnet_v1": 1000, "resnet_v2": 1001}


def _load_irv2_module(path):
    """Loads TF-Slim's inception_resnet_v2.py with contrib.slim -> tf_slim."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    replaced = False
    for line in _IRV2_IMPORT_LINES:
        if line in source:
            new = ("import tf_slim as contrib_slim" if "import" in line
                   else "import tf_slim as slim")
            source = source.replace(line, new)
            replaced = True
    if not replaced:
        sys.exit("error: %s: no 'tensorflow.contrib' slim import found; is this "
                 "TF-Slim's research/slim/nets/inception_resnet_v2.py?" % path)
    module = types.ModuleType("slim_inception_resnet_v2")
    module.__file__ = path
    exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102 (trusted local file)
    return module


def patch_tf215_batch_norm():
    """Makes tf_slim's batch_norm work on TensorFlow 2.15.1.

    TF 2.15.1's ``tensorflow/python/layers/normalization.py`` lazily imports
    ``tf_keras.legacy_tf_layers.normalization``, a path no tf-keras release
    has; tf_slim's ``batch_norm`` goes through it. Point it at the same layer
    in the Keras 2.15 that ships with TF 2.15.
    """
    from tensorflow.python.layers import normalization as tf_layers_normalization

    try:
        import tf_keras.legacy_tf_layers.normalization  # noqa: F401
    except ImportError:
        from keras.src.legacy_tf_layers import normalization as keras_normalization
        tf_layers_normalization.normalization = keras_normalization


def build_variables(architecture, slim_source=None):
    """Builds TF-Slim's net in a fresh graph and returns its variables.

    Returns:
      (variables, versions): list of dicts (name, shape, dtype) in creation
      order with ``global_step`` last; versions a dict of library versions.
    """
    import tensorflow as tf
    import tf_slim

    tf.compat.v1.disable_eager_execution()
    patch_tf215_batch_norm()
    size = _CHECKPOINTS[architecture]["image_size"]
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, size, size, 3])
        if architecture == "inception_v1":
            from tf_slim.nets import inception_v1 as net_module
            with tf_slim.arg_scope(net_module.inception_v1_arg_scope()):
                net_module.inception_v1(images, num_classes=1001, is_training=False)
        elif architecture == "inception_v2":
            from tf_slim.nets import inception_v2 as net_module
            with tf_slim.arg_scope(net_module.inception_v2_arg_scope()):
                net_module.inception_v2(images, num_classes=1001, is_training=False)
        elif architecture == "inception_v3":
            from tf_slim.nets import inception_v3 as net_module
            with tf_slim.arg_scope(net_module.inception_v3_arg_scope()):
                net_module.inception_v3(images, num_classes=1001, is_training=False,
                                        create_aux_logits=True)
        elif architecture.startswith("resnet_v"):
            # e.g. tf_slim.nets.resnet_v1.resnet_v1_50 under resnet_v1.resnet_arg_scope().
            import importlib

            version = architecture.rsplit("_", 1)[0]  # resnet_v1 / resnet_v2
            net_module = importlib.import_module("tf_slim.nets." + version)
            with tf_slim.arg_scope(net_module.resnet_arg_scope()):
                getattr(net_module, architecture)(
                    images, num_classes=_RESNET_CLASSES[version], is_training=False)
        else:
            net_module = _load_irv2_module(slim_source)
            with tf_slim.arg_scope(net_module.inception_resnet_v2_arg_scope()):
                net_module.inception_resnet_v2(images, num_classes=1001, is_training=False,
                                               create_aux_logits=True)
        tf.compat.v1.train.get_or_create_global_step()
        variables = [
            {"name": v.op.name, "shape": [int(d) for d in v.shape],
             "dtype": v.dtype.base_dtype.name}
            for v in tf.compat.v1.global_variables()
        ]
    versions = {"tensorflow": tf.__version__,
                "tf_slim": getattr(tf_slim, "__version__", "1.1.0")}
    return variables, versions


def _dumps(manifest):
    """JSON text with one variable per line (reviewable diffs)."""
    head = {k: v for k, v in manifest.items() if k != "variables"}
    text = json.dumps(head, indent=2)[:-2]
    rows = ",\n".join("    " + json.dumps(v) for v in manifest["variables"])
    return text + ',\n  "variables": [\n' + rows + "\n  ]\n}\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("architecture", choices=sorted(_CHECKPOINTS))
    parser.add_argument("output", help="path of the JSON manifest to write")
    parser.add_argument("--slim-source",
                        help="path of TF-Slim's research/slim/nets/inception_resnet_v2.py "
                             "(required for inception_resnet_v2)")
    parser.add_argument("--slim-commit", default="",
                        help="tensorflow/models commit the --slim-source file is from")
    args = parser.parse_args(argv)
    if args.architecture == "inception_resnet_v2" and not args.slim_source:
        parser.error("inception_resnet_v2 needs --slim-source")

    variables, versions = build_variables(args.architecture, args.slim_source)
    names = [v["name"] for v in variables]
    if len(set(names)) != len(names):
        sys.exit("error: duplicate variable names in the built graph")
    num_parameters = 0
    for v in variables:
        if v["name"] != "global_step":
            n = 1
            for d in v["shape"]:
                n *= d
            num_parameters += n

    if args.architecture in ("inception_v1", "inception_v2"):
        arch = args.architecture
        source = ("tf_slim.nets.%s.%s(num_classes=1001) under %s_arg_scope() (PyPI tf-slim %s)"
                  % (arch, arch, arch, versions["tf_slim"]))
    elif args.architecture == "inception_v3":
        source = ("tf_slim.nets.inception_v3.inception_v3(num_classes=1001, "
                  "create_aux_logits=True) under inception_v3_arg_scope() (PyPI tf-slim %s)"
                  % versions["tf_slim"])
    elif args.architecture.startswith("resnet_v"):
        version = args.architecture.rsplit("_", 1)[0]
        source = ("tf_slim.nets.%s.%s(num_classes=%d, is_training=False) under "
                  "%s.resnet_arg_scope() (PyPI tf-slim %s)"
                  % (version, args.architecture, _RESNET_CLASSES[version], version,
                     versions["tf_slim"]))
    else:
        source = ("inception_resnet_v2(num_classes=1001, create_aux_logits=True) under "
                  "inception_resnet_v2_arg_scope() from tensorflow/models "
                  "research/slim/nets/inception_resnet_v2.py%s, run with PyPI tf-slim %s"
                  % (" @ " + args.slim_commit if args.slim_commit else "",
                     versions["tf_slim"]))
    manifest = {
        "header": {
            "architecture": args.architecture,
            "checkpoint": _CHECKPOINTS[args.architecture],
            "source": source,
            "generated_by": "scripts/make_manifest.py",
            "tensorflow": versions["tensorflow"],
            "note": ("Variables of the real TF-Slim checkpoint, read off TF-Slim's own "
                     "net definition (global variables + global_step), in creation "
                     "order. num_parameters excludes global_step."),
        },
        "num_variables": len(variables),
        "num_parameters": num_parameters,
        "variables": variables,
    }
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(_dumps(manifest))
    os.replace(tmp, args.output)
    print("%s: %d variables, %d parameters (excluding global_step)"
          % (args.output, len(variables), num_parameters))


if __name__ == "__main__":
    main()
