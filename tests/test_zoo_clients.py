"""The TF2 client checks of the seeds' family, on one model of each family the zoo added.

Inception V1, ResNet V1 50 and ResNet V2 50 (the session's ``family``
modules, built from stand-ins by the real CLI) through the clients users
run: ``hub.KerasLayer`` in tf-keras fitted with ``trainable=True`` (a second
interpreter, tests/clients/keras_fit.py), ``saved_model_cli run`` on version
5's ``serving_default``, and a persistent ``tf.GradientTape``. The expected
counts come from the checked-in manifests (read off TF-Slim's nets) and
TF-Slim's arg scopes (weight decay 4e-5 for Inception, 1e-4 for ResNet),
not from our nets. The legacy ``hub.Module`` checks of the same models are
in tests/test_legacy_hub_module.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from family_support import SPECS
from hubexport.standin import load_manifest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
KERAS_FIT = REPO / "tests" / "clients" / "keras_fit.py"
CLIENT_MODELS = [m for m in ("inception_v1", "resnet_v1_50", "resnet_v2_50") if m in SPECS]
# TF-Slim's L2 weight decay (inception_utils.inception_arg_scope, resnet_utils.resnet_arg_scope).
WEIGHT_DECAY = {m: 1e-4 if m.startswith("resnet") else 4e-5 for m in CLIENT_MODELS}
LOGITS = {"inception_v1": "InceptionV1/Logits/", "resnet_v1_50": "resnet_v1_50/logits/",
          "resnet_v2_50": "resnet_v2_50/logits/"}


def _run(args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=1500)


def _images(batch, size, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, [batch, size, size, 3]).astype(np.float32)


def manifest_counts(model, kind):
    """Variables the module must hold, from the manifest: (trainable, moving, decayed)."""
    names = [v["name"] for v in load_manifest(SPECS[model].architecture)["variables"]
             if v["name"] != "global_step" and "/AuxLogits/" not in v["name"]]
    if kind == "feature_vector":
        names = [n for n in names if not n.startswith(LOGITS[model])]
    moving = [n for n in names if "/BatchNorm/moving_" in n]
    decayed = [n for n in names if n.endswith("/weights")]
    return len(names) - len(moving), len(moving), len(decayed)


@pytest.fixture(scope="module")
def keras_results(family):
    cases = []
    for model in CLIENT_MODELS:
        size = SPECS[model].image_size
        cases += [["%s/classification/5" % model, str(family.module(model, "classification", 5)),
                   True, size, WEIGHT_DECAY[model]],
                  ["%s/feature_vector/4" % model, str(family.module(model, "feature_vector", 4)),
                   True, size, WEIGHT_DECAY[model]]]
    proc = _run([sys.executable, str(KERAS_FIT), json.dumps(cases)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULTS ")][-1]
    return json.loads(line[len("RESULTS "):])


@pytest.mark.parametrize("model", CLIENT_MODELS)
@pytest.mark.parametrize("kind,version", [("classification", 5), ("feature_vector", 4)])
def test_keras_fit_trainable(keras_results, model, kind, version):
    r = keras_results["%s/%s/%d" % (model, kind, version)]
    n_trainable, n_moving, n_decay = manifest_counts(model, kind)
    assert all(np.isfinite(r["loss"]))
    assert r["n_layer_trainable"] == r["counts"]["trainable"] == n_trainable
    assert r["changed"]["trainable"] == n_trainable  # every trainable weight trained
    assert r["counts"]["moving"] == r["changed"]["moving"] == n_moving
    assert r["counts"]["other"] == 0
    assert r["n_decay"] == r["n_losses"] == n_decay
    assert r["sum_losses"] == pytest.approx(r["want_sum_losses"], rel=1e-5)
    assert r["head_changed"]


@pytest.mark.parametrize("model", CLIENT_MODELS)
def test_saved_model_cli_runs_serving_default(family, model, tmp_path):
    import tensorflow as tf
    import tensorflow_hub as hub

    path = str(family.module(model, "classification", 5))
    cli = str(VENV_BIN / "saved_model_cli")
    shown = _run([cli, "show", "--dir", path, "--tag_set", "serve",
                  "--signature_def", "serving_default"])
    assert shown.returncode == 0, shown.stderr
    assert "inputs['inputs']" in shown.stdout and "outputs['logits']" in shown.stdout
    assert "shape: (-1, -1, -1, 3)" in shown.stdout
    assert "shape: (-1, %d)" % SPECS[model].num_classes in shown.stdout
    images = _images(2, 160, seed=3)
    np.save(tmp_path / "x.npy", images)
    out = tmp_path / "out"
    proc = _run([cli, "run", "--dir", path, "--tag_set", "serve",
                 "--signature_def", "serving_default",
                 "--inputs", "inputs=%s" % (tmp_path / "x.npy"), "--outdir", str(out)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = np.load(out / "logits.npy")
    want = hub.load(path)(tf.constant(images)).numpy()
    assert got.shape == (2, SPECS[model].num_classes)
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, float(np.abs(want).max()))
    assert np.abs(want[0] - want[1]).max() > 1e-2 * float(np.abs(want).max())


@pytest.mark.parametrize("model", CLIENT_MODELS)
def test_persistent_gradient_tape(family, model):
    """Fine-tuning under a persistent tape: finite, non-zero gradients, twice the same."""
    import tensorflow as tf
    import tensorflow_hub as hub

    module = hub.load(str(family.module(model, "classification", 5)))
    images = tf.constant(_images(2, 160, seed=5))
    labels = tf.constant([3, 7])
    with tf.GradientTape(persistent=True) as tape:
        logits = module(images, training=True, batch_norm_momentum=0.9)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    variables = module.trainable_variables
    first = tape.gradient(loss, variables)
    second = tape.gradient(loss, variables)
    del tape
    assert len(variables) == manifest_counts(model, "classification")[0]
    for grads in (first, second):
        assert len(grads) == len(variables)
        for v, g in zip(variables, grads):
            assert g is not None, v.name
            assert np.all(np.isfinite(g.numpy())), v.name
            assert float(tf.reduce_max(tf.abs(g))) > 0, v.name
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
