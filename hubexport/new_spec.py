"""Starting a spec for your own checkpoint: ``hubexport new-spec``.

Public entry point: :func:`new_spec`. It takes a shipped spec's
architecture, scope, image size, feature size, input mapping, card text and
module versions, and writes ``OUTPUT/NAME.yaml`` for a local checkpoint
(:mod:`hubexport.local_source`) under the user's handle prefix, from the
commented template ``templates/new_spec.yaml.j2``. The written spec is
validated (:func:`hubexport.specs.parse_spec_file`) before it is written
(temporary name, then rename), so it loads, lists and builds without edits; its card
fields that only the user can know (dataset, training) say TODO rather
than claiming ImageNet. Nothing here imports TensorFlow.
"""

import os
import re
from pathlib import Path

import jinja2

from hubexport.errors import SpecError, UsageError

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("hubexport", "templates"),
                          undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                          trim_blocks=True, lstrip_blocks=True, autoescape=False)
_ENV.policies["json.dumps_kwargs"] = {"ensure_ascii": False}
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


def new_spec(name, base, checkpoint, num_classes, handle, labels=None, output=".",
             specs_dir=None, force=False):
    """Writes a validated spec for a local checkpoint, started from a shipped spec.

    Args:
      name: the new model's name (lower-case letters, digits, '_'); the file
        is ``OUTPUT/NAME.yaml``.
      base: a model name (``hubexport list``) or an architecture
        (:data:`hubexport.nets.ARCHITECTURES`; its model with the largest
        image size) whose spec the new one starts from.
      checkpoint: the local checkpoint (V1 file, V2 prefix or training
        directory, see :mod:`hubexport.local_source`); it must exist.
      num_classes: the classes of the checkpoint's logits layer (int >= 1).
      handle: the handle prefix ``PUBLISHER/NAME[/...]``; the modules are
        ``HANDLE/classification/V`` and ``HANDLE/feature_vector/V``.
      labels: a label file (one label per line, ``num_classes`` lines), or
        None.
      output: the directory to write to (created if missing).
      specs_dir: where ``base`` is looked up (None: the shipped specs).
      force: replace an existing ``NAME.yaml``.

    Returns:
      Path of the spec written.

    Raises:
      UsageError: a bad name, handle, class count, base, label count, or
        an existing file without ``force``.
      FetchError: the checkpoint is not there (or lacks files).
      SpecError: the spec written does not validate (a bug; nothing is
        left behind).
    """
    from hubexport.local_source import checkpoint_files
    from hubexport.specs import DEFAULT_CHANGELOG_VERSIONS, KINDS, load_specs, parse_spec_file

    if not _NAME.fullmatch(name or ""):
        raise UsageError("model name %r: use lower-case letters, digits and '_', starting with "
                         "a letter (the spec file is NAME.yaml)" % (name,))
    parts = handle.strip("/").split("/")
    if len(parts) < 2 or not all(_PART.fullmatch(p) for p in parts) or parts[-1] in KINDS:
        raise UsageError("--handle %r: expected PUBLISHER/NAME[/...] (letters, digits, '_', "
                         "'.', '-'), e.g. acme/flowers/inception_v2; the modules land at "
                         "HANDLE/classification/VERSION and HANDLE/feature_vector/VERSION"
                         % (handle,))
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UsageError("--num-classes must be a whole number >= 1, got %r" % (num_classes,))
    spec = _base_spec(base, load_specs(specs_dir))
    output = Path(output).absolute()
    target = output / (name + ".yaml")
    if target.exists() and not force:
        raise UsageError("%s exists already; pass --force to replace it, or another --output"
                         % target)
    checkpoint = Path(checkpoint).expanduser().absolute()
    checkpoint_files(checkpoint, "--checkpoint")  # FetchError if it is not there
    if labels is not None:
        labels = Path(labels).expanduser().absolute()
        try:
            count = len(labels.read_text(encoding="utf-8").splitlines())
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError("--labels %s: cannot read (%s)"
                             % (labels, getattr(e, "strerror", None) or e)) from None
        if count != num_classes:
            raise UsageError("--labels %s has %d lines, --num-classes is %d; write one label "
                             "per class" % (labels, count, num_classes))
    prefix = "/".join(parts)
    families = [{"kind": kind, "handle": "%s/%s" % (prefix, kind),
                 "versions": [v for n, v in family.versions.items()
                              if n in DEFAULT_CHANGELOG_VERSIONS]}
                for kind, family in spec.modules.items()]
    text = _ENV.get_template("new_spec.yaml.j2").render(
        name=name, base=spec, handle=prefix, num_classes=num_classes,
        checkpoint=_relative(checkpoint, output), labels=labels and _relative(labels, output),
        card_path=_card_path(checkpoint), families=families,
        spec_file=_shown(target))
    try:  # the paths in it are relative to its final directory
        parse_spec_file(text, target)
    except SpecError as e:
        raise SpecError("new-spec wrote an invalid spec (a bug in hubexport): %s" % e) from None
    output.mkdir(parents=True, exist_ok=True)
    tmp = output / (".%s.tmp-%d" % (target.name, os.getpid()))
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as e:
        raise UsageError("cannot write %s (%s); check the --output directory"
                         % (target, e.strerror or e)) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def _base_spec(base, specs):
    """The ModelSpec a new spec starts from: a model by name, or an architecture's largest."""
    if base in specs:
        return specs[base]
    same = [s for s in specs.values() if s.architecture == base]
    if not same:
        raise UsageError("--from %r: not a model or an architecture of the specs (models: "
                         "see 'hubexport list'; architectures: %s)"
                         % (base, ", ".join(sorted({s.architecture for s in specs.values()}))))
    return max(same, key=lambda s: s.image_size)


def _relative(path, directory):
    """``path`` relative to ``directory`` if it lies below the directory's parent, else absolute."""
    rel = os.path.relpath(path, directory)
    return rel if not rel.startswith(os.pardir + os.sep + os.pardir) else str(path)


def _shown(path):
    """How the spec's comments name the spec file: relative to here if below it, else absolute."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith(os.pardir) else rel


def _card_path(checkpoint):
    """How the cards name a local checkpoint: its last path part (e.g. ``model.ckpt-5000``)."""
    return checkpoint.name if _PART.fullmatch(checkpoint.name) else "checkpoint"
