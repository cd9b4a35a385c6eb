"""Reference outputs of TF-Slim's own Inception V2 (runs in the legacy venv).

Independent reference for tests/test_reference_nets.py: this script builds
``tf_slim.nets.inception_v2`` (PyPI tf-slim 1.1.0, TensorFlow 2.15) in a TF1
graph under ``inception_v2_arg_scope()`` with ``is_training=False``, restores
a checkpoint into it with ``tf.compat.v1.train.Saver`` (every variable of
TF-Slim's graph must be in the checkpoint) and runs fixed images.

tf-slim 1.1.0's ``inception_v2()`` has no ``global_pool`` option: its head
is a 7x7 VALID average pool, equal to global pooling only for a 7x7 final
map (224x224 inputs). So two graphs are run:
  * ``full``: ``tf_slim.nets.inception_v2.inception_v2(num_classes=1001)``
    unchanged, on the image sets of height and width 224 (key
    ``full_logits_<i>``);
  * ``global``: ``tf_slim.nets.inception_v2.inception_v2_base`` plus the
    ``global_pool=True`` head of TF-Slim's research/slim version
    (``reduce_mean`` over height and width, dropout (identity at
    inference), ``slim.conv2d(1001, [1, 1], activation_fn=None,
    normalizer_fn=None, scope='Conv2d_1c_1x1')`` under ``InceptionV2/Logits``),
    on every image set, any size (keys ``logits_<i>``, ``features_<i>``).

Usage (with the legacy interpreter):
    python reference_inception_v2.py CHECKPOINT IN.npz OUT.npz

IN.npz holds ``images_<i>``: float32 [batch, height, width, 3] in [-1, 1]
(TF-Slim's input range). OUT.npz receives float32 ``logits_<i>`` [batch,
1001], ``features_<i>`` [batch, 1024] (the pooled ``Mixed_5c``) and, for
224x224 sets, ``full_logits_<i>``.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


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


def _run(checkpoint, build, batches, static_size=False):
    """Builds ``build(images)`` -> dict of tensors in a fresh graph; runs each batch.

    The images placeholder is [None, None, None, 3], or with ``static_size``
    [None, height, width, 3] of the (equally sized) batches.
    """
    import tf_slim
    from tf_slim.nets import inception_v2 as slim_v2

    graph = tf.Graph()
    with graph.as_default():
        shape = [None] + list(batches[0].shape[1:]) if static_size else [None, None, None, 3]
        images = tf.compat.v1.placeholder(tf.float32, shape)
        with tf_slim.arg_scope(slim_v2.inception_v2_arg_scope()):
            outputs = build(images, tf_slim, slim_v2)
        saver = tf.compat.v1.train.Saver()  # every global variable, by name
        uninitialized = tf.compat.v1.report_uninitialized_variables()
    with tf.compat.v1.Session(graph=graph) as sess:
        saver.restore(sess, checkpoint)
        missing = sess.run(uninitialized)
        if len(missing):
            sys.exit("error: variables not restored: %s" % missing[:5])
        return [sess.run(outputs, {images: b}) for b in batches]


def _full(images, tf_slim, slim_v2):
    logits, _ = slim_v2.inception_v2(images, num_classes=1001, is_training=False)
    return {"logits": logits}


def _global_pool(images, tf_slim, slim_v2):
    with tf.compat.v1.variable_scope("InceptionV2", [images]) as scope:
        with tf_slim.arg_scope([tf_slim.batch_norm, tf_slim.dropout], is_training=False):
            net, _ = slim_v2.inception_v2_base(images, scope=scope)
            with tf.compat.v1.variable_scope("Logits"):
                net = tf.reduce_mean(net, [1, 2], keepdims=True, name="global_pool")
                features = tf.squeeze(net, [1, 2])
                net = tf_slim.dropout(net, keep_prob=0.8, scope="Dropout_1b")
                logits = tf_slim.conv2d(net, 1001, [1, 1], activation_fn=None,
                                        normalizer_fn=None, scope="Conv2d_1c_1x1")
                logits = tf.squeeze(logits, [1, 2], name="SpatialSqueeze")
    return {"logits": logits, "features": features}


def main(argv):
    if len(argv) != 4:
        sys.exit("usage: %s CHECKPOINT IN.npz OUT.npz" % argv[0])
    checkpoint, in_path, out_path = argv[1:]
    tf.compat.v1.disable_eager_execution()
    _patch_tf215_batch_norm()
    with np.load(in_path) as data:
        keys = sorted((k for k in data.files if k.startswith("images_")),
                      key=lambda k: int(k.split("_")[1]))
        batches = [np.asarray(data[k], np.float32) for k in keys]
    out = {}
    for key, result in zip(keys, _run(checkpoint, _global_pool, batches)):
        i = key.split("_")[1]
        out["logits_" + i] = result["logits"]
        out["features_" + i] = result["features"]
    full = [(k, b) for k, b in zip(keys, batches) if b.shape[1:3] == (224, 224)]
    if full:
        results = _run(checkpoint, _full, [b for _, b in full], static_size=True)
        for (key, _), result in zip(full, results):
            out["full_logits_" + key.split("_")[1]] = result["logits"]
    np.savez(out_path, **out)
    print("wrote %s: %s" % (out_path, ", ".join(sorted(out))))


if __name__ == "__main__":
    main(sys.argv)
