"""Helpers shared by the tests that hold our nets against implementations we did not write.

* :func:`structured_images`: images whose outputs clearly differ from image
  to image (smooth blobs; i.i.d. noise is averaged away by pooling).
* :func:`assert_meaningful`: asserts that they do, so that a net ignoring its
  input cannot pass.
* :func:`run_legacy`: runs a script of ``tests/legacy/`` with the legacy
  interpreter (TensorFlow 2.15 + tf_slim 1.1.0, ``$HUBEXPORT_LEGACY_PYTHON``,
  default ``.venv-legacy/bin/python``).
* :func:`max_abs`, :func:`max_rel`: float64 differences of two arrays.
"""

import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
LEGACY_DIR = REPO / "tests" / "legacy"
TOLERANCE = 1e-4


def legacy_python():
    """Path of the legacy interpreter (str)."""
    return os.environ.get("HUBEXPORT_LEGACY_PYTHON", str(REPO / ".venv-legacy" / "bin" / "python"))


def run_legacy(script, *args, timeout=1200):
    """Runs ``tests/legacy/<script> ARGS`` with the legacy interpreter; asserts exit 0.

    Returns:
      the CompletedProcess (stdout, stderr as text).
    """
    python = legacy_python()
    assert Path(python).exists(), (
        "legacy interpreter %s not found; run `make install-legacy` or set "
        "HUBEXPORT_LEGACY_PYTHON to a python with tensorflow 2.15 and tf-slim" % python)
    proc = subprocess.run(
        [python, str(LEGACY_DIR / script), *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def structured_images(seed, n, h, w):
    """float32 [n, h, w, 3] in [0, 1]: smooth random blobs plus a little noise.

    Smooth structure (unlike i.i.d. noise, which pooling averages away) makes
    the feature vectors of different images clearly different.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (n, h // 24 + 2, w // 24 + 2, 3))
    img = np.repeat(np.repeat(coarse, 24, axis=1), 24, axis=2)[:, :h, :w, :]
    img = 0.8 * img + 0.2 * rng.uniform(0, 1, (n, h, w, 3))
    return img.astype(np.float32)


def extract_member(tarball, dest):
    """Extracts the one member of a stand-in tarball into ``dest``; returns its path."""
    with tarfile.open(tarball, "r:gz") as tar:
        (member,) = tar.getmembers()
        tar.extractall(dest, filter="data")
    return Path(dest) / member.name


def max_abs(a, b):
    """Largest absolute difference (float), after asserting equal shapes."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def max_rel(a, b):
    """Largest difference relative to the reference's scale: max|a - b| / max(|b|, 1e-6)."""
    scale = max(float(np.max(np.abs(b.astype(np.float64)))), 1e-6)
    return max_abs(a, b) / scale


def assert_differ_by(outputs, minimum):
    """The first two images' outputs differ by more than ``minimum`` (absolute, max over values)."""
    assert np.all(np.isfinite(outputs))
    if len(outputs) > 1:
        assert max_abs(outputs[0], outputs[1]) > minimum, max_abs(outputs[0], outputs[1])


def assert_meaningful(outputs, tolerance=TOLERANCE):
    """The comparison is not trivial: outputs vary between images well beyond tolerance.

    Args:
      outputs: float array [batch, ...] (a reference output); with batch >= 2
        the first two images' outputs must differ by more than 1000 x
        ``tolerance`` relative to their scale.
      tolerance: the comparison's relative tolerance.
    """
    assert np.all(np.isfinite(outputs))
    if len(outputs) > 1:
        assert max_rel(outputs[0], outputs[1]) > 1000 * tolerance, max_rel(outputs[0], outputs[1])
