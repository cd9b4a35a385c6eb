"""Fetch, verify and cache TF-Slim checkpoint tarballs (pipeline stage 2).

Entry point: :func:`fetch_checkpoint` (spec -> the extracted checkpoint's
path: a TF V1 checkpoint file or a TF V2 prefix), and :func:`fetch_source`,
which also says what was fetched (:class:`FetchedSource`: checksum and size
of the tarball used). Its part :func:`fetch_tarball` and the helpers
:func:`default_cache_dir`, :func:`resolve_url`, :func:`tarball_path`,
:func:`require_pinned` and :func:`unpinned_warning`, are public too, for
``hubexport fetch``, ``hubexport build`` and for tests. Taking the
checkpoint out of the tarball is :func:`hubexport.archive.extract_checkpoint`
(formats and safety rules: see there).

Cache layout (root: :func:`default_cache_dir`)::

    downloads/<filename>            verified tarball (appears only by rename)
    downloads/<filename>.part       download in progress (resumed with Range)
    downloads/<filename>.lock       serialises processes fetching the same file
    checkpoints/<name>-<hex12>/<member>     the V1 file, or the V2 checkpoint's
                                    directory (each appears only complete, by rename)
    checkpoints/<name>-<hex12>/.extract-*   extraction in progress (or killed)
    checkpoints/<name>-<hex12>.lock         serialises extractions
    checkpoints/<name>-unpinned-<sha256>/   the same, for an unpinned source

Sources without a published checksum (spec ``checkpoint.checksum:
unpublished``, ``spec.checkpoint.pinned`` False) are refused with
:class:`UnpinnedSourceError` unless the caller passes ``allow_unpinned``
(``--allow-unpinned`` / ``HUBEXPORT_ALLOW_UNPINNED=1``). Allowed, they are
fetched like any other, hashed with sha256 (the size is checked if the spec
gives one), and :class:`FetchedSource` reports the digest and size of the
bytes used. Such a tarball also lives at ``downloads/<filename>``: every use
of a cached tarball hashes it again, so once the spec is pinned a tarball
with other bytes fails verification, is deleted (with a warning) and fetched
anew, and one with the pinned bytes is reused. Its extraction is keyed by
the full sha256 of the bytes it came from, in a directory of its own
(``-unpinned-``) that a pinned spec never reads. A ``.part`` file is never
resumed for an unpinned source (nothing could tell a stale prefix).

Downloads use requests with urllib3's ``Retry`` for connection errors, read
timeouts and HTTP 500/502/503/504, plus a resume loop for connections that
drop mid-body. Every byte is hashed as it arrives, so verification needs no
second read. This module never imports TensorFlow.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import posixpath
import re
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import filelock
from tqdm import tqdm

from hubexport import __version__
from hubexport import archive
from hubexport.errors import ChecksumError, FetchError, SpecError, UsageError

if TYPE_CHECKING:
    import requests

__all__ = [
    "default_cache_dir",
    "resolve_url",
    "tarball_path",
    "fetch_tarball",
    "fetch_checkpoint",
    "fetch_source",
    "FetchedSource",
    "UnpinnedSourceError",
    "is_pinned",
    "require_pinned",
    "unpinned_warning",
]

log = logging.getLogger(__name__)

# Network behaviour. Module constants so that tests (and callers) can tune
# them; they are read at call time.
CONNECT_TIMEOUT = 15.0  # seconds to establish a TCP/TLS connection
READ_TIMEOUT = 60.0  # seconds without a byte from the server before giving up on a read
RETRIES = 4  # retries after a failed attempt (so RETRIES + 1 attempts in all)
BACKOFF = 0.5  # base delay in seconds; retry k waits about BACKOFF * 2**(k-1)
BACKOFF_MAX = 30.0  # cap on one backoff delay, seconds
RETRY_STATUSES = frozenset({500, 502, 503, 504})
MAX_REDIRECTS = 10
MAX_RESUMES = 20  # most interrupted responses resumed per download, progress or not
CHUNK_BYTES = 1 << 20  # bytes per read/write
HASH_QUEUE_CHUNKS = 16  # chunks received but not yet hashed, at most (memory: 16 MiB)
FLUSH_BYTES = 32 << 20  # bytes written between two fdatasync calls of a download
LOCK_TIMEOUT = -1.0  # seconds to wait for another process's download; -1 = forever

# Size bound (bytes): a download whose size the spec does not pin stops at
# MAX_UNKNOWN_DOWNLOAD_BYTES (the TF-Slim tarballs are < 300 MB). The bounds
# of extraction live in hubexport.archive.
MAX_UNKNOWN_DOWNLOAD_BYTES = 4 << 30

CHECKSUM_ALGOS = ("md5", "sha256", "sha384", "sha512")
# What an unpinned source is hashed with (and recorded as).
UNPINNED_ALGO = "sha256"
# The environment variable the command line reads for --allow-unpinned.
ALLOW_UNPINNED_ENV = "HUBEXPORT_ALLOW_UNPINNED"
MIRROR_HINT = "use --mirror URL_OR_DIR (or set HUBEXPORT_MIRROR) to fetch from a mirror"

_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Returns the cache root for downloads and extracted checkpoints.

    Returns:
        ``$HUBEXPORT_CACHE`` if set, else ``$XDG_CACHE_HOME/hubexport`` if
        ``XDG_CACHE_HOME`` is an absolute path, else ``~/.cache/hubexport``
        (the XDG Base Directory default). The directory is not created.
    """
    env = os.environ.get("HUBEXPORT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "hubexport"
    return Path.home() / ".cache" / "hubexport"


def resolve_url(url: str, mirror: str | os.PathLike | None = None) -> str:
    """Returns the URL or local path to fetch ``url`` from.

    Args:
        url: The canonical URL from the spec.
        mirror: Base of a mirror that holds the same file names: an
            ``http(s)://`` URL, a ``file://`` URL or a plain local directory.
            ``None`` means ``$HUBEXPORT_MIRROR`` (if set and non-empty).

    Returns:
        ``url`` itself without a mirror, else ``mirror.rstrip('/') + '/' +
        filename`` where filename is the last path component of ``url``.

    Raises:
        FetchError: ``url`` has no file name to look up on a mirror.
    """
    if mirror is None:
        mirror = os.environ.get("HUBEXPORT_MIRROR") or None
    if mirror is None or os.fspath(mirror) == "":
        return url
    return os.fspath(mirror).rstrip("/") + "/" + _url_filename(url)


def tarball_path(spec: Any, cache_dir: str | os.PathLike | None = None) -> Path:
    """Returns where :func:`fetch_tarball` keeps the spec's tarball (no I/O).

    Args:
        spec: A model spec (uses ``spec.checkpoint``).
        cache_dir: Cache root; default :func:`default_cache_dir`.

    Returns:
        ``<cache_dir>/downloads/<filename>``; the file may not exist yet.

    Raises:
        SpecError: The spec's checksum or file name is unusable.
    """
    return _cache_root(cache_dir) / "downloads" / _Expected.from_checkpoint(
        spec, allow_unpinned=True).filename


class UnpinnedSourceError(UsageError):
    """The spec's tarball has no published checksum and unpinned sources are not allowed.

    Exit code 2 (a usage error: the command needs ``--allow-unpinned``).
    """


@dataclasses.dataclass(frozen=True)
class FetchedSource:
    """What :func:`fetch_source` fetched for a spec.

    Attributes:
        tarball: Path of the tarball in the cache (None: a local checkpoint).
        checkpoint: Path of the extracted checkpoint, as TensorFlow's
            checkpoint reader takes it: the TF V1 file, or the TF V2 prefix
            (see :func:`hubexport.archive.extract_checkpoint`).
        checksum: ``"ALGO:HEX"``: the spec's checksum (pinned, verified), or
            ``"sha256:HEX"`` of the bytes used (unpinned).
        size: size of the tarball used (local: of the checkpoint's files), in
            bytes.
        pinned: whether the spec pins the checksum.
        files: a local checkpoint's files, {name: sha256 hex}; else None.
    """

    tarball: Path | None
    checkpoint: Path
    checksum: str
    size: int
    pinned: bool
    files: dict | None = None


def is_pinned(spec: Any) -> bool:
    """Whether the spec's checkpoint has a published checksum.

    Args:
        spec: A model spec (``spec.checkpoint.pinned``; objects without that
            attribute are pinned unless ``checksum_algo`` is None).

    Returns:
        bool.
    """
    ck = spec.checkpoint
    return bool(getattr(ck, "pinned", getattr(ck, "checksum_algo", None) is not None))


def _spec_file(spec: Any) -> str:
    return str(getattr(spec, "source", None) or f"the spec of {getattr(spec, 'name', '?')}")


def require_pinned(spec: Any, allow_unpinned: bool = False) -> None:
    """Refuses a source without a published checksum unless it is allowed.

    Args:
        spec: A model spec.
        allow_unpinned: True to accept an unpinned source.

    Raises:
        UnpinnedSourceError: the spec says ``checkpoint.checksum:
            unpublished`` and ``allow_unpinned`` is False. The one-line
            message names the model, the URL, the spec file and what to do.
    """
    if allow_unpinned or is_pinned(spec) or getattr(spec.checkpoint, "local", False):
        return  # a local checkpoint is the user's own: its digest is recorded, not refused
    where = _spec_file(spec)
    raise UnpinnedSourceError(
        f"model {getattr(spec, 'name', '?')}: {spec.checkpoint.url} has no published checksum "
        f"(checkpoint.checksum: unpublished in {where}), so its bytes cannot be verified; "
        f"refusing to use it. Pass --allow-unpinned (or set {ALLOW_UNPINNED_ENV}=1) to "
        f"download it anyway and print its sha256 and size; once you have checked that "
        f"digest, pin it in {where}: replace 'unpublished' by 'sha256:<hex>' and add "
        f"'size: <bytes>' under checkpoint")


def unpinned_warning(spec: Any, fetched: FetchedSource) -> str:
    """The one-line warning printed after an unpinned source was used.

    Args:
        spec: The model spec.
        fetched: What :func:`fetch_source` got for it.

    Returns:
        str, ``warning: URL has no published checksum; got sha256:HEX, N
        bytes; pin it in SPEC ...`` (no trailing newline).
    """
    return (f"warning: {spec.checkpoint.url} has no published checksum; got "
            f"{fetched.checksum}, {fetched.size} bytes; pin it in {_spec_file(spec)} as "
            f"checkpoint.checksum: {fetched.checksum} (and checkpoint.size: {fetched.size}) "
            f"once you have checked it")


def fetch_tarball(spec: Any, cache_dir: str | os.PathLike | None = None,
                  mirror: str | os.PathLike | None = None,
                  progress: bool | None = None, allow_unpinned: bool = False) -> Path:
    """Downloads (or reuses) the spec's checkpoint tarball and verifies it.

    A file already in the cache is re-verified (size, then checksum) before
    use; a verified file is never downloaded again, and one that fails
    verification is deleted (with a logged warning) and fetched anew. A new
    download streams into ``<filename>.part`` while being hashed, resumes an
    existing ``.part`` with an HTTP Range request, retries transient failures
    with exponential backoff, and is renamed into place only once size and
    checksum match. A ``filelock`` lock makes concurrent processes fetching
    the same tarball perform a single download.

    An unpinned source (see the module docstring) is refused unless
    ``allow_unpinned``; allowed, only its size (if the spec gives one) is
    checked, and a ``.part`` file is not resumed.

    Args:
        spec: A model spec; uses ``spec.checkpoint.url``, ``.size`` (bytes or
            None), ``.checksum_algo`` (md5/sha256/sha384/sha512, or None if
            unpublished), ``.checksum_hex``, ``.pinned`` and ``.filename``.
        cache_dir: Cache root; default :func:`default_cache_dir`.
        mirror: Mirror base (see :func:`resolve_url`); default
            ``$HUBEXPORT_MIRROR``.
        progress: Show a tqdm progress bar on stderr; ``None`` means only
            when stderr is a terminal.
        allow_unpinned: Accept a source without a published checksum.

    Returns:
        Path of the verified tarball, ``<cache_dir>/downloads/<filename>``.

    Raises:
        UnpinnedSourceError: The source is unpinned and ``allow_unpinned``
            is False (nothing is downloaded).
        FetchError: HTTP error (4xx at once, 5xx after retries), connection
            failure or timeout after retries, refused redirect, missing
            local file.
        ChecksumError: The bytes' size or digest differ from the spec (the
            bad file is deleted).
        SpecError: The spec's checksum algorithm, digest or file name is
            unusable.
    """
    with _tarball(spec, cache_dir, mirror, progress, allow_unpinned) as (final, _, _):
        return final


@contextlib.contextmanager
def _tarball(spec: Any, cache_dir: str | os.PathLike | None, mirror: str | os.PathLike | None,
             progress: bool | None, allow_unpinned: bool) -> Iterator[tuple[Path, str, int]]:
    """:func:`fetch_tarball`, holding the download lock while the caller uses the file.

    Yields:
        (path, hex digest of ``expected.algo``, size in bytes) of the tarball.
    """
    ck = spec.checkpoint
    expected = _Expected.from_checkpoint(spec, allow_unpinned)
    downloads = _cache_root(cache_dir) / "downloads"
    _mkdir(downloads)
    final = downloads / expected.filename
    part = downloads / (expected.filename + ".part")
    source = resolve_url(ck.url, mirror)
    show = _want_progress(progress)

    lock = downloads / (expected.filename + ".lock")
    with _locked(lock, what=f"download of {expected.filename}"):
        got = None
        if final.exists():
            try:
                got = _verify_existing(final, expected)
            except ChecksumError as exc:
                log.warning("cached %s failed verification (%s); deleting it and downloading again",
                            final, exc)
                _unlink(final)
            else:
                _unlink(part)
        if got is None:
            local = _local_path(source)
            if local is not None:
                got = _copy_local(local, part, expected, show)
            else:
                got = _Download(source, part, expected, show).run()
            os.replace(part, final)
        yield final, got[0], got[1]


def fetch_checkpoint(spec: Any, cache_dir: str | os.PathLike | None = None,
                     mirror: str | os.PathLike | None = None,
                     progress: bool | None = None, allow_unpinned: bool = False) -> Path:
    """Returns the spec's extracted checkpoint, fetching it if needed.

    The same as :func:`fetch_source` (see there), returning only the path.

    Args:
        spec: A model spec (``spec.name`` and ``spec.checkpoint``, see
            :func:`fetch_tarball`).
        cache_dir: Cache root; default :func:`default_cache_dir`.
        mirror: Mirror base (see :func:`resolve_url`).
        progress: Progress bar on stderr; ``None`` = only on a terminal.
        allow_unpinned: Accept a source without a published checksum.

    Returns:
        Path to pass to ``tf.train.load_checkpoint``: the TF V1 checkpoint
        file, or the prefix of a TF V2 checkpoint (``<prefix>.index`` and
        ``<prefix>.data-KKKKK-of-NNNNN`` beside it).

    Raises:
        UnpinnedSourceError, FetchError, ChecksumError: See :func:`fetch_tarball`.
        ArchiveError: See :func:`hubexport.archive.extract_checkpoint`.
        SpecError: Unusable spec name, checksum or member.
    """
    return fetch_source(spec, cache_dir=cache_dir, mirror=mirror, progress=progress,
                        allow_unpinned=allow_unpinned).checkpoint


def fetch_source(spec: Any, cache_dir: str | os.PathLike | None = None,
                 mirror: str | os.PathLike | None = None,
                 progress: bool | None = None, allow_unpinned: bool = False) -> FetchedSource:
    """Fetches the spec's tarball and checkpoint; says what was fetched.

    First the tarball is fetched or re-verified (:func:`fetch_tarball`). The
    checkpoint lives in ``<cache_dir>/checkpoints/<spec.name>-<first 12 hex
    digits of the checksum>/<member>`` (an unpinned source:
    ``<spec.name>-unpinned-<sha256 of the tarball used>/<member>``): the V1
    file, or the directory of the V2 checkpoint's files. Either appears
    there only complete, by an atomic rename; a complete one is reused (a V2
    directory only with its index and every data shard), anything else is
    extracted again (:func:`hubexport.archive.extract_checkpoint`, which
    says how the archive tells V1 from V2). Extraction happens under a lock,
    which also removes the temporary directories of extractions that were
    killed, and while the tarball's download lock is held, so that the
    files extracted are from the tarball just verified.

    Args:
        spec: A model spec (``spec.name`` and ``spec.checkpoint``, see
            :func:`fetch_tarball`).
        cache_dir: Cache root; default :func:`default_cache_dir`.
        mirror: Mirror base (see :func:`resolve_url`).
        progress: Progress bar on stderr; ``None`` = only on a terminal.
        allow_unpinned: Accept a source without a published checksum.

    Returns:
        :class:`FetchedSource`: tarball and checkpoint paths, the checksum
        (``ALGO:HEX`` as pinned, or ``sha256:HEX`` of the bytes of an
        unpinned source), the tarball's size in bytes, and whether it is
        pinned.

    Raises:
        UnpinnedSourceError, FetchError, ChecksumError: See :func:`fetch_tarball`.
        ArchiveError: See :func:`hubexport.archive.extract_checkpoint`.
        SpecError: Unusable spec name, checksum or member.

    A spec with a local checkpoint (``checkpoint.path``) downloads nothing:
    :func:`hubexport.local_source.resolve_local` finds and hashes its files.
    """
    if getattr(spec.checkpoint, "local", False):
        from hubexport.local_source import resolve_local

        return resolve_local(spec)
    expected = _Expected.from_checkpoint(spec, allow_unpinned)
    name = str(spec.name)
    if not _safe_component(name):
        raise SpecError(f"spec name {name!r} cannot be used as a directory name")
    member = _spec_member(spec)
    checkpoints = _cache_root(cache_dir) / "checkpoints"
    with _tarball(spec, cache_dir, mirror, progress, allow_unpinned) as (tarball, hexdigest, size):
        if expected.pinned:
            dest = checkpoints / f"{name}-{expected.hexdigest[:12]}"
        else:
            dest = checkpoints / f"{name}-unpinned-{hexdigest}"
        _mkdir(checkpoints)
        with _locked(checkpoints / f"{dest.name}.lock", what=f"extraction of {member}"):
            for stale in dest.glob(archive.TEMP_PREFIX + "*"):  # of a killed extraction
                shutil.rmtree(stale, ignore_errors=True)
            target = archive.extract_checkpoint(tarball, member, dest,
                                                tarball_size=expected.size, reuse=True)
    return FetchedSource(tarball=tarball, checkpoint=target,
                         checksum=f"{expected.algo}:{hexdigest}", size=size,
                         pinned=expected.pinned)


# --------------------------------------------------------------------------
# Expected bytes, hashing and verification
# --------------------------------------------------------------------------


class _Expected:
    """What the spec pins for a tarball: file name, size and digest.

    ``hexdigest`` is None for an unpinned source (``algo`` is then
    ``UNPINNED_ALGO``, what the bytes are hashed with).
    """

    def __init__(self, url: str, filename: str, size: int | None, algo: str,
                 hexdigest: str | None):
        self.url = url
        self.filename = filename
        self.size = size
        self.algo = algo
        self.hexdigest = hexdigest

    @property
    def pinned(self) -> bool:
        return self.hexdigest is not None

    @classmethod
    def from_checkpoint(cls, spec: Any, allow_unpinned: bool = False) -> "_Expected":
        """Reads the spec; raises UnpinnedSourceError for an unpinned one unless allowed."""
        ck = spec.checkpoint
        where = f"spec {getattr(spec, 'name', '?')}: checkpoint"
        if not is_pinned(spec):
            require_pinned(spec, allow_unpinned)
            return cls(str(ck.url), cls._filename(ck, where), cls._size(ck, where),
                       UNPINNED_ALGO, None)
        algo = str(ck.checksum_algo).lower()
        if algo not in CHECKSUM_ALGOS:
            raise SpecError(f"{where}.checksum: algorithm {algo!r} is not one of "
                            f"{', '.join(CHECKSUM_ALGOS)}")
        hexdigest = str(ck.checksum_hex).lower()
        want_len = hashlib.new(algo).digest_size * 2
        if len(hexdigest) != want_len or not re.fullmatch(r"[0-9a-f]+", hexdigest):
            raise SpecError(f"{where}.checksum: {algo} digest must be {want_len} hex digits")
        return cls(str(ck.url), cls._filename(ck, where), cls._size(ck, where), algo, hexdigest)

    @staticmethod
    def _filename(ck: Any, where: str) -> str:
        filename = str(getattr(ck, "filename", None) or _url_filename(ck.url))
        if not _safe_component(filename):
            raise SpecError(f"{where}.url: file name {filename!r} is not a plain file name")
        return filename

    @staticmethod
    def _size(ck: Any, where: str) -> int | None:
        size = ck.size
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise SpecError(f"{where}.size: {size!r} is not a byte count")
        return size

    @property
    def limit(self) -> int:
        """Most bytes a download may write."""
        return self.size if self.size is not None else MAX_UNKNOWN_DOWNLOAD_BYTES

    def check_size(self, got: int, source: str) -> None:
        if self.size is not None and got != self.size:
            raise ChecksumError(
                f"size mismatch for {self.filename} from {source}: expected {self.size} bytes, "
                f"got {got} bytes; the file was deleted; retry, or {MIRROR_HINT}")

    def check_digest(self, got_hex: str, source: str) -> None:
        if self.hexdigest is not None and got_hex != self.hexdigest:
            raise ChecksumError(
                f"checksum mismatch for {self.filename} from {source}: expected "
                f"{self.algo}:{self.hexdigest}, got {self.algo}:{got_hex}; the file was "
                f"deleted; retry, or {MIRROR_HINT}")


def _verify_existing(path: Path, expected: _Expected) -> tuple[str, int]:
    """Checks a file already on disk: size from stat, then a full hash.

    Returns (hex digest, size in bytes) of what was read.
    """
    expected.check_size(path.stat().st_size, str(path))
    hasher = hashlib.new(expected.algo)
    size = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                hasher.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise FetchError(f"cannot read cached {path}: {exc.strerror or exc}") from None
    expected.check_size(size, str(path))  # the file changed since stat()
    hexdigest = hasher.hexdigest()
    expected.check_digest(hexdigest, str(path))
    return hexdigest, size


class _Sink:
    """Writes bytes to an open file while hashing them, never past a limit.

    Hashing is pipelined: chunks are hashed in order on a helper thread
    (hashlib releases the GIL) while the next ones are received and written,
    so verifying costs no extra time when the network is at least as fast as
    the hash. At most ``HASH_QUEUE_CHUNKS`` chunks wait to be hashed. Every
    ``FLUSH_BYTES`` the receiving thread also asks the kernel to write the
    file so far to disk (``fdatasync``), while the hash thread works through
    its queue: the final ``fsync`` that makes the download durable then has
    little left to write.
    """

    def __init__(self, f: BinaryIO, path: Path, expected: _Expected, source: str):
        self.f = f
        self.path = path
        self.expected = expected
        self.source = source
        self.hasher = hashlib.new(expected.algo)
        self.count = 0
        self.prefix = 0  # bytes taken over from an earlier .part and still in use
        self._hashing = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="hubexport-hash")
        self._pending: collections.deque[concurrent.futures.Future] = collections.deque()
        self._unflushed = 0  # bytes written since the last fdatasync

    def _drain(self, keep: int = 0) -> None:
        """Waits until at most ``keep`` chunks handed to the hash thread are not yet hashed."""
        while len(self._pending) > keep:
            self._pending.popleft().result()

    def _update(self, chunk: bytes) -> None:
        self._drain(keep=HASH_QUEUE_CHUNKS - 1)
        self._pending.append(self._hashing.submit(self.hasher.update, chunk))

    def restart(self) -> None:
        """Truncates the file and forgets everything written."""
        self._drain()
        self.f.seek(0)
        self.f.truncate()
        self.hasher = hashlib.new(self.expected.algo)
        self.count = 0
        self.prefix = 0

    def absorb_existing(self, n: int) -> None:
        """Hashes the first ``n`` bytes already in the file (a resumed prefix)."""
        self._drain()
        self.f.seek(0)
        left = n
        while left:
            chunk = self.f.read(min(CHUNK_BYTES, left))
            if not chunk:
                break
            self.hasher.update(chunk)
            left -= len(chunk)
        self.count = self.prefix = n - left
        self.f.seek(self.count)
        self.f.truncate()

    def write(self, chunk: bytes) -> None:
        if self.count + len(chunk) > self.expected.limit:
            if self.expected.size is not None:
                raise ChecksumError(
                    f"size mismatch for {self.expected.filename} from {self.source}: expected "
                    f"{self.expected.size} bytes, got more; the file was deleted; retry, or "
                    f"{MIRROR_HINT}")
            raise FetchError(f"{self.source} sent more than {self.expected.limit} bytes; "
                             f"pin checkpoint.size in the spec or {MIRROR_HINT}")
        try:
            self.f.write(chunk)
            self._unflushed += len(chunk)
            if self._unflushed >= FLUSH_BYTES:
                self.f.flush()
                os.fdatasync(self.f.fileno())
                self._unflushed = 0
        except OSError as exc:
            raise _PartWriteError.of(self.path, exc) from None
        self._update(chunk)
        self.count += len(chunk)

    def finish(self) -> tuple[str, int]:
        """Flushes to disk and checks size and digest; returns (hex digest, size in bytes)."""
        self._drain()
        try:
            self.f.flush()
            os.fsync(self.f.fileno())
        except OSError as exc:
            raise _PartWriteError.of(self.path, exc) from None
        self.expected.check_size(self.count, self.source)
        hexdigest = self.hasher.hexdigest()
        self.expected.check_digest(hexdigest, self.source)
        return hexdigest, self.count


class _PartWriteError(FetchError):
    """Writing the partial download failed (disk full, file too large, I/O error).

    The ``.part`` file is deleted: on a full disk keeping it would keep the
    disk full, and its last chunk may be incomplete.
    """

    @classmethod
    def of(cls, part: Path, exc: OSError) -> "_PartWriteError":
        hint = ("free some space there, or use --cache-dir / HUBEXPORT_CACHE on another disk"
                if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
                else "check the cache directory")
        return cls(f"cannot write {part}: {exc.strerror or exc}; the partial download was "
                   f"deleted; {hint}, then retry")


@contextlib.contextmanager
def _part_file(part: Path, fresh: bool) -> Iterator[BinaryIO]:
    """Opens ``part`` for read/write (created if missing, emptied if fresh).

    Deletes the file if a ChecksumError escapes, since its bytes are bad, or
    a _PartWriteError, since the disk cannot hold it.
    """
    try:
        fd = os.open(part, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if fresh else 0), 0o644)
    except OSError as exc:
        raise FetchError(f"cannot write {part}: {exc.strerror or exc}") from None
    f = os.fdopen(fd, "r+b")
    try:
        yield f
    except (ChecksumError, _PartWriteError):
        f.close()
        _unlink(part)
        raise
    except BaseException:
        empty = f.seek(0, os.SEEK_END) == 0
        f.close()
        if empty:
            _unlink(part)  # nothing worth resuming
        raise
    finally:
        f.close()


# --------------------------------------------------------------------------
# Local sources (file:// URLs and plain paths)
# --------------------------------------------------------------------------


def _local_path(source: str) -> Path | None:
    """Returns the local path a source names, or None for an http(s) URL."""
    scheme = urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        parts = urlsplit(source)
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"cannot fetch {source}: file:// URLs with a host are not supported")
        return Path(url2pathname(parts.path))
    if scheme == "" or (len(scheme) == 1 and sys.platform == "win32"):
        return Path(source).expanduser()
    raise FetchError(f"cannot fetch {source}: unsupported URL scheme {scheme!r} "
                     f"(use http, https, file or a local path)")


def _copy_local(src: Path, part: Path, expected: _Expected, show: bool) -> tuple[str, int]:
    """Copies a local file into ``part``, hashing while copying, then verifies.

    Returns (hex digest, size in bytes) of the copy.
    """
    source = str(src)
    if not src.is_file():
        raise FetchError(f"{source} does not exist or is not a file; check the mirror "
                         f"directory, or {MIRROR_HINT}")
    with _part_file(part, fresh=True) as f, _progress_bar(show, expected) as bar:
        sink = _Sink(f, part, expected, source)
        try:
            with open(src, "rb") as fin:
                while chunk := fin.read(CHUNK_BYTES):
                    sink.write(chunk)
                    bar.update(len(chunk))
        except OSError as exc:
            raise FetchError(f"cannot read {source}: {exc.strerror or exc}") from None
        return sink.finish()


# --------------------------------------------------------------------------
# HTTP downloads
# --------------------------------------------------------------------------


class _Transient(Exception):
    """A body-phase failure worth resuming after (dropped connection, short body)."""


def _http():
    """requests and urllib3, imported on first use: commands that find the tarball in the
    cache never pay for importing them (about 60 ms of start-up)."""
    import requests
    import urllib3

    return requests, urllib3


def _make_session() -> requests.Session:
    requests, _ = _http()
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=RETRIES,
        backoff_factor=BACKOFF,
        backoff_max=BACKOFF_MAX,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD"}),
        raise_on_status=False,
        raise_on_redirect=False,
        respect_retry_after_header=False,  # keep the total wait bounded
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = f"hubexport/{__version__} (+requests {requests.__version__})"
    session.headers["Accept-Encoding"] = "identity"  # hash the bytes as stored
    return session


def _check_redirect(from_url: str, to_url: str) -> None:
    """Refuses redirects to non-HTTP schemes and https -> http downgrades.

    Args:
        from_url: The URL that answered with a redirect.
        to_url: The absolute URL it redirects to.

    Raises:
        FetchError: The redirect would leave http(s) or drop TLS.
    """
    src = urlsplit(from_url).scheme.lower()
    dst = urlsplit(to_url).scheme.lower()
    if dst not in ("http", "https"):
        raise FetchError(f"refusing redirect from {from_url} to {to_url}: only http(s) "
                         f"redirects are followed; {MIRROR_HINT}")
    if src == "https" and dst != "https":
        raise FetchError(f"refusing redirect from {from_url} to insecure {to_url} "
                         f"(https to http); {MIRROR_HINT}")


def _oneline(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_request_error(exc: BaseException) -> str:
    """A short reason for a failed request (requests wraps urllib3's MaxRetryError)."""
    requests, urllib3 = _http()
    reason: BaseException = exc
    if exc.args and isinstance(exc.args[0], urllib3.exceptions.MaxRetryError):
        reason = exc.args[0].reason or exc.args[0]
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return "cannot resolve the host name"
    if isinstance(reason, urllib3.exceptions.NewConnectionError):  # before its base class
        text = _oneline(reason)
        return "connection failed: " + text.split("Failed to establish a new connection: ")[-1]
    if isinstance(reason, urllib3.exceptions.ConnectTimeoutError) or \
            isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"no connection within {CONNECT_TIMEOUT} s"
    if isinstance(reason, (urllib3.exceptions.ReadTimeoutError, TimeoutError)) or \
            isinstance(exc, requests.exceptions.ReadTimeout):
        return f"no response within {READ_TIMEOUT} s"
    return _oneline(reason, 200)


def _describe_body_error(exc: BaseException) -> str:
    """A short reason for a response body that stopped early."""
    requests, urllib3 = _http()
    if isinstance(exc, (urllib3.exceptions.ReadTimeoutError, TimeoutError,
                        requests.exceptions.Timeout)):
        return f"no data for {READ_TIMEOUT} s"
    if isinstance(exc, (urllib3.exceptions.ProtocolError, requests.exceptions.ChunkedEncodingError,
                        ConnectionError)):
        return "connection closed before the end of the body"
    return _oneline(exc, 160)


def _parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """Parses ``bytes FIRST-LAST/TOTAL``; returns None if absent or malformed."""
    if not value:
        return None
    m = _CONTENT_RANGE_RE.match(value)
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


class _Download:
    """One resumable, verified HTTP download of ``url`` into ``part``."""

    def __init__(self, url: str, part: Path, expected: _Expected, show: bool):
        self.url = url
        self.part = part
        self.expected = expected
        self.show = show

    def run(self) -> tuple[str, int]:
        """Downloads and verifies; returns (hex digest, size in bytes)."""
        expected = self.expected
        restarted_after_mismatch = False
        with _make_session() as session, _progress_bar(self.show, expected) as bar:
            self.session, self.bar = session, bar
            while True:
                with _part_file(self.part, fresh=False) as f:
                    self.sink = sink = _Sink(f, self.part, expected, self.url)
                    existing = f.seek(0, os.SEEK_END)
                    if expected.size is not None and existing > expected.size:
                        existing = 0  # not a prefix of the right file
                    if existing and not expected.pinned:
                        log.info("not resuming %s from byte %d: %s has no published checksum "
                                 "that could tell a stale prefix; starting at byte 0",
                                 self.part, existing, self.url)
                        existing = 0
                    if existing:
                        log.info("resuming %s at byte %d", self.url, existing)
                        sink.absorb_existing(existing)
                    else:
                        sink.restart()
                    bar.reset(total=expected.size)
                    bar.update(sink.count)
                    self._download_loop()
                    try:
                        return sink.finish()
                    except ChecksumError as exc:
                        if sink.prefix and not restarted_after_mismatch:
                            # The old .part prefix may have been bad: start over once.
                            log.warning("%s; the resumed partial file was bad, downloading "
                                        "again from byte 0", exc)
                            sink.restart()
                            restarted_after_mismatch = True
                            continue
                        raise

    def _download_loop(self) -> None:
        """Requests until the body is complete, resuming after transient failures."""
        failures = 0
        resumes = 0
        high_water = self.sink.count
        while True:
            if self.expected.size is not None and self.sink.count == self.expected.size:
                return
            try:
                self._attempt()
                return
            except _Transient as exc:
                if self.sink.count > high_water:
                    high_water = self.sink.count
                    failures = 0  # progress was made: only count failures in a row
                failures += 1
                resumes += 1
                if failures > RETRIES or resumes > MAX_RESUMES:
                    how = (f"{failures} times in a row without progress" if failures > RETRIES
                           else f"{resumes} times")
                    kept = ("is kept to resume next time" if self.expected.pinned else
                            "is kept (resumed only once the spec pins a checksum)")
                    raise FetchError(
                        f"download of {self.url} was interrupted {how} ({exc}); "
                        f"{self.part.name} {kept}; {MIRROR_HINT}") from None
                delay = min(BACKOFF * 2 ** (failures - 1), BACKOFF_MAX)
                log.warning("download of %s interrupted at byte %d (%s); retrying in %.2f s",
                            self.url, self.sink.count, exc, delay)
                time.sleep(delay)

    def _request(self, offset: int) -> tuple[requests.Response, str]:
        """GETs the URL (from ``offset``), following redirects by hand."""
        requests, urllib3 = _http()
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                resp = self.session.get(url, headers=headers, stream=True, allow_redirects=False,
                                        timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
            except requests.exceptions.SSLError as exc:
                raise FetchError(f"TLS error fetching {url}: {_oneline(exc)}; "
                                 f"{MIRROR_HINT}") from None
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise FetchError(f"cannot download {url}: {_describe_request_error(exc)} "
                                 f"({RETRIES + 1} attempts); check the network, or "
                                 f"{MIRROR_HINT}") from None
            if resp.status_code in _REDIRECT_CODES and resp.headers.get("Location"):
                target = urljoin(url, resp.headers["Location"])
                resp.close()
                _check_redirect(url, target)
                log.info("%s redirects to %s", url, target)
                url = target
                continue
            return resp, url
        raise FetchError(f"too many redirects (> {MAX_REDIRECTS}) fetching {self.url}; "
                         f"{MIRROR_HINT}")

    def _http_error(self, resp: requests.Response, url: str) -> FetchError:
        code, reason = resp.status_code, (resp.reason or "").strip()
        where = url if url == self.url else f"{url} (redirected from {self.url})"
        if code in (404, 410):
            return FetchError(f"HTTP {code} {reason} for {where}: the file is not there; "
                              f"check the spec's URL, or {MIRROR_HINT}")
        if code in (401, 403):
            return FetchError(f"HTTP {code} {reason} for {where}: access denied; {MIRROR_HINT}")
        if code in RETRY_STATUSES:
            return FetchError(f"HTTP {code} {reason} for {where} (after {RETRIES + 1} attempts); "
                              f"try again later, or {MIRROR_HINT}")
        if code >= 500:
            return FetchError(f"HTTP {code} {reason} for {where}; try again later, or "
                              f"{MIRROR_HINT}")
        return FetchError(f"HTTP {code} {reason} for {where}; {MIRROR_HINT}")

    def _attempt(self) -> None:
        """One request; raises _Transient if the body ended early."""
        requests, urllib3 = _http()
        sink, bar = self.sink, self.bar
        offset = sink.count
        resp, url = self._request(offset)
        with resp:
            status = resp.status_code
            if status == 416 and offset:
                crange = _parse_416_total(resp.headers.get("Content-Range"))
                if crange == offset:
                    return  # the server says the file is exactly what we hold
                sink.restart()
                bar.reset(total=self.expected.size)
                raise _Transient(f"server refused to resume at byte {offset} (HTTP 416); "
                                 f"restarting from byte 0")
            if status == 206:
                crange = _parse_content_range(resp.headers.get("Content-Range"))
                if crange is None or crange[0] != offset:
                    sink.restart()
                    bar.reset(total=self.expected.size)
                    raise _Transient(f"server answered Range bytes={offset}- with Content-Range "
                                     f"{resp.headers.get('Content-Range')!r}; restarting from "
                                     f"byte 0")
                total = crange[2]
                if total is not None:
                    sink.expected.check_size(total, url)
            elif status == 200:
                if offset:
                    log.info("%s ignored the Range request; restarting from byte 0", url)
                    sink.restart()
                    bar.reset(total=self.expected.size)
            else:
                raise self._http_error(resp, url)

            start = sink.count
            clen = _content_length(resp)
            if status == 200 and clen is not None:
                # The server announces the whole file's length: fail before downloading.
                self.expected.check_size(clen, url)
            if self.expected.size is None and clen is not None and bar.total is None:
                bar.reset(total=start + clen)
                bar.update(start)
            stream = resp.raw.stream(CHUNK_BYTES, decode_content=False)
            while True:
                try:
                    chunk = next(stream)
                except StopIteration:
                    break
                except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                    raise _Transient(_describe_body_error(exc)) from None
                sink.write(chunk)
                bar.update(len(chunk))
            got = sink.count - start
            if clen is not None and got != clen:
                raise _Transient(f"received {got} of {clen} bytes announced by Content-Length")
            # A complete response: a size mismatch now is final (checked in finish()).


def _parse_416_total(value: str | None) -> int | None:
    """Parses the ``bytes */TOTAL`` of a 416 reply; None if absent or malformed."""
    m = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", value or "")
    return int(m.group(1)) if m else None


def _content_length(resp: requests.Response) -> int | None:
    value = resp.headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


# --------------------------------------------------------------------------
# Spec fields
# --------------------------------------------------------------------------


def _spec_member(spec: Any) -> str:
    """The member name, normalised; refuses names that could leave dest_dir."""
    raw = str(spec.checkpoint.member)
    norm = posixpath.normpath(raw) if raw else ""
    if not raw or raw.startswith("/") or norm in (".", "") or ".." in norm.split("/") \
            or "\\" in raw or "\0" in raw:
        raise SpecError(f"spec {getattr(spec, 'name', '?')}: checkpoint.member: {raw!r} is not "
                        f"a relative path inside the tarball")
    return norm


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _url_filename(url: str) -> str:
    name = posixpath.basename(urlsplit(url).path)
    if not name:
        raise FetchError(f"{url} does not end in a file name")
    return name


def _safe_component(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name \
        and "\0" not in name


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create directory {path}: {exc.strerror or exc}; set "
                         f"HUBEXPORT_CACHE to a writable directory") from None


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _want_progress(progress: bool | None) -> bool:
    if progress is not None:
        return bool(progress)
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def _progress_bar(show: bool, expected: _Expected) -> Iterator[tqdm]:
    bar = tqdm(total=expected.size, desc=expected.filename, unit="B", unit_scale=True,
               unit_divisor=1024, disable=not show, file=sys.stderr, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


@contextlib.contextmanager
def _locked(lock_path: Path, what: str) -> Iterator[None]:
    """Holds an exclusive inter-process lock, logging if it has to wait."""
    lock = filelock.FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        log.info("waiting for another process's %s (%s)", what, lock_path)
        try:
            lock.acquire(timeout=LOCK_TIMEOUT)
        except filelock.Timeout:
            raise FetchError(f"timed out after {LOCK_TIMEOUT} s waiting for another process's "
                             f"{what}; if none is running, delete {lock_path}") from None
    except OSError as exc:
        raise FetchError(f"cannot lock {lock_path}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        lock.release()
