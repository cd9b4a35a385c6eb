"""TFLite variants of version 5 modules, run in LiteRT (issue 13, first part).

:func:`hubexport.deploy.tflite.write_tflite` converts modules of the
session's family (built by the CLI from the stand-ins); each ``.tflite`` runs
in LiteRT's interpreter (``ai-edge-litert`` 2.3.0, in its own venv
``.venv-litert``: tests/litert/run_tflite.py, which imports neither
TensorFlow nor hubexport) on structured images, against ``hub.load`` of the
parent module in TensorFlow 2.21. float32 must match to 1e-4 relative;
dynamic_range (int8 weights) to DYNAMIC_RANGE_TOLERANCE, and each image's
output must be nearer its own module output than the other images'.
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from reference_support import REPO, max_rel, structured_images

pytestmark = pytest.mark.slow

# (model, kind): small and large nets, variable and fixed input size.
CASES = [("mobilenet_v1_025_128", "classification"), ("mobilenet_v2_035_96", "feature_vector"),
         ("inception_v2", "classification")]
FLOAT32_TOLERANCE = 1e-4
# Measured on these stand-ins (random weights, which int8 fits worse than
# trained ones): at most 0.16 relative, for mobilenet_v2_035_96's features.
DYNAMIC_RANGE_TOLERANCE = 0.2
N_IMAGES = 3


def litert_python():
    """The interpreter of .venv-litert (``$HUBEXPORT_LITERT_PYTHON`` overrides it)."""
    return os.environ.get("HUBEXPORT_LITERT_PYTHON", str(REPO / ".venv-litert" / "bin" / "python"))


@pytest.fixture(scope="module")
def converted(family, tmp_path_factory):
    """(model, kind, quantization) -> (.tflite Path, images, module outputs, size in bytes)."""
    import tensorflow as tf
    import tensorflow_hub as hub

    from hubexport.deploy.tflite import QUANTIZATIONS, write_tflite

    root = tmp_path_factory.mktemp("tflite")
    out = {}
    for index, (model, kind) in enumerate(CASES):
        module = family.module(model, kind, 5)
        size = family.spec(model).image_size
        images = structured_images(11 + index, N_IMAGES, size, size)
        loaded = hub.load(str(module))
        expected = np.stack([loaded(tf.constant(image[None]), training=False).numpy()[0]
                             for image in images])
        for quantization in QUANTIZATIONS:
            path = root / ("%s-%s-%s.tflite" % (model, kind, quantization))
            nbytes = write_tflite(module, path, image_size=size, quantization=quantization)
            out[(model, kind, quantization)] = (path, images, expected, nbytes)
    return out


def _run_litert(path, images, tmp_path):
    python = litert_python()
    assert Path(python).is_file(), ("LiteRT interpreter %s not found: run `make install-litert`"
                                    % python)
    np.save(tmp_path / "images.npy", images)
    proc = subprocess.run([python, str(REPO / "tests" / "litert" / "run_tflite.py"), str(path),
                           str(tmp_path / "images.npy"), str(tmp_path / "out.npy"),
                           str(tmp_path / "report.json")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(tmp_path / "out.npy"), json.loads((tmp_path / "report.json").read_text())


@pytest.mark.parametrize("model,kind", CASES, ids=["/".join(c) for c in CASES])
def test_float32_tflite_matches_the_module_in_litert(converted, family, model, kind, tmp_path):
    path, images, expected, _ = converted[(model, kind, "float32")]
    got, report = _run_litert(path, images, tmp_path)
    size = family.spec(model).image_size
    assert report["input"]["shape"] == [1, size, size, 3]
    assert report["input"]["dtype"] == "float32" and report["output"]["dtype"] == "float32"
    n = family.spec(model).num_classes if kind == "classification" else \
        family.spec(model).feature_size
    assert report["output"]["shape"] == [1, n]
    assert list(report["signatures"]) == ["serving_default"]
    assert got.shape == expected.shape
    # The images' outputs differ by far more than the tolerance: the check can fail.
    assert max_rel(expected[0], expected[1]) > 100 * FLOAT32_TOLERANCE
    assert max_rel(got, expected) < FLOAT32_TOLERANCE


@pytest.mark.parametrize("model,kind", CASES, ids=["/".join(c) for c in CASES])
def test_dynamic_range_tflite_is_smaller_and_close(converted, model, kind, tmp_path):
    path, images, expected, nbytes = converted[(model, kind, "dynamic_range")]
    assert nbytes < 0.4 * converted[(model, kind, "float32")][3]  # int8 weights
    got, _ = _run_litert(path, images, tmp_path)
    for i in range(len(images)):
        err = max_rel(got[i], expected[i])
        assert err < DYNAMIC_RANGE_TOLERANCE, (i, err)
        others = [max_rel(got[i], expected[j]) for j in range(len(images)) if j != i]
        assert err < min(others), (i, err, others)  # it tells the images apart


def test_unknown_quantization_and_a_module_without_serving_default(family, tmp_path):
    from hubexport.deploy.tflite import write_tflite
    from hubexport.errors import BuildError, UsageError

    with pytest.raises(UsageError, match="quantization 'int4'"):
        write_tflite(family.module("mobilenet_v1_025_128", "classification", 5),
                     tmp_path / "x.tflite", image_size=128, quantization="int4")
    with pytest.raises(BuildError, match="no serving_default signature"):
        write_tflite(family.module("mobilenet_v1_025_128", "classification", 4),
                     tmp_path / "x.tflite", image_size=128)
    assert list(tmp_path.iterdir()) == []
