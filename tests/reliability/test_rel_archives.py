"""Hostile and damaged checkpoint tarballs, through `hubexport fetch` (issue 7, Archives).

Each archive is served from a local mirror directory with a spec pinned to
its exact bytes (so the checksum passes and extraction is what is tested).
Expected for every case: exit code 1, one line ``error: <tarball>: ...``
naming the problem, no byte written outside the cache (the sandbox's
sentinel tree, working directory and $HOME are compared before/after), and
no extraction directory left (``cache/checkpoints`` holds only lock files).
"""

from __future__ import annotations

import random

import pytest

import reliability_support as rs
from reliability_support import FILENAME, MEMBER, tar_bytes, tar_info

PAYLOAD = random.Random(7).randbytes(64 * 1024)  # the "checkpoint" (fetch does not parse it)

# Depth of the extraction directory below the sandbox root:
# cache/checkpoints/<name>-<hex12>/.extract-XXXX/
UP = "../../../../"


def _cases(sb: rs.Sandbox):
    """name -> (tarball bytes, pinned size ("auto" or None), message regex, description)."""
    victim = sb.sentinel / "victim"
    good = (MEMBER, PAYLOAD)
    return {
        "absolute_path": (tar_bytes([good, (str(sb.sentinel / "abs_evil"), b"pwned")]), "auto",
                          r"absolute path", "member with an absolute path into the sentinel tree"),
        "dotdot": (tar_bytes([(UP + "sentinel/dotdot_evil", b"pwned"), good]), "auto",
                   r"'\.\.' leaves the destination", "member whose `..` components climb "
                   "to the sentinel tree"),
        "dotdot_member": (tar_bytes([("sub/" + UP + "sentinel/" + MEMBER, PAYLOAD)]), "auto",
                          r"'\.\.' leaves", "the checkpoint member itself behind `..`"),
        "symlink_member": (tar_bytes([tar_info(MEMBER, "sym", linkname=str(victim /
                                                                            "secret.txt"))]),
                           "auto", r"symbolic link", "checkpoint member is a symlink to a "
                           "victim file"),
        "symlink_dir": (tar_bytes([tar_info("escape", "sym", linkname=str(victim / "dir")),
                                   ("escape/planted", b"pwned"), good]), "auto",
                        r"symbolic link", "symlink to a victim directory, then a file "
                        "through it"),
        "hardlink": (tar_bytes([good, tar_info("hl", "link", linkname=str(victim /
                                                                           "secret.txt"))]),
                     "auto", r"hard link", "hard link to a victim file"),
        "hardlink_member": (tar_bytes([tar_info(MEMBER, "link", linkname=UP + "sentinel/"
                                                "victim/secret.txt")]), "auto",
                            r"hard link", "checkpoint member is a hard link out of the "
                            "extraction dir"),
        "device": (tar_bytes([good, tar_info("null", "chr")]), "auto", r"it is a device",
                   "character device node"),
        "block_device": (tar_bytes([good, tar_info("sda", "blk")]), "auto",
                         r"it is a device", "block device node"),
        "fifo": (tar_bytes([good, tar_info("pipe", "fifo")]), "auto", r"FIFO", "FIFO node"),
        "duplicate": (tar_bytes([good, ("./" + MEMBER, b"second, evil copy")]), "auto",
                      r"occurs twice", "the member name twice (second copy would win)"),
        "missing_member": (tar_bytes([("model.ckpt", PAYLOAD), ("README", b"hi")]), "auto",
                           r"no member 'inception_v2\.ckpt'.*'model\.ckpt', 'README'.*"
                           r"checkpoint\.member", "archive without the checkpoint member"),
        "truncated_gzip": (tar_bytes([good])[: 20000], "auto", r"truncated or damaged",
                           "gzip stream cut in the middle of the member"),
        "truncated_trailer": (tar_bytes([good])[:-6], "auto", r"truncated or damaged",
                              "gzip trailer cut (all tar data present)"),
        "not_a_tar": (b"<html><body>404 Not Found</body></html>\n" * 50, "auto",
                      r"not a tar archive", "an HTML error page saved as the tarball"),
        "gzip_not_tar": (rs.gzip.compress(b"just some text, not tar headers\n" * 100), "auto",
                         r"not a tar archive", "gzip of something that is not a tar"),
        "empty_tar": (tar_bytes([]), "auto", r"empty tar archive", "a valid but empty tar.gz"),
        "empty_file": (b"", None, r"empty file", "a zero-byte tarball"),
    }


CASE_NAMES = sorted([
    "absolute_path", "dotdot", "dotdot_member", "symlink_member", "symlink_dir", "hardlink",
    "hardlink_member", "device", "block_device", "fifo", "duplicate", "missing_member",
    "truncated_gzip", "truncated_trailer", "not_a_tar", "gzip_not_tar", "empty_tar",
    "empty_file"])


def _fetch(sb: rs.Sandbox, data: bytes, size="auto") -> tuple[rs.CliResult, int, list]:
    mirror = sb.inputs / "mirror"
    mirror.mkdir(exist_ok=True)
    (mirror / FILENAME).write_bytes(data)
    specs = rs.write_spec_dir(sb.inputs / "specs", data, size=size)
    before = sb.snapshot()
    result = rs.run_cli(["fetch", "inception_v2", "--specs", specs, "--mirror", mirror,
                         "--cache-dir", sb.cache], sb, timeout=120)
    outside, changed = sb.bytes_outside(before, sb.snapshot())
    return result, outside, changed


def _extraction_left(sb: rs.Sandbox) -> list[str]:
    """Anything in cache/checkpoints but lock files (extraction dirs, members)."""
    root = sb.cache / "checkpoints"
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.name.endswith(".lock"))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_archive_is_refused(sandbox, case, name):
    data, size, pattern, what = _cases(sandbox)[name]
    case.describe("Archives", what, "exit 1, one-line error naming the tarball and the "
                  "problem; nothing written outside the cache; extraction dir removed")
    result, outside, changed = _fetch(sandbox, data, size)
    line = result.check_one_line_error(1, pattern, FILENAME)
    left = _extraction_left(sandbox)
    assert outside == 0, changed
    assert left == [], left
    assert (sandbox.sentinel / "victim" / "secret.txt").read_text() == "do not overwrite\n"
    case.trial(True, bytes_outside=outside, partial_modules=len(left),
               observed="exit %d: `%s`" % (result.returncode, rs.shorten(line, sandbox)))


BOMBS = {
    # name: (builder, inflated bytes, pinned size, description)
    "bz2_4GiB": (lambda: rs.bomb_bz2(MEMBER, 4 << 30), 4 << 30, "auto",
                 "bzip2 bomb: a few KiB declaring a 4 GiB member"),
    "gzip_1GiB": (lambda: rs.bomb_gzip(MEMBER, 1 << 30), 1 << 30, "auto",
                  "gzip bomb: ~1 MiB inflating to 1 GiB"),
    "bz2_4GiB_size_unpinned": (lambda: rs.bomb_bz2(MEMBER, 4 << 30), 4 << 30, None,
                               "bzip2 bomb, spec without a size (2 GiB default bound)"),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_decompression_bomb_is_stopped_early(sandbox, case, name):
    build, inflated, size, what = BOMBS[name]
    data = build()
    case.describe("Archives", what, "refused from the tar header before inflating: "
                  "exit 1 within seconds, no extracted bytes on disk")
    result, outside, changed = _fetch(sandbox, data, size)
    result.check_one_line_error(1, r"decompression bomb", FILENAME)
    assert outside == 0, changed
    left = _extraction_left(sandbox)
    assert left == []
    cache_bytes = sum(p.stat().st_size for p in sandbox.cache.rglob("*") if p.is_file())
    # Only the downloaded tarball itself is on disk; inflating even 1 GiB of
    # zeros would take well over the CPU time allowed here.
    assert cache_bytes == len(data)
    assert result.cpu_seconds < 5.0, result.cpu_seconds
    case.trial(True, bytes_outside=outside, partial_modules=len(left),
               observed="refused in %.2f s wall, %.2f s CPU; %d compressed bytes, %d declared"
               % (result.seconds, result.cpu_seconds, len(data), inflated),
               compressed_bytes=len(data), declared_bytes=inflated,
               cache_bytes_after=cache_bytes)
