"""Tests of hubexport.fetch against a real HTTP(S) server on 127.0.0.1, and of
hubexport.archive's extraction of V1 and V2 checkpoints from hostile tarballs.

The "checkpoints" here are random bytes (neither module parses them); that a
real V2 checkpoint extracted this way reads back is tests/test_checkpoint.py's.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import random
import re
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import pytest

from hubexport import archive, fetch
from hubexport.errors import ArchiveError, ChecksumError, FetchError, SpecError
from httpserver import Reply

REPO = Path(__file__).resolve().parents[1]
FILENAME = "toy_2016_08_28.tar.gz"
MEMBER = "toy.ckpt"
PATH = f"/models/{FILENAME}"
PAYLOAD = random.Random(1234).randbytes(300 * 1024)  # incompressible stand-in checkpoint


def make_tar(entries, compression: str = "gz") -> bytes:
    """Builds a tar archive in memory.

    Args:
        entries: list of TarInfo (data taken from ``info._data``) or
            (name, bytes) pairs for regular files.
        compression: "gz", "bz2", "xz" or "" for a plain tar.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}" if compression else "w") as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                data = getattr(entry, "_data", None)
                tf.addfile(entry, io.BytesIO(data) if data is not None else None)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _dir(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


TARBALL = make_tar([_dir("."), (f"./{MEMBER}", PAYLOAD)])


def make_spec(data: bytes = TARBALL, url: str = f"http://127.0.0.1:9/models/{FILENAME}",
              algo: str = "sha384", size: int | None | bool = True, member: str = MEMBER,
              name: str = "toy", hexdigest: str | None = None):
    """A stand-in for hubexport.specs.ModelSpec with the attributes fetch uses."""
    checkpoint = types.SimpleNamespace(
        url=url,
        size=len(data) if size is True else size,
        checksum_algo=algo,
        checksum_hex=hexdigest or hashlib.new(algo, data).hexdigest(),
        member=member,
        filename=url.rsplit("/", 1)[-1],
    )
    return types.SimpleNamespace(name=name, checkpoint=checkpoint)


@pytest.fixture(autouse=True)
def fast_network(monkeypatch):
    """Small timeouts and backoff so failure paths stay fast."""
    monkeypatch.setattr(fetch, "BACKOFF", 0.01)
    monkeypatch.setattr(fetch, "RETRIES", 3)
    monkeypatch.setattr(fetch, "CONNECT_TIMEOUT", 2.0)
    monkeypatch.setattr(fetch, "READ_TIMEOUT", 2.0)
    monkeypatch.setattr(fetch, "CHUNK_BYTES", 16 * 1024)
    for var in ("HUBEXPORT_MIRROR", "HUBEXPORT_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def served(http_server):
    """The server holding TARBALL at PATH, and a spec pointing at it."""
    http_server.add_file(PATH, TARBALL)
    return http_server, make_spec(url=http_server.url(PATH))


def downloads(cache: Path) -> list[str]:
    d = cache / "downloads"
    return sorted(p.name for p in d.iterdir() if not p.name.endswith(".lock")) if d.exists() else []


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---------------------------------------------------------------------------
# Cache directory and mirrors
# ---------------------------------------------------------------------------


def test_default_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert fetch.default_cache_dir() == tmp_path / "home" / ".cache" / "hubexport"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fetch.default_cache_dir() == tmp_path / "xdg" / "hubexport"
    monkeypatch.setenv("HUBEXPORT_CACHE", str(tmp_path / "hx"))
    assert fetch.default_cache_dir() == tmp_path / "hx"


def test_resolve_url(monkeypatch):
    url = "http://download.tensorflow.org/models/inception_v2_2016_08_28.tar.gz"
    assert fetch.resolve_url(url) == url
    assert fetch.resolve_url(url, "https://m.example/models/") == \
        "https://m.example/models/inception_v2_2016_08_28.tar.gz"
    assert fetch.resolve_url(url, "/srv/mirror") == "/srv/mirror/inception_v2_2016_08_28.tar.gz"
    monkeypatch.setenv("HUBEXPORT_MIRROR", "file:///srv/m/")
    assert fetch.resolve_url(url) == "file:///srv/m/inception_v2_2016_08_28.tar.gz"
    assert fetch.resolve_url(url, "http://other") == "http://other/inception_v2_2016_08_28.tar.gz"


# ---------------------------------------------------------------------------
# Downloads
# ---------------------------------------------------------------------------


def test_download_verifies_and_is_not_repeated(served, tmp_path):
    server, spec = served
    path = fetch.fetch_tarball(spec, cache_dir=tmp_path)
    assert path == tmp_path / "downloads" / FILENAME
    assert path.read_bytes() == TARBALL
    assert downloads(tmp_path) == [FILENAME]  # no .part left
    assert fetch.fetch_tarball(spec, cache_dir=tmp_path) == path
    assert len(server.requests_for(PATH)) == 1
    assert server.requests_for(PATH)[0].headers.get("Accept-Encoding") == "identity"


@pytest.mark.parametrize("algo,size", [("md5", None), ("sha256", True), ("sha512", None)])
def test_download_other_algorithms_and_unknown_size(http_server, tmp_path, algo, size):
    http_server.add_file(PATH, TARBALL)
    spec = make_spec(url=http_server.url(PATH), algo=algo, size=size)
    assert fetch.fetch_tarball(spec, cache_dir=tmp_path).read_bytes() == TARBALL


def test_altered_cached_file_is_detected_and_fetched_again(served, tmp_path, caplog):
    server, spec = served
    path = fetch.fetch_tarball(spec, cache_dir=tmp_path)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF  # same size, different bytes
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="hubexport.fetch"):
        assert fetch.fetch_tarball(spec, cache_dir=tmp_path).read_bytes() == TARBALL
    assert "failed verification" in caplog.text and "checksum mismatch" in caplog.text
    assert len(server.requests_for(PATH)) == 2


def test_resume_after_dropped_connection_uses_range(served, tmp_path):
    server, spec = served
    server.script(PATH, Reply(drop_after=100_000))
    assert fetch.fetch_tarball(spec, cache_dir=tmp_path).read_bytes() == TARBALL
    ranges = server.ranges(PATH)
    assert len(ranges) == 2 and ranges[0] is None
    m = re.fullmatch(r"bytes=(\d+)-", ranges[1])
    assert m and 0 < int(m.group(1)) <= 100_000


def test_resume_existing_part_file(served, tmp_path):
    server, spec = served
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / (FILENAME + ".part")).write_bytes(TARBALL[:50_000])
    assert fetch.fetch_tarball(spec, cache_dir=tmp_path).read_bytes() == TARBALL
    assert server.ranges(PATH) == ["bytes=50000-"]


def test_bad_part_prefix_is_downloaded_again_from_zero(served, tmp_path, caplog):
    server, spec = served
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / (FILENAME + ".part")).write_bytes(b"\0" * 50_000)
    with caplog.at_level(logging.WARNING, logger="hubexport.fetch"):
        assert fetch.fetch_tarball(spec, cache_dir=tmp_path).read_bytes() == TARBALL
    assert server.ranges(PATH) == ["bytes=50000-", None]
    assert "resumed partial file was bad" in caplog.text


def test_persistent_drops_give_up_and_keep_part_for_next_run(served, tmp_path):
    server, spec = served
    server.script(PATH, Reply(drop_after=50_000), then=Reply(drop_after=0))
    with pytest.raises(FetchError, match=r"interrupted 4 times in a row without progress.*--mir"):
        fetch.fetch_tarball(spec, cache_dir=tmp_path)
    part = tmp_path / "downloads" / (FILENAME + ".part")
    assert 0 < part.stat().st_size <= 50_000
    kept = part.stat().st_size
    server.script(PATH)  # behave normally again
    server.clear_requests()
    assert fetch.fetch_tarball(spec, cache_dir=tmp_path).read_bytes() == TARBALL
    assert server.ranges(PATH) == [f"bytes={kept}-"]
    assert downloads(tmp_path) == [FILENAME]


def test_persistent_stall_gives_up(served, tmp_path, monkeypatch):
    server, spec = served
    monkeypatch.setattr(fetch, "READ_TIMEOUT", 0.2)
    monkeypatch.setattr(fetch, "RETRIES", 1)
    server.script(PATH, then=Reply(stall=3))
    with pytest.raises(FetchError, match=r"no response within 0.2 s \(2 attempts\)"):
        fetch.fetch_tarball(spec, cache_dir=tmp_path)
    assert len(server.requests_for(PATH)) == 2


def test_server_ignoring_range_restarts_cleanly(served, tmp_path):
    server, spec = served
    server.script(PATH, Reply(drop_after=100_000), then=Reply(ignore_range=True))
    path = fetch.fetch_tarball(spec, cache_dir=tmp_path)
    assert path.read_bytes() == TARBALL  # no appended garbage
    ranges = server.ranges(PATH)
    assert ranges[0] is None and ranges[1].startswith("bytes=") and len(ranges) == 2


def test_503_then_200_is_retried(served, tmp_path):
    server, spec = served
    server.script(PATH, Reply(status=503), Reply(status=502))
    assert fetch.fetch_tarball(spec, cache_dir=tmp_path).read_bytes() == TARBALL
    assert len(server.requests_for(PATH)) == 3


def test_persistent_503_gives_up(served, tmp_path):
    server, spec = served
    server.script(PATH, then=Reply(status=503))
    with pytest.raises(FetchError, match=r"HTTP 503 .*after 4 attempts.*--mirror") as err:
        fetch.fetch_tarball(spec, cache_dir=tmp_path)
    assert "\n" not in str(err.value)
    assert len(server.requests_for(PATH)) == fetch.RETRIES + 1
    assert downloads(tmp_path) == []  # no empty .part left behind


@pytest.mark.parametrize("status", [404, 403, 400])
def test_client_errors_are_not_retried(http_server, tmp_path, status):
    url = http_server.url(PATH)
    http_server.add_file(PATH, TARBALL)
    http_server.script(PATH, then=Reply(status=status))
    with pytest.raises(FetchError) as err:
        fetch.fetch_tarball(make_spec(url=url), cache_dir=tmp_path)
    message = str(err.value)
    assert f"HTTP {status}" in message and url in message
    assert "--mirror" in message and "HUBEXPORT_MIRROR" in message and "\n" not in message
    assert len(http_server.requests_for(PATH)) == 1
    assert not (tmp_path / "downloads" / FILENAME).exists()


def test_connection_refused_is_a_fetch_error(tmp_path, http_server):
    url = http_server.url(PATH)
    http_server.stop()
    with pytest.raises(FetchError, match="cannot download .*--mirror"):
        fetch.fetch_tarball(make_spec(url=url), cache_dir=tmp_path)


def test_stall_before_headers_times_out_and_is_retried(served, tmp_path, monkeypatch):
    server, spec = served
    monkeypatch.setattr(fetch, "READ_TIMEOUT", 0.3)
    server.script(PATH, Reply(stall=1.5))
    assert fetch.fetch_tarball(spec, cache_dir=tmp_path).read_bytes() == TARBALL
    assert len(server.requests_for(PATH)) == 2


def test_stall_mid_body_times_out_and_resumes(served, tmp_path, monkeypatch):
    server, spec = served
    monkeypatch.setattr(fetch, "READ_TIMEOUT", 0.3)
    server.script(PATH, Reply(stall=1.5, stall_at=60_000))
    assert fetch.fetch_tarball(spec, cache_dir=tmp_path).read_bytes() == TARBALL
    ranges = server.ranges(PATH)
    assert ranges[0] is None and re.fullmatch(r"bytes=[1-9]\d*-", ranges[1])


def test_wrong_checksum_deletes_file_and_shows_both_digests(http_server, tmp_path):
    http_server.add_file(PATH, TARBALL)
    wrong = hashlib.sha384(b"something else").hexdigest()
    spec = make_spec(url=http_server.url(PATH), hexdigest=wrong)
    with pytest.raises(ChecksumError) as err:
        fetch.fetch_tarball(spec, cache_dir=tmp_path)
    actual = hashlib.sha384(TARBALL).hexdigest()
    assert f"expected sha384:{wrong}, got sha384:{actual}" in str(err.value)
    assert downloads(tmp_path) == []


def test_size_mismatch_deletes_file(http_server, tmp_path):
    http_server.add_file(PATH, TARBALL)
    spec = make_spec(url=http_server.url(PATH), size=len(TARBALL) + 1)
    n = len(TARBALL)
    with pytest.raises(ChecksumError, match=rf"expected {n + 1} bytes, got {n} bytes"):
        fetch.fetch_tarball(spec, cache_dir=tmp_path)
    assert downloads(tmp_path) == []


def test_more_bytes_than_size_are_refused(http_server, tmp_path):
    http_server.add_file(PATH, TARBALL + bytes(100 * 1024))
    spec = make_spec(TARBALL, url=http_server.url(PATH))
    # Content-Length announces too many bytes: refused before the body is read.
    n = len(TARBALL)
    with pytest.raises(ChecksumError, match=rf"expected {n} bytes, got {n + 102400} bytes"):
        fetch.fetch_tarball(spec, cache_dir=tmp_path / "1")
    # No Content-Length (body ends at close): writing stops at the pinned size.
    http_server.script(PATH, Reply(content_length=-1))
    with pytest.raises(ChecksumError, match=rf"expected {len(TARBALL)} bytes, got more"):
        fetch.fetch_tarball(spec, cache_dir=tmp_path / "2")
    assert downloads(tmp_path / "1") == [] and downloads(tmp_path / "2") == []


def test_content_length_smaller_than_body_is_a_size_mismatch(http_server, tmp_path):
    http_server.add_file(PATH, TARBALL)
    http_server.script(PATH, Reply(content_length=len(TARBALL) - 10))
    n = len(TARBALL)
    with pytest.raises(ChecksumError, match=rf"expected {n} bytes, got {n - 10} bytes"):
        fetch.fetch_tarball(make_spec(url=http_server.url(PATH)), cache_dir=tmp_path)
    assert downloads(tmp_path) == []


def test_body_shorter_than_content_length_is_resumed(http_server, tmp_path):
    # Size not pinned: the short body is resumed; the server's 416 "bytes */N"
    # then tells the download is complete, and the checksum confirms it.
    http_server.add_file(PATH, TARBALL)
    spec = make_spec(url=http_server.url(PATH), size=None)
    http_server.script(PATH, Reply(content_length=len(TARBALL) + 5000))
    assert fetch.fetch_tarball(spec, cache_dir=tmp_path).read_bytes() == TARBALL
    assert http_server.ranges(PATH) == [None, f"bytes={len(TARBALL)}-"]


def test_http_mirror(http_server, tmp_path, monkeypatch):
    http_server.add_file(f"/mirror/{FILENAME}", TARBALL)
    spec = make_spec(url=f"http://127.0.0.1:9/models/{FILENAME}")  # canonical host unreachable
    path = fetch.fetch_tarball(spec, cache_dir=tmp_path, mirror=http_server.url("/mirror/"))
    assert path.read_bytes() == TARBALL
    monkeypatch.setenv("HUBEXPORT_MIRROR", http_server.url("/mirror"))
    assert fetch.fetch_tarball(spec, cache_dir=tmp_path / "env").read_bytes() == TARBALL
    assert [r.path for r in http_server.requests] == [f"/mirror/{FILENAME}"] * 2


@pytest.mark.parametrize("kind", ["file_url", "plain_path"])
def test_local_mirror(tmp_path, kind):
    mirror_dir = tmp_path / "mirror dir"
    mirror_dir.mkdir()
    (mirror_dir / FILENAME).write_bytes(TARBALL)
    mirror = mirror_dir.as_uri() if kind == "file_url" else str(mirror_dir)
    cache = tmp_path / "cache"
    path = fetch.fetch_tarball(make_spec(), cache_dir=cache, mirror=mirror)
    assert path.read_bytes() == TARBALL and downloads(cache) == [FILENAME]
    (mirror_dir / FILENAME).write_bytes(TARBALL[:-1] + b"x")
    with pytest.raises(ChecksumError, match="expected sha384:"):
        fetch.fetch_tarball(make_spec(), cache_dir=tmp_path / "c2", mirror=mirror)
    assert downloads(tmp_path / "c2") == []


def test_local_mirror_missing_file(tmp_path):
    with pytest.raises(FetchError, match=r"does not exist.*--mirror"):
        fetch.fetch_tarball(make_spec(), cache_dir=tmp_path, mirror=str(tmp_path / "nowhere"))


def test_redirect_is_followed(http_server, tmp_path):
    http_server.add_file("/real/" + FILENAME, TARBALL)
    http_server.script(PATH, then=Reply(redirect="/real/" + FILENAME))
    spec = make_spec(url=http_server.url(PATH))
    assert fetch.fetch_tarball(spec, cache_dir=tmp_path).read_bytes() == TARBALL


def test_https_download_and_refused_downgrade(https_server, http_server, tmp_path):
    https_server.add_file(PATH, TARBALL)
    spec = make_spec(url=https_server.url(PATH))
    assert fetch.fetch_tarball(spec, cache_dir=tmp_path / "ok").read_bytes() == TARBALL
    http_server.add_file(PATH, TARBALL)
    https_server.script(PATH, then=Reply(redirect=http_server.url(PATH)))
    with pytest.raises(FetchError, match=r"refusing redirect from https://.* to insecure http://"):
        fetch.fetch_tarball(spec, cache_dir=tmp_path / "bad")
    assert http_server.requests == []
    assert downloads(tmp_path / "bad") == []


def test_check_redirect_rules():
    fetch._check_redirect("http://a/x", "https://b/x")
    fetch._check_redirect("http://a/x", "http://b/x")
    fetch._check_redirect("https://a/x", "https://b/x")
    with pytest.raises(FetchError, match="insecure"):
        fetch._check_redirect("https://a/x", "http://b/x")
    with pytest.raises(FetchError, match="only http"):
        fetch._check_redirect("http://a/x", "file:///etc/passwd")


def test_progress_bar_only_when_asked(served, tmp_path, capsys):
    _, spec = served
    fetch.fetch_tarball(spec, cache_dir=tmp_path / "a", progress=None)  # stderr is not a TTY
    assert capsys.readouterr().err == ""
    fetch.fetch_tarball(spec, cache_dir=tmp_path / "b", progress=True)
    assert FILENAME in capsys.readouterr().err


def test_bad_spec_checksum_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="sha384 digest must be 96 hex digits"):
        fetch.fetch_tarball(make_spec(hexdigest="abc"), cache_dir=tmp_path)
    spec = make_spec()
    spec.checkpoint.checksum_algo = "crc32"
    with pytest.raises(SpecError, match="'crc32' is not one of md5, sha256, sha384, sha512"):
        fetch.fetch_tarball(spec, cache_dir=tmp_path)


_TWO_PROCESS_SCRIPT = """
import json, sys, types
from hubexport import fetch
ck = types.SimpleNamespace(**json.loads(sys.argv[1]))
spec = types.SimpleNamespace(name="toy", checkpoint=ck)
print("ready", flush=True)
sys.stdin.readline()
print(fetch.fetch_tarball(spec, cache_dir=sys.argv[2], progress=False), flush=True)
"""


def test_two_processes_download_once(served, tmp_path):
    server, spec = served
    server.script(PATH, Reply(stall=1.0))  # the first download takes a while
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    args = [sys.executable, "-c", _TWO_PROCESS_SCRIPT, json.dumps(vars(spec.checkpoint)),
            str(tmp_path)]
    procs = [subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:  # start both fetches at the same moment
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == str(tmp_path / "downloads" / FILENAME)
    assert len(server.requests_for(PATH)) == 1
    assert (tmp_path / "downloads" / FILENAME).read_bytes() == TARBALL


# ---------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------


def _write(tmp_path: Path, data: bytes, name: str = FILENAME) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz", ""])
def test_extract_good_tarball(tmp_path, compression):
    data = make_tar([tarfile.TarInfo("."), ("./README", b"hello"), (f"./{MEMBER}", PAYLOAD)],
                    compression)
    tarball = _write(tmp_path, data)
    dest = tmp_path / "out"
    path = archive.extract_checkpoint(tarball, MEMBER, dest, tarball_size=len(data))
    assert path == dest / MEMBER and path.read_bytes() == PAYLOAD
    assert sorted(os.listdir(dest)) == [MEMBER]  # only the member, no temp dir


def _symlink(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def _hardlink(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info


def _fifo(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.FIFOTYPE
    return info


def _device(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info


BAD_ARCHIVES = {
    "tar_slip": (lambda t: make_tar([("../evil", b"x"), (MEMBER, PAYLOAD)]),
                 r"'\.\./evil'.*leaves"),
    "tar_slip_member": (lambda t: make_tar([(f"sub/../../{MEMBER}", PAYLOAD)]), r"leaves"),
    "absolute": (lambda t: make_tar([(MEMBER, PAYLOAD), (f"{t}/abs_evil", b"x")]),
                 r"absolute path"),
    "symlink": (lambda t: make_tar([_symlink(MEMBER, "/etc/passwd")]), r"symbolic link"),
    "symlink_dir": (lambda t: make_tar([_symlink("d", str(t)), ("d/evil", b"x"),
                                        (MEMBER, PAYLOAD)]), r"symbolic link"),
    "hardlink": (lambda t: make_tar([(MEMBER, PAYLOAD), _hardlink("x", "/etc/passwd")]),
                 r"hard link"),
    "fifo": (lambda t: make_tar([(MEMBER, PAYLOAD), _fifo("pipe")]), r"FIFO"),
    "device": (lambda t: make_tar([(MEMBER, PAYLOAD), _device("null")]), r"device"),
    "duplicate": (lambda t: make_tar([(MEMBER, PAYLOAD), (f"./{MEMBER}", b"evil")]),
                  r"occurs twice"),
    "missing": (lambda t: make_tar([("a.ckpt", b"1"), ("b.txt", b"2")]),
                r"no member 'toy.ckpt'; the archive holds 'a.ckpt', 'b.txt'"),
    "not_a_tar": (lambda t: b"<html>404 Not Found</html>\n" * 100, r"not a tar archive"),
    "empty_file": (lambda t: b"", r"empty file"),
    "empty_tar": (lambda t: make_tar([]), r"empty tar archive"),
    "truncated_gzip": (lambda t: make_tar([(MEMBER, PAYLOAD)])[: len(TARBALL) // 2],
                       r"truncated or damaged"),
    "truncated_trailer": (lambda t: make_tar([(MEMBER, PAYLOAD)])[:-4], r"truncated or damaged"),
    "bomb": (lambda t: make_tar([(MEMBER, bytes(8 << 20))]), r"decompression bomb"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_extract_refuses_bad_archives(tmp_path, case):
    build, pattern = BAD_ARCHIVES[case]
    work = tmp_path / "work"
    work.mkdir()
    data = build(work)
    tarball = _write(work, data)
    before = snapshot(tmp_path)
    dest = work / "out"
    with pytest.raises(ArchiveError, match=pattern) as err:
        archive.extract_checkpoint(tarball, MEMBER, dest, tarball_size=len(data))
    message = str(err.value)
    assert str(tarball) in message and "\n" not in message
    assert snapshot(tmp_path) == before  # nothing written anywhere, no temp dir left


@pytest.mark.parametrize("first_ok", [False, True])
def test_bomb_refused_from_header_without_inflating(tmp_path, first_ok):
    # A header claiming 100 GiB followed by only 1 MiB of data: had the data
    # been read, the error would be "truncated"; the header alone must refuse it.
    info = tarfile.TarInfo("big" if first_ok else MEMBER)
    info.size = 100 << 30
    raw = info.tobuf(format=tarfile.PAX_FORMAT) + bytes(1 << 20)
    if first_ok:
        raw = make_tar([(MEMBER, b"x" * 1000)], "")[:1536] + raw
    data = gzip.compress(raw)
    tarball = _write(tmp_path, data)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveError, match="decompression bomb"):
        archive.extract_checkpoint(tarball, MEMBER, dest, tarball_size=None)
    assert os.listdir(dest) == []  # existing dest kept, emptied of temp dirs


def test_extract_refuses_unsafe_spec_member(tmp_path):
    """fetch refuses the spec before downloading (SpecError); the archive API refuses too."""
    tarball = _write(tmp_path, TARBALL)
    for member in ("../x.ckpt", "/etc/x.ckpt", ""):
        with pytest.raises(SpecError, match="checkpoint.member"):
            fetch.fetch_source(make_spec(member=member), cache_dir=tmp_path / "cache",
                               mirror=tmp_path)
        with pytest.raises(ValueError, match="not a relative path"):
            archive.extract_checkpoint(tarball, member, tmp_path / "out")
    assert not (tmp_path / "cache" / "downloads" / FILENAME).exists()
    assert not (tmp_path / "out").exists()


def test_extract_replaces_into_existing_dest(tmp_path):
    tarball = _write(tmp_path, TARBALL)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / MEMBER).write_bytes(b"stale")
    (dest / "other").write_bytes(b"keep")
    assert archive.extract_checkpoint(tarball, MEMBER, dest).read_bytes() == PAYLOAD
    assert sorted(os.listdir(dest)) == ["other", MEMBER]


# ---------------------------------------------------------------------------
# The stage's entry point
# ---------------------------------------------------------------------------


def test_fetch_checkpoint_end_to_end(served, tmp_path):
    server, spec = served
    path = fetch.fetch_checkpoint(spec, cache_dir=tmp_path, progress=False)
    digest12 = spec.checkpoint.checksum_hex[:12]
    assert path == tmp_path / "checkpoints" / f"toy-{digest12}" / MEMBER
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in path.parent.iterdir()] == [MEMBER]
    assert fetch.tarball_path(spec, tmp_path) == tmp_path / "downloads" / FILENAME
    # The tarball is re-verified, and a complete extraction is reused.
    inode = path.stat().st_ino
    assert fetch.fetch_checkpoint(spec, cache_dir=tmp_path) == path
    assert path.stat().st_ino == inode
    assert len(server.requests_for(PATH)) == 1
    # An incomplete extraction (member missing) is redone.
    path.unlink()
    assert fetch.fetch_checkpoint(spec, cache_dir=tmp_path).read_bytes() == PAYLOAD
    assert len(server.requests_for(PATH)) == 1


def test_fetch_checkpoint_uses_env_cache_and_mirror(http_server, tmp_path, monkeypatch):
    http_server.add_file(f"/m/{FILENAME}", TARBALL)
    monkeypatch.setenv("HUBEXPORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HUBEXPORT_MIRROR", http_server.url("/m"))
    path = fetch.fetch_checkpoint(make_spec())
    assert path.is_relative_to(tmp_path / "cache" / "checkpoints")
    assert path.read_bytes() == PAYLOAD


def test_fetch_checkpoint_bad_tarball_leaves_no_extraction(http_server, tmp_path):
    data = make_tar([("../evil", b"x"), (MEMBER, PAYLOAD)])
    http_server.add_file(PATH, data)
    spec = make_spec(data, url=http_server.url(PATH))
    with pytest.raises(ArchiveError, match="evil"):
        fetch.fetch_checkpoint(spec, cache_dir=tmp_path)
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "checkpoints" / "evil").exists()
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == \
        [f"toy-{spec.checkpoint.checksum_hex[:12]}.lock"]


def test_fetch_source_reports_what_a_pinned_spec_pinned(served, tmp_path):
    server, spec = served
    got = fetch.fetch_source(spec, cache_dir=tmp_path, allow_unpinned=True)
    assert got.pinned is True
    assert got.checksum == "sha384:" + hashlib.sha384(TARBALL).hexdigest()
    assert got.size == len(TARBALL)
    assert got.tarball == tmp_path / "downloads" / FILENAME
    assert got.checkpoint.read_bytes() == PAYLOAD


def test_unpinned_spec_is_refused_unless_allowed(served, tmp_path):
    """A spec object without a checksum (``checksum_algo`` None): the API refuses it too."""
    server, spec = served
    spec.checkpoint.checksum_algo = spec.checkpoint.checksum_hex = None
    spec.checkpoint.size = None
    for call in (fetch.fetch_tarball, fetch.fetch_checkpoint, fetch.fetch_source):
        with pytest.raises(fetch.UnpinnedSourceError, match=r"^model toy: http://127\.0\.0\.1:"
                           r"\d+/models/toy_2016_08_28\.tar\.gz has no published checksum") as e:
            call(spec, cache_dir=tmp_path)
        assert e.value.exit_code == 2
    assert list(tmp_path.iterdir()) == [] and server.requests_for(PATH) == []
    assert fetch.tarball_path(spec, tmp_path) == tmp_path / "downloads" / FILENAME  # no refusal
    got = fetch.fetch_source(spec, cache_dir=tmp_path, allow_unpinned=True)
    assert (got.pinned, got.checksum, got.size) == (
        False, "sha256:" + hashlib.sha256(TARBALL).hexdigest(), len(TARBALL))
    assert got.checkpoint.read_bytes() == PAYLOAD
    assert "has no published checksum; got %s, %d bytes" % (got.checksum, len(TARBALL)) in \
        fetch.unpinned_warning(spec, got)


# ---------------------------------------------------------------------------
# V2 checkpoints (index + data shards beside other files, as in MobileNet's .tgz)
# ---------------------------------------------------------------------------

V2_FILENAME = "toy_v2_1.0_224.tgz"
V2_PATH = f"/models/{V2_FILENAME}"
V2_MEMBER = "toy_v2_1.0_224.ckpt"
V2_INDEX = random.Random(21).randbytes(3000)
V2_DATA = random.Random(22).randbytes(200 * 1024)
V2_SHARD = f"{V2_MEMBER}.data-00000-of-00001"
V2_CHECKPOINT = [(f"{V2_MEMBER}.index", V2_INDEX), (V2_SHARD, V2_DATA)]
# What else the real tarballs hold (ZOO.md section 2); never extracted.
V2_EXTRAS = [(name, random.Random(name).randbytes(size)) for name, size in [
    (f"{V2_MEMBER}.meta", 9000), ("toy_v2_1.0_224_frozen.pb", 20000),
    ("toy_v2_1.0_224.tflite", 19000), ("toy_v2_1.0_224_info.txt", 100),
    ("toy_v2_1.0_224_eval.pbtxt", 3000)]]
V2_TARBALL = make_tar(V2_CHECKPOINT + V2_EXTRAS)
V2_FILES = sorted([f"{V2_MEMBER}.index", V2_SHARD, archive.STATE_FILE])


def v2_spec(data: bytes = V2_TARBALL, url: str = f"http://127.0.0.1:9/models/{V2_FILENAME}",
            **kwargs):
    return make_spec(data, url=url, member=V2_MEMBER, name="toy_v2", **kwargs)


def _check_v2(path: Path, dest: Path, shards=((V2_SHARD, V2_DATA),)):
    """``path`` is the prefix of a complete V2 extraction in ``dest`` holding only the checkpoint."""
    assert path == dest / V2_MEMBER / V2_MEMBER
    files = sorted([f"{V2_MEMBER}.index", archive.STATE_FILE] + [n for n, _ in shards])
    assert sorted(os.listdir(path.parent)) == files
    assert Path(f"{path}.index").read_bytes() == V2_INDEX
    for name, data in shards:
        assert (path.parent / name).read_bytes() == data
    assert (path.parent / archive.STATE_FILE).read_text() == (
        f'model_checkpoint_path: "{V2_MEMBER}"\nall_model_checkpoint_paths: "{V2_MEMBER}"\n')
    assert sorted(os.listdir(dest)) == [V2_MEMBER]  # no temporary directory, no extra


@pytest.mark.parametrize("layout", ["plain", "dot_slash", "bz2", "subdir"])
def test_extract_v2_takes_exactly_the_checkpoint(tmp_path, layout):
    entries = V2_CHECKPOINT + V2_EXTRAS
    member = V2_MEMBER
    if layout == "dot_slash":
        entries = [_dir(".")] + [(f"./{n}", d) for n, d in entries]
    if layout == "subdir":
        entries = [(f"sub/{n}", d) for n, d in entries]
        member = f"sub/{V2_MEMBER}"
    data = make_tar(entries, "bz2" if layout == "bz2" else "gz")
    tarball = _write(tmp_path, data, V2_FILENAME)
    dest = tmp_path / "out"
    path = archive.extract_checkpoint(tarball, member, dest, tarball_size=len(data))
    if layout == "subdir":
        assert path == dest / "sub" / V2_MEMBER / V2_MEMBER
        assert os.listdir(dest) == ["sub"]
        _check_v2(path, dest / "sub")
    else:
        _check_v2(path, dest)


def test_extract_v2_with_several_shards(tmp_path):
    shards = [(f"{V2_MEMBER}.data-{k:05d}-of-00003", random.Random(k).randbytes(5000 + k))
              for k in range(3)]
    data = make_tar([shards[2], (f"{V2_MEMBER}.index", V2_INDEX), shards[0], shards[1]])
    path = archive.extract_checkpoint(_write(tmp_path, data), V2_MEMBER, tmp_path / "out")
    _check_v2(path, tmp_path / "out", shards)


def test_a_member_that_is_a_file_is_v1_even_beside_an_index(tmp_path):
    data = make_tar([(V2_MEMBER, PAYLOAD)] + V2_CHECKPOINT)
    path = archive.extract_checkpoint(_write(tmp_path, data), V2_MEMBER, tmp_path / "out")
    assert path == tmp_path / "out" / V2_MEMBER and path.read_bytes() == PAYLOAD
    assert os.listdir(tmp_path / "out") == [V2_MEMBER]


def test_v2_reuse_accepts_only_a_complete_set(tmp_path):
    tarball = _write(tmp_path, V2_TARBALL)
    dest = tmp_path / "out"
    path = archive.extract_checkpoint(tarball, V2_MEMBER, dest, reuse=True)
    _check_v2(path, dest)
    inode = Path(f"{path}.index").stat().st_ino
    # Complete: reused without opening the tarball.
    assert archive.extract_checkpoint(tmp_path / "gone.tgz", V2_MEMBER, dest, reuse=True) == path
    assert Path(f"{path}.index").stat().st_ino == inode
    # Anything less is extracted again, replacing the directory as a whole.
    for damage in (lambda: (path.parent / V2_SHARD).unlink(),
                   lambda: Path(f"{path}.index").unlink(),
                   lambda: (path.parent / archive.STATE_FILE).unlink(),
                   lambda: (path.parent / V2_SHARD).rename(
                       path.parent / f"{V2_MEMBER}.data-00000-of-00002")):
        damage()
        with pytest.raises(ArchiveError, match="no such tarball"):
            archive.extract_checkpoint(tmp_path / "gone.tgz", V2_MEMBER, dest, reuse=True)
        assert archive.extract_checkpoint(tarball, V2_MEMBER, dest, reuse=True) == path
        _check_v2(path, dest)
    # Without reuse, a complete set is extracted again too (a fresh inode).
    assert archive.extract_checkpoint(tarball, V2_MEMBER, dest) == path
    assert Path(f"{path}.index").stat().st_ino != inode
    _check_v2(path, dest)


def test_v2_replaces_a_stale_file_in_its_way(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / V2_MEMBER).write_bytes(b"stale")
    path = archive.extract_checkpoint(_write(tmp_path, V2_TARBALL), V2_MEMBER, dest)
    _check_v2(path, dest)


def _raw_member(name: str, data: bytes) -> bytes:
    """One regular member as plain tar bytes (header + data padded to 512), no end marker."""
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    return info.tobuf(format=tarfile.GNU_FORMAT) + data + bytes(-len(data) % 512)


def _bomb_header(name, size=100 << 30):
    """A header claiming ``size`` bytes followed by 1 MiB of data, as plain tar bytes."""
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.PAX_FORMAT) + bytes(1 << 20)


V2_BAD_ARCHIVES = {
    "symlink_index": (lambda t: make_tar([_symlink(f"{V2_MEMBER}.index", "/etc/passwd"),
                                          (V2_SHARD, V2_DATA)]), r"symbolic link"),
    "symlink_extra": (lambda t: make_tar(V2_CHECKPOINT + [_symlink("toy_v2_1.0_224.tflite",
                                                                   "/etc/passwd")]),
                      r"'toy_v2_1\.0_224\.tflite': it is a symbolic link"),
    "hardlink_shard": (lambda t: make_tar([(f"{V2_MEMBER}.index", V2_INDEX),
                                           _hardlink(V2_SHARD, "/etc/passwd")]), r"hard link"),
    "hardlink_extra": (lambda t: make_tar(V2_CHECKPOINT + [_hardlink("x.meta", "/etc/passwd")]),
                       r"hard link"),
    "dotdot_extra": (lambda t: make_tar(V2_CHECKPOINT + [("../toy_v2_1.0_224.tflite", b"x")]),
                     r"'\.\./toy_v2_1\.0_224\.tflite'.*leaves"),
    "dotdot_index": (lambda t: make_tar([(f"sub/../../{V2_MEMBER}.index", V2_INDEX),
                                         (V2_SHARD, V2_DATA)]), r"leaves"),
    "absolute_extra": (lambda t: make_tar(V2_CHECKPOINT + [(f"{t}/abs_evil.pb", b"x")]),
                       r"absolute path"),
    "absolute_shard": (lambda t: make_tar([(f"{V2_MEMBER}.index", V2_INDEX),
                                           (f"{t}/{V2_SHARD}", V2_DATA)]), r"absolute path"),
    "device_extra": (lambda t: make_tar(V2_CHECKPOINT + [_device("null")]), r"device"),
    "duplicate_index": (lambda t: make_tar(V2_CHECKPOINT + [(f"./{V2_MEMBER}.index", b"evil")]),
                        r"'toy_v2_1\.0_224\.ckpt\.index' occurs twice"),
    "duplicate_shard": (lambda t: make_tar(V2_CHECKPOINT + [(V2_SHARD, b"evil")]),
                        r"occurs twice"),
    "oversized_shard": (lambda t: gzip.compress(
        _raw_member(f"{V2_MEMBER}.index", V2_INDEX) + _bomb_header(V2_SHARD)),
                        r"'toy_v2_1\.0_224\.ckpt\.data-00000-of-00001'.*decompression bomb"),
    "oversized_extra": (lambda t: gzip.compress(
        b"".join(_raw_member(n, d) for n, d in V2_CHECKPOINT)
        + _bomb_header("toy_v2_1.0_224.tflite")),
                        r"'toy_v2_1\.0_224\.tflite'.*decompression bomb"),
    "missing_shard": (lambda t: make_tar([(f"{V2_MEMBER}.index", V2_INDEX)] + V2_EXTRAS),
                      r"has 'toy_v2_1\.0_224\.ckpt\.index' but no data shard "
                      r"'toy_v2_1\.0_224\.ckpt\.data-NNNNN-of-NNNNN'"),
    "missing_index": (lambda t: make_tar([(V2_SHARD, V2_DATA)] + V2_EXTRAS),
                      r"lacks its index 'toy_v2_1\.0_224\.ckpt\.index'"),
    "missing_second_shard": (lambda t: make_tar([(f"{V2_MEMBER}.index", V2_INDEX),
                                                 (f"{V2_MEMBER}.data-00000-of-00002", V2_DATA)]),
                             r"lacks data shard 'toy_v2_1\.0_224\.ckpt\.data-00001-of-00002'"),
    "shard_counts_disagree": (lambda t: make_tar([(f"{V2_MEMBER}.index", V2_INDEX),
                                                  (f"{V2_MEMBER}.data-00000-of-00002", b"a"),
                                                  (f"{V2_MEMBER}.data-00001-of-00003", b"b")]),
                              r"disagree about their count \(-of-00002, 00003\)"),
    "shard_beyond_count": (lambda t: make_tar(V2_CHECKPOINT + [
        (f"{V2_MEMBER}.data-00001-of-00001", b"b")]), r"numbered beyond the count"),
    "too_many_shards": (lambda t: make_tar([(f"{V2_MEMBER}.index", V2_INDEX),
                                            (f"{V2_MEMBER}.data-00000-of-99999", b"a")]),
                        r"99999 data shards \(at most 256"),
    "index_is_a_dir": (lambda t: make_tar([_dir(f"{V2_MEMBER}.index"), (V2_SHARD, V2_DATA)]),
                       r"'toy_v2_1\.0_224\.ckpt\.index' is not a regular file"),
    "neither_format": (lambda t: make_tar(V2_EXTRAS),
                       r"no member 'toy_v2_1\.0_224\.ckpt'; the archive holds "
                       r"'toy_v2_1\.0_224\.ckpt\.meta', .* no V2 checkpoint"),
    "truncated_in_shard": (lambda t: V2_TARBALL[: len(V2_TARBALL) // 2], r"truncated or damaged"),
    "truncated_trailer": (lambda t: V2_TARBALL[:-4], r"truncated or damaged"),
}


@pytest.mark.parametrize("case", sorted(V2_BAD_ARCHIVES))
def test_extract_v2_refuses_bad_archives(tmp_path, case):
    build, pattern = V2_BAD_ARCHIVES[case]
    work = tmp_path / "work"
    work.mkdir()
    data = build(work)
    tarball = _write(work, data, V2_FILENAME)
    before = snapshot(tmp_path)
    with pytest.raises(ArchiveError, match=pattern) as err:
        archive.extract_checkpoint(tarball, V2_MEMBER, work / "out", tarball_size=len(data))
    message = str(err.value)
    assert str(tarball) in message and "\n" not in message
    assert snapshot(tmp_path) == before  # nothing written anywhere, no temp dir left


def test_v2_shards_are_bounded_in_total_from_the_headers(tmp_path):
    """Two shards each within the bound, together beyond it: refused at the second header,
    having inflated only the first shard (the second's 1 GiB is never there)."""
    size = 100_000  # the pinned tarball size: bound 400_000 bytes
    first = bytes(size * archive.MEMBER_SIZE_FACTOR // 2 - 1000)
    raw = (_raw_member(f"{V2_MEMBER}.index", V2_INDEX)
           + _raw_member(f"{V2_MEMBER}.data-00000-of-00002", first)
           + _bomb_header(f"{V2_MEMBER}.data-00001-of-00002", 1 << 30))
    tarball = _write(tmp_path, gzip.compress(raw), V2_FILENAME)
    with pytest.raises(ArchiveError, match=r"'toy_v2_1\.0_224\.ckpt\.data-00001-of-00002': the "
                       r"archive unpacks to more than 400000 bytes \(possible decompression bomb"):
        archive.extract_checkpoint(tarball, V2_MEMBER, tmp_path / "out", tarball_size=size)
    assert not (tmp_path / "out").exists()


def test_fetch_v2_checkpoint_end_to_end(http_server, tmp_path):
    http_server.add_file(V2_PATH, V2_TARBALL)
    spec = v2_spec(url=http_server.url(V2_PATH))
    got = fetch.fetch_source(spec, cache_dir=tmp_path, progress=False)
    dest = tmp_path / "checkpoints" / f"toy_v2-{spec.checkpoint.checksum_hex[:12]}"
    _check_v2(got.checkpoint, dest)
    assert got.tarball == tmp_path / "downloads" / V2_FILENAME
    # The tarball is re-verified, and the complete extraction reused.
    inode = (dest / V2_MEMBER / V2_SHARD).stat().st_ino
    assert fetch.fetch_checkpoint(spec, cache_dir=tmp_path) == got.checkpoint
    assert (dest / V2_MEMBER / V2_SHARD).stat().st_ino == inode
    assert len(http_server.requests_for(V2_PATH)) == 1
    # An incomplete set (a shard deleted) is extracted again, from the cached tarball.
    (dest / V2_MEMBER / V2_SHARD).unlink()
    assert fetch.fetch_checkpoint(spec, cache_dir=tmp_path) == got.checkpoint
    _check_v2(got.checkpoint, dest)
    assert len(http_server.requests_for(V2_PATH)) == 1


def test_fetch_v2_hostile_tarball_leaves_nothing(http_server, tmp_path):
    data = make_tar(V2_CHECKPOINT + [_symlink("toy_v2_1.0_224.tflite", "/etc/passwd")])
    http_server.add_file(V2_PATH, data)
    spec = v2_spec(data, url=http_server.url(V2_PATH))
    with pytest.raises(ArchiveError, match="symbolic link"):
        fetch.fetch_checkpoint(spec, cache_dir=tmp_path)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == \
        [f"toy_v2-{spec.checkpoint.checksum_hex[:12]}.lock"]


def test_interrupted_v2_extraction_leaves_no_partial_files(tmp_path, monkeypatch):
    """KeyboardInterrupt while the second file is written: no final path, no temp dir."""
    tarball = _write(tmp_path, V2_TARBALL)
    dest = tmp_path / "out"
    dest.mkdir()
    calls = []
    real = tarfile.TarFile.extract

    def extract(self, member, *args, **kwargs):
        calls.append(member.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, member, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extract", extract)
    with pytest.raises(KeyboardInterrupt):
        archive.extract_checkpoint(tarball, V2_MEMBER, dest)
    assert calls == [f"{V2_MEMBER}.index", V2_SHARD]
    assert os.listdir(dest) == []


_KILL_SCRIPT = """
import json, os, signal, sys, tarfile, types
from hubexport import archive, fetch
where = sys.argv[3]
if where == "second_file":
    real = tarfile.TarFile.extract
    calls = []
    def extract(self, member, *args, **kwargs):
        calls.append(member.name)
        if len(calls) == 2:  # the index is on disk, the data shard about to be written
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, member, *args, **kwargs)
    tarfile.TarFile.extract = extract
else:  # every file written into the temporary directory, not yet renamed into place
    archive._rename_into_place = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
ck = types.SimpleNamespace(**json.loads(sys.argv[1]))
fetch.fetch_source(types.SimpleNamespace(name="toy_v2", checkpoint=ck), cache_dir=sys.argv[2])
"""


@pytest.mark.parametrize("where", ["second_file", "before_rename"])
def test_killed_v2_extraction_leaves_no_partial_files(http_server, tmp_path, where):
    """SIGKILL during extraction (a real process): the checkpoint's path stays absent; the
    next fetch removes the debris and extracts the complete set."""
    http_server.add_file(V2_PATH, V2_TARBALL)
    spec = v2_spec(url=http_server.url(V2_PATH))
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, json.dumps(vars(spec.checkpoint)),
                           str(tmp_path), where], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -9, proc.stderr
    dest = tmp_path / "checkpoints" / f"toy_v2-{spec.checkpoint.checksum_hex[:12]}"
    assert not (dest / V2_MEMBER).exists()
    (debris,) = os.listdir(dest)
    assert debris.startswith(archive.TEMP_PREFIX)
    path = fetch.fetch_checkpoint(spec, cache_dir=tmp_path)
    _check_v2(path, dest)  # debris gone, the set complete
    assert len(http_server.requests_for(V2_PATH)) == 1  # the tarball was complete already
