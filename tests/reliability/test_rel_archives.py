"""Hostile and damaged checkpoint tarballs, through `hubexport fetch` (issue 7, Archives;
V2 checkpoints: issue 12).

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


# --------------------------------------------------------------------------
# V2 checkpoints (issue 12): `<member>.index` + data shards beside other files
# --------------------------------------------------------------------------
#
# The inception_v2 spec's member works as a V2 prefix too: the archive tells
# the format. The tarballs are shaped like MobileNet's .tgz (ZOO.md section 2).

V2_INDEX = random.Random(8).randbytes(4 * 1024)
V2_SHARD = MEMBER + ".data-00000-of-00001"
V2 = [(MEMBER + ".index", V2_INDEX), (V2_SHARD, PAYLOAD)]
# What the cache holds after a V2 fetch (below cache/checkpoints/<name>-<hex12>/).
V2_EXTRACTED = sorted([MEMBER, f"{MEMBER}/checkpoint", f"{MEMBER}/{MEMBER}.index",
                       f"{MEMBER}/{V2_SHARD}"])


def _v2_extras():
    from hubexport.standin import extra_member_names

    return [(name, random.Random(name).randbytes(8 * 1024)) for name in extra_member_names(MEMBER)]


def _v2_extracted(sb: rs.Sandbox) -> list[str]:
    """The checkpoint's files in the cache, relative to cache/checkpoints/<name>-<hex12>/."""
    (dest,) = [p for p in (sb.cache / "checkpoints").iterdir() if p.is_dir()]
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))


def _bomb_after(entries, name: str, size: int = 4 << 30) -> bytes:
    """gzip of ``entries`` then a header claiming ``size`` bytes for ``name`` (1 MiB behind it)."""
    raw = b""
    for entry_name, data in entries:
        info = rs.tarfile.TarInfo(entry_name)
        info.size, info.mode = len(data), 0o644
        raw += info.tobuf(format=rs.tarfile.GNU_FORMAT) + data + bytes(-len(data) % 512)
    info = rs.tarfile.TarInfo(name)
    info.size = size
    return rs.gzip.compress(raw + info.tobuf(format=rs.tarfile.PAX_FORMAT) + bytes(1 << 20))


def _v2_cases(sb: rs.Sandbox):
    """name -> (tarball bytes, message regex, description)."""
    victim = sb.sentinel / "victim"
    extras = _v2_extras()
    tflite = MEMBER[:-len(".ckpt")] + ".tflite"
    whole = V2 + extras
    return {
        "v2_symlink_extra": (rs.tar_bytes(V2 + [rs.tar_info(tflite, "sym", linkname=str(
            victim / "secret.txt"))] + extras[:1]), r"symbolic link",
            "V2: an extra member (the .tflite) is a symlink to a victim file"),
        "v2_symlink_index": (rs.tar_bytes([tar_info(MEMBER + ".index", "sym", linkname=str(
            victim / "secret.txt")), (V2_SHARD, PAYLOAD)]), r"symbolic link",
            "V2: the checkpoint's .index is a symlink to a victim file"),
        "v2_hardlink_extra": (rs.tar_bytes(whole + [tar_info("x.meta", "link", linkname=UP
                                                             + "sentinel/victim/secret.txt")]),
                              r"hard link", "V2: a hard link out of the extraction dir"),
        "v2_dotdot_extra": (rs.tar_bytes(V2 + [(UP + "sentinel/" + tflite, b"pwned")]),
                            r"'\.\.' leaves the destination",
                            "V2: an extra member whose `..` climbs to the sentinel tree"),
        "v2_dotdot_shard": (rs.tar_bytes([(MEMBER + ".index", V2_INDEX),
                                          ("sub/" + UP + "sentinel/" + V2_SHARD, PAYLOAD)]),
                            r"'\.\.' leaves", "V2: the data shard itself behind `..`"),
        "v2_absolute_extra": (rs.tar_bytes(V2 + [(str(sb.sentinel / "abs_evil.pb"), b"pwned")]),
                              r"absolute path", "V2: an extra member with an absolute path"),
        "v2_oversized_extra": (_bomb_after(V2, tflite), r"decompression bomb",
                               "V2: an extra member's header claims 4 GiB (bound: 4 x tarball)"),
        "v2_oversized_shard": (_bomb_after(V2[:1], V2_SHARD), r"decompression bomb",
                               "V2: the data shard's header claims 4 GiB"),
        "v2_duplicate": (rs.tar_bytes(whole + [("./" + MEMBER + ".index", b"evil")]),
                         r"occurs twice", "V2: the .index twice (second copy would win)"),
        "v2_missing_shard": (rs.tar_bytes(V2[:1] + extras), r"no data shard",
                             "V2: .index without its .data shard"),
        "v2_missing_second_shard": (rs.tar_bytes([(MEMBER + ".index", V2_INDEX), (
            MEMBER + ".data-00000-of-00002", PAYLOAD)] + extras),
            r"lacks data shard 'inception_v2\.ckpt\.data-00001-of-00002'",
            "V2: shard 2 of 2 missing"),
        "v2_missing_index": (rs.tar_bytes(V2[1:] + extras), r"lacks its index",
                             "V2: data shard without its .index"),
        "v2_truncated": (rs.tar_bytes(whole)[: 30000], r"truncated or damaged",
                         "V2: gzip stream cut in the middle of the data shard"),
    }


V2_CASE_NAMES = sorted([
    "v2_symlink_extra", "v2_symlink_index", "v2_hardlink_extra", "v2_dotdot_extra",
    "v2_dotdot_shard", "v2_absolute_extra", "v2_oversized_extra", "v2_oversized_shard",
    "v2_duplicate", "v2_missing_shard", "v2_missing_second_shard", "v2_missing_index",
    "v2_truncated"])


@pytest.mark.parametrize("name", V2_CASE_NAMES)
def test_hostile_v2_archive_is_refused(sandbox, case, name):
    data, pattern, what = _v2_cases(sandbox)[name]
    case.describe("Archives", what, "exit 1, one-line error naming the tarball and the "
                  "problem; nothing written outside the cache; nothing extracted is left")
    result, outside, changed = _fetch(sandbox, data)
    line = result.check_one_line_error(1, pattern, FILENAME)
    left = _extraction_left(sandbox)
    assert outside == 0, changed
    assert left == [], left
    assert (sandbox.sentinel / "victim" / "secret.txt").read_text() == "do not overwrite\n"
    case.trial(True, bytes_outside=outside, partial_modules=len(left),
               observed="exit %d: `%s`" % (result.returncode, rs.shorten(line, sandbox)))


def test_v2_archive_gives_exactly_the_checkpoint(sandbox, case):
    case.describe("Archives", "V2 tarball: .index + .data shard beside .meta, frozen graph, "
                  ".tflite, info and eval text", "exit 0; `fetch` prints the V2 prefix; the "
                  "cache holds the index, the shard and the state file, nothing else")
    data = rs.tar_bytes([("./" + n, d) for n, d in V2 + _v2_extras()])
    result, outside, changed = _fetch(sandbox, data)
    result.check_ok()
    assert outside == 0, changed
    assert _v2_extracted(sandbox) == V2_EXTRACTED
    (dest,) = [p for p in (sandbox.cache / "checkpoints").iterdir() if p.is_dir()]
    assert "checkpoint: %s" % (dest / MEMBER / MEMBER) in result.stdout
    assert (dest / MEMBER / V2_SHARD).read_bytes() == PAYLOAD
    case.trial(True, bytes_outside=outside, observed="exit 0; cache: %s"
               % ", ".join(_v2_extracted(sandbox)[1:]))


_KILLED_FETCH = """
import os, signal, sys
from hubexport import archive
archive._rename_into_place = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
from hubexport.cli import main
main(sys.argv[1:])
"""


def test_v2_extraction_killed_before_its_rename(sandbox, case):
    case.describe("Archives", "V2 extraction killed (SIGKILL) with every file written but not "
                  "yet renamed into place", "no checkpoint file at its final path; the next "
                  "`fetch` removes the debris and extracts the complete set")
    data = rs.tar_bytes(V2 + _v2_extras())
    mirror = sandbox.inputs / "mirror"
    mirror.mkdir()
    (mirror / FILENAME).write_bytes(data)
    specs = rs.write_spec_dir(sandbox.inputs / "specs", data)
    args = ["fetch", "inception_v2", "--specs", specs, "--mirror", mirror,
            "--cache-dir", sandbox.cache]
    before = sandbox.snapshot()
    killed = rs.subprocess.run([rs.sys.executable, "-c", _KILLED_FETCH, *map(str, args)],
                               capture_output=True, text=True, timeout=120,
                               cwd=str(sandbox.cwd), env=rs.cli_env(sandbox))
    assert killed.returncode == -9, killed.stderr[-3000:]
    (dest,) = [p for p in (sandbox.cache / "checkpoints").iterdir() if p.is_dir()]
    assert not (dest / MEMBER).exists()
    debris = rs.leftovers(sandbox.cache)
    assert len(debris) == 1 and ".extract-" in debris[0], debris
    again = rs.run_cli(args, sandbox, timeout=120)
    again.check_ok()
    outside, changed = sandbox.bytes_outside(before, sandbox.snapshot())
    assert outside == 0, changed
    assert rs.leftovers(sandbox.cache) == []
    assert _v2_extracted(sandbox) == V2_EXTRACTED
    case.trial(True, bytes_outside=outside, partial_modules=0,
               observed="killed: no %s at its final path, one .extract-* left; next fetch: "
               "exit 0, debris removed, complete set" % MEMBER)
