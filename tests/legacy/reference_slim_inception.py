"""Reference outputs of TF-Slim's own Inception V1 / V3 (runs in the legacy venv).

Independent reference for tests/test_reference_inception.py: this script
builds ``tf_slim.nets.inception_v1`` or ``tf_slim.nets.inception_v3`` (PyPI
tf-slim 1.1.0, TensorFlow 2.15) in a TF1 graph under the net's own arg scope
(``inception_v1_arg_scope()`` / ``inception_v3_arg_scope()``) with
``is_training=False``, restores a checkpoint into it with
``tf.compat.v1.train.Saver`` (every variable of TF-Slim's graph must be in
the checkpoint and be restored) and runs fixed images.

tf-slim 1.1.0's ``inception_v1()`` / ``inception_v3()`` have no
``global_pool`` option: their heads are a 7x7 (V1) or min(8, map size)
(V3, from the static shape) VALID average pool, equal to global pooling
only for a 7x7 / at most 8x8 final map known when the graph is built (224 /
299 inputs). So two graphs are run:
  * ``global``: ``inception_v1_base`` / ``inception_v3_base`` plus the
    ``global_pool=True`` head of TF-Slim's research/slim version
    (``reduce_mean`` over height and width, dropout (identity at inference),
    ``slim.conv2d(1001, [1, 1], activation_fn=None, normalizer_fn=None)``
    scoped ``Logits/Conv2d_0c_1x1`` (V1) / ``Logits/Conv2d_1c_1x1`` (V3)),
    on every image set, any size, with a [None, None, None, 3] placeholder
    (keys ``logits_<i>``, ``features_<i>``);
  * ``full``: ``inception_v1(num_classes=1001)`` /
    ``inception_v3(num_classes=1001, create_aux_logits=True)`` unchanged (so
    for V3 every variable of the checkpoint, AuxLogits included, is restored),
    on the image sets of the net's default size, with a placeholder of that
    static size (key ``full_logits_<i>``).

Usage (with the legacy interpreter):
    python reference_slim_inception.py ARCH CHECKPOINT IN.npz OUT.npz

ARCH is ``inception_v1`` or ``inception_v3``. IN.npz holds ``images_<i>``:
float32 [batch, height, width, 3] in [-1, 1] (TF-Slim's input range).
OUT.npz receives float32 ``logits_<i>`` [batch, 1001], ``features_<i>``
[batch, features] (the globally pooled last Mixed block: ``Mixed_5c``, 1024
for V1; ``Mixed_7c``, 2048 for V3) and, for sets of the default size (224 /
299), ``full_logits_<i>`` [batch, 1001].
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# arch -> (tf_slim.nets module (which defines <arch>, <arch>_base and
#          <arch>_arg_scope), variable scope, logits scope under Logits,
#          dropout scope, default image size, extra kwargs of the full net)
ARCHS = {
    "inception_v1": ("inception_v1", "InceptionV1", "Conv2d_0c_1x1", "Dropout_0b", 224, {}),
    "inception_v3": ("inception_v3", "InceptionV3", "Conv2d_1c_1x1", "Dropout_1b", 299,
                     {"create_aux_logits": True}),
}


def _patch_tf215_batch_norm():
    # TF 2.15.1's tensorflow/python/layers/normalization.py lazily imports
    # tf_keras.legacy_tf_layers.normalization, a path no tf-keras release
    # has; tf_slim's batch_norm goes through it. Use the Keras 2.15 layer.
    from tensorflow.python.layers import normalization as tf_layers_normalization

    try:
        import tf_keras.legacy_tf_layers.normalization  # noqa: F401
    except ImportError:
        from keras.src.legacy_tf_layers import normalization as keras_normalization
        tf_layers_normalization.normalization = keras_normalization


def _slim_module(arch):
    import importlib

    return importlib.import_module("tf_slim.nets." + ARCHS[arch][0])


def _run(arch, checkpoint, build, batches, static_size=False):
    """Builds ``build(arch, images)`` -> dict of tensors in a fresh graph; runs each batch.

    The images placeholder is [None, None, None, 3], or with ``static_size``
    [None, height, width, 3] of the (equally sized) batches. Exits with an
    error when a variable of the graph is not restored from the checkpoint.
    """
    import tf_slim

    module = _slim_module(arch)
    arg_scope = getattr(module, arch + "_arg_scope")
    graph = tf.Graph()
    with graph.as_default():
        shape = [None] + list(batches[0].shape[1:]) if static_size else [None, None, None, 3]
        images = tf.compat.v1.placeholder(tf.float32, shape)
        with tf_slim.arg_scope(arg_scope()):
            outputs = build(arch, images)
        variables = tf.compat.v1.global_variables()
        saver = tf.compat.v1.train.Saver(variables)  # every global variable, by name
        uninitialized = tf.compat.v1.report_uninitialized_variables()
    reader = tf.compat.v1.train.NewCheckpointReader(checkpoint)
    missing = [v.op.name for v in variables if not reader.has_tensor(v.op.name)]
    if missing:
        sys.exit("error: variables not in the checkpoint: %s" % missing[:5])
    with tf.compat.v1.Session(graph=graph) as sess:
        saver.restore(sess, checkpoint)
        left = sess.run(uninitialized)
        if len(left):
            sys.exit("error: variables not restored: %s" % left[:5])
        print("%s: restored %d variables" % (arch, len(variables)), file=sys.stderr)
        return [sess.run(outputs, {images: b}) for b in batches]


def _full(arch, images):
    _, _, _, _, _, kwargs = ARCHS[arch]
    module = _slim_module(arch)
    logits, _ = getattr(module, arch)(images, num_classes=1001, is_training=False, **kwargs)
    return {"logits": logits}


def _global_pool(arch, images):
    import tf_slim

    _, scope_name, logits_scope, dropout_scope, _, _ = ARCHS[arch]
    module = _slim_module(arch)
    base = getattr(module, arch + "_base")
    with tf.compat.v1.variable_scope(scope_name, [images]) as scope:
        with tf_slim.arg_scope([tf_slim.batch_norm, tf_slim.dropout], is_training=False):
            net, _ = base(images, scope=scope)
            with tf.compat.v1.variable_scope("Logits"):
                net = tf.reduce_mean(net, [1, 2], keepdims=True, name="global_pool")
                features = tf.squeeze(net, [1, 2])
                net = tf_slim.dropout(net, keep_prob=0.8, scope=dropout_scope)
                logits = tf_slim.conv2d(net, 1001, [1, 1], activation_fn=None,
                                        normalizer_fn=None, scope=logits_scope)
                logits = tf.squeeze(logits, [1, 2], name="SpatialSqueeze")
    return {"logits": logits, "features": features}


def main(argv):
    if len(argv) != 5 or argv[1] not in ARCHS:
        sys.exit("usage: %s {%s} CHECKPOINT IN.npz OUT.npz" % (argv[0], ",".join(ARCHS)))
    arch, checkpoint, in_path, out_path = argv[1:]
    size = ARCHS[arch][4]
    tf.compat.v1.disable_eager_execution()
    _patch_tf215_batch_norm()
    with np.load(in_path) as data:
        keys = sorted((k for k in data.files if k.startswith("images_")),
                      key=lambda k: int(k.split("_")[1]))
        batches = [np.asarray(data[k], np.float32) for k in keys]
    if not batches:
        sys.exit("error: %s holds no images_<i>" % in_path)
    out = {}
    for key, result in zip(keys, _run(arch, checkpoint, _global_pool, batches)):
        i = key.split("_")[1]
        out["logits_" + i] = result["logits"]
        out["features_" + i] = result["features"]
    full = [(k, b) for k, b in zip(keys, batches) if b.shape[1:3] == (size, size)]
    if full:
        results = _run(arch, checkpoint, _full, [b for _, b in full], static_size=True)
        for (key, _), result in zip(full, results):
            out["full_logits_" + key.split("_")[1]] = result["logits"]
    np.savez(out_path, **out)
    print("wrote %s: %s" % (out_path, ", ".join(sorted(out))))


if __name__ == "__main__":
    main(sys.argv)
