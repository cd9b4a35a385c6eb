"""Sources whose checksum nobody published (spec ``checkpoint.checksum: unpublished``).

The real command line in subprocesses, against a loopback HTTP server:
refusal without ``--allow-unpinned`` / ``HUBEXPORT_ALLOW_UNPINNED=1``, the
printed digest, what the stamp and the index record, what verify reports,
pinned specs still enforced, and the download cache once the spec is pinned.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from hubexport import specs as specs_module
from hubexport.errors import SpecError

REPO = Path(__file__).resolve().parents[1]
SPEC_TEXT = (REPO / "specs" / "inception_v2.yaml").read_text(encoding="utf-8")
URL = "http://download.tensorflow.org/models/inception_v2_2016_08_28.tar.gz"
FILENAME = "inception_v2_2016_08_28.tar.gz"
MEMBER = "inception_v2.ckpt"
PATH = "/models/" + FILENAME
HANDLE = "google/imagenet/inception_v2/classification"


def tarball(seed: int) -> bytes:
    """A small tar.gz holding MEMBER (random, incompressible bytes)."""
    payload = random.Random(seed).randbytes(200 * 1024)
    buf = io.BytesIO()
    # Stored (level 0) deflate blocks and mtime 0: the size depends on the payload's only.
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo(MEMBER)
        info.size, info.mode = len(payload), 0o644
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def payload_of(data: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.extractfile(MEMBER).read()


TARBALL = tarball(1)
OTHER = tarball(2)  # the same size, other bytes
assert len(OTHER) == len(TARBALL) and OTHER != TARBALL


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unpinned_text(text: str = SPEC_TEXT) -> str:
    """``text`` with ``checksum: unpublished`` and no size line in its checkpoint block."""
    out, n = re.subn(r"(?m)^  size: .*\n", "", text, count=1)
    assert n == 1
    out, n = re.subn(r"(?m)^  checksum: .*$", "  checksum: unpublished", out, count=1)
    assert n == 1
    return out


def write_specs(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "inception_v2.yaml").write_text(text, encoding="utf-8")
    return directory


def pinned_text(data: bytes) -> str:
    from hubexport.standin import pin_spec_text

    return pin_spec_text(unpinned_text(), len(data), "sha256:" + sha256(data))


def run_cli(*args, env_extra=None, timeout=900):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    for var in ("HUBEXPORT_ALLOW_UNPINNED", "HUBEXPORT_MIRROR", "HUBEXPORT_CACHE"):
        env.pop(var, None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "hubexport.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def fetch_args(specs: Path, server, cache: Path, *extra):
    return ("fetch", "inception_v2", "--specs", specs, "--mirror", server.url("/models"),
            "--cache-dir", cache, *extra)


def messages(stderr: str) -> list[str]:
    """stderr without hubexport's own log lines (``hubexport: ...``)."""
    return [line for line in stderr.splitlines() if line and not line.startswith("hubexport: ")]


def final_paths(cache: Path) -> list[str]:
    """Files at the cache's final paths: tarballs and extracted checkpoints (no locks)."""
    found = []
    if (cache / "downloads").is_dir():
        found += ["downloads/" + p.name for p in (cache / "downloads").iterdir()
                  if not p.name.endswith(".lock")]
    if (cache / "checkpoints").is_dir():
        found += [str(p.relative_to(cache)) for p in (cache / "checkpoints").rglob("*")
                  if p.is_file() and not p.name.endswith(".lock")]
    return sorted(found)


def expected_warning(data: bytes, spec_file: Path) -> str:
    digest = "sha256:" + sha256(data)
    return ("warning: %s has no published checksum; got %s, %d bytes; pin it in %s as "
            "checkpoint.checksum: %s (and checkpoint.size: %d) once you have checked it"
            % (URL, digest, len(data), spec_file, digest, len(data)))


# --------------------------------------------------------------------------
# The spec.


def test_spec_unpublished_checksum_parses_as_unpinned(tmp_path):
    spec = specs_module.parse_spec(unpinned_text(), tmp_path / "inception_v2.yaml")
    ck = spec.checkpoint
    assert ck.pinned is False
    assert (ck.checksum_algo, ck.checksum_hex, ck.size) == (None, None, None)
    assert ck.checksum == "unpublished"
    assert (ck.url, ck.member, ck.filename) == (URL, MEMBER, FILENAME)
    shipped = specs_module.parse_spec(SPEC_TEXT, tmp_path / "inception_v2.yaml").checkpoint
    assert shipped.pinned is True and shipped.checksum.startswith("sha384:")
    # A size may still be given (and is then enforced by fetch).
    with_size = unpinned_text().replace("  checksum: unpublished",
                                        "  size: 123\n  checksum: unpublished")
    assert specs_module.parse_spec(with_size, tmp_path / "inception_v2.yaml").checkpoint.size \
        == 123


@pytest.mark.parametrize("value, problem", [
    ("unpublishd", "'unpublishd' is not ALGO:HEX with ALGO one of md5, sha256, sha384, sha512, "
                   "nor 'unpublished' (no published checksum)"),
    ("Unpublished", "'Unpublished' is not ALGO:HEX"),
    ("null", "expected a string, got null"),
    ("", "expected a string, got null"),
])
def test_spec_checksum_typos_are_errors_with_file_line_field(tmp_path, value, problem):
    text = unpinned_text().replace("  checksum: unpublished", "  checksum: " + value)
    specs = write_specs(tmp_path / "specs", text)
    line = text.splitlines().index("  checksum: " + value) + 1
    with pytest.raises(SpecError) as err:
        specs_module.load_specs(specs)
    where = "%s:%d: checkpoint.checksum: " % (specs / "inception_v2.yaml", line)
    assert str(err.value).startswith(where + problem), str(err.value)
    # The command line: one line, exit 2, no traceback.
    proc = run_cli("list", "--specs", specs)
    assert proc.returncode == 2
    assert messages(proc.stderr) == ["error: " + str(err.value)]


# --------------------------------------------------------------------------
# hubexport fetch.


@pytest.mark.parametrize("env", [{}, {"HUBEXPORT_ALLOW_UNPINNED": "0"}])
def test_fetch_refuses_an_unpinned_source(tmp_path, http_server, env):
    http_server.add_file(PATH, TARBALL)
    specs = write_specs(tmp_path / "specs", unpinned_text())
    cache = tmp_path / "cache"
    proc = run_cli(*fetch_args(specs, http_server, cache), env_extra=env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    spec_file = specs / "inception_v2.yaml"
    assert line == (
        "error: model inception_v2: %s has no published checksum (checkpoint.checksum: "
        "unpublished in %s), so its bytes cannot be verified; refusing to use it. Pass "
        "--allow-unpinned (or set HUBEXPORT_ALLOW_UNPINNED=1) to download it anyway and print "
        "its sha256 and size; once you have checked that digest, pin it in %s: replace "
        "'unpublished' by 'sha256:<hex>' and add 'size: <bytes>' under checkpoint"
        % (URL, spec_file, spec_file))
    assert http_server.requests_for(PATH) == []
    assert final_paths(cache) == []


@pytest.mark.parametrize("how", ["flag", "env"])
def test_fetch_with_permission_prints_the_digest_of_what_it_got(tmp_path, http_server, how):
    http_server.add_file(PATH, TARBALL)
    specs = write_specs(tmp_path / "specs", unpinned_text())
    cache = tmp_path / "cache"
    extra, env = (("--allow-unpinned",), {}) if how == "flag" else \
        ((), {"HUBEXPORT_ALLOW_UNPINNED": "1"})
    proc = run_cli(*fetch_args(specs, http_server, cache, "--json", *extra), env_extra=env)
    assert proc.returncode == 0, proc.stderr
    assert messages(proc.stderr) == [expected_warning(TARBALL, specs / "inception_v2.yaml")]
    out = json.loads(proc.stdout)
    assert out["checksum"] == "sha256:" + sha256(TARBALL)
    assert (out["size"], out["pinned"]) == (len(TARBALL), False)
    assert Path(out["tarball"]) == cache / "downloads" / FILENAME
    assert Path(out["tarball"]).read_bytes() == TARBALL
    ckpt = Path(out["checkpoint"])
    assert ckpt == cache / "checkpoints" / ("inception_v2-unpinned-" + sha256(TARBALL)) / MEMBER
    assert ckpt.read_bytes() == payload_of(TARBALL)
    assert final_paths(cache) == sorted(["downloads/" + FILENAME, str(ckpt.relative_to(cache))])


def test_fetch_enforces_an_unpinned_specs_size(tmp_path, http_server):
    http_server.add_file(PATH, TARBALL)
    text = unpinned_text().replace("  checksum: unpublished",
                                   "  size: %d\n  checksum: unpublished" % (len(TARBALL) + 1))
    specs = write_specs(tmp_path / "specs", text)
    cache = tmp_path / "cache"
    proc = run_cli(*fetch_args(specs, http_server, cache, "--allow-unpinned"))
    assert proc.returncode == 1, proc.stderr
    (line,) = messages(proc.stderr)
    assert line.startswith("error: size mismatch for %s" % FILENAME), line
    assert final_paths(cache) == []


def test_a_pinned_spec_is_not_weakened_by_the_flag(tmp_path, http_server):
    tampered = bytearray(TARBALL)
    tampered[len(tampered) // 2] ^= 0x01
    http_server.add_file(PATH, bytes(tampered))
    specs = write_specs(tmp_path / "specs", pinned_text(TARBALL))
    cache = tmp_path / "cache"
    for env in ({}, {"HUBEXPORT_ALLOW_UNPINNED": "1"}):
        proc = run_cli(*fetch_args(specs, http_server, cache, "--allow-unpinned"),
                       env_extra=env)
        assert proc.returncode == 1, proc.stderr
        (line,) = messages(proc.stderr)
        assert line.startswith("error: checksum mismatch for %s" % FILENAME), line
        assert "expected sha256:%s, got sha256:%s" % (sha256(TARBALL), sha256(bytes(tampered))) \
            in line
        assert "no published checksum" not in proc.stderr
        assert final_paths(cache) == []
    # The right bytes pass, and no warning is printed for a pinned source.
    http_server.add_file(PATH, TARBALL)
    proc = run_cli(*fetch_args(specs, http_server, cache, "--allow-unpinned", "--json"))
    assert proc.returncode == 0, proc.stderr
    assert messages(proc.stderr) == []
    out = json.loads(proc.stdout)
    assert (out["checksum"], out["size"], out["pinned"]) == \
        ("sha256:" + sha256(TARBALL), len(TARBALL), True)
    assert Path(out["checkpoint"]).parent.name == "inception_v2-" + sha256(TARBALL)[:12]


def test_cache_after_the_spec_is_pinned(tmp_path, http_server):
    """A tarball fetched unpinned is checked again against the pin, never trusted."""
    http_server.add_file(PATH, TARBALL)
    cache = tmp_path / "cache"
    unpinned = write_specs(tmp_path / "unpinned", unpinned_text())
    proc = run_cli(*fetch_args(unpinned, http_server, cache, "--allow-unpinned", "--json"))
    assert proc.returncode == 0, proc.stderr
    assert len(http_server.requests_for(PATH)) == 1
    # What was extracted for the unpinned source is spoiled: a pinned spec must not use it.
    Path(json.loads(proc.stdout)["checkpoint"]).write_bytes(b"spoiled")

    # Pinned to the digest fetch printed: the cached tarball is verified and reused.
    same = write_specs(tmp_path / "same", pinned_text(TARBALL))
    proc = run_cli(*fetch_args(same, http_server, cache, "--json"))
    assert proc.returncode == 0, proc.stderr
    assert messages(proc.stderr) == [] and "failed verification" not in proc.stderr
    assert len(http_server.requests_for(PATH)) == 1
    out = json.loads(proc.stdout)
    assert out["pinned"] is True
    # A pinned spec never reads what was extracted for an unpinned one.
    assert Path(out["checkpoint"]).parent.name == "inception_v2-" + sha256(TARBALL)[:12]
    assert Path(out["checkpoint"]).read_bytes() == payload_of(TARBALL)

    # Pinned to another digest while the server still serves the old bytes:
    # the cached tarball fails verification, the download too; nothing kept.
    other = write_specs(tmp_path / "other", pinned_text(OTHER))
    proc = run_cli(*fetch_args(other, http_server, cache))
    assert proc.returncode == 1, proc.stderr
    assert "cached %s failed verification" % (cache / "downloads" / FILENAME) in proc.stderr
    (line,) = messages(proc.stderr)
    assert line.startswith("error: checksum mismatch for %s" % FILENAME), line
    assert len(http_server.requests_for(PATH)) == 2
    assert not (cache / "downloads" / FILENAME).exists()
    assert not list(cache.glob("checkpoints/inception_v2-%s*" % sha256(OTHER)[:12]))

    # The server now has the pinned bytes: fetched and used.
    http_server.add_file(PATH, OTHER)
    proc = run_cli(*fetch_args(other, http_server, cache, "--json"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert Path(out["tarball"]).read_bytes() == OTHER
    assert Path(out["checkpoint"]).read_bytes() == payload_of(OTHER)

    # Unpinned again, with the cache holding OTHER: what is reported and
    # extracted is OTHER, never the checkpoint extracted from TARBALL earlier.
    proc = run_cli(*fetch_args(unpinned, http_server, cache, "--allow-unpinned", "--json"))
    assert proc.returncode == 0, proc.stderr
    assert messages(proc.stderr) == [expected_warning(OTHER, unpinned / "inception_v2.yaml")]
    out = json.loads(proc.stdout)
    assert out["checksum"] == "sha256:" + sha256(OTHER)
    assert Path(out["checkpoint"]).read_bytes() == payload_of(OTHER)
    assert len(http_server.requests_for(PATH)) == 3  # the cached tarball was reused


def test_an_unpinned_download_never_resumes_a_stale_part_file(tmp_path, http_server):
    http_server.add_file(PATH, TARBALL)
    specs = write_specs(tmp_path / "specs", unpinned_text())
    cache = tmp_path / "cache"
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / (FILENAME + ".part")).write_bytes(OTHER[:len(OTHER) // 2])
    proc = run_cli(*fetch_args(specs, http_server, cache, "--allow-unpinned", "--json"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["checksum"] == "sha256:" + sha256(TARBALL)
    assert [r.range for r in http_server.requests_for(PATH)] == [None]
    assert (cache / "downloads" / FILENAME).read_bytes() == TARBALL


# --------------------------------------------------------------------------
# Records without TensorFlow.


def test_source_record_of_pinned_and_unpinned_specs(tmp_path):
    from hubexport import build
    from hubexport.fetch import FetchedSource

    pinned = specs_module.parse_spec(SPEC_TEXT, tmp_path / "inception_v2.yaml")
    record = build.source_record(pinned)
    assert record["pinned"] is True
    assert record["checksum"] == "%s:%s" % (pinned.checkpoint.checksum_algo,
                                            pinned.checkpoint.checksum_hex)
    assert record["size"] == pinned.checkpoint.size
    unpinned = specs_module.load_spec(write_specs(tmp_path / "specs", unpinned_text())
                                      / "inception_v2.yaml")
    with pytest.raises(ValueError, match="no published checksum"):
        build.source_record(unpinned)
    got = FetchedSource(tmp_path / "t", tmp_path / "c", "sha256:" + "ab" * 32, 42, False)
    assert build.source_record(unpinned, got) == {
        "url": URL, "filename": FILENAME, "size": 42, "checksum": "sha256:" + "ab" * 32,
        "member": MEMBER, "pinned": False}
    target = unpinned.targets(version=1, kind="classification")[0]
    assert build._stamp(target, build.source_record(unpinned, got)) != build._stamp(
        target, build.source_record(unpinned, FetchedSource(
            tmp_path / "t", tmp_path / "c", "sha256:" + "cd" * 32, 42, False)))


def test_publish_marks_sources_of_older_stamps_as_pinned():
    from hubexport import publish

    old = {"url": URL, "filename": FILENAME, "size": 1, "checksum": "md5:" + "0" * 32,
           "member": MEMBER}
    assert publish._source(old) == dict(old, pinned=True)
    assert "pinned" not in old
    unpinned = dict(old, checksum="sha256:" + "0" * 64, pinned=False)
    assert publish._source(unpinned) == unpinned


def test_verify_reads_a_served_index_for_the_source(http_server):
    from hubexport import verify

    source = {"url": URL, "filename": FILENAME, "size": 7, "checksum": "sha256:" + "ef" * 32,
              "member": MEMBER, "pinned": False}
    http_server.add_file("/index.json", json.dumps(
        {"modules": [{"module_handle": HANDLE + "/1", "source": source}]}).encode())
    assert verify._served_source(http_server.base_url, HANDLE + "/1") == source
    assert verify._served_source(http_server.base_url, HANDLE + "/3") is None
    check = verify._source_check(source)
    assert (check.name, check.ok) == ("source", True)
    assert check.detail == ("unpinned: sha256:%s (no published checksum), 7 bytes from %s"
                            % ("ef" * 32, URL))
    assert verify._source_check(dict(source, pinned=True)) is None
    assert verify._source_check({k: v for k, v in source.items() if k != "pinned"}) is None


# --------------------------------------------------------------------------
# build, publish, verify (one stand-in module; TensorFlow).


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    from hubexport.standin import make_standin

    root = tmp_path_factory.mktemp("unpinned-standin")
    result = make_standin("inception_v2", root, seed=0)
    text = (result.spec_dir / "inception_v2.yaml").read_text(encoding="utf-8")
    specs = write_specs(root / "unpinned-specs", unpinned_text(text))
    return result, specs


def test_build_publish_verify_an_unpinned_source(tmp_path, http_server, standin):
    result, specs = standin
    data = result.tarball.read_bytes()
    http_server.add_file(PATH, data)
    digest = "sha256:" + sha256(data)
    assert digest == result.checksum
    cache, out, registry = tmp_path / "cache", tmp_path / "out", tmp_path / "registry"
    args = ("build", "inception_v2", "--version", "1", "--kind", "classification", "--specs",
            specs, "--mirror", http_server.url("/models"), "--cache-dir", cache,
            "--output", out, "--json")
    module = out / HANDLE / "1"
    stamp = out / HANDLE / ".1.stamp"

    refused = run_cli(*args)
    assert refused.returncode == 2, refused.stderr
    (line,) = refused.stderr.splitlines()
    assert line.startswith("error: model inception_v2: %s has no published checksum" % URL)
    assert "--allow-unpinned" in line and "HUBEXPORT_ALLOW_UNPINNED=1" in line
    assert http_server.requests_for(PATH) == [] and final_paths(cache) == []
    assert not out.exists()

    built = run_cli(*args, "--allow-unpinned")
    assert built.returncode == 0, built.stderr[-3000:]
    assert expected_warning(data, specs / "inception_v2.yaml") in messages(built.stderr)
    assert [r["status"] for r in json.loads(built.stdout)] == ["built"]
    assert (module / "saved_model.pb").is_file()
    source = json.loads(stamp.read_text())["module"]["source"]
    assert source == {"url": URL, "filename": FILENAME, "size": len(data), "checksum": digest,
                      "member": MEMBER, "pinned": False}

    # Up to date on the same bytes (the stamp holds their digest); the env var works too.
    again = run_cli(*args, env_extra={"HUBEXPORT_ALLOW_UNPINNED": "1"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["status"] for r in json.loads(again.stdout)] == ["up-to-date"]
    assert expected_warning(data, specs / "inception_v2.yaml") in messages(again.stderr)

    published = run_cli("publish", out, "--registry", registry)
    assert published.returncode == 0, published.stderr[-3000:]
    (entry,) = json.loads((registry / "index.json").read_text())["modules"]
    assert entry["source"] == source

    detail = "unpinned: %s (no published checksum), %d bytes from %s" % (digest, len(data), URL)
    human = run_cli("verify", out, "--specs", specs)
    assert human.returncode == 0, human.stdout[-3000:] + human.stderr[-3000:]
    assert "         warning: source: " + detail in human.stdout.splitlines()
    assert human.stdout.splitlines()[-1] == "verified 1 modules: ok"

    report = run_cli("verify", registry, "--specs", specs, "--json")
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    (checked,) = json.loads(report.stdout)["modules"]
    assert checked["ok"] is True and checked["failures"] == []
    assert {"check": "source", "ok": True, "detail": detail} in checked["checks"]
