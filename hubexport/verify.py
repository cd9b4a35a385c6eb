"""The verify stage: check built or published modules against their specs.

Public entry point: :func:`verify` (returns a :class:`Report`;
``Report.raise_if_failed`` raises :class:`~hubexport.errors.VerificationError`,
exit code 3). ``hubexport verify`` accepts:

* a module directory ``.../<handle>/<version>/`` (build output or registry);
* an archive ``.../<handle>/<version>.tar.gz``;
* a build output directory (every module of the specs found under it);
* a registry directory (has ``index.json``): the index and every file it
  lists (see :func:`hubexport.publish.read_registry`), every archive's
  members against the index, then every module;
* a URL served by ``hubexport serve``: ``http://HOST:PORT/<handle>/<version>``
  (fetched as tensorflow_hub fetches it, ``?tf-hub-format=compressed``; the
  card from the same URL without the query) or ``http://HOST:PORT/`` (every
  module its ``index.json`` lists).

Which spec a module is checked against: the module handle is read off the
location. A directory must lie at ``.../<handle>/<version>`` and an archive
at ``.../<handle>/<version>.tar.gz`` (the build output and registry
layouts), a URL path must be ``/<handle>/<version>``, and the handle must be
one the specs define (``--specs``); ``handle=`` (``--handle``) overrides the
location. The card is ``<version>.md`` beside the module or archive (build
output layout), or the registry's ``assets/docs/...`` file when the module
lies in a registry.

Checks per module (each a :class:`Check` with a one-line detail):

* ``files``: only SavedModel paths (FACTS.md), with ``saved_model.pb`` and
  ``variables/variables.index``;
* ``format``: TF1 Hub format (``tfhub_module.pb`` = ModuleDef FORMAT_V3) or
  TF2 SavedModel (an object graph, no ``tfhub_module.pb``), as the spec says;
* ``tag_sets``: ``{}`` and ``{train}`` (TF1 Hub format) or ``{serve}`` (TF2);
* ``signatures``: exactly the spec's signatures in every tag set, each with
  its inputs (``images``, or ``inputs`` for ``serving_default``: float32
  [-1, S, S, 3] for the fixed size S, or [-1, -1, -1, 3] for a variable
  size; ``batch_norm_momentum`` float32 scalar) and outputs
  (``default``/``logits``/``feature_vector`` float32 [-1, 1001] or
  [-1, FEATURE_SIZE]); for a TF2 SavedModel also the root ``__call__``: its
  concrete functions (``training`` False and True) take ``inputs`` of that
  same float32 shape;
* ``image_module_info``: the ``hub_module_attachments`` of every meta graph
  say the default image size is S x S (TF1 Hub format only);
* ``variables``: the module's variables are exactly those the net asks for
  (names and shapes);
* ``inference``: the module loaded with ``hub.load`` computes finite outputs
  of shape [1, N] on one image at the default size (and, for TF2, the
  reusable SavedModel attributes and ``serving_default`` agree); left out
  with ``--no-inference``, which loads no module;
* ``card``: present, its first line names this module, and its metadata
  lines equal what :func:`hubexport.cards.render_card` writes for the spec.

Deployment variants (``build --deploy tflite|tfjs``): a ``.tflite`` file at
``.../<variant handle>.tflite`` (e.g. ``OUT/google/lite-model/imagenet/
mobilenet_v1_025_128/classification/5/default/1.tflite``), a TF.js graph
model directory at ``.../<variant handle>/`` (``OUT/google/tfjs-model/...
/3/default/1/``, with ``model.json``), and every variant found in a build
output, get the checks ``file`` (its files' sha256 are what its stamp, or
in a registry its index entry, records; a .tflite must be a TFLite flat
buffer), ``tflite`` (one float32 input [1, S, S, 3] and one float32
output [1, N], signature ``serving_default``, in TFLite's interpreter) or ``graph_model`` (the
manifest's weights fill the shards exactly, only ops TF.js 4.22 implements,
one float32 input [-1, S, S, 3] (-1 for any size) and output [-1, N]),
``inference`` (finite outputs on one image; with the parent module beside
it in the build output, the difference from the parent on the card's probe
images is at most 1.5 times (plus 1e-5) what the card states) and ``card``
(its first line names the variant, its metadata are what
:func:`hubexport.cards.render_variant_card` writes). In a registry a
variant's checks start with ``index`` (its entry agrees with the spec:
format, parent module, variant, quantization) and, for a TF.js directory,
``archive`` (its ``.tar.gz`` holds the files the index lists); the parent
module, if the registry holds it, is what ``inference`` compares with. A
served variant (``http://HOST:PORT/<variant handle>``, or each one a served
registry lists) is downloaded as its runtime downloads it (``model.json``
and its shards with ``?tfjs-format=file``, or ``?lite-format=tflite``;
``download``), then checked as a file or directory against its served
index entry, without a parent to compare with.

Archives add ``archive`` (members are SavedModel paths; for registries they
hash to what the index lists). TensorFlow is imported only when a module
is checked.

A module built from a checkpoint without a published checksum (``checksum:
unpublished``, ``build --allow-unpinned``) gets a ``source`` check that
holds (ok) and says so, e.g. ``unpinned: sha256:HEX (no published
checksum), N bytes from URL``; the human output prints it as a warning
line. It is read from what records the source: the stamp ``.<version>.stamp``
beside a module of a build output, the ``source`` of the module's entry in
``index.json`` (registry directory, a module directory or archive inside
one, a served registry, and a served module, whose server's
``/index.json`` is asked). A module directory or archive outside a build
output or registry has no such record, and gets no ``source`` check.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import tarfile
import tempfile
from pathlib import Path

from hubexport import publish as registry_io
from hubexport.deploy import module_source as _module_source
from hubexport.errors import FetchError, PublishError, UsageError, VerificationError

#: Seed of the smoke-inference image (uniform in [0, 1]).
SMOKE_SEED = 0
_TIMEOUT = 60.0  # seconds per HTTP request
_DT_FLOAT = 1  # tensorflow.DataType DT_FLOAT


@dataclasses.dataclass
class Check:
    """The outcome of one check: ``name``, ``ok`` (bool), ``detail`` (one line)."""

    name: str
    ok: bool
    detail: str

    def to_json(self):
        """Returns {"check", "ok", "detail"} (JSON-ready)."""
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


@dataclasses.dataclass
class ModuleReport:
    """The checks of one module.

    Attributes:
      module_handle: the handle it was checked as (None if unknown).
      source: what was checked (path or URL, str).
      checks: list of :class:`Check`.
    """

    module_handle: str | None
    source: str
    checks: list

    @property
    def ok(self):
        """True if at least one check ran and every check holds."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self):
        """``["check: detail", ...]`` of the failed checks."""
        return ["%s: %s" % (c.name, c.detail) for c in self.checks if not c.ok]

    @property
    def warnings(self):
        """``["check: detail", ...]`` of checks that hold but deserve attention.

        These are the ``source`` checks (a checkpoint without a published
        checksum).
        """
        return ["%s: %s" % (c.name, c.detail) for c in self.checks
                if c.ok and c.name == "source"]

    def to_json(self):
        """Returns {"module_handle", "source", "ok", "failures", "checks"} (JSON-ready)."""
        return {"module_handle": self.module_handle, "source": self.source, "ok": self.ok,
                "failures": self.failures, "checks": [c.to_json() for c in self.checks]}


@dataclasses.dataclass
class Report:
    """Everything :func:`verify` found.

    Attributes:
      target: the PATH_OR_URL given (str).
      kind: "module", "archive", "output", "registry", "url" (one module) or
        "registry-url".
      modules: list of :class:`ModuleReport`.
      problems: list of str, problems not tied to one module's checks
        (registry index, checksums, nothing found).
    """

    target: str
    kind: str
    modules: list
    problems: list

    @property
    def ok(self):
        """True only if something was checked and everything holds."""
        return bool(self.modules) and not self.problems and all(m.ok for m in self.modules)

    def reason(self):
        """One line: why verification failed (None if it did not)."""
        if self.ok:
            return None
        failed = [m for m in self.modules if not m.ok]
        parts = []
        if self.problems:
            parts.append(self.problems[0] + (" (and %d more problems)" % (len(self.problems) - 1)
                                             if len(self.problems) > 1 else ""))
        if failed:
            first = failed[0]
            parts.append("%d of %d modules failed; %s: %s"
                         % (len(failed), len(self.modules), first.module_handle or first.source,
                            "; ".join(first.failures)))
        return "; ".join(parts) or "nothing to verify in %s" % self.target

    def to_json(self):
        """Returns {"target", "kind", "ok", "reason", "problems", "modules"} (JSON-ready)."""
        return {"target": self.target, "kind": self.kind, "ok": self.ok,
                "reason": self.reason(), "problems": list(self.problems),
                "modules": [m.to_json() for m in self.modules]}

    def lines(self):
        """Human-readable lines: one per module, then its failures and warnings."""
        out = ["problem  %s" % p for p in self.problems]
        for m in self.modules:
            out.append("%-8s %s  (%s)" % ("ok" if m.ok else "FAILED",
                                          m.module_handle or "?", m.source))
            out.extend("         %s" % f for f in m.failures)
            out.extend("         warning: %s" % w for w in m.warnings)
        out.append("verified %d modules: %s" % (len(self.modules), "ok" if self.ok else "FAILED"))
        return out

    def raise_if_failed(self):
        """Raises VerificationError (exit code 3) with :meth:`reason` unless ``ok``."""
        if not self.ok:
            raise VerificationError("verification of %s failed: %s" % (self.target, self.reason()))


# --------------------------------------------------------------------------
# Entry point.


def verify(path_or_url, *, specs_dir=None, handle=None, inference=True):
    """Checks modules against their specs.

    Args:
      path_or_url: module directory, archive, build output directory,
        registry directory, or ``http(s)://`` URL of a served module or
        registry (see the module docstring).
      specs_dir: directory of model specs (None: the shipped specs).
      handle: module handle with version (e.g.
        ``google/imagenet/inception_v2/classification/3``) to check a single
        module or archive as, instead of reading it off its location.
      inference: False leaves out the ``inference`` check of every module
        and variant (``--no-inference``): no module is loaded or run, so a
        large build output is checked in seconds per module less; what the
        files, protos, variables and cards say is still checked.

    Returns:
      a :class:`Report` (``report.ok``; ``report.raise_if_failed()``).

    Raises:
      SpecError: the specs are invalid.
      UsageError: the path does not exist, or which module it is cannot be
        told (no ``--handle`` and the location names no known handle), or
        ``handle`` is not defined by the specs.
      FetchError: a URL cannot be reached at all.
    """
    from hubexport.specs import load_specs

    targets = {t.module_handle: t for spec in load_specs(specs_dir).values()
               for t in spec.targets()}
    if handle is not None and handle not in targets:
        raise UsageError("--handle %s is not a module the specs define; known: %s"
                         % (handle, ", ".join(sorted(targets))))
    checker = _Checker(targets, inference=inference)
    text = str(path_or_url)
    if text.startswith(("http://", "https://")):
        return checker.url(text, handle)
    path = Path(text)
    if not path.exists():
        raise UsageError("%s does not exist; pass a module directory, archive, build output, "
                         "registry or URL" % path)
    if path.is_file():
        if path.suffix == ".tflite":
            variants = _variants(targets)
            if handle is not None and handle not in variants:
                raise UsageError("--handle %s is not a deployment variant the specs define"
                                 % handle)
            variant = _match(list(path.resolve().parent.parts) + [path.stem], variants, handle,
                             path)
            return Report(text, "variant", [checker.variant(path, variant)], [])
        if not path.name.endswith((".tar.gz", ".tgz")):
            raise UsageError("%s is not a module archive (.tar.gz) or TFLite file (.tflite)"
                             % path)
        return Report(text, "archive", [checker.archive_file(path, handle)], [])
    if (path / "model.json").is_file():  # a TF.js graph model variant
        variants = _variants(targets)
        if handle is not None and handle not in variants:
            raise UsageError("--handle %s is not a deployment variant the specs define" % handle)
        variant = _match(path.resolve().parts, variants, handle, path)
        return Report(text, "variant", [checker.variant(path, variant)], [])
    if (path / registry_io.INDEX).is_file():
        return checker.registry(path)
    if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
        target = _match(path.resolve().parts, targets, handle, path)
        record = _module_source(path) or _registry_source(path, target)
        return Report(text, "module", [checker.module(path, target, *_find_card(path, target),
                                                      record=record)], [])
    return checker.output(path)


def _variants(targets):
    """variant handle -> :class:`hubexport.deploy.DeployTarget` of every module's variants."""
    from hubexport.deploy import FORMATS, deploy_targets

    out = {}
    for fmt in FORMATS:
        try:
            out.update((v.variant_handle, v) for v in deploy_targets(list(targets.values()),
                                                                     [fmt]))
        except UsageError:  # no module the format converts
            pass
    return out


def _registry_source(module_path, target):
    """The ``source`` of the module's entry in the index.json of the registry it lies in.

    ``module_path`` is the module directory, or its archive's path without
    ``.tar.gz``. Returns None if it lies in no registry, or the index does
    not list it.
    """
    root = module_path.resolve().parent
    for _ in target.module_handle.split("/")[:-1]:
        root = root.parent
    try:
        data = json.loads((root / registry_io.INDEX).read_text(encoding="utf-8"))
        return _index_source(data.get("modules"), target.module_handle)
    except (OSError, ValueError, AttributeError):
        return None


def _index_entry(entries, module_handle):
    """``module_handle``'s entry (dict) in an index's ``modules`` list, or None."""
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("module_handle") == module_handle:
            return entry
    return None


def _index_source(entries, module_handle):
    """The ``source`` of ``module_handle``'s entry in an index's ``modules``, or None."""
    entry = _index_entry(entries, module_handle)
    return entry.get("source") if entry else None


def _source_check(record):
    """The ``source`` check for a recorded source without a published checksum, else None.

    Args:
      record: the ``source`` dict of a build stamp or index entry, or None.

    Returns:
      a :class:`Check` that holds, or None (pinned, or nothing recorded).
    """
    if isinstance(record, dict) and record.get("path"):
        files = record.get("files") or {}
        return Check("source", True, "local checkpoint %s: %s (%s), %s bytes in %d files"
                     % (record["path"], record.get("checksum"),
                        "pinned by the spec" if record.get("pinned") else "not pinned",
                        record.get("size"), len(files)))
    if not isinstance(record, dict) or record.get("pinned", True) is not False:
        return None
    size = record.get("size")
    return Check("source", True, "unpinned: %s (no published checksum), %s from %s"
                 % (record.get("checksum"), "%d bytes" % size if isinstance(size, int)
                    else "size unknown", record.get("url")))


def _match(parts, targets, handle, where):
    """The Target whose handle the path ends in (or ``handle``)."""
    if handle is not None:
        return targets[handle]
    parts = list(parts)
    for module_handle in sorted(targets, key=len, reverse=True):
        rel = module_handle.split("/")
        if parts[-len(rel):] == rel:
            return targets[module_handle]
    raise UsageError("%s: cannot tell which module this is: its location does not end in "
                     "<handle>/<version> of a module the specs define (e.g. %s); pass --handle "
                     "or --specs" % (where, sorted(targets)[0] if targets else "none"))


def _find_card(module_path, target):
    """(card text or None, where it was looked for) for a module dir or archive path."""
    version = str(target.version.version)
    candidates = [module_path.parent / (version + ".md")]
    root = module_path.resolve().parent
    rel = target.module_handle.split("/")
    for _ in rel[:-1]:
        root = root.parent
    if (root / registry_io.INDEX).is_file():
        candidates.append(root / registry_io.docs_path(target.module_handle))
    for card in candidates:
        if card.is_file():
            return card.read_text(encoding="utf-8", errors="replace"), str(card)
    return None, " or ".join(str(c) for c in candidates)


# --------------------------------------------------------------------------
# The checks.


class _Checker:
    """Runs the checks; caches what the specs imply per (architecture, kind)."""

    def __init__(self, targets, inference=True):
        self.targets = targets
        self.inference = inference
        self._requests = {}
        self._parent_outputs = {}  # a variant's parent module dir -> its probe outputs

    # -- what is checked ---------------------------------------------------

    def output(self, path):
        modules = []
        for module_handle, target in sorted(self.targets.items()):
            module_dir = path / target.rel_path
            if module_dir.is_dir():
                modules.append(self.module(module_dir, target, *_find_card(module_dir, target),
                                           record=_module_source(module_dir)))
        from hubexport.deploy import variant_paths

        for _, variant in sorted(_variants(self.targets).items()):
            file = variant_paths(path, variant)[0]
            if file.exists():
                modules.append(self.variant(file, variant, output=path))
        problems = [] if modules else [
            "%s holds no module of the specs (<handle>/<version>/ directories); build first"
            % path]
        return Report(str(path), "output", modules, problems)

    def registry(self, root):
        reg = registry_io.read_registry(root, deep=True)
        problems = [message for _, message in reg.problems]
        modules = []
        variants = _variants(self.targets)
        for module_handle, entry in sorted(reg.entries.items()):
            if entry["format"] in registry_io.VARIANT_FORMATS:
                if module_handle not in variants:
                    problems.append("%s: no spec defines the variant %s (pass --specs)"
                                    % (root, module_handle))
                else:
                    modules.append(self._registry_variant(root, entry, variants[module_handle]))
                continue
            target = self.targets.get(module_handle)
            source = str(root / entry["module_dir"])
            if target is None:
                problems.append("%s: no spec defines %s (pass --specs)" % (root, module_handle))
                continue
            checks = [_index_check(entry, target)]
            archive = root / entry["archive"]
            try:
                files, _ = registry_io.archive_manifest(archive)
                if files == entry["files"]:
                    checks.append(Check("archive", True, "%d files, as index.json lists them"
                                        % len(files)))
                else:
                    checks.append(Check("archive", False, "%s holds other files than index.json "
                                        "lists: %s" % (archive, _dict_diff(files, entry["files"]))))
            except PublishError as e:
                checks.append(Check("archive", False, str(e)))
            doc = root / entry["doc"]
            card = doc.read_text(encoding="utf-8", errors="replace") if doc.is_file() else None
            report = self.module(root / entry["module_dir"], target, card, str(doc),
                                 record=entry.get("source"))
            report.checks[:0] = checks
            report.source = source
            modules.append(report)
        if not reg.entries and not problems:
            problems.append("%s: the registry lists no modules" % root)
        return Report(str(root), "registry", modules, problems)

    def _registry_variant(self, root, entry, target):
        """The checks of a variant a registry holds: its index entry, archive, then :meth:`variant`."""
        checks = [_variant_index_check(entry, target)]
        if entry["module_dir"] is not None:  # a directory variant and its .tar.gz
            archive = root / entry["archive"]
            try:
                files, _ = registry_io.archive_manifest(archive, entry["format"])
                checks.append(Check("archive", files == entry["files"], (
                    "%d files, as index.json lists them" % len(files)) if files == entry["files"]
                    else "%s holds other files than index.json lists: %s"
                    % (archive, _dict_diff(files, entry["files"]))))
            except PublishError as e:
                checks.append(Check("archive", False, str(e)))
        path = root / (entry["module_dir"] or entry["archive"])
        report = self.variant(path, target, output=root, record=_entry_record(entry),
                              card_path=root / entry["doc"])
        report.checks[:0] = checks
        return report

    def _variant_url(self, url, entry, target):
        """Downloads a served variant as its runtime would, then checks it (:meth:`variant`)."""
        from hubexport.deploy import variant_paths
        from hubexport.serve import VARIANT_QUERIES

        param, download, per_file = VARIANT_QUERIES[target.format]
        with tempfile.TemporaryDirectory(prefix="hubexport-verify-") as tmp:
            path, card, _ = variant_paths(tmp, target)  # the build output's layout
            path.parent.mkdir(parents=True)
            if per_file is None:
                names, fetch = [path.name], {path.name: (url, {param: download})}
            else:  # TF.js: model.json, then the shards its manifest names
                path.mkdir()
                names, fetch = ["model.json"], {"model.json": (url + "/model.json",
                                                               {param: per_file})}
            got, failed = 0, None
            while names and failed is None:
                name = names.pop(0)
                where, params = fetch[name]
                response = _http_get(where, params=params)
                if response.status_code != 200:
                    failed = "HTTP %d for %s?%s=%s" % (response.status_code, where, param,
                                                       params[param])
                    break
                dest = path / name if per_file else path
                dest.write_bytes(response.content)
                got += len(response.content)
                if name == "model.json":
                    try:
                        shards = [s for g in json.loads(response.content)["weightsManifest"]
                                  for s in g["paths"]]
                    except (ValueError, KeyError, TypeError):
                        shards = []
                    odd = [s for s in shards if not registry_io.is_tfjs_file(s)]
                    if odd:  # never a path outside the download directory
                        failed = "model.json names weight files %s; not TF.js shard names" % odd
                        break
                    names += shards
                    fetch.update((s, (url + "/" + s, {param: per_file})) for s in shards)
            if failed is not None:
                return ModuleReport(target.variant_handle, url,
                                    [Check("download", False, failed)])
            download_check = Check("download", True, "%d bytes in %d files, as %s fetches them"
                                   % (got, len(fetch), "tf.loadGraphModel(URL, {fromTFHub: "
                                      "true})" if per_file else "?%s=%s" % (param, download)))
            card_response = _http_get(url)
            if card_response.status_code == 200:
                card.write_bytes(card_response.content)
            report = self.variant(path, target, output=Path(tmp),
                                  record=_entry_record(entry) if entry else None,
                                  card_path=card)
        report.checks.insert(0, download_check)
        report.source = url
        return report

    def archive_file(self, path, handle, card=None, card_where=None, source=None,
                     record=None):
        name = path.name[:-len(".tar.gz")] if path.name.endswith(".tar.gz") else path.stem
        target = _match(list(path.resolve().parent.parts) + [name], self.targets, handle, path)
        if card is None and card_where is None:
            card, card_where = _find_card(path.parent / name, target)
        if source is None and record is None:  # a local archive: in a registry?
            record = _registry_source(path.parent / name, target)
        with tempfile.TemporaryDirectory(prefix="hubexport-verify-") as tmp:
            try:
                files, _ = registry_io.archive_manifest(path)
                with tarfile.open(path, "r:gz") as tar:
                    tar.extractall(tmp, filter="data")
            except (PublishError, tarfile.TarError, OSError) as e:
                return ModuleReport(target.module_handle, source or str(path),
                                    [Check("archive", False, str(e))])
            first = Check("archive", True, "%d files, all SavedModel paths" % len(files))
            report = self.module(Path(tmp), target, card, card_where, record=record)
        report.checks.insert(0, first)
        report.source = source or str(path)
        return report

    def url(self, url, handle):
        import urllib.parse

        split = urllib.parse.urlsplit(url)
        base = "%s://%s" % (split.scheme, split.netloc)
        path = split.path.rstrip("/")
        if path in ("", "/" + registry_io.INDEX):
            index = _http_get(base + "/" + registry_io.INDEX)
            if index.status_code != 200:
                return Report(url, "registry-url", [], ["%s/%s: HTTP %d" % (
                    base, registry_io.INDEX, index.status_code)])
            try:
                data = json.loads(index.content)
                entries = data["modules"]
                handles = [e["module_handle"] for e in entries]
                sums = {e["module_handle"]: e["sha256"] for e in entries}
            except (ValueError, KeyError, TypeError):
                return Report(url, "registry-url", [], ["%s/%s is not a registry index"
                                                        % (base, registry_io.INDEX)])
            problems, modules = [], []
            if data.get("digest") != registry_io.index_digest(entries):
                problems.append("%s/%s: its digest does not match its modules; the index was "
                                "edited or damaged" % (base, registry_io.INDEX))
            variants = _variants(self.targets)
            for module_handle in handles:
                if module_handle in variants:
                    modules.append(self._variant_url(base + "/" + module_handle,
                                                     _index_entry(entries, module_handle),
                                                     variants[module_handle]))
                    continue
                if module_handle not in self.targets:
                    problems.append("%s: no spec defines %s" % (url, module_handle))
                    continue
                modules.append(self._module_url(base + "/" + module_handle, module_handle,
                                                sums[module_handle],
                                                _index_source(entries, module_handle)))
            if not handles:
                problems.append("%s lists no modules" % url)
            return Report(url, "registry-url", modules, problems)
        module_handle = handle or path.lstrip("/")
        variants = _variants(self.targets)
        if module_handle in variants:
            return Report(url, "url", [self._variant_url(base + "/" + module_handle,
                                                         _served_entry(base, module_handle),
                                                         variants[module_handle])], [])
        if module_handle not in self.targets:
            raise UsageError("%s: the URL path is not /<handle>/<version> of a module the specs "
                             "define; pass --handle or --specs" % url)
        return Report(url, "url", [self._module_url(base + path, module_handle, None,
                                                    _served_source(base, module_handle))], [])

    def _module_url(self, url, module_handle, sha256, record=None):
        target = self.targets[module_handle]
        with tempfile.TemporaryDirectory(prefix="hubexport-verify-") as tmp:
            archive = Path(tmp, "%d.tar.gz" % target.version.version)
            response = _http_get(url, params={"tf-hub-format": "compressed"}, stream=True)
            if response.status_code != 200:
                first_line = response.text.strip().splitlines()[:1]
                return ModuleReport(module_handle, url, [Check(
                    "download", False, "HTTP %d for %s?tf-hub-format=compressed: %s"
                    % (response.status_code, url, first_line[0] if first_line else ""))])
            h = hashlib.sha256()
            try:
                with open(archive, "wb") as f:
                    for chunk in response.iter_content(registry_io.CHUNK):
                        h.update(chunk)
                        f.write(chunk)
            except Exception as e:  # requests' body errors vary by cause
                raise FetchError("%s: download failed (%s)" % (url, e)) from None
            size = archive.stat().st_size
            download = Check("download", sha256 is None or h.hexdigest() == sha256,
                             "%d bytes, sha256 %s%s" % (size, h.hexdigest(), "" if sha256 is None
                                                        else (", as index.json says"
                                                              if h.hexdigest() == sha256 else
                                                              ", index.json says %s" % sha256)))
            card_response = _http_get(url)
            card = card_response.text if card_response.status_code == 200 else None
            report = self.archive_file(archive, module_handle, card,
                                       "%s (HTTP %d)" % (url, card_response.status_code),
                                       source=url, record=record)
        report.checks.insert(0, download)
        return report

    # -- one module --------------------------------------------------------

    def module(self, module_dir, target, card, card_where, record=None):
        """Runs every check on one module directory; returns a ModuleReport.

        ``record`` is the recorded ``source`` of the module (build stamp or
        index entry), or None; an unpinned one adds the ``source`` check.
        """
        from hubexport.tfimport import import_tensorflow

        import_tensorflow()  # first: it filters TensorFlow's start-up chatter
        checks = []
        run = [self._files, self._format, self._tag_sets, self._signatures,
               self._image_module_info, self._variables, self._inference, self._labels]
        if not self.inference:
            run.remove(self._inference)
        state = {"dir": Path(module_dir), "target": target}
        for step in run:
            try:
                result = step(state)
            except Exception as e:  # a damaged module may break any TF call
                result = Check(step.__name__.lstrip("_"), False, "%s: %s"
                               % (type(e).__name__, _first_line(e)))
            if result is not None:
                checks.append(result)
        checks.append(_card_check(target, card, card_where))
        source = _source_check(record)
        if source is not None:
            checks.append(source)
        gc.collect()
        return ModuleReport(target.module_handle, str(module_dir), checks)

    def _files(self, state):
        try:
            files, _ = registry_io.module_files(state["dir"])
        except PublishError as e:
            return Check("files", False, str(e))
        missing = [f for f in ("saved_model.pb", "variables/variables.index") if f not in files]
        if not any(f.startswith("variables/variables.data-") for f in files):
            missing.append("variables/variables.data-*")
        if missing:
            return Check("files", False, "missing %s" % ", ".join(missing))
        state["files"] = files
        return Check("files", True, "%d files, all SavedModel paths" % len(files))

    def _saved_model(self, state):
        if "proto" not in state:
            from hubexport.tfimport import import_tensorflow

            import_tensorflow()  # first: it filters TensorFlow's start-up chatter
            from tensorflow.core.protobuf import saved_model_pb2

            state["proto"] = saved_model_pb2.SavedModel.FromString(
                (state["dir"] / "saved_model.pb").read_bytes())
        return state["proto"]

    def _format(self, state):
        from hubexport.formats import hub_protos

        fmt = state["target"].version.format
        proto = self._saved_model(state)
        tfhub = state["dir"] / "tfhub_module.pb"
        if fmt == "hub":
            if not tfhub.is_file():
                return Check("format", False, "no tfhub_module.pb: not the TF1 Hub format the spec "
                             "names")
            if tfhub.read_bytes() != hub_protos.module_def_bytes():
                return Check("format", False, "tfhub_module.pb is not ModuleDef(format=FORMAT_V3)")
            return Check("format", True, "TF1 Hub format (tfhub_module.pb FORMAT_V3)")
        if tfhub.exists():
            return Check("format", False, "tfhub_module.pb present: a TF1 Hub format module, the "
                         "spec names a TF2 SavedModel")
        if not proto.meta_graphs or not proto.meta_graphs[0].object_graph_def.nodes:
            return Check("format", False, "no object graph: not a TF2 SavedModel")
        return Check("format", True, "TF2 SavedModel (object graph, no tfhub_module.pb)")

    def _tag_sets(self, state):
        proto = self._saved_model(state)
        expected = ([(), ("train",)] if state["target"].version.format == "hub"
                    else [("serve",)])
        found = sorted(tuple(sorted(m.meta_info_def.tags)) for m in proto.meta_graphs)
        if found != expected:
            return Check("tag_sets", False, "tag sets %s, expected %s"
                         % (_tags(found), _tags(expected)))
        return Check("tag_sets", True, _tags(found))

    def _signatures(self, state):
        target = state["target"]
        version = target.version
        expected = set(version.signatures)
        problems = []
        for meta_graph in self._saved_model(state).meta_graphs:
            tags = _tags([tuple(sorted(meta_graph.meta_info_def.tags))])
            names = {k for k in meta_graph.signature_def if not k.startswith("__")}
            for name in sorted(expected - names):
                problems.append("tag set %s: signature %s missing" % (tags, name))
            for name in sorted(names - expected):
                problems.append("tag set %s: unexpected signature %s" % (tags, name))
            for name in sorted(expected & names):
                want_in, want_out = _signature_io(target, name)
                sig = meta_graph.signature_def[name]
                for side, want, got in (("input", want_in, sig.inputs),
                                        ("output", want_out, sig.outputs)):
                    for key in sorted(set(want) - set(got)):
                        problems.append("tag set %s: %s %s %s missing" % (tags, name, side, key))
                    if side == "input":
                        for key in sorted(set(got) - set(want)):
                            problems.append("tag set %s: %s has unexpected input %s"
                                            % (tags, name, key))
                    for key in sorted(set(want) & set(got)):
                        shape = _shape(got[key])
                        if got[key].dtype != _DT_FLOAT or shape != want[key]:
                            problems.append(
                                "tag set %s: %s %s %s has %s %s, expected float32 %s"
                                % (tags, name, side, key, _dtype_name(got[key].dtype),
                                   shape, want[key]))
        if version.format != "hub":
            problems += _call_problems(self._saved_model(state), _image_shape(target))
        if problems:
            more = " (and %d more)" % (len(problems) - 3) if len(problems) > 3 else ""
            return Check("signatures", False, "; ".join(problems[:3]) + more)
        names = ", ".join(sorted(expected)) or "no signatures"
        if version.format != "hub":
            names += " and __call__ (reusable SavedModel API)"
        return Check("signatures", True, "%s; images %s" % (names, _image_shape(target)))

    def _labels(self, state):
        return _labels_check(state["dir"], state["target"], self._saved_model(state))

    def _image_module_info(self, state):
        from hubexport.formats import hub_protos

        target = state["target"]
        if target.version.format != "hub":
            return Check("image_module_info", True, "not applicable (TF2 SavedModels carry no "
                         "module attachments)")
        want = [target.spec.image_size] * 2
        for meta_graph in self._saved_model(state).meta_graphs:
            tags = _tags([tuple(sorted(meta_graph.meta_info_def.tags))])
            values = meta_graph.collection_def[hub_protos.ATTACHMENT_COLLECTION].bytes_list.value
            infos = [value for key, value in map(hub_protos.parse_attachment, values)
                     if key == hub_protos.IMAGE_MODULE_INFO_KEY]
            if len(infos) != 1:
                return Check("image_module_info", False, "tag set %s has %d image_module_info "
                             "attachments, expected 1" % (tags, len(infos)))
            size = hub_protos.parse_image_module_info(infos[0])
            if size != want:
                return Check("image_module_info", False, "tag set %s says %dx%d, the spec %dx%d"
                             % (tags, size[0], size[1], want[0], want[1]))
        return Check("image_module_info", True, "default image size %dx%d" % tuple(want))

    def variant(self, path, target, output=None, record=None, card_path=None):
        """The checks of one deployment variant: a ``.tflite`` file or a TF.js directory.

        Args:
          path: the variant's file or directory.
          target: its :class:`hubexport.deploy.DeployTarget`.
          output: the build output or registry it lies in (for the parent
            module), or None to look for it where the variant handle says.
          record: what records the variant (its index entry, as
            :func:`_entry_record` makes it a stamp's record), or None to read
            the stamp beside it.
          card_path: its card, or None for ``<version>.md`` beside it.
        """
        from hubexport.deploy import PROBE_IMAGES, converter, probe_images, variant_files
        from hubexport.tfimport import import_tensorflow

        import numpy as np

        report = ModuleReport(target.variant_handle, str(path), [])
        checks = report.checks
        version = str(target.version)
        if card_path is None:
            card_path = path.parent / (version + ".md")
        if record is None:
            try:
                record = json.loads((path.parent / ("." + version + ".stamp")).read_text(
                    encoding="utf-8"))["variant"]
            except (OSError, ValueError, KeyError, TypeError):
                record = None
        if target.format == "tflite":
            with open(path, "rb") as f:
                if f.read(8)[4:8] != b"TFL3":
                    checks.append(Check("file", False,
                                        "not a TFLite flat buffer (no TFL3 identifier)"))
                    return report
        files = variant_files(path)
        if record is None:
            checks.append(Check("file", True, "%d files (no stamp beside it to compare with)"
                                % len(files)))
        elif files != record.get("files"):
            checks.append(Check("file", False, "its files differ from what its %s records: "
                                "%s" % (record.get("recorded_by", "stamp"),
                                        _dict_diff(files, record.get("files") or {}))))
        else:
            checks.append(Check("file", True, "%d files, sha256 as its %s records"
                                % (len(files), record.get("recorded_by", "stamp"))))
        import_tensorflow()
        spec, parent = target.parent.spec, target.parent
        runtime = (self._tflite_check if target.format == "tflite" else self._tfjs_check)
        check, out = runtime(path, target)
        checks.append(check)
        if not check.ok:
            return report
        if not self.inference:
            pass  # --no-inference
        elif not np.isfinite(out).all():
            checks.append(Check("inference", False, "non-finite outputs on one image"))
        else:
            levels = len(target.handle.split("/"))
            ancestors = path.resolve().parents
            root = (Path(output) if output is not None else
                    ancestors[levels] if len(ancestors) > levels else None)
            module_dir = root / parent.rel_path if root is not None else None
            stated = (record or {}).get("probe", {}).get("max_rel_diff")
            if module_dir is not None and module_dir.is_dir() and isinstance(stated, float):
                diff = converter(target.format).measure(
                    path, module_dir, probe_images(PROBE_IMAGES, spec.image_size))
                ok = diff["max_rel_diff"] <= 1.5 * stated + 1e-5
                checks.append(Check("inference", ok, "on %d probe images, %.3g of the largest "
                                    "output from the parent module %s; the card states %.3g"
                                    % (PROBE_IMAGES, diff["max_rel_diff"], parent.module_handle,
                                       stated)))
            else:
                checks.append(Check("inference", True, "finite outputs %s on one image (parent "
                                    "module not beside it: not compared)" % list(out.shape)))
        checks.append(_variant_card_check(target, card_path, record))
        return report

    def _tflite_check(self, path, target):
        """(the ``tflite`` check, outputs on one probe image) of a .tflite file."""
        from hubexport.deploy import probe_images
        from hubexport.deploy.tflite import run

        spec, parent = target.parent.spec, target.parent
        width = spec.num_classes if parent.kind == "classification" else spec.feature_size
        want_in, want_out = [1, spec.image_size, spec.image_size, 3], [1, width]
        try:
            out, info = run(path, probe_images(1, spec.image_size, seed=SMOKE_SEED))
        except Exception as e:  # noqa: BLE001 - BuildError, or a crash in the interpreter
            return Check("tflite", False, str(e)), None
        problems = []
        for key, shape in (("input", want_in), ("output", want_out)):
            if (info[key]["shape"], info[key]["dtype"]) != (shape, "float32"):
                problems.append("%s %s %s, expected float32 %s" % (
                    key, info[key]["dtype"], info[key]["shape"], shape))
        if info["signatures"] != ["serving_default"]:
            problems.append("signatures %s, expected ['serving_default']" % info["signatures"])
        return Check("tflite", not problems, "; ".join(problems) or
                     "input float32 %s, output float32 %s, signature serving_default"
                     % (want_in, want_out)), out

    def _tfjs_check(self, path, target):
        """(the ``graph_model`` check, outputs on one probe image) of a TF.js directory."""
        from hubexport.deploy import probe_images
        from hubexport.deploy.tfjs import TFJS_OPS, read_graph_model, run

        spec, parent = target.parent.spec, target.parent
        width = spec.num_classes if parent.kind == "classification" else spec.feature_size
        size = -1 if parent.version.input_size == "variable" else spec.image_size
        want_in, want_out = [-1, size, size, 3], [-1, width]
        try:
            graph, model = read_graph_model(path)
            out = run(path, probe_images(1, spec.image_size, seed=SMOKE_SEED))
        except Exception as e:  # noqa: BLE001 - BuildError, or TensorFlow refusing the graph
            return Check("graph_model", False, _first_line(e)), None
        problems = []
        if model.get("format") != "graph-model":
            problems.append("format %r, expected 'graph-model'" % model.get("format"))
        ops = sorted({n.op for n in graph.node} - TFJS_OPS)
        if ops:
            problems.append("ops TF.js 4.22 lacks: %s" % ", ".join(ops))
        for key, shape in (("inputs", want_in), ("outputs", want_out)):
            infos = list(model["signature"].get(key, {}).values())
            got = [[int(d.get("size", 0)) for d in i.get("tensorShape", {}).get("dim", [])]
                   for i in infos]
            if got != [shape] or infos[0].get("dtype") != "DT_FLOAT":
                problems.append("signature %s %s, expected one float32 %s" % (key, got, shape))
        return Check("graph_model", not problems, "; ".join(problems) or
                     "graph-model, input float32 %s, output float32 %s, %d weights, only ops "
                     "TF.js implements" % (want_in, want_out,
                                           len(model["weightsManifest"][0]["weights"]))), out

    def _expected_variables(self, target):
        from hubexport.nets import variable_requests

        key = (target.spec.architecture, target.kind)
        if key not in self._requests:
            num_classes = target.spec.num_classes if target.kind == "classification" else None
            self._requests[key] = {r.name: list(r.shape) for r in
                                   variable_requests(target.spec.architecture, num_classes)}
        return self._requests[key]

    def _variables(self, state):
        import tensorflow as tf

        target = state["target"]
        want = self._expected_variables(target)
        if target.version.format == "hub":
            reader = tf.train.load_checkpoint(str(state["dir"] / "variables" / "variables"))
            got = {k: list(v) for k, v in reader.get_variable_to_shape_map().items()}
        else:
            got = {}
            for node in self._saved_model(state).meta_graphs[0].object_graph_def.nodes:
                if node.WhichOneof("kind") == "variable":
                    name = node.variable.name.split(":")[0]
                    got[name] = [d.size for d in node.variable.shape.dim]
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        wrong = sorted(n for n in set(want) & set(got) if want[n] != got[n])
        problems = (["missing %s" % ", ".join(missing[:3])] if missing else []) + \
                   (["unexpected %s" % ", ".join(extra[:3])] if extra else []) + \
                   ["%s has shape %s, the net needs %s" % (n, got[n], want[n]) for n in wrong[:3]]
        if problems:
            return Check("variables", False, "; ".join(problems))
        return Check("variables", True, "%d variables, %d values, as the %s net needs"
                     % (len(got), sum(_prod(s) for s in got.values()), target.spec.architecture))

    def _inference(self, state):
        import numpy as np
        import tensorflow as tf
        import tensorflow_hub as hub

        target = state["target"]
        spec = target.spec
        size = spec.image_size
        n = spec.num_classes if target.kind == "classification" else spec.feature_size
        images = tf.constant(np.random.default_rng(SMOKE_SEED).uniform(
            0, 1, (1, size, size, 3)).astype(np.float32))
        module = hub.load(str(state["dir"]))
        if target.version.format == "hub":
            out = module.signatures["default"](images=images)["default"].numpy()
            what = "signature default"
        else:
            missing = [a for a in ("variables", "trainable_variables", "regularization_losses")
                       if not hasattr(module, a)]
            if missing:
                return Check("inference", False, "reusable SavedModel attributes missing: %s"
                             % ", ".join(missing))
            out = module(images, training=False).numpy()
            what = "__call__(training=False)"
            if "serving_default" in target.version.signatures:
                key = "logits" if target.kind == "classification" else "feature_vector"
                served = module.signatures["serving_default"](inputs=images)[key].numpy()
                if served.shape != out.shape or float(np.abs(served - out).max()) > 1e-5:
                    return Check("inference", False, "serving_default differs from __call__")
                what += " and serving_default"
        if out.shape != (1, n):
            return Check("inference", False, "%s on 1 image of %dx%d pixels gave shape %s, "
                         "expected (1, %d)" % (what, size, size, list(out.shape), n))
        if not np.isfinite(out).all():
            return Check("inference", False, "%s gave non-finite values" % what)
        return Check("inference", True, "%s on 1 image of %dx%d pixels: [1, %d] finite"
                     % (what, size, size, n))


def _labels_check(module_dir, target, proto):
    """The ``labels`` check: a spec's labels are ``assets/labels.txt``, one per class.

    Args:
      module_dir: the module directory (Path).
      target: its :class:`hubexport.specs.Target`.
      proto: its ``SavedModel`` proto (a TF2 module must list the asset).

    Returns:
      a :class:`Check`, or None when neither the spec nor the module has labels.
    """
    from hubexport.formats import LABELS_FILE

    spec, path = target.spec, Path(module_dir) / "assets" / LABELS_FILE
    if spec.labels is None and not path.exists():
        return None
    if not path.is_file():
        return Check("labels", False, "no assets/%s; the spec names labels %s"
                     % (LABELS_FILE, spec.labels))
    count = len(path.read_text(encoding="utf-8").splitlines())
    if count != spec.num_classes:
        return Check("labels", False, "assets/%s has %d labels (lines), num_classes is %d"
                     % (LABELS_FILE, count, spec.num_classes))
    how = "a plain file (TF1 Hub format)"
    if target.version.format != "hub":
        listed = [a.filename for mg in proto.meta_graphs for a in mg.asset_file_def]
        if LABELS_FILE not in listed:
            return Check("labels", False, "assets/%s is not a SavedModel asset (not in "
                         "asset_file_def)" % LABELS_FILE)
        how = "a SavedModel asset"
    return Check("labels", True, "assets/%s: %d labels, one per class, %s"
                 % (LABELS_FILE, count, how))


def _variant_card_check(target, card_path, record):
    """The ``card`` check of a deployment variant (its first line and metadata)."""
    from hubexport.cards import METADATA_RE, render_variant_card, variant_title

    if not card_path.is_file():
        return Check("card", False, "no card %s" % card_path)
    text = card_path.read_text(encoding="utf-8", errors="replace")
    first = variant_title(target)
    if not text.startswith(first + "\n"):
        return Check("card", False, "%s: first line %r, expected %r"
                     % (card_path, text.splitlines()[0] if text else "", first))
    got = dict(METADATA_RE.findall(text))
    if record is not None:
        want = dict(METADATA_RE.findall(render_variant_card(target, record)))
    else:
        want = dict(got, **{"parent-model": target.parent.module_handle, "format": target.format})
    if got != want:
        return Check("card", False, "%s: metadata %s" % (card_path, _dict_diff(got, want)))
    return Check("card", True, "%s names the variant and its parent %s"
                 % (card_path.name, target.parent.module_handle))


def _card_check(target, card, card_where):
    from hubexport.cards import parse_card, render_card
    from hubexport.nets import get_net

    if card is None:
        return Check("card", False, "no card (looked for %s)" % card_where)
    handle, metadata = parse_card(card)
    if handle != target.module_handle:
        return Check("card", False, "%s: handle line names %s, expected %s"
                     % (card_where, handle or "nothing ('# Module PUBLISHER/NAME/VERSION' "
                        "missing)", target.module_handle))
    _, want = parse_card(render_card(target, get_net(target.spec.architecture).min_image_size))
    diffs = []
    for key in sorted(set(want) | set(metadata)):
        if metadata.get(key) != want.get(key):
            diffs.append("%s is %r, expected %r" % (key, metadata.get(key), want.get(key)))
    if diffs:
        return Check("card", False, "%s: metadata %s" % (card_where, "; ".join(diffs)))
    return Check("card", True, "%s: handle line and %d metadata lines as the spec says"
                 % (card_where, len(want)))


def _entry_record(entry):
    """A variant's index entry as the record :meth:`_Checker.variant` reads (a stamp's)."""
    return dict(entry, size=entry.get("module_size"), recorded_by="index entry")


def _variant_index_check(entry, target):
    """The ``index`` check of a variant's entry against its spec's :class:`DeployTarget`."""
    parent = target.parent
    want = {"format": target.format, "parent_module": parent.module_handle,
            "variant": target.variant, "quantization": target.quantization,
            "architecture": parent.spec.architecture, "kind": parent.kind,
            "image_size": parent.spec.image_size}
    diffs = ["%s is %r, the spec says %r" % (k, entry.get(k), v)
             for k, v in want.items() if entry.get(k) != v]
    if diffs:
        return Check("index", False, "; ".join(diffs))
    return Check("index", True, "entry agrees with the spec; %s %d bytes, sha256 %s"
                 % (entry["archive"].rsplit("/", 1)[-1], entry["size"], entry["sha256"]))


def _index_check(entry, target):
    want = {"format": target.version.format, "signatures": list(target.version.signatures),
            "architecture": target.spec.architecture, "kind": target.kind,
            "image_size": target.spec.image_size, "input_size": target.version.input_size}
    diffs = ["%s is %r, the spec says %r" % (k, entry.get(k), v)
             for k, v in want.items() if entry.get(k) != v]
    if diffs:
        return Check("index", False, "; ".join(diffs))
    return Check("index", True, "entry agrees with the spec; archive %d bytes, sha256 %s"
                 % (entry["size"], entry["sha256"]))


def _image_shape(target):
    """The images' shape the spec gives: [-1, S, S, 3] at its fixed size S, or [-1, -1, -1, 3]."""
    size = target.spec.image_size if target.version.input_size == "fixed" else -1
    return [-1, size, size, 3]


def _call_problems(proto, want):
    """What is wrong with the root ``__call__`` of a TF2 SavedModel (list of str).

    Args:
      proto: the ``SavedModel`` proto.
      want: the images' expected shape (list, -1 for any).

    Each concrete function of ``__call__`` (TF-Hub's reusable SavedModel API)
    must take float32 images of shape ``want`` as its first argument; the
    canonicalized input signature is ((args...), {kwargs}).
    """
    graph = proto.meta_graphs[0].object_graph_def
    children = {c.local_name: c.node_id for c in graph.nodes[0].children}
    if "__call__" not in children or \
            graph.nodes[children["__call__"]].WhichOneof("kind") != "function":
        return ["no __call__ function (reusable SavedModel API)"]
    names = list(graph.nodes[children["__call__"]].function.concrete_functions)
    if not names:
        return ["__call__ has no concrete functions"]
    problems = []
    for name in names:
        signature = graph.concrete_functions[name].canonicalized_input_signature
        args = signature.tuple_value.values[0].tuple_value.values \
            if len(signature.tuple_value.values) == 2 else []
        spec = args[0].tensor_spec_value if args and args[0].HasField("tensor_spec_value") \
            else None
        if spec is None:
            problems.append("__call__ takes no images tensor first")
            continue
        shape = None if spec.shape.unknown_rank else [d.size for d in spec.shape.dim]
        if spec.dtype != _DT_FLOAT or shape != want:
            problems.append("__call__ input %s has %s %s, expected float32 %s"
                            % (spec.name or "images", _dtype_name(spec.dtype), shape, want))
    return sorted(set(problems))


def _signature_io(target, name):
    """(inputs, outputs): dict key -> expected shape (list) of one signature."""
    spec = target.spec
    image = _image_shape(target)
    classes, features = [-1, spec.num_classes], [-1, spec.feature_size]
    if name == "serving_default":
        key = "logits" if target.kind == "classification" else "feature_vector"
        return {"inputs": image}, {key: classes if key == "logits" else features}
    inputs = {"images": image}
    if name.endswith("_with_bn_hparams"):
        inputs["batch_norm_momentum"] = []
    if name.startswith("image_classification") or (name == "default"
                                                   and target.kind == "classification"):
        return inputs, {"default": classes}
    return inputs, {"default": features}


def _shape(info):
    if info.tensor_shape.unknown_rank:
        return None
    return [d.size for d in info.tensor_shape.dim]


def _dtype_name(enum):
    import tensorflow as tf

    try:
        return tf.dtypes.as_dtype(enum).name
    except TypeError:
        return "dtype %d" % enum


def _tags(tag_sets):
    return ", ".join("{%s}" % ", ".join(t) for t in tag_sets)


def _prod(shape):
    result = 1
    for d in shape:
        result *= d
    return result


def _dict_diff(got, want):
    diffs = sorted(set(got) ^ set(want)) + sorted(k for k in set(got) & set(want)
                                                  if got[k] != want[k])
    return ", ".join(diffs[:5])


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _served_source(base, module_handle):
    """The ``source`` of a module in the index a server serves at ``/index.json``, or None."""
    entry = _served_entry(base, module_handle)
    return entry.get("source") if entry else None


def _served_entry(base, module_handle):
    """The entry of a module or variant in the index served at ``/index.json``, or None."""
    try:
        response = _http_get(base + "/" + registry_io.INDEX)
        if response.status_code != 200:
            return None
        return _index_entry(json.loads(response.content).get("modules"), module_handle)
    except (FetchError, ValueError, AttributeError):
        return None


def _http_get(url, params=None, stream=False):
    import requests

    try:
        return requests.get(url, params=params, stream=stream, timeout=_TIMEOUT)
    except requests.RequestException as e:
        raise FetchError("%s: cannot reach the server (%s); is hubexport serve running?"
                         % (url, _first_line(e))) from None
