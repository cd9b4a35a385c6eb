"""The cards stage: a module's documentation card from a Jinja2 template.

Public entry point: :func:`render_card`. Templates live in
``hubexport/templates`` (``card_hub.md.j2`` for the TF1 Hub format,
``card_saved_model_2.md.j2`` for TF2 SavedModels) and follow tfhub.dev's
documentation format (FACTS.md): the line ``# Module PUBLISHER/NAME/VERSION``,
a one-line description, ``<!-- key: value -->`` metadata, then the sections
of the seed cards (overview, training, usage, fine-tuning, changelog).
:func:`render_variant_card` renders a deployment variant's card
(``card_tflite.md.j2``: ``# Lite HANDLE``, its parent module, input and
output, the measured accuracy cost).
"""

import re

import jinja2

from hubexport.specs import IMAGENET_DATASET

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("hubexport", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)

_TEMPLATES = {"hub": "card_hub.md.j2", "saved_model_2": "card_saved_model_2.md.j2"}
_TASKS = {"classification": "image-classification", "feature_vector": "image-feature-vector"}
METADATA_RE = re.compile(r"^<!-- ([a-z-]+): (.*) -->$", re.M)


def handle_line(module_handle):
    """The card's title handle, ``PUBLISHER/&zwnj;NAME/&zwnj;.../3`` as on tfhub.dev (str)."""
    *parts, version = module_handle.split("/")
    return "/&zwnj;".join(parts) + "/" + version


def render_card(target, min_image_size):
    """Renders the card of one module.

    Args:
      target: a :class:`hubexport.specs.Target` (spec, kind, version).
      min_image_size: the smallest height/width in pixels the module accepts
        (the net's ``MIN_IMAGE_SIZE``), stated for variable-size versions.

    Returns:
      str: the Markdown card, ending in a newline.
    """
    spec, version = target.spec, target.version
    classification = target.kind == "classification"
    other_kind = "feature_vector" if classification else "classification"
    other = spec.modules.get(other_kind)
    other_handle = ("%s/%d" % (other.handle, version.version) if other
                    else target.module_handle)
    description = ("%s classification with %s." % (spec.card.dataset_name, spec.display_name)
                   if classification else
                   "Feature vectors of images with %s trained on %s."
                   % (spec.display_name, spec.card.dataset_name))
    text = _ENV.get_template(_TEMPLATES[version.format]).render(
        spec=spec,
        version=version.version,
        module_handle=target.module_handle,
        handle_line=handle_line(target.module_handle),
        other_handle=other_handle,
        description=description,
        classification=classification,
        format=version.format,
        asset_path="legacy",
        task=_TASKS[target.kind],
        size=spec.image_size,
        min_size=min_image_size,
        variable_size=version.input_size == "variable",
        bn_hparams=any(s.endswith("_with_bn_hparams") for s in version.signatures),
        serving="serving_default" in version.signatures,
        imagenet_labels=spec.card.dataset == IMAGENET_DATASET,
        changelog_versions=sorted({n for family in spec.modules.values()
                                   for n in family.versions if n <= version.version}),
    )
    return re.sub(r"\n{4,}", "\n\n\n", text).rstrip("\n") + "\n"


def variant_title(target):
    """A variant card's first line: ``# <card_title> HANDLE`` (hubexport/data/deploy.yaml).

    HANDLE is the variant handle, without the format's prefix where
    deploy.yaml says so: tfhub.dev titled the TF.js variant of
    ``google/imagenet/X/KIND/3`` as ``# Tfjs google/imagenet/X/KIND/3/default/1``.
    """
    from hubexport.deploy import variant_table

    entry = variant_table()[target.format]
    handle = target.variant_handle
    if not entry["card_handle_prefix"]:
        handle = "%s/%s/%d" % (target.parent.module_handle, target.variant, target.version)
    return "# %s %s" % (entry["card_title"], handle_line(handle))


def render_variant_card(target, record):
    """Renders the card of one deployment variant (``card_<format>.md.j2``).

    Args:
      target: a :class:`hubexport.deploy.DeployTarget`.
      record: its stamp's record (:func:`hubexport.deploy.variant_record`).

    Returns:
      str: the Markdown card, ending in a newline.
    """
    parent, spec = target.parent, target.parent.spec
    classification = parent.kind == "classification"
    what = ("%s classification with %s" % (spec.card.dataset_name, spec.display_name)
            if classification else "Feature vectors of images with %s trained on %s"
            % (spec.display_name, spec.card.dataset_name))
    text = _ENV.get_template("card_%s.md.j2" % target.format).render(
        spec=spec, record=record, title=variant_title(target), what=what, target=target,
        classification=classification, task=_TASKS[parent.kind], size=spec.image_size,
        summary=target.summary, imagenet_labels=spec.card.dataset == IMAGENET_DATASET)
    return re.sub(r"\n{4,}", "\n\n\n", text).rstrip("\n") + "\n"


def parse_card(text):
    """Reads a card's handle line and metadata.

    Args:
      text: the Markdown card.
    Returns:
      (module handle or None, dict of metadata key -> value).
    """
    first = text.splitlines()[0] if text else ""
    match = re.match(r"^# Module (\S+)$", first)
    handle = match.group(1).replace("&zwnj;", "") if match else None
    return handle, dict(METADATA_RE.findall(text))
