"""A misbehaving HTTP(S) server on 127.0.0.1 against `hubexport fetch` (issue 7, Network).

Every case runs the real command line in a subprocess (``cli_tuned.py``:
``hubexport.cli.main`` with fetch's documented tunables shortened -- read
timeout 1.5 s, backoff 0.05 s, 3 retries -- so a stall costs seconds, not a
minute) against ``tests/httpserver.py``'s scripted replies, and checks the
exit code, the one-line message, the requests the server saw, that the
cache holds either the verified tarball or nothing at its final path, and
that nothing was written outside the cache.
"""

from __future__ import annotations

import random
import time

import pytest

import reliability_support as rs
from httpserver import Reply
from reliability_support import FILENAME, MEMBER

PAYLOAD = random.Random(11).randbytes(600 * 1024)  # incompressible "checkpoint"
TARBALL = rs.tar_bytes([(MEMBER, PAYLOAD)])
PATH = "/models/" + FILENAME
HALF = len(TARBALL) // 2


def _timestamps(server) -> list[float]:
    """Records the arrival time of every request (monotonic seconds)."""
    times: list[float] = []
    original = server._record

    def record(rec):
        times.append(time.monotonic())
        original(rec)

    server._record = record
    return times


def _fetch(sb: rs.Sandbox, mirror: str, tuning=None) -> tuple[rs.CliResult, int, list]:
    specs = rs.write_spec_dir(sb.inputs / "specs", TARBALL)
    before = sb.snapshot()
    result = rs.run_cli(["fetch", "inception_v2", "--specs", specs, "--mirror", mirror,
                         "--cache-dir", sb.cache], sb, tuning=tuning or rs.FAST_FETCH,
                        timeout=120)
    outside, changed = sb.bytes_outside(before, sb.snapshot())
    assert outside == 0, changed
    return result, outside, changed


def _final(sb: rs.Sandbox):
    return sb.cache / "downloads" / FILENAME


def _downloads(sb: rs.Sandbox) -> list[str]:
    d = sb.cache / "downloads"
    return sorted(p.name for p in d.iterdir() if not p.name.endswith(".lock")) if d.exists() else []


def _partial_at_final_path(sb: rs.Sandbox) -> int:
    final = _final(sb)
    return int(final.exists() and final.read_bytes() != TARBALL)


def _served(server) -> str:
    server.add_file(PATH, TARBALL)
    return server.url("/models")


def _ok(case, sb, result, server, outside, what, **metrics):
    result.check_ok()
    assert _final(sb).read_bytes() == TARBALL
    assert _downloads(sb) == [FILENAME]  # no .part left
    ckpt = list((sb.cache / "checkpoints").glob("*/" + MEMBER))
    assert len(ckpt) == 1 and ckpt[0].read_bytes() == PAYLOAD
    case.trial(True, bytes_outside=outside, partial_modules=_partial_at_final_path(sb),
               observed=what, requests=len(server.requests_for(PATH)),
               seconds=round(result.seconds, 2), **metrics)


def _failed(case, sb, result, outside, line, **metrics):
    assert not _final(sb).exists()
    case.trial(True, bytes_outside=outside, partial_modules=_partial_at_final_path(sb),
               observed="exit %d: `%s`" % (result.returncode, rs.shorten(line, sb)), **metrics)


@pytest.mark.parametrize("status,words", [(404, "the file is not there"),
                                          (403, "access denied"), (410, "not there"),
                                          (401, "access denied")])
def test_client_error_is_not_retried(http_server, sandbox, case, status, words):
    case.describe("Network", "HTTP %d" % status, "no retry; exit 1, one line naming the URL "
                  "and --mirror; nothing at the tarball's final path")
    mirror = _served(http_server)
    http_server.script(PATH, then=Reply(status=status))
    result, outside, _ = _fetch(sandbox, mirror)
    url = http_server.url(PATH)
    line = result.check_one_line_error(1, "HTTP %d" % status, words, rs.re.escape(url),
                                       r"--mirror")
    assert len(http_server.requests_for(PATH)) == 1
    assert _downloads(sandbox) == []
    _failed(case, sandbox, result, outside, line, requests=1)


def test_server_errors_are_retried_with_backoff(http_server, sandbox, case):
    case.describe("Network", "HTTP 500, then 503, then 200", "retried with exponential "
                  "backoff; the download succeeds and verifies")
    mirror = _served(http_server)
    times = _timestamps(http_server)
    http_server.script(PATH, Reply(status=500), Reply(status=503), Reply(status=503))
    tuning = dict(rs.FAST_FETCH, BACKOFF=0.2)
    result, outside, _ = _fetch(sandbox, mirror, tuning)
    assert len(http_server.requests_for(PATH)) == 4
    gaps = [round(b - a, 2) for a, b in zip(times, times[1:])]
    # urllib3 waits BACKOFF * 2**(n-1) before retry n >= 2: 0.4 s, then 0.8 s.
    assert gaps[1] >= 0.35 and gaps[2] >= 0.75, gaps
    _ok(case, sandbox, result, http_server, outside,
        "3 failures retried, gaps between requests %s s, then verified" % gaps)


def test_persistent_503_gives_up_with_a_clear_message(http_server, sandbox, case):
    case.describe("Network", "HTTP 503 forever", "gives up after RETRIES+1 attempts: exit 1, "
                  "one line saying how often it tried and what to do")
    mirror = _served(http_server)
    http_server.script(PATH, then=Reply(status=503))
    result, outside, _ = _fetch(sandbox, mirror)
    line = result.check_one_line_error(1, r"HTTP 503", r"after 4 attempts", r"--mirror")
    assert len(http_server.requests_for(PATH)) == 4
    _failed(case, sandbox, result, outside, line, requests=4)


def test_connection_refused(sandbox, case):
    case.describe("Network", "nothing listening on the mirror's port",
                  "exit 1, one line naming the URL and --mirror")
    import socket

    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result, outside, _ = _fetch(sandbox, "http://127.0.0.1:%d/models" % port)
    line = result.check_one_line_error(1, r"cannot download http://127\.0\.0\.1:%d" % port,
                                       r"--mirror")
    _failed(case, sandbox, result, outside, line)


def test_dropped_connection_is_resumed_with_range(http_server, sandbox, case):
    case.describe("Network", "connection dropped mid-body", "resumed with a Range request "
                  "from the byte received; the result verifies")
    mirror = _served(http_server)
    http_server.script(PATH, Reply(drop_after=HALF))
    result, outside, _ = _fetch(sandbox, mirror)
    assert http_server.ranges(PATH) == [None, "bytes=%d-" % HALF]
    _ok(case, sandbox, result, http_server, outside,
        "resumed with Range: bytes=%d- and verified" % HALF)


def test_server_ignoring_range_restarts_cleanly(http_server, sandbox, case):
    case.describe("Network", "server ignores Range and answers 200",
                  "restarts from byte 0 (no appended garbage); the result verifies")
    mirror = _served(http_server)
    http_server.script(PATH, Reply(drop_after=HALF), Reply(ignore_range=True))
    result, outside, _ = _fetch(sandbox, mirror)
    assert http_server.ranges(PATH) == [None, "bytes=%d-" % HALF]
    _ok(case, sandbox, result, http_server, outside,
        "200 to a Range request: truncated and restarted, %d bytes as pinned"
        % _final(sandbox).stat().st_size)


@pytest.mark.parametrize("pinned", [True, False], ids=["size_pinned", "size_unpinned"])
@pytest.mark.parametrize("delta", [5000, -5000], ids=["larger", "smaller"])
def test_wrong_content_length(http_server, sandbox, case, pinned, delta):
    what = "Content-Length %d bytes %s than the body, spec %s the size" % (
        abs(delta), "larger" if delta > 0 else "smaller", "pins" if pinned else "does not pin")
    if pinned:
        expected = "refused before downloading: exit 1, size mismatch, nothing kept"
    elif delta > 0:
        expected = "the short body is treated as a dropped connection and resumed; verifies"
    else:
        expected = "the body is cut at Content-Length: checksum mismatch, exit 1, nothing kept"
    case.describe("Network", what, expected)
    mirror = _served(http_server)
    http_server.script(PATH, Reply(content_length=len(TARBALL) + delta))
    specs = rs.write_spec_dir(sandbox.inputs / "specs", TARBALL,
                              size="auto" if pinned else None)
    before = sandbox.snapshot()
    result = rs.run_cli(["fetch", "inception_v2", "--specs", specs, "--mirror", mirror,
                         "--cache-dir", sandbox.cache], sandbox, tuning=rs.FAST_FETCH)
    outside, changed = sandbox.bytes_outside(before, sandbox.snapshot())
    assert outside == 0, changed
    if pinned:
        line = result.check_one_line_error(
            1, r"size mismatch", r"expected %d bytes" % len(TARBALL),
            r"got %d bytes" % (len(TARBALL) + delta), r"deleted")
        assert _downloads(sandbox) == [] and len(http_server.requests_for(PATH)) == 1
        _failed(case, sandbox, result, outside, line)
    elif delta > 0:
        assert http_server.ranges(PATH) == [None, "bytes=%d-" % len(TARBALL)]
        _ok(case, sandbox, result, http_server, outside,
            "short body detected, resumed at byte %d (416: complete), verified"
            % len(TARBALL))
    else:
        line = result.check_one_line_error(1, r"checksum mismatch", r"deleted")
        assert _downloads(sandbox) == []
        _failed(case, sandbox, result, outside, line)


def test_stall_before_headers_times_out_and_retries(http_server, sandbox, case):
    case.describe("Network", "server stalls before answering",
                  "read timeout, then retried; the download succeeds")
    mirror = _served(http_server)
    http_server.script(PATH, Reply(stall=6.0))
    result, outside, _ = _fetch(sandbox, mirror)
    assert len(http_server.requests_for(PATH)) == 2
    assert result.seconds >= rs.FAST_FETCH["READ_TIMEOUT"]
    _ok(case, sandbox, result, http_server, outside,
        "timed out after %.1f s, retried, verified" % rs.FAST_FETCH["READ_TIMEOUT"])


def test_stall_mid_body_times_out_and_resumes(http_server, sandbox, case):
    case.describe("Network", "server stalls in the middle of the body",
                  "read timeout, then resumed with Range; the download succeeds")
    mirror = _served(http_server)
    http_server.script(PATH, Reply(stall=6.0, stall_at=HALF))
    result, outside, _ = _fetch(sandbox, mirror)
    ranges = http_server.ranges(PATH)
    assert len(ranges) == 2 and ranges[0] is None and ranges[1].startswith("bytes=")
    offset = int(ranges[1][6:-1])
    assert 0 < offset <= HALF
    _ok(case, sandbox, result, http_server, outside,
        "timed out mid-body, resumed with Range: %s, verified" % ranges[1])


def test_https_to_http_redirect_is_refused(https_server, http_server, sandbox, case):
    case.describe("Network", "https mirror redirects to http",
                  "refused (no TLS downgrade): exit 1, one line naming both URLs; "
                  "the http URL is never requested")
    http_server.add_file(PATH, TARBALL)
    https_server.add_file(PATH, TARBALL)
    https_server.script(PATH, then=Reply(redirect=http_server.url(PATH)))
    result, outside, _ = _fetch(sandbox, https_server.url("/models"))
    line = result.check_one_line_error(1, r"refusing redirect", r"insecure",
                                       rs.re.escape(http_server.url(PATH)), r"--mirror")
    assert http_server.requests_for(PATH) == []
    assert _downloads(sandbox) == []
    _failed(case, sandbox, result, outside, line)


def test_wrong_checksum_deletes_file_and_shows_both_digests(http_server, sandbox, case):
    case.describe("Network", "body with the right size but a wrong checksum",
                  "exit 1, one line with the expected and the actual digest; "
                  "the bad file is deleted")
    mirror = _served(http_server)
    bad = bytearray(TARBALL)
    bad[HALF] ^= 0xFF
    http_server.add_file(PATH, bytes(bad))
    result, outside, _ = _fetch(sandbox, mirror)
    line = result.check_one_line_error(
        1, r"checksum mismatch", r"expected sha256:" + rs.sha256_bytes(TARBALL),
        r"got sha256:" + rs.sha256_bytes(bytes(bad)), r"deleted")
    assert _downloads(sandbox) == []
    _failed(case, sandbox, result, outside, line)
