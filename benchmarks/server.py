"""A fast static-file HTTP server on 127.0.0.1 for the benchmarks.

Run as its own process (so that it never competes with the measured client
for the GIL)::

    python benchmarks/server.py DIRECTORY

It prints ``PORT <n>`` on stdout once listening, then serves ``DIRECTORY``
until killed. Bodies go out with ``os.sendfile`` (zero-copy, no Python loop
per chunk), so the server is not what limits a loopback download; both
``curl`` and ``hubexport fetch`` are measured against this same server.
Single ``Range: bytes=A-B`` requests are honoured (206) so that resumed
downloads work too. Only GET and HEAD; nothing outside DIRECTORY is served.
"""

from __future__ import annotations

import http.server
import os
import re
import socket
import sys
import urllib.parse
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves files from ``server.root`` with sendfile."""

    protocol_version = "HTTP/1.1"
    server_version = "hubexport-bench/1"

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        root: Path = self.server.root
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        path = (root / rel).resolve()
        if root not in path.parents or not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range")
        if rng:
            m = _RANGE.match(rng.strip())
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:
                    start = max(0, size - int(m.group(2)))
                if start >= size or start > end:
                    self.send_response(416)
                    self.send_header("Content-Range", "bytes */%d" % size)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        self.end_headers()
        if head:
            return
        self.wfile.flush()
        with open(path, "rb") as f:
            offset, left = start, length
            while left > 0:
                sent = os.sendfile(self.connection.fileno(), f.fileno(), offset, left)
                if sent == 0:
                    break
                offset += sent
                left -= sent


class Server(http.server.ThreadingHTTPServer):
    """Threaded server bound to 127.0.0.1 only."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, root: Path):
        self.root = root.resolve()
        super().__init__(("127.0.0.1", 0), Handler)

    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        super().server_bind()


def main(argv):
    """Serves ``argv[1]`` on an ephemeral loopback port until killed."""
    server = Server(Path(argv[1]))
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
