"""The publish stage: lay out what ``build`` wrote as a module registry.

Public entry point: :func:`publish`. Also public, for ``serve`` and
``verify``: :func:`read_registry` (load and check a registry),
:func:`module_files` (the SavedModel paths of a module directory),
:func:`docs_path`, :func:`archive_path`, :func:`variant_layout`,
:func:`variant_dir_files`, :func:`is_tfjs_file`, :func:`archive_manifest`
(hash the members of an archive), :func:`write_archive` and
:func:`index_digest`.

Registry layout (``DIR`` = ``--registry``)::

    DIR/google/imagenet/inception_v2/classification/3/         the module
    DIR/google/imagenet/inception_v2/classification/3.tar.gz   its archive
    DIR/assets/docs/google/models/imagenet/inception_v2/classification/3.md
    DIR/index.json                                             every module

and, for the deployment variants ``build --deploy`` wrote (each under its
own handle, see ``hubexport/data/deploy.yaml``), the build output's layout::

    DIR/google/tfjs-model/imagenet/inception_v2/classification/3/default/1/        model.json, shards
    DIR/google/tfjs-model/imagenet/inception_v2/classification/3/default/1.tar.gz  its archive
    DIR/google/lite-model/imagenet/inception_v2/classification/5/default/1.tflite  the file
    DIR/assets/docs/google/models/tfjs-model/imagenet/.../3/default/1.md           its card

The docs follow tfhub.dev's layout (tensorflow/hub
``docs/writing_model_documentation.md``:
``assets/docs/<publisher>/models/<model name>/<version>.md``, "model name
with slashes encoded as sub-path"): the publisher is the handle's first part
and the model name the rest without the version, e.g.
``imagenet/inception_v2/classification``.

``index.json``::

    {"registry_format": 1, "generator": "hubexport 0.1.0",
     "modules": [ENTRY, ...],            # sorted by module_handle
     "digest": "sha256:HEX"}             # of the canonical JSON of "modules"

    ENTRY = {"module_handle": "google/imagenet/inception_v2/classification/3",
             "handle": "google/imagenet/inception_v2/classification",
             "version": 3, "format": "hub" | "saved_model_2",
             "architecture", "kind", "input_size", "image_size" (pixels),
             "signatures": [...],
             "archive": "google/.../3.tar.gz", "size": archive bytes,
             "sha256": archive sha256 (hex),
             "module_dir": "google/.../3", "module_size": bytes of its files,
             "files": {"saved_model.pb": sha256, ...},
             "doc": "assets/docs/google/models/.../3.md", "doc_sha256": sha256,
             "source": {"url", "filename", "size": tarball bytes or null,
                        "checksum": "ALGO:HEX", "member", "pinned": bool},
             "hubexport": version that published it,
             "tensorflow": version that wrote the module}

A variant's ENTRY has ``format`` ``"tfjs"`` or ``"tflite"``, the same
``module_handle``, ``handle``, ``version``, ``architecture``, ``kind``,
``image_size``, ``size``, ``sha256``, ``module_size``, ``files``, ``doc``,
``doc_sha256``, ``source`` (its parent's), ``hubexport`` and ``tensorflow``
(the converter's), and ``parent_module`` (the module handle it was
converted from), ``variant`` and ``quantization`` (deploy.yaml's),
``input`` and ``output`` (``{"name", "shape", "dtype"}``), ``probe`` (its
measured difference from the parent, as its card states it) and ``file``
(the file or directory name). ``archive`` is what a client downloads: the
``.tar.gz`` of a TF.js directory (``module_dir`` is that directory), or the
``.tflite`` file itself (``module_dir`` null, ``files`` the one file).
A variant is published whether or not its parent module is (a registry of
TF.js models only is fine); its files must be those its stamp records.

``source`` is the checkpoint tarball the module was built from, as the
build stamp records it (:func:`hubexport.build.build_record`): for a spec
with a published checksum, ``checksum`` (and ``size``) as the spec pins them
and ``"pinned": true``; for one without (``checksum: unpublished``,
``build --allow-unpinned``), ``checksum`` is ``"sha256:HEX"`` and ``size``
the byte count of the tarball actually used, and ``"pinned": false``.
Stamps written before hubexport knew unpinned sources have no ``pinned``;
their sources were all pinned, and the entry says so.

Archives hold only the paths a SavedModel may hold (FACTS.md), or a TF.js
model's ``model.json`` and shards, and are reproducible: members sorted by
path, directories before their contents, mtime 0, mode 0644/0755, uid/gid
0, no owner names, ustar format (no pax headers), gzip level 6 with mtime
0 and no file name in the header. The one TensorFlow-written file that is never deterministic is ``fingerprint.pb``
(TF2 SavedModels): its ``uuid`` field (7) is random on every save, so
publishing clears that field, and only that field; the hashes it keeps
describe the same files (README, "Reproducible archives").

Released versions are immutable: publishing the same content (same files,
same card) again is a no-op, different content over a published version is
refused unless ``force``. Before it writes anything, publish checks the
registry: an edited or unreadable ``index.json``, a missing file, or a file
whose size or sha256 disagrees with the index is refused (``--force`` may
replace damaged versions that it is publishing anew, nothing else). The
index is written last, by rename, so readers never see a half-written one.
This module does not import TensorFlow.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
from pathlib import Path

import filelock

from hubexport import __version__
from hubexport.errors import PublishError, UsageError
from hubexport.hashing import sha256_file

log = logging.getLogger(__name__)

REGISTRY_FORMAT = 1
INDEX = "index.json"
LOCK = ".hubexport-publish.lock"
#: Fixed member mtime of every archive (seconds since the epoch).
ARCHIVE_MTIME = 0
#: zlib level of the archives (a changed level changes every archive's bytes).
GZIP_LEVEL = 6
#: Bytes read per chunk when copying and hashing.
CHUNK = 1 << 20

# The paths a published SavedModel may hold (FACTS.md, "Documentation cards").
_TOP_FILES = frozenset({"saved_model.pb", "saved_model.pbtxt", "tfhub_module.pb",
                        "keras_metadata.pb", "fingerprint.pb"})
_FREE_DIRS = frozenset({"assets", "assets.extra"})  # any files below these
_VARIABLES = re.compile(r"variables\.(index|data-\d{5}-of-\d{5})")
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_VERSION = re.compile(r"[1-9][0-9]{0,8}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ENTRY_KEYS = ("module_handle", "handle", "version", "format", "architecture", "kind",
               "input_size", "image_size", "signatures", "archive", "size", "sha256",
               "module_dir", "module_size", "files", "doc", "doc_sha256", "source",
               "hubexport", "tensorflow")
#: Index formats of modules, and of deployment variants (:mod:`hubexport.deploy`).
MODULE_FORMATS = ("hub", "saved_model_2")
VARIANT_FORMATS = ("tflite", "tfjs")
_VARIANT_KEYS = ("module_handle", "handle", "version", "format", "parent_module", "variant",
                 "quantization", "architecture", "kind", "image_size", "input", "output",
                 "probe", "file", "archive", "size", "sha256", "module_dir", "module_size",
                 "files", "doc", "doc_sha256", "source", "hubexport", "tensorflow")
# The files of a TF.js graph model (tfjs-converter's write_weights.py names the shards).
_TFJS_FILE = re.compile(r"model\.json|group\d+-shard\d+of\d+\.bin")
# Field number of FingerprintDef.uuid (tensorflow/core/protobuf/fingerprint.proto).
_FINGERPRINT_UUID_FIELD = 7


# --------------------------------------------------------------------------
# Paths.


def split_module_handle(module_handle):
    """Splits and checks ``PUBLISHER/MODEL.../VERSION``.

    Args:
      module_handle: str, e.g. ``google/imagenet/inception_v2/classification/3``.

    Returns:
      (publisher, model name, version str), e.g. ``("google",
      "imagenet/inception_v2/classification", "3")``.

    Raises:
      ValueError: not a handle of names (letters, digits, ``_ . -``, not
        starting with ``.`` or ``-``) ending in a positive version number.
    """
    parts = module_handle.split("/") if isinstance(module_handle, str) else []
    if (len(parts) < 3 or not all(_PART.fullmatch(p) for p in parts[:-1])
            or not _VERSION.fullmatch(parts[-1])):
        raise ValueError("%r is not a module handle PUBLISHER/NAME/VERSION" % (module_handle,))
    return parts[0], "/".join(parts[1:-1]), parts[-1]


def archive_path(module_handle):
    """Registry-relative path (str) of a module's archive: ``HANDLE/VERSION.tar.gz``."""
    split_module_handle(module_handle)
    return module_handle + ".tar.gz"


def docs_path(module_handle):
    """Registry-relative path (str) of a module's card in tfhub.dev's docs layout.

    ``google/imagenet/inception_v2/classification/3`` ->
    ``assets/docs/google/models/imagenet/inception_v2/classification/3.md``.
    """
    publisher, model, version = split_module_handle(module_handle)
    return "assets/docs/%s/models/%s/%s.md" % (publisher, model, version)


def variant_layout(fmt):
    """How a deployment variant of format ``fmt`` lies in a registry.

    Args:
      fmt: a name of :data:`VARIANT_FORMATS`.

    Returns:
      (download suffix str, is a directory bool): a directory variant (TF.js,
      whose deploy.yaml suffix is empty) lies at ``HANDLE/VERSION/`` with its
      reproducible archive ``HANDLE/VERSION.tar.gz``; a file variant
      (TFLite) is the file ``HANDLE/VERSION<suffix>`` itself, e.g.
      ``.tflite``.
    """
    from hubexport.deploy import variant_table

    suffix = variant_table()[fmt]["suffix"]
    return (suffix, False) if suffix else (".tar.gz", True)


def is_tfjs_file(name):
    """True if ``name`` (str) is a file name of a TF.js graph model (``model.json``,
    ``groupG-shardNofM.bin``); never a path with a directory part."""
    return isinstance(name, str) and bool(_TFJS_FILE.fullmatch(name))


def _member_allowed(fmt):
    """The rule (rel, is_dir) -> bool for the paths a module or variant of ``fmt`` holds."""
    if fmt in VARIANT_FORMATS:
        return lambda rel, is_dir: not is_dir and is_tfjs_file(rel)
    return _allowed


# --------------------------------------------------------------------------
# Module contents.


def module_files(module_dir):
    """Lists a module directory, refusing anything a SavedModel may not hold.

    Args:
      module_dir: path of the module directory.

    Returns:
      (files, dirs): sorted lists of POSIX paths relative to ``module_dir``.

    Raises:
      PublishError: a path outside FACTS.md's list (``saved_model.pb``,
        ``saved_model.pbtxt``, ``tfhub_module.pb``, ``keras_metadata.pb``,
        ``fingerprint.pb``, ``assets/*``, ``assets.extra/*``,
        ``variables/variables.*``), a symlink or special file, or no
        ``saved_model.pb``/``saved_model.pbtxt``.
    """
    root = Path(module_dir)
    files, dirs = [], []
    for current, subdirs, names in os.walk(root):
        subdirs.sort()
        rel_dir = Path(current).relative_to(root)
        for name in sorted(subdirs) + sorted(names):
            path = Path(current) / name
            rel = (rel_dir / name).as_posix()
            is_dir = name in subdirs
            if path.is_symlink() or not (path.is_dir() if is_dir else path.is_file()):
                raise PublishError("%s: %s; a published module holds only regular files and "
                                   "directories" % (path, "a symlink" if path.is_symlink()
                                                    else "a special file"))
            if not _allowed(rel, is_dir):
                raise PublishError("%s: %r is not a SavedModel path (allowed: %s, assets/*, "
                                   "assets.extra/*, variables/variables.*); remove it from the "
                                   "module" % (root, rel, ", ".join(sorted(_TOP_FILES))))
            (dirs if is_dir else files).append(rel)
    if "saved_model.pb" not in files and "saved_model.pbtxt" not in files:
        raise PublishError("%s: no saved_model.pb; not a module directory" % root)
    return sorted(files), sorted(dirs)


def _allowed(rel, is_dir):
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return False
    if parts[0] in _FREE_DIRS:
        return True
    if is_dir:
        return rel == "variables"
    if len(parts) == 1:
        return rel in _TOP_FILES
    return len(parts) == 2 and parts[0] == "variables" and bool(_VARIABLES.fullmatch(parts[1]))


def normalized_bytes(rel, data):
    """The bytes a file is published with: ``fingerprint.pb`` without its random uuid.

    Args:
      rel: the file's path in the module (POSIX str).
      data: its bytes as TensorFlow wrote them.

    Returns:
      bytes; ``data`` itself for every other file.
    """
    if rel != "fingerprint.pb":
        return data
    return _drop_proto_field(data, _FINGERPRINT_UUID_FIELD, rel)


def _drop_proto_field(data, number, what):
    """Removes every top-level occurrence of field ``number`` from a serialized proto."""
    out, pos = bytearray(), 0
    while pos < len(data):
        start = pos
        key, pos = _varint(data, pos, what)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(data, pos, what)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(data, pos, what)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise PublishError("%s: unexpected protobuf wire type %d; not a FingerprintDef"
                               % (what, wire))
        if pos > len(data):
            raise PublishError("%s: truncated protobuf message" % what)
        if key >> 3 != number:
            out += data[start:pos]
    return bytes(out)


def _varint(data, pos, what):
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise PublishError("%s: truncated protobuf message" % what)
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _content(module_dir, files):
    """Returns {rel: sha256} of the normalized files and their total size (bytes)."""
    manifest, total = {}, 0
    for rel in files:
        path = Path(module_dir, rel)
        if rel == "fingerprint.pb":
            data = normalized_bytes(rel, path.read_bytes())
            manifest[rel] = hashlib.sha256(data).hexdigest()
            total += len(data)
        else:
            manifest[rel] = sha256_file(path)[0]
            total += path.stat().st_size
    return manifest, total


# --------------------------------------------------------------------------
# Archives.


class _HashingWriter:
    """A write-only file object that hashes and counts what passes through."""

    def __init__(self, raw):
        self.raw, self.sha256, self.size = raw, hashlib.sha256(), 0

    def write(self, data):
        self.sha256.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self):
        self.raw.flush()


def write_archive(module_dir, files, dirs, dest):
    """Writes the reproducible ``.tar.gz`` of a module directory.

    Args:
      module_dir: the directory to pack (its files already normalized).
      files, dirs: its relative POSIX paths, as :func:`module_files` returns.
      dest: the archive path; written directly (callers use a temp name).

    Returns:
      (sha256 hex str, size in bytes) of the archive.
    """
    entries = sorted([(d, True) for d in dirs] + [(f, False) for f in files])
    with open(dest, "wb") as raw:
        sink = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=sink, mtime=ARCHIVE_MTIME,
                           compresslevel=GZIP_LEVEL) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                tar.copybufsize = CHUNK
                for rel, is_dir in entries:
                    info = tarfile.TarInfo(rel)
                    info.mtime, info.uid, info.gid, info.uname, info.gname = (
                        ARCHIVE_MTIME, 0, 0, "", "")
                    if is_dir:
                        info.type, info.mode = tarfile.DIRTYPE, 0o755
                        tar.addfile(info)
                    else:
                        path = Path(module_dir, rel)
                        info.mode, info.size = 0o644, path.stat().st_size
                        with open(path, "rb") as f:
                            tar.addfile(info, f)
    return sink.sha256.hexdigest(), sink.size


def archive_manifest(archive, fmt="hub"):
    """Reads an archive as a stream and hashes its members.

    Args:
      archive: path of a ``.tar.gz``.
      fmt: the index format of what it packs: a module's (SavedModel
        paths) or ``"tfjs"`` (``model.json`` and weight shards).

    Returns:
      (files, dirs): dict rel path -> sha256 of the regular files, and the
      sorted list of directory paths.

    Raises:
      PublishError: not a readable gzipped tar, or a member that is not a
        SavedModel path (TF.js file), not a regular file or directory, or
        listed twice.
    """
    allowed = _member_allowed(fmt)
    files, dirs = {}, []
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for info in tar:
                name = info.name[2:] if info.name.startswith("./") else info.name
                name = name.rstrip("/") if info.isdir() else name
                if not (info.isfile() or info.isdir()) or not allowed(name, info.isdir()):
                    raise PublishError("%s: member %r is not a %s path or not a plain "
                                       "file/directory" % (archive, info.name,
                                                           "TF.js" if fmt == "tfjs"
                                                           else "SavedModel"))
                if name in files or name in dirs:
                    raise PublishError("%s: member %r appears twice" % (archive, info.name))
                if info.isdir():
                    dirs.append(name)
                    continue
                h = hashlib.sha256()
                src = tar.extractfile(info)
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    h.update(chunk)
                files[name] = h.hexdigest()
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as e:
        raise PublishError("%s: not a readable .tar.gz (%s)" % (archive, e)) from None
    return files, sorted(dirs)


# --------------------------------------------------------------------------
# Reading and checking a registry.


@dataclasses.dataclass
class Registry:
    """A registry as read by :func:`read_registry`.

    Attributes:
      root: the registry directory (Path).
      entries: dict module_handle -> index entry (dict, see module docstring).
      problems: list of (module_handle or None, message str); module_handle
        None marks a problem of the registry as a whole (e.g. the index).
      exists: False if the directory has no index.json yet (a new registry).
    """

    root: Path
    entries: dict
    problems: list
    exists: bool

    @property
    def ok(self):
        """True if no problem was found."""
        return not self.problems


def index_digest(modules):
    """The ``digest`` field of index.json.

    Args:
      modules: the index's ``modules`` list (JSON values).

    Returns:
      str, ``"sha256:"`` + the hex sha256 of the canonical JSON of
      ``modules`` (sorted keys, no spaces, ASCII).
    """
    canonical = json.dumps(modules, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


_digest = index_digest


def read_registry(registry, deep=True, jobs=None):
    """Reads ``index.json`` and checks every file it lists.

    Args:
      registry: the registry directory.
      deep: also hash every file of every module directory and the cards
        (False: archives only, which is what ``serve`` hands out).
      jobs: threads hashing in parallel (None: the number of CPUs).

    Returns:
      a :class:`Registry`. Problems found: index.json unreadable, not a
      registry index, or edited (its ``digest`` disagrees with its
      ``modules``); an entry with missing or wrong fields or paths that are
      not the ones its handle implies; a missing archive, module file or
      card; a size or sha256 that disagrees with the index; a module
      directory holding files the index does not list.

    Raises:
      UsageError: ``registry`` exists and is not a directory.
    """
    root = Path(registry)
    if root.exists() and not root.is_dir():
        raise UsageError("%s is not a directory" % root)
    index = root / INDEX
    if not index.exists():
        return Registry(root, {}, [], False)
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return Registry(root, {}, [(None, "%s: unreadable (%s)" % (index, e))], True)
    if (not isinstance(data, dict) or data.get("registry_format") != REGISTRY_FORMAT
            or not isinstance(data.get("modules"), list)):
        return Registry(root, {}, [(None, "%s: not a registry index of format %d"
                                    % (index, REGISTRY_FORMAT))], True)
    problems = []
    if data.get("digest") != _digest(data["modules"]):
        problems.append((None, "%s: its digest does not match its modules; the index was "
                               "edited or damaged" % index))
    entries = {}
    for number, entry in enumerate(data["modules"]):
        problem = _entry_problem(entry)
        if problem:
            problems.append((None, "%s: modules[%d]: %s" % (index, number, problem)))
        elif entry["module_handle"] in entries:
            problems.append((None, "%s: %s is listed twice" % (index, entry["module_handle"])))
        else:
            entries[entry["module_handle"]] = entry
    checks = []
    for handle, entry in entries.items():
        checks.append((handle, root / entry["archive"], entry["sha256"], entry["size"]))
        if deep:
            checks.append((handle, root / entry["doc"], entry["doc_sha256"], None))
            if entry["module_dir"] is None:  # a file variant: the archive is the file
                continue
            module_dir = root / entry["module_dir"]
            if not module_dir.is_dir():
                problems.append((handle, "%s: missing" % module_dir))
                continue
            try:
                files = (variant_dir_files(module_dir) if entry["format"] in VARIANT_FORMATS
                         else module_files(module_dir)[0])
            except PublishError as e:
                problems.append((handle, str(e)))
                continue
            extra = sorted(set(files) - set(entry["files"]))
            if extra:
                problems.append((handle, "%s: files not in the index: %s"
                                 % (module_dir, ", ".join(extra))))
            checks.extend((handle, module_dir / rel, sha, None)
                          for rel, sha in sorted(entry["files"].items()))
    with concurrent.futures.ThreadPoolExecutor(jobs or os.cpu_count() or 1) as pool:
        for handle, problem in zip([c[0] for c in checks], pool.map(_file_problem, checks)):
            if problem:
                problems.append((handle, problem))
    return Registry(root, entries, problems, True)


def _file_problem(check):
    _, path, sha256, size = check
    try:
        if size is not None and path.stat().st_size != size:
            return "%s: size %d bytes, the index says %d" % (path, path.stat().st_size, size)
        actual = sha256_file(path)[0]
    except FileNotFoundError:
        return "%s: missing" % path
    except OSError as e:
        return "%s: unreadable (%s)" % (path, e.strerror or e)
    if actual != sha256:
        return "%s: sha256 %s, the index says %s" % (path, actual, sha256)
    return None


def _entry_problem(entry):
    """Returns why an index entry is malformed, or None."""
    if not isinstance(entry, dict):
        return "not an object"
    fmt = entry.get("format")
    if fmt not in MODULE_FORMATS + VARIANT_FORMATS:
        return "unknown format %r" % (fmt,)
    variant = fmt in VARIANT_FORMATS
    missing = [k for k in (_VARIANT_KEYS if variant else _ENTRY_KEYS) if k not in entry]
    if missing:
        return "missing fields: %s" % ", ".join(missing)
    try:
        publisher, model, version = split_module_handle(entry["module_handle"])
    except ValueError as e:
        return str(e)
    handle = entry["module_handle"]
    expected = {"handle": handle.rsplit("/", 1)[0], "version": int(version),
                "archive": archive_path(handle), "module_dir": handle, "doc": docs_path(handle)}
    if variant:
        suffix, is_dir = variant_layout(fmt)
        expected.update(archive=handle + suffix, module_dir=handle if is_dir else None)
    for key, value in expected.items():
        if entry[key] != value:
            return "%s is %r, %s implies %r" % (key, entry[key], handle, value)
    if not isinstance(entry["files"], dict):
        return "files is not an object"
    if variant:
        try:
            split_module_handle(entry["parent_module"])
        except ValueError as e:
            return "parent_module: %s" % e
        if is_dir:
            allowed = is_tfjs_file
        else:
            allowed = lambda rel: rel == version + suffix  # noqa: E731
        if not entry["files"] or not all(isinstance(rel, str) and allowed(rel)
                                         for rel in entry["files"]):
            return "files lists a path that is not a %s file" % fmt
    elif ("tfhub_module.pb" in entry["files"]) != (fmt == "hub"):
        return "format %r disagrees with its files (tfhub_module.pb marks the TF1 Hub format)" % (
            entry["format"],)
    if not isinstance(entry["size"], int) or entry["size"] < 0:
        return "size is not a byte count"
    hashes = [entry["sha256"], entry["doc_sha256"]]
    hashes += list(entry["files"].values())
    if not all(isinstance(h, str) and _SHA256.fullmatch(h) for h in hashes):
        return "a sha256 is not 64 lower-case hex digits"
    if not variant and not all(isinstance(rel, str) and _allowed(rel, False)
                               for rel in entry["files"]):
        return "files lists a path that is not a SavedModel path"
    return None


def variant_dir_files(variant_dir):
    """Lists a TF.js variant's directory, refusing anything but its files.

    Args:
      variant_dir: the directory (``model.json`` and ``groupG-shardNofM.bin``).

    Returns:
      sorted list of file names.

    Raises:
      PublishError: a subdirectory, symlink, special file or other name.
    """
    names = []
    for path in sorted(Path(variant_dir).iterdir()):
        if path.is_symlink() or not path.is_file() or not is_tfjs_file(path.name):
            raise PublishError("%s: %r is not a file of a TF.js graph model (model.json, "
                               "groupG-shardNofM.bin); remove it" % (variant_dir, path.name))
        names.append(path.name)
    return names


# --------------------------------------------------------------------------
# Publishing.


@dataclasses.dataclass
class PublishedModule:
    """What publish did with one built module.

    Attributes:
      module_handle: e.g. ``google/imagenet/inception_v2/classification/3``.
      status: "published" (new), "replaced" (``force`` over other content)
        or "unchanged" (the same content was published already).
      entry: its index entry (dict).
      registry: the registry directory (Path).
    """

    module_handle: str
    status: str
    entry: dict
    registry: Path

    def to_json(self):
        """Returns {"module_handle", "status", "format", "archive", "size", "sha256",
        "module_dir", "doc"} with absolute paths (JSON-ready; ``module_dir`` None
        for a file variant, whose ``archive`` is the file)."""
        e = self.entry
        return {"module_handle": self.module_handle, "status": self.status,
                "format": e["format"], "archive": str(self.registry / e["archive"]),
                "size": e["size"], "sha256": e["sha256"],
                "module_dir": (str(self.registry / e["module_dir"]) if e["module_dir"]
                               else None),
                "doc": str(self.registry / e["doc"])}


@dataclasses.dataclass
class PublishResult:
    """The outcome of :func:`publish`.

    Attributes:
      registry: the registry directory (Path).
      index: its index.json (Path).
      modules: list of :class:`PublishedModule`, sorted by module handle.
    """

    registry: Path
    index: Path
    modules: list

    def to_json(self):
        """Returns {"registry", "index", "modules": [...]} (JSON-ready)."""
        return {"registry": str(self.registry), "index": str(self.index),
                "modules": [m.to_json() for m in self.modules]}


@dataclasses.dataclass
class _Built:
    """A built module or variant as publish stages it.

    ``module_dir`` is the module's or TF.js variant's directory, or a file
    variant's file; ``archive`` the registry-relative path of its download
    (``.tar.gz`` packed from the directory, or the file itself); ``is_dir``
    whether the registry holds a directory too.
    """

    module_handle: str
    module_dir: Path
    card: Path
    record: dict
    files: list
    dirs: list
    manifest: dict
    module_size: int
    doc_sha256: str
    format: str
    archive: str
    is_dir: bool


def find_built_modules(output, required=True):
    """Finds the modules ``hubexport build`` wrote under ``output``.

    A module is ``OUT/<handle>/<version>/`` with its card ``<version>.md``
    and its stamp ``.<version>.stamp`` (written last by build).

    Args:
      output: the build output directory.
      required: False to return an empty list rather than raise when there
        is no module (an output of deployment variants only).

    Returns:
      list of (module_dir Path, card Path, build record dict), sorted by
      module handle; the record is :func:`hubexport.build.build_record`'s.

    Raises:
      UsageError: ``output`` is not a directory.
      PublishError: no module (``required``), a module without card or stamp (an
        interrupted build), or a stamp from a hubexport that did not record
        the build, or one that disagrees with its location.
    """
    output = Path(output)
    if not output.is_dir():
        raise UsageError("%s is not a directory; pass the --output of hubexport build" % output)
    found = []
    for model_pb in sorted(output.rglob("saved_model.pb")):
        module_dir = model_pb.parent
        if module_dir.name.startswith(".") or any(p.startswith(".") for p in
                                                   module_dir.relative_to(output).parts):
            continue  # a build's temporary directory
        version = module_dir.name
        stamp = module_dir.parent / (".%s.stamp" % version)
        card = module_dir.parent / ("%s.md" % version)
        if not stamp.is_file() or not card.is_file():
            raise PublishError("%s: no %s; the build of this module did not finish; run "
                               "hubexport build again" % (module_dir, "stamp" if not
                                                          stamp.is_file() else "card"))
        try:
            record = json.loads(stamp.read_text())["module"]
        except (OSError, ValueError, KeyError, TypeError):
            raise PublishError("%s: no build record in the stamp (built by an older hubexport); "
                               "rebuild with hubexport build --force" % stamp) from None
        rel = module_dir.relative_to(output).as_posix()
        if not isinstance(record, dict) or record.get("module_handle") != rel:
            raise PublishError("%s: the stamp says module %r, but it lies at %s; move it back "
                               "or rebuild" % (stamp, record.get("module_handle")
                                               if isinstance(record, dict) else None, rel))
        found.append((module_dir, card, record))
    if not found and required:
        raise PublishError("%s: no built modules (<handle>/<version>/saved_model.pb); run "
                           "hubexport build --output %s first" % (output, output))
    return found


def find_built_variants(output):
    """Finds the deployment variants ``hubexport build --deploy`` wrote under ``output``.

    A variant is ``OUT/<variant handle>`` plus its deploy.yaml suffix (a
    ``.tflite`` file, or a TF.js directory), with its card ``<version>.md``
    and its stamp ``.<version>.stamp`` holding the variant's record
    (:func:`hubexport.deploy.variant_record`), written last.

    Args:
      output: the build output directory.

    Returns:
      list of (file or directory Path, card Path, record dict), sorted by
      variant handle.

    Raises:
      PublishError: a stamp that cannot be read, disagrees with its
        location, or was written by a hubexport that did not record what
        publish needs; a variant whose file or card is missing.
    """
    output = Path(output)
    found = []
    for stamp in sorted(output.rglob(".*.stamp")):
        rel_dir = stamp.parent.relative_to(output)
        if any(p.startswith(".") for p in rel_dir.parts):
            continue  # a build's temporary directory
        try:
            record = json.loads(stamp.read_text(encoding="utf-8")).get("variant")
        except (OSError, ValueError, AttributeError):
            raise PublishError("%s: unreadable stamp; rebuild with hubexport build --force"
                               % stamp) from None
        if record is None:
            continue  # a module's stamp
        version = stamp.name[1:-len(".stamp")]
        rel = (rel_dir / version).as_posix()
        if not isinstance(record, dict) or record.get("variant_handle") != rel:
            raise PublishError("%s: the stamp says variant %r, but it lies at %s; move it back "
                               "or rebuild" % (stamp, record.get("variant_handle")
                                               if isinstance(record, dict) else None, rel))
        if "architecture" not in record or "source" not in record:
            raise PublishError("%s: written by an older hubexport; rebuild the variant with "
                               "hubexport build --deploy %s --force" % (stamp, record.get("format")))
        path, card = stamp.parent / str(record.get("file")), stamp.parent / (version + ".md")
        if not path.exists() or not card.is_file():
            raise PublishError("%s: no %s; the build of this variant did not finish; run "
                               "hubexport build --deploy %s again"
                               % (stamp.parent / version, "card" if path.exists() else path.name,
                                  record.get("format")))
        found.append((path, card, record))
    return found


def _scan(module_dir, card, record):
    files, dirs = module_files(module_dir)
    manifest, size = _content(module_dir, files)
    handle = record["module_handle"]
    return _Built(handle, module_dir, card, record, files, dirs, manifest, size,
                  sha256_file(card)[0], record["format"], archive_path(handle), True)


def _scan_variant(path, card, record):
    from hubexport.deploy import variant_files

    files = variant_files(path)
    if files != record.get("files"):
        raise PublishError("%s changed since it was built (its files differ from what its stamp "
                           "records); rebuild it with hubexport build --deploy %s --force"
                           % (path, record["format"]))
    if path.is_dir():
        variant_dir_files(path)  # nothing but TF.js files
    handle = record["variant_handle"]
    suffix, is_dir = variant_layout(record["format"])
    return _Built(handle, path, card, record, sorted(files), [], dict(files),
                  int(record["size"]), sha256_file(card)[0], record["format"],
                  handle + suffix, is_dir)


def _entry(built, sha256, size):
    r = built.record
    handle = built.module_handle
    if built.format in VARIANT_FORMATS:
        return {
            "module_handle": handle, "handle": r["handle"], "version": r["version"],
            "format": r["format"], "parent_module": r["parent_module"],
            "variant": r["variant"], "quantization": r["quantization"],
            "architecture": r["architecture"], "kind": r["kind"],
            "image_size": r["image_size"], "input": r["input"], "output": r["output"],
            "probe": r["probe"], "file": r["file"], "archive": built.archive, "size": size,
            "sha256": sha256, "module_dir": handle if built.is_dir else None,
            "module_size": built.module_size, "files": built.manifest,
            "doc": docs_path(handle), "doc_sha256": built.doc_sha256,
            "source": _source(r["source"]), "hubexport": __version__,
            "tensorflow": r.get("tensorflow"),
        }
    return {
        "module_handle": handle, "handle": r["handle"], "version": r["version"],
        "format": r["format"], "architecture": r["architecture"], "kind": r["kind"],
        "input_size": r["input_size"], "image_size": r["image_size"],
        "signatures": list(r["signatures"]),
        "archive": archive_path(handle), "size": size, "sha256": sha256,
        "module_dir": handle, "module_size": built.module_size, "files": built.manifest,
        "doc": docs_path(handle), "doc_sha256": built.doc_sha256,
        "source": _source(r["source"]), "hubexport": __version__,
        "tensorflow": r.get("tensorflow"),
    }


def _source(source):
    """The index's ``source`` of a stamp's record (``pinned`` added to older stamps)."""
    if not isinstance(source, dict):
        return source
    source = dict(source)
    source.setdefault("pinned", True)  # every source was pinned before "pinned" was recorded
    return source


def _same_content(built, entry):
    return (entry["files"] == built.manifest and entry["doc_sha256"] == built.doc_sha256
            and entry["format"] == built.format)


def _differences(built, entry):
    names = sorted(set(built.manifest) | set(entry["files"]))
    diff = [n for n in names if built.manifest.get(n) != entry["files"].get(n)]
    if entry["doc_sha256"] != built.doc_sha256:
        diff.append("the card")
    if entry["format"] != built.format:
        diff.append("the format")
    return ", ".join(diff) or "its content"


def publish(output, registry, force=False, jobs=None):
    """Publishes every module and deployment variant ``hubexport build`` wrote under ``output``.

    Args:
      output: the build output directory (``hubexport build --output``).
      registry: the registry directory (created if missing).
      force: replace published versions whose content differs, and
        damaged versions that are being published again.
      jobs: threads packing archives and hashing (None: the number of CPUs).

    Returns:
      a :class:`PublishResult`; index.json lists the registry's modules,
      old and new.

    Raises:
      UsageError: ``output`` is not a directory.
      PublishError: a built module or variant is incomplete or holds a
        path it may not hold (or a variant's files changed since its stamp);
        neither modules nor variants are found; the registry is damaged
        (see :func:`read_registry`); or a version is published with other
        content and ``force`` is False. Nothing is written in these cases.
    """
    jobs = jobs or os.cpu_count() or 1
    found = find_built_modules(output, required=False)
    variants = find_built_variants(output)
    if not found and not variants:
        find_built_modules(output)  # raises: nothing was built there
    root = Path(registry).absolute()
    if root.exists() and not root.is_dir():
        raise UsageError("--registry %s is not a directory" % root)
    root.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(root / LOCK)):
        current = read_registry(root, deep=True, jobs=jobs)
        if current.exists is False and any(p.name != LOCK for p in root.iterdir()):
            raise PublishError("%s is not empty and has no %s; not a hubexport registry (publish "
                               "into an empty or new directory)" % (root, INDEX))
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            built = list(pool.map(lambda args: _scan(*args), found))
            built += list(pool.map(lambda args: _scan_variant(*args), variants))
        publishing = {b.module_handle for b in built}
        damaged = {}
        for handle, problem in current.problems:
            if handle is None or handle not in publishing or not force:
                what = "" if handle is None or handle in publishing else " (not being published)"
                raise PublishError("registry %s is damaged%s: %s; nothing was published. Run "
                                   "hubexport verify %s for every problem; restore the registry "
                                   "from a copy%s"
                                   % (root, what, problem, root,
                                      " or pass --force to replace this version"
                                      if handle in publishing else ""))
            damaged[handle] = problem
        conflicts, plan = [], []
        for b in built:
            old = current.entries.get(b.module_handle)
            if old is not None and b.module_handle not in damaged and _same_content(b, old):
                plan.append((b, "unchanged"))
            elif old is not None and not force:
                conflicts.append("%s (differs in %s)" % (b.module_handle, _differences(b, old)))
            else:
                plan.append((b, "published" if old is None else "replaced"))
        if conflicts:
            raise PublishError("%d version(s) already published with other content: %s; released "
                               "versions are immutable: publish a new version, or pass --force to "
                               "replace them. Nothing was published"
                               % (len(conflicts), "; ".join(conflicts)))
        entries = dict(current.entries)
        results = []
        todo = [b for b, status in plan if status != "unchanged"]
        staged = {}
        try:
            for b, entry in zip(todo, pool_map(jobs, lambda b: _stage(b, root), todo)):
                staged[b.module_handle] = entry
            for b in todo:
                _install(b, root)
                entries[b.module_handle] = staged[b.module_handle]
        finally:
            for b in todo:
                _remove_staged(b, root)
        for b, status in plan:
            entry = entries[b.module_handle]
            results.append(PublishedModule(b.module_handle, status, entry, root))
            if status != "unchanged":
                log.info("%s %s", status, b.module_handle)
        if todo or not current.exists:
            _write_index(root, entries)
    return PublishResult(root, root / INDEX, sorted(results, key=lambda m: m.module_handle))


def pool_map(jobs, fn, items):
    """``map`` over a thread pool of ``jobs`` threads, in order."""
    if not items:
        return []
    with concurrent.futures.ThreadPoolExecutor(min(jobs, len(items))) as pool:
        return list(pool.map(fn, items))


def _staging(built, root):
    """Temporary and final names of a module's (or variant's) directory, archive and card."""
    module_handle = built.module_handle
    handle, version = module_handle.rsplit("/", 1)
    parent = root / handle
    tag = "tmp-%d" % os.getpid()
    doc = root / docs_path(module_handle)
    archive = root / built.archive
    paths = {"module": (parent / (".%s.%s" % (version, tag)), root / module_handle)}
    if not built.is_dir:  # a file variant: the file is its download
        paths = {}
    paths.update(archive=(parent / (".%s.%s" % (archive.name, tag)), archive),
                 doc=(doc.parent / (".%s.%s" % (doc.name, tag)), doc))
    return paths


def _stage(built, root):
    """Writes the module copy, archive and card under temporary names; returns the entry."""
    paths = _staging(built, root)
    tmp_archive, _ = paths["archive"]
    tmp_doc, _ = paths["doc"]
    for tmp, final in paths.values():
        tmp.parent.mkdir(parents=True, exist_ok=True)
        for leftover in tmp.parent.glob(".%s.*" % final.name):  # interrupted publishes
            if ".tmp-" in leftover.name or ".old-" in leftover.name:
                _remove(leftover)
    try:
        if built.is_dir:
            tmp_module, _ = paths["module"]
            tmp_module.mkdir()
            for rel in built.dirs:
                (tmp_module / rel).mkdir(parents=True, exist_ok=True)
            copied = {rel: _copy_normalized(built.module_dir / rel, tmp_module / rel, rel)
                      for rel in built.files}
        else:
            (name,) = built.files
            copied = {name: _copy_normalized(built.module_dir, tmp_archive, name)}
        if copied != built.manifest:
            raise PublishError("%s changed while it was being published; publish again"
                               % built.module_dir)
        try:
            sha256, size = (write_archive(tmp_module, built.files, built.dirs, tmp_archive)
                            if built.is_dir else (copied[name], tmp_archive.stat().st_size))
        except ValueError as e:  # tarfile: a name too long for the ustar format
            raise PublishError("%s: cannot archive it (%s)" % (built.module_dir, e)) from None
        shutil.copyfile(built.card, tmp_doc)
        if sha256_file(tmp_doc)[0] != built.doc_sha256:
            raise PublishError("%s changed while it was being published; publish again"
                               % built.card)
    except OSError as e:
        raise PublishError("cannot write into registry %s: %s; check free space and "
                           "permissions" % (root, e)) from None
    return _entry(built, sha256, size)


def _copy_normalized(src, dst, rel):
    """Copies one module file as it is published; returns the sha256 of what was written."""
    if rel == "fingerprint.pb":
        data = normalized_bytes(rel, src.read_bytes())
        dst.write_bytes(data)
        return hashlib.sha256(data).hexdigest()
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        for chunk in iter(lambda: fin.read(CHUNK), b""):
            h.update(chunk)
            fout.write(chunk)
    return h.hexdigest()


def _install(built, root):
    """Renames a staged module, archive and card into place (old versions aside first)."""
    try:
        for tmp, final in _staging(built, root).values():
            old = final.with_name(".%s.old-%d" % (final.name, os.getpid()))
            if final.exists() or final.is_symlink():
                os.replace(final, old)
            os.replace(tmp, final)
            _remove(old)
    except OSError as e:
        raise PublishError("cannot install %s into registry %s: %s"
                           % (built.module_handle, root, e)) from None


def _remove_staged(built, root):
    for tmp, _ in _staging(built, root).values():
        _remove(tmp)


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _write_index(root, entries):
    modules = [entries[h] for h in sorted(entries)]
    data = {"registry_format": REGISTRY_FORMAT, "generator": "hubexport %s" % __version__,
            "modules": modules, "digest": _digest(modules)}
    tmp = root / (".%s.tmp-%d" % (INDEX, os.getpid()))
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / INDEX)
