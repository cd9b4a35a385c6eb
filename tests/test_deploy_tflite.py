"""TFLite variants from `hubexport build --deploy tflite`, run in LiteRT (issue 13).

The variants are written by the real CLI, ``hubexport build MODEL...
--version 5 --kind KIND --deploy tflite``, into a build output of hard links
to the session family's version 5 modules (up to date, so only the variants
are written): every version 5 module of the seeds' family (Inception V2 and
Inception-ResNet-V2, both kinds) and one module of each net family the zoo
added. Each ``.tflite`` runs in LiteRT's interpreter (``ai-edge-litert``
2.3.0, in its own venv ``.venv-litert``: tests/litert/run_tflite.py, which
imports neither TensorFlow nor hubexport) on structured images, against
``hub.load`` of the parent module in TensorFlow 2.21 (an implementation of
the module's computation we did not write). The float32 variant must match
to 1e-4 relative; the dynamic-range one (int8 weights) to
DYNAMIC_RANGE_TOLERANCE, nearer each image's own module output than the
other images', and LiteRT must reproduce the accuracy figure its card states.
``hubexport publish`` and ``hubexport serve`` hand the files out as
tfhub.dev did (``?lite-format=tflite``), and the download runs in LiteRT.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from family_support import SPECS
from reference_support import REPO, max_rel, structured_images
from registry_support import cli_server, published_variants, run_cli, small_output

pytestmark = pytest.mark.slow

# model -> kind converted: the seeds' family both kinds (listed twice), and
# one model of each net family the zoo added.
CASES = [("inception_v2", "classification"), ("inception_v2", "feature_vector"),
         ("inception_resnet_v2", "classification"), ("inception_resnet_v2", "feature_vector"),
         ("inception_v1", "classification"), ("inception_v3", "feature_vector"),
         ("resnet_v1_50", "classification"), ("resnet_v2_50", "feature_vector"),
         ("mobilenet_v1_025_128", "classification"), ("mobilenet_v2_035_96", "feature_vector")]
CASES = [c for c in CASES if c[0] in SPECS]  # all, unless HUBEXPORT_TEST_MODELS narrows the family
IDS = ["/".join(c) for c in CASES]
VARIANTS = {"default": "float32", "dynamic_range": "dynamic_range"}
FLOAT32_TOLERANCE = 1e-4
# Measured on these stand-ins (random weights, which int8 fits worse than
# trained ones): at most 0.16 relative, for mobilenet_v2_035_96's features.
DYNAMIC_RANGE_TOLERANCE = 0.2
N_IMAGES = 3


def litert_python():
    """The interpreter of .venv-litert (``$HUBEXPORT_LITERT_PYTHON`` overrides it)."""
    return os.environ.get("HUBEXPORT_LITERT_PYTHON", str(REPO / ".venv-litert" / "bin" / "python"))


def variant_handle(model, kind, variant):
    return "google/lite-model/imagenet/%s/%s/5/%s/1" % (model, kind, variant)


@pytest.fixture(scope="module")
def deployed(family, tmp_path_factory):
    """The CLI's variants and the parent modules' outputs.

    Returns (output Path, {handle: build --json result}, {(model, kind):
    (images, module outputs, probe images, module outputs)}): the images are
    structured_images, the probe images those the build measured its cards'
    figures on (hubexport.deploy.probe_images). The output is removed when the
    module's tests end.
    """
    import tensorflow as tf
    import tensorflow_hub as hub

    from hubexport.deploy import PROBE_IMAGES, probe_images

    root = tmp_path_factory.mktemp("deploy")
    output = small_output(family, root / "out",
                          [(m, k, 5) for m, k in CASES])
    results = {}
    for kind in ("classification", "feature_vector"):
        models = [m for m, k in CASES if k == kind]
        proc = run_cli("build", *models, "--version", "5", "--kind", kind, "--deploy", "tflite",
                       "--jobs", "2", "--json", "--specs", family.specs_dir, "--mirror",
                       "file://%s" % family.specs_dir.parent, "--cache-dir", family.cache_dir,
                       "--output", output)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.update({r["module_handle"]: r for r in json.loads(proc.stdout)})
    expected = {}
    for index, (model, kind) in enumerate(CASES):
        size = family.spec(model).image_size
        images = structured_images(11 + index, N_IMAGES, size, size)
        probes = probe_images(PROBE_IMAGES, size)
        loaded = hub.load(str(output / "google" / "imagenet" / model / kind / "5"))
        expected[(model, kind)] = tuple(
            x for batch in (images, probes)
            for x in (batch, np.stack([loaded(tf.constant(image[None]), training=False).numpy()[0]
                                       for image in batch])))
    yield output, results, expected
    shutil.rmtree(root, ignore_errors=True)


def _run_litert(path, images, tmp_path):
    python = litert_python()
    assert Path(python).is_file(), ("LiteRT interpreter %s not found: run `make install-litert`"
                                    % python)
    np.save(tmp_path / "images.npy", images)
    proc = subprocess.run([python, str(REPO / "tests" / "litert" / "run_tflite.py"), str(path),
                           str(tmp_path / "images.npy"), str(tmp_path / "out.npy"),
                           str(tmp_path / "report.json")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(tmp_path / "out.npy"), json.loads((tmp_path / "report.json").read_text())


def _stamp(output, model, kind, variant):
    path = output / variant_handle(model, kind, variant)
    return json.loads((path.parent / ".1.stamp").read_text())["variant"]


def test_build_writes_each_variant_with_card_and_stamp(deployed, family):
    from hubexport.cards import METADATA_RE
    from hubexport.hashing import sha256_file

    output, results, _ = deployed
    for model, kind in CASES:
        assert results["google/imagenet/%s/%s/5" % (model, kind)]["status"] == "up-to-date"
        for variant, quantization in VARIANTS.items():
            handle = variant_handle(model, kind, variant)
            r = results[handle]
            assert r["status"] == "built" and r["deploy"] == "tflite", r
            path = output / (handle + ".tflite")
            assert Path(r["module_dir"]) == path and Path(r["card"]) == path.with_suffix(".md")
            record = _stamp(output, model, kind, variant)
            assert record["parent_module"] == "google/imagenet/%s/%s/5" % (model, kind)
            assert record["quantization"] == quantization
            assert record["files"] == {"1.tflite": sha256_file(path)[0]}
            assert record["size"] == path.stat().st_size
            card = path.with_suffix(".md").read_text()
            assert card.splitlines()[0] == "# Lite " + "/&zwnj;".join(
                handle.split("/")[:-1]) + "/1"
            meta = dict(METADATA_RE.findall(card))
            assert meta["parent-model"] == record["parent_module"]
            assert meta["format"] == "tflite" and meta["asset-path"] == "1.tflite"
            size = family.spec(model).image_size
            assert "float32 `[1, %d, %d, 3]`" % (size, size) in card
            assert "%.3g of the largest output" % record["probe"]["max_rel_diff"] in card
    assert len([r for r in results.values() if r.get("deploy")]) == 2 * len(CASES)


@pytest.mark.parametrize("model,kind", CASES, ids=IDS)
def test_float32_variant_matches_the_module_in_litert(deployed, family, model, kind, tmp_path):
    output, _, expected = deployed
    images, want, _, _ = expected[(model, kind)]
    got, report = _run_litert(output / (variant_handle(model, kind, "default") + ".tflite"),
                              images, tmp_path)
    size = family.spec(model).image_size
    assert report["input"]["shape"] == [1, size, size, 3]
    assert report["input"]["dtype"] == "float32" and report["output"]["dtype"] == "float32"
    n = family.spec(model).num_classes if kind == "classification" else \
        family.spec(model).feature_size
    assert report["output"]["shape"] == [1, n]
    assert list(report["signatures"]) == ["serving_default"]
    assert got.shape == want.shape
    # The images' outputs differ by far more than the tolerance: the check can fail.
    assert max_rel(want[0], want[1]) > 100 * FLOAT32_TOLERANCE
    assert max_rel(got, want) < FLOAT32_TOLERANCE
    assert _stamp(output, model, kind, "default")["probe"]["max_rel_diff"] < FLOAT32_TOLERANCE


@pytest.mark.parametrize("model,kind", CASES, ids=IDS)
def test_dynamic_range_variant_is_smaller_close_and_as_its_card_says(deployed, model, kind,
                                                                      tmp_path):
    output, _, expected = deployed
    images, want, probes, module = expected[(model, kind)]
    path = output / (variant_handle(model, kind, "dynamic_range") + ".tflite")
    record = _stamp(output, model, kind, "dynamic_range")
    assert record["size"] < 0.4 * _stamp(output, model, kind, "default")["size"]  # int8 weights
    got, _ = _run_litert(path, images, tmp_path)
    for i in range(len(images)):
        err = max_rel(got[i], want[i])
        assert err < DYNAMIC_RANGE_TOLERANCE, (i, err)
        others = [max_rel(got[i], want[j]) for j in range(len(images)) if j != i]
        assert err < min(others), (i, err, others)  # it tells the images apart
    # The card's figure (TensorFlow's TFLite kernels at build time) holds in
    # LiteRT, on the same probe images, against the same module.
    on_litert, _ = _run_litert(path, probes, tmp_path)
    stated = record["probe"]["max_rel_diff"]
    assert stated > 1e-4  # int8 weights cost something
    assert stated / 1.5 < max_rel(on_litert, module) < stated * 1.5, (stated, max_rel(on_litert,
                                                                                       module))


def test_a_second_build_finds_the_variants_up_to_date(deployed, family):
    output, _, _ = deployed
    proc = run_cli("build", "mobilenet_v1_025_128", "--version", "5", "--kind", "classification",
                   "--deploy", "tflite", "--json", "--specs", family.specs_dir, "--cache-dir",
                   family.cache_dir, "--mirror", "file://%s" % family.specs_dir.parent,
                   "--output", output)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["status"] for r in json.loads(proc.stdout)] == ["up-to-date"] * 3


def test_conversion_is_reproducible(family, tmp_path):
    from hubexport.deploy.tflite import write_tflite

    module = family.module("mobilenet_v1_025_128", "classification", 5)
    for name in ("a.tflite", "b.tflite"):
        write_tflite(module, tmp_path / name, image_size=128, quantization="dynamic_range")
    assert (tmp_path / "a.tflite").read_bytes() == (tmp_path / "b.tflite").read_bytes()


@pytest.mark.parametrize("fmt,version,having", [("tflite", 3, "5"), ("tfjs", 5, "1, 3")])
def test_deploy_of_a_version_without_that_variant_is_a_usage_error(family, tmp_path, fmt,
                                                                    version, having):
    """--deploy tflite of a version 3, --deploy tfjs of a version 5: exit 2, one line, nothing written."""
    proc = run_cli("build", "mobilenet_v1_025_128", "--version", version, "--deploy", fmt,
                   "--specs", family.specs_dir, "--output", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "--deploy %s: none of the modules to build has a %s variant" % (fmt, fmt) in line
    assert "deploy for version %s" % having in line
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_unknown_quantization_and_a_module_without_serving_default(family, tmp_path):
    from hubexport.deploy.tflite import write_tflite
    from hubexport.errors import BuildError, UsageError

    with pytest.raises(UsageError, match="quantization 'int4'"):
        write_tflite(family.module("mobilenet_v1_025_128", "classification", 5),
                     tmp_path / "x.tflite", image_size=128, quantization="int4")
    with pytest.raises(BuildError, match="no serving_default signature"):
        write_tflite(family.module("mobilenet_v1_025_128", "classification", 4),
                     tmp_path / "x.tflite", image_size=128)
    assert list(tmp_path.iterdir()) == []


def test_verify_passes_the_variants_and_names_what_is_wrong_with_damaged_ones(deployed, family,
                                                                              tmp_path):
    """`hubexport verify FILE.tflite`: the CLI's variants pass; damaged copies fail, saying why."""
    from registry_support import link_copy, replace_file

    from hubexport.errors import UsageError
    from hubexport.verify import verify

    output, _, _ = deployed
    small = [c for c in CASES if c[0].startswith(("inception_v2", "mobilenet"))]
    for model, kind in small:
        for variant in VARIANTS:
            report = verify(output / (variant_handle(model, kind, variant) + ".tflite"),
                            specs_dir=family.specs_dir)
            (m,) = report.modules
            assert report.ok and m.module_handle == variant_handle(model, kind, variant), m
            assert [c.name for c in m.checks] == ["file", "tflite", "inference", "card"]
            assert "the card states" in m.checks[2].detail  # compared with the parent
    # Damaged copies: hard links of a variant (and its parent module) in a new output.
    model, kind = small[-1]
    handle = variant_handle(model, kind, "dynamic_range")
    copy = tmp_path / "out"
    link_copy(output / handle.rsplit("/", 1)[0], copy / handle.rsplit("/", 1)[0])
    link_copy(output / "google" / "imagenet" / model / kind / "5",
              copy / "google" / "imagenet" / model / kind / "5")
    path = copy / (handle + ".tflite")

    def failures():
        (m,) = verify(path, specs_dir=family.specs_dir).modules
        return m.failures

    card = path.with_suffix(".md")
    good_card = card.read_text()
    replace_file(card, good_card.replace("<!-- format: tflite -->", "<!-- format: hub -->").encode())
    (failure,) = failures()
    assert failure.startswith("card: ") and "format" in failure
    replace_file(card, good_card.encode())
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    replace_file(path, bytes(data))
    assert failures()[0].startswith("file: its files differ from what its stamp records")
    replace_file(path, b"not a flat buffer")
    assert failures() == ["file: not a TFLite flat buffer (no TFL3 identifier)"]
    stray = tmp_path / "elsewhere" / "model.tflite"
    link_copy(output / (handle + ".tflite"), stray)
    with pytest.raises(UsageError, match="cannot tell which module this is"):
        verify(stray, specs_dir=family.specs_dir)


def test_published_and_served_with_lite_format_and_run_from_the_download(deployed, family,
                                                                         tmp_path):
    """publish indexes each .tflite (format tflite, parent, size, sha256) and copies it as it is;
    `hubexport serve` hands it out at HANDLE?lite-format=tflite; the download runs in LiteRT
    and `hubexport verify` passes the served variants."""
    import hashlib

    import requests

    from hubexport.verify import verify

    output, _, expected = deployed
    registry = tmp_path / "registry"
    published = published_variants(output, "lite-model", registry)
    assert {m["status"] for m in published["modules"]} == {"published"}
    entries = {e["module_handle"]: e
               for e in json.loads((registry / "index.json").read_text())["modules"]}
    assert sorted(entries) == sorted(variant_handle(m, k, v) for m, k in CASES for v in VARIANTS)
    for model, kind in CASES:
        for variant in VARIANTS:
            handle = variant_handle(model, kind, variant)
            e, record = entries[handle], _stamp(output, model, kind, variant)
            assert (e["format"], e["parent_module"], e["quantization"]) == (
                "tflite", "google/imagenet/%s/%s/5" % (model, kind), VARIANTS[variant])
            assert (e["archive"], e["module_dir"], e["file"]) == (handle + ".tflite", None,
                                                                  "1.tflite")
            built = (output / handle).with_suffix(".tflite").read_bytes()
            assert e["size"] == e["module_size"] == len(built)
            assert e["sha256"] == hashlib.sha256(built).hexdigest() == record["files"]["1.tflite"]
            assert (registry / e["archive"]).read_bytes() == built
            assert e["input"] == record["input"] and e["probe"] == record["probe"]
    model, kind = CASES[-1]  # a small net
    with cli_server(registry) as url:
        for variant in VARIANTS:
            handle = variant_handle(model, kind, variant)
            got = requests.get("%s/%s" % (url, handle), params={"lite-format": "tflite"},
                               timeout=120)
            assert got.status_code == 200, got.text[:300]
            assert hashlib.sha256(got.content).hexdigest() == entries[handle]["sha256"]
            bad = requests.get("%s/%s" % (url, handle), params={"tf-hub-format": "compressed"},
                               timeout=60)
            assert bad.status_code == 400 and "lite-format=tflite" in bad.text
            (m,) = verify("%s/%s" % (url, handle), specs_dir=family.specs_dir).modules
            assert m.ok, m.failures
            assert [c.name for c in m.checks] == ["download", "file", "tflite", "inference",
                                                  "card"]
        downloaded = tmp_path / "downloaded.tflite"
        downloaded.write_bytes(got.content)  # the dynamic-range one
    images, want = expected[(model, kind)][:2]
    out, report = _run_litert(downloaded, images, tmp_path)
    assert out.shape == want.shape
    assert max_rel(out, want) < DYNAMIC_RANGE_TOLERANCE
