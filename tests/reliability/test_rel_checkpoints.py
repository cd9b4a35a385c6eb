"""Checkpoints that do not fit the net, or are damaged, through `hubexport build` (issue 7).

Each bad checkpoint is a stand-in (values drawn by ``hubexport.standin`` from
the checked-in manifest of TF-Slim's Inception V2 variables, written in the
V1 format by ``standin.write_v1_checkpoint``) with one defect, packed in a
tarball with the canonical names, served from a mirror directory with a
spec pinned to it, and built with the real command line. Expected: exit 1,
one line naming the checkpoint file and the variable at fault, no module
and no temporary directory in the output.
"""

from __future__ import annotations

import gzip
import io
import tarfile

import numpy as np
import pytest

import reliability_support as rs
from reliability_support import FILENAME, MEMBER

MISSING = "InceptionV2/Mixed_4c/Branch_1/Conv2d_0b_3x3/weights"
LOGITS = "InceptionV2/Logits/Conv2d_1c_1x1/weights"
BETA = "InceptionV2/Mixed_4c/Branch_3/Conv2d_0b_1x1/BatchNorm/beta"


def _tarball(member_bytes: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo(MEMBER)
        info.size, info.mode = len(member_bytes), 0o644
        tf.addfile(info, io.BytesIO(member_bytes))
    return gzip.compress(buf.getvalue(), compresslevel=1, mtime=0)


def _good_member(standins) -> bytes:
    with tarfile.open(standins / FILENAME) as tf:
        return tf.extractfile(MEMBER).read()


@pytest.fixture(scope="module")
def variants(tmp_path_factory, standins):
    """name -> (tarball bytes, message regexes, description)."""
    from hubexport.standin import load_manifest, standin_values, write_v1_checkpoint
    from hubexport.tfimport import import_tensorflow

    import_tensorflow()
    work = tmp_path_factory.mktemp("bad-checkpoints")
    manifest = load_manifest("inception_v2")

    def written(edit):
        values = standin_values(manifest, seed=0)
        edit(values)
        path = work / ("%d.ckpt" % len(list(work.iterdir())))
        write_v1_checkpoint(values, path)
        return _tarball(path.read_bytes())

    def flip(data: bytes, at: float, n: int = 64) -> bytes:
        data = bytearray(data)
        i = int(len(data) * at)
        data[i:i + n] = bytes(b ^ 0xFF for b in data[i:i + n])
        return bytes(data)

    good = _good_member(standins)
    return {
        "missing_variable": (
            written(lambda v: v.pop(MISSING)), [rs.re.escape(MISSING) + " missing"],
            "checkpoint lacks one variable the net needs"),
        "wrong_shape": (
            written(lambda v: v.__setitem__(LOGITS, v[LOGITS][..., :1000].copy())),
            [rs.re.escape(LOGITS) + r" has shape \[1, 1, 1024, 1000\], the net needs "
             r"\[1, 1, 1024, 1001\]"],
            "logits weights with 1000 instead of 1001 classes"),
        "wrong_dtype": (
            written(lambda v: v.__setitem__(BETA, v[BETA].astype(np.float64))),
            [rs.re.escape(BETA) + r" has dtype float64, the net needs float32"],
            "a float64 variable where the net needs float32"),
        "corrupted_bytes": (
            _tarball(flip(good, 0.5)), [r"cannot read variable InceptionV2/\S+",
                                        r"damaged|corrupt"],
            "64 bytes flipped in the middle of the checkpoint's data"),
        "corrupted_header": (
            _tarball(flip(good, 0.0005)), [r"not a readable TensorFlow checkpoint"],
            "64 bytes flipped at the start of the checkpoint (its table of tensors)"),
        "truncated": (
            _tarball(good[: len(good) // 2]), [r"not a readable TensorFlow checkpoint"],
            "checkpoint file cut in half"),
    }


def _build_args(sb, specs, mirror):
    return ["build", "inception_v2", "--version", "3", "--kind", "classification",
            "--specs", specs, "--mirror", mirror, "--cache-dir", sb.cache, "--output", sb.out]


def _check_failed_build(sb: rs.Sandbox, result: rs.CliResult, patterns) -> tuple[str, int]:
    line = result.check_one_line_error(1, *patterns)
    module = sb.out / rs.HANDLE_DIR / "3"
    left = rs.leftovers(sb.out)
    assert not module.exists() and left == [], left
    return line, int(module.exists()) + len(left)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["missing_variable", "wrong_shape", "wrong_dtype",
                                  "corrupted_bytes", "corrupted_header", "truncated"])
def test_bad_checkpoint_is_a_clear_error(variants, sandbox, case, name):
    data, patterns, what = variants[name]
    case.describe("Checkpoints", what, "exit 1, one line naming the checkpoint file and the "
                  "variable (or the file's problem); no module, no temporary directory")
    mirror = sandbox.inputs / "mirror"
    mirror.mkdir()
    (mirror / FILENAME).write_bytes(data)
    specs = rs.write_spec_dir(sandbox.inputs / "specs", data)
    before = sandbox.snapshot()
    result = rs.run_cli(_build_args(sandbox, specs, mirror), sandbox, timeout=300)
    outside, changed = sandbox.bytes_outside(before, sandbox.snapshot())
    assert outside == 0, changed
    line, partial = _check_failed_build(sandbox, result, [MEMBER] + patterns)
    case.trial(True, bytes_outside=outside, partial_modules=partial,
               observed="`%s`" % rs.shorten(line, sandbox, 260))


@pytest.mark.slow
def test_checkpoint_corrupted_in_the_cache(standins, sandbox, case):
    case.describe("Checkpoints", "extracted checkpoint corrupted in the cache after `fetch`",
                  "exit 1, one line naming the cached file and saying to delete it and "
                  "fetch again; no module")
    specs = standins / "specs"
    rs.run_cli(["fetch", "inception_v2", "--specs", specs, "--mirror", standins,
                "--cache-dir", sandbox.cache], sandbox).check_ok()
    (ckpt,) = sandbox.cache.glob("checkpoints/*/" + MEMBER)
    data = bytearray(ckpt.read_bytes())
    at = len(data) // 3
    data[at:at + 256] = bytes(256)
    ckpt.write_bytes(bytes(data))
    before = sandbox.snapshot()
    result = rs.run_cli(_build_args(sandbox, specs, standins), sandbox, timeout=300)
    outside, changed = sandbox.bytes_outside(before, sandbox.snapshot())
    assert outside == 0, changed
    line, partial = _check_failed_build(sandbox, result, [rs.re.escape(str(ckpt)),
                                                          r"cannot read variable",
                                                          r"fetch again"])
    case.trial(True, bytes_outside=outside, partial_modules=partial,
               observed="`%s`" % rs.shorten(line, sandbox, 260))
