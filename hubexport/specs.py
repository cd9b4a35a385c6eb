"""Model specs: the YAML files that say what to export and how.

A spec (``specs/NAME.yaml``) names one TF-Slim checkpoint tarball (URL, size,
checksum, member), the network that reads it (architecture, variable scope,
image size, number of classes, feature size), the text of its documentation
card, and the module families exported from it (classification and
feature_vector, each with its versions 1, 3, 4, 5). ``specs/inception_v2.yaml``
documents the layout.

Loading validates everything against a small schema (``_SCHEMA`` below) and a
table of cross-field rules. Any problem, for any input bytes, raises
:class:`hubexport.errors.SpecError` with the one-line message
``FILE:LINE: field: problem`` where LINE is 1-based and field is a dotted
path such as ``modules.classification.versions.3.signatures[2]``. Problems
that belong to no field (syntax errors, tabs, bad encoding) use the field
name ``(document)``.

``checkpoint.checksum`` is ``ALGO:HEX``, or ``unpublished`` for a tarball
whose publisher gave no checksum (:attr:`CheckpointSource.pinned` is then
False; fetch and build refuse such a source unless allowed, see
:mod:`hubexport.fetch`).

Public entry point of the specs stage: :func:`load_specs` (plus
:func:`load_spec` and :func:`parse_spec` for single files). This module does
not import TensorFlow.
"""

from __future__ import annotations

import dataclasses
import pathlib
import posixpath
import re
import urllib.parse
from typing import Any, Callable, NoReturn

import yaml

from hubexport.errors import SpecError, UsageError
from hubexport.nets import ARCHITECTURES, InputMapping

# Publisher of every handle (FACTS.md: google/imagenet/NAME/KIND/VERSION).
PUBLISHER = "google"
# Module kinds of the family (FACTS.md, "The published module family").
KINDS = ("classification", "feature_vector")
# Module formats: TF1 Hub format (hub.Module) and TF2 SavedModel (hub.load).
FORMATS = ("hub", "saved_model_2")
INPUT_SIZES = ("fixed", "variable")
# Signature names of the family (FACTS.md; tensorflow.org/hub/common_signatures/images).
SIGNATURES = (
    "default",
    "image_classification",
    "image_feature_vector",
    "image_classification_with_bn_hparams",
    "image_feature_vector_with_bn_hparams",
    "serving_default",
)
# Checksum algorithms and the length of their hex digests (characters).
CHECKSUM_HEX_LENGTHS = {"md5": 32, "sha256": 64, "sha384": 96, "sha512": 128}
# The checksum value of a source whose publisher gave no checksum.
UNPUBLISHED = "unpublished"
URL_SCHEMES = ("http", "https", "file")

# Signatures each kind, format and input size may serve. A feature_vector
# module has no logits; the bn_hparams signatures exist only from version 3
# on (variable size); serving_default is a SignatureDef of TF2 SavedModels.
_BN_SIGNATURES = frozenset(
    {"image_classification_with_bn_hparams", "image_feature_vector_with_bn_hparams"})
_SIGNATURES_FORBIDDEN = {
    ("kind", "classification"): frozenset(),
    ("kind", "feature_vector"): frozenset(
        {"image_classification", "image_classification_with_bn_hparams"}),
    ("input_size", "fixed"): _BN_SIGNATURES,
    ("input_size", "variable"): frozenset(),
    ("format", "hub"): frozenset({"serving_default"}),
    ("format", "saved_model_2"): frozenset(SIGNATURES) - {"serving_default"},
}
_FORBIDDEN_REASON = {
    "kind": "a {value} module cannot serve it",
    "input_size": "bn_hparams signatures need input_size: variable",
    "format": "format {value} cannot serve it",
}

_DOCUMENT = "(document)"
# Largest integer a spec may hold (sizes are int64 byte counts).
_MAX_INT = 2**63 - 1
# Integers must be written in decimal (YAML 1.1 would also read 0x.., 0b..,
# octal 0.. and sexagesimal 1:30).
_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9_]*)")
_LINE_BREAK = re.compile(r"\r\n|[\n\r\x85\u2028\u2029]")
# Keys that can appear in a dotted field path as they are.
_SIMPLE_KEY = re.compile(r"[^\s\[\].:]{1,64}")
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_SCOPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# One component of a relative path; cannot be "." or "..".
_PATH_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


# --------------------------------------------------------------------------
# The data model.


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """Where a checkpoint tarball comes from and how to verify it.

    Attributes:
        url: http, https or file URL of the ``.tar.gz`` tarball.
        size: size of the tarball in bytes, or None if not published.
        checksum_algo: ``"md5"``, ``"sha256"``, ``"sha384"`` or ``"sha512"``
            (hashlib names), or None if the checksum is unpublished.
        checksum_hex: the expected digest, lower-case hex, or None if the
            checksum is unpublished.
        member: path of the TF V1 checkpoint file inside the tarball.
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
        """Whether the spec pins a checksum (False for ``checksum: unpublished``).

        Returns:
            bool.
        """
        return self.checksum_algo is not None

    @property
    def checksum(self) -> str:
        """The checksum as the spec writes it.

        Returns:
            str, ``"ALGO:HEX"`` (hex lower-cased), or ``"unpublished"``.
        """
        return f"{self.checksum_algo}:{self.checksum_hex}" if self.pinned else UNPUBLISHED

    @property
    def filename(self) -> str:
        """The tarball's file name: the last path component of ``url``.

        Returns:
            str, e.g. ``"inception_v2_2016_08_28.tar.gz"``.
        """
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
    """

    network_architecture: str
    overview: str
    classes_note: str | None = None


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
class ModelSpec:
    """A loaded, validated model spec.

    Attributes:
        name: the spec's name (equal to its file name without ``.yaml``).
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
        """The family handle without version (str).

        E.g. ``google/imagenet/inception_v2/classification``.
        """
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
        """The module's directory relative to a module root (``HANDLE/VERSION``).

        Returns:
            pathlib.Path, relative, e.g. ``google/imagenet/inception_v2/classification/3``.
        """
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
    """Loads and validates every ``*.yaml`` spec of a directory.

    Names are unique because each spec's name must equal its file name.

    Args:
        specs_dir: directory to read; None means :func:`default_specs_dir`.

    Returns:
        dict name -> ModelSpec, in file-name order.

    Raises:
        SpecError: the directory is missing, unreadable or holds no
            ``*.yaml`` file, or any spec is invalid.
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
    specs = {}
    for path in paths:
        spec = load_spec(path)
        specs[spec.name] = spec
    return specs


def load_spec(path: str | pathlib.Path) -> ModelSpec:
    """Loads and validates one spec file.

    Args:
        path: the ``NAME.yaml`` file.

    Returns:
        the ModelSpec (``source`` is ``path``).

    Raises:
        SpecError: the file cannot be read or is invalid
            (``FILE:LINE: field: problem``).
    """
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(_one_line(
            f"{path}: cannot read model spec ({exc.strerror or exc})")) from None
    return parse_spec(data, path)


def parse_spec(data: bytes | str, source: str | pathlib.Path) -> ModelSpec:
    """Validates the text of a spec and builds the ModelSpec.

    Args:
        data: the file's contents (UTF-8 bytes, or str).
        source: the file the text comes from; used in messages, and its
            name without ``.yaml`` must equal the spec's ``name``.

    Returns:
        the ModelSpec.

    Raises:
        SpecError: with message ``FILE:LINE: field: problem`` for the first
            problem found, whatever ``data`` holds.
    """
    source = pathlib.Path(source)
    reader = _Reader(source)
    root = reader.compose(data)
    values = reader.read(root, _SCHEMA, "")
    return reader.build(values)


# --------------------------------------------------------------------------
# The schema, as data.


@dataclasses.dataclass(frozen=True)
class _Scalar:
    """A scalar of YAML type ``type`` ("str" or "int"), checked by ``check``.

    ``check(value)`` returns a problem (str) or None. ``optional`` scalars
    may be absent or null (read as None).
    """

    type: str
    check: Callable[[Any], str | None] | None = None
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class _Fields:
    """A mapping with exactly these keys (field name -> schema)."""

    fields: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class _MapOf:
    """A non-empty mapping with free keys (schema ``key``) of ``value``s."""

    key: _Scalar
    value: Any


@dataclasses.dataclass(frozen=True)
class _ListOf:
    """A list (possibly empty) of ``item`` scalars: distinct ones, or exactly ``length``."""

    item: _Scalar
    distinct: bool = True
    length: int | None = None


def _one_of(allowed: tuple[str, ...], noun: str) -> Callable[[Any], str | None]:
    def check(value):
        if value not in allowed:
            return f"unknown {noun} {_show(value)}; allowed: {', '.join(allowed)}"
        return None
    return check


def _matches(pattern: re.Pattern, what: str) -> Callable[[Any], str | None]:
    def check(value):
        if not pattern.fullmatch(value):
            return f"{_show(value)} is not {what}"
        return None
    return check


def _positive(value: int) -> str | None:
    return None if value > 0 else f"must be positive, got {value}"


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


def _check_rel_path(value: str) -> str | None:
    parts = value.split("/")
    if not all(_PATH_PART.fullmatch(part) for part in parts):
        return (f"{_show(value)} is not a relative path of names "
                "(letters, digits, '_', '.', '-', separated by '/')")
    return None


def _finite(value: float) -> str | None:
    return None if value == value and abs(value) != float("inf") else "must be a finite number"


def _check_text(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


_STR = _Scalar("str", _check_text)
_POSITIVE = _Scalar("int", _positive)
_RELATIVE_PATH = _Scalar("str", _check_rel_path)

_VERSION = _Fields({
    "format": _Scalar("str", _one_of(FORMATS, "format")),
    "input_size": _Scalar("str", _one_of(INPUT_SIZES, "input_size")),
    "signatures": _ListOf(_Scalar("str", _one_of(SIGNATURES, "signature"))),
})

_SCHEMA = _Fields({
    "name": _Scalar("str", _matches(_NAME, "a name of lower-case letters, digits and '_'")),
    "architecture": _Scalar("str", _one_of(tuple(ARCHITECTURES), "architecture")),
    "display_name": _STR,
    "scope": _Scalar("str", _matches(_SCOPE, "a variable scope name")),
    "checkpoint": _Fields({
        "url": _Scalar("str", _check_url),
        "size": _Scalar("int", _positive, optional=True),
        "checksum": _Scalar("str", _check_checksum),
        "member": _RELATIVE_PATH,
        "card_path": _RELATIVE_PATH,
    }),
    "image_size": _POSITIVE,
    "num_classes": _POSITIVE,
    "feature_size": _POSITIVE,
    "input_mapping": _Fields({
        "multiply": _Scalar("float", _finite),
        "subtract": _ListOf(_Scalar("float", _finite), distinct=False, length=3),
    }),
    "card": _Fields({
        "network_architecture": _Scalar(
            "str", _matches(re.compile(r"[a-z0-9][a-z0-9.\-]*"),
                            "lower-case words joined by '-'")),
        "overview": _STR,
        "classes_note": _Scalar("str", _check_text, optional=True),
    }),
    "modules": _MapOf(
        key=_Scalar("str", _one_of(KINDS, "module kind")),
        value=_Fields({
            "handle": _RELATIVE_PATH,
            "versions": _MapOf(key=_POSITIVE, value=_VERSION),
        }),
    ),
})

# YAML tags and how messages name them.
_TAG = "tag:yaml.org,2002:"
_TYPE_NAMES = {
    _TAG + "str": "a string", _TAG + "int": "an integer", _TAG + "float": "a number",
    _TAG + "bool": "a boolean", _TAG + "null": "null", _TAG + "timestamp": "a date",
    _TAG + "binary": "binary data", _TAG + "seq": "a list", _TAG + "map": "a mapping",
}
_EXPECTED = {"str": "a string", "int": "an integer", "float": "a number"}


# --------------------------------------------------------------------------
# The reader.


class _Reader:
    """Composes YAML nodes and walks them along the schema.

    Keeps the 1-based line of every field it reads (``lines``, keyed by
    dotted path) for the cross-field checks.
    """

    def __init__(self, source: pathlib.Path):
        self.source = source
        self.lines: dict[str, int] = {}

    def fail(self, line: int, field: str, problem: str) -> NoReturn:
        """Raises the SpecError ``FILE:LINE: field: problem``."""
        raise SpecError(_one_line(f"{self.source}:{line}: {field or _DOCUMENT}: {problem}"))

    def compose(self, data: bytes | str) -> yaml.Node:
        """Decodes ``data`` and composes its single YAML document."""
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
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
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
        return root

    def read(self, node: yaml.Node, schema: Any, path: str, key_line: int | None = None) -> Any:
        """Checks ``node`` against ``schema``; returns plain Python values.

        Args:
            node: the composed node.
            schema: a _Scalar, _Fields, _MapOf or _ListOf.
            path: dotted path of the node ("" for the document).
            key_line: line of the node's key, for fields missing inside it.
        """
        line = node.start_mark.line + 1
        self.lines[path] = line
        if isinstance(schema, _Scalar):
            return self.scalar(node, schema, path)
        if isinstance(schema, _ListOf):
            return self.sequence(node, schema, path)
        return self.mapping(node, schema, path, key_line or line)

    def scalar(self, node: yaml.Node, schema: _Scalar, path: str) -> Any:
        """Reads a scalar field and runs its check."""
        line = node.start_mark.line + 1
        if schema.optional and node.tag == _TAG + "null":
            return None
        tags = (_TAG + "int", _TAG + "float") if schema.type == "float" else (_TAG + schema.type,)
        if node.tag not in tags or not isinstance(node, yaml.ScalarNode):
            self.fail(line, path, f"expected {_EXPECTED[schema.type]}, got {_type_name(node)}")
        value = node.value
        if schema.type == "float":
            try:
                value = float(yaml.safe_load(value)) if node.tag == _TAG + "float" \
                    else float(value.replace("_", ""))
            except (ValueError, TypeError, yaml.YAMLError):
                self.fail(line, path, f"{_show(value)} is not a number")
        elif schema.type == "int":
            if not _DECIMAL.fullmatch(value):
                self.fail(line, path, f"{_show(value)} is not a decimal integer")
            digits = value.replace("_", "")
            if len(digits.lstrip("+-")) > 19 or abs(int(digits)) > _MAX_INT:
                self.fail(line, path, "integer out of range")
            value = int(digits)
        problem = schema.check(value) if schema.check else None
        if problem:
            self.fail(line, path, problem)
        return value

    def sequence(self, node: yaml.Node, schema: _ListOf, path: str) -> list:
        """Reads a list of distinct scalars."""
        if not isinstance(node, yaml.SequenceNode) or node.tag != _TAG + "seq":
            self.fail(node.start_mark.line + 1, path, f"expected a list, got {_type_name(node)}")
        items = []
        for index, item_node in enumerate(node.value):
            item_path = f"{path}[{index}]"
            item = self.read(item_node, schema.item, item_path)
            if schema.distinct and item in items:
                self.fail(item_node.start_mark.line + 1, item_path, f"duplicate {_show(item)}")
            items.append(item)
        if schema.length is not None and len(items) != schema.length:
            self.fail(node.start_mark.line + 1, path,
                      f"needs exactly {schema.length} values, got {len(items)}")
        return items

    def mapping(self, node: yaml.Node, schema: _Fields | _MapOf, path: str, key_line: int) -> dict:
        """Reads a mapping: fixed fields (_Fields) or free keys (_MapOf)."""
        if not isinstance(node, yaml.MappingNode) or node.tag != _TAG + "map":
            self.fail(node.start_mark.line + 1, path, f"expected a mapping, got {_type_name(node)}")
        result, key_lines = {}, {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = self.key(key_node, schema, path)
            child = _join(path, key)
            if key in result:
                self.fail(line, child, f"duplicate key (first at line {key_lines[key]})")
            key_lines[key] = line
            value_schema = schema.fields[key] if isinstance(schema, _Fields) else schema.value
            result[key] = self.read(value_node, value_schema, child, line)
        if isinstance(schema, _MapOf):
            if not result:
                self.fail(key_line, path, "must not be empty")
            return dict(sorted(result.items()))
        for name, field_schema in schema.fields.items():
            if name not in result:
                if not (isinstance(field_schema, _Scalar) and field_schema.optional):
                    self.fail(key_line, _join(path, name), "missing required field")
                result[name] = None
        return result

    def key(self, node: yaml.Node, schema: _Fields | _MapOf, path: str) -> Any:
        """Reads and checks one mapping key."""
        line = node.start_mark.line + 1
        if isinstance(schema, _MapOf):
            key_schema = schema.key
            if not isinstance(node, yaml.ScalarNode) or node.tag != _TAG + key_schema.type:
                self.fail(line, path, f"key {_show_node(node)} must be "
                          f"{_EXPECTED[key_schema.type]}, got {_type_name(node)}")
            simple = _SIMPLE_KEY.fullmatch(node.value)
            return self.scalar(node, key_schema, _join(path, node.value) if simple else path)
        is_str = isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "str"
        if not is_str or node.value not in schema.fields:
            allowed = ", ".join(schema.fields)
            name = node.value if is_str else None
            if name and _SIMPLE_KEY.fullmatch(name):
                self.fail(line, _join(path, name), f"unknown field; allowed: {allowed}")
            self.fail(line, path, f"unknown field {_show_node(node)}; allowed: {allowed}")
        return node.value

    def build(self, values: dict) -> ModelSpec:
        """Runs the cross-field checks and builds the ModelSpec."""
        if values["name"] != self.source.stem or self.source.suffix != ".yaml":
            self.fail(self.lines["name"], "name",
                      f"{_show(values['name'])} does not match the file name "
                      f"{_show(self.source.name)}; rename one so that the file is NAME.yaml")
        modules = {}
        for kind, family in values["modules"].items():
            family_path = f"modules.{kind}"
            if not family["handle"].startswith(PUBLISHER + "/") \
                    or not family["handle"].endswith("/" + kind):
                self.fail(self.lines[family_path + ".handle"], family_path + ".handle",
                          f"{_show(family['handle'])} must look like {PUBLISHER}/.../{kind}")
            versions = {}
            for number, version in family["versions"].items():
                version_path = f"{family_path}.versions.{number}"
                self.check_signatures(version_path, kind, version)
                versions[number] = VersionSpec(
                    version=number, format=version["format"],
                    input_size=version["input_size"],
                    signatures=tuple(version["signatures"]))
            modules[kind] = ModuleFamily(kind=kind, handle=family["handle"], versions=versions)
        checksum = values["checkpoint"]["checksum"]
        algo, hex_digest = None, None
        if checksum != UNPUBLISHED:
            algo, _, hex_digest = checksum.partition(":")
            hex_digest = hex_digest.lower()
        checkpoint = dict(values["checkpoint"])
        del checkpoint["checksum"]
        return ModelSpec(
            name=values["name"],
            architecture=values["architecture"],
            display_name=values["display_name"],
            scope=values["scope"],
            checkpoint=CheckpointSource(checksum_algo=algo, checksum_hex=hex_digest,
                                        **checkpoint),
            image_size=values["image_size"],
            num_classes=values["num_classes"],
            feature_size=values["feature_size"],
            input_mapping=InputMapping(multiply=values["input_mapping"]["multiply"],
                                       subtract=tuple(values["input_mapping"]["subtract"])),
            card=CardInfo(**values["card"]),
            modules=modules,
            source=self.source,
        )

    def check_signatures(self, version_path: str, kind: str, version: dict):
        """Applies ``_SIGNATURES_FORBIDDEN`` to one version's signatures."""
        rules = [("kind", kind), ("input_size", version["input_size"]),
                 ("format", version["format"])]
        for index, signature in enumerate(version["signatures"]):
            for rule in rules:
                if signature in _SIGNATURES_FORBIDDEN[rule]:
                    path = f"{version_path}.signatures[{index}]"
                    reason = _FORBIDDEN_REASON[rule[0]].format(value=rule[1])
                    self.fail(self.lines[path], path, f"signature {signature}: {reason}")


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
    key = str(key)
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
