"""Tests of the TF2 SavedModel writer (module versions 4 and 5).

The modules are written from stand-in values (hubexport.standin, seed 0) of
every variable of the real Inception V2 checkpoint as listed in the
checked-in manifest (read off TF-Slim's definition, not our net), including
``global_step`` and one more name the net does not use. Each module is checked through the clients that read it:
``hub.load``, ``hub.KerasLayer`` in tf-keras (a second interpreter with
TF_USE_LEGACY_KERAS=1), ``saved_model_cli`` and ``tf.GradientTape``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub

from client_checks import persistent_gradient_tape, saved_model_cli_matches_hub_load
from hubexport.errors import BuildError, CheckpointError, UsageError
from hubexport.formats.saved_model_2 import write_saved_model_2
from hubexport.nets import INCEPTION_INPUT_MAPPING, build_net
from hubexport.nets.layers import NetContext
from hubexport.standin import load_manifest, standin_values

REPO = Path(__file__).resolve().parents[1]
ARCH = "inception_v2"
NUM_CLASSES = 1001
IMAGE_SIZE = 224
FEATURE_SIZE = 1024
BN_LAYER = "InceptionV2/Conv2d_2b_1x1"
# A name the net never asks for (beside the manifest's global_step).
UNUSED = {"InceptionV2/AuxLogits/Conv2d_1b_1x1/weights": np.ones([1, 1, 8, 8], np.float32)}
# TF-Slim's inception_arg_scope puts weight decay on conv2d and fully_connected
# weights only; Conv2d_1a_7x7's separable weights have none.
DECAYED_LEAVES = ("weights",)


def _images(batch, size, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, [batch, size, size, 3]).astype(np.float32)


def _direct(values, images, num_classes):
    """The net run eagerly (op by op) on constants: (output, end_points)."""
    ctx = NetContext(lambda r: tf.constant(values[r.name]))
    logits, features, end_points = build_net(ARCH, ctx, tf.constant(images), num_classes)
    return (features if num_classes is None else logits).numpy(), end_points


def _direct_graph(values, images, num_classes):
    """The net built in a fresh tf.function (a graph, as modules run) on constants."""
    consts = {}

    def constant(request):
        if request.name not in consts:
            consts[request.name] = tf.constant(values[request.name])
        return consts[request.name]

    @tf.function(autograph=False)
    def run(x):
        logits, features, _ = build_net(ARCH, NetContext(constant), x, num_classes)
        return features if num_classes is None else logits

    return run(tf.constant(images)).numpy()


@pytest.fixture(scope="module")
def manifest():
    return load_manifest(ARCH)


@pytest.fixture(scope="module")
def values(manifest):
    """Stand-in values of every variable of the real checkpoint (incl. global_step)."""
    values = standin_values(manifest, seed=0)
    values.update(UNUSED)
    return values


@pytest.fixture(scope="module")
def modules(tmp_path_factory, values):
    """Paths of written modules: classification v5, feature_vector v4 and v5."""
    root = tmp_path_factory.mktemp("sm2")
    paths = {}
    for key, num_classes, serving in (("cls_v5", NUM_CLASSES, True),
                                      ("fv_v4", None, False),
                                      ("fv_v5", None, True)):
        paths[key] = str(root / key)
        write_saved_model_2(ARCH, values, paths[key], num_classes=num_classes,
                            image_size=IMAGE_SIZE, input_size="variable", serving_default=serving,
                            input_mapping=INCEPTION_INPUT_MAPPING)
    return paths


# --- writer errors ---------------------------------------------------------

def test_missing_variables_are_listed(tmp_path, values):
    partial = dict(values)
    del partial["InceptionV2/Conv2d_2b_1x1/weights"]
    del partial["InceptionV2/Mixed_5c/Branch_3/Conv2d_0b_1x1/BatchNorm/moving_mean"]
    out = tmp_path / "m"
    with pytest.raises(CheckpointError) as info:
        write_saved_model_2(ARCH, partial, str(out), num_classes=NUM_CLASSES,
                            image_size=IMAGE_SIZE, input_size="variable", serving_default=True,
                            input_mapping=INCEPTION_INPUT_MAPPING)
    message = str(info.value)
    assert "2 variable(s)" in message
    assert "InceptionV2/Conv2d_2b_1x1/weights" in message
    assert "InceptionV2/Mixed_5c/Branch_3/Conv2d_0b_1x1/BatchNorm/moving_mean" in message
    assert "\n" not in message
    assert not out.exists()


def test_wrong_shape_is_a_checkpoint_error(tmp_path, values):
    bad = dict(values)
    bad["InceptionV2/Logits/Conv2d_1c_1x1/biases"] = np.zeros([1000], np.float32)
    with pytest.raises(CheckpointError, match=r"Conv2d_1c_1x1/biases has shape \[1000\]"):
        write_saved_model_2(ARCH, bad, str(tmp_path / "m"), num_classes=NUM_CLASSES,
                            image_size=IMAGE_SIZE, input_size="variable", serving_default=False,
                            input_mapping=INCEPTION_INPUT_MAPPING)
    assert not (tmp_path / "m").exists()


def test_existing_out_dir_and_unknown_architecture(tmp_path, values):
    with pytest.raises(BuildError, match="exists already"):
        write_saved_model_2(ARCH, values, str(tmp_path), num_classes=NUM_CLASSES,
                            image_size=IMAGE_SIZE, input_size="variable", serving_default=False,
                            input_mapping=INCEPTION_INPUT_MAPPING)
    with pytest.raises(UsageError, match="unknown architecture"):
        write_saved_model_2("vgg_16", values, str(tmp_path / "m"),
                            num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, input_size="variable",
                            serving_default=False,
                            input_mapping=INCEPTION_INPUT_MAPPING)
    with pytest.raises(UsageError, match=r"input_size 'fix': use one of fixed, variable"):
        write_saved_model_2(ARCH, values, str(tmp_path / "m"), num_classes=NUM_CLASSES,
                            image_size=IMAGE_SIZE, input_size="fix", serving_default=False,
                            input_mapping=INCEPTION_INPUT_MAPPING)
    assert not (tmp_path / "m").exists()


# --- hub.load --------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("key,num_classes", [("cls_v5", NUM_CLASSES), ("fv_v4", None)])
@pytest.mark.parametrize("size", [224, 160])
def test_hub_load_matches_build_net(modules, values, key, num_classes, size):
    module = hub.load(modules[key])
    images = _images(2, size, seed=size)
    expected = _direct_graph(values, images, num_classes)
    got = module(tf.constant(images)).numpy()  # defaults: training=False, momentum 0.99
    assert got.shape == (2, NUM_CLASSES if num_classes else FEATURE_SIZE)
    assert np.abs(got - expected).max() <= 1e-5
    scale = np.abs(expected).max()
    assert scale > 1.0  # a meaningful comparison, not all zeros
    # Explicit arguments, a tensor momentum (unused in inference mode).
    got = module(tf.constant(images), training=False,
                 batch_norm_momentum=tf.constant(0.5)).numpy()
    assert np.abs(got - expected).max() <= 1e-5
    # Eager op-by-op execution rounds differently from the optimized graph
    # (fused convolution + batch norm): agreement to float32 precision,
    # relative to the outputs' magnitude (logits up to ~17 here).
    eager, _ = _direct(values, images, num_classes)
    assert np.abs(got - eager).max() <= 1e-5 * max(1.0, scale)


@pytest.mark.slow
def test_reusable_api_attributes(modules, values, manifest):
    module = hub.load(modules["cls_v5"])
    names = [v.name[:-2] for v in module.variables]
    expected = [v["name"] for v in manifest["variables"] if v["name"] != "global_step"]
    assert len(names) == len(set(names)) == len(expected) == 277
    assert set(names) == set(expected)
    trainable = [v.name[:-2] for v in module.trainable_variables]
    assert trainable == [n for n in names if "/BatchNorm/moving_" not in n]
    assert len(trainable) == 141
    assert all(v.trainable for v in module.trainable_variables)
    for v in module.variables:
        assert v.dtype == tf.float32
        np.testing.assert_array_equal(v.numpy(), values[v.name[:-2]])
    decayed = [n for n in names if n.rsplit("/", 1)[1] in DECAYED_LEAVES]
    assert len(module.regularization_losses) == len(decayed) == 69
    got = sorted(float(loss()) for loss in module.regularization_losses)
    # TF-Slim's l2_regularizer(4e-5): 4e-5 * sum(w**2) / 2.
    want = sorted(4e-5 * float(np.sum(values[n].astype(np.float64) ** 2)) / 2
                  for n in decayed)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # The feature_vector module has no logits layer.
    fv = hub.load(modules["fv_v4"])
    assert {v.name[:-2] for v in fv.variables} == set(expected) - {
        "InceptionV2/Logits/Conv2d_1c_1x1/weights", "InceptionV2/Logits/Conv2d_1c_1x1/biases"}
    assert len(fv.regularization_losses) == 68


@pytest.mark.slow
def test_no_output_dir_path_in_files(modules):
    for key, path in modules.items():
        for f in Path(path).rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                assert path.encode() not in data, f
                assert str(Path(path).parent).encode() not in data, f
        assert sorted(p.name for p in Path(path).iterdir()) == [
            "assets", "fingerprint.pb", "saved_model.pb", "variables"]


# --- training semantics ----------------------------------------------------

@pytest.mark.slow
def test_training_false_keeps_variables(modules, values):
    module = hub.load(modules["cls_v5"])
    images = tf.constant(_images(2, 160, seed=1))
    module(images, training=False, batch_norm_momentum=0.5)
    module.signatures["serving_default"](inputs=images)
    for v in module.variables:
        np.testing.assert_array_equal(v.numpy(), values[v.name[:-2]])


@pytest.mark.slow
def test_training_true_moves_moving_averages_by_momentum(modules, values):
    module = hub.load(modules["cls_v5"])
    images = _images(2, 160, seed=2)
    # A Python float; 0.75, not 0.5, so that swapping momentum and 1 - momentum fails.
    m = 0.75
    module(tf.constant(images), training=True, batch_norm_momentum=m)

    # The batch statistics of Conv2d_2b_1x1's batch norm, computed here: its
    # input is the MaxPool_2a_3x3 end point (no batch norm before it, so the
    # same in inference mode), convolved with the layer's weights.
    _, end_points = _direct(values, images, NUM_CLASSES)
    conv = tf.nn.conv2d(end_points["MaxPool_2a_3x3"], values[BN_LAYER + "/weights"],
                        strides=1, padding="SAME").numpy().astype(np.float64)
    batch_mean = conv.mean(axis=(0, 1, 2))
    n = conv.shape[0] * conv.shape[1] * conv.shape[2]
    batch_variance = conv.var(axis=(0, 1, 2)) * n / (n - 1)  # Bessel-corrected, as TF-Slim

    by_name = {v.name[:-2]: v for v in module.variables}
    old_mean = values[BN_LAYER + "/BatchNorm/moving_mean"]
    new_mean = by_name[BN_LAYER + "/BatchNorm/moving_mean"].numpy()
    np.testing.assert_allclose(new_mean, m * old_mean + (1 - m) * batch_mean,
                               rtol=1e-5, atol=1e-5)
    old_var = values[BN_LAYER + "/BatchNorm/moving_variance"]
    new_var = by_name[BN_LAYER + "/BatchNorm/moving_variance"].numpy()
    np.testing.assert_allclose(new_var, m * old_var + (1 - m) * batch_variance,
                               rtol=1e-4, atol=1e-5)
    # Every moving statistic moved; no trainable variable changed.
    for name, v in by_name.items():
        if "/BatchNorm/moving_" in name:
            assert not np.array_equal(v.numpy(), values[name]), name
        else:
            np.testing.assert_array_equal(v.numpy(), values[name])


# --- tf-keras ---------------------------------------------------------------

KERAS_FIT = REPO / "tests" / "clients" / "keras_fit.py"


def _run(args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=900,
                          **kwargs)


@pytest.fixture(scope="module")
def keras_results(modules):
    cases = [["cls_trainable", modules["cls_v5"], True, IMAGE_SIZE, 4e-5],
             ["cls_frozen", modules["cls_v5"], False, IMAGE_SIZE, 4e-5],
             ["fv_v4_trainable", modules["fv_v4"], True, IMAGE_SIZE, 4e-5]]
    proc = _run([sys.executable, str(KERAS_FIT), json.dumps(cases)])
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULTS ")][-1]
    return json.loads(line[len("RESULTS "):])


@pytest.mark.slow
@pytest.mark.parametrize("case,n_trainable,n_decay",
                         [("cls_trainable", 141, 69), ("fv_v4_trainable", 139, 68)])
def test_keras_fit_trainable(keras_results, case, n_trainable, n_decay):
    r = keras_results[case]
    assert all(np.isfinite(r["loss"]))
    assert r["n_layer_trainable"] == r["counts"]["trainable"] == n_trainable
    assert r["changed"]["trainable"] == n_trainable  # every trainable weight trained
    assert r["counts"]["moving"] == r["changed"]["moving"] == 136  # 68 batch norms
    assert r["counts"]["other"] == 0
    assert r["n_decay"] == n_decay
    assert r["n_losses"] == n_decay
    assert r["sum_losses"] == pytest.approx(r["want_sum_losses"], rel=1e-5)
    assert r["head_changed"]


@pytest.mark.slow
def test_keras_fit_frozen(keras_results):
    r = keras_results["cls_frozen"]
    assert all(np.isfinite(r["loss"]))
    assert r["n_layer_trainable"] == 0
    assert r["changed"] == {"trainable": 0, "moving": 0, "other": 0}
    assert r["counts"]["moving"] + r["counts"]["other"] == 277
    assert r["head_changed"]


# --- serving_default (version 5) -------------------------------------------

@pytest.mark.slow
def test_saved_model_cli_runs_serving_default(modules, tmp_path):
    saved_model_cli_matches_hub_load(modules["cls_v5"], NUM_CLASSES, tmp_path)


@pytest.mark.slow
def test_serving_signature_names_and_v4_has_none(modules):
    images = tf.constant(_images(1, 224, seed=4))
    fv5 = hub.load(modules["fv_v5"])
    assert list(fv5.signatures) == ["serving_default"]
    sig = fv5.signatures["serving_default"]
    assert list(sig.structured_input_signature[1]) == ["inputs"]
    out = sig(inputs=images)
    assert list(out) == ["feature_vector"]
    np.testing.assert_allclose(out["feature_vector"].numpy(), fv5(images).numpy(),
                               atol=1e-5, rtol=0)
    cls5 = hub.load(modules["cls_v5"])
    assert list(cls5.signatures["serving_default"](inputs=images)) == ["logits"]
    assert list(hub.load(modules["fv_v4"]).signatures) == []


@pytest.mark.slow
def test_persistent_gradient_tape(modules):
    """Fine-tuning under a persistent tape: finite gradients, twice (~15-35 s: TF
    builds the higher-order gradient functions of the loaded graph once)."""
    persistent_gradient_tape(modules["cls_v5"], 141)


@pytest.mark.slow
def test_verify_reads_the_variable_size_of_call(modules):
    """hubexport verify's __call__ check on these (variable-size) modules: both concrete
    functions take [-1, -1, -1, 3], so a fixed-size spec's [-1, 224, 224, 3] fails."""
    from tensorflow.core.protobuf import saved_model_pb2

    from hubexport.verify import _call_problems

    for key in ("cls_v5", "fv_v4"):
        proto = saved_model_pb2.SavedModel.FromString(
            (Path(modules[key]) / "saved_model.pb").read_bytes())
        assert _call_problems(proto, [-1, -1, -1, 3]) == []
        assert _call_problems(proto, [-1, 224, 224, 3]) == [
            "__call__ input inputs has float32 [-1, -1, -1, 3], expected float32 "
            "[-1, 224, 224, 3]"]
