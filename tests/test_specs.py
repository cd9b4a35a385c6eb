"""Tests of hubexport.specs: the shipped specs, targets(), and validation.

Expected values come from FACTS.md and the seed cards, not from the specs.
"""

import copy
import pathlib
import re
import subprocess
import sys

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zoo_facts
from hubexport import specs
from hubexport.errors import SpecError, UsageError

SPECS_DIR = pathlib.Path(__file__).resolve().parent.parent / "specs"
# The models of the zoo's part 1 (FACTS.md, ZOO.md section 1), a spec file each.
PART_1 = ["inception_resnet_v2", "inception_v1", "inception_v2", "inception_v3",
          "resnet_v1_101", "resnet_v1_152", "resnet_v1_50", "resnet_v2_101", "resnet_v2_152",
          "resnet_v2_50"]
# The spec files with variant tables.
FAMILIES = {"mobilenet_v1": SPECS_DIR / "mobilenet_v1.yaml",
            "mobilenet_v2": SPECS_DIR / "mobilenet_v2.yaml"}
V2_FAMILY_TEXT = FAMILIES["mobilenet_v2"].read_text(encoding="utf-8")


@pytest.fixture(scope="module", autouse=True)
def _mobilenet_architectures():
    """The MobileNet nets' architecture names, while hubexport.nets lacks them."""
    with pytest.MonkeyPatch.context() as patch:
        for name in zoo_facts.missing_architectures():
            patch.setitem(specs.ARCHITECTURES, name, name[:12])
        yield
V2_PATH = SPECS_DIR / "inception_v2.yaml"
V2_TEXT = V2_PATH.read_text(encoding="utf-8")
ERROR_RE = re.compile(r"^.+:\d+: \S+: .+$")

ALL_VERSIONS = {
    1: ("hub", "fixed"),
    3: ("hub", "variable"),
    4: ("saved_model_2", "variable"),
    5: ("saved_model_2", "variable"),
}
SIGNATURES = {
    ("classification", 1): ("default", "image_classification", "image_feature_vector"),
    ("classification", 3): ("default", "image_classification", "image_feature_vector",
                            "image_classification_with_bn_hparams",
                            "image_feature_vector_with_bn_hparams"),
    ("feature_vector", 1): ("default", "image_feature_vector"),
    ("feature_vector", 3): ("default", "image_feature_vector",
                            "image_feature_vector_with_bn_hparams"),
}
# The first paragraph of the seed cards' Overview (seeds 000 and 001).
IRV2_OVERVIEW = """\
Inception ResNet V2 is a neural network architecture for image classification,
originally published by

  * Christian Szegedy, Sergey Ioffe, Vincent Vanhoucke, Alex Alemi:
    ["Inception-v4, Inception-ResNet and the Impact of Residual Connections
    on Learning"](https://arxiv.org/abs/1602.07261), 2016.
"""


# --------------------------------------------------------------------------
# The shipped specs.


def test_default_specs_dir_is_the_repo_specs():
    assert specs.default_specs_dir().resolve() == SPECS_DIR


def test_shipped_specs_load():
    loaded = specs.load_specs()
    # The ten models of part 1 and tfhub.dev's 38 MobileNets; a spec file per
    # model, or per family with a variant table, in file-name order.
    mobilenets = list(zoo_facts.expected_models())  # multiplier, then resolution order
    order = []
    for stem in sorted(PART_1 + ["mobilenet_v1", "mobilenet_v2"]):
        order += [n for n in mobilenets if n.startswith(stem + "_")] if stem in FAMILIES else [stem]
    assert len(loaded) == 48 == len(PART_1) + len(mobilenets)
    assert list(loaded) == order
    for name, spec in loaded.items():
        assert spec.name == name
        if name in PART_1:
            assert spec.source.name == f"{name}.yaml" and spec.variant is None
        else:
            assert spec.source.resolve() == SPECS_DIR / f"{name[:12]}.yaml", name
            assert spec.variant is not None


@pytest.mark.parametrize("name, facts", [
    ("inception_v2", dict(
        architecture="inception_v2", display_name="Inception V2", scope="InceptionV2",
        url="http://download.tensorflow.org/models/inception_v2_2016_08_28.tar.gz",
        filename="inception_v2_2016_08_28.tar.gz", size=41577079, algo="sha384",
        hex="c0b2efbae8fc5e237ae67637dca3f311d4b4f7da576b56067e83d95c398a2fccd50baff9cc0de64335f4d7b78e1adb07",
        member="inception_v2.ckpt", card_path="inception_v2_2016_08_28/inception_v2.ckpt",
        image_size=224, feature_size=1024, network_architecture="inception-v2")),
    ("inception_resnet_v2", dict(
        architecture="inception_resnet_v2", display_name="Inception ResNet V2",
        scope="InceptionResnetV2",
        url="http://download.tensorflow.org/models/inception_resnet_v2_2016_08_30.tar.gz",
        filename="inception_resnet_v2_2016_08_30.tar.gz", size=None, algo="md5",
        hex="9e0f18e1259acf943e30690460d96123",
        member="inception_resnet_v2_2016_08_30.ckpt",
        card_path="inception_resnet_v2_2016_08_30/inception_resnet_v2_2016_08_30.ckpt",
        image_size=299, feature_size=1536, network_architecture="inception-resnet-v2")),
])
def test_shipped_spec_has_the_facts(name, facts):
    spec = specs.load_spec(SPECS_DIR / f"{name}.yaml")
    assert (spec.architecture, spec.display_name, spec.scope) == (
        facts["architecture"], facts["display_name"], facts["scope"])
    ckpt = spec.checkpoint
    assert ckpt == specs.CheckpointSource(
        url=facts["url"], size=facts["size"], checksum_algo=facts["algo"],
        checksum_hex=facts["hex"], member=facts["member"], card_path=facts["card_path"])
    assert ckpt.filename == facts["filename"]
    assert (spec.image_size, spec.num_classes, spec.feature_size) == (
        facts["image_size"], 1001, facts["feature_size"])
    assert spec.card.network_architecture == facts["network_architecture"]
    assert list(spec.modules) == ["classification", "feature_vector"]
    for kind, family in spec.modules.items():
        assert family.kind == kind
        assert family.handle == f"google/imagenet/{name}/{kind}"
        assert list(family.versions) == [1, 3, 4, 5]
        for number, version in family.versions.items():
            assert version.version == number
            assert (version.format, version.input_size) == ALL_VERSIONS[number]
            expected = SIGNATURES.get((kind, number),
                                      () if number == 4 else ("serving_default",))
            assert version.signatures == expected


def test_inception_resnet_v2_overview_is_the_seed_text():
    spec = specs.load_spec(SPECS_DIR / "inception_resnet_v2.yaml")
    assert spec.card.overview == IRV2_OVERVIEW


def test_inception_v2_overview_cites_both_papers():
    overview = specs.load_spec(V2_PATH).card.overview
    assert "https://arxiv.org/abs/1409.4842" in overview
    assert "https://arxiv.org/abs/1502.03167" in overview


def test_import_does_not_import_tensorflow():
    code = "import sys, hubexport.specs; sys.exit('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=SPECS_DIR.parent, check=False)
    assert result.returncode == 0


# --------------------------------------------------------------------------
# The variant tables: MobileNet V1 and V2 against ZOO.md (tests/zoo_facts.py).

MOBILENETS = zoo_facts.expected_models()
# (format, input_size) of each version, as tfhub.dev published them (ZOO.md section 1).
MOBILENET_VERSIONS = {
    "mobilenet_v1": {1: ("hub", "fixed"), 3: ("hub", "variable"),
                     4: ("saved_model_2", "variable"), 5: ("saved_model_2", "variable")},
    "mobilenet_v2": {1: ("hub", "fixed"), 2: ("hub", "fixed"), 3: ("hub", "fixed"),
                     4: ("saved_model_2", "fixed"), 5: ("saved_model_2", "fixed")},
}
PAPERS = {"mobilenet_v1": "https://arxiv.org/abs/1704.04861",
          "mobilenet_v2": "https://arxiv.org/abs/1801.04381"}


@pytest.fixture(scope="module")
def zoo():
    return specs.load_specs()


@pytest.mark.parametrize("name", list(MOBILENETS))
def test_mobilenet_variant_has_the_facts(zoo, name):
    facts, spec = MOBILENETS[name], zoo[name]
    family = facts["family"]
    assert (spec.name, spec.architecture, spec.display_name, spec.scope) == (
        name, facts["architecture"], facts["display_name"],
        {"mobilenet_v1": "MobilenetV1", "mobilenet_v2": "MobilenetV2"}[family])
    assert (spec.checkpoint.url, spec.checkpoint.member, spec.checkpoint.card_path) == (
        facts["url"], facts["member"], facts["card_path"])
    assert spec.checkpoint.filename == facts["url"].rsplit("/", 1)[1]
    assert (spec.image_size, spec.num_classes, spec.feature_size) == (
        facts["resolution"], 1001, facts["feature_size"])
    assert spec.input_mapping == specs.InputMapping(2.0, (1.0, 1.0, 1.0))
    assert spec.source.resolve() == FAMILIES[family]
    multipliers = list({m["depth_multiplier"]: 0 for m in MOBILENETS.values()
                        if m["family"] == family})
    assert spec.variant == specs.Variant(multipliers.index(facts["depth_multiplier"]),
                                         facts["depth_multiplier"], facts["resolution"])
    if name in zoo_facts.PUBLISHED:
        size, digest = zoo_facts.PUBLISHED[name]
        assert (spec.checkpoint.size, spec.checkpoint.checksum) == (size, "sha384:" + digest)
        assert spec.checkpoint.pinned
    else:
        assert (spec.checkpoint.size, spec.checkpoint.checksum) == (None, "unpublished")
        assert not spec.checkpoint.pinned
    assert list(spec.modules) == ["classification", "feature_vector"]
    for kind, module_family in spec.modules.items():
        assert module_family.handle == f"google/imagenet/{name}/{kind}"
        got = {n: (v.format, v.input_size) for n, v in module_family.versions.items()}
        assert got == MOBILENET_VERSIONS[family]
        for number, version in module_family.versions.items():
            expected = SIGNATURES.get((kind, 1 if number == 2 else number),
                                      () if number == 4 else ("serving_default",))
            assert version.signatures == expected, (kind, number)
    card = spec.card
    assert card.network_architecture == family.replace("_", "-")
    assert PAPERS[family] in card.overview
    spelled = facts["url"].rsplit("_", 2)[1]
    assert card.implementation == (f"`{family}`\nwith a depth multiplier of {spelled} and an "
                                   f"input size of\n{facts['resolution']}x{facts['resolution']} "
                                   "pixels")


def test_mobilenet_pinned_sources_are_the_published_six(zoo):
    pinned = {name for name, spec in zoo.items() if spec.checkpoint.pinned and name in MOBILENETS}
    assert pinned == set(zoo_facts.PUBLISHED)


def test_mobilenet_feature_sizes(zoo):
    for name, facts in MOBILENETS.items():
        multiplier = facts["depth_multiplier"]
        expected = (round(1024 * multiplier) if facts["family"] == "mobilenet_v1"
                    else {1.3: 1664, 1.4: 1792}.get(multiplier, 1280))
        assert zoo[name].feature_size == expected, name


def test_mobilenet_v2_changelog_is_spec_data(zoo):
    """Version 2's entry (tensorflow/hub#86) and version 1's statement come from the spec."""
    v2, v1 = zoo["mobilenet_v2_100_224"].card, zoo["mobilenet_v1_100_224"].card
    assert sorted(v2.changelog) == [1, 2, 3]
    assert any("Fixed broken UPDATE_OPS for fine-tuning" in item for item in v2.changelog[2])
    assert any("https://github.com/tensorflow/hub/issues/86" in item for item in v2.changelog[2])
    assert any("UPDATE_OPS already" in item for item in v2.changelog[1])
    assert not any("variable input size" in item for item in v2.changelog[3])
    assert v1.changelog == {}  # the default entries of versions 1, 3, 4, 5


def test_spec_file_with_variants_is_not_one_model():
    with pytest.raises(SpecError, match=re.escape(f"{FAMILIES['mobilenet_v2']}: defines 22 "
                                                  "models; load it with load_spec_file")):
        specs.load_spec(FAMILIES["mobilenet_v2"])


def test_templates_and_literal_braces(tmp_path):
    text = V2_FAMILY_TEXT.replace(
        "display_name: MobileNet V2 (depth multiplier {depth_multiplier:.2f})",
        "display_name: 'MobileNet {{V2}} x{depth_multiplier:.3f} at {resolution:04d}'")
    path = tmp_path / "mobilenet_v2.yaml"
    path.write_text(text)
    got = specs.load_spec_file(path)
    assert got["mobilenet_v2_075_96"].display_name == "MobileNet {V2} x0.750 at 0096"
    assert list(got) == [n for n in MOBILENETS if n.startswith("mobilenet_v2_")]


def test_a_model_defined_twice_is_an_error(tmp_path):
    (tmp_path / "mobilenet_v2.yaml").write_text(V2_FAMILY_TEXT)
    plain = tmp_path / "mobilenet_v2_100_224.yaml"
    plain.write_text(V2_TEXT.replace("name: inception_v2", "name: mobilenet_v2_100_224"))
    with pytest.raises(SpecError, match=re.escape(
            f"{plain}: defines model mobilenet_v2_100_224, which {tmp_path / 'mobilenet_v2.yaml'}"
            " defines too; remove one")):
        specs.load_specs(tmp_path)


def test_schemas_are_json_schema():
    for schema in (specs._SCHEMA, specs._FAMILY_SCHEMA):
        jsonschema.Draft202012Validator.check_schema(schema)
    assert specs.KINDS == ("classification", "feature_vector")
    assert specs.FORMATS == ("hub", "saved_model_2")


# --------------------------------------------------------------------------
# targets().


@pytest.fixture(scope="module")
def v2():
    return specs.load_spec(V2_PATH)


def test_targets_all_sorted_by_kind_then_version(v2):
    got = [(t.kind, t.version.version) for t in v2.targets()]
    assert got == [(k, v) for k in ("classification", "feature_vector") for v in (1, 3, 4, 5)]


def test_targets_filtered(v2):
    assert [t.module_handle for t in v2.targets(version=3)] == [
        "google/imagenet/inception_v2/classification/3",
        "google/imagenet/inception_v2/feature_vector/3"]
    assert [t.version.version for t in v2.targets(kind="feature_vector")] == [1, 3, 4, 5]
    (only,) = v2.targets(version=5, kind="classification")
    assert only.version == v2.modules["classification"].versions[5]


def test_target_properties(v2):
    (target,) = v2.targets(version=4, kind="feature_vector")
    assert target.spec is v2
    assert target.handle == "google/imagenet/inception_v2/feature_vector"
    assert target.module_handle == "google/imagenet/inception_v2/feature_vector/4"
    assert target.publisher == "google"
    assert target.rel_path == pathlib.Path("google/imagenet/inception_v2/feature_vector/4")
    assert not target.rel_path.is_absolute()
    assert target in {target}  # hashable


@pytest.mark.parametrize("kwargs, message", [
    (dict(version=2), "model inception_v2 has no version 2; defined: 1, 3, 4, 5"),
    (dict(kind="detection"), "model inception_v2 has no module kind 'detection'; "
                             "defined: classification, feature_vector"),
    (dict(version=9, kind="classification"),
     "model inception_v2 has no classification version 9; defined: 1, 3, 4, 5"),
])
def test_targets_undefined(v2, kwargs, message):
    with pytest.raises(UsageError) as info:
        v2.targets(**kwargs)
    assert str(info.value) == message


def test_targets_version_missing_in_one_kind_only(tmp_path):
    text = V2_TEXT.replace("      5:\n        format: saved_model_2\n        input_size: variable\n"
                           "        deploy: [tflite]\n        signatures: [serving_default]\n",
                           "", 1)
    assert text != V2_TEXT
    path = tmp_path / "inception_v2.yaml"
    path.write_text(text)
    spec = specs.load_spec(path)
    assert [t.kind for t in spec.targets(version=5)] == ["feature_vector"]
    with pytest.raises(UsageError, match=r"no classification version 5; defined: 1, 3, 4$"):
        spec.targets(version=5, kind="classification")


# --------------------------------------------------------------------------
# Bad specs: each problem gives FILE:LINE: field: problem.


def _line(text, needle, nth=1):
    """1-based line of the nth line of ``text`` that contains ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) >= nth, (needle, nth)
    return hits[nth - 1]


def _edit(old, new):
    def edit(text):
        assert old in text, old
        return text.replace(old, new, 1)
    return edit


CHECKSUM = "sha384:c0b2efbae8fc5e237ae67637dca3f311d4b4f7da576b56067e83d95c398a2fccd50baff9cc0de64335f4d7b78e1adb07"
V1_SIGS = "signatures: [default, image_classification, image_feature_vector]"
FV1_SIGS = "signatures: [default, image_feature_vector]"
C = "modules.classification.versions"
F = "modules.feature_vector.versions"

# (id, edit of the spec text, field, (needle, nth) or line, problem regex)
BAD_SPECS = [
    ("unknown-top-key", lambda t: t + "colour: red\n", "colour", ("colour:", 1),
     "unknown field; allowed: name, architecture"),
    ("unknown-nested-key", _edit("  member: inception_v2.ckpt\n",
                                 "  member: inception_v2.ckpt\n  mebmer: x\n"),
     "checkpoint.mebmer", ("mebmer", 1), "unknown field; allowed: url, size"),
    ("unknown-key-with-space", _edit("  member: inception_v2.ckpt\n",
                                     "  member: inception_v2.ckpt\n  mem ber: x\n"),
     "checkpoint", ("mem ber", 1), "unknown field 'mem ber'"),
    ("unknown-version-key", _edit("        input_size: fixed\n",
                                  "        input_size: fixed\n        trainable: true\n"),
     f"{C}.1.trainable", ("trainable", 1), "unknown field"),
    ("missing-top-field", _edit("scope: InceptionV2\n", ""), "scope", ("name:", 1),
     "missing required field"),
    ("missing-checksum", _edit(f"  checksum: {CHECKSUM}\n", ""), "checkpoint.checksum",
     ("checkpoint:", 1), "missing required field"),
    ("missing-format", _edit("        format: hub\n", ""), f"{C}.1.format", ("      1:", 1),
     "missing required field"),
    ("missing-handle", _edit("    handle: google/imagenet/inception_v2/feature_vector\n", ""),
     "modules.feature_vector.handle", ("  feature_vector:", 1), "missing required field"),
    ("quoted-int", _edit("image_size: 224", "image_size: '224'"), "image_size",
     ("image_size", 1), "expected an integer, got a string"),
    ("float-size", _edit("size: 41577079", "size: 4.1e+7"), "checkpoint.size",
     ("size: 4.1", 1), "expected an integer, got a number"),
    ("bool-int", _edit("num_classes: 1001", "num_classes: yes"), "num_classes",
     ("num_classes", 1), "expected an integer, got a boolean"),
    ("int-string", _edit("display_name: Inception V2", "display_name: 2"), "display_name",
     ("display_name", 1), "expected a string, got an integer"),
    ("null-required", _edit("scope: InceptionV2", "scope:"), "scope", ("scope", 1),
     "expected a string, got null"),
    ("empty-string", _edit("display_name: Inception V2", "display_name: ' '"), "display_name",
     ("display_name", 1), "must not be empty"),
    ("list-not-mapping", _edit("checkpoint:\n", "checkpoint: [a]\nxcheckpoint:\n"),
     "checkpoint", ("checkpoint: [a]", 1), "expected a mapping, got a list"),
    ("scalar-not-list", _edit(V1_SIGS, "signatures: default"), f"{C}.1.signatures",
     ("signatures: default", 1), "expected a list, got a string"),
    ("python-tag", _edit("image_size: 224", "image_size: !!python/int 224"), "image_size",
     ("image_size", 1), "expected an integer, got a value tagged"),
    ("checksum-no-colon", _edit(CHECKSUM, CHECKSUM.replace(":", "")), "checkpoint.checksum",
     ("checksum", 1), "is not ALGO:HEX"),
    ("checksum-sha1", _edit(CHECKSUM, "sha1:" + "a" * 40), "checkpoint.checksum",
     ("checksum", 1), "is not ALGO:HEX with ALGO one of md5, sha256, sha384, sha512"),
    ("checksum-short", _edit(CHECKSUM, "md5:" + CHECKSUM[7:]), "checkpoint.checksum",
     ("checksum", 1), "md5 needs 32 hex digits"),
    ("checksum-not-hex", _edit(CHECKSUM, CHECKSUM[:-1] + "g"), "checkpoint.checksum",
     ("checksum", 1), "sha384 needs 96 hex digits"),
    ("checksum-unpublished-typo", _edit(CHECKSUM, "unpublishd"), "checkpoint.checksum",
     ("checksum", 1), "'unpublishd' is not ALGO:HEX with ALGO one of md5, sha256, sha384, "
                      "sha512, nor 'unpublished'"),
    ("checksum-unpublished-upper", _edit(CHECKSUM, "UNPUBLISHED"), "checkpoint.checksum",
     ("checksum", 1), "is not ALGO:HEX"),
    ("checksum-unpublished-with-hex", _edit(CHECKSUM, "unpublished:" + CHECKSUM[7:]),
     "checkpoint.checksum", ("checksum", 1), "is not ALGO:HEX"),
    ("size-zero", _edit("size: 41577079", "size: 0"), "checkpoint.size", ("size: 0", 1),
     "must be positive, got 0"),
    ("size-negative", _edit("size: 41577079", "size: -5"), "checkpoint.size", ("size: -5", 1),
     "must be positive, got -5"),
    ("size-huge", _edit("size: 41577079", "size: 9223372036854775808"), "checkpoint.size",
     ("size: 9", 1), "integer out of range"),
    ("size-hex", _edit("size: 41577079", "size: 0x10"), "checkpoint.size",
     ("size: 0x", 1), "'0x10' is not a decimal integer"),
    ("size-explicit-int-tag", _edit("size: 41577079", "size: !!int '-'"), "checkpoint.size",
     ("size: !!int", 1), "'-' is not a decimal integer"),
    ("image-size-zero", _edit("image_size: 224", "image_size: 0"), "image_size",
     ("image_size", 1), "must be positive"),
    ("architecture", _edit("architecture: inception_v2", "architecture: resnet_50"),
     "architecture", ("architecture", 1),
     "unknown architecture 'resnet_50'; allowed: inception_v1, inception_v2, inception_v3, inception_resnet_v2, resnet_v1_50"),
    ("format", _edit("format: saved_model_2", "format: saved_model_3"), f"{C}.4.format",
     ("saved_model_3", 1), "unknown format 'saved_model_3'"),
    ("input-size", _edit("input_size: fixed", "input_size: dynamic"), f"{C}.1.input_size",
     ("dynamic", 1), "unknown input_size 'dynamic'"),
    ("kind", _edit("  feature_vector:\n", "  detection:\n"), "modules.detection",
     ("detection:", 1), "unknown module kind 'detection'"),
    ("signature", _edit("image_classification_with_bn_hparams,", "image_segmentation,"),
     f"{C}.3.signatures[3]", ("image_segmentation", 1), "unknown signature 'image_segmentation'"),
    ("classification-signature-in-feature-vector",
     _edit(FV1_SIGS, "signatures: [default, image_classification]"), f"{F}.1.signatures[1]",
     ("[default, image_classification]", 1),
     "signature image_classification: a feature_vector module cannot serve it"),
    ("serving-default-in-hub", _edit(V1_SIGS, "signatures: [default, serving_default]"),
     f"{C}.1.signatures[1]", ("serving_default]", 1), "format hub cannot serve it"),
    ("hub-signature-in-saved-model", _edit("signatures: []", "signatures: [default]"),
     f"{C}.4.signatures[0]", ("signatures: [default]", 1),
     "format saved_model_2 cannot serve it"),
    ("duplicate-signature", _edit(FV1_SIGS, "signatures: [default, default]"),
     f"{F}.1.signatures[1]", ("[default, default]", 1), "duplicate 'default'"),
    ("signature-not-string", _edit(FV1_SIGS, "signatures: [default, 7]"),
     f"{F}.1.signatures[1]", ("[default, 7]", 1), "expected a string, got an integer"),
    ("url-scheme", _edit("url: http://", "url: ftp://"), "checkpoint.url", ("url:", 1),
     "has scheme 'ftp'; allowed: http, https, file"),
    ("url-no-host", _edit("url: http://download.tensorflow.org/", "url: http:///"),
     "checkpoint.url", ("url:", 1), "names no host"),
    ("url-no-file-name", _edit("inception_v2_2016_08_28.tar.gz\n", "\n"), "checkpoint.url",
     ("url:", 1), "does not end in a file name"),
    ("url-bad-ipv6", _edit("url: http://download.tensorflow.org/", "url: http://[::1/"),
     "checkpoint.url", ("url:", 1), "is not a URL"),
    ("member-escapes", _edit("member: inception_v2.ckpt", "member: ../inception_v2.ckpt"),
     "checkpoint.member", ("member:", 1), "is not a relative path"),
    ("member-absolute", _edit("member: inception_v2.ckpt", "member: /etc/passwd"),
     "checkpoint.member", ("member:", 1), "is not a relative path"),
    ("handle-kind", _edit("handle: google/imagenet/inception_v2/feature_vector",
                          "handle: google/imagenet/inception_v2/classification"),
     "modules.feature_vector.handle", ("inception_v2/classification", 2),
     r"must look like PUBLISHER/NAME\[/\.\.\.\]/feature_vector"),
    ("handle-too-short", _edit("handle: google/imagenet/inception_v2/classification",
                               "handle: inception_v2/classification"),
     "modules.classification.handle", ("handle: inception_v2/", 1),
     r"'inception_v2/classification' must look like PUBLISHER/NAME\[/\.\.\.\]/classification"),
    ("version-key-string", _edit("      3:\n", "      v3:\n"), "modules.classification.versions",
     ("v3:", 1), "key 'v3' must be an integer, got a string"),
    ("version-zero", _edit("      3:\n", "      0:\n"), f"{C}.0", ("      0:", 1),
     "must be positive, got 0"),
    ("duplicate-top-key", lambda t: t + "image_size: 299\n", "image_size", ("image_size", 2),
     "duplicate key \\(first at line 14\\)"),
    ("duplicate-nested-key", _edit("  member: inception_v2.ckpt\n",
                                   "  member: inception_v2.ckpt\n  member: x.ckpt\n"),
     "checkpoint.member", ("member: x.ckpt", 1), "duplicate key \\(first at line 11\\)"),
    ("duplicate-version", _edit("      3:\n", "      1:\n"), f"{C}.1", ("      1:", 2),
     "duplicate key"),
    ("version-octal", _edit("      3:\n", "      03:\n"), f"{C}.03", ("      03:", 1),
     "'03' is not a decimal integer"),
    ("version-sexagesimal", _edit("      3:\n", "      1:30:\n"), f"{C}", ("      1:30:", 1),
     "'1:30' is not a decimal integer"),
    ("name-not-file-name", _edit("name: inception_v2", "name: inception_v3"), "name",
     ("name:", 1), "'inception_v3' does not match the file name 'inception_v2.yaml'"),
    ("name-not-identifier", _edit("name: inception_v2", "name: Inception-V2"), "name",
     ("name:", 1), "is not a name of lower-case letters"),
    ("yaml-syntax", _edit("image_size: 224", "image_size: [224"), "(document)",
     ("num_classes", 1), "invalid YAML: while parsing a flow sequence; expected ',' or ']'"),
    ("yaml-two-documents", lambda t: t + "---\nname: x\n", "(document)", ("---", 1),
     "invalid YAML: expected a single document in the stream; but found another document"),
    ("non-mapping-list", lambda t: "- a\n- b\n", "(document)", 1,
     "expected a mapping, got a list"),
    ("non-mapping-scalar", lambda t: "just text\n", "(document)", 1,
     "expected a mapping, got a string"),
    ("empty", lambda t: "", "(document)", 1, "empty spec"),
    ("only-comments", lambda t: "# nothing\n", "(document)", 1, "empty spec"),
    ("tab-indent", _edit("  member:", "\tmember:"), "(document)", ("member:", 1),
     "tab character; indent with spaces"),
    ("tab-in-value", _edit("display_name: Inception V2", "display_name: Inception\tV2"),
     "(document)", ("display_name", 1), "tab character"),
    ("nul-character", _edit("display_name: Inception V2", "display_name: Inception\0V2"),
     "(document)", ("display_name", 1), "invalid YAML: special characters are not allowed"),
    ("merge-key", _edit("checkpoint:\n", "checkpoint:\n  <<: {}\n"), "checkpoint",
     ("<<", 1), "unknown field '<<'; allowed: url"),
]
BAD_SPECS.append(
    ("empty-versions",
     lambda t: (t[:t.index("    versions:\n")] + "    versions: {}\n"
                + t[t.index("  feature_vector:\n"):]),
     "modules.classification.versions", ("versions: {}", 1), "must not be empty"))


@pytest.mark.parametrize("edit, field, where, problem",
                         [case[1:] for case in BAD_SPECS], ids=[case[0] for case in BAD_SPECS])
def test_bad_spec(tmp_path, edit, field, where, problem):
    text = edit(V2_TEXT)
    line = where if isinstance(where, int) else _line(text, *where)
    path = tmp_path / "inception_v2.yaml"
    path.write_bytes(text.encode("utf-8"))
    with pytest.raises(SpecError) as info:
        specs.load_spec(path)
    message = str(info.value)
    prefix = f"{path}:{line}: {field}: "
    assert message.startswith(prefix), (message, prefix)
    assert re.search(problem, message[len(prefix):]), message
    assert ERROR_RE.fullmatch(message) and len(message.splitlines()) == 1


# A variant table's problems: FILE:LINE: field: problem, on specs/mobilenet_v2.yaml.
V2_ROW_3 = "  - depth_multiplier: 1.0\n"
V2_CHANGELOG_2 = V2_FAMILY_TEXT[V2_FAMILY_TEXT.index("    2:\n      - |-\n        Fixed"):
                                V2_FAMILY_TEXT.index("    3:\n      - |-\n        Fine-tuning")]
NOTE = r" \(variants\[0\], resolution 96\)$"
V = "variants"
BAD_FAMILIES = [
    ("duplicate-multiplier", _edit("  - depth_multiplier: 0.75\n", "  - depth_multiplier: 0.5\n"),
     f"{V}[2].depth_multiplier", ("depth_multiplier: 0.5", 2),
     r"duplicate depth multiplier 0.5 \(first at variants\[1\]\)"),
    ("multiplier-zero", _edit(V2_ROW_3, "  - depth_multiplier: 0\n"), f"{V}[3].depth_multiplier",
     ("depth_multiplier: 0", 4), "must be positive, got 0"),
    ("multiplier-string", _edit("depth_multiplier: 1.3", "depth_multiplier: '1.3'"),
     f"{V}[4].depth_multiplier", ("'1.3'", 1), "expected a number, got a string"),
    ("multiplier-nan", _edit("depth_multiplier: 1.3", "depth_multiplier: .nan"),
     f"{V}[4].depth_multiplier", (".nan", 1), "must be a finite number"),
    ("resolutions-empty", _edit("    resolutions: [224]\n", "    resolutions: []\n"),
     f"{V}[4].resolutions", ("resolutions: []", 1), "must not be empty"),
    ("resolution-duplicate", _edit("[96, 128, 160, 192, 224]", "[96, 128, 96]"),
     f"{V}[0].resolutions[2]", ("[96, 128, 96]", 1), "duplicate 96"),
    ("resolution-zero", _edit("[96, 128, 160, 192, 224]", "[0, 128]"),
     f"{V}[0].resolutions[0]", ("[0, 128]", 1), "must be positive, got 0"),
    ("feature-size-missing", _edit("    feature_size: 1280\n", ""), f"{V}[0].feature_size",
     ("depth_multiplier: 0.35", 1), "missing required field"),
    ("row-unknown-field", _edit("    feature_size: 1280\n", "    feature_size: 1280\n    colour: red\n"),
     f"{V}[0].colour", ("colour", 1),
     "unknown field; allowed: depth_multiplier, feature_size, resolutions, published$"),
    ("row-not-a-mapping", _edit("  - depth_multiplier: 1.3\n    feature_size: 1664\n"
                                "    resolutions: [224]\n", "  - 1.3\n"),
     f"{V}[4]", ("  - 1.3", 1), "expected a mapping, got a number"),
    ("published-not-a-resolution", _edit("      224:\n        size: 78306834",
                                         "      256:\n        size: 78306834"),
     f"{V}[3].published.256", ("256:", 1),
     r"resolution 256 is not in this row's resolutions \[96, 128, 160, 192, 224\]"),
    ("published-bad-checksum", _edit("checksum: sha384:061da971be19c9fa", "checksum: sha384:061d"),
     f"{V}[3].published.224.checksum", ("sha384:061d", 1), "sha384 needs 96 hex digits"),
    ("published-without-checksum", _edit("        checksum: sha384:061da971be19c9fa185be494c7cd"
                                         "567ac8798bd14847f80c83afd9f4ffb2096343b4f5911fa227fe6"
                                         "59c8d6684478822\n", ""),
     f"{V}[3].published.224.checksum", ("      224:", 1), "missing required field"),
    ("image-size", _edit("num_classes: 1001\n", "num_classes: 1001\nimage_size: 224\n"),
     "image_size", ("image_size: 224", 1),
     r"not allowed with variants; it comes from variants\[\].resolutions"),
    ("checkpoint-size", _edit("  checksum: unpublished\n", "  checksum: unpublished\n  size: 5\n"),
     "checkpoint.size", ("size: 5", 1), r"it comes from variants\[\].published"),
    ("pinned-family-checksum", _edit("  checksum: unpublished", "  checksum: sha256:" + "a" * 64),
     "checkpoint.checksum", ("sha256:", 1), "must be 'unpublished' with variants"),
    ("variants-empty", lambda t: t[:t.index("variants:\n")] + "variants: []\n", V,
     ("variants: []", 1), "must not be empty"),
    ("variants-not-a-list", lambda t: t[:t.index("variants:\n")] + "variants: {}\n", V,
     ("variants: {}", 1), "expected a list, got a mapping"),
    ("unknown-placeholder", _edit("checkpoints/mobilenet_v2_{depth_multiplier}",
                                  "checkpoints/mobilenet_v2_{dm}"),
     "checkpoint.url", ("{dm}", 1),
     "unknown placeholder {dm}; allowed: depth_multiplier, depth_percent, resolution" + NOTE),
    ("unbalanced-brace", _edit("name: mobilenet_v2_{depth_percent:03d}_{resolution}",
                               "name: mobilenet_v2_{depth_percent:03d}_{resolution"),
     "name", ("name:", 1), r"is not a template \(.*\); write {{ and }} for a brace" + NOTE),
    ("bad-format-spec", _edit("(depth multiplier {depth_multiplier:.2f})",
                              "(depth multiplier {depth_multiplier:d})"),
     "display_name", ("display_name: MobileNet", 1), "Unknown format code 'd'"),
    ("expands-to-unknown-architecture", _edit("architecture: mobilenet_v2_{depth_percent:03d}",
                                              "architecture: mobilenet_v2_{depth_percent}"),
     "architecture", ("architecture:", 1), "unknown architecture 'mobilenet_v2_35'; allowed: .*" + NOTE),
    ("expands-to-bad-url", _edit("url: https://", "url: ftp://"), "checkpoint.url",
     ("url: ftp", 1), "has scheme 'ftp'; allowed: http, https, file" + NOTE[:-1]),
    ("name-without-resolution", _edit("name: mobilenet_v2_{depth_percent:03d}_{resolution}",
                                      "name: mobilenet_v2_{depth_percent:03d}"),
     f"{V}[0].resolutions[1]", ("[96, 128, 160, 192, 224]", 1),
     r"model mobilenet_v2_035 comes from variants\[0\] too"),
    ("name-of-another-file", _edit("name: mobilenet_v2_{depth_percent", "name: mobilenet_v3_{depth_percent"),
     "name", ("name:", 1), r"'mobilenet_v3_035_96' does not start with 'mobilenet_v2_'"),
    ("handle-of-another-kind", _edit("_{resolution}/classification", "_{resolution}/feature_vector"),
     "modules.classification.handle", ("handle:", 1),
     r"must look like PUBLISHER/NAME\[/\.\.\.\]/classification" + NOTE[:-1]),
    ("version-2-without-changelog", _edit(V2_CHANGELOG_2, ""),
     "modules.classification.versions.2", ("      2:", 1),
     r"version 2 needs an entry in card.changelog \(templates/_changelog.md.j2 has 1, 3, 4, 5\)"),
    ("changelog-of-no-version", _edit(V2_CHANGELOG_2, V2_CHANGELOG_2.replace("    2:", "    2:", 1)
                                      + "    7: [a]\n"),
     "card.changelog.7", ("    7: [a]", 1), "version 7 is not a version of this spec's modules"),
    ("changelog-item-empty", _edit(V2_CHANGELOG_2, V2_CHANGELOG_2 + "    4: ['  ']\n"),
     "card.changelog.4[0]", ("    4: ['  ']", 1), "must not be empty"),
]


@pytest.mark.parametrize("edit, field, where, problem", [case[1:] for case in BAD_FAMILIES],
                         ids=[case[0] for case in BAD_FAMILIES])
def test_bad_variant_table(tmp_path, edit, field, where, problem):
    text = edit(V2_FAMILY_TEXT)
    line = _line(text, *where)
    path = tmp_path / "mobilenet_v2.yaml"
    path.write_bytes(text.encode("utf-8"))
    with pytest.raises(SpecError) as info:
        specs.load_spec_file(path)
    message = str(info.value)
    prefix = f"{path}:{line}: {field}: "
    assert message.startswith(prefix), (message, prefix)
    assert re.search(problem, message[len(prefix):]), message
    assert ERROR_RE.fullmatch(message) and len(message.splitlines()) == 1


def test_bn_hparams_signatures_with_a_fixed_input_size(tmp_path):
    """mobilenet_v2's version 3 (ZOO.md section 1): allowed for any spec."""
    text = V2_TEXT.replace(V1_SIGS, V1_SIGS[:-1] + ", image_feature_vector_with_bn_hparams]", 1)
    path = tmp_path / "inception_v2.yaml"
    path.write_text(text)
    version = specs.load_spec(path).modules["classification"].versions[1]
    assert version.input_size == "fixed"
    assert version.signatures[-1] == "image_feature_vector_with_bn_hparams"


def test_bad_utf8(tmp_path):
    path = tmp_path / "inception_v2.yaml"
    path.write_bytes(V2_TEXT.encode().replace(b"name: Inception V2", b"name: Inception \xff2", 1))
    with pytest.raises(SpecError, match=re.escape(f"{path}:5: (document): not UTF-8 text "
                                                  "(byte 0xff)")):
        specs.load_spec(path)


def test_utf8_bom_accepted(tmp_path):
    path = tmp_path / "inception_v2.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + V2_TEXT.encode())
    assert specs.load_spec(path).name == "inception_v2"


def test_size_may_be_absent(tmp_path):
    path = tmp_path / "inception_v2.yaml"
    path.write_text(V2_TEXT.replace("  size: 41577079\n", ""))
    assert specs.load_spec(path).checkpoint.size is None


def test_unpublished_checksum_is_unpinned(tmp_path):
    path = tmp_path / "inception_v2.yaml"
    path.write_text(V2_TEXT.replace("  size: 41577079\n", "").replace(CHECKSUM, "unpublished"))
    ck = specs.load_spec(path).checkpoint
    assert (ck.pinned, ck.checksum_algo, ck.checksum_hex, ck.size, ck.checksum) == \
        (False, None, None, None, "unpublished")
    path.write_text(V2_TEXT.replace(CHECKSUM, "unpublished"))  # a size may be given
    assert specs.load_spec(path).checkpoint.size == 41577079
    shipped = specs.load_spec(V2_PATH).checkpoint
    assert shipped.pinned is True and shipped.checksum == CHECKSUM


def test_checksum_hex_is_lower_cased(tmp_path):
    path = tmp_path / "inception_v2.yaml"
    path.write_text(V2_TEXT.replace(CHECKSUM, CHECKSUM.upper().replace("SHA384", "sha384")))
    assert specs.load_spec(path).checkpoint.checksum_hex == CHECKSUM[7:]


def test_file_name_must_end_in_yaml(tmp_path):
    path = tmp_path / "inception_v2.yml"
    path.write_text(V2_TEXT)
    with pytest.raises(SpecError, match=re.escape(f"{path}:3: name: 'inception_v2' does not "
                                                  "match the file name 'inception_v2.yml'")):
        specs.load_spec(path)


def test_aliases_are_followed(tmp_path):
    text = V2_TEXT.replace("        input_size: fixed\n", "        input_size: &size fixed\n", 1)
    text = text.replace("input_size: fixed", "input_size: *size").replace(
        "input_size: &size *size", "input_size: &size fixed")
    assert "*size" in text
    path = tmp_path / "inception_v2.yaml"
    path.write_text(text)
    spec = specs.load_spec(path)
    assert spec.modules["feature_vector"].versions[1].input_size == "fixed"


def test_recursive_alias_is_an_error(tmp_path):
    path = tmp_path / "inception_v2.yaml"
    path.write_text(V2_TEXT.replace("signatures: []", "signatures: &loop [*loop]", 1))
    with pytest.raises(SpecError, match=r":\d+: modules\.classification\.versions\.4\."
                                        r"signatures\[0\]: expected a string, got a list$"):
        specs.load_spec(path)


def test_deep_nesting_is_an_error(tmp_path):
    path = tmp_path / "inception_v2.yaml"
    path.write_text("[" * 1000 + "]" * 1000)
    with pytest.raises(SpecError, match=re.escape(f"{path}:1: (document): invalid YAML: nested")):
        specs.load_spec(path)


def test_load_spec_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError, match=re.escape(f"{path}: cannot read model spec")):
        specs.load_spec(path)


def test_load_specs_missing_dir(tmp_path):
    with pytest.raises(SpecError, match=re.escape(f"{tmp_path / 'nope'}: cannot list")):
        specs.load_specs(tmp_path / "nope")


def test_load_specs_empty_dir(tmp_path):
    (tmp_path / "README.md").write_text("not a spec")
    with pytest.raises(SpecError, match=re.escape(f"{tmp_path}: no model specs (*.yaml)")):
        specs.load_specs(tmp_path)


def test_load_specs_reads_every_yaml_and_reports_the_bad_one(tmp_path):
    (tmp_path / "inception_v2.yaml").write_text(V2_TEXT)
    (tmp_path / "notes.txt").write_text(":::")
    assert list(specs.load_specs(tmp_path)) == ["inception_v2"]
    bad = tmp_path / "zzz.yaml"
    bad.write_text(V2_TEXT)
    with pytest.raises(SpecError, match=re.escape(f"{bad}:3: name: 'inception_v2' does not")):
        specs.load_specs(tmp_path)


# --------------------------------------------------------------------------
# Property: any bytes give a ModelSpec or a one-line SpecError.


def _outcome(source, data):
    try:
        models = specs.parse_spec_file(data, source)
    except SpecError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1, message
        assert ERROR_RE.fullmatch(message), message
        assert message.startswith(f"{source}:"), message
        return None
    assert models and all(isinstance(spec, specs.ModelSpec) for spec in models.values())
    assert all(name == spec.name for name, spec in models.items())
    return models


REAL = [(path, path.read_bytes()) for path in sorted(SPECS_DIR.glob("*.yaml"))]
REAL_DOCS = [(path, yaml.safe_load(data)) for path, data in REAL]

_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
            | st.text(max_size=20))
_values = st.recursive(
    _scalars,
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=8) | st.integers(), children,
                                        max_size=4)),
    max_leaves=12)


def _all_paths(obj, prefix=()):
    if prefix:
        yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _all_paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _all_paths(value, prefix + (index,))


def _get(obj, path):
    for key in path:
        obj = obj[key]
    return obj


@st.composite
def _mutated(draw):
    """A real spec with one key deleted, one value retyped or one key inserted."""
    path, doc = draw(st.sampled_from(REAL_DOCS))
    doc = copy.deepcopy(doc)
    where = draw(st.sampled_from(list(_all_paths(doc))))
    parent, key = _get(doc, where[:-1]), where[-1]
    operation = draw(st.sampled_from(["delete", "retype", "insert"]))
    if operation == "delete":
        del parent[key]
    elif operation == "retype":
        parent[key] = draw(_values)
    else:
        target = parent[key] if isinstance(parent[key], dict) else parent
        if isinstance(target, dict):
            target[draw(st.text(min_size=1, max_size=8) | st.integers())] = draw(_values)
        else:
            target.append(draw(_values))
    return path, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode()


@st.composite
def _truncated(draw):
    path, data = draw(st.sampled_from(REAL))
    return path, data[:draw(st.integers(0, len(data)))]


@st.composite
def _byte_flipped(draw):
    path, data = draw(st.sampled_from(REAL))
    index = draw(st.integers(0, len(data) - 1))
    return path, data[:index] + bytes([draw(st.integers(0, 255))]) + data[index + 1:]


_FAKE = pathlib.Path("specs/model.yaml")
_random_inputs = st.one_of(
    st.binary(max_size=500).map(lambda data: (_FAKE, data)),
    st.text(max_size=300).map(lambda text: (_FAKE, text.encode("utf-8", "surrogatepass"))),
    _values.map(lambda value: (_FAKE, yaml.safe_dump(value, allow_unicode=True).encode())),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_random_inputs)
def test_property_random_input(case):
    _outcome(*case)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_mutated(), _truncated(), _byte_flipped()))
def test_property_mutated_real_spec(case):
    _outcome(*case)


def test_real_specs_round_trip_through_yaml_dump():
    # The mutation strategy relies on dumped, unmutated specs being valid.
    assert {path.stem for path, _ in REAL_DOCS} >= set(FAMILIES)
    for path, doc in REAL_DOCS:
        data = yaml.safe_dump(doc, sort_keys=False).encode()
        assert _outcome(path, data) == specs.load_spec_file(path)


@pytest.mark.parametrize("deploy, message", [
    ("[tfjs]", "modules.classification.versions.5.deploy[0]: tfjs: the TF.js writer converts "
               "TF1 Hub format modules (format: hub)"),
    ("[onnx]", "modules.classification.versions.5.deploy[0]: unknown deployment format "
               "'onnx'; allowed: tflite, tfjs"),
])
def test_a_deploy_format_the_version_cannot_have_is_a_spec_error(tmp_path, deploy, message):
    text = V2_TEXT.replace("        deploy: [tflite]\n", "        deploy: %s\n" % deploy, 1)
    assert text != V2_TEXT
    path = tmp_path / "inception_v2.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        specs.load_spec(path)
    assert str(info.value).endswith(message) and str(info.value).startswith(str(path) + ":")


def test_the_shipped_specs_list_the_variants_tfhub_dev_published(tmp_path):
    """TF.js for versions 1 and 3 (and 2 of MobileNet V2), none for ResNet 152 (ZOO.md); TFLite for 5."""
    for name, spec in specs.load_specs().items():
        for kind, family in spec.modules.items():
            for number, version in family.versions.items():
                tfjs = number in (1, 2, 3) and not name.endswith("_152")
                assert version.deploy == (("tfjs",) if tfjs else ("tflite",) if number == 5
                                          else ()), (name, kind, number)
