"""A real HTTP(S) server on 127.0.0.1 for tests, with programmable misbehaviour.

The server runs in a background thread on an ephemeral port and serves bytes
from a dict (``add_file``) or from a directory (``directory=``). Each request
to a path consumes the next scripted ``Reply`` for that path (``script``);
when the script is used up, the path's ``then`` reply applies (default: a
normal, well-behaved reply). Normal replies honour single ``Range: bytes=``
requests with 206 / 416 as RFC 9110 says. Every request is recorded.

Usage (the ``http_server`` fixture in conftest.py does the start/stop)::

    server = HTTPTestServer(files={"/a.tar.gz": data})
    server.start()
    server.script("/a.tar.gz", Reply(status=503), Reply(drop_after=1000))
    requests.get(server.url("/a.tar.gz"))          # 503
    ...
    assert server.ranges("/a.tar.gz") == [None, None, "bytes=1000-"]
    server.stop()

Each response carries ``Connection: close``, so a misbehaving reply can never
poison a kept-alive connection of a later request.

``HTTPTestServer(tls=True)`` serves HTTPS with the self-signed certificate
below (valid for 127.0.0.1 and localhost, 2000-01-01 to 2100-01-01); point the
client at ``server.ca_file`` (e.g. ``REQUESTS_CA_BUNDLE``) to trust it. The
certificate and key exist only for loopback tests.
"""

from __future__ import annotations

import dataclasses
import http.server
import os
import re
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Mapping

__all__ = ["HTTPTestServer", "Reply", "RequestRecord"]

# Self-signed P-256 certificate for CN=hubexport-test-loopback,
# SAN IP:127.0.0.1, DNS:localhost; made with `openssl ca -selfsign`.
TEST_CERT_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBpjCCAUugAwIBAgIBATAKBggqhkjOPQQDAjAiMSAwHgYDVQQDDBdodWJleHBv
cnQtdGVzdC1sb29wYmFjazAgFw0wMDAxMDEwMDAwMDBaGA8yMTAwMDEwMTAwMDAw
MFowIjEgMB4GA1UEAwwXaHViZXhwb3J0LXRlc3QtbG9vcGJhY2swWTATBgcqhkjO
PQIBBggqhkjOPQMBBwNCAAScmApmCdCwzEvJaZTO1+hp4ei63+YPBwTDl9XivF2N
4k3khZyI9M4koAkWfL5IvG+213NfLXtgAXdnjREkpxnMo3AwbjAaBgNVHREEEzAR
hwR/AAABgglsb2NhbGhvc3QwDAYDVR0TAQH/BAIwADAOBgNVHQ8BAf8EBAMCB4Aw
EwYDVR0lBAwwCgYIKwYBBQUHAwEwHQYDVR0OBBYEFF9mO5f9yF348Jsx6TjhMfXr
vcPUMAoGCCqGSM49BAMCA0kAMEYCIQC8AM4a2WAI17/HcGUG2f5KZTDqLL/tkJSP
tQth6ans8AIhALXE7ZFUWBYhjSGZGZA/YAuc9fDsSycsgAGUxkd+u3Hq
-----END CERTIFICATE-----
"""
TEST_KEY_PEM = """\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgBombDPAK+CsLQQx+
RcvquQHiObyhKfnWFsjs2kmv+C2hRANCAAScmApmCdCwzEvJaZTO1+hp4ei63+YP
BwTDl9XivF2N4k3khZyI9M4koAkWfL5IvG+213NfLXtgAXdnjREkpxnM
-----END PRIVATE KEY-----
"""

_CHUNK = 16 * 1024  # bytes written per socket send


@dataclasses.dataclass(frozen=True)
class Reply:
    """How the server answers one request. The default is a correct reply.

    Attributes:
        status: Status code to send instead of the normal one (200/206/416).
            A non-2xx status sends a short text body; 2xx sends the file.
        redirect: If set, answer ``status`` (302 unless a 3xx is given) with
            this ``Location`` (absolute URL or path) and no body.
        ignore_range: Answer 200 with the whole file even if Range was sent.
        content_length: Content-Length header value to claim instead of the
            true body length; a negative value omits the header (the body
            then ends when the connection closes).
        drop_after: Close the connection after sending this many body bytes.
        stall: Seconds to sleep before sending anything (or, with
            ``stall_at``, in the middle of the body).
        stall_at: Body byte offset at which to stall; ``None`` means stall
            before the status line.
        body: Bytes to send instead of the file (e.g. corrupted content).
    """

    status: int | None = None
    redirect: str | None = None
    ignore_range: bool = False
    content_length: int | None = None
    drop_after: int | None = None
    stall: float = 0.0
    stall_at: int | None = None
    body: bytes | None = None


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """One request the server received.

    Attributes:
        method: "GET" or "HEAD".
        path: Request path without the query string.
        range: The Range header value, or None.
        headers: All request headers (case-preserving dict).
    """

    method: str
    path: str
    range: str | None
    headers: dict[str, str]


_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """Returns (first, last) inclusive for a single byte range, or None if unsatisfiable.

    Raises ValueError for a header that is not a single bytes range (then it
    is ignored, as RFC 9110 allows).
    """
    m = _RANGE_RE.match(value.strip())
    if not m or (not m.group(1) and not m.group(2)):
        raise ValueError(value)
    if not m.group(1):  # suffix range: last N bytes
        n = int(m.group(2))
        if n == 0:
            return None
        return max(0, size - n), size - 1
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) else size - 1
    if last < first:
        raise ValueError(value)
    if first >= size:
        return None
    return first, min(last, size - 1)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass  # keep test output clean

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        rng = self.headers.get("Range")
        owner._record(RequestRecord(self.command, path, rng, dict(self.headers.items())))
        reply = owner._next_reply(path)
        self.close_connection = True
        try:
            self._answer(owner, path, rng, reply, head)
        except (ConnectionError, socket.timeout, ssl.SSLError, OSError):
            pass  # the client went away; nothing to do

    def _answer(self, owner, path, rng, reply, head) -> None:
        if reply.stall and reply.stall_at is None:
            if owner._stopping.wait(reply.stall):
                return
        if reply.redirect is not None:
            status = reply.status if reply.status and 300 <= reply.status < 400 else 302
            self.send_response(status)
            self.send_header("Location", reply.redirect)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            return
        data = owner._lookup(path)
        if reply.status is not None and not 200 <= reply.status < 300:
            self._send_simple(reply.status, head)
            return
        if data is None:
            self._send_simple(404, head)
            return
        if reply.body is not None:
            data = reply.body
        size = len(data)
        status, first, last = 200, 0, size - 1
        headers = {"Accept-Ranges": "bytes"}
        if rng is not None and not reply.ignore_range:
            try:
                parsed = _parse_range(rng, size)
            except ValueError:
                parsed = (0, size - 1)  # malformed: ignore it, send everything
            else:
                if parsed is None:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    return
                status = 206
                first, last = parsed
                headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        if reply.status is not None:
            status = reply.status
        body = data[first:last + 1]
        length = reply.content_length if reply.content_length is not None else len(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if length >= 0:
            self.send_header("Content-Length", str(length))
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        limit = len(body) if reply.drop_after is None else min(reply.drop_after, len(body))
        sent = 0
        while sent < limit:
            stall_here = reply.stall_at is not None and sent <= reply.stall_at < sent + _CHUNK
            if reply.stall and stall_here:
                cut = reply.stall_at - sent
                self.wfile.write(body[sent:sent + cut])
                self.wfile.flush()
                sent += cut
                if owner._stopping.wait(reply.stall):
                    return
                reply = dataclasses.replace(reply, stall=0.0)
            n = min(_CHUNK, limit - sent)
            self.wfile.write(body[sent:sent + n])
            sent += n
        self.wfile.flush()
        if reply.drop_after is not None:
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _send_simple(self, status: int, head: bool) -> None:
        phrase = http.server.BaseHTTPRequestHandler.responses.get(status, ("",))[0]
        text = f"{status} {phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(text)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "HTTPTestServer"

    def handle_error(self, request, client_address):
        pass  # dropped connections are expected in these tests


class HTTPTestServer:
    """A threaded HTTP(S) server on 127.0.0.1 with scripted misbehaviour.

    Args:
        files: Map of URL path (e.g. "/models/x.tar.gz") to the bytes served.
        directory: Serve files below this directory as well (dict wins).
        tls: Serve HTTPS with the embedded self-signed loopback certificate.
    """

    def __init__(self, files: Mapping[str, bytes] | None = None,
                 directory: str | os.PathLike | None = None, tls: bool = False):
        self._files: dict[str, bytes] = {}
        for k, v in (files or {}).items():
            self.add_file(k, v)
        self._directory = Path(directory).resolve() if directory is not None else None
        self._tls = tls
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Reply]] = {}
        self._then: dict[str, Reply] = {}
        self._requests: list[RequestRecord] = []
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self.ca_file: str | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> "HTTPTestServer":
        """Binds an ephemeral port on 127.0.0.1 and serves in a daemon thread."""
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        if self._tls:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="httptest-tls-")
            cert = Path(self._tmpdir.name, "cert.pem")
            key = Path(self._tmpdir.name, "key.pem")
            cert.write_text(TEST_CERT_PEM)
            key.write_text(TEST_KEY_PEM)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
            self.ca_file = str(cert)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="HTTPTestServer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving, wakes stalled handlers and closes the socket."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> "HTTPTestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- content and behaviour ---------------------------------------------
    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:PORT`` (no trailing slash)."""
        assert self._httpd is not None, "server not started"
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this server."""
        return self.base_url + _norm(path)

    def add_file(self, path: str, data: bytes) -> None:
        """Serves ``data`` at ``path`` (replacing any earlier content)."""
        self._files[_norm(path)] = bytes(data)

    def script(self, path: str, *replies: Reply, then: Reply | None = None) -> None:
        """Queues ``replies`` for the next requests to ``path``, one per request.

        Args:
            path: URL path the script applies to.
            *replies: Replies for the next len(replies) requests, in order.
            then: Reply for every request after the script is used up
                (default: normal behaviour).
        """
        with self._lock:
            self._scripts[_norm(path)] = list(replies)
            self._then[_norm(path)] = then or Reply()

    # -- assertions ----------------------------------------------------------
    @property
    def requests(self) -> list[RequestRecord]:
        """All requests received so far, in order (a copy)."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, path: str) -> list[RequestRecord]:
        """Requests received for ``path`` (query string ignored)."""
        p = _norm(path)
        return [r for r in self.requests if r.path == p]

    def ranges(self, path: str) -> list[str | None]:
        """The Range header (or None) of each request to ``path``."""
        return [r.range for r in self.requests_for(path)]

    def clear_requests(self) -> None:
        """Forgets the recorded requests."""
        with self._lock:
            self._requests.clear()

    # -- internals -----------------------------------------------------------
    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self._requests.append(rec)

    def _next_reply(self, path: str) -> Reply:
        with self._lock:
            queue = self._scripts.get(path)
            if queue:
                return queue.pop(0)
            return self._then.get(path, Reply())

    def _lookup(self, path: str) -> bytes | None:
        if path in self._files:
            return self._files[path]
        if self._directory is not None:
            candidate = (self._directory / path.lstrip("/")).resolve()
            if candidate.is_file() and candidate.is_relative_to(self._directory):
                return candidate.read_bytes()
        return None


def _norm(path: str) -> str:
    return "/" + path.lstrip("/")
