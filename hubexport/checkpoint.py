"""The checkpoint stage: read a TF-Slim checkpoint and check it against a net.

Public entry points: :class:`Checkpoint`, and :func:`read_once` for the
build's worker processes. :class:`Checkpoint` reads TF V1 checkpoints (one
file, as in the Inception and ResNet tarballs) and TF V2 checkpoints (a
prefix: ``<prefix>.index`` + ``<prefix>.data-KKKKK-of-NNNNN``, as in the
MobileNet tarballs; or the directory holding them and a ``checkpoint``
state file) through ``tf.train.load_checkpoint``, which tells the formats
apart itself. :func:`hubexport.fetch.fetch_checkpoint` returns the path to
pass for either. Every read error is one line naming the checkpoint and
what to delete (the V1 file, or the V2 checkpoint's directory). A V2 data
shard is opened when the first variable is read, so a missing or truncated
shard shows in :meth:`Checkpoint.values`. Restoring is strict: every variable a
net asks for must be present with the same shape and dtype, otherwise one
:class:`~hubexport.errors.CheckpointError` lists every problem. Extra
checkpoint variables (``global_step``, optimizer slots, ``AuxLogits``) are
ignored, as are a training checkpoint's
``<name>/ExponentialMovingAverage`` shadows, unless the caller asks to restore
every variable from its shadow (``moving_averages``, as TF-Slim's eval does
with ``ExponentialMovingAverage.variables_to_restore``).

:func:`read_once` lets several processes share one read: the first reads
and checks the checkpoint and writes the values to a *values file* (a
header, then the float32 arrays back to back); the others memory-map that
file, so its pages are shared and nothing is parsed or copied twice.
"""

import dataclasses
import hashlib
import json
import os
import struct

import numpy as np

from hubexport.errors import CheckpointError

_MAX_LISTED = 8
# The name tf.train.ExponentialMovingAverage gives a variable's shadow (TF-Slim's
# train_image_classifier.py --moving_average_decay): <name>/<this>.
MOVING_AVERAGE_SUFFIX = "/ExponentialMovingAverage"


# What TensorFlow's checkpoint reader raises for unreadable bytes: OpError
# subclasses, ValueError (a directory without a state file), IndexError
# (a truncated V2 data shard: "Read less bytes than requested").
_READ_ERRORS = (ValueError, IndexError)


class Checkpoint:
    """A checkpoint opened for reading.

    Args:
      path: the checkpoint path: the V1 file itself, a V2 prefix, or a
        directory with a V2 checkpoint and its ``checkpoint`` state file.

    Raises:
      CheckpointError: the checkpoint is missing, truncated or not a
        checkpoint (its V2 index, for a V2 prefix).
    """

    def __init__(self, path):
        import tensorflow as tf

        self.path = str(path)
        try:
            self._reader = tf.train.load_checkpoint(self.path)
            self.shapes = {k: tuple(v) for k, v in self._reader.get_variable_to_shape_map().items()}
            self.dtypes = {k: v.name for k, v in self._reader.get_variable_to_dtype_map().items()}
        except (tf.errors.OpError,) + _READ_ERRORS as e:
            raise CheckpointError("%s: not a readable TensorFlow checkpoint (%s); %s"
                                  % (self.path, _first_line(e), _delete_hint(self.path))) from None

    def check(self, requests):
        """Checks that the checkpoint holds every requested variable.

        Args:
          requests: iterable of :class:`hubexport.nets.layers.VariableRequest`
            (name, shape); all variables are float32.

        Raises:
          CheckpointError: one message listing the missing variables and
            those with another shape or dtype.
        """
        problems = []
        for req in requests:
            if req.name not in self.shapes:
                problems.append("%s missing" % req.name)
            elif self.shapes[req.name] != tuple(req.shape):
                problems.append("%s has shape %s, the net needs %s"
                                % (req.name, list(self.shapes[req.name]), list(req.shape)))
            elif self.dtypes[req.name] != "float32":
                problems.append("%s has dtype %s, the net needs float32"
                                % (req.name, self.dtypes[req.name]))
        if problems:
            shown = "; ".join(problems[:_MAX_LISTED])
            more = " (and %d more)" % (len(problems) - _MAX_LISTED) if len(problems) > _MAX_LISTED else ""
            raise CheckpointError("%s does not fit the net: %s%s; is the spec's architecture right?"
                                  % (self.path, shown, more))

    def check_classes(self, logits, spec_file=None):
        """Checks the class count of the logits layer against the checkpoint's.

        Args:
          logits: the :class:`hubexport.nets.layers.VariableRequest` of the
            logits layer (weights [..., C] and biases [C], C the spec's
            ``num_classes``).
          spec_file: the spec that sets C, for the message.

        Raises:
          CheckpointError: every variable of the checkpoint's logits layer
            holds another number of classes than the spec's; one line naming
            both and the variable. (A layer whose variables disagree, or
            differ elsewhere, is left to :meth:`check`.)
        """
        logits = sorted(logits, key=lambda r: r.name)
        counts = set()
        for req in logits:
            have = self.shapes.get(req.name)
            if not have or len(have) != len(req.shape) or have[:-1] != tuple(req.shape[:-1]):
                return
            counts.add(have[-1])
        if len(counts) == 1 and logits and counts != {logits[0].shape[-1]}:
            req, have = logits[0], self.shapes[logits[0].name]
            raise CheckpointError(
                "%s: its logits layer %s holds %d classes (shape %s), but %s says "
                "num_classes: %d; set num_classes: %d"
                % (self.path, req.name, have[-1], list(have), spec_file or "the spec",
                   req.shape[-1], have[-1]))

    def values(self, names):
        """Reads variables.

        Args:
          names: iterable of variable names.
        Returns:
          dict name -> numpy array (float32 for the nets' variables).
        Raises:
          CheckpointError: a name is missing or its bytes cannot be read
            (damaged bytes, or a missing or truncated V2 data shard).
        """
        import tensorflow as tf

        out = {}
        for name in names:
            try:
                out[name] = np.asarray(self._reader.get_tensor(name))
            except (tf.errors.OpError,) + _READ_ERRORS as e:
                # A name the checkpoint lists but cannot read means damaged
                # bytes (TF reports a failed block checksum as "not found").
                damaged = ("; the %s damaged: %s" % (
                    "file is" if os.path.isfile(self.path) else "checkpoint is",
                    _delete_hint(self.path)) if name in self.shapes else "")
                raise CheckpointError("%s: cannot read variable %s (%s)%s"
                                      % (self.path, name, _first_line(e), damaged)) from None
        return out


_VALUES_MAGIC = b"HUBXVAL1"
_ALIGN = 64  # bytes; every array starts at a multiple of this in a values file


def read_once(path, requests, shared_dir=None, *, moving_averages=False, logits=(),
              spec_file=None):
    """The checked values a net needs from a checkpoint, read from disk once per build.

    Reads the checkpoint with :class:`Checkpoint` and checks it
    (:meth:`Checkpoint.check`). With a ``shared_dir``, processes calling this
    with the same checkpoint, requests and ``shared_dir`` take turns under a
    file lock: the first reads and checks, and writes the values to a values
    file in ``shared_dir`` (temporary name, then rename); the others
    memory-map that file.

    Args:
      path: the checkpoint path (str or Path).
      requests: list of :class:`hubexport.nets.layers.VariableRequest`
        (name, shape); all float32.
      shared_dir: None (a single reader), or an existing directory private
        to this build (the caller creates it and removes it afterwards).
      moving_averages: read each variable ``NAME`` from its shadow
        ``NAME/ExponentialMovingAverage``.
      logits: the names of the requests that make the logits layer (their
        last dimension is the class count), checked first so that a class
        count that differs from the checkpoint's gets its own message.
      spec_file: the spec that sets the class count, for that message.

    Returns:
      dict name -> float32 numpy array of the requested shape; with a
      ``shared_dir``, read-only and backed by the memory-mapped values file.

    Raises:
      CheckpointError: as :class:`Checkpoint` and its ``check`` and
        ``values`` raise; a logits variable whose class count differs (one
        line naming both counts and the variable); with
        ``moving_averages``, variables without a shadow (named).
      OSError: the values file cannot be written (e.g. disk full).
    """
    import filelock

    requests = list(requests)
    options = (bool(moving_averages), tuple(logits), spec_file)
    if shared_dir is None:
        return _read_checked(path, requests, *options)
    key = hashlib.sha256(json.dumps(
        [os.path.abspath(str(path)), bool(moving_averages)]
        + [[r.name, list(r.shape)] for r in requests]).encode())
    values_path = os.path.join(str(shared_dir), key.hexdigest()[:20] + ".values")
    with filelock.FileLock(values_path + ".lock"):
        if not os.path.exists(values_path):
            write_values_file(_read_checked(path, requests, *options), values_path)
    return map_values_file(values_path)


def _read_checked(path, requests, moving_averages=False, logits=(), spec_file=None):
    ckpt = Checkpoint(path)
    ckpt.check_classes([r for r in requests if r.name in logits], spec_file)
    source = {r.name: r.name + MOVING_AVERAGE_SUFFIX if moving_averages else r.name
              for r in requests}
    if moving_averages:
        missing = [name for name in source.values() if name not in ckpt.shapes]
        if missing:
            more = " (and %d more)" % (len(missing) - _MAX_LISTED) \
                if len(missing) > _MAX_LISTED else ""
            raise CheckpointError(
                "%s: use_moving_averages is true in %s, but %d of the net's %d variables have "
                "no moving-average shadow: %s%s; train with --moving_average_decay, or set "
                "checkpoint.use_moving_averages: false"
                % (ckpt.path, spec_file or "the spec", len(missing), len(source),
                   ", ".join(missing[:_MAX_LISTED]), more))
    ckpt.check([dataclasses.replace(r, name=source[r.name]) for r in requests])
    values = ckpt.values(source.values())
    return {name: values[source[name]] for name in source}


def write_values_file(values, path):
    """Writes float32 arrays to a values file (temporary name, then rename).

    Layout: 8 bytes magic ``HUBXVAL1``, 8 bytes little-endian header length,
    a JSON header ``[[name, shape, offset], ...]`` (offsets in bytes from
    the data start), padding to 64 bytes, then each array as little-endian
    float32 in C order, each starting at a multiple of 64 bytes.

    Args:
      values: dict name -> numpy array (cast to float32 if needed).
      path: the file to write (str).

    Raises:
      OSError: the file cannot be written; no file is left at ``path``.
    """
    arrays, index, offset = [], [], 0
    for name, value in values.items():
        array = np.asarray(value, dtype="<f4", order="C")  # 0-d stays 0-d
        arrays.append(array)
        index.append([name, list(array.shape), offset])
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    header = json.dumps(index).encode()
    head = _VALUES_MAGIC + struct.pack("<Q", len(header)) + header
    tmp = "%s.tmp-%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(head + b"\0" * (-len(head) % _ALIGN))
            for array in arrays:
                f.write(memoryview(array).cast("B"))
                f.write(b"\0" * (-array.nbytes % _ALIGN))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def map_values_file(path):
    """Memory-maps a values file written by :func:`write_values_file`.

    Args:
      path: the values file (str).

    Returns:
      dict name -> read-only float32 numpy array (pages shared with every
      other process mapping the same file).

    Raises:
      CheckpointError: the file is not a complete values file.
    """
    data = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)  # plain views below
    head = bytes(data[:16])
    if len(head) < 16 or head[:8] != _VALUES_MAGIC:
        raise CheckpointError("%s: not a values file; delete it and build again" % path)
    (length,) = struct.unpack("<Q", head[8:])
    start = 16 + length
    start += -start % _ALIGN
    out = {}
    try:
        for name, shape, offset in json.loads(bytes(data[16:16 + length])):
            count = int(np.prod(shape, dtype=np.int64))
            begin = start + offset
            if begin + 4 * count > data.size:
                raise ValueError("%s ends past the end of the file" % name)
            out[name] = data[begin:begin + 4 * count].view("<f4").reshape(shape)
    except ValueError as e:
        raise CheckpointError("%s: damaged values file (%s); delete it and build again"
                              % (path, e)) from None
    return out


def _delete_hint(path):
    """What to delete to fetch a damaged checkpoint again: the V1 file, or the V2 directory."""
    if os.path.isfile(path):
        return "delete it from the cache and fetch again"
    directory = path if os.path.isdir(path) else os.path.dirname(path) or "."
    return "delete its directory %s from the cache and fetch again" % directory


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
