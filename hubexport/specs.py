"""Model specs: the YAML files that say what to export and how.

A model names one TF-Slim checkpoint tarball (URL, size, checksum, member),
the net that reads it (architecture, variable scope, image size, classes,
feature size), its card text and its module families (classification and
feature_vector, each with its versions). ``specs/NAME.yaml`` describes the
model NAME (``specs/inception_v2.yaml`` documents the layout) or, with a
``variants`` table, the models ``NAME_...`` (``specs/mobilenet_v2.yaml``
documents the table): one row per depth multiplier, one model per row and
resolution; the fields of :data:`TEMPLATED` are then Python format strings
over :data:`TEMPLATE_VARIABLES`. Every model is one :class:`ModelSpec`, its
file ``source``, its table row ``variant``.

Loading checks the structure against the JSON Schema ``spec.schema.yaml``
(with the jsonschema library), then the cross-field rules. Any problem, for
any input bytes, raises :class:`hubexport.errors.SpecError` with the one-line
message ``FILE:LINE: field: problem`` (LINE 1-based, field a dotted path such
as ``modules.classification.versions.3.signatures[2]`` or
``variants[3].depth_multiplier``, or ``(document)`` for syntax errors, tabs
and bad encoding; a problem of an expanded template names the variant).

``checkpoint.checksum`` is ``ALGO:HEX``, or ``unpublished`` for a tarball
whose publisher gave no checksum (:attr:`CheckpointSource.pinned` is then
False; fetch and build refuse such a source unless allowed, see
:mod:`hubexport.fetch`).

Public entry point of the specs stage: :func:`load_specs` (and
:func:`load_spec_file`, :func:`parse_spec_file`, :func:`load_spec`,
:func:`parse_spec`). This module does not import TensorFlow.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
import posixpath
import re
import urllib.parse
from typing import Any, NoReturn

import jsonschema
import yaml

from hubexport.errors import SpecError, UsageError
from hubexport.nets import ARCHITECTURES, InputMapping

# Publisher of every handle (FACTS.md: google/imagenet/NAME/KIND/VERSION).
PUBLISHER = "google"
# The schema of spec files and its enums: module kinds, formats (TF1 Hub
# format, TF2 SavedModel), input sizes, signatures.
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
# The placeholders of a variant table's templates: the row's depth multiplier
# (float: "{depth_multiplier}" is "1.0", "0.75"; "{depth_multiplier:.2f}" is
# "1.00"), 100 times it (int: "{depth_percent:03d}" is "075") and the
# resolution (int, pixels).
TEMPLATE_VARIABLES = ("depth_multiplier", "depth_percent", "resolution")
# The fields that are templates in a spec with variants ("*": any module kind).
TEMPLATED = (("name",), ("architecture",), ("display_name",), ("checkpoint", "url"),
             ("checkpoint", "member"), ("checkpoint", "card_path"), ("modules", "*", "handle"),
             ("card", "implementation"))
# Versions that templates/_changelog.md.j2 has an entry for; any other
# version needs one in card.changelog.
DEFAULT_CHANGELOG_VERSIONS = (1, 3, 4, 5)

# Signatures a kind or format cannot serve: a feature_vector module has no
# logits; serving_default is a SignatureDef of TF2 SavedModels. (bn_hparams
# signatures may come with a fixed input size: mobilenet_v2's version 3.)
_SIGNATURES_FORBIDDEN = {
    ("kind", "feature_vector"): frozenset(
        {"image_classification", "image_classification_with_bn_hparams"}),
    ("format", "hub"): frozenset({"serving_default"}),
    ("format", "saved_model_2"): frozenset(SIGNATURES) - {"serving_default"},
}
_FORBIDDEN_REASON = {"kind": "a {value} module cannot serve it",
                     "format": "format {value} cannot serve it"}

_DOCUMENT = "(document)"
# Largest integer a spec may hold (sizes are int64 byte counts).
_MAX_INT = 2**63 - 1
# Most values a spec may expand to (aliases multiply them); deepest nesting.
_MAX_VALUES, _MAX_DEPTH = 100_000, 100
# Integers must be written in decimal (YAML 1.1 would also read 0x.., 0b..,
# octal 0.. and sexagesimal 1:30).
_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9_]*)")
_LINE_BREAK = re.compile(r"\r\n|[\n\r\x85\u2028\u2029]")
# Keys that can appear in a dotted field path as they are.
_SIMPLE_KEY = re.compile(r"[^\s\[\].:]{1,64}")


# The data model.


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """Where a checkpoint tarball comes from and how to verify it.

    Attributes:
        url: http, https or file URL of the tarball (``.tar.gz``, ``.tgz``).
        size: size of the tarball in bytes, or None if not published.
        checksum_algo: ``"md5"``, ``"sha256"``, ``"sha384"`` or ``"sha512"``
            (hashlib names), or None if the checksum is unpublished.
        checksum_hex: the expected digest, lower-case hex, or None if the
            checksum is unpublished.
        member: path inside the tarball of the checkpoint: the TF V1
            checkpoint file, or the prefix of a V2 checkpoint's files
            (``<member>.index``, ``<member>.data-*``).
        card_path: the checkpoint's name as the cards print it
            (``<tarball stem>/<member>``).
    """

    url: str
    size: int | None
    checksum_algo: str | None
    checksum_hex: str | None
    member: str
    card_path: str

    @property
    def pinned(self) -> bool:
        """Whether the spec pins a checksum (bool; False for ``checksum: unpublished``)."""
        return self.checksum_algo is not None

    @property
    def checksum(self) -> str:
        """The checksum as the spec writes it: ``"ALGO:HEX"`` (lower-case) or ``"unpublished"``."""
        return f"{self.checksum_algo}:{self.checksum_hex}" if self.pinned else UNPUBLISHED

    @property
    def filename(self) -> str:
        """The tarball's file name (str): the last path component of ``url``."""
        return _url_filename(self.url)


@dataclasses.dataclass(frozen=True)
class CardInfo:
    """Model-specific text of the documentation cards.

    Attributes:
        network_architecture: value of the card's ``network-architecture``
            metadata, e.g. ``"inception-v2"``.
        overview: Markdown of the card's Overview section (the papers).
        classes_note: Markdown the cards print about the logits' classes
            in place of the ImageNetLabels.txt sentence (e.g. that the
            ResNet V1 checkpoints have 1000 classes and no background
            class), or None.
        implementation: Markdown ending "This TF-Hub module uses the TF-Slim
            implementation of ..." (None: the architecture's name).
        checkpoints_from: Markdown link to where the checkpoint was
            downloaded (None: TF-Slim's list of pre-trained models).
        changelog: version -> the Markdown items replacing its entry of
            ``templates/_changelog.md.j2`` (other versions: that entry).
    """

    network_architecture: str
    overview: str
    classes_note: str | None = None
    implementation: str | None = None
    checkpoints_from: str | None = None
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
    """

    version: int
    format: str
    input_size: str
    signatures: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ModuleFamily:
    """The versions of one module kind exported from a checkpoint.

    Attributes:
        kind: ``"classification"`` or ``"feature_vector"``.
        handle: the handle without version, e.g.
            ``"google/imagenet/inception_v2/classification"``.
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
        """The family handle without version (str), e.g. ``google/imagenet/inception_v2/classification``."""
        return self.spec.modules[self.kind].handle

    @property
    def module_handle(self) -> str:
        """The full handle (str), e.g. ``google/imagenet/inception_v2/classification/3``."""
        return f"{self.handle}/{self.version.version}"

    @property
    def publisher(self) -> str:
        """The publisher (str): ``"google"``, the first part of every handle."""
        return PUBLISHER

    @property
    def rel_path(self) -> pathlib.Path:
        """The module's directory (pathlib.Path) relative to a module root: ``HANDLE/VERSION``."""
        return pathlib.Path(self.handle, str(self.version.version))


# --------------------------------------------------------------------------
# Loading.


def default_specs_dir() -> pathlib.Path:
    """The directory of the specs shipped with hubexport.

    ``hubexport/specs`` is a symlink to the repository's ``specs/`` (and a
    real directory of package data once installed).

    Returns:
        pathlib.Path of the directory.
    """
    return pathlib.Path(__file__).parent / "specs"


def load_specs(specs_dir: str | pathlib.Path | None = None) -> dict[str, ModelSpec]:
    """Loads and validates every ``*.yaml`` spec file of a directory.

    Args:
        specs_dir: directory to read; None means :func:`default_specs_dir`.

    Returns:
        dict model name -> ModelSpec, in file-name order (a variant table's
        models in table order).

    Raises:
        SpecError: the directory is missing, unreadable or holds no
            ``*.yaml`` file, a spec is invalid, or two files define a model.
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
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(_one_line(
            f"{path}: cannot read model spec ({exc.strerror or exc})")) from None
    return parse_spec_file(data, path)


def parse_spec_file(data: bytes | str, source: str | pathlib.Path) -> dict[str, ModelSpec]:
    """Validates the text of a spec file and builds its models.

    Args:
        data: the file's contents (UTF-8 bytes, or str).
        source: the file the text comes from; used in messages, and its
            name without ``.yaml`` must be the model's name (with variants:
            start every name, followed by ``_``).

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
    path = pathlib.Path(path)
    return parse_spec(load_spec_file(path), path)


def parse_spec(data: bytes | str | dict, source: str | pathlib.Path) -> ModelSpec:
    """The one model of a spec file: as :func:`parse_spec_file` (or its result, a dict).

    Raises:
        SpecError: the text is invalid, or it defines several models.
    """
    specs = data if isinstance(data, dict) else parse_spec_file(data, source)
    if len(specs) != 1:
        raise SpecError(_one_line(f"{source}: defines {len(specs)} models; "
                                  "load it with load_spec_file"))
    return next(iter(specs.values()))


# --------------------------------------------------------------------------
# The schema: spec.schema.yaml, and for files with variants a copy changed as
# its $defs/family says.


def _subschema(schema: dict, path: tuple) -> dict:
    for key in path:
        schema = schema["additionalProperties"] if key == "*" else schema["properties"][key]
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


# Format -> (the types it checks, the check: a problem or None).
_FORMAT_CHECKS = {
    "architecture": ((str,), lambda value: None if value in ARCHITECTURES else (
        f"unknown architecture {_show(value)}; allowed: {', '.join(ARCHITECTURES)}")),
    "url": ((str,), _check_url),
    "checksum": ((str,), _check_checksum),
    "finite": ((int, float), lambda value: None if abs(value) < float("inf")
               else "must be a finite number"),
}
_FORMATS = jsonschema.FormatChecker(formats=())
for _fmt, (_types, _check) in _FORMAT_CHECKS.items():
    def _assert(value, types=_types, check=_check):
        problem = check(value) if type(value) in types else None
        if problem:
            raise ValueError(problem)
        return True
    _FORMATS.checks(_fmt, raises=ValueError)(_assert)
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
             "object": "a mapping", "array": "a list"}
_TAG = "tag:yaml.org,2002:"
_TYPE_NAMES = {
    _TAG + "str": "a string", _TAG + "int": "an integer", _TAG + "float": "a number",
    _TAG + "bool": "a boolean", _TAG + "null": "null", _TAG + "timestamp": "a date",
    _TAG + "binary": "binary data", _TAG + "seq": "a list", _TAG + "map": "a mapping",
}


# --------------------------------------------------------------------------
# The reader.


class _Opaque:
    """A YAML value no field can hold (a tagged value, a recursive alias)."""


class _Reader:
    """Reads one spec file: YAML nodes to plain values, the schema, the cross-field rules.

    Paths are tuples of mapping keys and list indices; ``nodes``,
    ``key_nodes`` (none for the root and list items) and ``fields`` (the
    dotted field names of messages) are keyed by the paths of the values.
    """

    def __init__(self, source: pathlib.Path):
        self.source = source
        self.nodes: dict[tuple, yaml.Node] = {}
        self.key_nodes: dict[tuple, yaml.Node] = {}
        self.fields: dict[tuple, str] = {}

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
        field = self.fields[known]
        for part in path[len(known):]:
            field = _join(field, part)
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

    def convert(self, node: yaml.Node, path: tuple, field: str, active: frozenset) -> Any:
        """The value of ``node``: dict, list, str, int, float, bool, None or _Opaque."""
        self.nodes[path], self.fields[path] = node, field
        line = node.start_mark.line + 1
        if len(self.nodes) > _MAX_VALUES or len(path) > _MAX_DEPTH:
            self.fail(1, _DOCUMENT, "invalid YAML: nested too deeply or too many values")
        if id(node) in active:  # a recursive alias
            return _Opaque()
        active |= {id(node)}
        if isinstance(node, yaml.MappingNode) and node.tag == _TAG + "map":
            result, key_lines = {}, {}
            for key_node, value_node in node.value:
                key = self.scalar(key_node, _join(field, key_node.value))
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
        if not isinstance(node, yaml.ScalarNode) or node.tag in (_TAG + "str", _TAG + "int"):
            return self.scalar(node, field)
        if node.tag in (_TAG + "float", _TAG + "bool", _TAG + "null"):
            try:
                return yaml.SafeLoader.yaml_constructors[node.tag](_CONSTRUCTOR, node)
            except (ValueError, TypeError, IndexError, KeyError):
                self.fail(line, field, f"{_show(node.value)} is not {_TYPE_NAMES[node.tag]}")
        return _Opaque()

    def scalar(self, node: yaml.Node, field: str) -> Any:
        """A str, a (decimal, int64) int, or else _Opaque: a key or a value named ``field``."""
        if not isinstance(node, yaml.ScalarNode) or node.tag not in (_TAG + "str", _TAG + "int"):
            return _Opaque()
        if node.tag == _TAG + "str":
            return node.value
        line = node.start_mark.line + 1
        if not _DECIMAL.fullmatch(node.value):
            self.fail(line, field, f"{_show(node.value)} is not a decimal integer")
        digits = node.value.replace("_", "")
        if len(digits.lstrip("+-")) > 19 or abs(int(digits)) > _MAX_INT:
            self.fail(line, field, "integer out of range")
        return int(digits)

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
        if "propertyNames" in error.relative_schema_path:  # value is a key
            line, field = self.where(path + (value,), key=True)
            if keyword == "type":
                node = self.key_nodes[path + (value,)]
                return line, 0, self.fields[path], (f"key {_show_node(node)} must be "
                                                    f"{_EXPECTED[schema['type']]}, got {_type_name(node)}")
            return line, 0, field, _problem(error)
        if keyword == "additionalProperties":
            path += (next(key for key in value if key not in schema["properties"]),)
            (line, field), node = self.where(path, key=True), self.key_nodes[path]
            name = "" if field != self.fields[path[:-1]] else f" {_show_node(node)}"
            return line, 0, field, f"unknown field{name}; allowed: {', '.join(schema['properties'])}"
        if keyword == "required":
            missing = next(name for name in schema["required"] if name not in value)
            return *self.where(path + (missing,), key=True)[:1], 3, \
                _join(self.fields[path], missing), "missing required field"
        if keyword == "uniqueItems":
            path += (next(i for i, item in enumerate(value) if item in value[:i]),)
            return *self.where(path)[:1], 2, self.fields[path], f"duplicate {_show(value[path[-1]])}"
        line, field = self.where(path, key=keyword == "minProperties")
        if keyword == "type":
            types = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
            return line, 1, field, f"expected {_EXPECTED[types[0]]}, got {_type_name(self.nodes[path])}"
        return line, 2, field, _problem(error)

    def expand(self, values: dict) -> dict[str, ModelSpec]:
        """The ModelSpecs of a schema-valid spec with variants, in table order."""
        base = {key: value for key, value in values.items() if key != "variants"}
        specs: dict[str, ModelSpec] = {}
        multipliers: dict[float, int] = {}
        for index, row in enumerate(values["variants"]):
            where = ("variants", index)
            multiplier = float(row["depth_multiplier"])
            if multipliers.setdefault(multiplier, index) != index:
                self.fail_at(where + ("depth_multiplier",), f"duplicate depth multiplier "
                             f"{multiplier} (first at variants[{multipliers[multiplier]}])")
            published = row.get("published", {})
            for resolution in published:
                if resolution not in row["resolutions"]:
                    self.fail_at(where + ("published", resolution), f"resolution {resolution} is "
                                 f"not in this row's resolutions {row['resolutions']}", key=True)
            for position, resolution in enumerate(row["resolutions"]):
                model = copy.deepcopy(base)
                model.update(image_size=resolution, feature_size=row["feature_size"])
                model["checkpoint"].update(published.get(resolution, {}))
                placeholders = dict(depth_multiplier=multiplier, resolution=resolution,
                                    depth_percent=round(multiplier * 100))
                note = f" (variants[{index}], resolution {resolution})"
                for path in TEMPLATED:
                    for parent, concrete in _parents(model, path):
                        try:
                            parent[path[-1]] = _fill(parent[path[-1]], placeholders)
                        except ValueError as exc:
                            self.fail_at(concrete, f"{exc}{note}")
                        for error in _TEMPLATED_VALIDATORS[path].iter_errors(parent[path[-1]]):
                            self.fail_at(concrete, _problem(error) + note)
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
        if self.source.suffix != ".yaml" or (
                not name.startswith(stem + "_") if variant else name != stem):
            self.fail_at(("name",), f"{_show(name)} " + (
                f"does not start with {_show(stem + '_')}: the models of a variant table "
                "NAME.yaml are NAME_..." if variant else
                f"does not match the file name {_show(self.source.name)}; rename one so that "
                "the file is NAME.yaml") + note)
        modules, changelog = {}, dict(sorted(values["card"].get("changelog", {}).items()))
        for kind, family in sorted(values["modules"].items()):
            path = ("modules", kind)
            if not family["handle"].startswith(PUBLISHER + "/") \
                    or not family["handle"].endswith("/" + kind):
                self.fail_at(path + ("handle",), f"{_show(family['handle'])} must look like "
                             f"{PUBLISHER}/.../{kind}{note}")
            versions = {}
            for number, version in sorted(family["versions"].items()):
                for index, signature in enumerate(version["signatures"]):
                    for rule in (("kind", kind), ("format", version["format"])):
                        if signature in _SIGNATURES_FORBIDDEN.get(rule, ()):
                            reason = _FORBIDDEN_REASON[rule[0]].format(value=rule[1])
                            self.fail_at(path + ("versions", number, "signatures", index),
                                         f"signature {signature}: {reason}")
                if number not in DEFAULT_CHANGELOG_VERSIONS and number not in changelog:
                    self.fail_at(path + ("versions", number), f"version {number} needs an "
                                 "entry in card.changelog (templates/_changelog.md.j2 has "
                                 f"{', '.join(map(str, DEFAULT_CHANGELOG_VERSIONS))})", key=True)
                versions[number] = VersionSpec(number, version["format"], version["input_size"],
                                               tuple(version["signatures"]))
            modules[kind] = ModuleFamily(kind=kind, handle=family["handle"], versions=versions)
        for number in changelog:
            if all(number not in family.versions for family in modules.values()):
                self.fail_at(("card", "changelog", number),
                             f"version {number} is not a version of this spec's modules", key=True)
        checkpoint, card = values["checkpoint"], dict(values["card"], changelog={
            number: tuple(items) for number, items in changelog.items()})
        algo, _, hex_digest = (checkpoint["checksum"].partition(":")
                               if checkpoint["checksum"] != UNPUBLISHED else (None,) * 3)
        return ModelSpec(
            name=name, architecture=values["architecture"],
            display_name=values["display_name"], scope=values["scope"],
            checkpoint=CheckpointSource(
                url=checkpoint["url"], size=checkpoint.get("size"), checksum_algo=algo,
                checksum_hex=hex_digest and hex_digest.lower(), member=checkpoint["member"],
                card_path=checkpoint["card_path"]),
            image_size=values["image_size"], num_classes=values["num_classes"],
            feature_size=values["feature_size"],
            input_mapping=InputMapping(
                multiply=float(values["input_mapping"]["multiply"]),
                subtract=tuple(float(v) for v in values["input_mapping"]["subtract"])),
            card=CardInfo(**card), modules=modules, source=self.source, variant=variant)


_CONSTRUCTOR = yaml.SafeLoader("")


def _parents(values: dict, path: tuple) -> list[tuple[dict, tuple]]:
    """(mapping, path of its key ``path[-1]``) of the mappings at ``path[:-1]`` that have it."""
    found = [(values, ())]
    for key in path[:-1]:
        found = [(child, where + (name,)) for parent, where in found
                 for name, child in parent.items() if key in ("*", name)]
    return [(parent, where + path[-1:]) for parent, where in found if path[-1] in parent]


def _fill(template: str, placeholders: dict) -> str:
    """``template`` with its placeholders filled in; ValueError states a problem."""
    try:
        return template.format_map(placeholders)
    except KeyError as exc:
        raise ValueError(f"unknown placeholder {{{exc.args[0]}}}; allowed: "
                         f"{', '.join(TEMPLATE_VARIABLES)}") from None
    except (ValueError, IndexError, AttributeError, TypeError) as exc:
        raise ValueError(f"{_show(template)} is not a template ({exc}); write {{{{ and }}}} "
                         "for a brace") from None


def _problem(error: jsonschema.ValidationError) -> str:
    """The problem a schema error states about the value at its own path."""
    value, schema, keyword = error.instance, error.schema, error.validator
    if keyword == "format":
        return str(error.cause)
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
