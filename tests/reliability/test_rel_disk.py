"""A full disk while downloading, extracting and writing a module (issue 7, Full disk).

The disk filling up is simulated in the child process: ``RLIMIT_FSIZE``
(inherited by the build's worker processes) with SIGXFSZ ignored, so any
write past the limit fails with EFBIG ("File too large"), the way a full
disk fails with ENOSPC. ``hubexport build`` runs to the failure; expected:
exit 1, one line naming the file and saying what to do, nothing partial at
any final path, no temporary file left, nothing written outside.
"""

from __future__ import annotations

import shutil

import pytest

import reliability_support as rs
from reliability_support import FILENAME, MEMBER

MiB = 1 << 20


def _build(sb, standins, mirror, *extra, limit):
    args = ["build", "inception_v2", "--version", "3", "--kind", "classification",
            "--specs", standins / "specs", "--mirror", mirror, "--cache-dir", sb.cache,
            "--output", sb.out, *extra]
    before = sb.snapshot()
    result = rs.run_cli(args, sb, timeout=600,
                        preexec_fn=rs.file_size_limit(limit) if limit else None)
    outside, changed = sb.bytes_outside(before, sb.snapshot())
    assert outside == 0, changed
    return result, outside


def _assert_no_partial_files_and_no_module(sb, standins) -> int:
    """Asserts: no partial file in the cache or output, no module; returns their count (0)."""
    partial = _partial_cache_files(sb, standins) + len(rs.leftovers(sb.cache, sb.out))
    assert partial == 0 and not (sb.out / rs.HANDLE_DIR / "3").exists()
    return partial


def _partial_cache_files(sb, standins) -> int:
    """Files at a final cache path that are not the verified tarball / complete member."""
    bad = 0
    final = sb.cache / "downloads" / FILENAME
    if final.exists() and final.read_bytes() != (standins / FILENAME).read_bytes():
        bad += 1
    for member in sb.cache.glob("checkpoints/*/" + MEMBER):
        bad += member.stat().st_size < 40 * MiB  # the stand-in's member is ~45 MB
    return bad


@pytest.mark.slow
def test_disk_full_while_downloading(mirror, standins, sandbox, case):
    case.describe("Full disk", "disk full while downloading the tarball (limit 8 MiB)",
                  "exit 1, one line naming the file and what to do; the partial download "
                  "is deleted; no module")
    result, outside = _build(sandbox, standins, mirror.base_url, limit=8 * MiB)
    line = result.check_one_line_error(1, r"cannot write .*%s\.part: File too large"
                                       % rs.re.escape(FILENAME), r"deleted", r"free some space")
    downloads = sorted(p.name for p in (sandbox.cache / "downloads").iterdir())
    assert downloads == [FILENAME + ".lock"], downloads
    partial = _assert_no_partial_files_and_no_module(sandbox, standins)
    case.trial(True, bytes_outside=outside, partial_modules=partial,
               observed="`%s`" % rs.shorten(line, sandbox, 220))


@pytest.mark.slow
def test_disk_full_while_extracting(standins, sandbox, case):
    case.describe("Full disk", "disk full while extracting the checkpoint (limit 8 MiB)",
                  "exit 1, one line naming the tarball and what to do; no extraction "
                  "directory, no partial checkpoint; no module")
    (sandbox.cache / "downloads").mkdir(parents=True)
    shutil.copy(standins / FILENAME, sandbox.cache / "downloads" / FILENAME)  # verified on use
    result, outside = _build(sandbox, standins, standins, limit=8 * MiB)
    line = result.check_one_line_error(1, r"cannot extract 'inception_v2\.ckpt': "
                                       r"File too large", r"free some space")
    left = [p for p in (sandbox.cache / "checkpoints").rglob("*") if not p.name.endswith(".lock")]
    assert left == [], left
    partial = _assert_no_partial_files_and_no_module(sandbox, standins)
    case.trial(True, bytes_outside=outside, partial_modules=partial,
               observed="`%s`" % rs.shorten(line, sandbox, 220))


@pytest.mark.slow
def test_disk_full_while_writing_a_new_module(v3_module, standins, sandbox, case):
    case.describe("Full disk", "disk full while writing a module (limit 20 MB, variables "
                  "are 45 MB)", "exit 1, one line naming the module and what to do; no "
                  "module directory, no temporary directory, no card or stamp")
    shutil.copytree(v3_module["cache"], sandbox.cache, dirs_exist_ok=True)  # warm cache
    result, outside = _build(sandbox, standins, standins, limit=20_000_000)
    module = sandbox.out / rs.HANDLE_DIR / "3"
    line = result.check_one_line_error(1, r"cannot write %s: File too large"
                                       % rs.re.escape(str(module)), r"check free space")
    parent = module.parent
    assert sorted(p.name for p in parent.iterdir()) == [], list(parent.iterdir())
    partial = len(rs.leftovers(sandbox.out)) + int(module.exists())
    case.trial(partial == 0, bytes_outside=outside, partial_modules=partial,
               observed="`%s`" % rs.shorten(line, sandbox, 220))


@pytest.mark.slow
def test_disk_full_while_rebuilding_keeps_the_old_module(v3_module, standins, sandbox, case):
    case.describe("Full disk", "disk full while `build --force` rewrites an existing module",
                  "exit 1, one line; the old module, card and stamp stay complete and "
                  "loadable; the next build finds it up to date")
    shutil.copytree(v3_module["cache"], sandbox.cache, dirs_exist_ok=True)
    shutil.copytree(v3_module["out"], sandbox.out, dirs_exist_ok=True)
    module = sandbox.out / rs.HANDLE_DIR / "3"
    card = module.parent / "3.md"
    stamp = module.parent / ".3.stamp"
    old = {p: p.read_bytes() for p in (card, stamp)}
    result, outside = _build(sandbox, standins, standins, "--force", limit=20_000_000)
    line = result.check_one_line_error(1, r"cannot write .*/3: File too large")
    problem = rs.module_problem(module, v3_module["reference"])
    assert problem is None, problem
    assert {p: p.read_bytes() for p in (card, stamp)} == old
    partial = len(rs.leftovers(sandbox.out)) + int(problem is not None)
    assert partial == 0, rs.leftovers(sandbox.out)
    again = rs.run_cli(["build", "inception_v2", "--version", "3", "--kind", "classification",
                        "--specs", standins / "specs", "--mirror", standins,
                        "--cache-dir", sandbox.cache, "--output", sandbox.out, "--json"],
                       sandbox)
    again.check_ok()
    assert rs.json.loads(again.stdout)[0]["status"] == "up-to-date"
    case.trial(True, bytes_outside=outside, partial_modules=partial,
               observed="`%s`; old module intact, next build: up-to-date"
               % rs.shorten(line, sandbox, 160))
