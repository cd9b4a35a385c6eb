"""Stand-in checkpoint tarballs for tests and demos (the real ones are unreachable).

Public entry point: :func:`make_standin`. It writes a tarball with the real
one's file name and member name holding a checkpoint in the real one's
format with every variable of the real checkpoint -- names, shapes and
dtypes read from the checked-in manifest ``hubexport/data/<arch>_manifest.json``
(made by ``scripts/make_manifest.py`` from TF-Slim's own net definitions, never
from hubexport's nets) -- filled with seeded random values that make a
numerically sane net, and a copy of the shipped spec whose checkpoint size
and checksum are those of the stand-in, so that
``hubexport build --specs <spec_dir>`` accepts it.

The manifest header says which format (``header.checkpoint``; see
:func:`load_manifest`):

* ``"format": "v1"`` (the default when the field is absent; the Inception
  and ResNet tarballs): a tar.gz with one member, ``<member>``, a TF V1
  checkpoint file (no ``.index``).
* ``"format": "v2"`` (the MobileNet ``.tgz`` files): ``<member>`` is a V2
  prefix; the tar.gz holds ``<member>.index`` and
  ``<member>.data-00000-of-00001`` (one shard, as TF-Slim's) beside stand-ins
  of the other files the real tarballs carry (ZOO.md section 2):
  ``<member>.meta``, ``<stem>_frozen.pb``, ``<stem>.tflite``,
  ``<stem>_info.txt`` and ``<stem>_eval.pbtxt``, where ``<stem>`` is
  ``<member>`` without ``.ckpt`` (:func:`extra_member_names`). Their
  contents are NOT real (not a MetaGraphDef, GraphDef or TFLite model): a
  line of text saying so. hubexport never extracts them; they are there so
  that extraction is tested on an archive shaped like the real one.

Value recipe (per variable, by its last name component):
  * ``weights`` / ``pointwise_weights`` of layers followed by batch norm
    and ReLU: N(0, sqrt(2 / fan_in)) (He), so ReLU activations keep their
    scale through the 60+ blocks of Inception-ResNet-V2; weights of linear
    steps (logits, residual ``up`` projections, which are scaled by 0.1-0.2
    anyway, depthwise weights): N(0, sqrt(1 / fan_in));
  * ``biases``: N(0, 0.01);
  * ``BatchNorm/beta``: N(0, 0.05); ``moving_mean``: N(0, 0.05);
    ``moving_variance``: uniform [0.5, 1.5) (positive); ``gamma`` (batch
    norm with scale, as in the ResNets): uniform [0.8, 1.2);
  * ``global_step`` (int64): a seeded integer in [1, 10**6).
Values are drawn with ``numpy.random.default_rng(seed)`` in manifest order,
so the same seed gives the same values and (TF's V1 and V2 writers being
byte-deterministic for the same values, see tests/test_standin.py) a
byte-identical tarball.

TensorFlow is imported lazily, inside :func:`make_standin`.
"""

import dataclasses
import gzip
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

from hubexport.errors import BuildError, UsageError
from hubexport.hashing import sha256_file
from hubexport.nets import ARCHITECTURES

DATA_DIR = Path(__file__).resolve().parent / "data"
# Values of a manifest's ``header.checkpoint.format``; the first is the default.
CHECKPOINT_FORMATS = ("v1", "v2")
# Gzip level of the tarball: random floats hardly compress, level 1 is fastest.
GZIP_LEVEL = 1


@dataclasses.dataclass(frozen=True)
class StandinResult:
    """What :func:`make_standin` wrote.

    Attributes:
      tarball: path of ``<out_dir>/<canonical tarball file name>``.
      spec_dir: directory holding ``<name>.yaml``, the spec pinned to the
        stand-in (pass it as ``hubexport build --specs``).
      size: the tarball's size in bytes.
      checksum: ``"sha256:<64 hex digits>"`` of the tarball, as written in the spec.
    """

    tarball: Path
    spec_dir: Path
    size: int
    checksum: str


def load_manifest(architecture):
    """Reads the checked-in variable manifest of an architecture's real checkpoint.

    Args:
      architecture: a name of :data:`hubexport.nets.ARCHITECTURES`.

    Returns:
      dict with ``header``, ``num_variables``, ``num_parameters``
      (global_step excluded) and ``variables``: list of {``name``, ``shape``
      (list of ints), ``dtype`` ("float32" or "int64")} in TF-Slim's creation
      order. ``header["checkpoint"]`` names the real tarball: ``tarball``
      (file name), ``member`` (the V1 file or V2 prefix inside it),
      ``image_size`` (pixels) and ``format`` (``"v1"`` or ``"v2"``; filled in
      as ``"v1"`` when the file has no such field).

    Raises:
      UsageError: unknown architecture.
      BuildError: ``header.checkpoint.format`` is not one of
        :data:`CHECKPOINT_FORMATS`.
    """
    if architecture not in ARCHITECTURES:
        raise UsageError("unknown architecture %r; known: %s"
                         % (architecture, ", ".join(ARCHITECTURES)))
    if not (DATA_DIR / ("%s_manifest.json" % architecture)).is_file():
        raise UsageError("no variable manifest for %r in %s; make one with "
                         "scripts/make_manifest.py" % (architecture, DATA_DIR))
    path = DATA_DIR / ("%s_manifest.json" % architecture)
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    checkpoint = manifest["header"]["checkpoint"]
    checkpoint.setdefault("format", CHECKPOINT_FORMATS[0])
    if checkpoint["format"] not in CHECKPOINT_FORMATS:
        raise BuildError("%s: header.checkpoint.format: %r is not one of %s"
                         % (path, checkpoint["format"], ", ".join(CHECKPOINT_FORMATS)))
    return manifest


def standin_values(manifest, seed=0):
    """Draws the stand-in values of every manifest variable.

    Args:
      manifest: as returned by :func:`load_manifest`.
      seed: int seed of ``numpy.random.default_rng``.

    Returns:
      dict name -> numpy array of the manifest's shape and dtype
      (float32, or int64 for ``global_step``), in manifest order.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    names = {v["name"] for v in manifest["variables"]}
    values = {}
    for var in manifest["variables"]:
        name, shape, dtype = var["name"], tuple(var["shape"]), var["dtype"]
        leaf = name.rsplit("/", 1)[-1]
        if dtype == "int64":
            values[name] = np.asarray(rng.integers(1, 10**6), np.int64).reshape(shape)
            continue
        if dtype != "float32":
            raise BuildError("manifest variable %s has dtype %s; expected float32 or int64"
                             % (name, dtype))
        if leaf == "moving_variance":
            value = rng.uniform(0.5, 1.5, shape)
        elif leaf == "gamma":
            value = rng.uniform(0.8, 1.2, shape)
        elif leaf in ("beta", "moving_mean"):
            value = rng.normal(0.0, 0.05, shape)
        elif leaf == "biases":
            value = rng.normal(0.0, 0.01, shape)
        elif leaf in ("weights", "depthwise_weights", "pointwise_weights"):
            # fan_in: every axis but the last (output channels); for depthwise
            # weights [kh, kw, in, multiplier] it is kh * kw.
            fan_in = int(np.prod(shape[:2])) if leaf == "depthwise_weights" \
                else int(np.prod(shape[:-1]))
            scope = name.rsplit("/", 1)[0]
            # ReLU follows batch-normed convolutions and Inception V2's
            # separable Conv2d_1a_7x7 (after its pointwise step).
            followed_by_relu = (scope + "/BatchNorm/beta" in names
                                or leaf == "pointwise_weights")
            gain = 2.0 if followed_by_relu else 1.0
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(
                np.sqrt(gain / fan_in))
        else:
            raise BuildError("manifest variable %s: no stand-in recipe for %r" % (name, leaf))
        values[name] = np.asarray(value, np.float32)
    return values


def write_v1_checkpoint(values, path):
    """Writes a TF V1 checkpoint file (one file, no ``.index``).

    Builds one variable per entry in a fresh ``tf.Graph`` (initialized by
    feeding, so the values are not copied into the graph) and saves them with
    ``tf.compat.v1.train.Saver(write_version=SaverDef.V1)``.

    Args:
      values: dict checkpoint key -> numpy array (float32 / int64).
      path: the file to write.
    """
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        feeds, var_list = {}, {}
        for i, (name, value) in enumerate(values.items()):
            ph = tf.compat.v1.placeholder(tf.as_dtype(value.dtype), value.shape)
            var = tf.compat.v1.Variable(ph, name="v%d" % i, trainable=False)
            feeds[ph] = value
            var_list[name] = var
        init = tf.compat.v1.variables_initializer(list(var_list.values()))
        saver = tf.compat.v1.train.Saver(var_list=var_list, sharded=False,
                                         write_version=tf.compat.v1.train.SaverDef.V1)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(init, feed_dict=feeds)
            feeds.clear()
            # The V1 format is deprecated; TF logs a banner saying so. V1 is
            # what the real tarballs hold, so silence it.
            logger = tf.get_logger()
            level = logger.level
            logger.setLevel("ERROR")
            try:
                saver.save(sess, str(path), write_meta_graph=False, write_state=False)
            finally:
                logger.setLevel(level)


def write_v2_checkpoint(values, prefix):
    """Writes a TF V2 checkpoint: ``<prefix>.index`` and ``<prefix>.data-00000-of-00001``.

    Runs one ``tf.raw_ops.SaveV2`` op (TensorFlow's own V2 writer, the one
    ``tf.train.Checkpoint`` and ``tf.compat.v1.train.Saver`` use) in a fresh
    ``tf.Graph``, fed the values through placeholders, so it works whether
    or not eager execution is on. The output is byte-deterministic: the same
    values give the same two files, in another process and with TensorFlow
    2.15 as with 2.21 (checked when this writer was added; tests/test_standin.py
    checks it within a process): the index is a table sorted by key with
    CRC32C checksums and no time stamp.

    Args:
      values: dict checkpoint key -> numpy array (float32 / int64).
      prefix: the checkpoint prefix (str or Path); its directory must exist.
    """
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        names = list(values)
        placeholders = [tf.compat.v1.placeholder(tf.as_dtype(values[n].dtype), values[n].shape)
                        for n in names]
        save = tf.raw_ops.SaveV2(prefix=tf.constant(str(prefix)), tensor_names=names,
                                 shape_and_slices=[""] * len(names), tensors=placeholders)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(save, feed_dict=dict(zip(placeholders, (values[n] for n in names))))


def extra_member_names(member):
    """The other members a V2 stand-in tarball carries beside the checkpoint.

    Args:
      member: the checkpoint prefix, e.g. ``mobilenet_v1_1.0_224.ckpt``.

    Returns:
      list of names: ``<member>.meta``, ``<stem>_frozen.pb``,
      ``<stem>.tflite``, ``<stem>_info.txt``, ``<stem>_eval.pbtxt`` (``<stem>``:
      ``member`` without a final ``.ckpt``), as in the MobileNet tarballs
      (ZOO.md section 2).
    """
    stem = member[:-len(".ckpt")] if member.endswith(".ckpt") else member
    return [member + ".meta", stem + "_frozen.pb", stem + ".tflite", stem + "_info.txt",
            stem + "_eval.pbtxt"]


def write_standin_tarball(values, member, tarball, checkpoint_format="v1"):
    """Writes a deterministic tar.gz holding ``values`` as a checkpoint named ``member``.

    Args:
      values: dict checkpoint key -> numpy array (float32 / int64).
      member: the checkpoint's name inside the tarball (V1 file or V2 prefix).
      tarball: the file to write (overwritten).
      checkpoint_format: ``"v1"``: one member, a V1 checkpoint file
        (:func:`write_v1_checkpoint`); ``"v2"``: ``<member>.index``,
        ``<member>.data-00000-of-00001`` (:func:`write_v2_checkpoint`) and
        the stand-ins of :func:`extra_member_names` (one line of text each,
        not real files of their kind).

    Raises:
      BuildError: unknown ``checkpoint_format``.
    """
    if checkpoint_format not in CHECKPOINT_FORMATS:
        raise BuildError("checkpoint format %r is not one of %s"
                         % (checkpoint_format, ", ".join(CHECKPOINT_FORMATS)))
    tarball = Path(tarball)
    work = Path(tempfile.mkdtemp(prefix=".standin-", dir=tarball.parent))
    try:
        path = work / member
        path.parent.mkdir(parents=True, exist_ok=True)
        if checkpoint_format == "v1":
            write_v1_checkpoint(values, path)
            entries = [(member, path)]
        else:
            write_v2_checkpoint(values, path)
            shards = member + ".data-00000-of-00001"
            entries = [(member + ".index", work / (member + ".index")),
                       (shards, work / shards)]
            for name in extra_member_names(member):
                text = ("hubexport stand-in for %s: not a real file of its kind; hubexport "
                        "never reads it\n" % name)
                entries.append((name, text.encode("utf-8")))
            entries.sort()
        _write_tarball(entries, tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_tarball(entries, tarball):
    """Deterministic tar.gz: mtime 0, uid/gid 0, no owner names, gzip mtime 0, in list order.

    Args:
      entries: list of (member name, Path of the file to add, or bytes).
      tarball: the file to write.
    """
    with open(tarball, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                          compresslevel=GZIP_LEVEL) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.size = len(content) if isinstance(content, bytes) else os.path.getsize(content)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if isinstance(content, bytes):
                tar.addfile(info, io.BytesIO(content))
            else:
                with open(content, "rb") as src:
                    tar.addfile(info, src)


def pin_spec_text(text, size, checksum, source="spec"):
    """Replaces the checkpoint ``size`` and ``checksum`` lines of a spec's text.

    Only the first ``size:`` and ``checksum:`` lines inside the top-level
    ``checkpoint:`` block change (their indentation is kept); every other
    byte -- comments, order, the rest of the spec -- is preserved. A block
    with a ``checksum:`` line and no ``size:`` line (as a spec with
    ``checksum: unpublished`` may be) gets a ``size:`` line inserted right
    after the checksum line, with its indentation and line ending.

    Args:
      text: the spec file's text.
      size: the new size in bytes.
      checksum: the new ``ALGO:HEX`` checksum.
      source: the spec's path, for messages.

    Returns:
      the new text.

    Raises:
      BuildError: the spec has no ``checkpoint:`` block with a
        ``checksum:`` line.
    """
    lines = text.splitlines(keepends=True)
    replaced = {}
    in_block = False
    for i, line in enumerate(lines):
        if re.match(r"checkpoint:\s*(#.*)?$", line):
            in_block = True
            continue
        if in_block and line.strip() and not line[0].isspace():
            break  # next top-level key
        m = re.match(r"(\s+)(size|checksum):", line) if in_block else None
        if m and m.group(2) not in replaced:
            value = str(size) if m.group(2) == "size" else checksum
            newline = line[len(line.rstrip("\r\n")):]
            lines[i] = "%s%s: %s%s" % (m.group(1), m.group(2), value, newline)
            replaced[m.group(2)] = i
    if "checksum" in replaced and "size" not in replaced:
        i = replaced["checksum"]
        body = lines[i].rstrip("\r\n")
        ending = lines[i][len(body):]
        indent = re.match(r"\s+", body).group(0)
        if ending:
            lines.insert(i + 1, "%ssize: %s%s" % (indent, size, ending))
        else:  # the checksum line ends the file, without a line break
            lines[i] = body + ("\r\n" if "\r\n" in text else "\n")
            lines.insert(i + 1, "%ssize: %s" % (indent, size))
        replaced["size"] = i + 1
    if set(replaced) != {"size", "checksum"}:
        raise BuildError("%s: no checkpoint size/checksum lines to pin the stand-in to; "
                         "the spec needs a 'checkpoint:' block with 'checksum:' (and 'size:')"
                         % source)
    return "".join(lines)


def pin_variant_text(text, variant, size, checksum, source="spec"):
    """Pins one model of a variant table: its row's ``published`` entry.

    The file is re-written through YAML (comments are dropped: this is for
    the spec copies stand-ins are built from, not for shipped specs): row
    ``variant.index`` of ``variants`` gets ``published: {<resolution>:
    {size, checksum}}`` for the model's resolution, other rows and
    resolutions unchanged.

    Args:
      text: the spec file's text (a variant table).
      variant: the model's :class:`hubexport.specs.Variant`.
      size: the tarball's size in bytes.
      checksum: its ``ALGO:HEX`` checksum.
      source: the spec's path, for messages.

    Returns:
      the new text.

    Raises:
      BuildError: the text has no such row.
    """
    import yaml

    data = yaml.safe_load(text)
    try:
        row = data["variants"][variant.index]
    except (TypeError, KeyError, IndexError):
        raise BuildError("%s: no variants[%d] row to pin the stand-in to"
                         % (source, variant.index)) from None
    published = row.get("published") or {}
    published[variant.resolution] = {"size": int(size), "checksum": checksum}
    row["published"] = published
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def make_standin(model, out_dir, seed=0):
    """Writes a stand-in checkpoint tarball and a spec pinned to it.

    Args:
      model: a model name of the shipped specs (``hubexport list``), e.g.
        ``inception_v2`` or, from a variant table, ``mobilenet_v1_025_128``;
        its architecture needs a manifest.
      out_dir: directory to write to (created if missing). Receives
        ``<canonical tarball name>`` (e.g. ``inception_v2_2016_08_28.tar.gz``,
        holding the member ``inception_v2.ckpt``; for a manifest with
        ``"format": "v2"``, e.g. ``mobilenet_v1_1.0_224.tgz`` holding
        ``mobilenet_v1_1.0_224.ckpt.index``, ``.data-00000-of-00001`` and the
        stand-ins of :func:`extra_member_names`; see
        :func:`write_standin_tarball`) and ``specs/<spec file name>``: the
        shipped spec file pinned to the stand-in. For a model of a variant
        table the file already in ``specs/`` (from an earlier call for
        another model of the table) is pinned further, so one directory
        can hold stand-ins of several variants.
      seed: int; the same seed gives byte-identical output.

    Returns:
      :class:`StandinResult` (tarball path, spec directory, size in bytes,
      ``sha256:...`` checksum).

    Raises:
      UsageError: unknown model.
      SpecError: the shipped spec is invalid.
      BuildError: the spec cannot be read or pinned, or (a spec of one
        model) disagrees with the manifest about the tarball or member name;
        the manifest's checkpoint format is unknown.

    Sizes and times (2-core CPU): Inception V2 about 41.7 MB in about 7 s,
    Inception-ResNet-V2 about 220 MB in about 20 s.
    """
    from hubexport import specs as specs_module

    shipped = specs_module.load_specs(specs_module.default_specs_dir())
    if model not in shipped:
        raise UsageError("unknown model %r; known: %s" % (model, ", ".join(shipped)))
    spec = shipped[model]
    manifest = load_manifest(spec.architecture)
    expected = manifest["header"]["checkpoint"]
    # A manifest names the tarball of its architecture at one resolution;
    # a variant table's other resolutions have tarballs of their own names.
    if spec.variant is None and (spec.checkpoint.filename, spec.checkpoint.member) != (
            expected["tarball"], expected["member"]):
        raise BuildError("%s: checkpoint %s/%s differs from the manifest's %s/%s"
                         % (spec.source, spec.checkpoint.filename, spec.checkpoint.member,
                            expected["tarball"], expected["member"]))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_dir = out_dir / "specs"
    spec_dir.mkdir(exist_ok=True)
    spec_out = spec_dir / spec.source.name
    spec_path = spec_out if spec.variant is not None and spec_out.is_file() else spec.source
    try:
        spec_text = spec_path.read_text(encoding="utf-8")
    except OSError as e:
        raise BuildError("%s: cannot read the spec (%s)" % (spec_path, e.strerror or e))
    tarball = out_dir / spec.checkpoint.filename

    work = Path(tempfile.mkdtemp(prefix=".standin-", dir=out_dir))
    try:
        tmp_tarball = work / (tarball.name + ".part")
        write_standin_tarball(standin_values(manifest, seed), spec.checkpoint.member,
                              tmp_tarball, expected["format"])
        hexdigest, size = sha256_file(tmp_tarball)
        checksum = "sha256:" + hexdigest
        if spec.variant is None:
            pinned = pin_spec_text(spec_text, size, checksum, source=spec_path)
        else:
            pinned = pin_variant_text(spec_text, spec.variant, size, checksum, source=spec_path)
        tmp_spec = work / (spec_out.name + ".part")
        tmp_spec.write_text(pinned, encoding="utf-8")
        got = specs_module.parse_spec_file(pinned, spec_out)[model]  # still valid
        if got.checkpoint.checksum != checksum:
            raise BuildError("%s: pinning %s did not take" % (spec_path, model))
        os.replace(tmp_tarball, tarball)
        os.replace(tmp_spec, spec_out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return StandinResult(tarball=tarball, spec_dir=spec_dir, size=size, checksum=checksum)
