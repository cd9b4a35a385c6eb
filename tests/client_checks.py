"""Checks of a TF2 module (version 5) through the clients users run, shared by several tests.

* :func:`saved_model_cli_matches_hub_load`: ``saved_model_cli show`` and
  ``run`` on the ``serving_default`` signature, against ``hub.load``;
* :func:`persistent_gradient_tape`: fine-tuning arithmetic under a
  persistent ``tf.GradientTape``;
* :func:`assert_trainables_moved`: after optimizer steps, every trainable
  variable changed, but for a few batch norm offsets or scales.
Each asserts what it checks; tests/test_saved_model_2.py (the writer's own
modules) and tests/test_zoo_clients.py (the family's) call them.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

VENV_BIN = Path(sys.executable).parent


def run(args, timeout=1500):
    """Runs a command with TensorFlow's start-up chatter off; returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def assert_trainables_moved(n_trainable, n_changed, unchanged):
    """Every trainable variable changed in a few optimizer steps, but for a few batch norm ones.

    A batch norm offset or scale whose channel's ReLU6 is saturated or dead
    on every image of one small batch gets no gradient (seen on MobileNet V2
    0.35/96's random stand-in weights: 2 of 156 in hub.KerasLayer, 1 of 158
    in hub.Module); at most 2% of the trainables may be such, nothing else.

    Args:
      n_trainable: the number of trainable variables (int).
      n_changed: how many of them changed (int).
      unchanged: names of those that did not (list of str).
    """
    assert n_changed == n_trainable - len(unchanged), (n_changed, n_trainable, unchanged)
    assert all(n.endswith(("BatchNorm/beta", "BatchNorm/gamma")) for n in unchanged), unchanged
    assert len(unchanged) <= 0.02 * n_trainable, unchanged


def images(batch, size, seed):
    """float32 [batch, size, size, 3], uniform in [0, 1]."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, [batch, size, size, 3]).astype(np.float32)


def saved_model_cli_matches_hub_load(path, num_classes, tmp_path, fixed_size=None):
    """``saved_model_cli`` shows and runs serving_default; its logits equal hub.load's.

    Args:
      path: a classification module of version 5 (str).
      num_classes: its logits' length.
      tmp_path: a scratch directory (Path).
      fixed_size: the module's fixed image size in pixels, or None for a
        variable-size module (then images of 160 x 160 pixels are run).
    """
    import tensorflow as tf
    import tensorflow_hub as hub

    cli = str(VENV_BIN / "saved_model_cli")
    shown = run([cli, "show", "--dir", path, "--tag_set", "serve",
                 "--signature_def", "serving_default"])
    assert shown.returncode == 0, shown.stderr
    assert "inputs['inputs']" in shown.stdout and "outputs['logits']" in shown.stdout
    dims = "%d, %d" % (fixed_size, fixed_size) if fixed_size else "-1, -1"
    assert "shape: (-1, %s, 3)" % dims in shown.stdout
    assert "shape: (-1, %d)" % num_classes in shown.stdout
    batch = images(2, fixed_size or 160, seed=3)
    np.save(tmp_path / "x.npy", batch)
    out = tmp_path / "out"
    proc = run([cli, "run", "--dir", path, "--tag_set", "serve",
                "--signature_def", "serving_default",
                "--inputs", "inputs=%s" % (tmp_path / "x.npy"), "--outdir", str(out)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = np.load(out / "logits.npy")
    want = hub.load(path)(tf.constant(batch)).numpy()
    assert got.shape == (2, num_classes)
    scale = float(np.abs(want).max())
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, scale)
    assert np.abs(want[0] - want[1]).max() > 1e-2 * scale  # the two images differ


def persistent_gradient_tape(path, n_trainable, size=160):
    """Finite, non-zero gradients of every trainable variable, twice the same.

    Args:
      path: a classification module of version 5 (str).
      n_trainable: the number of trainable variables it must have.
      size: image height and width in pixels (a fixed-size module's size).
    """
    import tensorflow as tf
    import tensorflow_hub as hub

    module = hub.load(path)
    batch = tf.constant(images(2, size, seed=5))
    labels = tf.constant([3, 7])
    with tf.GradientTape(persistent=True) as tape:
        logits = module(batch, training=True, batch_norm_momentum=0.9)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    variables = module.trainable_variables
    first = tape.gradient(loss, variables)
    second = tape.gradient(loss, variables)
    del tape
    assert len(variables) == n_trainable
    for grads in (first, second):
        assert len(grads) == len(variables)
        for v, g in zip(variables, grads):
            assert g is not None, v.name
            assert np.all(np.isfinite(g.numpy())), v.name
            assert float(tf.reduce_max(tf.abs(g))) > 0, v.name
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
