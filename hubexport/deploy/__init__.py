"""The deploy stage: variants of built modules for other runtimes (TFLite, TF.js).

Public entry points: :func:`deploy_targets` (which variants a build's
modules get) and :func:`write_variant` (writes one, with its card; run by
:mod:`hubexport.build` in a worker process after the parent module is
built). Which module versions have variants in which format is spec data
(a version's ``deploy`` list); the variants, their handles and file names
are data too: ``hubexport/data/deploy.yaml``. The converter of each format
is its own module (:mod:`hubexport.deploy.tflite`,
:mod:`hubexport.deploy.tfjs`).

Output layout (``OUT`` = ``--output``), beside the modules::

    OUT/google/lite-model/imagenet/mobilenet_v1_025_128/classification/5/default/1.tflite
    OUT/google/lite-model/imagenet/mobilenet_v1_025_128/classification/5/default/1.md
    OUT/google/lite-model/imagenet/mobilenet_v1_025_128/classification/5/default/.1.stamp
    OUT/google/tfjs-model/imagenet/mobilenet_v1_025_128/classification/3/default/1/  model.json, shards
    OUT/google/tfjs-model/imagenet/mobilenet_v1_025_128/classification/3/default/1.md

The file (or directory) is written to a temporary name and renamed; the card follows, then
the stamp, whose hash covers the parent module's stamp, so a rebuilt parent
makes its variants out of date.

Each variant's accuracy cost is measured when it is written: the variant
and its parent module run on :data:`PROBE_IMAGES` synthetic images
(:func:`probe_images`), and the largest difference, absolute and relative
to the largest output magnitude, goes into the stamp and the card. (A
.tflite runs in TensorFlow's TFLite interpreter; a TF.js graph model is
read back from its files, weights dequantized as TF.js does, and run in
TensorFlow.)
"""

import dataclasses
import functools
import hashlib
import json
from pathlib import Path

import yaml

from hubexport import __version__
from hubexport.atomic import disk_error, write_text
from hubexport.errors import UsageError

#: Synthetic images on which a variant's difference from its parent is measured.
PROBE_IMAGES = 4


@functools.lru_cache(maxsize=1)
def variant_table():
    """The deploy formats of ``hubexport/data/deploy.yaml`` (dict format -> dict)."""
    return yaml.safe_load((Path(__file__).resolve().parent.parent / "data" / "deploy.yaml")
                          .read_text(encoding="utf-8"))


#: The formats ``--deploy`` accepts.
FORMATS = ("tflite", "tfjs")


@dataclasses.dataclass(frozen=True, repr=False)
class DeployTarget:
    """One deployment variant of one module.

    Attributes:
      parent: the module's :class:`hubexport.specs.Target`.
      format: a name of :data:`FORMATS`, e.g. ``"tflite"``.
      variant: the variant's name in deploy.yaml, e.g. ``"default"``.
      quantization: the converter's quantization, e.g. ``"float32"``.
      title: a few words on it for the card's description, e.g.
        ``"dynamic-range quantized"``.
      summary: one line on what the quantization does (for the card).
    """

    parent: object
    format: str
    variant: str
    quantization: str
    title: str
    summary: str

    def __repr__(self):
        return "DeployTarget(%r)" % self.variant_handle

    @property
    def handle(self):
        """The variant's handle without its version (str), e.g.
        ``google/lite-model/imagenet/mobilenet_v1_025_128/classification/5/default``."""
        publisher, rest = self.parent.module_handle.split("/", 1)
        return "%s/%s/%s/%s" % (publisher, variant_table()[self.format]["prefix"], rest,
                                self.variant)

    @property
    def version(self):
        """The variant's own version (int; deploy.yaml's ``variant_version``)."""
        return int(variant_table()[self.format]["variant_version"])

    @property
    def variant_handle(self):
        """The full handle (str): :attr:`handle` plus ``/VERSION``."""
        return "%s/%d" % (self.handle, self.version)


def deploy_targets(targets, formats):
    """The variants of ``targets`` that ``formats`` ask for.

    Args:
      targets: :class:`hubexport.specs.Target` of the build.
      formats: names of :data:`FORMATS` (``--deploy``), possibly empty.

    Returns:
      list of :class:`DeployTarget`, in the order of ``targets`` then of
      deploy.yaml's variants.

    Raises:
      UsageError: an unknown format, or a format none of the targets' specs
        list under ``deploy`` (the message says which versions do).
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise UsageError("--deploy %s: use one of %s" % (unknown[0], ", ".join(FORMATS)))
    out = []
    for fmt in sorted(set(formats), key=FORMATS.index):
        entry = variant_table()[fmt]
        parents = [t for t in targets if fmt in t.version.deploy]
        if not parents:
            having = sorted({n for t in targets for family in t.spec.modules.values()
                             for n, v in family.versions.items() if fmt in v.deploy})
            raise UsageError("--deploy %s: none of the modules to build has a %s variant (their "
                             "specs list it under deploy for version %s); pass one of those "
                             "--version or drop --version"
                             % (fmt, fmt, ", ".join(map(str, having)) or "none"))
        out += [DeployTarget(t, fmt, v["name"], v["quantization"], v["title"],
                             " ".join(v["summary"].split()))
                for t in parents for v in entry["variants"]]
    return out


def variant_paths(output, target):
    """(file or directory, card, stamp) Paths of a :class:`DeployTarget` under ``output``."""
    parent = Path(output) / target.handle
    version = str(target.version)
    suffix = variant_table()[target.format]["suffix"]
    return parent / (version + suffix), parent / (version + ".md"), parent / ("." + version + ".stamp")


def variant_stamp(target, parent_stamp):
    """The hash (hex str) that decides whether a written variant is up to date.

    Args:
      target: a :class:`DeployTarget`.
      parent_stamp: the parent module's stamp hash (its ``.N.stamp``'s ``stamp``).
    """
    return hashlib.sha256(("%s|%s|%s|%s|%s" % (parent_stamp, target.format, target.variant,
                                                target.quantization, __version__)).encode()
                          ).hexdigest()


def is_up_to_date(output, target, parent_stamp):
    """True if the variant's file, card and a stamp matching ``parent_stamp`` are in place."""
    path, card, stamp = variant_paths(output, target)
    try:
        return (path.exists() and card.is_file()
                and json.loads(stamp.read_text())["stamp"] == variant_stamp(target, parent_stamp))
    except (OSError, ValueError, KeyError):
        return False


def difference(got, want):
    """How far a variant's outputs are from its parent's (numpy arrays of the same shape).

    Returns:
      dict of floats: ``max_abs_diff`` (largest absolute difference),
      ``max_abs_output`` (largest magnitude of ``want``) and ``max_rel_diff``
      (their ratio; inf if ``want`` is all zero).
    """
    import numpy as np

    diff = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))))
    scale = float(np.max(np.abs(want)))
    return {"max_abs_diff": diff, "max_abs_output": scale,
            "max_rel_diff": diff / scale if scale > 0 else float("inf")}


def probe_images(n, size, seed=0):
    """float32 [n, size, size, 3] in [0, 1]: smooth random colour fields plus a little noise.

    Deterministic for (n, size, seed). Smooth structure, unlike i.i.d. noise
    (which pooling averages away), gives each image clearly different outputs.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    cell = 24  # pixels per random colour cell
    coarse = rng.uniform(0, 1, (n, size // cell + 2, size // cell + 2, 3))
    img = np.repeat(np.repeat(coarse, cell, axis=1), cell, axis=2)[:, :size, :size, :]
    return (0.8 * img + 0.2 * rng.uniform(0, 1, (n, size, size, 3))).astype(np.float32)


def converter(fmt):
    """The converter module of a format (its ``write_variant_files`` and ``measure``)."""
    if fmt == "tflite":
        from hubexport.deploy import tflite

        return tflite
    from hubexport.deploy import tfjs

    return tfjs


def write_variant(target, module_dir, output, parent_stamp):
    """Writes one variant (file or directory, card, stamp) from its built parent module.

    Runs in a build worker process (it imports TensorFlow).

    Args:
      target: a :class:`DeployTarget`.
      module_dir: the parent module's directory (Path or str), built.
      output: the build output directory.
      parent_stamp: the parent module's stamp hash.

    Returns:
      (path, card Path, record dict): the record is what the stamp holds
      (see :func:`variant_record`).

    Raises:
      BuildError: the conversion failed or a file could not be written
        (nothing partial is left where the variant belongs).
    """
    import shutil

    from hubexport.cards import render_variant_card

    path, card, stamp = variant_paths(output, target)
    spec = target.parent.spec
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise disk_error("create", path.parent, e.strerror or e, output) from None
    version = str(target.version)
    leftovers = (path.name + ".tmp-", ".%s.tmp-" % path.name, ".%s.md.tmp-" % version,
                 "..%s.stamp.tmp-" % version)
    for old in path.parent.iterdir():  # of an interrupted build of this variant
        if old.name.startswith(leftovers):
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    for old in (stamp, card):  # the variant is out of date until its new stamp is written
        if old.exists():
            old.unlink()
    writer = converter(target.format)
    io = writer.write_variant_files(module_dir, path, target)
    diff = writer.measure(path, module_dir, probe_images(PROBE_IMAGES, spec.image_size))
    record = variant_record(target, path, io, diff, module_source(module_dir))
    write_text(card, render_variant_card(target, record))
    write_text(stamp, json.dumps({"stamp": variant_stamp(target, parent_stamp),
                                   "hubexport": __version__, "variant": record}, indent=1))
    return path, card, record


def variant_files(path):
    """{relative name: sha256 hex} of a variant's file, or of every file in its directory."""
    from hubexport.hashing import sha256_file

    path = Path(path)
    if path.is_file():
        return {path.name: sha256_file(path)[0]}
    return {p.relative_to(path).as_posix(): sha256_file(p)[0]
            for p in sorted(path.rglob("*")) if p.is_file()}


def module_source(module_dir):
    """The ``source`` a module's build stamp (``.N.stamp`` beside ``module_dir``) records, or None."""
    module_dir = Path(module_dir)
    stamp = module_dir.parent / (".%s.stamp" % module_dir.name)
    try:
        return json.loads(stamp.read_text(encoding="utf-8"))["module"]["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def variant_record(target, path, io, diff, source=None):
    """The stamp's record of a written variant.

    Args:
      target: the :class:`DeployTarget`.
      path: the variant's file or directory.
      io: the converter's ``{"input": {"name", "shape"}, "output": {"name",
        "shape"}}`` (shapes with -1 for any size).
      diff: the converter's ``measure`` dict.
      source: the checkpoint the parent module was built from, as the
        parent's stamp records it (:func:`hubexport.build.build_record`'s
        ``source``), or None.

    Returns:
      dict (JSON-ready): ``variant_handle``, ``handle``, ``version``,
      ``parent_module`` (the module handle), ``format``, ``variant``,
      ``quantization``, ``architecture``, ``kind`` and ``image_size``
      (pixels) of the parent, ``file`` (the file's or directory's name),
      ``files`` ({name relative to it: sha256}), ``size`` (bytes in all),
      ``input`` (``{"name", "shape", "dtype", "range"}``), ``output``
      (``{"name", "shape", "dtype"}``), ``probe`` (the measured difference
      from the parent: ``images``, ``max_abs_diff``, ``max_rel_diff``,
      ``max_abs_output``), ``source`` (as given) and ``tensorflow`` (the
      converter's release). ``hubexport publish`` copies these into the
      variant's index entry.
    """
    import sys

    path = Path(path)
    files = variant_files(path)
    size = (path.stat().st_size if path.is_file()
            else sum((path / name).stat().st_size for name in files))
    tf = sys.modules.get("tensorflow")
    parent = target.parent
    return {
        "variant_handle": target.variant_handle, "handle": target.handle,
        "version": target.version, "parent_module": parent.module_handle,
        "format": target.format, "variant": target.variant,
        "architecture": parent.spec.architecture, "kind": parent.kind,
        "image_size": parent.spec.image_size, "source": source,
        "quantization": target.quantization, "file": path.name, "files": files, "size": size,
        "input": dict(io["input"], dtype="float32", range=[0.0, 1.0]),
        "output": dict(io["output"], dtype="float32"),
        "probe": dict(diff, images=PROBE_IMAGES),
        "tensorflow": getattr(tf, "__version__", None),
    }
