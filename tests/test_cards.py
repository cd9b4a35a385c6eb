"""Cards: rendered text against the seed cards, section by section.

The seeds (../shared/seeds/) are the contract. Differences allowed on purpose,
each stripped from both texts before comparing:
  * tfhub.dev's later wording of the usage paragraph ("with the `hub.Module`
    API" and the pointer to the TF2 migration guide), as seed 002 (the newest
    card) shows it; seeds 000 and 001 are older revisions;
  * the sentence stating the smallest accepted input (issue 2 asks for it).
Link targets are compared without their URLs (seed 001 uses tfhub.dev's
relative links) and white space is folded.
"""

import re
from pathlib import Path

import pytest

import zoo_facts
from hubexport import nets
from hubexport.cards import parse_card, render_card
from hubexport.specs import load_specs

SEEDS = Path(__file__).resolve().parents[1].parent / "shared" / "seeds"
MIN_SIZE = {"inception_v2": 1, "inception_resnet_v2": 75}
SECTIONS = ("hub.Module for TF1", "Overview", "Training", "Usage", "Fine-tuning", "Changelog")
_ALLOWED_ADDITIONS = [
    r" with the `hub\.Module` API",
    r"For use with TF2 APIs, see TF Hub's \[migration guide\]\(\)\. ?",
    r"The smallest input this module accepts is \d+ x \d+ pixels\. ?",
]


def _seed_cards():
    """Yields (module handle, card text) for every card in the seeds."""
    for path in sorted(SEEDS.glob("*.txt")):
        for text in re.split(r"^-{5,}$", path.read_text(), flags=re.M):
            text = text.strip("\n")
            if not text:
                continue
            first = text.splitlines()[0]
            m = re.match(r"# \d+\. \[imagenet-([\w\\]+)-([\w\\]+)@v(\d+)\]", first)
            if m:
                arch, kind, version = m.groups()
                handle = "google/imagenet/%s/%s/%s" % (arch.replace("\\", ""), kind.replace("\\", ""), version)
            else:
                handle = parse_card(text)[0]
            yield handle, text


def _sections(text):
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): _norm(parts[i + 1]) for i in range(1, len(parts) - 1, 2)}


def _norm(text):
    text = re.sub(r"\]\([^)]*\)", "]()", text)
    return re.sub(r"\s+", " ", text).strip()


def _strip(text):
    """Removes the allowed additions (from either side: seed 002 has some)."""
    for pattern in _ALLOWED_ADDITIONS:
        text = re.sub(pattern, "", text)
    return re.sub(r"\s+", " ", text).strip()


def _target(handle):
    specs = load_specs()
    _, _, arch, kind, version = handle.split("/")
    return specs[arch].targets(version=int(version), kind=kind)[0]


SEED_CARDS = list(_seed_cards())


def test_seeds_found():
    assert sorted(h for h, _ in SEED_CARDS) == [
        "google/imagenet/inception_resnet_v2/classification/1",
        "google/imagenet/inception_resnet_v2/classification/3",
        "google/imagenet/inception_resnet_v2/feature_vector/3",
        "google/imagenet/inception_v2/classification/3",
    ]


@pytest.mark.parametrize("handle,seed", SEED_CARDS, ids=[h for h, _ in SEED_CARDS])
def test_card_matches_seed_section_by_section(handle, seed):
    target = _target(handle)
    card = render_card(target, MIN_SIZE[target.spec.architecture])
    ours, theirs = _sections(card), _sections(seed)
    compared = 0
    for name in SECTIONS:
        if name not in theirs:
            continue
        assert name in ours, "card of %s lacks section %r" % (handle, name)
        assert _strip(ours[name]) == _strip(theirs[name]), (
            "section %r of %s differs" % (name, handle))
        compared += 1
    assert compared >= 4


@pytest.mark.parametrize("version", [1, 3, 4, 5])
@pytest.mark.parametrize("kind", ["classification", "feature_vector"])
@pytest.mark.parametrize("arch", ["inception_v2", "inception_resnet_v2"])
def test_every_card_has_handle_metadata_and_facts(arch, kind, version):
    spec = load_specs()[arch]
    target = spec.targets(version=version, kind=kind)[0]
    card = render_card(target, MIN_SIZE[arch])
    handle, meta = parse_card(card)
    assert handle == target.module_handle
    assert meta["format"] == ("hub" if version < 4 else "saved_model_2")
    assert meta["task"] == ("image-classification" if kind == "classification" else "image-feature-vector")
    assert meta["network-architecture"] == spec.card.network_architecture
    assert meta["dataset"] == "imagenet-ilsvrc-2012-cls"
    assert meta["fine-tunable"] == "true"
    sections = _sections(card)
    for name in ("Overview", "Training", "Usage", "Fine-tuning", "Changelog"):
        assert name in sections
    size = "%d x %d pixels" % (spec.image_size, spec.image_size)
    assert size in card
    if version == 1:
        assert "the size of the input image is fixed" in card
        assert "batch_norm_momentum" not in card
    else:
        assert "other input sizes are possible" in card
        assert "%d x %d pixels" % (MIN_SIZE[arch], MIN_SIZE[arch]) in card
        assert "0.99" in sections["Fine-tuning"] and "0.997" in sections["Fine-tuning"]
    if kind == "feature_vector":
        assert "`num_features` = %d" % spec.feature_size in card
    else:
        assert "`num_classes` = 1001" in card
    for v in (1, 3, 4, 5):
        assert ("#### Version %d" % v in sections["Changelog"]) == (v <= version)
    if version >= 4:
        assert "hub.KerasLayer" in card and "arguments=dict(batch_norm_momentum=0.997)" in card
        assert ("serving_default" in card) == (version == 5)


# --------------------------------------------------------------------------
# MobileNet cards: the text of the spec data (specs/mobilenet_v*.yaml) and
# the templates, against ZOO.md (tests/zoo_facts.py) and tfhub.dev's cards.

MOBILENETS = zoo_facts.expected_models()
SAMPLE = ["mobilenet_v1_025_128", "mobilenet_v1_100_224", "mobilenet_v2_035_96",
          "mobilenet_v2_100_224", "mobilenet_v2_140_224"]
MIN_MOBILENET_SIZE = 32  # any: render_card states what the net reports


@pytest.fixture(scope="module")
def zoo():
    with pytest.MonkeyPatch.context() as patch:
        for name in zoo_facts.missing_architectures():
            patch.setitem(nets.ARCHITECTURES, name, name[:12])
        yield load_specs()


def _mobilenet_cards(zoo, name):
    """(version, kind) -> the rendered card of every module of ``name``."""
    return {(t.version.version, t.kind): render_card(t, MIN_MOBILENET_SIZE)
            for t in zoo[name].targets()}


@pytest.mark.parametrize("name", SAMPLE)
def test_mobilenet_card_names_the_variant_and_the_checkpoint(zoo, name):
    facts = MOBILENETS[name]
    family = facts["family"]
    spelled = facts["url"].rsplit("_", 2)[1]
    size = facts["resolution"]
    for (version, kind), card in _mobilenet_cards(zoo, name).items():
        handle, meta = parse_card(card)
        assert handle == "google/imagenet/%s/%s/%d" % (name, kind, version)
        assert meta["network-architecture"] == family.replace("_", "-")
        assert meta["format"] == ("hub" if version <= 3 else "saved_model_2")
        line2 = card.splitlines()[1]
        if kind == "classification":
            assert line2 == "Imagenet (ILSVRC-2012-CLS) classification with %s." % facts[
                "display_name"]
        else:
            assert line2 == ("Feature vectors of images with %s trained on Imagenet "
                             "(ILSVRC-2012-CLS)." % facts["display_name"])
        sections = _sections(card)
        # The papers: Howard et al. 2017, Sandler et al. 2018.
        paper = {"mobilenet_v1": ('["MobileNets: Efficient Convolutional Neural Networks for '
                                  'Mobile Vision Applications"](), 2017.', "1704.04861"),
                 "mobilenet_v2": ('["Inverted Residuals and Linear Bottlenecks: Mobile Networks '
                                  'for Classification, Detection and Segmentation"](), 2018.',
                                  "1801.04381")}[family]
        assert paper[0] in sections["Overview"]
        assert "(https://arxiv.org/abs/%s)" % paper[1] in card
        assert ("This TF-Hub module uses the TF-Slim implementation of `%s` with a depth "
                "multiplier of %s and an input size of %dx%d pixels." % (family, spelled, size, size)
                ) in sections["Overview"]
        assert "The checkpoint exported into this module was `%s` downloaded from [MobileNet" % (
            facts["card_path"]) in sections["Training"]
        if kind == "feature_vector":
            assert "`num_features` = %d" % facts["feature_size"] in card


@pytest.mark.parametrize("name", [n for n in SAMPLE if n.startswith("mobilenet_v2")])
def test_mobilenet_v2_cards_fixed_size_and_changelog(zoo, name):
    size = MOBILENETS[name]["resolution"]
    for (version, kind), card in _mobilenet_cards(zoo, name).items():
        sections = _sections(card)
        changelog = sections["Changelog"]
        for v in (1, 2, 3, 4, 5):
            assert ("#### Version %d" % v in changelog) == (v <= version), (version, v)
        # Every version has the fixed size of the variant (ZOO.md section 1).
        assert "size of the input image%s is fixed to `height` x `width` = %d x %d pixels." % (
            "" if version <= 3 else "s", size, size) in sections["Usage"]
        assert "other input sizes are possible" not in card
        assert "Support for variable input size" not in changelog
        # tensorflow/hub#86: the entry of version 2; this version 1 had working update ops.
        assert ("Fixed broken UPDATE_OPS for fine-tuning, [GitHub issue 86]()" in changelog) == (
            version >= 2)
        assert ("Initial release. Unlike the first version 1 on tfhub.dev, its graph with tag "
                "set `{\"train\"}` runs batch norm's UPDATE_OPS already") in changelog
        # Version 3 adds the batch norm momentum at the fixed size; 4 and 5 keep it.
        momentum = ("batch_norm_momentum=0.997" in sections["Fine-tuning"])
        assert momentum == (version >= 3), version
        if version == 3:
            assert "signature=\"image_%s_with_bn_hparams\")" % kind in sections["Fine-tuning"]
            assert "Fine-tuning: change default batch norm momentum to 0.99" in changelog
        if version >= 4:
            assert "arguments=dict(batch_norm_momentum=0.997)" in card
            assert "Migrated to the TF2 SavedModel format" in changelog


@pytest.mark.parametrize("name", [n for n in SAMPLE if n.startswith("mobilenet_v1")])
def test_mobilenet_v1_cards_variable_size_from_version_3(zoo, name):
    size = MOBILENETS[name]["resolution"]
    cards = _mobilenet_cards(zoo, name)
    assert sorted({v for v, _ in cards}) == [1, 3, 4, 5]
    for (version, kind), card in cards.items():
        changelog = _sections(card)["Changelog"]
        assert "UPDATE_OPS" not in card
        assert ("Support for variable input size." in changelog) == (version >= 3)
        if version == 1:
            assert "the size of the input image is fixed to `height` x `width` = %d x %d" % (
                size, size) in _sections(card)["Usage"]
        else:
            assert "other input sizes are possible" in card
            assert "%d x %d pixels" % (MIN_MOBILENET_SIZE, MIN_MOBILENET_SIZE) in card
