"""A fixed input size with the bn_hparams signatures, as mobilenet_v2's version 3 has them.

ZOO.md section 1: mobilenet_v2's version 3 adds the batch norm momentum
hparams but no variable input size; its version 2 is version 1 with working
UPDATE_OPS. Here the real CLI builds such versions of a small existing net
(inception_v1, from its stand-in checkpoint, hubexport.standin) with a
temporary spec: version 2 (fixed, the version-1 signatures) and version 3
(fixed, with ``image_*_with_bn_hparams``). The module files are then read
with TensorFlow's own loaders (``import_meta_graph``, ``Saver.restore``), not
with hubexport's code: the signatures' shapes, that the graph refuses other
image sizes, that the moving averages of the ``{"train"}`` graph move by
``(1 - batch_norm_momentum)`` of the way to the batch statistics, and
``hubexport verify``.
"""

import numpy as np
import pytest

from spec_build_support import build_with_edited_spec, cli as _cli

pytestmark = pytest.mark.slow

SIZE = 224  # inception_v1's image size (ZOO.md section 3)
BN_SIGNATURES = {"classification": ["image_classification_with_bn_hparams",
                                    "image_feature_vector_with_bn_hparams"],
                 "feature_vector": ["image_feature_vector_with_bn_hparams"]}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(output dir, spec dir): versions 2 and 3 of inception_v1 at a fixed size."""

    def edit(doc):
        for kind, family in doc["modules"].items():
            v1, v3 = family["versions"][1], family["versions"][3]
            family["versions"] = {
                2: dict(v1),  # version 1's signatures, fixed size
                3: dict(v3, input_size="fixed"),  # with the bn_hparams signatures
            }
            assert [s for s in v3["signatures"] if s.endswith("_with_bn_hparams")] == \
                BN_SIGNATURES[kind]
        doc["card"]["changelog"] = {2: ["Fixed broken UPDATE_OPS for fine-tuning."]}

    return build_with_edited_spec(tmp_path_factory.mktemp("fixed-bn"), "inception_v1", edit)


def _module(output, kind, version):
    return output / "google" / "imagenet" / "inception_v1" / kind / str(version)


def _meta_graphs(module):
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((module / "saved_model.pb").read_bytes())
    return {tuple(m.meta_info_def.tags): m for m in saved_model.meta_graphs}


def _shape(info):
    return [d.size for d in info.tensor_shape.dim]


@pytest.mark.parametrize("kind", ["classification", "feature_vector"])
def test_signatures_have_the_fixed_size(built, kind):
    output, _ = built
    for version in (2, 3):
        graphs = _meta_graphs(_module(output, kind, version))
        assert sorted(graphs) == [(), ("train",)]
        for meta in graphs.values():
            names = sorted(meta.signature_def)
            bn = [n for n in names if n.endswith("_with_bn_hparams")]
            assert bn == (BN_SIGNATURES[kind] if version == 3 else [])
            for name in names:
                inputs = meta.signature_def[name].inputs
                assert _shape(inputs["images"]) == [-1, SIZE, SIZE, 3], (version, name)
                if name in bn:
                    assert _shape(inputs["batch_norm_momentum"]) == []
                else:
                    assert "batch_norm_momentum" not in inputs


def _images(count, size=SIZE):
    """Structured images in [0, 1]: gradients and stripes that differ from image to image."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    batch = [np.stack([x * (i + 1) % 1.0, y, (x + y + 0.25 * i) % 1.0], axis=-1)
             for i in range(count)]
    return np.stack(batch).astype(np.float32)


def test_train_graph_moves_the_averages_by_the_momentum_fed(built):
    """moving -= (moving - batch) * (1 - momentum): the update for m1 and m2 differ by (1-m1)/(1-m2)."""
    import tensorflow as tf

    output, _ = built
    module = _module(output, "classification", 3)
    meta = _meta_graphs(module)[("train",)]
    signature = meta.signature_def["image_classification_with_bn_hparams"]
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.train.import_meta_graph(meta)
        images = graph.get_tensor_by_name(signature.inputs["images"].name)
        momentum = graph.get_tensor_by_name(signature.inputs["batch_norm_momentum"].name)
        logits = graph.get_tensor_by_name(signature.outputs["default"].name)
        updates = graph.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
        assert updates, "the train graph has no UPDATE_OPS"
        moving = [v for v in tf.compat.v1.global_variables() if v.op.name.endswith("moving_mean")]
        saver = tf.compat.v1.train.Saver(tf.compat.v1.global_variables())
        with tf.compat.v1.Session(graph=graph) as sess:
            steps = {}
            for m in (0.9, 0.5):
                saver.restore(sess, str(module / "variables" / "variables"))
                before = sess.run(moving[0])
                out, _ = sess.run([logits, updates], {images: _images(2), momentum: m})
                steps[m] = sess.run(moving[0]) - before
            assert out.shape == (2, 1001) and np.all(np.isfinite(out))
            assert not np.allclose(out[0], out[1])  # the images differ, so do their logits
            assert np.abs(steps[0.5]).max() > 1e-6
            np.testing.assert_allclose(steps[0.9], steps[0.5] * (1 - 0.9) / (1 - 0.5),
                                       rtol=1e-3, atol=1e-7)
            with pytest.raises(ValueError, match=r"Cannot feed value of shape \(1, 200, 200, 3\)"):
                sess.run(logits, {images: _images(1, 200), momentum: 0.99})


def test_cards_and_verify(built):
    output, spec_dir = built
    card2 = (_module(output, "classification", 2).parent / "2.md").read_text()
    card3 = (_module(output, "feature_vector", 3).parent / "3.md").read_text()
    assert "Fixed broken UPDATE_OPS for fine-tuning." in card2
    assert "batch_norm_momentum" not in card2
    for card in (card2, card3):
        assert "the size of the input image is fixed to\n`height` x `width` = 224 x 224" in card
        assert "other input sizes are possible" not in card
    assert 'signature="image_feature_vector_with_bn_hparams")' in card3
    # verify checks the signatures' inputs ([-1, 224, 224, 3], the momentum scalar),
    # variables, an inference and the cards against the spec.
    lines = _cli("verify", output, "--specs", spec_dir).stdout.splitlines()
    assert lines[-1] == "verified 4 modules: ok", lines
    assert sorted(line.split()[1] for line in lines[:-1] if line.startswith("ok ")) == [
        "google/imagenet/inception_v1/%s/%d" % (kind, version)
        for kind in ("classification", "feature_vector") for version in (2, 3)]
