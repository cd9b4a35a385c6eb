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

SIZES = {"inception_v2": 224, "inception_resnet_v2": 299}
FEATURES = {"inception_v2": 1024, "inception_resnet_v2": 1536}
SCOPES = {"inception_v2": "InceptionV2", "inception_resnet_v2": "InceptionResnetV2"}
MODULES = [(a, k, v) for a in SIZES for k in ("classification", "feature_vector") for v in (1, 3)]
IDS = ["%s/%s/%d" % m for m in MODULES]


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
    assert len(family.results) == 16
    assert {r["status"] for r in family.results} <= {"built", "up-to-date"}
    for arch, kind, version in MODULES:
        module = family.module(arch, kind, version)
        assert (module / "saved_model.pb").is_file()
        assert (module / "tfhub_module.pb").read_bytes() == hub_protos.module_def_bytes()
        assert (module / "variables" / "variables.index").is_file()
        assert family.card(arch, kind, version).read_text().startswith("# Module google/")
        assert not list(module.parent.glob(".*tmp*"))


@pytest.mark.parametrize("arch,kind,version", MODULES, ids=IDS)
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
        assert hub_protos.parse_image_module_info(value) == [SIZES[arch]] * 2
        images = meta_graph.signature_def["default"].inputs["images"]
        size = SIZES[arch] if version == 1 else -1
        assert [d.size for d in images.tensor_shape.dim] == [-1, size, size, 3]
        if version == 3:
            bn = meta_graph.signature_def["image_feature_vector_with_bn_hparams"]
            assert set(bn.inputs) == {"images", "batch_norm_momentum"}
        train = "train" in meta_graph.meta_info_def.tags
        assert bool(meta_graph.collection_def["update_ops"].node_list.value) == train
        assert meta_graph.collection_def["regularization_losses"].node_list.value


@pytest.mark.parametrize("arch,kind,version", MODULES, ids=IDS)
def test_hub_load_outputs_equal_the_checkpoint(family, arch, kind, version):
    import tensorflow as tf
    import tensorflow_hub as hub

    from hubexport.nets import checkpoint_function

    size = SIZES[arch]
    images = _images(size, size)
    logits, features = checkpoint_function(arch, family.values(arch))(images)
    module = hub.load(str(family.module(arch, kind, version)))
    feature_out = module.signatures["image_feature_vector"](images=images)
    assert feature_out["default"].shape == (2, FEATURES[arch])
    assert np.abs(feature_out["default"].numpy() - features.numpy()).max() <= 1e-5
    assert "%s/Mixed_5b" % SCOPES[arch] in feature_out
    if kind == "classification":
        out = module.signatures["image_classification"](images=images)["default"]
        assert out.shape == (2, 1001)
        assert np.abs(out.numpy() - logits.numpy()).max() <= 1e-5
        default = module.signatures["default"](images=images)["default"]
        assert np.abs(default.numpy() - logits.numpy()).max() <= 1e-5
    else:
        assert set(module.signatures) == _signatures(kind, version)
    train = hub.load(str(family.module(arch, kind, version)), tags=["train"])
    name = "image_feature_vector" + ("_with_bn_hparams" if version == 3 else "")
    kwargs = {"batch_norm_momentum": tf.constant(0.997)} if version == 3 else {}
    out = train.signatures[name](images=images, **kwargs)["default"]
    assert out.shape == (2, FEATURES[arch])
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("arch,kind", [(a, k) for a in SIZES for k in ("classification", "feature_vector")])
def test_v3_takes_other_sizes_v1_refuses_them(family, arch, kind):
    import tensorflow as tf
    import tensorflow_hub as hub

    v3 = hub.load(str(family.module(arch, kind, 3)))
    for height, width in ((299, 299), (331, 257), (160, 160)):
        out = v3.signatures["default"](images=_images(height, width, batch=1))["default"]
        assert out.shape == (1, 1001 if kind == "classification" else FEATURES[arch])
    v1 = hub.load(str(family.module(arch, kind, 1)))
    other = 299 if arch == "inception_v2" else 224
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        v1.signatures["default"](images=_images(other, other, batch=1))
    message = "this module takes only %dx%d pixel images" % (SIZES[arch], SIZES[arch])
    assert message in str(err.value)


def test_below_min_size_is_a_clear_error(family):
    import tensorflow as tf
    import tensorflow_hub as hub

    module = hub.load(str(family.module("inception_resnet_v2", "feature_vector", 3)))
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        module.signatures["default"](images=_images(64, 64, batch=1))
    assert "inception_resnet_v2 needs input images of at least 75x75 pixels" in str(err.value)


@pytest.mark.parametrize("arch", SIZES)
def test_parameter_counts_agree_with_the_checkpoint(family, arch):
    import tensorflow as tf

    ckpt = tf.train.load_checkpoint(str(family.checkpoint(arch)))
    shapes = ckpt.get_variable_to_shape_map()
    counts = {}
    for kind in ("classification", "feature_vector"):
        for version in (1, 3):
            module = tf.train.load_checkpoint(str(family.module(arch, kind, version) / "variables" / "variables"))
            module_shapes = module.get_variable_to_shape_map()
            for name, shape in module_shapes.items():
                assert shapes[name] == shape, name
            counts[kind, version] = sum(int(np.prod(s)) for s in module_shapes.values())
    logits_layer = sum(int(np.prod(s)) for n, s in shapes.items()
                       if n.startswith(SCOPES[arch] + "/Logits/"))
    used = sum(int(np.prod(s)) for n, s in shapes.items()
               if n != "global_step" and "AuxLogits" not in n)
    assert counts["classification", 1] == counts["classification", 3] == used
    assert counts["feature_vector", 1] == counts["feature_vector", 3] == used - logits_layer
    if arch == "inception_v2":
        assert used == 11_199_137
