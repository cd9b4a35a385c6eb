"""The TF2 client checks of the seeds' family, on one model of each family the zoo added.

Inception V1, ResNet V1 50, ResNet V2 50, MobileNet V1 0.50 at 160 pixels and
MobileNet V2 0.35 at 96 pixels (the session's ``family``
modules, built from stand-ins by the real CLI) through the clients users
run: ``hub.KerasLayer`` in tf-keras fitted with ``trainable=True`` (a second
interpreter, tests/clients/keras_fit.py), ``saved_model_cli run`` on version
5's ``serving_default``, and a persistent ``tf.GradientTape``. The expected
counts come from the checked-in manifests (read off TF-Slim's nets) and
TF-Slim's arg scopes (weight decay 4e-5 for Inception and MobileNet, 1e-4
for ResNet; MobileNet's depthwise weights carry none),
not from our nets. The legacy ``hub.Module`` checks of the same models are
in tests/test_legacy_hub_module.py.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from client_checks import (assert_trainables_moved, persistent_gradient_tape, run,
                           saved_model_cli_matches_hub_load)
from family_support import SPECS
from hubexport.standin import load_manifest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
KERAS_FIT = REPO / "tests" / "clients" / "keras_fit.py"
CLIENT_MODELS = [m for m in ("inception_v1", "resnet_v1_50", "resnet_v2_50",
                             "mobilenet_v1_050_160", "mobilenet_v2_035_96") if m in SPECS]
# TF-Slim's L2 weight decay (inception_utils.inception_arg_scope,
# resnet_utils.resnet_arg_scope, mobilenet_v1.mobilenet_v1_arg_scope,
# mobilenet.training_scope).
WEIGHT_DECAY = {m: 1e-4 if m.startswith("resnet") else 4e-5 for m in CLIENT_MODELS}
# The logits layer's scope in each checkpoint (ZOO.md section 3).
LOGITS = {"inception_v1": "InceptionV1/Logits/", "resnet_v1_50": "resnet_v1_50/logits/",
          "resnet_v2_50": "resnet_v2_50/logits/",
          "mobilenet_v1_050_160": "MobilenetV1/Logits/",
          "mobilenet_v2_035_96": "MobilenetV2/Logits/"}


def manifest_counts(model, kind):
    """Variables the module must hold, from the manifest: (trainable, moving, decayed)."""
    names = [v["name"] for v in load_manifest(SPECS[model].architecture)["variables"]
             if v["name"] != "global_step" and "/AuxLogits/" not in v["name"]]
    if kind == "feature_vector":
        names = [n for n in names if not n.startswith(LOGITS[model])]
    # Batch norm moving statistics (scoped BatchNorm, or ResNet V2's preact/postnorm).
    moving = [n for n in names if n.rsplit("/", 1)[1].startswith("moving_")]
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
    proc = run([sys.executable, str(KERAS_FIT), json.dumps(cases)])
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
    assert_trainables_moved(n_trainable, r["changed"]["trainable"], r["unchanged_trainable"])
    assert r["counts"]["moving"] == r["changed"]["moving"] == n_moving
    assert r["counts"]["other"] == 0
    assert r["n_decay"] == r["n_losses"] == n_decay
    assert r["sum_losses"] == pytest.approx(r["want_sum_losses"], rel=1e-5)
    assert r["head_changed"]


@pytest.mark.parametrize("model", CLIENT_MODELS)
def test_saved_model_cli_runs_serving_default(family, model, tmp_path):
    spec = SPECS[model]
    fixed = spec.modules["classification"].versions[5].input_size == "fixed"
    saved_model_cli_matches_hub_load(str(family.module(model, "classification", 5)),
                                     spec.num_classes, tmp_path,
                                     fixed_size=spec.image_size if fixed else None)


@pytest.mark.parametrize("model", CLIENT_MODELS)
def test_persistent_gradient_tape(family, model):
    """Fine-tuning under a persistent tape: finite, non-zero gradients, twice the same."""
    spec = SPECS[model]
    fixed = spec.modules["classification"].versions[5].input_size == "fixed"
    persistent_gradient_tape(str(family.module(model, "classification", 5)),
                             manifest_counts(model, "classification")[0],
                             size=spec.image_size if fixed else 160)
