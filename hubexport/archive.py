"""Safe extraction of a TF checkpoint from a tarball (part of pipeline stage 2).

Entry point: :func:`extract_checkpoint` (tarball, member name, destination
-> the path to hand to TensorFlow's checkpoint reader). :mod:`hubexport.fetch`
calls it on a verified tarball; nothing here downloads, hashes or imports
TensorFlow.

The archive tells the checkpoint's format; the member name is the same
spec field for both:

* **TF V1** (Inception, ResNet tarballs): ``<member>`` is a regular file,
  the whole checkpoint. It appears at ``<dest>/<member>``.
* **TF V2** (MobileNet ``.tgz`` files, NASNet, PNASNet): ``<member>`` is a
  prefix; the checkpoint is ``<member>.index`` plus its data shards
  ``<member>.data-KKKKK-of-NNNNN`` (TensorFlow's naming: two five-digit
  numbers, ``tensorflow/core/util/tensor_bundle/naming.cc``). They appear
  together in the directory ``<dest>/<member>/`` as
  ``<base>.index``, ``<base>.data-...`` (``<base>`` = the last component of
  ``<member>``) and a TF checkpoint state file ``checkpoint`` naming
  ``<base>``, so that the directory is an ordinary TF checkpoint directory
  (``tf.train.latest_checkpoint`` and ``tf.train.load_checkpoint`` accept
  it) and ``<dest>/<member>/<base>`` is the prefix. Other members of the
  tarball (``<member>.meta``, ``*_frozen.pb``, ``*.tflite``, ``*_info.txt``,
  ``*_eval.pbtxt``) are never extracted.

A member that is a regular file wins: an archive holding ``<member>`` is V1
even if it also holds ``<member>.index``.

Shard rules (V2): every data shard name ``<member>.data-KKKKK-of-NNNNN``
carries the same count NNNNN, with 1 <= NNNNN <= :data:`MAX_SHARDS`; every
shard number 0 <= KKKKK < NNNNN occurs exactly once. Names of another shape
(``<member>.data-0-of-1``) are not shards and are not extracted. That the
count agrees with the one recorded inside ``.index`` is checked by
TensorFlow when the checkpoint is read (:mod:`hubexport.checkpoint`).

Safety rules (both formats), checked on every header before anything is
written: the archive is refused if any member -- the checkpoint's or not --
has an absolute path or a ``..`` component, is a symbolic or hard link, a
device, FIFO or sparse file, or repeats a name (after normalising ``./``),
or if the regular members' sizes add up to more than the bound (bytes):
``MEMBER_SIZE_FACTOR`` x the tarball's pinned size, else
``MAX_UNKNOWN_MEMBER_BYTES``. Sizes come from the headers, so a
decompression bomb is refused after inflating at most the bound. Files are
written with tarfile's ``'data'`` extraction filter into a temporary
directory ``<dest>/.extract-*`` and appear by one ``rename``: the V1 file,
or the V2 directory with every file of the checkpoint. A final path
therefore holds a complete checkpoint or nothing; the temporary directory
is removed on success and failure alike (a killed process leaves it behind:
callers holding a lock on ``dest`` may delete ``dest/.extract-*``, as
:func:`hubexport.fetch.fetch_source` does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gzip
import lzma
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Iterator

from hubexport.errors import ArchiveError

__all__ = ["extract_checkpoint", "TEMP_PREFIX", "STATE_FILE", "MEMBER_SIZE_FACTOR",
           "MAX_UNKNOWN_MEMBER_BYTES", "MAX_SHARDS"]

# Size bounds (bytes). Checkpoints barely compress (float32 weights), so an
# archive inflating to more than MEMBER_SIZE_FACTOR x its own size is
# refused; MAX_UNKNOWN_MEMBER_BYTES applies when the tarball's size is not
# pinned (the TF-Slim tarballs are < 300 MB).
MEMBER_SIZE_FACTOR = 4
MAX_UNKNOWN_MEMBER_BYTES = 2 << 30
# Most data shards of a V2 checkpoint (TF-Slim's have 1; TensorFlow's
# sharded saver writes one per device).
MAX_SHARDS = 256
# Name prefix of the temporary directories (and set-aside stale entries)
# inside the destination.
TEMP_PREFIX = ".extract-"
# TensorFlow's checkpoint state file, written into a V2 checkpoint's directory.
STATE_FILE = "checkpoint"
CHUNK_BYTES = 1 << 20  # bytes per read when draining the archive's end

_SHARD_RE = r"\.data-(\d{5})-of-(\d{5})"


def extract_checkpoint(tarball: str | os.PathLike, member: str, dest_dir: str | os.PathLike,
                       *, tarball_size: int | None = None, reuse: bool = False) -> Path:
    """Safely extracts exactly the checkpoint's files from a tarball.

    See the module docstring for the formats, the shard rules and the
    safety rules. With ``reuse``, a complete extraction already in
    ``dest_dir`` is returned without opening the tarball: a V1 file at
    ``<dest>/<member>``, or a V2 directory there holding ``<base>.index``,
    the state file and data shards complete by the shard rules (the
    directory only ever appears complete, so anything less was damaged and
    is extracted again). An entry in the way of a new extraction (a stale
    file or incomplete directory at the final path) is renamed aside into a
    ``.extract-*`` name first and deleted after the rename.

    Args:
        tarball: Path of a tar archive (plain, gzip, bz2 or xz).
        member: The checkpoint's name inside the archive: the V1 file or
            the V2 prefix, a relative POSIX path (``./`` prefixes of the
            archive's names are ignored).
        dest_dir: Directory to extract into (created if missing; removed
            again if extraction fails and it is still empty).
        tarball_size: The tarball's pinned size in bytes (sets the bound),
            or None (bound ``MAX_UNKNOWN_MEMBER_BYTES``).
        reuse: Return a complete earlier extraction instead of extracting.

    Returns:
        The path to pass to ``tf.train.load_checkpoint``: ``<dest>/<member>``
        (the V1 file) or ``<dest>/<member>/<base>`` (the V2 prefix; its files
        are ``<prefix>.index`` and ``<prefix>.data-KKKKK-of-NNNNN``).

    Raises:
        ArchiveError: The archive is not a tar, is empty, truncated or
            damaged, breaks a safety or shard rule, lacks the checkpoint
            (V1 file, or V2 index or shard), or the disk refuses the files.
            One line naming the tarball.
        ValueError: ``member`` is not a relative path without ``..``
            (or holds a backslash or a control character).
    """
    tarball = Path(tarball)
    dest = Path(dest_dir)
    member = _normalise_member(member)
    if reuse:
        done = _complete_extraction(dest, member)
        if done is not None:
            return done
    bound = MEMBER_SIZE_FACTOR * tarball_size if tarball_size else MAX_UNKNOWN_MEMBER_BYTES
    created = not dest.exists()
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=dest))
    except OSError as exc:
        raise ArchiveError(f"cannot create a directory in {dest}: {exc.strerror or exc}; set "
                           f"HUBEXPORT_CACHE to a writable directory") from None
    try:
        with _archive_errors(tarball, member):
            with tarfile.open(tarball, mode="r:*", errorlevel=2) as tf:
                plan = _scan_archive(tf, tarball, member, bound)
                for info, name in sorted(plan.files, key=lambda f: f[0].offset):
                    tf.extract(info.replace(name=name, deep=False), path=tmp, set_attrs=True,
                               filter="data")
            for info, name in plan.files:
                got = tmp / name
                if got.is_symlink() or not got.is_file() or got.stat().st_size != info.size:
                    raise ArchiveError(f"{tarball}: extracting {info.name!r} did not produce a "
                                       f"{info.size}-byte file; the archive may be damaged")
            target = dest / member
            target.parent.mkdir(parents=True, exist_ok=True)
            if plan.format == "v1":
                _rename_into_place(tmp / member, target, dest)
                result = target
            else:
                base = posixpath.basename(member)
                quoted = base.replace('"', '\\"')  # a text-format proto string
                (tmp / STATE_FILE).write_text(f'model_checkpoint_path: "{quoted}"\n'
                                              f'all_model_checkpoint_paths: "{quoted}"\n',
                                              encoding="utf-8")
                _rename_into_place(tmp, target, dest)
                result = target / base
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                dest.rmdir()  # only if still empty
        raise
    shutil.rmtree(tmp, ignore_errors=True)  # V1: the emptied temporary directory
    return result


# --------------------------------------------------------------------------
# What the archive holds
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What to extract: the format and (header, flat file name in the temp dir) pairs."""

    format: str  # "v1" or "v2"
    files: list[tuple[tarfile.TarInfo, str]]


def _normalise_member(member: str) -> str:
    raw = str(member)
    norm = posixpath.normpath(raw) if raw else ""
    if not raw or raw.startswith("/") or norm in (".", "") or ".." in norm.split("/") \
            or "\\" in raw or any(ord(c) < 32 for c in raw):
        raise ValueError(f"checkpoint member {raw!r} is not a relative path inside the tarball")
    return norm


def _member_kind(info: tarfile.TarInfo) -> str | None:
    """Returns why a member type is refused, or None if it is a file or directory."""
    if info.issym():
        return "a symbolic link"
    if info.islnk():
        return "a hard link"
    if info.ischr() or info.isblk():
        return "a device"
    if info.isfifo():
        return "a FIFO"
    if info.issparse():
        return "a sparse file"
    if info.isreg() or info.isdir():
        return None
    return f"of unsupported type {info.type!r}"


def _scan_archive(tf: tarfile.TarFile, tarball: Path, member: str, bound: int) -> _Plan:
    """Reads every header once, refusing unsafe archives; says what to extract.

    Sizes are checked from the headers before the data behind them is read,
    so a decompression bomb is refused after inflating at most ``bound`` bytes.
    """
    files: dict[str, tarfile.TarInfo] = {}
    seen: set[str] = set()
    ours = re.compile(re.escape(member) + r"(\.index|" + _SHARD_RE + r")?")
    total = 0
    while True:
        info = tf.next()
        if info is None:
            break
        name = info.name
        if name.startswith("/") or "\0" in name:
            raise ArchiveError(f"{tarball}: refusing unsafe member {name!r} (absolute path)")
        if ".." in name.split("/"):
            raise ArchiveError(f"{tarball}: refusing unsafe member {name!r} ('..' leaves the "
                               f"destination)")
        kind = _member_kind(info)
        if kind is not None:
            raise ArchiveError(f"{tarball}: refusing member {name!r}: it is {kind}")
        norm = posixpath.normpath(name)
        if norm in seen and not info.isdir():
            raise ArchiveError(f"{tarball}: refusing archive: member name {norm!r} occurs twice")
        seen.add(norm)
        if info.isreg():
            total += info.size
            if total > bound:
                raise ArchiveError(
                    f"{tarball}: refusing member {name!r}: the archive unpacks to more than "
                    f"{bound} bytes (possible decompression bomb)")
            files[norm] = info
        elif ours.fullmatch(norm):
            raise ArchiveError(f"{tarball}: member {norm!r} is not a regular file")
    _drain(tf)
    if not seen:
        raise ArchiveError(f"{tarball}: empty tar archive (no members); delete it and fetch again")
    if member in files:
        return _Plan("v1", [(files[member], member)])
    return _Plan("v2", _v2_files(files, tarball, member))


def _v2_files(files: dict[str, tarfile.TarInfo], tarball: Path,
              member: str) -> list[tuple[tarfile.TarInfo, str]]:
    """The index and data shards of V2 checkpoint ``member``, by the shard rules."""
    base = posixpath.basename(member)
    index = files.get(member + ".index")
    shard_re = re.compile(re.escape(member) + _SHARD_RE)
    shards: dict[int, tarfile.TarInfo] = {}
    counts: set[int] = set()
    for norm, info in files.items():
        m = shard_re.fullmatch(norm)
        if m:
            shards[int(m.group(1))] = info
            counts.add(int(m.group(2)))
    pattern = f"{member}.data-NNNNN-of-NNNNN"
    if index is None and not shards:
        names = list(files)
        shown = ", ".join(repr(n) for n in names[:5]) or "only directories"
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        raise ArchiveError(f"{tarball}: no member {member!r}; the archive holds {shown}{more}, "
                           f"and no V2 checkpoint '{member}.index' + '{pattern}' either; "
                           f"check checkpoint.member in the spec")
    if index is None:
        raise ArchiveError(f"{tarball}: V2 checkpoint {member!r} lacks its index "
                           f"'{member}.index' (the archive has its data shards); the archive "
                           f"is incomplete: delete it and fetch again")
    if not shards:
        raise ArchiveError(f"{tarball}: V2 checkpoint {member!r} has '{member}.index' but no "
                           f"data shard '{pattern}'; the archive is incomplete: delete it and "
                           f"fetch again")
    if len(counts) > 1:
        shown = ", ".join(f"{n:05d}" for n in sorted(counts))
        raise ArchiveError(f"{tarball}: refusing V2 checkpoint {member!r}: its data shards "
                           f"disagree about their count (-of-{shown})")
    (count,) = counts
    if not 1 <= count <= MAX_SHARDS:
        raise ArchiveError(f"{tarball}: refusing V2 checkpoint {member!r}: {count} data shards "
                           f"(at most {MAX_SHARDS}, at least 1)")
    beyond = sorted(k for k in shards if k >= count)
    if beyond:
        raise ArchiveError(f"{tarball}: refusing V2 checkpoint {member!r}: data shard "
                           f"'{member}.data-{beyond[0]:05d}-of-{count:05d}' is numbered beyond "
                           f"the count")
    missing = [k for k in range(count) if k not in shards]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ArchiveError(f"{tarball}: V2 checkpoint {member!r} lacks data shard "
                           f"'{member}.data-{missing[0]:05d}-of-{count:05d}'{more}; the archive "
                           f"is incomplete: delete it and fetch again")
    return [(index, base + ".index")] + [
        (shards[k], f"{base}.data-{k:05d}-of-{count:05d}") for k in range(count)]


def _drain(tf: tarfile.TarFile, limit: int = 16 << 20) -> None:
    """Reads what follows the end-of-archive marker (at most ``limit`` bytes).

    Reaching the end of a compressed stream makes gzip/bz2/xz check their
    trailer, which detects a file truncated after the last member.
    """
    fileobj = tf.fileobj
    left = limit
    while left > 0:
        chunk = fileobj.read(min(left, CHUNK_BYTES))
        if not chunk:
            return
        left -= len(chunk)


# --------------------------------------------------------------------------
# The destination
# --------------------------------------------------------------------------


def _complete_extraction(dest: Path, member: str) -> Path | None:
    """The checkpoint path of a complete earlier extraction in ``dest``, or None."""
    target = dest / member
    if target.is_symlink():
        return None
    if target.is_file():
        return target
    if not target.is_dir():
        return None
    base = posixpath.basename(member)
    try:
        names = {p.name for p in target.iterdir() if p.is_file() and not p.is_symlink()}
    except OSError:
        return None
    if base + ".index" not in names or STATE_FILE not in names:
        return None
    shard_re = re.compile(re.escape(base) + _SHARD_RE)
    found = [tuple(int(g) for g in m.groups()) for m in map(shard_re.fullmatch, names) if m]
    counts = {n for _, n in found}
    if len(counts) != 1:
        return None
    (count,) = counts
    if not 1 <= count <= MAX_SHARDS or sorted(k for k, _ in found) != list(range(count)):
        return None
    return target / base


def _rename_into_place(src: Path, target: Path, dest: Path) -> None:
    """Renames ``src`` to ``target``, replacing whatever is there.

    A file replacing a file (or nothing) is one atomic ``os.replace``. A
    directory cannot replace a non-empty directory in one rename, so an
    entry in the way of a directory (or a directory in the way of a file) is
    renamed aside first, to a name starting with ``TEMP_PREFIX``, and deleted
    after: if the process dies between the two renames, ``target`` is absent
    (not stale, not partial) and the set-aside entry is cleaned up like any
    temporary directory.
    """
    in_the_way = target.is_symlink() or target.exists()
    if not in_the_way or (not src.is_dir() and (target.is_symlink() or not target.is_dir())):
        os.replace(src, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX + "old-", dir=dest))
    os.rename(target, aside / "entry")
    os.rename(src, target)
    shutil.rmtree(aside, ignore_errors=True)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def _oneline(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _archive_errors(tarball: Path, member: str) -> Iterator[None]:
    """Turns tarfile/decompressor/disk failures into one-line ArchiveErrors."""
    try:
        yield
    except ArchiveError:
        raise
    except FileNotFoundError as exc:
        if exc.filename is not None and Path(exc.filename) == tarball:
            raise ArchiveError(f"{tarball}: no such tarball") from None
        raise ArchiveError(f"{tarball}: cannot extract {member!r}: "
                           f"{exc.strerror or _oneline(exc, 160)}") from None
    except (EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
        raise ArchiveError(f"{tarball}: truncated or damaged compressed data "
                           f"({_oneline(exc, 120)}); delete it and fetch again") from None
    except tarfile.ReadError as exc:
        text = str(exc)
        if "empty file" in text:
            raise ArchiveError(f"{tarball}: empty file, not a tar archive") from None
        if "could not be opened successfully" in text or "not a gzip file" in text \
                or "bad checksum" in text or "invalid header" in text:
            raise ArchiveError(f"{tarball}: not a tar archive (or a damaged one)") from None
        raise ArchiveError(f"{tarball}: truncated or damaged archive ({_oneline(exc, 120)}); "
                           f"delete it and fetch again") from None
    except tarfile.FilterError as exc:
        raise ArchiveError(f"{tarball}: refusing member {member!r}: {_oneline(exc, 160)}") from None
    except tarfile.TarError as exc:
        raise ArchiveError(f"{tarball}: cannot extract {member!r}: {_oneline(exc, 160)}") from None
    except OSError as exc:
        hint = ("; free some space in the cache, or use --cache-dir / HUBEXPORT_CACHE on "
                "another disk" if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else "")
        raise ArchiveError(f"{tarball}: cannot extract {member!r}: "
                           f"{exc.strerror or _oneline(exc, 160)}{hint}") from None
