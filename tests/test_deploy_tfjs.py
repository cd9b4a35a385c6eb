"""TF.js graph models from `hubexport build --deploy tfjs`, run in Node.js (issue 13).

The variants are written by the real CLI (``hubexport build MODEL...
--version V --kind KIND --deploy tfjs``) into a build output of hard links
to the session family's modules (up to date, so only the variants are
written): every TF.js variant of the seeds' family (Inception V2 and
Inception-ResNet-V2, both kinds, versions 1 and 3, float32 / float16 /
uint8 weights) and of one module of each net family the zoo added. The
output is served on 127.0.0.1, and each variant is loaded as an app loads
tfhub.dev's, ``tf.loadGraphModel(URL, {fromTFHub: true})`` (which asks for
``URL/model.json?tfjs-format=file`` and each shard with that query), by
TensorFlow.js 4.22.0 in Node.js (tests/tfjs/run_graph_model.mjs; npm ci
from tests/tfjs/package-lock.json, `make install-tfjs`) on the wasm backend
(its binary ships in the npm package), and the float32 variants of the
smaller nets on the cpu backend too (plain JavaScript: about 0.2 GFLOP/s
here, a minute per Inception-ResNet-V2 image). The variants are served as
users get them: ``hubexport publish`` puts them into a registry of their
own and ``hubexport serve`` (its own process, on 127.0.0.1) answers those
requests. The
reference is ``hub.load`` of the parent module in TensorFlow 2.21 (an
implementation we did not write) on the same structured images: float32 to
1e-4 relative, the quantized variants to the figure their card states
(measured at build time on other images) times 1.5, and each image's output
nearer its own module output than the other images'.
"""

import hashlib
import json
import shutil
import subprocess
import tarfile

import numpy as np
import pytest

from family_support import SPECS
from reference_support import REPO, max_rel, structured_images
from registry_support import cli_server, published_variants, run_cli, small_output

pytestmark = pytest.mark.slow

TFJS_DIR = REPO / "tests" / "tfjs"
SEEDS = ("inception_v2", "inception_resnet_v2")
# (model, kind, version): the seeds' every TF.js parent, and one module of
# each net family the zoo added.
CASES = [(m, k, v) for m in SEEDS for k in ("classification", "feature_vector") for v in (1, 3)]
CASES += [("inception_v1", "classification", 3), ("inception_v3", "feature_vector", 1),
          ("resnet_v1_50", "classification", 3), ("resnet_v2_50", "feature_vector", 3),
          ("mobilenet_v1_025_128", "classification", 1),
          ("mobilenet_v2_035_96", "feature_vector", 2)]
CASES = [c for c in CASES if c[0] in SPECS]  # all, unless HUBEXPORT_TEST_MODELS narrows the family
VARIANTS = ("default", "float16", "uint8")
VARIANT_CASES = [c + (v,) for c in CASES for v in VARIANTS]
CPU_CASES = [c for c in CASES if c[0].startswith("mobilenet")
             or c == ("inception_v2", "classification", 3)]
# The variant the registry checks publish twice and verify in full (a small net).
SMALL_CASE = next((c for c in CASES if c[0].startswith("mobilenet")), CASES[0])
FLOAT32_TOLERANCE = 1e-4
N_IMAGES = 2


def variant_handle(model, kind, version, variant):
    return "google/tfjs-model/imagenet/%s/%s/%d/%s/1" % (model, kind, version, variant)


@pytest.fixture(scope="module")
def deployed(family, tmp_path_factory):
    """(output Path, {handle: build --json result}, {(model, kind, version): (images, outputs)}).

    The output (about 1 GB of variants) is removed when the module's tests end.
    """
    import tensorflow as tf
    import tensorflow_hub as hub

    root = tmp_path_factory.mktemp("tfjs")
    output = small_output(family, root / "out", CASES)
    results = {}
    groups = sorted({(k, v) for _, k, v in CASES})
    for kind, version in groups:
        models = [m for m, k, v in CASES if (k, v) == (kind, version)]
        proc = run_cli("build", *models, "--version", version, "--kind", kind, "--deploy",
                       "tfjs", "--jobs", "2", "--json", "--specs", family.specs_dir,
                       "--cache-dir", family.cache_dir, "--output", output)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.update({r["module_handle"]: r for r in json.loads(proc.stdout)})
    expected = {}
    for index, (model, kind, version) in enumerate(CASES):
        size = family.spec(model).image_size
        images = structured_images(31 + index, N_IMAGES, size, size)
        loaded = hub.load(str(output / "google" / "imagenet" / model / kind / str(version)))
        expected[(model, kind, version)] = (images, loaded.signatures["default"](
            images=tf.constant(images))["default"].numpy())
    yield output, results, expected
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def node_run(deployed, served, tmp_path_factory):
    """run(model, kind, version, variant, backend) -> (outputs array, report dict), by Node.js."""
    node = shutil.which("node")
    assert node, "node not found (Node.js 20 runs the TF.js checks)"
    assert (TFJS_DIR / "node_modules" / "@tensorflow" / "tfjs").is_dir(), (
        "TensorFlow.js is not installed: run `make install-tfjs` (npm ci in tests/tfjs)")
    work = tmp_path_factory.mktemp("node")
    _, _, expected = deployed

    def run(model, kind, version, variant, backend="wasm"):
        images, _ = expected[(model, kind, version)]
        images_file = work / "images.f32"
        images.astype("<f4").tofile(images_file)
        out = work / "out.json"
        url = "%s/%s" % (served["url"], variant_handle(model, kind, version, variant))
        proc = subprocess.run([node, str(TFJS_DIR / "run_graph_model.mjs"), url,
                               str(images_file), str(len(images)), str(images.shape[1]),
                               str(images.shape[2]), str(out), backend, "1"],
                              capture_output=True, text=True, timeout=900, cwd=TFJS_DIR)
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(out.read_text())
        return np.array(report["values"], np.float32).reshape(report["shape"]), report

    return run


@pytest.fixture(scope="module")
def served(deployed, tmp_path_factory):
    """The TF.js variants published into a registry of their own, served by ``hubexport serve``.

    Yields {"url": base URL, "registry": Path, "published": publish --json}; the
    registry (about 2 GB: files and archives) is removed when the module's tests end.
    """
    import os

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        os.environ.pop(var, None)
    root = tmp_path_factory.mktemp("tfjs-registry")
    registry = root / "registry"
    published = published_variants(deployed[0], "tfjs-model", registry)
    with cli_server(registry) as url:
        yield {"url": url, "registry": registry, "published": published}
    shutil.rmtree(root, ignore_errors=True)


def _stamp(output, model, kind, version, variant):
    path = output / variant_handle(model, kind, version, variant)
    return json.loads((path.parent / ".1.stamp").read_text())["variant"]


def test_build_writes_each_variant_with_card_and_stamp(deployed, family):
    from hubexport.cards import METADATA_RE

    output, results, _ = deployed
    for model, kind, version in CASES:
        assert results["google/imagenet/%s/%s/%d" % (model, kind, version)]["status"] == \
            "up-to-date"
        for variant in VARIANTS:
            handle = variant_handle(model, kind, version, variant)
            r = results[handle]
            assert r["status"] == "built" and r["deploy"] == "tfjs", r
            path = output / handle
            model_json = json.loads((path / "model.json").read_text())
            assert model_json["format"] == "graph-model"
            (group,) = model_json["weightsManifest"]
            shards = sorted(p.name for p in path.iterdir() if p.name != "model.json")
            assert shards == sorted(group["paths"])
            assert all((path / s).stat().st_size <= 4 * 1024 * 1024 for s in shards)
            quantized = {w.get("quantization", {}).get("dtype") for w in group["weights"]
                         if w["dtype"] == "float32"}
            assert quantized == {None if variant == "default" else variant}
            record = _stamp(output, model, kind, version, variant)
            assert record["parent_module"] == "google/imagenet/%s/%s/%d" % (model, kind, version)
            assert sorted(record["files"]) == sorted(shards + ["model.json"])
            card = (path.parent / "1.md").read_text()
            assert card.splitlines()[0] == "# Tfjs " + "/&zwnj;".join(
                ("google/imagenet/%s/%s/%d/%s" % (model, kind, version, variant)).split("/")) \
                + "/1"
            meta = dict(METADATA_RE.findall(card))
            assert meta["parent-model"] == record["parent_module"]
            assert meta["format"] == "tfjs" and meta["asset-path"] == "1/model.json"
            assert "%.3g of the largest output" % record["probe"]["max_rel_diff"] in card
    # Shards: a large model's float32 weights fill several 4 MiB files.
    if "inception_resnet_v2" in SPECS:
        record = _stamp(output, "inception_resnet_v2", "classification", 1, "default")
        assert len(record["files"]) > 40


@pytest.mark.parametrize("model,kind,version,variant", VARIANT_CASES,
                         ids=["/".join(map(str, c)) for c in VARIANT_CASES])
def test_variant_in_tfjs_matches_the_module(deployed, node_run, family, model, kind, version,
                                            variant):
    output, _, expected = deployed
    images, want = expected[(model, kind, version)]
    got, report = node_run(model, kind, version, variant)
    assert report["backend"] == "wasm" and report["version"] == "4.22.0"
    spec = family.spec(model)
    n = spec.num_classes if kind == "classification" else spec.feature_size
    size = -1 if spec.modules[kind].versions[version].input_size == "variable" else \
        spec.image_size
    assert report["inputs"] == [["images", [-1, size, size, 3], "float32"]]
    assert len(report["outputs"]) == 1
    assert got.shape == want.shape == (N_IMAGES, n)
    # The images' outputs differ by far more than the tolerances: the checks can fail.
    assert max_rel(want[0], want[1]) > 100 * FLOAT32_TOLERANCE
    if variant == "default":
        assert max_rel(got, want) < FLOAT32_TOLERANCE
        return
    stated = _stamp(output, model, kind, version, variant)["probe"]["max_rel_diff"]
    assert stated > 1e-5  # quantized weights cost something
    for i in range(N_IMAGES):
        err = max_rel(got[i], want[i])
        assert err < 1.5 * stated, (i, err, stated)  # what the card states holds in TF.js
        others = [max_rel(got[i], want[j]) for j in range(N_IMAGES) if j != i]
        assert err < min(others), (i, err, others)  # it tells the images apart


@pytest.mark.parametrize("model,kind,version", CPU_CASES,
                         ids=["/".join(map(str, c)) for c in CPU_CASES])
def test_float32_variant_on_the_cpu_backend(deployed, node_run, model, kind, version):
    _, _, expected = deployed
    _, want = expected[(model, kind, version)]
    got, report = node_run(model, kind, version, "default", backend="cpu")
    assert report["backend"] == "cpu"
    assert max_rel(got, want) < FLOAT32_TOLERANCE


def test_verify_passes_the_variants_and_names_a_damaged_shard(deployed, family, tmp_path):
    """`hubexport verify DIR` on TF.js variants; a shard cut short fails, saying why."""
    from registry_support import link_copy, replace_file

    from hubexport.verify import verify

    output, _, _ = deployed
    model, kind, version = [c for c in CASES if c[0].startswith("mobilenet")][0] \
        if any(c[0].startswith("mobilenet") for c in CASES) else CASES[0]
    for variant in VARIANTS:
        report = verify(output / variant_handle(model, kind, version, variant),
                        specs_dir=family.specs_dir)
        (m,) = report.modules
        assert report.ok, m.failures
        assert [c.name for c in m.checks] == ["file", "graph_model", "inference", "card"]
        assert "the card states" in m.checks[2].detail
    handle = variant_handle(model, kind, version, "uint8")
    copy = tmp_path / "out"
    link_copy(output / handle, copy / handle)
    for name in ("1.md", ".1.stamp"):
        link_copy(output / handle.rsplit("/", 1)[0] / name, copy / handle.rsplit("/", 1)[0] / name)
    link_copy(output / "google" / "imagenet" / model / kind / str(version),
              copy / "google" / "imagenet" / model / kind / str(version))
    shard = sorted((copy / handle).glob("group1-shard*.bin"))[-1]
    replace_file(shard, shard.read_bytes()[:-4])
    (m,) = verify(copy / handle, specs_dir=family.specs_dir).modules
    assert m.failures[0].startswith("file: its files differ from what its stamp records")
    assert "the shards end before weight" in m.failures[1] or "shards hold" in m.failures[1]


def test_publish_indexes_each_variant_with_its_parent_sizes_and_sha256(deployed, served):
    output, _, _ = deployed
    registry = served["registry"]
    index = json.loads((registry / "index.json").read_text())
    entries = {e["module_handle"]: e for e in index["modules"]}
    assert sorted(entries) == sorted(variant_handle(*c) for c in VARIANT_CASES)
    assert {m["status"] for m in served["published"]["modules"]} == {"published"}
    for model, kind, version, variant in VARIANT_CASES:
        handle = variant_handle(model, kind, version, variant)
        e, record = entries[handle], _stamp(output, model, kind, version, variant)
        assert (e["format"], e["parent_module"], e["variant"], e["quantization"]) == (
            "tfjs", "google/imagenet/%s/%s/%d" % (model, kind, version), variant,
            "float32" if variant == "default" else variant)
        assert e["files"] == record["files"] and e["module_size"] == record["size"]
        assert e["probe"] == record["probe"] and e["source"] == record["source"]
        assert e["source"]["filename"].endswith((".tar.gz", ".tgz"))
        archive = registry / e["archive"]
        assert e["archive"] == handle + ".tar.gz" and e["module_dir"] == handle
        assert e["size"] == archive.stat().st_size
        assert e["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
        with tarfile.open(archive) as tar:
            assert sorted(tar.getnames()) == sorted(record["files"])
        for name, sha in record["files"].items():
            assert hashlib.sha256((registry / handle / name).read_bytes()).hexdigest() == sha
        card = registry / "assets/docs/google/models" / (handle.split("/", 1)[1] + ".md")
        assert card.read_bytes() == (output / handle).with_suffix(".md").read_bytes()
    again = run_cli("publish", str(registry) + "-output", "--registry", registry, "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert {m["status"] for m in json.loads(again.stdout)["modules"]} == {"unchanged"}


def test_serve_answers_what_tfjs_asks_for(served):
    import requests

    handle = variant_handle(*SMALL_CASE, "uint8")
    url = "%s/%s" % (served["url"], handle)
    registry = served["registry"]
    model = requests.get(url + "/model.json", params={"tfjs-format": "file"}, timeout=60)
    assert model.status_code == 200 and model.headers["Content-Type"] == "application/json"
    assert model.headers["Access-Control-Allow-Origin"] == "*"
    assert model.content == (registry / handle / "model.json").read_bytes()
    for shard in model.json()["weightsManifest"][0]["paths"]:
        got = requests.get(url + "/" + shard, params={"tfjs-format": "file"}, timeout=60)
        assert got.status_code == 200 and got.content == (registry / handle / shard).read_bytes()
    packed = requests.get(url, params={"tfjs-format": "compressed"}, timeout=60)
    assert packed.status_code == 200 and packed.headers["Content-Type"] == "application/gzip"
    assert packed.content == (registry / (handle + ".tar.gz")).read_bytes()
    card = requests.get(url, timeout=60)
    assert card.status_code == 200 and card.text.startswith("# Tfjs ")
    for params in ({"tfjs-format": "zip"}, {"tf-hub-format": "compressed"}):
        bad = requests.get(url, params=params, timeout=60)
        assert bad.status_code == 400 and "tfjs-format=compressed" in bad.text, bad.text
    bad = requests.get(url + "/model.json", params={"tfjs-format": "compressed"}, timeout=60)
    assert bad.status_code == 400 and "tfjs-format=file" in bad.text
    assert requests.get(url + "/group9-shard1of1.bin", timeout=60).status_code == 404


def test_variant_archives_are_reproducible_and_verify_passes_registry_and_url(
        deployed, served, family, tmp_path):
    """Two publishes of one variant give the same bytes; `hubexport verify` on the registry,
    its served URL and a served variant; a damaged shard is named and not served."""
    from registry_support import link_copy, replace_file

    from hubexport.verify import verify

    output, _, _ = deployed
    handle = variant_handle(*SMALL_CASE, "float16")
    parent = "google/imagenet/%s/%s/%d" % SMALL_CASE
    one = tmp_path / "one"
    link_copy(output / handle, one / handle)
    for name in ("1.md", ".1.stamp"):
        link_copy(output / handle.rsplit("/", 1)[0] / name, one / handle.rsplit("/", 1)[0] / name)
    link_copy(output / parent, one / parent)  # with its parent: verify compares them
    for name in ("%d.md" % SMALL_CASE[2], ".%d.stamp" % SMALL_CASE[2]):
        link_copy(output / parent.rsplit("/", 1)[0] / name, one / parent.rsplit("/", 1)[0] / name)
    archives = []
    for n in (1, 2):
        proc = run_cli("publish", one, "--registry", tmp_path / ("r%d" % n), "--json")
        assert proc.returncode == 0, proc.stderr[-2000:]
        archives.append((tmp_path / ("r%d" % n) / (handle + ".tar.gz")).read_bytes())
    assert archives[0] == archives[1] == (served["registry"] / (handle + ".tar.gz")).read_bytes()
    # A variant whose files are not what its stamp records is refused, and nothing is written.
    changed = tmp_path / "changed"
    link_copy(one, changed)
    model_json = changed / handle / "model.json"
    replace_file(model_json, model_json.read_bytes().replace(b'"graph-model"', b'"graph-modeL"'))
    proc = run_cli("publish", changed, "--registry", tmp_path / "r3")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "changed since it was built" in proc.stderr and "--deploy tfjs --force" in proc.stderr
    assert not (tmp_path / "r3" / "index.json").exists()
    report = verify(tmp_path / "r1", specs_dir=family.specs_dir)
    assert report.ok, report.lines()
    (m,) = [m for m in report.modules if m.module_handle == handle]
    assert [c.name for c in m.checks] == ["index", "archive", "file", "graph_model",
                                          "inference", "card"]
    assert "from the parent module %s" % parent in m.checks[4].detail
    url = "%s/%s" % (served["url"], handle)
    (m,) = verify(url, specs_dir=family.specs_dir).modules
    assert m.ok, m.failures
    assert [c.name for c in m.checks] == ["download", "file", "graph_model", "inference", "card"]
    assert "fromTFHub" in m.checks[0].detail and "index entry" in m.checks[1].detail
    # A shard cut short in the registry: verify names it, serve answers 500, not its bytes.
    shard = sorted((tmp_path / "r1" / handle).glob("group1-shard*.bin"))[-1]
    replace_file(shard, shard.read_bytes()[:-4])
    report = verify(tmp_path / "r1", specs_dir=family.specs_dir)
    assert not report.ok and any(shard.name in p and "sha256" in p for p in report.problems), \
        report.problems
    import requests

    from registry_support import Served

    with Served(tmp_path / "r1") as server:
        got = requests.get("%s/%s/%s" % (server.url, handle, shard.name),
                           params={"tfjs-format": "file"}, timeout=60)
    assert got.status_code == 500 and "no longer matches index.json" in got.text
