"""Serve a registry over HTTP so that tensorflow_hub resolves its handles.

Public entry points: :func:`make_server` (bind and check) and :func:`run`
(serve until interrupted); ``hubexport serve`` calls both.

tensorflow_hub 0.16's ``HttpCompressedFileResolver``
(``tensorflow_hub/compressed_module_resolver.py``) handles every
``http(s)://`` handle when ``TFHUB_MODEL_LOAD_FORMAT`` is unset, ``AUTO`` or
``COMPRESSED``: it appends the query ``tf-hub-format=compressed`` to the
handle, GETs it with ``urllib`` (redirects followed), and unpacks the body
as a stream with ``tarfile.open(mode="r|*")`` (gzip is detected; only
regular files and directories are accepted) into
``$TFHUB_CACHE_DIR/<sha1 of the handle>``. The server therefore answers:

  ``GET /<handle>/<version>?tf-hub-format=compressed``  the module's archive
      (``application/gzip``, the bytes of ``<handle>/<version>.tar.gz``);
  ``GET /<handle>/<version>.tar.gz``                    the same archive;
  ``GET /<handle>/<version>``                           its card (Markdown);
  ``GET /assets/docs/.../<version>.md``                 the same card;
  ``GET /index.json``                                   the index being served;
  ``GET /``                                             a plain-text listing.

A deployment variant (``hubexport build --deploy``; index format ``tfjs`` or
``tflite``) is served at its own handle as tfhub.dev served them (see
:data:`VARIANT_QUERIES`):

  ``GET /<variant handle>/model.json?tfjs-format=file``
  ``GET /<variant handle>/group1-shard1of2.bin?tfjs-format=file``
      a TF.js model's files, as ``loadGraphModel`` asks for them with
      ``fromTFHub: true`` (the query may be left out);
  ``GET /<variant handle>?tfjs-format=compressed``      its ``.tar.gz``;
  ``GET /<variant handle>?lite-format=tflite``          a ``.tflite`` file (also
      ``GET /<variant handle>.tflite``);
  ``GET /<variant handle>``                             its card.

A variant's responses carry ``Access-Control-Allow-Origin: *``, so that
TF.js in a web page may load it from another origin. Each file is checked
against the sha256 index.json lists before it is sent.

``tf-hub-format=uncompressed`` (``TFHUB_MODEL_LOAD_FORMAT=UNCOMPRESSED``)
needs a ``gs://`` location and gets 400 with a plain message; anything else
gets 404 with a plain message. Only the files index.json lists are ever
served (looked up by exact path in a table built from the index), so no URL
can reach a file outside the registry or one the index does not name; a
listed path that a symlink leads outside the registry is not followed (500).

Integrity: :func:`make_server` checks every archive's size and sha256
against the index before it binds (a damaged registry is refused). While
serving, the index is re-read when it changes on disk (``hubexport
publish`` into a served registry), and an archive whose file changed since
it was checked is hashed again before it is sent, and a card is checked on
every request; one whose sha256 no longer matches gets 500 instead of wrong
bytes. Uses only the standard library's
``http.server`` (``ThreadingHTTPServer``). Does not import TensorFlow.
"""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import signal
import threading
import urllib.parse
from pathlib import Path

from hubexport import publish as registry_io
from hubexport.hashing import sha256_file
from hubexport.errors import PublishError, UsageError

log = logging.getLogger(__name__)

#: The query tensorflow_hub's compressed-module resolver appends.
FORMAT_PARAM = "tf-hub-format"
COMPRESSED = "compressed"
#: tfhub.dev's queries for a deployment variant's download, by index format:
#: TF.js's ``loadGraphModel(URL, {fromTFHub: true})`` asks for
#: ``URL/model.json?tfjs-format=file`` and each weight shard with the same
#: query (tfjs-converter ``src/executor/graph_model.ts``, tfjs-core
#: ``src/io/http.ts``); ``?tfjs-format=compressed`` is the whole model as a
#: ``.tar.gz``, ``?lite-format=tflite`` a ``.tflite`` file.
VARIANT_QUERIES = {"tfjs": ("tfjs-format", "compressed", "file"),
                   "tflite": ("lite-format", "tflite", None)}
_CHUNK = 1 << 20
_CONTENT_TYPES = {".json": "application/json", ".gz": "application/gzip"}


class _Routes:
    """URL path -> (kind, module_handle, file name or None) table built from an index."""

    def __init__(self, registry):
        self.entries = registry.entries
        self.table = {}
        for handle, entry in registry.entries.items():
            self.table["/" + handle] = ("module", handle, None)
            self.table["/" + entry["archive"]] = ("archive", handle, None)
            self.table["/" + entry["doc"]] = ("doc", handle, None)
            if entry["format"] in VARIANT_QUERIES and entry["module_dir"]:
                for rel in entry["files"]:  # a TF.js model's model.json and shards
                    self.table["/%s/%s" % (entry["module_dir"], rel)] = ("file", handle, rel)


class RegistryServer(http.server.ThreadingHTTPServer):
    """A threaded HTTP server over one registry directory.

    Attributes:
      registry: the registry directory (Path, absolute).
      url: the base URL, ``http://HOST:PORT`` (no trailing slash).
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, registry, host, port):
        self.registry = Path(registry).resolve()
        self._lock = threading.Lock()
        self._index_stat = None
        self._routes = None
        self._verified = {}  # archive path -> (size, mtime_ns, inode, sha256)
        self._load_index(initial=True)
        super().__init__((host, port), _Handler)

    @property
    def url(self):
        """The base URL (str), ``http://HOST:PORT`` without a trailing slash."""
        host, port = self.server_address[:2]
        if ":" in host:
            host = "[%s]" % host
        return "http://%s:%d" % (host, port)

    def describe(self):
        """Returns {"url", "registry", "modules": count, "handles": [...]} (JSON-ready)."""
        routes = self.routes()
        return {"url": self.url, "registry": str(self.registry),
                "modules": len(routes.entries), "handles": sorted(routes.entries)}

    def _index_path(self):
        return self.registry / registry_io.INDEX

    def _stat_key(self, path):
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns, st.st_ino)

    def _load_index(self, initial=False):
        key = self._stat_key(self._index_path())
        try:
            raw = self._index_path().read_bytes()
        except OSError:
            raw = None
        registry = registry_io.read_registry(self.registry, deep=False)
        if not registry.exists:
            raise UsageError("%s has no %s; publish modules into it first (hubexport publish "
                             "OUT --registry %s)" % (self.registry, registry_io.INDEX,
                                                     self.registry))
        if registry.problems:
            _, problem = registry.problems[0]
            message = ("registry %s is damaged (%d problems): %s; run hubexport verify %s"
                       % (self.registry, len(registry.problems), problem, self.registry))
            if initial:
                raise PublishError(message)
            log.error("%s; still serving the previous index", message)
            self._index_stat = key
            return
        for handle, entry in registry.entries.items():
            path = self.registry / entry["archive"]
            self._verified[str(path)] = (self._stat_key(path), entry["sha256"])
        self._routes = _Routes(registry)
        self._routes.index_bytes = raw  # GET /index.json: the index being served
        self._index_stat = key

    def routes(self):
        """The current routing table (re-reads index.json if it changed on disk)."""
        with self._lock:
            if self._stat_key(self._index_path()) != self._index_stat:
                log.info("index.json changed; reloading")
                try:
                    self._load_index()
                except (UsageError, PublishError) as e:
                    log.error("%s; still serving the previous index", e)
            return self._routes

    def resolve_inside(self, path):
        """``path`` with symlinks resolved, or None if that lies outside the registry."""
        real = Path(os.path.realpath(path))
        return real if real.is_relative_to(self.registry) else None

    def checked_archive(self, path, sha256):
        """Opens an archive whose bytes match ``sha256``.

        Returns:
          (open binary file, size in bytes), or (None, reason str).
        """
        real = self.resolve_inside(path)
        if real is None:
            return None, "%s leads outside the registry" % path.name
        try:
            f = open(real, "rb")
        except OSError as e:
            return None, "cannot open %s (%s)" % (path.name, e.strerror or e)
        st = os.fstat(f.fileno())
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            cached = self._verified.get(str(path))
        if cached != (key, sha256):
            actual = sha256_file(path)[0]
            if actual != sha256:
                f.close()
                return None, ("%s changed on disk and no longer matches index.json; run "
                              "hubexport verify" % path.name)
            with self._lock:
                self._verified[str(path)] = (key, sha256)
        return f, st.st_size

    def handle_error(self, request, client_address):
        log.debug("connection from %s failed", client_address, exc_info=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: RegistryServer
    protocol_version = "HTTP/1.1"
    server_version = "hubexport-serve"

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        log.info("%s %s", self.address_string(), format % args)

    def do_GET(self):
        self._answer(head=False)

    def do_HEAD(self):
        self._answer(head=True)

    def _answer(self, head):
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        try:
            query = urllib.parse.parse_qs(split.query, keep_blank_values=True,
                                          strict_parsing=bool(split.query))
        except ValueError:
            return self._text(400, "400 Bad Request: malformed query string\n", head)
        if "\x00" in path or "\\" in path or any(p in (".", "..") for p in path.split("/")):
            return self._text(400, "400 Bad Request: path %r is not a module path\n"
                              % path, head)
        if len(path) > 1:
            path = path.rstrip("/")
        routes = self.server.routes()
        if path in ("/", ""):
            return self._listing(routes, head)
        if path == "/" + registry_io.INDEX:
            if routes.index_bytes is None:  # index.json vanished while it was being read
                return self._text(503, "503 Service Unavailable: index.json is being "
                                  "replaced; try again\n", head)
            return self._bytes(routes.index_bytes, "application/json", head)
        kind, handle, rel = routes.table.get(path, (None, None, None))
        if kind is None:
            return self._text(404, "404 Not Found: no module or file %s in this registry "
                              "(GET / lists the modules)\n" % path, head)
        entry = routes.entries[handle]
        if entry["format"] in VARIANT_QUERIES:
            return self._variant(kind, entry, rel, query, head)
        formats = query.get(FORMAT_PARAM, [])
        if kind == "module" and formats:
            if formats != [COMPRESSED]:
                return self._text(400, "400 Bad Request: this registry serves only "
                                  "%s=%s (tensorflow_hub's default; unset "
                                  "TFHUB_MODEL_LOAD_FORMAT or set it to COMPRESSED)\n"
                                  % (FORMAT_PARAM, COMPRESSED), head)
            kind = "archive"
        if kind == "archive":
            return self._archive(entry, head)
        return self._file(self.server.registry / entry["doc"],
                          "text/markdown; charset=utf-8", head, entry["doc_sha256"])

    def _variant(self, kind, entry, rel, query, head):
        """Answers a deployment variant's paths (see :data:`VARIANT_QUERIES`)."""
        param, download, per_file = VARIANT_QUERIES[entry["format"]]
        values = query.get(param, [])
        if set(query) - {param} or len(values) > 1:
            return self._text(400, "400 Bad Request: %s takes only the query %s=%s%s\n"
                              % (entry["module_handle"], param, download,
                                 " (or %s=%s for its files)" % (param, per_file) if per_file else ""),
                              head)
        value = values[0] if values else None
        if kind == "file":
            if value not in (None, per_file):
                return self._text(400, "400 Bad Request: %s of %s takes %s=%s\n"
                                  % (rel, entry["module_handle"], param, per_file), head)
            return self._file(self.server.registry / entry["module_dir"] / rel,
                              _content_type(rel), head, entry["files"][rel], cors=True)
        if kind == "module" and value is not None:
            if value != download:
                return self._text(400, "400 Bad Request: %s is served with %s=%s%s\n"
                                  % (entry["module_handle"], param, download,
                                     "; its files as %s/model.json?%s=%s"
                                     % (entry["module_handle"], param, per_file)
                                     if per_file else ""), head)
            kind = "archive"
        if kind == "archive":
            return self._archive(entry, head)
        return self._file(self.server.registry / entry["doc"],
                          "text/markdown; charset=utf-8", head, entry["doc_sha256"])

    def _archive(self, entry, head):
        path = self.server.registry / entry["archive"]
        f, size = self.server.checked_archive(path, entry["sha256"])
        if f is None:
            return self._text(500, "500 Internal Server Error: %s\n" % size, head)
        with f:
            self.send_response(200)
            self.send_header("Content-Type", _content_type(path.name))
            self.send_header("Content-Length", str(size))
            self.send_header("ETag", '"%s"' % entry["sha256"])
            self.send_header("Content-Disposition",
                             'attachment; filename="%s"' % path.name)
            if entry["format"] in VARIANT_QUERIES:
                self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()
            if not head:
                self._copy(f, size)

    def _file(self, path, content_type, head, sha256=None, cors=False):
        real = self.server.resolve_inside(path)
        if real is None:
            return self._text(500, "500 Internal Server Error: %s leads outside the "
                              "registry\n" % path.name, head)
        try:
            data = real.read_bytes()
        except OSError:
            return self._text(404, "404 Not Found: %s is missing from the registry\n"
                              % path.name, head)
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            return self._text(500, "500 Internal Server Error: %s changed on disk and no "
                              "longer matches index.json; run hubexport verify\n"
                              % path.name, head)
        self._bytes(data, content_type, head, cors=cors)

    def _bytes(self, data, content_type, head, cors=False):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if cors:  # TF.js in a browser page from another origin may fetch it
            self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _listing(self, routes, head):
        lines = ["hubexport registry %s" % self.server.registry,
                 "%d modules; load one with hub.load(\"%s/<handle>\"):"
                 % (len(routes.entries), self.server.url), ""]
        lines += ["%s  (%s, %d bytes)" % (h, e["format"], e["size"])
                  for h, e in sorted(routes.entries.items())]
        self._text(200, "\n".join(lines) + "\n", head)

    def _copy(self, f, size):
        sent = 0
        try:
            while sent < size:
                chunk = f.read(min(_CHUNK, size - sent))
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _text(self, status, text, head):
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _content_type(name):
    """The Content-Type of a served file by its name (``application/octet-stream`` by default)."""
    return _CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")


def make_server(registry, host="127.0.0.1", port=8000):
    """Checks a registry and binds a server to it (not yet serving).

    Args:
      registry: the registry directory (``hubexport publish --registry``).
      host: address to listen on (default loopback only).
      port: TCP port; 0 picks a free one (see ``server.url``).

    Returns:
      a :class:`RegistryServer`; call :func:`run` or ``serve_forever()``.

    Raises:
      UsageError: ``registry`` has no index.json.
      PublishError: the registry is damaged (index edited, an archive
        missing or with another size or sha256 than the index says).
      HubexportError (exit 1): the address cannot be bound.
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: reachable from other machines", host)
    try:
        return RegistryServer(registry, host, port)
    except OSError as e:
        raise PublishError("cannot listen on %s:%d (%s); pick another --port"
                           % (host, port, e.strerror or e)) from None


def run(server):
    """Serves until SIGINT (KeyboardInterrupt, exit 130) or SIGTERM (clean return).

    Args:
      server: a :class:`RegistryServer` from :func:`make_server`.
    """
    def on_term(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
