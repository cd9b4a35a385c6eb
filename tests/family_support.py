"""What the session's module family holds: the models, their kinds and versions.

Read from the shipped specs (``specs/*.yaml``), so that a new spec gets the
generic family tests without new test code. ``HUBEXPORT_TEST_MODELS=a,b``
(a development aid; CI never sets it) narrows the family to those models.
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


#: The models of the variant tables (specs/mobilenet_v*.yaml) the suite
#: builds, every version of each: spread over depth multipliers and
#: resolutions, with the smallest and the largest multipliers (issue 12).
#: `make build-all` and `make bench` build the other variants.
TEST_VARIANTS = frozenset({
    "mobilenet_v1_025_128", "mobilenet_v1_050_160", "mobilenet_v1_075_192",
    "mobilenet_v1_100_224",
    "mobilenet_v2_035_96", "mobilenet_v2_075_160", "mobilenet_v2_100_224",
    "mobilenet_v2_140_224",
})


def _models():
    from hubexport.specs import load_specs

    # One name per model: a spec file with a variant table has several; of
    # those the suite builds TEST_VARIANTS.
    specs = load_specs(REPO / "specs")
    names = sorted(n for n, s in specs.items() if s.variant is None or n in TEST_VARIANTS)
    only = os.environ.get("HUBEXPORT_TEST_MODELS")
    if only:
        wanted = set(only.split(","))
        names = [n for n in names if n in wanted]
    return tuple(names)


#: Model names (spec names) of the family.
MODELS = _models()


def shipped_specs():
    """dict model -> ModelSpec of the shipped specs in :data:`MODELS`."""
    from hubexport.specs import load_specs

    specs = load_specs(REPO / "specs")
    return {name: specs[name] for name in MODELS}


SPECS = shipped_specs()

#: (model, kind, version) of every module, in spec order.
MODULES = [(name, kind, version) for name, spec in SPECS.items()
           for kind, family in spec.modules.items() for version in family.versions]
#: (model, kind) of every handle.
HANDLES = sorted({(m, k) for m, k, _ in MODULES})


def ids(rows):
    """pytest ids "model/kind/version" for rows of tuples."""
    return ["/".join(map(str, row)) for row in rows]


# An end point every image_feature_vector signature exports (TF-Slim's
# names), by architecture name prefix.
_END_POINTS = {"inception": "Mixed_5b", "resnet": "block4",
               "mobilenet_v1": "Conv2d_13_pointwise", "mobilenet_v2": "layer_19"}


def end_point(architecture):
    """The TF-Slim end point name the feature signatures of ``architecture`` must export."""
    (name,) = [v for k, v in _END_POINTS.items() if architecture.startswith(k)]
    return name
