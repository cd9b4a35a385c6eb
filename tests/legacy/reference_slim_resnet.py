"""Reference outputs of TF-Slim's own ResNet V1 / V2 (runs in the legacy venv).

Independent reference for tests/test_reference_resnet.py: this script builds
``tf_slim.nets.resnet_v1.resnet_v1_D`` or ``tf_slim.nets.resnet_v2.resnet_v2_D``
(PyPI tf-slim 1.1.0, TensorFlow 2.15) unchanged, in a TF1 graph under that
module's ``resnet_arg_scope()``, with ``global_pool=True``,
``is_training=False`` and the checkpoint's class count (1000 for V1, 1001
for V2, read off the checkpoint's ``<scope>/logits/biases``), on a
[None, None, None, 3] float32 placeholder; restores a checkpoint into it with
``tf.compat.v1.train.Saver`` (fails if any variable of TF-Slim's graph is not
restored) and runs fixed images.

Outputs per image set ``i``:
  * ``logits_<i>``: float32 [batch, classes], TF-Slim's net output
    [batch, 1, 1, classes] squeezed;
  * ``features_<i>``: float32 [batch, 2048], TF-Slim's global average pool
    (tf-slim 1.1.0 does not list it among its end points: the tensor
    ``<scope>/pool5``, taken for V2 after ``postnorm``) squeezed;
  * ``block_shapes_<i>``: int64 [4, 3], height, width and channels of the
    end points ``<scope>/block1`` .. ``block4``.
Once per architecture, ``end_points``: the names of TF-Slim's end points
(str array, in its order, ``predictions`` included).

Usage (with the legacy interpreter; several architectures per process save
TensorFlow's start-up):
    python reference_slim_resnet.py ARCH CHECKPOINT IN.npz OUT.npz \\
        [ARCH CHECKPOINT IN.npz OUT.npz ...]

ARCH is e.g. ``resnet_v1_50`` or ``resnet_v2_152``. IN.npz holds
``images_<i>``: float32 [batch, height, width, 3] ALREADY in the checkpoint's
input range (V1: RGB in [0, 255] minus the VGG means; V2: [-1, 1]).
"""

import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

_ARCH = re.compile(r"^resnet_v([12])_(50|101|152)$")


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


def run(arch, checkpoint, batches):
    """Runs TF-Slim's ``arch`` restored from ``checkpoint`` on each batch.

    Returns:
      (results, end_point_names): results a list of dicts (``logits``,
      ``features``, ``block_shapes``) per batch.
    """
    import importlib

    import tf_slim

    match = _ARCH.match(arch)
    if not match:
        sys.exit("error: unknown architecture %r (expected resnet_v1_50 ... resnet_v2_152)" % arch)
    module = importlib.import_module("tf_slim.nets.resnet_v" + match.group(1))
    reader = tf.compat.v1.train.NewCheckpointReader(checkpoint)
    num_classes = reader.get_variable_to_shape_map()[arch + "/logits/biases"][0]

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        with tf_slim.arg_scope(module.resnet_arg_scope()):
            net, end_points = getattr(module, arch)(
                images, num_classes=num_classes, is_training=False, global_pool=True)
        pool = graph.get_tensor_by_name(arch + "/pool5:0")
        assert pool.shape.as_list() == [None, 1, 1, 2048], pool.shape
        outputs = {
            "logits": tf.squeeze(net, [1, 2]),
            "features": tf.squeeze(pool, [1, 2]),
            "block_shapes": tf.stack([tf.shape(end_points["%s/block%d" % (arch, b)],
                                               out_type=tf.int64)[1:]
                                      for b in (1, 2, 3, 4)]),
        }
        saver = tf.compat.v1.train.Saver()  # every global variable, by name
        uninitialized = tf.compat.v1.report_uninitialized_variables()
    with tf.compat.v1.Session(graph=graph) as sess:
        saver.restore(sess, checkpoint)
        missing = sess.run(uninitialized)
        if len(missing):
            sys.exit("error: variables not restored: %s" % missing[:5])
        results = [sess.run(outputs, {images: b}) for b in batches]
    return results, list(end_points)


def main(argv):
    args = argv[1:]
    if not args or len(args) % 4:
        sys.exit("usage: %s ARCH CHECKPOINT IN.npz OUT.npz [ARCH CHECKPOINT IN.npz OUT.npz ...]"
                 % argv[0])
    tf.compat.v1.disable_eager_execution()
    _patch_tf215_batch_norm()
    for j in range(0, len(args), 4):
        arch, checkpoint, in_path, out_path = args[j:j + 4]
        with np.load(in_path) as data:
            keys = sorted((k for k in data.files if k.startswith("images_")),
                          key=lambda k: int(k.split("_")[1]))
            batches = [np.asarray(data[k], np.float32) for k in keys]
        results, names = run(arch, checkpoint, batches)
        out = {"end_points": np.array(names)}
        for key, result in zip(keys, results):
            i = key.split("_")[1]
            for name, value in result.items():
                out["%s_%s" % (name, i)] = value
        np.savez(out_path, **out)
        print("%s: wrote %s: %s" % (arch, out_path, ", ".join(sorted(out))))


if __name__ == "__main__":
    main(sys.argv)
