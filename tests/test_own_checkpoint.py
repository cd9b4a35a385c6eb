"""Publish your own checkpoint: a "fine-tuned" TF-Slim checkpoint under your own handle.

The checkpoint is made here from TF-Slim's variable manifest of Inception V2
(hubexport/data/inception_v2_manifest.json, read off tf_slim's own net), not
from our net: a training directory as TF-Slim's ``train_image_classifier.py``
leaves it, with five classes, ``Momentum`` slots, ``ExponentialMovingAverage``
shadows of every model variable, ``global_step``, and a ``checkpoint`` state
file naming the latest of two checkpoints. ``hubexport new-spec`` writes the
spec, the CLI builds versions 3 and 5 from it, and the real clients load the
modules: ``hub.load`` (TensorFlow 2.21), the legacy ``hub.Module``
(TensorFlow 2.15, .venv-legacy) and ``hub.load`` over HTTP from ``hubexport
serve``.

The logits are checked against the checkpoint itself: the feature vector
module's features times the checkpoint's logits weights, plus its biases
(numpy); the trunk is checked against tf_slim elsewhere
(tests/test_reference_nets.py).
"""

import hashlib
import json
import os
import re
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from reference_support import legacy_python, max_rel, structured_images
from registry_support import run_cli

pytestmark = pytest.mark.slow

NAME = "flowers_inception_v2"
PREFIX = "acme/flowers/inception_v2"
LABELS = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
SCOPE = "InceptionV2"
LOGITS = SCOPE + "/Logits/Conv2d_1c_1x1/"
EMA = "/ExponentialMovingAverage"
SIZE = 224


def _training_values(seed):
    """A training checkpoint's values: the net (5 classes), Momentum slots, EMA shadows, step."""
    from hubexport.standin import load_manifest, standin_values

    net = standin_values(load_manifest("inception_v2"), seed=seed)
    net.pop("global_step", None)
    net[LOGITS + "weights"] = np.ascontiguousarray(net[LOGITS + "weights"][..., :5])
    net[LOGITS + "biases"] = np.random.default_rng(seed).normal(0, 0.5, 5).astype(np.float32)
    values = dict(net)
    for name, value in net.items():
        # Shadows: other values than the variables, so that the test can tell them apart.
        values[name + EMA] = (value * np.float32(0.9) + np.float32(0.01)).astype(np.float32)
        if not name.endswith(("moving_mean", "moving_variance")):
            values[name + "/Momentum"] = np.full_like(value, 0.5)
    values["global_step"] = np.asarray(200 * seed, np.int64)
    return net, values


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The training directory, labels, new-spec's spec, and the modules built from it."""
    from hubexport.standin import write_v2_checkpoint

    root = tmp_path_factory.mktemp("own")
    train = root / "train"
    train.mkdir()
    nets = {}
    for step, seed in ((100, 1), (200, 2)):  # the state file names the latest: step 200
        nets[step], values = _training_values(seed)
        write_v2_checkpoint(values, train / ("model.ckpt-%d" % step))
    (train / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt-200"\n'
        'all_model_checkpoint_paths: "model.ckpt-100"\n'
        'all_model_checkpoint_paths: "model.ckpt-200"\n')
    labels = root / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    specs = root / "specs"
    proc = run_cli("new-spec", NAME, "--from", "inception_v2", "--checkpoint", train,
                   "--num-classes", 5, "--labels", labels, "--handle", PREFIX,
                   "--output", specs)
    assert proc.returncode == 0, proc.stderr
    spec_file = specs / (NAME + ".yaml")
    output = root / "modules"
    for version in (3, 5):  # the README's two commands
        proc = run_cli("build", spec_file, "--version", version, "--output", output,
                       "--jobs", 2, "--json")
        assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "train": train, "labels": labels, "specs": specs,
            "spec_file": spec_file, "output": output, "nets": nets, "proc": proc}


def _module(work, kind, version):
    return work["output"] / PREFIX / kind / str(version)


def _hub_load_outputs(path, images, version):
    import tensorflow as tf
    import tensorflow_hub as hub

    module = hub.load(str(path))
    if version == 3:
        return module.signatures["default"](images=tf.constant(images))["default"].numpy()
    return module(tf.constant(images), training=False).numpy()


def test_new_spec_is_valid_commented_and_claims_no_imagenet(work):
    from hubexport.specs import load_spec_file

    text = work["spec_file"].read_text()
    spec = load_spec_file(work["spec_file"])[NAME]
    assert spec.checkpoint.local and spec.checkpoint.path == work["train"]
    assert "path: \"../train\"" in text  # relative to the spec file
    assert spec.labels == work["labels"] and spec.num_classes == 5
    assert [f.handle for f in spec.modules.values()] == [PREFIX + "/classification",
                                                         PREFIX + "/feature_vector"]
    assert sorted(spec.modules["classification"].versions) == [1, 3, 4, 5]
    assert (spec.architecture, spec.image_size, spec.feature_size) == ("inception_v2", 224, 1024)
    assert spec.card.dataset == "todo-dataset" and "TODO" in spec.card.training
    assert len(re.findall(r"^\s*# ", text, re.M)) > 20  # says what each field is
    for word in ("ImageNet", "Imagenet", "ILSVRC"):
        assert word not in text.replace(spec.card.overview, "")
    listed = run_cli("list", work["spec_file"], "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert {r["module_handle"] for r in rows} >= {PREFIX + "/classification/3",
                                                  PREFIX + "/feature_vector/5"}


def test_cards_name_the_handle_and_the_todos_not_imagenet(work):
    from hubexport.cards import parse_card

    for kind in ("classification", "feature_vector"):
        for version in (3, 5):
            card = (work["output"] / PREFIX / kind / ("%d.md" % version)).read_text()
            handle, metadata = parse_card(card)
            assert handle == "%s/%s/%d" % (PREFIX, kind, version)
            assert card.startswith("# Module acme/&zwnj;flowers/&zwnj;inception_v2/&zwnj;")
            assert metadata["dataset"] == "todo-dataset"
            assert "TODO: the name of your dataset" in card.splitlines()[1]
            assert "TODO: say what the checkpoint" in card
            assert "http://127.0.0.1:8000/%s/%s/%d" % (PREFIX, kind, version) in card
            assert "tfhub.dev/" not in card and "ILSVRC" not in card
            assert "ImageNetLabels" not in card
            if kind == "classification":
                assert "assets/labels.txt" in card and "`num_classes` = 5" in card


def test_logits_are_the_checkpoints_head_on_the_features(work):
    """hub.load of v3 and v5: logits [batch, 5] = features . W + b of the latest checkpoint."""
    images = structured_images(7, 3, SIZE, SIZE)
    net = work["nets"][200]
    w = net[LOGITS + "weights"].reshape(1024, 5).astype(np.float64)
    b = net[LOGITS + "biases"].astype(np.float64)
    for version in (3, 5):
        logits = _hub_load_outputs(_module(work, "classification", version), images, version)
        features = _hub_load_outputs(_module(work, "feature_vector", version), images, version)
        assert logits.shape == (3, 5) and features.shape == (3, 1024)
        assert max_rel(logits, features.astype(np.float64) @ w + b) < 1e-4
        assert max_rel(logits[0], logits[1]) > 1e-2  # the images give different logits
        # Not the older checkpoint's head: the state file's latest was used.
        old = work["nets"][100]
        w_old = old[LOGITS + "weights"].reshape(1024, 5)
        assert max_rel(logits, features @ w_old + old[LOGITS + "biases"]) > 1e-2


def test_labels_round_trip_in_both_formats(work):
    import tensorflow_hub as hub

    want = work["labels"].read_text()
    for kind in ("classification", "feature_vector"):
        assert (_module(work, kind, 3) / "assets" / "labels.txt").read_text() == want
        loaded = hub.load(str(_module(work, kind, 5)))
        path = loaded.labels_file.asset_path.numpy().decode()
        assert Path(path).read_text() == want
        assert Path(path).parent == _module(work, kind, 5) / "assets"


def test_legacy_hub_module_gives_the_same_logits(work, tmp_path):
    """The legacy client (TF 2.15, hub.Module) loads v3 and gives hub.load's logits."""
    images = structured_images(8, 2, SIZE, SIZE)
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent("""
        import sys, numpy as np, tensorflow.compat.v1 as tf, tensorflow_hub as hub
        tf.disable_v2_behavior()
        module_dir, images, out = sys.argv[1:]
        with tf.Graph().as_default():
            module = hub.Module(module_dir)
            assert hub.get_expected_image_size(module) == [224, 224]
            logits = module(np.load(images))
            with tf.Session() as sess:
                sess.run(tf.global_variables_initializer())
                np.save(out, sess.run(logits))
    """)
    proc = subprocess.run([legacy_python(), "-c", script,
                           str(_module(work, "classification", 3)), str(tmp_path / "images.npy"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    legacy = np.load(tmp_path / "out.npy")
    assert legacy.shape == (2, 5)
    assert max_rel(legacy, _hub_load_outputs(_module(work, "classification", 3), images, 3)) < 1e-4


def test_use_moving_averages_restores_the_shadows(work, tmp_path):
    import tensorflow_hub as hub

    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    text = work["spec_file"].read_text().replace("use_moving_averages: false",
                                                 "use_moving_averages: true")
    text = text.replace('path: "../train"', 'path: "%s"' % work["train"])
    text = text.replace('labels: "../labels.txt"', 'labels: "%s"' % work["labels"])
    (spec_dir / (NAME + ".yaml")).write_text(text)
    out = tmp_path / "out"
    proc = run_cli("build", spec_dir / (NAME + ".yaml"), "--version", 5, "--kind",
                   "classification", "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, values = _training_values(2)
    variables = {v.name.split(":")[0]: v.numpy()
                 for v in hub.load(str(out / PREFIX / "classification" / "5")).variables}
    assert len(variables) > 100
    for name, value in variables.items():
        np.testing.assert_array_equal(value, values[name + EMA], err_msg=name)
    # Without it (the module fixture's build), the variables themselves.
    plain = {v.name.split(":")[0]: v.numpy()
             for v in hub.load(str(_module(work, "classification", 5))).variables}
    for name, value in plain.items():
        np.testing.assert_array_equal(value, values[name], err_msg=name)


def test_stamps_and_verify_record_the_local_checkpoint(work):
    stamp = json.loads((work["output"] / PREFIX / "classification" / ".5.stamp").read_text())
    source = stamp["module"]["source"]
    assert source["path"] == str(work["train"] / "model.ckpt-200")
    assert sorted(source["files"]) == ["model.ckpt-200.data-00000-of-00001",
                                       "model.ckpt-200.index"]
    assert source["checksum"].startswith("sha256:") and source["pinned"] is False
    proc = run_cli("verify", work["output"], "--specs", work["specs"], "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    checks = {(m["module_handle"], c["check"]): c for m in report["modules"] for c in m["checks"]}
    assert len(report["modules"]) == 4
    for kind in ("classification", "feature_vector"):
        for version in (3, 5):
            handle = "%s/%s/%d" % (PREFIX, kind, version)
            assert checks[(handle, "labels")]["ok"]
            assert "5 labels" in checks[(handle, "labels")]["detail"]
            assert "local checkpoint" in checks[(handle, "source")]["detail"]


def test_fetch_prints_the_digest_and_a_pinned_spec_enforces_it(work, tmp_path):
    proc = run_cli("fetch", work["spec_file"], "--json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["tarball"] is None and got["pinned"] is False
    # The digest is the one the README gives the shell recipe for.
    listing = subprocess.run(["sha256sum", "model.ckpt-200.data-00000-of-00001",
                              "model.ckpt-200.index"], cwd=work["train"], capture_output=True,
                             check=True).stdout
    assert got["checksum"] == "sha256:" + hashlib.sha256(listing).hexdigest()
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    pinned = work["spec_file"].read_text().replace(
        "  # checksum: sha256:<64 hex digits>", "  checksum: %s" % got["checksum"]).replace(
        '"../train"', '"%s"' % work["train"]).replace('"../labels.txt"', '"%s"' % work["labels"])
    (spec_dir / (NAME + ".yaml")).write_text(pinned)
    ok = run_cli("fetch", spec_dir / (NAME + ".yaml"), "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["pinned"] is True, ok.stderr
    (spec_dir / (NAME + ".yaml")).write_text(pinned.replace(got["checksum"], "sha256:" + "0" * 64))
    bad = run_cli("build", spec_dir / (NAME + ".yaml"), "--output", tmp_path / "out")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1, bad.stderr
    assert "pins sha256:" + "0" * 64 in bad.stderr
    assert not (tmp_path / "out" / "acme").exists()


def test_publish_serve_and_hub_load_over_http(work, tmp_path):
    import tensorflow_hub as hub

    from registry_support import Served

    registry = tmp_path / "registry"
    proc = run_cli("publish", work["output"], "--registry", registry, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    docs = registry / "assets/docs/acme/models/flowers/inception_v2/classification/5.md"
    assert docs.read_text().startswith("# Module acme/")
    index = json.loads((registry / "index.json").read_text())
    entry = next(e for e in index["modules"] if e["module_handle"] == PREFIX + "/classification/5")
    assert entry["source"]["path"].endswith("model.ckpt-200")
    images = structured_images(9, 2, SIZE, SIZE)
    with Served(registry) as served:
        os.environ["TFHUB_CACHE_DIR"] = str(tmp_path / "hub-cache")
        try:
            module = hub.load("%s/%s/classification/5" % (served.url, PREFIX))
            logits = module(images, training=False).numpy()
        finally:
            del os.environ["TFHUB_CACHE_DIR"]
    assert logits.shape == (2, 5)
    assert max_rel(logits, _hub_load_outputs(_module(work, "classification", 5), images, 5)) < 1e-6


def _spec_copy(work, tmp_path, edit=None):
    """A copy of new-spec's spec with absolute paths, edited; returns its path."""
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir(exist_ok=True)
    text = work["spec_file"].read_text().replace('"../train"', '"%s"' % work["train"]).replace(
        '"../labels.txt"', '"%s"' % work["labels"])
    if edit:
        for old, new in edit:
            assert old in text, old
            text = text.replace(old, new)
    path = spec_dir / (NAME + ".yaml")
    path.write_text(text)
    return path


def _assert_one_line_nothing_left(proc, code, pattern, out):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert re.search(pattern, proc.stderr), proc.stderr
    left = [p for p in Path(out).rglob("*") if p.is_file() and not p.name.startswith(".hubexport")]
    assert not left, left


def _bad_checkpoint_dir(work, tmp_path, what):
    bad = tmp_path / "bad"
    bad.mkdir()
    if what == "prefix-without-data":
        os.link(work["train"] / "model.ckpt-200.index", bad / "model.ckpt-200.index")
        return bad / "model.ckpt-200"
    os.link(work["train"] / "model.ckpt-200.index", bad / "model.ckpt-200.index")
    return bad  # no 'checkpoint' state file


BAD_BUILDS = [
    ("directory-without-checkpoint-file", None, 1,
     r"bad: no 'checkpoint' file in this directory"),
    ("prefix-without-data", None, 1,
     r"model.ckpt-200: V2 checkpoint without all its data shards .*found: none"),
    ("class-count-mismatch", [("num_classes: 5", "num_classes: 6")], 1,
     r"logits layer InceptionV2/Logits/Conv2d_1c_1x1/biases holds 5 classes .* says "
     r"num_classes: 6; set num_classes: 5"),
    ("labels-wrong-count", [("num_classes: 5", "num_classes: 4")], 2,
     r"labels.txt: 5 labels \(lines\), but .* says num_classes: 4"),
    ("handle-not-publisher-name-kind", [("handle: acme/flowers/inception_v2/classification",
                                         "handle: flowers/classification")], 2,
     r"modules.classification.handle: 'flowers/classification' must look like "
     r"PUBLISHER/NAME\[/\.\.\.\]/classification"),
    ("moving-averages-missing", [("use_moving_averages: false", "use_moving_averages: true")],
     1, r"use_moving_averages is true in .*, but \d+ of the net's \d+ variables have no "
        r"moving-average shadow: InceptionV2/"),
]


@pytest.mark.parametrize("case,edit,code,pattern", BAD_BUILDS, ids=[c[0] for c in BAD_BUILDS])
def test_bad_input_gets_one_line_and_leaves_nothing(work, tmp_path, case, edit, code, pattern):
    edit = list(edit or [])
    if case in ("directory-without-checkpoint-file", "prefix-without-data"):
        edit.append(('"%s"' % work["train"], '"%s"' % _bad_checkpoint_dir(work, tmp_path, case)))
    if case == "class-count-mismatch":  # without labels, whose count is checked first
        edit.append(('labels: "%s"\n' % work["labels"], ""))
    if case == "moving-averages-missing":  # a checkpoint without shadows
        from hubexport.standin import write_v2_checkpoint

        plain = tmp_path / "plain"
        plain.mkdir()
        write_v2_checkpoint(work["nets"][200], plain / "model.ckpt-1")
        edit.append(('"%s"' % work["train"], '"%s"' % (plain / "model.ckpt-1")))
    spec = _spec_copy(work, tmp_path, edit)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("build", spec, "--version", 5, "--kind", "classification", "--output", out)
    _assert_one_line_nothing_left(proc, code, pattern, out)


NEW_SPEC_ERRORS = [
    ("handle", ["--handle", "acme"], r"--handle 'acme': expected PUBLISHER/NAME"),
    ("handle-with-kind", ["--handle", "acme/flowers/classification"], r"expected PUBLISHER/NAME"),
    ("labels-count", ["--num-classes", "4"], r"labels.txt has 5 lines, --num-classes is 4"),
    ("no-checkpoint-file", ["--checkpoint", "{root}"], r"no 'checkpoint' file in this directory"),
    ("unknown-base", ["--from", "vgg_16"], r"--from 'vgg_16': not a model or an architecture"),
    ("exists", ["--output", "{specs}"], r"exists already; pass --force"),
]


@pytest.mark.parametrize("case,args,pattern", NEW_SPEC_ERRORS, ids=[c[0] for c in NEW_SPEC_ERRORS])
def test_new_spec_refuses_bad_input(work, tmp_path, case, args, pattern):
    options = {"--from": "inception_v2", "--checkpoint": str(work["train"]), "--num-classes": "5",
               "--labels": str(work["labels"]), "--handle": PREFIX,
               "--output": str(tmp_path / "specs")}
    for flag, value in zip(args[::2], args[1::2]):
        options[flag] = value.format(root=work["root"], specs=work["specs"])
    before = work["spec_file"].read_bytes()
    proc = run_cli("new-spec", NAME, *[x for kv in options.items() for x in kv])
    assert proc.returncode in (1, 2) and proc.stderr.count("\n") == 1, proc.stderr
    assert re.search(pattern, proc.stderr), proc.stderr
    assert not (tmp_path / "specs").exists()
    assert work["spec_file"].read_bytes() == before
