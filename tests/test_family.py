"""The v1/v3 family (TF1 Hub format) built by `hubexport build --all` from stand-ins.

Issues 2 and 3: every module loads with hub.load in both tag sets, its
signatures return the documented shapes, it computes what the checkpoint
computes, v3 takes other sizes and v1 refuses them, and the parameter counts
agree with the checkpoint.
"""

import numpy as np
import pytest

from hubexport.formats import hub_protos

pytestmark = pytest.mark.slow

from family_support import HANDLES, MODELS, MODULES, SPECS, ids

# The TF1 Hub format modules (versions 1 and 3).
HUB_MODULES = [m for m in MODULES
               if SPECS[m[0]].modules[m[1]].versions[m[2]].format == "hub"]
# An end point every image_feature_vector signature exports (TF-Slim's names).
END_POINT = {"inception_v1": "Mixed_5b", "inception_v2": "Mixed_5b", "inception_v3": "Mixed_5b",
             "inception_resnet_v2": "Mixed_5b"}


def _end_point(model):
    arch = SPECS[model].architecture
    return "%s/%s" % (SPECS[model].scope, END_POINT.get(arch, "block4"))


def _classes(model, kind):
    spec = SPECS[model]
    return spec.num_classes if kind == "classification" else spec.feature_size


def _signatures(kind, version):
    names = {"default", "image_feature_vector"}
    if kind == "classification":
        names.add("image_classification")
    if version == 3:
        names |= {n + "_with_bn_hparams" for n in names - {"default"}}
    return names


def _images(height, width, batch=2, seed=0):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    return tf.constant(rng.uniform(0, 1, (batch, height, width, 3)).astype(np.float32))


def test_build_all_wrote_every_module_and_card(family):
    assert len(family.results) == len(MODULES)
    assert sorted(r["module_handle"] for r in family.results) == sorted(
        "google/imagenet/%s/%s/%d" % m for m in MODULES)
    assert {r["status"] for r in family.results} <= {"built", "up-to-date"}
    for arch, kind, version in MODULES:
        module = family.module(arch, kind, version)
        assert (module / "saved_model.pb").is_file()
        assert (module / "variables" / "variables.index").is_file()
        if (arch, kind, version) in HUB_MODULES:
            assert (module / "tfhub_module.pb").read_bytes() == hub_protos.module_def_bytes()
        assert family.card(arch, kind, version).read_text().startswith("# Module google/")
        assert not list(module.parent.glob(".*tmp*"))


@pytest.mark.parametrize("arch,kind,version", HUB_MODULES, ids=ids(HUB_MODULES))
def test_meta_graphs_tags_signatures_attachments(family, arch, kind, version):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString(
        (family.module(arch, kind, version) / "saved_model.pb").read_bytes())
    assert sorted(tuple(m.meta_info_def.tags) for m in proto.meta_graphs) == [(), ("train",)]
    for meta_graph in proto.meta_graphs:
        assert set(meta_graph.signature_def) == _signatures(kind, version)
        (attachment,) = meta_graph.collection_def["hub_module_attachments"].bytes_list.value
        key, value = hub_protos.parse_attachment(attachment)
        assert key == "image_module_info"
        assert hub_protos.parse_image_module_info(value) == [SPECS[arch].image_size] * 2
        images = meta_graph.signature_def["default"].inputs["images"]
        size = SPECS[arch].image_size if version == 1 else -1
        assert [d.size for d in images.tensor_shape.dim] == [-1, size, size, 3]
        if version == 3:
            bn = meta_graph.signature_def["image_feature_vector_with_bn_hparams"]
            assert set(bn.inputs) == {"images", "batch_norm_momentum"}
        train = "train" in meta_graph.meta_info_def.tags
        assert bool(meta_graph.collection_def["update_ops"].node_list.value) == train
        assert meta_graph.collection_def["regularization_losses"].node_list.value


def _close(got, want, tolerance=1e-5):
    """At most ``tolerance`` apart, relative to the reference's scale (at least 1)."""
    scale = max(1.0, float(np.abs(want).max()))
    return float(np.abs(got - want).max()) <= tolerance * scale


@pytest.mark.parametrize("arch,kind,version", HUB_MODULES, ids=ids(HUB_MODULES))
def test_hub_load_outputs_equal_the_checkpoint(family, arch, kind, version):
    import tensorflow as tf
    import tensorflow_hub as hub

    size = SPECS[arch].image_size
    images = _images(size, size)
    logits, features = family.checkpoint_function(arch)(images)
    module = hub.load(str(family.module(arch, kind, version)))
    feature_out = module.signatures["image_feature_vector"](images=images)
    assert feature_out["default"].shape == (2, SPECS[arch].feature_size)
    assert _close(feature_out["default"].numpy(), features.numpy())
    assert _end_point(arch) in feature_out
    if kind == "classification":
        out = module.signatures["image_classification"](images=images)["default"]
        assert out.shape == (2, SPECS[arch].num_classes)
        assert _close(out.numpy(), logits.numpy())
        default = module.signatures["default"](images=images)["default"]
        assert _close(default.numpy(), logits.numpy())
    else:
        assert set(module.signatures) == _signatures(kind, version)
    train = hub.load(str(family.module(arch, kind, version)), tags=["train"])
    name = "image_feature_vector" + ("_with_bn_hparams" if version == 3 else "")
    kwargs = {"batch_norm_momentum": tf.constant(0.997)} if version == 3 else {}
    out = train.signatures[name](images=images, **kwargs)["default"]
    assert out.shape == (2, SPECS[arch].feature_size)
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("arch,kind", HANDLES, ids=ids(HANDLES))
def test_v3_takes_other_sizes_v1_refuses_them(family, arch, kind):
    import tensorflow as tf
    import tensorflow_hub as hub

    v3 = hub.load(str(family.module(arch, kind, 3)))
    for height, width in ((299, 299), (331, 257), (160, 160)):
        out = v3.signatures["default"](images=_images(height, width, batch=1))["default"]
        assert out.shape == (1, _classes(arch, kind))
    v1 = hub.load(str(family.module(arch, kind, 1)))
    size = SPECS[arch].image_size
    other = 299 if size != 299 else 224
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        v1.signatures["default"](images=_images(other, other, batch=1))
    message = "this module takes only %dx%d pixel images" % (size, size)
    assert message in str(err.value)


def _min_size(model):
    from hubexport.nets import get_net

    return get_net(SPECS[model].architecture).min_image_size


@pytest.mark.parametrize("arch", [m for m in MODELS if _min_size(m) > 1])
def test_below_min_size_is_a_clear_error(family, arch):
    import tensorflow as tf
    import tensorflow_hub as hub

    low = _min_size(arch)
    module = hub.load(str(family.module(arch, "feature_vector", 3)))
    out = module.signatures["default"](images=_images(low, low, batch=1))["default"]
    assert out.shape == (1, SPECS[arch].feature_size)
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        module.signatures["default"](images=_images(low - 1, low, batch=1))
    assert ("%s needs input images of at least %dx%d pixels" % (SPECS[arch].architecture, low, low)
            in str(err.value))


def _numbers(path):
    """Numbers (float32 values) of every variable in the checkpoint at ``path``."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(path))
    dtypes = reader.get_variable_to_dtype_map()
    return {n: int(np.prod(s)) for n, s in reader.get_variable_to_shape_map().items()
            if dtypes[n] == tf.float32}


@pytest.mark.parametrize("arch", MODELS)
def test_parameter_counts_agree_with_the_manifest(family, arch):
    """Every module's parameters equal the manifest's (read off TF-Slim's net), less what it drops."""
    import tensorflow as tf

    from hubexport.nets import get_net
    from hubexport.standin import load_manifest

    spec = SPECS[arch]
    manifest = {v["name"]: v["shape"] for v in load_manifest(spec.architecture)["variables"]}
    logits_scope = get_net(spec.architecture).logits_scope + "/"
    used = sum(int(np.prod(s)) for n, s in manifest.items()
               if n != "global_step" and "/AuxLogits/" not in n)
    logits_layer = sum(int(np.prod(s)) for n, s in manifest.items() if n.startswith(logits_scope))
    assert logits_layer == (spec.feature_size + 1) * spec.num_classes
    want = {"classification": used, "feature_vector": used - logits_layer}
    ckpt = tf.train.load_checkpoint(str(family.checkpoint(arch)))
    shapes = ckpt.get_variable_to_shape_map()
    for kind, family_spec in spec.modules.items():
        for version, version_spec in family_spec.versions.items():
            path = family.module(arch, kind, version) / "variables" / "variables"
            numbers = _numbers(path)
            assert sum(numbers.values()) == want[kind], (kind, version)
            if version_spec.format == "hub":  # keyed by the checkpoint's names
                module_shapes = tf.train.load_checkpoint(str(path)).get_variable_to_shape_map()
                for name, shape in module_shapes.items():
                    assert shapes[name] == shape == manifest[name], name
    if arch == "inception_v2":
        assert used == 11_199_137
