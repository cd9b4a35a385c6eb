"""Tests of hubexport.standin: stand-in tarballs match the checked-in manifests exactly."""

import difflib
import hashlib
import json
import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from hubexport import specs as specs_module
from hubexport import standin
from hubexport.errors import BuildError, UsageError

MEMBERS = {
    "inception_v2": ("inception_v2_2016_08_28.tar.gz", "inception_v2.ckpt"),
    "inception_resnet_v2": ("inception_resnet_v2_2016_08_30.tar.gz",
                            "inception_resnet_v2_2016_08_30.ckpt"),
}


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_standin(arch, result, tmp_path, seed):
    tarball_name, member = MEMBERS[arch]
    assert result.tarball.name == tarball_name
    # Size and checksum, recomputed.
    assert result.size == result.tarball.stat().st_size
    assert result.checksum == "sha256:" + _sha256(result.tarball)

    # One member, deterministic metadata, V1 checkpoint (a single file).
    with tarfile.open(result.tarball, "r:gz") as tar:
        infos = tar.getmembers()
        assert [i.name for i in infos] == [member]
        info = infos[0]
        assert info.isfile() and info.mtime == 0 and info.uid == 0 and info.gid == 0
        tar.extractall(tmp_path, filter="data")
    with open(result.tarball, "rb") as f:
        header = f.read(10)
    assert header[:2] == b"\x1f\x8b" and header[4:8] == b"\0\0\0\0"  # gzip, mtime 0
    path = tmp_path / member
    assert sorted(p.name for p in tmp_path.iterdir()) == [member]  # no .index / .data

    # Every manifest variable, exact names, shapes and dtypes -- nothing else.
    manifest = standin.load_manifest(arch)
    reader = tf.train.load_checkpoint(str(path))
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    expected = {v["name"]: (v["shape"], v["dtype"]) for v in manifest["variables"]}
    assert {k: (list(shapes[k]), dtypes[k].name) for k in shapes} == expected
    assert sum(int(np.prod(shapes[k])) for k in shapes if k != "global_step") \
        == manifest["num_parameters"]

    # The values are the seeded ones, and sane.
    values = standin.standin_values(manifest, seed)
    for name in list(values)[:40] + list(values)[-5:]:
        np.testing.assert_array_equal(reader.get_tensor(name), values[name], err_msg=name)
    for name in shapes:
        if name.endswith("moving_variance"):
            var = reader.get_tensor(name)
            assert var.min() >= 0.5 and var.max() < 1.5, name
    assert reader.get_tensor("global_step").dtype == np.int64

    # The pinned spec: only size and checksum differ from the shipped one.
    spec_file = result.spec_dir / ("%s.yaml" % arch)
    shipped = (specs_module.default_specs_dir() / ("%s.yaml" % arch)).read_text()
    pinned = spec_file.read_text()
    changed = [line for line in difflib.unified_diff(shipped.splitlines(), pinned.splitlines(),
                                                     lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert sorted(line.strip("+- ").split(":")[0] for line in changed) == \
        ["checksum", "checksum", "size", "size"]
    spec = specs_module.load_spec(spec_file)
    assert spec.checkpoint.size == result.size
    assert (spec.checkpoint.checksum_algo, spec.checkpoint.checksum_hex) == \
        ("sha256", _sha256(result.tarball))
    assert (spec.checkpoint.filename, spec.checkpoint.member) == (tarball_name, member)
    assert list(specs_module.load_specs(result.spec_dir)) == [arch]


def test_inception_v2_standin_matches_manifest_and_is_deterministic(tmp_path):
    first = standin.make_standin("inception_v2", tmp_path / "a", seed=0)
    check_standin("inception_v2", first, tmp_path / "extract", seed=0)
    second = standin.make_standin("inception_v2", tmp_path / "b", seed=0)
    assert second.tarball.read_bytes() == first.tarball.read_bytes()
    assert (second.size, second.checksum) == (first.size, first.checksum)
    # No temporary files are left behind.
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == \
        ["inception_v2_2016_08_28.tar.gz", "specs"]


@pytest.mark.slow
def test_inception_resnet_v2_standin_matches_manifest(tmp_path):
    result = standin.make_standin("inception_resnet_v2", tmp_path / "out", seed=1)
    check_standin("inception_resnet_v2", result, tmp_path / "extract", seed=1)
    assert 200e6 < result.size < 260e6


def test_values_depend_on_seed_only():
    manifest = standin.load_manifest("inception_v2")
    a, b, c = (standin.standin_values(manifest, s) for s in (0, 0, 1))
    assert list(a) == [v["name"] for v in manifest["variables"]]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert a[name].dtype == np.dtype(manifest_dtype(manifest, name))
    assert not np.array_equal(a["InceptionV2/Conv2d_2b_1x1/weights"],
                              c["InceptionV2/Conv2d_2b_1x1/weights"])


def manifest_dtype(manifest, name):
    return next(v["dtype"] for v in manifest["variables"] if v["name"] == name)


def test_pin_spec_text_preserves_everything_else():
    text = ("name: x\n# comment\ncheckpoint:\n  url: http://h/x.tar.gz\n"
            "  # size is not published\n  size: null\n  checksum: md5:abc\n"
            "  member: m.ckpt\nsize: 3\nchecksum: top\n")
    out = standin.pin_spec_text(text, 123, "sha256:" + "0" * 64)
    assert out == text.replace("  size: null", "  size: 123").replace(
        "  checksum: md5:abc", "  checksum: sha256:" + "0" * 64)


def test_pin_spec_text_inserts_the_size_of_an_unpublished_checksum():
    text = ("name: x\ncheckpoint:\n    url: http://h/x.tar.gz\n    checksum: unpublished  # none\n"
            "    member: m.ckpt\nsize: 3\n")
    out = standin.pin_spec_text(text, 123, "sha256:" + "0" * 64)
    assert out == text.replace("    checksum: unpublished  # none\n",
                               "    checksum: sha256:" + "0" * 64 + "\n    size: 123\n")
    # CRLF line endings are kept, also on the inserted line.
    crlf = text.replace("\n", "\r\n")
    assert standin.pin_spec_text(crlf, 123, "sha256:" + "0" * 64) == out.replace("\n", "\r\n")
    # A checksum line that ends the file (no line break) gets one before the size line.
    last = "checkpoint:\n  url: http://h/x.tar.gz\n  checksum: unpublished"
    assert standin.pin_spec_text(last, 7, "md5:" + "a" * 32) == \
        "checkpoint:\n  url: http://h/x.tar.gz\n  checksum: md5:" + "a" * 32 + "\n  size: 7"


def test_pin_spec_text_pins_a_shipped_spec_made_unpublished(tmp_path):
    shipped = (specs_module.default_specs_dir() / "inception_v2.yaml").read_text()
    lines = shipped.splitlines(keepends=True)
    size_line = next(i for i, l in enumerate(lines) if l.startswith("  size:"))
    del lines[size_line]
    checksum_line = next(i for i, l in enumerate(lines) if l.startswith("  checksum:"))
    lines[checksum_line] = "  checksum: unpublished\n"
    unpublished = "".join(lines)
    assert specs_module.parse_spec(unpublished, tmp_path / "inception_v2.yaml").checkpoint \
        .pinned is False
    out = standin.pin_spec_text(unpublished, 41577079, "sha256:" + "1" * 64)
    lines[checksum_line:checksum_line + 1] = ["  checksum: sha256:" + "1" * 64 + "\n",
                                              "  size: 41577079\n"]
    assert out == "".join(lines)
    spec = specs_module.parse_spec(out, tmp_path / "inception_v2.yaml")
    assert (spec.checkpoint.pinned, spec.checkpoint.size, spec.checkpoint.checksum) == \
        (True, 41577079, "sha256:" + "1" * 64)


def test_pin_spec_text_without_checkpoint_block():
    with pytest.raises(BuildError, match="x.yaml: no checkpoint size/checksum"):
        standin.pin_spec_text("name: x\nsize: 3\nchecksum: a\n", 1, "sha256:0", source="x.yaml")
    with pytest.raises(BuildError, match="x.yaml: no checkpoint size/checksum"):  # no checksum
        standin.pin_spec_text("checkpoint:\n  size: 3\nchecksum: a\n", 1, "sha256:0",
                              source="x.yaml")


def test_unknown_model(tmp_path):
    # (inception_v3 was the example until it became one of the nets.)
    with pytest.raises(UsageError, match="unknown model 'no_such_net'; known: inception_resnet_v2"):
        standin.make_standin("no_such_net", tmp_path)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# V2 checkpoints and MobileNet-shaped .tgz stand-ins
# ---------------------------------------------------------------------------

V2_MEMBER = "mobilenet_v1_0.25_128.ckpt"
V2_NAMES = sorted([V2_MEMBER + ".index", V2_MEMBER + ".data-00000-of-00001",
                   V2_MEMBER + ".meta", "mobilenet_v1_0.25_128_frozen.pb",
                   "mobilenet_v1_0.25_128.tflite", "mobilenet_v1_0.25_128_info.txt",
                   "mobilenet_v1_0.25_128_eval.pbtxt"])


def _tiny_values(seed=0):
    rng = np.random.default_rng(seed)
    return {"MobilenetV1/Conv2d_0/weights": rng.standard_normal((3, 3, 3, 8)).astype(np.float32),
            "MobilenetV1/Conv2d_0/BatchNorm/beta": rng.standard_normal(8).astype(np.float32),
            "MobilenetV1/Conv2d_0/BatchNorm/gamma": rng.standard_normal(8).astype(np.float32),
            "global_step": np.asarray(rng.integers(1, 10**6), np.int64)}


def test_manifest_formats_default_to_v1():
    for path in sorted(standin.DATA_DIR.glob("*_manifest.json")):
        arch = path.name[:-len("_manifest.json")]
        if arch not in standin.ARCHITECTURES:
            continue
        header = standin.load_manifest(arch)["header"]["checkpoint"]
        assert header["format"] in standin.CHECKPOINT_FORMATS, arch
        if arch.startswith(("inception", "resnet")):  # V1 files (ZOO.md section 2)
            assert header["format"] == "v1", arch
        if header["tarball"].endswith(".tgz"):  # MobileNet's: V2 (ZOO.md section 2)
            assert header["format"] == "v2", (arch, "a .tgz manifest needs \"format\": \"v2\"")
    assert "format" not in json.loads(
        (standin.DATA_DIR / "inception_v2_manifest.json").read_text())["header"]["checkpoint"]


def test_unknown_manifest_format_is_refused(tmp_path, monkeypatch):
    manifest = json.loads((standin.DATA_DIR / "inception_v2_manifest.json").read_text())
    manifest["header"]["checkpoint"]["format"] = "v3"
    (tmp_path / "inception_v2_manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(standin, "DATA_DIR", tmp_path)
    with pytest.raises(BuildError, match=r"inception_v2_manifest\.json: header\.checkpoint\."
                       r"format: 'v3' is not one of v1, v2"):
        standin.load_manifest("inception_v2")


def test_v2_writer_is_byte_deterministic(tmp_path):
    """TensorFlow's V2 writer: the same values give the same bytes; other values other bytes."""
    for d, seed in (("a", 0), ("b", 0), ("c", 1)):
        (tmp_path / d).mkdir()
        standin.write_v2_checkpoint(_tiny_values(seed), tmp_path / d / "m.ckpt")
    names = ["m.ckpt.data-00000-of-00001", "m.ckpt.index"]
    for d in "abc":
        assert sorted(p.name for p in (tmp_path / d).iterdir()) == names
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / names[0]).read_bytes() != (tmp_path / "c" / names[0]).read_bytes()
    reader = tf.train.load_checkpoint(str(tmp_path / "a" / "m.ckpt"))
    for name, value in _tiny_values(0).items():
        np.testing.assert_array_equal(reader.get_tensor(name), value)
        assert reader.get_tensor(name).dtype == value.dtype


def test_v2_standin_tarball_is_shaped_like_mobilenets_and_deterministic(tmp_path):
    from hubexport import archive

    a, b = tmp_path / "a.tgz", tmp_path / "b.tgz"
    standin.write_standin_tarball(_tiny_values(), V2_MEMBER, a, "v2")
    standin.write_standin_tarball(_tiny_values(), V2_MEMBER, b, "v2")
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tgz", "b.tgz"]  # no temp dir
    with tarfile.open(a, "r:gz") as tar:
        infos = tar.getmembers()
        assert [i.name for i in infos] == V2_NAMES
        assert all(i.isfile() and i.mtime == 0 and i.uid == 0 and i.uname == "" for i in infos)
        for name in standin.extra_member_names(V2_MEMBER):  # stand-ins, and they say so
            assert b"not a real file of its kind" in tar.extractfile(name).read()
    assert a.read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime 0
    prefix = archive.extract_checkpoint(a, V2_MEMBER, tmp_path / "out")
    assert sorted(os.listdir(prefix.parent)) == sorted(
        ["checkpoint", V2_MEMBER + ".index", V2_MEMBER + ".data-00000-of-00001"])
    reader = tf.train.load_checkpoint(str(prefix))
    for name, value in _tiny_values().items():
        np.testing.assert_array_equal(reader.get_tensor(name), value)
    with pytest.raises(BuildError, match="checkpoint format 'v3'"):
        standin.write_standin_tarball(_tiny_values(), V2_MEMBER, tmp_path / "c.tgz", "v3")


def test_make_standin_writes_the_format_the_manifest_names(tmp_path, monkeypatch):
    """A manifest marked "format": "v2" gives a V2 tarball under the spec's names (here a
    shortened Inception V1 manifest, so that it stays small), pinned like a V1 one."""
    real = standin.load_manifest

    def v2_manifest(arch):
        manifest = real(arch)
        manifest["header"]["checkpoint"]["format"] = "v2"
        manifest["variables"] = manifest["variables"][:6]
        return manifest

    monkeypatch.setattr(standin, "load_manifest", v2_manifest)
    result = standin.make_standin("inception_v1", tmp_path / "out", seed=3)
    member = "inception_v1.ckpt"
    assert result.tarball.name == "inception_v1_2016_08_28.tar.gz"
    with tarfile.open(result.tarball, "r:gz") as tar:
        assert [i.name for i in tar.getmembers()] == sorted(
            [member + ".index", member + ".data-00000-of-00001"]
            + standin.extra_member_names(member))
        tar.extractall(tmp_path / "x", members=[tar.getmember(member + ".index"),
                                                tar.getmember(member + ".data-00000-of-00001")],
                       filter="data")
    reader = tf.train.load_checkpoint(str(tmp_path / "x" / member))
    values = standin.standin_values(v2_manifest("inception_v1"), 3)
    assert sorted(reader.get_variable_to_shape_map()) == sorted(values)
    for name, value in values.items():
        np.testing.assert_array_equal(reader.get_tensor(name), value)
    spec = specs_module.load_spec(result.spec_dir / "inception_v1.yaml")
    assert (spec.checkpoint.size, spec.checkpoint.checksum) == (result.size, result.checksum)
    assert result.checksum == "sha256:" + _sha256(result.tarball)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "inception_v1_2016_08_28.tar.gz", "specs"]
