"""The fetch stage for a local checkpoint: find its files, hash them, enforce a pin.

Public entry point: :func:`resolve_local`. A spec's ``checkpoint.path``
(:attr:`hubexport.specs.CheckpointSource.path`) names one of

* a TF V1 checkpoint file (one file, as in the Inception tarballs);
* a TF V2 checkpoint prefix, e.g. ``train/model.ckpt-5000``, with
  ``<prefix>.index`` and every ``<prefix>.data-KKKKK-of-NNNNN`` beside it
  (``<prefix>.index`` itself is accepted too);
* a training directory (TF-Slim's ``--train_dir``) whose ``checkpoint``
  state file names the latest checkpoint (``model_checkpoint_path: "..."``,
  relative to the directory or absolute).

The checkpoint's files are the V1 file, or the V2 index and data shards
(``.meta`` graphs are not read). Their digest is the sha256 of the text
``sha256sum`` prints for them in name order, names relative to their
directory::

    cd train && sha256sum model.ckpt-5000.data-00000-of-00001 model.ckpt-5000.index | sha256sum

A spec may pin it as ``checkpoint.checksum: sha256:HEX``; then any other
bytes are refused. Nothing here imports TensorFlow; TensorFlow's checkpoint
reader (:mod:`hubexport.checkpoint`) reads the path returned.
"""

import glob
import hashlib
import re
from pathlib import Path

from hubexport.errors import ChecksumError, FetchError
from hubexport.hashing import sha256_file

_DATA = re.compile(r"\.data-(\d{5})-of-(\d{5})\Z")
_STATE_LINE = re.compile(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"\s*$', re.M)


def resolve_local(spec):
    """Finds, hashes and checks the local checkpoint a spec names.

    Args:
      spec: a :class:`hubexport.specs.ModelSpec` whose ``checkpoint.local``
        is True.

    Returns:
      :class:`hubexport.fetch.FetchedSource` with ``tarball`` None,
      ``checkpoint`` the path for ``tf.train.load_checkpoint`` (the V1 file
      or the V2 prefix), ``checksum`` ``"sha256:HEX"`` (the digest above),
      ``size`` the files' total bytes, ``pinned`` whether the spec pins a
      checksum, and ``files`` {file name: sha256 hex}.

    Raises:
      FetchError: the path does not exist, a directory has no ``checkpoint``
        state file (or it names no checkpoint), a V2 prefix lacks its
        ``.index`` or a ``.data`` shard, or a file cannot be read.
      ChecksumError: the spec pins a checksum and the files' digest differs.
    """
    from hubexport.fetch import FetchedSource

    ckpt = spec.checkpoint
    prefix, files = checkpoint_files(ckpt.path, spec.source)
    digests = {}
    size = 0
    for f in files:
        digests[f.name], n = _sha256(f)
        size += n
    listing = "".join("%s  %s\n" % (digests[name], name) for name in sorted(digests))
    checksum = "sha256:" + hashlib.sha256(listing.encode()).hexdigest()
    if ckpt.pinned and checksum != ckpt.checksum:
        raise ChecksumError(
            "%s: the checkpoint files %s have %s, the spec %s pins %s; if you retrained on "
            "purpose, pin the new digest in checkpoint.checksum"
            % (prefix, ", ".join(sorted(digests)), checksum, spec.source, ckpt.checksum))
    return FetchedSource(tarball=None, checkpoint=prefix, checksum=checksum, size=size,
                         pinned=ckpt.pinned, files=digests)


def checkpoint_files(path, spec_file="the spec"):
    """The checkpoint a local path names and its files (see the module docstring).

    Args:
      path: a V1 file, a V2 prefix (or its ``.index``), or a directory with
        a ``checkpoint`` state file (Path).
      spec_file: the spec naming it, for messages.

    Returns:
      (checkpoint Path for TensorFlow's reader, sorted list of file Paths).

    Raises:
      FetchError: as :func:`resolve_local`.
    """
    path = Path(path)
    if path.is_dir():
        path = _latest(path, spec_file)
    elif path.name.endswith(".index") and path.is_file():
        path = path.with_name(path.name[:-len(".index")])
    if path.is_file():
        if _DATA.search(path.name) or path.name.endswith(".meta"):
            raise FetchError("%s: a part of a V2 checkpoint, not a checkpoint; set "
                             "checkpoint.path in %s to its prefix %s"
                             % (path, spec_file, re.sub(r"\.(data-\d{5}-of-\d{5}|meta)\Z", "",
                                                        path.name)))
        return path, [path]
    index = path.with_name(path.name + ".index")
    if not index.is_file():
        raise FetchError("%s: no checkpoint there (neither a file, nor a directory with a "
                         "'checkpoint' file, nor a V2 prefix with %s); check checkpoint.path "
                         "in %s" % (path, index.name, spec_file))
    shards = {}
    for f in path.parent.glob(glob.escape(path.name) + ".data-*-of-*"):
        m = _DATA.search(f.name)
        if m and f.name == path.name + m.group(0):
            shards[int(m.group(1))] = (int(m.group(2)), f)
    counts = {n for n, _ in shards.values()}
    total = counts.pop() if len(counts) == 1 else None
    if not shards or total is None or sorted(shards) != list(range(total)):
        have = ", ".join(sorted(f.name for _, f in shards.values())) or "none"
        raise FetchError("%s: V2 checkpoint without all its data shards (%s.data-KKKKK-of-"
                         "NNNNN; found: %s); copy the whole checkpoint" % (path, path.name, have))
    return path, sorted([index] + [f for _, f in shards.values()])


def _latest(directory, spec_file):
    """The checkpoint prefix a training directory's ``checkpoint`` state file names."""
    state = directory / "checkpoint"
    try:
        text = state.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FetchError("%s: no 'checkpoint' file in this directory, so no latest checkpoint; "
                         "set checkpoint.path in %s to a checkpoint prefix (e.g. %s/model.ckpt-"
                         "N)" % (directory, spec_file, directory)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise FetchError("%s: cannot read (%s)" % (state, getattr(e, "strerror", None) or e)) \
            from None
    m = _STATE_LINE.search(text)
    if not m:
        raise FetchError("%s: names no model_checkpoint_path; set checkpoint.path in %s to a "
                         "checkpoint prefix" % (state, spec_file))
    named = Path(m.group(1).encode().decode("unicode_escape"))
    return named if named.is_absolute() else directory / named


def _sha256(path):
    """(sha256 hex, size in bytes) of a file; FetchError if it cannot be read."""
    try:
        return sha256_file(path)
    except OSError as e:
        raise FetchError("%s: cannot read (%s)" % (path, e.strerror or e)) from None
