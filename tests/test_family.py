"""Every module of every spec, built by `hubexport build --all` from stand-ins (issues 2, 3, 5, 11).

Generic checks, parametrized over the specs (tests/family_support.py), so a
new spec gets them without new test code:
  * the build wrote every module and card;
  * the TF1 Hub format modules (v1, v3): meta graphs, tag sets, signatures,
    the image_module_info attachment; hub.load in both tag sets computes what
    the checkpoint computes (the net on the checkpoint's values); v3 takes
    other sizes, v1 refuses them, and too small an input is a clear error;
  * the TF2 SavedModels (v4, v5) compute what v3 computes, at two sizes, and
    have the reusable SavedModel attributes;
  * the parameter counts of every module equal the manifest's (read off
    TF-Slim's own net), the feature_vector modules' without the logits layer.

Tests are grouped by handle (the module-scoped ``handle`` fixture is
parametrized over (model, kind)), so each module is loaded once per run
and dropped before the next handle's are loaded.
"""

import numpy as np
import pytest

from family_support import HANDLES, MODELS, MODULES, SPECS, end_point, ids
from hubexport.formats import hub_protos

pytestmark = pytest.mark.slow



def _images(height, width, batch=2, seed=0):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    return tf.constant(rng.uniform(0, 1, (batch, height, width, 3)).astype(np.float32))


def _signatures(kind, with_bn_hparams):
    """The signatures the common image signatures give a module (tensorflow.org/hub)."""
    names = {"default", "image_feature_vector"}
    if kind == "classification":
        names.add("image_classification")
    if with_bn_hparams:
        names |= {n + "_with_bn_hparams" for n in names - {"default"}}
    return names


def _close(got, want, tolerance=1e-5):
    """At most ``tolerance`` apart, relative to the reference's scale (at least 1)."""
    scale = max(1.0, float(np.abs(want).max()))
    return float(np.abs(got - want).max()) <= tolerance * scale


class Handle:
    """One (model, kind) of the family: its spec, versions and loaded modules.

    ``load(version, tags)`` loads a module once (hub.load) and keeps it until
    the handle's tests are done.
    """

    def __init__(self, family, model, kind):
        from hubexport.nets import get_net

        self.family, self.model, self.kind = family, model, kind
        self.spec = SPECS[model]
        self.net = get_net(self.spec.architecture)
        self.versions = self.spec.modules[kind].versions
        self.hub_versions = [v for v, s in self.versions.items() if s.format == "hub"]
        self.variable_hub = [v for v in self.hub_versions
                             if self.versions[v].input_size == "variable"]
        self.fixed_hub = [v for v in self.hub_versions if self.versions[v].input_size == "fixed"]
        self.variable_sm2 = all(s.input_size == "variable" for v, s in self.versions.items()
                                if s.format == "saved_model_2")
        self.width = self.spec.num_classes if kind == "classification" else self.spec.feature_size
        self._loaded = {}

    def bn_hparams(self, version):
        """Whether the version has the *_with_bn_hparams signatures (its spec says)."""
        return "image_feature_vector_with_bn_hparams" in self.versions[version].signatures

    def path(self, version):
        return self.family.module(self.model, self.kind, version)

    def load(self, version, tags=None):
        import tensorflow_hub as hub

        key = (version, tuple(tags or ()))
        if key not in self._loaded:
            self._loaded[key] = hub.load(str(self.path(version)), tags=tags)
        return self._loaded[key]

    def close(self):
        import gc

        self._loaded.clear()
        gc.collect()  # the loaded modules' variables go before the next handle's


@pytest.fixture(scope="module", params=HANDLES, ids=ids(HANDLES))
def handle(request, family):
    loaded = Handle(family, *request.param)
    try:
        yield loaded
    finally:
        loaded.close()


def test_build_all_wrote_every_module_and_card(family):
    assert len(family.results) == len(MODULES)
    assert sorted(r["module_handle"] for r in family.results) == sorted(
        "google/imagenet/%s/%s/%d" % m for m in MODULES)
    assert {r["status"] for r in family.results} <= {"built", "up-to-date"}
    for model, kind, version in MODULES:
        module = family.module(model, kind, version)
        assert (module / "saved_model.pb").is_file()
        assert (module / "variables" / "variables.index").is_file()
        if SPECS[model].modules[kind].versions[version].format == "hub":
            assert (module / "tfhub_module.pb").read_bytes() == hub_protos.module_def_bytes()
        else:
            assert not (module / "tfhub_module.pb").exists()
        assert family.card(model, kind, version).read_text().startswith("# Module google/")
        assert not list(module.parent.glob(".*tmp*"))


def test_meta_graphs_tags_signatures_attachments(handle):
    from tensorflow.core.protobuf import saved_model_pb2

    size = handle.spec.image_size
    for version in handle.hub_versions:
        proto = saved_model_pb2.SavedModel.FromString(
            (handle.path(version) / "saved_model.pb").read_bytes())
        assert sorted(tuple(m.meta_info_def.tags) for m in proto.meta_graphs) == [(), ("train",)]
        for meta_graph in proto.meta_graphs:
            assert set(meta_graph.signature_def) == _signatures(handle.kind,
                                                                handle.bn_hparams(version))
            assert set(meta_graph.signature_def) == set(handle.versions[version].signatures)
            (attachment,) = meta_graph.collection_def["hub_module_attachments"].bytes_list.value
            key, value = hub_protos.parse_attachment(attachment)
            assert key == "image_module_info"
            assert hub_protos.parse_image_module_info(value) == [size] * 2
            images = meta_graph.signature_def["default"].inputs["images"]
            fixed = handle.versions[version].input_size == "fixed"
            assert [d.size for d in images.tensor_shape.dim] == [-1] + [size if fixed else -1] * 2 + [3]
            if handle.bn_hparams(version):
                bn = meta_graph.signature_def["image_feature_vector_with_bn_hparams"]
                assert set(bn.inputs) == {"images", "batch_norm_momentum"}
            train = "train" in meta_graph.meta_info_def.tags
            assert bool(meta_graph.collection_def["update_ops"].node_list.value) == train
            assert meta_graph.collection_def["regularization_losses"].node_list.value


def test_hub_load_outputs_equal_the_checkpoint(handle):
    import tensorflow as tf

    size = handle.spec.image_size
    images = _images(size, size)
    logits, features = handle.family.checkpoint_function(handle.model)(images)
    assert np.abs(features.numpy()[0] - features.numpy()[1]).max() > 1e-3  # the inputs matter
    feature_end_point = "%s/%s" % (handle.spec.scope, end_point(handle.spec.architecture))
    for version in handle.hub_versions:
        module = handle.load(version)
        feature_out = module.signatures["image_feature_vector"](images=images)
        assert feature_out["default"].shape == (2, handle.spec.feature_size)
        assert _close(feature_out["default"].numpy(), features.numpy()), version
        assert feature_end_point in feature_out
        if handle.kind == "classification":
            out = module.signatures["image_classification"](images=images)["default"]
            assert out.shape == (2, handle.spec.num_classes)
            assert _close(out.numpy(), logits.numpy()), version
            default = module.signatures["default"](images=images)["default"]
            assert _close(default.numpy(), logits.numpy()), version
        else:
            assert set(module.signatures) == _signatures(handle.kind, handle.bn_hparams(version))
        train = handle.load(version, tags=["train"])
        bn = handle.bn_hparams(version)
        name = "image_feature_vector" + ("_with_bn_hparams" if bn else "")
        kwargs = {"batch_norm_momentum": tf.constant(0.997)} if bn else {}
        out = train.signatures[name](images=images, **kwargs)["default"]
        assert out.shape == (2, handle.spec.feature_size)
        assert np.isfinite(out.numpy()).all()


def test_variable_versions_take_other_sizes_fixed_ones_refuse_them(handle):
    """v3 of most models takes any size; every fixed-size version (v1, MobileNet V2's all) refuses."""
    import tensorflow as tf

    for version in handle.variable_hub:
        variable = handle.load(version)
        for height, width in ((299, 299), (331, 257), (160, 160)):
            out = variable.signatures["default"](images=_images(height, width, batch=1))["default"]
            assert out.shape == (1, handle.width)
    size = handle.spec.image_size
    other = 299 if size != 299 else 224
    assert handle.fixed_hub
    for version in handle.fixed_hub:
        with pytest.raises(tf.errors.InvalidArgumentError) as err:
            handle.load(version).signatures["default"](images=_images(other, other, batch=1))
        assert "this module takes only %dx%d pixel images" % (size, size) in str(err.value)


def test_below_min_size_is_a_clear_error(handle):
    """Too small an input is refused with a message that says what size to use.

    A variable-size version names the net's smallest size; a model with only
    fixed-size versions (MobileNet V2) refuses a smaller image with its
    fixed size in the message.
    """
    import tensorflow as tf

    if not handle.variable_hub:
        size = handle.spec.image_size
        for version in handle.fixed_hub:
            default = handle.load(version).signatures["default"]
            with pytest.raises(tf.errors.InvalidArgumentError) as err:
                default(images=_images(size // 2, size // 2, batch=1))
            assert "this module takes only %dx%d pixel images" % (size, size) in str(err.value)
        return
    low = handle.net.min_image_size
    default = handle.load(handle.variable_hub[0]).signatures["default"]
    out = default(images=_images(low, low + 3, batch=1))["default"]
    assert out.shape == (1, handle.width)
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        default(images=_images(low - 1, low, batch=1))
    assert ("%s needs input images of at least %dx%d pixels"
            % (handle.spec.architecture, low, low)) in str(err.value)


def test_v4_v5_equal_v3(handle):
    import tensorflow as tf

    rng = np.random.default_rng(1)
    v3 = handle.load(3).signatures["default"]
    v4, v5 = handle.load(4), handle.load(5)
    assert not hasattr(v4, "signatures") or "serving_default" not in v4.signatures
    output_key = "logits" if handle.kind == "classification" else "feature_vector"
    sizes = [(handle.spec.image_size,) * 2] + ([(257, 331)] if handle.variable_sm2 else [])
    for height, width in sizes:
        images = tf.constant(rng.uniform(0, 1, (2, height, width, 3)).astype(np.float32))
        expected = v3(images=images)["default"].numpy()
        for name, got in (("v4", v4(images).numpy()),
                          ("v5", v5(images, training=False).numpy()),
                          ("v5 serving_default",
                           v5.signatures["serving_default"](inputs=images)[output_key].numpy())):
            assert got.shape == expected.shape, name
            diff = float(np.abs(got - expected).max()) / max(1.0, float(np.abs(expected).max()))
            assert diff <= 1e-5, "%s differs from v3 by %g (relative) at %dx%d" % (
                name, diff, height, width)
    if not handle.variable_sm2:  # fixed size (MobileNet V2): other sizes are refused
        other = tf.constant(rng.uniform(0, 1, (1, 160, 192, 3)).astype(np.float32))
        for call in (v4, lambda x: v5(x, training=False),
                     lambda x: v5.signatures["serving_default"](inputs=x)):
            with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
                call(other)


def test_v4_reusable_savedmodel_attributes(handle):
    obj = handle.load(4)
    names = {v.name.split(":")[0] for v in obj.variables}
    trainable = {v.name.split(":")[0] for v in obj.trainable_variables}
    expected = set(handle.family.values(handle.model))
    if handle.kind == "feature_vector":
        expected = {n for n in expected if not n.startswith(handle.net.logits_scope + "/")}
    assert names == expected
    assert trainable and trainable < names
    assert not {n for n in trainable if "moving_" in n}
    losses = [float(f()) for f in obj.regularization_losses]
    from hubexport.nets import variable_requests

    classes = handle.spec.num_classes if handle.kind == "classification" else None
    decayed = [r for r in variable_requests(handle.spec.architecture, classes) if r.weight_decay]
    assert len(losses) == len(decayed) > 10 and all(x > 0 for x in losses)


def _numbers(path):
    """Numbers (float32 values) of every variable in the checkpoint at ``path``."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(path))
    dtypes = reader.get_variable_to_dtype_map()
    return {n: int(np.prod(s)) for n, s in reader.get_variable_to_shape_map().items()
            if dtypes[n] == tf.float32}


@pytest.mark.parametrize("model", MODELS)
def test_parameter_counts_agree_with_the_manifest(family, model):
    """Every module's parameters equal the manifest's (read off TF-Slim's net), less what it drops."""
    import tensorflow as tf

    from hubexport.nets import get_net
    from hubexport.standin import load_manifest

    spec = SPECS[model]
    manifest = {v["name"]: v["shape"] for v in load_manifest(spec.architecture)["variables"]}
    logits_scope = get_net(spec.architecture).logits_scope + "/"
    used = sum(int(np.prod(s)) for n, s in manifest.items()
               if n != "global_step" and "/AuxLogits/" not in n)
    logits_layer = sum(int(np.prod(s)) for n, s in manifest.items() if n.startswith(logits_scope))
    assert logits_layer == (spec.feature_size + 1) * spec.num_classes
    want = {"classification": used, "feature_vector": used - logits_layer}
    shapes = tf.train.load_checkpoint(str(family.checkpoint(model))).get_variable_to_shape_map()
    for kind, family_spec in spec.modules.items():
        for version, version_spec in family_spec.versions.items():
            path = family.module(model, kind, version) / "variables" / "variables"
            assert sum(_numbers(path).values()) == want[kind], (kind, version)
            if version_spec.format == "hub":  # keyed by the checkpoint's names
                module_shapes = tf.train.load_checkpoint(str(path)).get_variable_to_shape_map()
                for name, shape in module_shapes.items():
                    assert shapes[name] == shape == manifest[name], name
    if model == "inception_v2":
        assert used == 11_199_137
