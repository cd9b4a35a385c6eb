"""`hubexport publish`: registry layout, index, reproducible archives, immutability, damage (issue 6).

The whole family (the session's `family` fixture) is published once per
code version into build/test-family/<key>/registry by the real CLI
(:func:`published_family`; a later session re-runs the same command, which
is then a no-op). The behaviour tests work on small registries in tmp
directories made from hard-linked copies of two inception_v2 modules (v3,
TF1 Hub format; v5, TF2 SavedModel); damage is done by replacing files, so
the family's files are never touched.
"""

import hashlib
import json
import tarfile

import pytest

from registry_support import (HANDLE, REGISTRY_MODULES, link_copy,
                              published_family, replace_file, run_cli, sha256, small_output)

from hubexport import __version__
from hubexport.errors import PublishError

ALLOWED_TOP = {"saved_model.pb", "saved_model.pbtxt", "tfhub_module.pb", "keras_metadata.pb",
               "fingerprint.pb", "assets", "assets.extra", "variables"}

@pytest.fixture(scope="module")
def template(family, tmp_path_factory):
    """(output, registry) with the two small modules published once, by the library."""
    from hubexport.publish import publish

    root = tmp_path_factory.mktemp("publish-template")
    output = small_output(family, root / "out")
    publish(output, root / "registry")
    return output, root / "registry"


@pytest.fixture
def small(template, tmp_path):
    """A private hard-linked copy of the template: (output, registry)."""
    output, registry = template
    link_copy(output, tmp_path / "out")
    link_copy(registry, tmp_path / "registry")
    return tmp_path / "out", tmp_path / "registry"


# --- the whole family -------------------------------------------------------


@pytest.mark.slow
def test_family_registry_layout_and_index(family):
    from hubexport.specs import load_specs

    registry, result = published_family(family)
    assert {m["status"] for m in result["modules"]} <= {"published", "unchanged"}
    assert len(result["modules"]) == len(REGISTRY_MODULES)
    index = json.loads((registry / "index.json").read_text())
    assert index["registry_format"] == 1
    modules = index["modules"]
    canonical = json.dumps(modules, sort_keys=True, separators=(",", ":")).encode()
    assert index["digest"] == "sha256:" + hashlib.sha256(canonical).hexdigest()
    published = {"google/imagenet/%s/%s/%d" % m for m in REGISTRY_MODULES}
    targets = {t.module_handle: t for s in load_specs(family.specs_dir).values()
               for t in s.targets() if t.module_handle in published}
    assert [m["module_handle"] for m in modules] == sorted(targets)
    for entry in modules:
        target = targets[entry["module_handle"]]
        arch, kind, version = target.spec.architecture, target.kind, target.version.version
        assert entry["handle"] == target.handle and entry["version"] == version
        assert entry["format"] == target.version.format
        assert entry["signatures"] == list(target.version.signatures)
        archive = registry / target.handle / ("%d.tar.gz" % version)
        assert entry["archive"] == "%s/%d.tar.gz" % (target.handle, version)
        assert archive.stat().st_size == entry["size"]
        assert sha256(archive) == entry["sha256"]
        doc = registry / "assets/docs/google/models/imagenet" / arch / kind / ("%d.md" % version)
        assert entry["doc"] == str(doc.relative_to(registry))
        assert doc.read_bytes() == family.card(arch, kind, version).read_bytes()
        module = registry / target.handle / str(version)
        files = sorted(p.relative_to(module).as_posix() for p in module.rglob("*") if p.is_file())
        assert files == sorted(entry["files"])
        ckpt = target.spec.checkpoint
        assert entry["source"]["checksum"] == "%s:%s" % (ckpt.checksum_algo, ckpt.checksum_hex)
        assert entry["source"]["url"] == ckpt.url and entry["source"]["size"] == ckpt.size
        assert entry["hubexport"] == __version__
        assert entry["tensorflow"]
        if arch != "inception_v2":
            continue  # hashing GBs more proves little more (publish checks them too)
        assert all(sha256(module / f) == h for f, h in entry["files"].items())
        # the module copy equals the build output, but for fingerprint.pb's uuid
        built = family.module(arch, kind, version)
        for f in files:
            same = (module / f).read_bytes() == (built / f).read_bytes()
            assert same == (f != "fingerprint.pb"), f


@pytest.mark.slow
def test_family_archives_are_canonical(family):
    registry, _ = published_family(family)
    index = json.loads((registry / "index.json").read_text())
    for entry in index["modules"]:
        if "inception_v2/" not in entry["module_handle"]:
            continue  # the Inception-ResNet-V2 archives are unpacked by test_serve
        archive = registry / entry["archive"]
        head = archive.read_bytes()[:10]
        assert head[:3] == b"\x1f\x8b\x08"  # gzip, deflate
        assert head[3] == 0, "gzip header carries flags (a file name?)"
        assert head[4:8] == b"\0\0\0\0", "gzip header carries a time"
        names = []
        with tarfile.open(archive, "r|gz") as tar:
            assert tar.pax_headers == {}
            for info in tar:
                names.append(info.name)
                assert info.mtime == 0 and info.uid == 0 and info.gid == 0
                assert info.uname == "" and info.gname == ""
                assert info.isfile() or info.isdir()
                assert info.mode == (0o755 if info.isdir() else 0o644)
                assert info.name.split("/")[0] in ALLOWED_TOP
                if info.isfile():
                    digest = hashlib.sha256(tar.extractfile(info).read()).hexdigest()
                    assert entry["files"][info.name] == digest
        assert names == sorted(names)
        assert sorted(n for n in names if n in entry["files"]) == sorted(entry["files"])


@pytest.mark.slow
def test_rebuild_in_a_fresh_process_gives_byte_identical_archives(family, mirror, tmp_path):
    """Second build: fresh output and cache, `build --force --jobs 2` in a fresh process."""
    registry, _ = published_family(family)
    index = {e["module_handle"]: e for e in
             json.loads((registry / "index.json").read_text())["modules"]}
    out = tmp_path / "out"
    proc = run_cli("build", "inception_v2", "--kind", "classification", "--force", "--jobs", 2,
                   "--json", "--specs", family.specs_dir, "--mirror", mirror.base_url,
                   "--cache-dir", tmp_path / "cache", "--output", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {r["status"] for r in json.loads(proc.stdout)} == {"built"}
    proc = run_cli("publish", out, "--registry", tmp_path / "registry", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    published = json.loads(proc.stdout)["modules"]
    assert len(published) == 4
    for m in published:
        assert m["sha256"] == index[m["module_handle"]]["sha256"], m["module_handle"]
        assert sha256(m["archive"]) == m["sha256"]
    # What differs between the two builds: fingerprint.pb's uuid, and nothing else.
    from tensorflow.core.protobuf import fingerprint_pb2

    for version in (1, 3, 4, 5):
        first = family.module("inception_v2", "classification", version)
        second = out / HANDLE / str(version)
        files = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(second).as_posix()
                               for p in second.rglob("*") if p.is_file())
        for f in files:
            a, b = (first / f).read_bytes(), (second / f).read_bytes()
            if f != "fingerprint.pb":
                assert a == b, "%s/%s differs between two builds" % (version, f)
                continue
            fa, fb = (fingerprint_pb2.FingerprintDef.FromString(x) for x in (a, b))
            assert fa.uuid and fb.uuid and fa.uuid != fb.uuid
            fa.uuid = fb.uuid = ""
            assert fa == fb


# --- behaviour on small registries -------------------------------------------


def test_fingerprint_keeps_everything_but_its_uuid(family, template):
    import tensorflow as tf
    from tensorflow.core.protobuf import fingerprint_pb2

    _, registry = template
    built = family.module("inception_v2", "classification", 5) / "fingerprint.pb"
    published = registry / HANDLE / "5" / "fingerprint.pb"
    original = fingerprint_pb2.FingerprintDef.FromString(built.read_bytes())
    cleared = fingerprint_pb2.FingerprintDef.FromString(published.read_bytes())
    assert original.uuid and not cleared.uuid
    original.uuid = ""
    assert original == cleared
    read = tf.saved_model.experimental.read_fingerprint(str(published.parent))
    assert read.saved_model_checksum == cleared.saved_model_checksum
    for f in ("saved_model.pb", "variables/variables.index"):
        assert (registry / HANDLE / "5" / f).read_bytes() == (built.parent / f).read_bytes()


def test_publishing_the_same_content_again_is_a_noop(small):
    output, registry = small
    index = registry / "index.json"
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in
              [index] + sorted(registry.rglob("*.tar.gz"))}
    text = index.read_bytes()
    proc = run_cli("publish", output, "--registry", registry, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [m["status"] for m in result["modules"]] == ["unchanged", "unchanged"]
    assert index.read_bytes() == text
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in before} == before


def test_other_content_over_a_published_version_needs_force(small):
    output, registry = small
    card = output / HANDLE / "3.md"
    replace_file(card, card.read_bytes() + b"\nEdited after the release.\n")
    index = (registry / "index.json").read_bytes()
    proc = run_cli("publish", output, "--registry", registry)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("error: 1 version(s) already published with other content")
    assert HANDLE + "/3 (differs in the card)" in message and "--force" in message
    assert (registry / "index.json").read_bytes() == index
    proc = run_cli("publish", output, "--registry", registry, "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    status = {m["module_handle"]: m["status"] for m in json.loads(proc.stdout)["modules"]}
    assert status == {HANDLE + "/3": "replaced", HANDLE + "/5": "unchanged"}
    doc = registry / "assets/docs/google/models/imagenet/inception_v2/classification/3.md"
    assert doc.read_bytes() == card.read_bytes()
    from hubexport.publish import read_registry

    assert read_registry(registry).ok


def test_a_changed_module_file_is_named_in_the_refusal(small):
    from hubexport.publish import publish

    output, registry = small
    pb = output / HANDLE / "5" / "saved_model.pb"
    replace_file(pb, pb.read_bytes() + b"\0")
    with pytest.raises(PublishError, match=r"classification/5 \(differs in saved_model.pb\)"):
        publish(output, registry)


def _damage(registry, case):
    index_path = registry / "index.json"
    archive = registry / HANDLE / "3.tar.gz"
    if case == "missing archive":
        archive.unlink()
        return r"3\.tar\.gz: missing"
    if case == "archive sha256":
        data = bytearray(archive.read_bytes())
        data[len(data) // 2] ^= 0xFF
        replace_file(archive, bytes(data))
        return r"3\.tar\.gz: sha256 [0-9a-f]{64}, the index says"
    if case == "edited index":
        index = json.loads(index_path.read_text())
        index["modules"][0]["signatures"] = ["default"]
        replace_file(index_path, json.dumps(index, indent=2).encode())
        return r"index\.json: its digest does not match its modules"
    if case == "edited index with its digest":
        from hubexport.publish import index_digest

        index = json.loads(index_path.read_text())
        index["modules"][0]["sha256"] = "0" * 64
        index["digest"] = index_digest(index["modules"])
        replace_file(index_path, json.dumps(index, indent=2).encode())
        return r"3\.tar\.gz: sha256 [0-9a-f]{64}, the index says 0{64}"
    if case == "missing module file":
        (registry / HANDLE / "5" / "variables" / "variables.index").unlink()
        return r"5/variables/variables\.index: missing"
    raise AssertionError(case)


def _files_and_times(registry):
    """Every file of a registry (but the publish lock) with its mtime and inode."""
    return sorted((p, p.stat().st_mtime_ns, p.stat().st_ino) for p in registry.rglob("*")
                  if p.is_file() and p.name != ".hubexport-publish.lock")


@pytest.mark.parametrize("case", ["missing archive", "archive sha256", "edited index",
                                  "edited index with its digest", "missing module file"])
def test_a_damaged_registry_is_refused(small, case):
    output, registry = small
    pattern = _damage(registry, case)
    before = _files_and_times(registry)
    proc = run_cli("publish", output, "--registry", registry)
    assert proc.returncode == 1, proc.stdout
    assert "Traceback" not in proc.stderr
    assert "is damaged" in proc.stderr and "nothing was published" in proc.stderr
    import re

    assert re.search(pattern, proc.stderr), proc.stderr
    assert _files_and_times(registry) == before


def test_force_repairs_a_damaged_version_it_publishes_but_not_an_edited_index(small):
    from hubexport.publish import publish, read_registry

    output, registry = small
    _damage(registry, "missing archive")
    result = publish(output, registry, force=True)
    assert {m.module_handle: m.status for m in result.modules} == {
        HANDLE + "/3": "replaced", HANDLE + "/5": "unchanged"}
    assert read_registry(registry).ok
    _damage(registry, "edited index")
    with pytest.raises(PublishError, match="digest does not match"):
        publish(output, registry, force=True)


def test_only_savedmodel_paths_are_published(small, tmp_path):
    from hubexport.publish import publish

    output, _ = small
    (output / HANDLE / "3" / "notes.txt").write_text("not part of a SavedModel")
    with pytest.raises(PublishError, match=r"'notes.txt' is not a SavedModel path"):
        publish(output, tmp_path / "new-registry")
    assert not (tmp_path / "new-registry" / "index.json").exists()


def test_an_unfinished_build_is_refused(small, tmp_path):
    from hubexport.publish import publish

    output, _ = small
    (output / HANDLE / ".5.stamp").unlink()
    with pytest.raises(PublishError, match=r"classification/5: no stamp; the build of this "
                                           r"module did not finish"):
        publish(output, tmp_path / "new-registry")


def test_a_directory_that_is_not_a_registry_is_refused(small, tmp_path):
    output, _ = small
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "photo.jpg").write_bytes(b"\xff\xd8")
    proc = run_cli("publish", output, "--registry", target)
    assert proc.returncode == 1
    assert "is not empty and has no index.json" in proc.stderr
    assert sorted(p.name for p in target.iterdir()) == [".hubexport-publish.lock", "photo.jpg"]


def test_no_built_modules_is_a_clear_error(tmp_path):
    (tmp_path / "out").mkdir()
    proc = run_cli("publish", tmp_path / "out", "--registry", tmp_path / "registry")
    assert proc.returncode == 1
    assert "no built modules" in proc.stderr and "hubexport build" in proc.stderr
    proc = run_cli("publish", tmp_path / "missing", "--registry", tmp_path / "registry")
    assert proc.returncode == 2
    assert "is not a directory" in proc.stderr


def test_docs_path_follows_the_tfhub_layout():
    from hubexport.publish import archive_path, docs_path, split_module_handle

    assert docs_path("google/imagenet/inception_resnet_v2/feature_vector/4") == \
        "assets/docs/google/models/imagenet/inception_resnet_v2/feature_vector/4.md"
    assert archive_path(HANDLE + "/3") == HANDLE + "/3.tar.gz"
    for bad in ("google/3", "google/../x/3", "google/x/0", "google/x/y", "/google/x/3", "g//x/3"):
        with pytest.raises(ValueError):
            split_module_handle(bad)
