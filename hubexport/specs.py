"""Model specs: the YAML files that say what to export and how.

A model names a TF-Slim checkpoint tarball (URL, size, checksum, member), the
net that reads it (architecture, scope, image size, classes, feature size),
its card text and its module families (classification, feature_vector, each
with versions). ``specs/NAME.yaml`` describes the model NAME (as
``specs/inception_v2.yaml``) or, with a ``variants`` table, models ``NAME_...``
(``specs/mobilenet_v2.yaml`` documents it): one per depth multiplier row and
resolution, the fields :data:`TEMPLATED` being format strings over
:data:`TEMPLATE_VARIABLES`. Each model is a :class:`ModelSpec` (``source``:
its file, ``variant``: its row).

Loading checks the structure against the JSON Schema ``spec.schema.yaml``
(with jsonschema), then the cross-field rules. Any problem, for any input
bytes, raises :class:`hubexport.errors.SpecError` with the one-line message
``FILE:LINE: field: problem`` (field e.g. ``variants[3].depth_multiplier``, or
``(document)`` for syntax errors, tabs and bad encoding).

``checkpoint.checksum: unpublished`` marks a tarball without a published
checksum (:attr:`CheckpointSource.pinned` False; see :mod:`hubexport.fetch`).
``checkpoint.path`` (instead of ``url``, ``member`` and ``size``) names a
local checkpoint: a TF V1 file, a V2 prefix or a training directory with a
``checkpoint`` state file (see :mod:`hubexport.local_source`); its optional
``checksum`` pins the files' digest. ``labels`` names a class label file.
Relative paths are relative to the spec file.

Public entry point of the specs stage: :func:`load_specs` (and
:func:`load_spec_file`, :func:`parse_spec_file`, :func:`load_spec`,
:func:`parse_spec`). This module does not import TensorFlow.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import pathlib
import posixpath
import re
import urllib.parse
from typing import Any, NoReturn

import jsonschema
import yaml

from hubexport.errors import SpecError, UsageError
from hubexport.nets import ARCHITECTURES, InputMapping

# The card defaults of TF-Slim's ImageNet checkpoints (FACTS.md, the seed
# cards); a spec with a local checkpoint must state its own.
IMAGENET_DATASET, IMAGENET_DATASET_NAME = "imagenet-ilsvrc-2012-cls", "Imagenet (ILSVRC-2012-CLS)"
DEFAULT_HUB_URL = "https://tfhub.dev"
# The schema of spec files; its enums (formats: TF1 Hub format, TF2 SavedModel).
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SCHEMA = yaml.load(pathlib.Path(__file__).with_name("spec.schema.yaml").read_text("utf-8"),
                    Loader=_FAST_LOADER)
KINDS, FORMATS, INPUT_SIZES, SIGNATURES = (
    tuple(_SCHEMA["$defs"][name]["enum"]) for name in ("kind", "format", "input_size", "signature"))
# Checksum algorithms and the length of their hex digests (characters).
CHECKSUM_HEX_LENGTHS = {"md5": 32, "sha256": 64, "sha384": 96, "sha512": 128}
# The checksum value of a source whose publisher gave no checksum.
UNPUBLISHED = "unpublished"
URL_SCHEMES = ("http", "https", "file")
# The placeholders of templates: the row's depth multiplier (float, "1.0"),
# 100 times it (int; "{depth_percent:03d}" is "075"), the resolution (pixels).
TEMPLATE_VARIABLES = ("depth_multiplier", "depth_percent", "resolution")
# The fields that are templates in a spec with variants.
TEMPLATED = (("name",), ("architecture",), ("display_name",), ("checkpoint", "url"),
             ("checkpoint", "member"), ("checkpoint", "card_path"),
             ("modules", "classification", "handle"), ("modules", "feature_vector", "handle"),
             ("card", "implementation"))
# The versions templates/_changelog.md.j2 has entries for (others: card.changelog).
DEFAULT_CHANGELOG_VERSIONS = (1, 3, 4, 5)

# Signatures a kind or format cannot serve (bn_hparams ones may come with a
# fixed input size: mobilenet_v2's version 3).
_SIGNATURES_FORBIDDEN = {
    "feature_vector": ({"image_classification", "image_classification_with_bn_hparams"},
                       "a feature_vector module cannot serve it"),
    "hub": ({"serving_default"}, "format hub cannot serve it"),
    "saved_model_2": (set(SIGNATURES) - {"serving_default"},
                      "format saved_model_2 cannot serve it"),
}
# What a version needs for a deployment format (hubexport/deploy/): the
# TFLite converter reads serving_default, the TF.js writer a TF1 Hub format
# module's default signature.
_DEPLOY_NEEDS = {
    "tflite": (lambda v: "serving_default" in v["signatures"],
               "the TFLite converter reads the serving_default signature, which this "
               "version does not have"),
    "tfjs": (lambda v: v["format"] == "hub",
             "the TF.js writer converts TF1 Hub format modules (format: hub)"),
}

_DOCUMENT = "(document)"
# Largest integer a spec may hold (sizes are int64 byte counts).
_MAX_INT = 2**63 - 1
# Most values a spec may expand to (aliases multiply them), deepest nesting.
_MAX_VALUES, _MAX_DEPTH = 100_000, 100
# Integers must be written in decimal (YAML 1.1 would also read 0x.., 0b..,
# octal 0.. and sexagesimal 1:30).
_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9_]*)")
_LINE_BREAK = re.compile(r"\r\n|[\n\r\x85\u2028\u2029]")
# Keys that can appear in a dotted field path as they are.
_SIMPLE_KEY = re.compile(r"[^\s\[\].:]{1,64}")


# --------------------------------------------------------------------------
# The data model.


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """Where a checkpoint tarball comes from and how to verify it.

    Attributes:
        url: http, https or file URL of the tarball (``.tar.gz``, ``.tgz``),
            or None for a local checkpoint.
        size: size of the tarball in bytes, or None if not published (or
            local).
        checksum_algo: ``"md5"``, ``"sha256"``, ``"sha384"`` or ``"sha512"``
            (hashlib names), or None if the checksum is unpublished.
        checksum_hex: the expected digest, lower-case hex, or None if the
            checksum is unpublished.
        member: path in the tarball of the TF V1 checkpoint file, or the
            prefix of a V2 checkpoint's (``<member>.index``, ``.data-*``);
            None for a local checkpoint.
        card_path: the checkpoint's name as the cards print it
            (``<tarball stem>/<member>``; local: the path's last part).
        path: the local checkpoint (absolute: a V1 file, a V2 prefix or a
            directory with a ``checkpoint`` state file), or None.
        use_moving_averages: restore every variable from its
            ``<name>/ExponentialMovingAverage`` shadow (as TF-Slim's eval does).
    """

    url: str | None
    size: int | None
    checksum_algo: str | None
    checksum_hex: str | None
    member: str | None
    card_path: str
    path: pathlib.Path | None = None
    use_moving_averages: bool = False

    @property
    def local(self) -> bool:
        """Whether the checkpoint is a local path, not a tarball to download (bool)."""
        return self.path is not None

    @property
    def pinned(self) -> bool:
        """Whether the spec pins a checksum (bool; not ``checksum: unpublished``)."""
        return self.checksum_algo is not None

    @property
    def checksum(self) -> str:
        """The checksum as the spec writes it: ``"ALGO:HEX"`` (lower-case) or ``"unpublished"``."""
        return f"{self.checksum_algo}:{self.checksum_hex}" if self.pinned else UNPUBLISHED

    @property
    def filename(self) -> str:
        """The tarball's file name (str): the last path component of ``url`` (local: ``path``'s)."""
        return self.path.name if self.local else _url_filename(self.url)


@dataclasses.dataclass(frozen=True)
class CardInfo:
    """Model-specific text of the documentation cards.

    Attributes:
        network_architecture: value of the card's ``network-architecture``
            metadata, e.g. ``"inception-v2"``.
        overview: Markdown of the card's Overview section (the papers).
        classes_note: Markdown the cards print about the logits' classes in
            place of the ImageNetLabels.txt sentence (e.g. that the ResNet V1
            checkpoints have no background class), or None.
        implementation: Markdown ending "This TF-Hub module uses the TF-Slim
            implementation of ..." (None: the architecture's name).
        checkpoints_from: Markdown link to where the checkpoint was
            downloaded (None: TF-Slim's list of pre-trained models).
        changelog: version -> the Markdown items replacing its entry of
            ``templates/_changelog.md.j2`` (other versions: that entry).
        dataset: the card's ``dataset`` metadata value.
        dataset_name: the dataset as the cards' description lines name it.
        training: Markdown of the card's Training section (None: the
            checkpoint was downloaded from TF-Slim's pre-trained models and
            trained on ImageNet).
        hub_url: where the module handles of the cards' usage examples are
            served (no trailing '/'), e.g. ``https://tfhub.dev``.
    """

    network_architecture: str
    overview: str
    classes_note: str | None = None
    implementation: str | None = None
    checkpoints_from: str | None = None
    dataset: str = IMAGENET_DATASET
    dataset_name: str = IMAGENET_DATASET_NAME
    training: str | None = None
    hub_url: str = DEFAULT_HUB_URL
    changelog: dict[int, tuple[str, ...]] = dataclasses.field(default_factory=dict, hash=False)


@dataclasses.dataclass(frozen=True)
class VersionSpec:
    """One version of a module family.

    Attributes:
        version: the version number (positive int), e.g. 3.
        format: ``"hub"`` (TF1 Hub format) or ``"saved_model_2"`` (TF2).
        input_size: ``"fixed"`` (image_size x image_size pixels only) or
            ``"variable"`` (image_size is the default).
        signatures: names of the signatures the module serves, in spec order.
        deploy: the deployment formats this version has variants in
            (``build --deploy``; e.g. ``("tfjs",)``), in spec order.
    """

    version: int
    format: str
    input_size: str
    signatures: tuple[str, ...]
    deploy: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ModuleFamily:
    """The versions of one module kind exported from a checkpoint.

    Attributes:
        kind: ``"classification"`` or ``"feature_vector"``.
        handle: the handle without version, ``"PUBLISHER/NAME[/...]/KIND"``
            (e.g. ``"google/imagenet/inception_v2/classification"``).
        versions: version number -> VersionSpec, in ascending order.
    """

    kind: str
    handle: str
    versions: dict[int, VersionSpec] = dataclasses.field(hash=False)


@dataclasses.dataclass(frozen=True)
class Variant:
    """The row of a variant table a model was expanded from.

    Attributes:
        index: the row's index in the file's ``variants`` list (0-based).
        depth_multiplier: the row's depth multiplier (float), e.g. 0.75.
        resolution: the model's image height and width in pixels.
    """

    index: int
    depth_multiplier: float
    resolution: int


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A loaded, validated model spec.

    Attributes:
        name: the model's name: its file name without ``.yaml``, or for a
            variant table ``<file name>_...`` (e.g. ``mobilenet_v2_100_224``).
        architecture: a net of hubexport/nets/ (one of ``ARCHITECTURES``).
        display_name: human-readable name for cards, e.g. ``"Inception V2"``.
        scope: the checkpoint's top variable scope, e.g. ``"InceptionV2"``.
        checkpoint: where the checkpoint tarball comes from.
        image_size: default (or fixed) input height and width in pixels.
        num_classes: number of logits of the classifier (1001 for ImageNet
            with background class; 1000 for the ResNet V1 checkpoints).
        feature_size: length of the feature vector (float32 values).
        input_mapping: how module inputs in [0, 1] become the checkpoint's
            input range (``x -> multiply * x - subtract``).
        card: model-specific card text.
        modules: kind -> ModuleFamily, in ``KINDS`` order.
        source: the YAML file the spec was read from.
        variant: the variant table row the model comes from, or None for a
            spec file of one model.
        labels: the class label file (absolute path, one label per line),
            or None.
    """

    name: str
    architecture: str
    display_name: str
    scope: str
    checkpoint: CheckpointSource
    image_size: int
    num_classes: int
    feature_size: int
    input_mapping: InputMapping
    card: CardInfo
    modules: dict[str, ModuleFamily] = dataclasses.field(hash=False)
    source: pathlib.Path
    variant: Variant | None = None
    labels: pathlib.Path | None = None

    def targets(self, version: int | None = None, kind: str | None = None) -> list[Target]:
        """The modules this spec exports, optionally filtered.

        Args:
            version: only this version number (int), or None for all.
            kind: only this kind (``"classification"`` or
                ``"feature_vector"``), or None for all.

        Returns:
            list of Target, sorted by (kind, version number).

        Raises:
            UsageError: ``kind`` or ``version`` is not defined by this spec
                (the message names the defined ones).
        """
        families = list(self.modules.values())
        if kind is not None:
            if kind not in self.modules:
                raise UsageError(
                    f"model {self.name} has no module kind {kind!r}; "
                    f"defined: {', '.join(self.modules)}")
            families = [self.modules[kind]]
        targets = [
            Target(self, family.kind, spec)
            for family in families
            for number, spec in family.versions.items()
            if version is None or number == version
        ]
        if not targets:
            defined = sorted({n for family in families for n in family.versions})
            what = f"{kind} " if kind is not None else ""
            raise UsageError(
                f"model {self.name} has no {what}version {version!r}; "
                f"defined: {', '.join(map(str, defined))}")
        return sorted(targets, key=lambda t: (t.kind, t.version.version))


@dataclasses.dataclass(frozen=True, repr=False)
class Target:
    """One module to build: a spec, a kind and one of its versions.

    Attributes:
        spec: the ModelSpec.
        kind: ``"classification"`` or ``"feature_vector"``.
        version: the VersionSpec of this module.
    """

    spec: ModelSpec
    kind: str
    version: VersionSpec

    def __repr__(self) -> str:
        return f"Target({self.spec.name!r}, {self.module_handle!r})"

    @property
    def handle(self) -> str:
        """The family handle without version (str), e.g. ``google/imagenet/NAME/KIND``."""
        return self.spec.modules[self.kind].handle

    @property
    def module_handle(self) -> str:
        """The full handle (str), e.g. ``google/imagenet/inception_v2/classification/3``."""
        return f"{self.handle}/{self.version.version}"

    @property
    def publisher(self) -> str:
        """The publisher (str): the handle's first part, e.g. ``"google"``."""
        return self.handle.split("/")[0]

    @property
    def rel_path(self) -> pathlib.Path:
        """The module's directory (pathlib.Path) relative to a module root: ``HANDLE/VERSION``."""
        return pathlib.Path(self.handle, str(self.version.version))


# --------------------------------------------------------------------------
# Loading.


def default_specs_dir() -> pathlib.Path:
    """The directory (pathlib.Path) of the shipped specs: ``hubexport/specs``.

    A symlink to the repository's ``specs/``, package data once installed.
    """
    return pathlib.Path(__file__).parent / "specs"


def load_specs(specs_dir: str | pathlib.Path | None = None) -> dict[str, ModelSpec]:
    """Loads and validates every ``*.yaml`` spec file of a directory.

    Args:
        specs_dir: directory to read; None means :func:`default_specs_dir`.

    Returns:
        dict model name -> ModelSpec, in file-name order, then table order.

    Raises:
        SpecError: the directory is missing, unreadable or holds no ``*.yaml``
            file, a spec is invalid, or two files define a model.
    """
    directory = pathlib.Path(specs_dir) if specs_dir is not None else default_specs_dir()
    try:
        paths = sorted(p for p in directory.iterdir() if p.name.endswith(".yaml"))
    except OSError as exc:
        raise SpecError(_one_line(
            f"{directory}: cannot list model specs ({exc.strerror or exc}); "
            "pass an existing directory of NAME.yaml files")) from None
    if not paths:
        raise SpecError(_one_line(
            f"{directory}: no model specs (*.yaml) in this directory; "
            "pass a directory of NAME.yaml files"))
    specs: dict[str, ModelSpec] = {}
    for path in paths:
        for name, spec in load_spec_file(path).items():
            if name in specs:
                raise SpecError(_one_line(f"{path}: defines model {name}, which "
                                          f"{specs[name].source} defines too; remove one"))
            specs[name] = spec
    return specs


def load_spec_file(path: str | pathlib.Path) -> dict[str, ModelSpec]:
    """Loads and validates one spec file (see :func:`parse_spec_file`).

    Raises:
        SpecError: the file cannot be read or is invalid.
    """
    return parse_spec_file(_read(path), path)


def _read(path: str | pathlib.Path) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as exc:
        raise SpecError(_one_line(
            f"{path}: cannot read model spec ({exc.strerror or exc})")) from None


def parse_spec_file(data: bytes | str, source: str | pathlib.Path) -> dict[str, ModelSpec]:
    """Validates the text of a spec file and builds its models.

    Args:
        data: the file's contents (UTF-8 bytes, or str).
        source: the file the text comes from (for messages); its name without
            ``.yaml`` is the model's name (with variants: NAME_ starts them).

    Returns:
        dict model name -> ModelSpec: one, or a variant table's in table order.

    Raises:
        SpecError: with message ``FILE:LINE: field: problem`` for the first
            problem found, whatever ``data`` holds.
    """
    reader = _Reader(pathlib.Path(source))
    values = reader.read(data)
    if isinstance(values, dict) and "variants" in values:
        reader.validate(values, _FAMILY_VALIDATOR)
        return reader.expand(values)
    reader.validate(values, _VALIDATOR)
    spec = reader.build(values)
    return {spec.name: spec}


def load_spec(path: str | pathlib.Path) -> ModelSpec:
    """Loads a spec file of one model (see :func:`parse_spec`)."""
    return parse_spec(_read(path), path)


def parse_spec(data: bytes | str, source: str | pathlib.Path) -> ModelSpec:
    """The model of a spec file of one model (see :func:`parse_spec_file`).

    Raises:
        SpecError: the text is invalid, or it defines several models.
    """
    specs = parse_spec_file(data, source)
    if len(specs) != 1:
        raise SpecError(_one_line(f"{source}: defines {len(specs)} models; "
                                  "load it with load_spec_file"))
    return next(iter(specs.values()))


# --------------------------------------------------------------------------
# The schema: spec.schema.yaml, and a copy changed as its $defs/family says.


def _subschema(schema: dict, path: tuple) -> dict:
    for key in path:
        schema = schema.get("properties", {}).get(key) or schema["additionalProperties"]
    return schema


_FAMILY_SCHEMA = copy.deepcopy(_SCHEMA)
_FAMILY_SCHEMA["required"] = [name for name in _SCHEMA["required"]
                              if name not in ("image_size", "feature_size")] + ["variants"]
for _dotted, _override in _SCHEMA["$defs"]["family"].items():
    *_parent, _key = _dotted.split(".")
    _subschema(_FAMILY_SCHEMA, _parent)["properties"][_key] = _override
for _path in TEMPLATED:
    _subschema(_FAMILY_SCHEMA, _path[:-1])["properties"][_path[-1]] = {"$ref": "#/$defs/text"}


def _check_url(value: str) -> str | None:
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return f"{_show(value)} contains spaces or control characters; percent-encode them"
    try:
        parsed = urllib.parse.urlsplit(value)
    except ValueError as exc:
        return f"{_show(value)} is not a URL ({exc})"
    if parsed.scheme not in URL_SCHEMES:
        return (f"{_show(value)} has scheme {_show(parsed.scheme)}; "
                f"allowed: {', '.join(URL_SCHEMES)}")
    if parsed.scheme != "file" and not parsed.netloc:
        return f"{_show(value)} names no host"
    if not _safe_file_name(_url_filename(value)):
        return f"{_show(value)} does not end in a file name"
    return None


def _check_checksum(value: str) -> str | None:
    if value == UNPUBLISHED:
        return None
    algo, sep, hex_digest = value.partition(":")
    if not sep or algo not in CHECKSUM_HEX_LENGTHS:
        return (f"{_show(value)} is not ALGO:HEX with ALGO one of "
                f"{', '.join(CHECKSUM_HEX_LENGTHS)}, nor {UNPUBLISHED!r} (no published "
                "checksum)")
    length = CHECKSUM_HEX_LENGTHS[algo]
    if len(hex_digest) != length or not re.fullmatch(r"[0-9a-fA-F]*", hex_digest):
        return f"{algo} needs {length} hex digits, got {_show(hex_digest)}"
    return None


# Format -> its check: the problem with a value, or None (also for other types).
_FORMAT_CHECKS = {
    "architecture": lambda value: (
        f"unknown architecture {_show(value)}; allowed: {', '.join(ARCHITECTURES)}"
        if isinstance(value, str) and value not in ARCHITECTURES else None),
    "url": lambda value: _check_url(value) if isinstance(value, str) else None,
    "checksum": lambda value: _check_checksum(value) if isinstance(value, str) else None,
    "finite": lambda value: ("must be a finite number" if type(value) is float
                             and not abs(value) < float("inf") else None),
}
_FORMATS = jsonschema.FormatChecker(formats=())
for _fmt, _check in _FORMAT_CHECKS.items():
    _FORMATS.checks(_fmt)(lambda value, check=_check: check(value) is None)
# Integers are Python ints (not bools, not 4.0); numbers are ints or floats.
_VALIDATOR_CLASS = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({
        "integer": lambda _, value: type(value) is int,
        "number": lambda _, value: type(value) in (int, float)}))
_VALIDATOR = _VALIDATOR_CLASS(_SCHEMA, format_checker=_FORMATS)
_FAMILY_VALIDATOR = _VALIDATOR_CLASS(_FAMILY_SCHEMA, format_checker=_FORMATS)
# What the templated fields of an expanded variant must be.
_TEMPLATED_VALIDATORS = {path: _VALIDATOR_CLASS(
    {**_subschema(_SCHEMA, path), "$defs": _SCHEMA["$defs"]}, format_checker=_FORMATS)
    for path in TEMPLATED}

# How messages name the schema's types and YAML's tags.
_EXPECTED = {"string": "a string", "integer": "an integer", "number": "a number",
             "object": "a mapping", "array": "a list", "boolean": "true or false"}
_TAG = "tag:yaml.org,2002:"
_TYPE_NAMES = {_TAG + tag: name for tag, name in (
    ("str", "a string"), ("int", "an integer"), ("float", "a number"), ("bool", "a boolean"),
    ("null", "null"), ("timestamp", "a date"), ("binary", "binary data"), ("seq", "a list"),
    ("map", "a mapping"))}


# --------------------------------------------------------------------------
# The reader.


# A YAML value no field can hold (a tagged value, a recursive alias).
_Opaque = object


class _Reader:
    """Reads one spec file: YAML nodes to plain values, the schema, the cross-field rules.

    ``nodes``, ``key_nodes`` (none for the root and list items) and ``fields``
    (dotted field names) are keyed by paths: tuples of keys and list indices.
    """

    def __init__(self, source: pathlib.Path):
        self.source = source
        self.nodes, self.key_nodes, self.fields = {}, {}, {}

    def fail(self, line: int, field: str, problem: str) -> NoReturn:
        """Raises the SpecError ``FILE:LINE: field: problem``."""
        raise SpecError(_one_line(f"{self.source}:{line}: {field or _DOCUMENT}: {problem}"))

    def fail_at(self, path: tuple, problem: str, key: bool = False) -> NoReturn:
        self.fail(*self.where(path, key), problem)

    def where(self, path: tuple, key: bool = False) -> tuple[int, str]:
        """(line, field) of the value at ``path``, or of its key; of its parent if missing."""
        known = path
        while known and known not in self.nodes:
            known = known[:-1]
        node = self.key_nodes.get(known, self.nodes[known]) if key else self.nodes[known]
        field = functools.reduce(_join, path[len(known):], self.fields[known])
        return node.start_mark.line + 1, field

    def read(self, data: bytes | str) -> Any:
        """Decodes ``data``, composes its single YAML document and converts it."""
        if isinstance(data, bytes):
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                line = data.count(b"\n", 0, exc.start) + 1
                self.fail(line, _DOCUMENT, f"not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                          "save the spec as UTF-8")
        else:
            text = data
        tab = text.find("\t")
        if tab >= 0:
            self.fail(_line_at(text, tab), _DOCUMENT, "tab character; indent with spaces")
        try:  # libyaml's parser, else (and for its messages) PyYAML's
            root = yaml.compose(text, Loader=_FAST_LOADER)
        except (yaml.YAMLError, RecursionError):
            root = None
        try:
            root = root or yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            problem = "; ".join(filter(None, (exc.context, exc.problem))) or "syntax error"
            self.fail(line, _DOCUMENT, f"invalid YAML: {problem}")
        except yaml.reader.ReaderError as exc:
            self.fail(_line_at(text, exc.position), _DOCUMENT,
                      f"invalid YAML: {exc.reason} (character {exc.character!r})")
        except yaml.YAMLError as exc:
            self.fail(1, _DOCUMENT, f"invalid YAML: {exc}")
        except RecursionError:
            self.fail(1, _DOCUMENT, "invalid YAML: nested too deeply")
        if root is None:
            self.fail(1, _DOCUMENT, "empty spec; expected a mapping of fields")
        return self.convert(root, (), "", frozenset())

    def convert(self, node: yaml.Node, path: tuple | None, field: str, active: frozenset) -> Any:
        """The value of ``node`` (dict, list, str, int, float, bool, None or _Opaque) at ``path``.

        ``path`` None: a mapping key; only str and int keys keep their value.
        """
        if path is not None:
            self.nodes[path], self.fields[path] = node, field
        line = node.start_mark.line + 1
        if len(self.nodes) > _MAX_VALUES or len(path or ()) > _MAX_DEPTH:
            self.fail(1, _DOCUMENT, "invalid YAML: nested too deeply or too many values")
        if id(node) in active or (path is None and node.tag not in (_TAG + "str", _TAG + "int")):
            return _Opaque()  # a recursive alias, or a key no field can have
        active |= {id(node)}
        if isinstance(node, yaml.MappingNode) and node.tag == _TAG + "map":
            result, key_lines = {}, {}
            for key_node, value_node in node.value:
                key = self.convert(key_node, None, _join(field, key_node.value), active)
                key_line = key_node.start_mark.line + 1
                if key in key_lines:
                    self.fail(key_line, _join(field, key),
                              f"duplicate key (first at line {key_lines[key]})")
                key_lines[key], self.key_nodes[path + (key,)] = key_line, key_node
                result[key] = self.convert(value_node, path + (key,), _join(field, key), active)
            return result
        if isinstance(node, yaml.SequenceNode) and node.tag == _TAG + "seq":
            return [self.convert(item, path + (index,), f"{field}[{index}]", active)
                    for index, item in enumerate(node.value)]
        if not isinstance(node, yaml.ScalarNode) or node.tag == _TAG + "str":
            return node.value if isinstance(node, yaml.ScalarNode) else _Opaque()
        if node.tag == _TAG + "int":
            if not _DECIMAL.fullmatch(node.value):
                self.fail(line, field, f"{_show(node.value)} is not a decimal integer")
            digits = node.value.replace("_", "")
            if len(digits.lstrip("+-")) > 19 or abs(int(digits)) > _MAX_INT:
                self.fail(line, field, "integer out of range")
            return int(digits)
        if node.tag in (_TAG + "float", _TAG + "bool", _TAG + "null"):
            try:
                return yaml.SafeLoader.yaml_constructors[node.tag](_CONSTRUCTOR, node)
            except (ValueError, TypeError, IndexError, KeyError):
                self.fail(line, field, f"{_show(node.value)} is not {_TYPE_NAMES[node.tag]}")
        return _Opaque()

    def validate(self, values: Any, validator) -> None:
        """Fails with the schema problem that comes first in the file, if any."""
        problems = [self.explain(error) for error in validator.iter_errors(values)]
        if problems:
            line, _, field, problem = min(problems)
            self.fail(line, field, problem)

    def explain(self, error: jsonschema.ValidationError) -> tuple[int, int, str, str]:
        """(line, rank among the problems of a line, field, problem) of a schema error."""
        path, value, schema, keyword = (tuple(error.absolute_path), error.instance,
                                        error.schema, error.validator)
        key, rank, problem = keyword == "minProperties", 2, None
        if "propertyNames" in error.relative_schema_path:  # the value is a key
            path, key, rank = path + (value,), True, 0
            if keyword == "type":
                node = self.key_nodes[path]
                return (self.where(path, True)[0], 0, self.fields[path[:-1]],
                        f"key {_show_node(node)} must be {_EXPECTED[schema['type']]}, "
                        f"got {_type_name(node)}")
        elif keyword == "additionalProperties":
            path += (next(name for name in value if name not in schema["properties"]),)
            named = self.fields[path] != self.fields[path[:-1]]  # a simple key: in the field
            key, rank = True, 0
            problem = (f"unknown field{'' if named else ' ' + _show_node(self.key_nodes[path])}; "
                       f"allowed: {', '.join(schema['properties'])}")
        elif keyword == "required":
            path += (next(name for name in schema["required"] if name not in value),)
            key, rank, problem = True, 3, "missing required field"
        elif keyword == "uniqueItems":
            path += (next(i for i, item in enumerate(value) if item in value[:i]),)
            problem = f"duplicate {_show(value[path[-1]])}"
        elif keyword == "type":
            expected = schema["type"] if isinstance(schema["type"], str) else schema["type"][0]
            rank = 1
            problem = f"expected {_EXPECTED[expected]}, got {_type_name(self.nodes[path])}"
        line, field = self.where(path, key)
        return line, rank, field, problem or _problem(error)

    def expand(self, values: dict) -> dict[str, ModelSpec]:
        """The ModelSpecs of a schema-valid spec with variants, in table order."""
        specs, multipliers = {}, {}  # name -> ModelSpec, depth multiplier -> row
        for index, row in enumerate(values["variants"]):
            where, multiplier = ("variants", index), float(row["depth_multiplier"])
            if multipliers.setdefault(multiplier, index) != index:
                self.fail_at(where + ("depth_multiplier",), f"duplicate depth multiplier "
                             f"{multiplier} (first at variants[{multipliers[multiplier]}])")
            published = row.get("published", {})
            for resolution in set(published) - set(row["resolutions"]):
                self.fail_at(where + ("published", resolution), f"resolution {resolution} is "
                             f"not in this row's resolutions {row['resolutions']}", key=True)
            for position, resolution in enumerate(row["resolutions"]):
                model = copy.deepcopy({k: v for k, v in values.items() if k != "variants"})
                model.update(image_size=resolution, feature_size=row["feature_size"])
                model["checkpoint"].update(published.get(resolution, {}))
                placeholders = dict(depth_multiplier=multiplier, resolution=resolution,
                                    depth_percent=round(multiplier * 100))
                note = f" (variants[{index}], resolution {resolution})"
                for path in TEMPLATED:
                    parent = model
                    for key in path[:-1]:
                        parent = parent.get(key, {})
                    if path[-1] not in parent:
                        continue
                    try:
                        parent[path[-1]] = parent[path[-1]].format_map(placeholders)
                    except KeyError as exc:
                        self.fail_at(path, f"unknown placeholder {{{exc.args[0]}}}; allowed: "
                                     f"{', '.join(TEMPLATE_VARIABLES)}{note}")
                    except (ValueError, IndexError, AttributeError, TypeError) as exc:
                        self.fail_at(path, f"{_show(parent[path[-1]])} is not a template ({exc}); "
                                     f"write {{{{ and }}}} for a brace{note}")
                    for error in _TEMPLATED_VALIDATORS[path].iter_errors(parent[path[-1]]):
                        self.fail_at(path, _problem(error) + note)
                spec = self.build(model, Variant(index, multiplier, resolution), note)
                if spec.name in specs:
                    self.fail_at(where + ("resolutions", position), f"model {spec.name} comes "
                                 f"from variants[{specs[spec.name].variant.index}] too; the "
                                 "name template needs the placeholders")
                specs[spec.name] = spec
        return specs

    def build(self, values: dict, variant: Variant | None = None, note: str = "") -> ModelSpec:
        """Runs the cross-field checks on schema-valid values and builds the ModelSpec."""
        name, stem = values["name"], self.source.stem
        if variant and not name.startswith(stem + "_"):
            self.fail_at(("name",), f"{_show(name)} does not start with {_show(stem + '_')}: "
                         f"the models of a variant table NAME.yaml are NAME_...{note}")
        elif self.source.suffix != ".yaml" or (name != stem and not variant):
            self.fail_at(("name",), f"{_show(name)} does not match the file name "
                         f"{_show(self.source.name)}; rename one so that the file is NAME.yaml")
        changelog = sorted(values["card"].get("changelog", {}).items())
        card = dict(values["card"], changelog={number: tuple(items) for number, items in changelog})
        modules = {}
        for kind, family in sorted(values["modules"].items()):
            path = ("modules", kind)
            parts = family["handle"].split("/")
            if len(parts) < 3 or parts[-1] != kind:
                self.fail_at(path + ("handle",), f"{_show(family['handle'])} must look like "
                             f"PUBLISHER/NAME[/...]/{kind}{note}")
            versions = {}
            for number, version in sorted(family["versions"].items()):
                for index, signature in enumerate(version["signatures"]):
                    for rule in (kind, version["format"]):
                        forbidden, reason = _SIGNATURES_FORBIDDEN.get(rule, ((), ""))
                        if signature in forbidden:
                            self.fail_at(path + ("versions", number, "signatures", index),
                                         f"signature {signature}: {reason}")
                if number not in DEFAULT_CHANGELOG_VERSIONS and number not in card["changelog"]:
                    self.fail_at(path + ("versions", number), f"version {number} needs an "
                                 "entry in card.changelog (templates/_changelog.md.j2 has "
                                 f"{', '.join(map(str, DEFAULT_CHANGELOG_VERSIONS))})", key=True)
                deploy = tuple(version.get("deploy", ()))
                for index, fmt in enumerate(deploy):
                    need, why = _DEPLOY_NEEDS[fmt]
                    if not need(version):
                        self.fail_at(path + ("versions", number, "deploy", index),
                                     f"{fmt}: {why}")
                versions[number] = VersionSpec(number, version["format"], version["input_size"],
                                               tuple(version["signatures"]), deploy)
            modules[kind] = ModuleFamily(kind=kind, handle=family["handle"], versions=versions)
        for number in card["changelog"]:
            if all(number not in family.versions for family in modules.values()):
                self.fail_at(("card", "changelog", number),
                             f"version {number} is not a version of this spec's modules", key=True)
        checkpoint = self.checkpoint(values)
        labels = values.get("labels")
        return ModelSpec(
            name=name, architecture=values["architecture"],
            display_name=values["display_name"], scope=values["scope"],
            checkpoint=checkpoint,
            image_size=values["image_size"], num_classes=values["num_classes"],
            feature_size=values["feature_size"],
            input_mapping=InputMapping(
                multiply=float(values["input_mapping"]["multiply"]),
                subtract=tuple(float(v) for v in values["input_mapping"]["subtract"])),
            card=CardInfo(**card), modules=modules, source=self.source, variant=variant,
            labels=self.local_path(labels) if labels is not None else None)

    def local_path(self, value: str) -> pathlib.Path:
        """A path of the spec, made absolute: relative paths are relative to the spec file."""
        path = pathlib.Path(value).expanduser()
        return pathlib.Path(os.path.normpath(path if path.is_absolute()
                                             else self.source.parent.absolute() / path))

    def checkpoint(self, values: dict) -> CheckpointSource:
        """The CheckpointSource of schema-valid values: a tarball's fields, or a local path's."""
        checkpoint, card = values["checkpoint"], values["card"]
        if "path" in checkpoint:
            for field in ("url", "member", "size"):
                if field in checkpoint:
                    self.fail_at(("checkpoint", field), "not allowed with checkpoint.path "
                                 "(a local checkpoint); remove one", key=True)
            for field in ("dataset", "dataset_name", "training"):
                if field not in card:
                    self.fail_at(("card", field), "missing required field: a spec with a "
                                 "local checkpoint says what it was trained on (the defaults "
                                 "describe TF-Slim's ImageNet checkpoints)", key=True)
            checksum = checkpoint.get("checksum", UNPUBLISHED)
            if checksum != UNPUBLISHED and not checksum.startswith("sha256:"):
                self.fail_at(("checkpoint", "checksum"), f"{_show(checksum)}: a local "
                             "checkpoint is pinned by the sha256 of its files (sha256:HEX, "
                             "see the README)")
            path = self.local_path(checkpoint["path"])
            url = member = None
            card_path = checkpoint.get("card_path", path.name)
        else:
            for field in ("url", "checksum", "member", "card_path"):
                if field not in checkpoint:
                    self.fail_at(("checkpoint", field), "missing required field (or give "
                                 "checkpoint.path for a local checkpoint)", key=True)
            checksum, path = checkpoint["checksum"], None
            url, member, card_path = checkpoint["url"], checkpoint["member"], checkpoint["card_path"]
        algo, _, hex_digest = (checksum.partition(":") if checksum != UNPUBLISHED
                               else (None,) * 3)
        return CheckpointSource(
            url=url, size=checkpoint.get("size"), checksum_algo=algo,
            checksum_hex=hex_digest and hex_digest.lower(), member=member,
            card_path=card_path, path=path,
            use_moving_averages=checkpoint.get("use_moving_averages", False))


_CONSTRUCTOR = yaml.SafeLoader("")


def _problem(error: jsonschema.ValidationError) -> str:
    """The problem a schema error states about the value at its own path."""
    value, schema, keyword = error.instance, error.schema, error.validator
    if keyword == "format":
        return _FORMAT_CHECKS[schema["format"]](value)
    if keyword == "pattern" and "what" in schema:
        return f"{_show(value)} is not {schema['what']}"
    if keyword == "enum":
        return f"unknown {schema['noun']} {_show(value)}; allowed: {', '.join(schema['enum'])}"
    if keyword in ("minimum", "exclusiveMinimum"):
        return f"must be positive, got {value}"
    if keyword == "minProperties" or (keyword == "minItems" and "maxItems" not in schema):
        return "must not be empty"
    if keyword in ("minItems", "maxItems"):
        return f"needs exactly {schema['maxItems']} values, got {len(value)}"
    return schema.get("reason", error.message)


# --------------------------------------------------------------------------
# Helpers.


def _url_filename(url: str) -> str:
    return posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))


def _safe_file_name(name: str) -> bool:
    return name not in ("", ".", "..") and "\\" not in name and "\0" not in name


def _line_at(text: str, index: int) -> int:
    """1-based line of ``text[index]``, counting line breaks as PyYAML does."""
    return len(_LINE_BREAK.findall(text, 0, max(0, index))) + 1


def _join(path: str, key: Any) -> str:
    """The field name of ``key`` in ``path``; ``path`` for a key that is not simple."""
    key = str(key) if isinstance(key, (str, int)) else ""
    if not _SIMPLE_KEY.fullmatch(key):
        return path
    return f"{path}.{key}" if path else key


def _type_name(node: yaml.Node) -> str:
    """How messages name a node's type: "a string", "a list tagged '!x'"."""
    name = _TYPE_NAMES.get(node.tag)
    is_seq, is_map = isinstance(node, yaml.SequenceNode), isinstance(node, yaml.MappingNode)
    if name is None or is_seq != (node.tag == _TAG + "seq") or is_map != (node.tag == _TAG + "map"):
        kind = "list" if is_seq else "mapping" if is_map else "value"
        return f"a {kind} tagged {_show(node.tag)}"
    return name


def _show(value: Any) -> str:
    """repr() of a value, cut to 60 characters; always one line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _show_node(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return _show(node.value)
    return f"<{_type_name(node)}>"


def _one_line(message: str) -> str:
    """Escapes every line break str.splitlines() would split ``message`` at."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if ch in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
        else ch
        for ch in message)
