"""The download cache under concurrency and tampering, through `hubexport fetch` (issue 7, Cache)."""

from __future__ import annotations

import random

import reliability_support as rs
from httpserver import Reply
from reliability_support import FILENAME, MEMBER

PAYLOAD = random.Random(23).randbytes(400 * 1024)
TARBALL = rs.tar_bytes([(MEMBER, PAYLOAD)])
PATH = "/models/" + FILENAME


def _args(sb, specs, mirror, verbose=False):
    return (["-v"] if verbose else []) + ["fetch", "inception_v2", "--specs", specs,
                                          "--mirror", mirror, "--cache-dir", sb.cache]


def test_two_processes_fetching_at_once_download_once(http_server, sandbox, case):
    case.describe("Cache", "two `hubexport fetch` processes start at the same moment",
                  "one download (file lock); the other waits, then reuses it; both exit 0")
    http_server.add_file(PATH, TARBALL)
    http_server.script(PATH, Reply(stall=4.0))  # the first download takes a while
    specs = rs.write_spec_dir(sandbox.inputs / "specs", TARBALL)
    mirror = http_server.url("/models")
    before = sandbox.snapshot()
    procs = [rs.start_cli(_args(sandbox, specs, mirror, verbose=True), sandbox,
                          tuning=dict(rs.FAST_FETCH, READ_TIMEOUT=10.0)) for _ in range(2)]
    results = [rs.finish(p, timeout=60) for p in procs]
    outside, changed = sandbox.bytes_outside(before, sandbox.snapshot())
    for r in results:
        r.check_ok()
        assert str(sandbox.cache / "downloads" / FILENAME) in r.stdout
    waited = [r for r in results if "waiting for another process's download" in r.stderr]
    assert len(waited) == 1, [r.stderr for r in results]  # they really overlapped
    assert len(http_server.requests_for(PATH)) == 1
    assert (sandbox.cache / "downloads" / FILENAME).read_bytes() == TARBALL
    assert outside == 0, changed
    assert rs.leftovers(sandbox.cache) == []
    case.trial(True, bytes_outside=outside, observed="1 HTTP request; one process logged "
               "'waiting for another process's download'; both exit 0", requests=1)


def test_cached_tarball_altered_after_verification(http_server, sandbox, case):
    case.describe("Cache", "cached tarball altered on disk after it was verified",
                  "re-verified before use: the altered file is detected (warning), deleted "
                  "and fetched again; if the mirror is gone, exit 1 and nothing kept")
    http_server.add_file(PATH, TARBALL)
    specs = rs.write_spec_dir(sandbox.inputs / "specs", TARBALL)
    mirror = http_server.url("/models")
    final = sandbox.cache / "downloads" / FILENAME
    before = sandbox.snapshot()
    rs.run_cli(_args(sandbox, specs, mirror), sandbox, tuning=rs.FAST_FETCH).check_ok()
    assert len(http_server.requests_for(PATH)) == 1

    data = bytearray(final.read_bytes())
    data[len(data) // 3] ^= 0x01  # one flipped bit, same size
    final.write_bytes(bytes(data))
    again = rs.run_cli(_args(sandbox, specs, mirror), sandbox, tuning=rs.FAST_FETCH)
    again.check_ok()
    assert "failed verification" in again.stderr and "checksum mismatch" in again.stderr
    assert len(http_server.requests_for(PATH)) == 2
    assert final.read_bytes() == TARBALL

    final.write_bytes(bytes(data))  # altered again, and now the mirror is gone
    http_server.script(PATH, then=Reply(status=404))
    gone = rs.run_cli(_args(sandbox, specs, mirror), sandbox, tuning=rs.FAST_FETCH)
    line = gone.check_one_line_error(1, r"HTTP 404", r"--mirror")
    assert "failed verification" in gone.stderr
    assert not final.exists()
    outside, changed = sandbox.bytes_outside(before, sandbox.snapshot())
    assert outside == 0, changed
    case.trial(True, bytes_outside=outside, observed="detected twice ('failed verification; "
               "deleting it'); re-downloaded, or `%s`" % rs.shorten(line, sandbox, 120))
    case.trial(True)
