"""`hubexport verify`: modules pass, damaged copies fail with a clear reason (issue 6).

Damaged copies are made in tmp directories at .../<handle>/<version> (so the
module is matched to its spec by its location, as documented) from hard
links to the family's files; a damaged file is always a new file.
"""

import json
import os
import subprocess
import sys

import pytest

from registry_support import (HANDLE, Served, link_copy, published_family, replace_file,
                              small_output)

from hubexport.errors import UsageError, VerificationError

CHECKS = ["files", "format", "tag_sets", "signatures", "image_module_info", "variables",
          "inference", "card"]


def run_verify(*args, timeout=900):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "hubexport.cli", "verify", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def copy_module(family, tmp_path, version, kind="classification", card=True):
    """A copy of an inception_v2 module (and its card) at tmp/<handle>/<version>."""
    src = family.module("inception_v2", kind, version)
    dst = tmp_path / src.relative_to(family.output)
    link_copy(src, dst)
    if card:
        link_copy(family.card("inception_v2", kind, version), dst.parent / ("%d.md" % version))
    return dst


def edit_saved_model(module, edit):
    """Rewrites module/saved_model.pb after ``edit(meta_graph)`` on every meta graph."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString((module / "saved_model.pb").read_bytes())
    for meta_graph in proto.meta_graphs:
        edit(meta_graph)
    replace_file(module / "saved_model.pb", proto.SerializeToString())


def verify(path, family, **kwargs):
    from hubexport.verify import verify as verify_stage

    return verify_stage(str(path), specs_dir=family.specs_dir, **kwargs)


def failures(report):
    (module,) = report.modules
    return module.failures


@pytest.mark.slow
def test_good_modules_pass_with_json_for_ci(family):
    proc = run_verify(family.module("inception_v2", "classification", 3), "--specs",
                      family.specs_dir, "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["reason"] is None and report["kind"] == "module"
    (module,) = report["modules"]
    assert module["module_handle"] == HANDLE + "/3"
    assert [c["check"] for c in module["checks"]] == CHECKS
    assert all(c["ok"] for c in module["checks"])
    # (Every module of the family is verified by test_every_built_module_verifies.)


# The models whose every module `hubexport verify` checks with the smoke
# inference here: one of each net family that the registry tests do not
# verify over HTTP already (tests/registry_support.REGISTRY_MODELS: the
# seeds, Inception V3, ResNet V2 50, with inference). Every module of the
# family is loaded and run by tests/test_family.py besides.
FULL_VERIFY_MODELS = ("inception_v1", "resnet_v1_50", "mobilenet_v1_025_128",
                      "mobilenet_v2_035_96")


@pytest.mark.slow
def test_every_built_module_verifies(family, tmp_path):
    """`hubexport verify OUTPUT` over every module of every spec.

    Two verify processes at once (two cores): ``--no-inference`` over a
    build output of hard links to the whole family (every check but the
    smoke inference, which loads the module), and every check over the
    modules of FULL_VERIFY_MODELS.
    """
    from family_support import MODELS, MODULES

    full = [m for m in MODULES if m[0] in FULL_VERIFY_MODELS]
    assert {m[0] for m in full} == set(FULL_VERIFY_MODELS) & set(MODELS)
    runs = [(full, [], CHECKS), (MODULES, ["--no-inference"],
                                 [c for c in CHECKS if c != "inference"])]
    procs = []
    for i, (modules, flags, checks) in enumerate(runs):
        output = small_output(family, tmp_path / ("out-%d" % i), modules)
        procs.append((modules, checks, subprocess.Popen(
            [sys.executable, "-m", "hubexport.cli", "verify", str(output), *flags, "--specs",
             str(family.specs_dir), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))))
    for modules, checks, proc in procs:
        stdout, stderr = proc.communicate(timeout=3000)
        assert proc.returncode == 0, stdout[-3000:] + stderr[-2000:]
        report = json.loads(stdout)
        assert report["ok"] is True and report["kind"] == "output"
        assert sorted(m["module_handle"] for m in report["modules"]) == sorted(
            "google/imagenet/%s/%s/%d" % m for m in modules)
        for module in report["modules"]:
            assert module["ok"], module
            assert [c["check"] for c in module["checks"]][:len(checks)] == checks, module


def test_a_missing_signature_fails(family, tmp_path):
    module = copy_module(family, tmp_path, 3)
    edit_saved_model(module, lambda mg: mg.signature_def.pop("image_feature_vector"))
    report = verify(module, family)
    assert not report.ok
    assert failures(report) == [
        "signatures: tag set {}: signature image_feature_vector missing; "
        "tag set {train}: signature image_feature_vector missing"]
    with pytest.raises(VerificationError, match="signature image_feature_vector missing") as err:
        report.raise_if_failed()
    assert err.value.exit_code == 3
    # --no-inference checks the same protos; it only loads and runs nothing.
    quick = verify(module, family, inference=False)
    assert failures(quick) == failures(report)
    assert "inference" not in [c.name for c in quick.modules[0].checks]


def test_a_wrong_input_shape_fails(family, tmp_path):
    module = copy_module(family, tmp_path, 3)

    def fixed_299(meta_graph):
        for signature in meta_graph.signature_def.values():
            dims = signature.inputs["images"].tensor_shape.dim
            dims[1].size = dims[2].size = 299

    edit_saved_model(module, fixed_299)
    report = verify(module, family)
    (message,) = [f for f in failures(report) if f.startswith("signatures:")]
    assert ("tag set {}: default input images has float32 [-1, 299, 299, 3], "
            "expected float32 [-1, -1, -1, 3]") in message


def test_a_missing_serving_signature_of_a_tf2_module_fails(family, tmp_path):
    module = copy_module(family, tmp_path, 5)
    edit_saved_model(module, lambda mg: mg.signature_def.pop("serving_default"))
    report = verify(module, family)
    assert "signatures: tag set {serve}: signature serving_default missing" in failures(report)


def test_a_missing_card_fails(family, tmp_path):
    module = copy_module(family, tmp_path, 3, card=False)
    report = verify(module, family)
    assert failures(report) == ["card: no card (looked for %s)" % (module.parent / "3.md")]


def test_a_card_whose_handle_line_disagrees_fails(family, tmp_path):
    module = copy_module(family, tmp_path, 3)
    card = module.parent / "3.md"
    lines = card.read_text().splitlines(keepends=True)
    lines[0] = "# Module google/&zwnj;imagenet/&zwnj;inception_v2/&zwnj;classification/4\n"
    replace_file(card, "".join(lines).encode())
    proc = run_verify(module, "--specs", family.specs_dir, "--json")
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    expected = ("card: %s: handle line names %s/4, expected %s/3" % (card, HANDLE, HANDLE))
    assert report["modules"][0]["failures"] == [expected]
    assert expected in report["reason"]
    assert proc.stderr.startswith("error: verification of %s failed: 1 of 1 modules failed; "
                                  "%s/3: %s" % (module, HANDLE, expected))


def test_card_metadata_is_checked(family, tmp_path):
    module = copy_module(family, tmp_path, 3)
    card = module.parent / "3.md"
    replace_file(card, card.read_bytes().replace(b"<!-- format: hub -->",
                                                 b"<!-- format: saved_model_2 -->"))
    assert failures(verify(module, family)) == [
        "card: %s: metadata format is 'saved_model_2', expected 'hub'" % card]


def test_a_module_in_the_wrong_place_needs_handle(family, tmp_path):
    module = tmp_path / "somewhere" / "3"
    link_copy(family.module("inception_v2", "classification", 3), module)
    with pytest.raises(UsageError, match="cannot tell which module this is"):
        verify(module, family)
    proc = run_verify(module, "--specs", family.specs_dir)
    assert proc.returncode == 2
    # Checked as the v4 handle, a v3 module fails on its format.
    report = verify(module, family, handle=HANDLE + "/4")
    assert any(f.startswith("format: tfhub_module.pb present") for f in failures(report))


def test_archives_and_registries(family, tmp_path):
    from hubexport.publish import publish

    output = small_output(family, tmp_path / "out", [("inception_v2", "classification", 3)])
    registry = tmp_path / "registry"
    publish(output, registry)
    report = verify(registry, family)
    assert report.ok, report.to_json()
    assert report.kind == "registry"
    names = [c.name for c in report.modules[0].checks]
    assert names == ["index", "archive"] + CHECKS
    archive = registry / HANDLE / "3.tar.gz"
    report = verify(archive, family)
    assert report.ok and report.kind == "archive", report.to_json()
    # a damaged index is reported even if every module is fine
    index = json.loads((registry / "index.json").read_text())
    index["modules"][0]["kind"] = "feature_vector"
    replace_file(registry / "index.json", json.dumps(index).encode())
    report = verify(registry, family)
    assert not report.ok
    assert report.problems[0].endswith("index.json: its digest does not match its modules; "
                                       "the index was edited or damaged")
    assert "index: kind is 'feature_vector', the spec says 'classification'" in \
        report.modules[0].failures


@pytest.mark.slow
def test_served_modules_verify_over_http(family):
    """The feature_vector modules of Inception V2, fetched as tensorflow_hub fetches them.

    (tests/test_workflow.py verifies the classification modules through a
    whole served registry.)
    """
    registry, _ = published_family(family)

    with Served(registry) as server:
        for version in (1, 3, 4, 5):
            url = "%s/google/imagenet/inception_v2/feature_vector/%d" % (server.url, version)
            report = verify(url, family)
            assert report.ok and report.kind == "url", report.to_json()
            names = [c.name for c in report.modules[0].checks]
            assert names == ["download", "archive"] + CHECKS
        with pytest.raises(UsageError, match="is not /<handle>/<version> of a module the specs"):
            verify(server.url + "/google/imagenet/inception_v2/classification/7", family)


def test_a_handle_the_server_does_not_have_fails_verification(family, tmp_path):
    from hubexport.publish import publish

    output = small_output(family, tmp_path / "out", [("inception_v2", "classification", 3)])
    publish(output, tmp_path / "registry")
    with Served(tmp_path / "registry") as server:
        report = verify(server.url + "/" + HANDLE + "/4", family)
    assert not report.ok
    (failure,) = report.modules[0].failures
    assert failure.startswith("download: HTTP 404 for %s/%s/4?tf-hub-format=compressed: "
                              "404 Not Found: no module or file" % (server.url, HANDLE))


def test_a_served_index_whose_digest_disagrees_is_reported(family, tmp_path, http_server):
    """Another server (the loopback test server) serving an edited index.json."""
    from hubexport.publish import publish

    output = small_output(family, tmp_path / "out", [("inception_v2", "classification", 3)])
    registry = tmp_path / "registry"
    publish(output, registry)
    index = json.loads((registry / "index.json").read_text())
    index["modules"][0]["kind"] = "feature_vector"  # digest kept
    http_server.add_file("/index.json", json.dumps(index).encode())
    http_server.add_file("/" + HANDLE + "/3", (registry / HANDLE / "3.tar.gz").read_bytes())
    report = verify(http_server.base_url + "/", family)
    assert report.kind == "registry-url" and not report.ok
    assert report.problems == ["%s/index.json: its digest does not match its modules; the index "
                               "was edited or damaged" % http_server.base_url]
    # the test server answers the card request with the archive: the card check says so
    assert [f.split(":")[0] for f in report.modules[0].failures] == ["card"]
