"""The checkpoint stage: V1 and V2 checkpoints read back, their one-line errors, and the
shared read (values files and read_once across processes).

The V2 checkpoints are tiny (a few variables), written by TensorFlow's own
V2 writer (``tf.raw_ops.SaveV2`` via ``hubexport.standin.write_v2_checkpoint``)
and packed as the MobileNet tarballs are (``standin.write_standin_tarball``).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import re
import types

import numpy as np
import pytest

from hubexport import fetch
from hubexport.checkpoint import Checkpoint, map_values_file, read_once, write_values_file
from hubexport.errors import CheckpointError
from hubexport.nets.layers import VariableRequest
from hubexport.standin import write_standin_tarball, write_v1_checkpoint, write_v2_checkpoint


def _values():
    rng = np.random.default_rng(7)
    return {"Net/conv/weights": rng.standard_normal((3, 3, 3, 5)).astype(np.float32),
            "Net/conv/BatchNorm/beta": rng.standard_normal(5).astype(np.float32),
            "Net/odd": rng.standard_normal(7).astype(np.float32),  # 28 bytes: padded
            "Net/scalar": np.float32(2.5).reshape(())}


def test_values_file_round_trip(tmp_path):
    values = _values()
    path = str(tmp_path / "v.values")
    write_values_file(values, path)
    mapped = map_values_file(path)
    assert list(mapped) == list(values)
    for name, value in values.items():
        assert mapped[name].dtype == np.float32 and mapped[name].shape == value.shape
        np.testing.assert_array_equal(mapped[name], value)
        assert not mapped[name].flags.writeable
        assert mapped[name].ctypes.data % 64 == 0  # each array starts aligned
    assert [p.name for p in tmp_path.iterdir()] == ["v.values"]  # no temporary file left


@pytest.mark.parametrize("damage", ["magic", "truncated"])
def test_damaged_values_file_is_a_checkpoint_error(tmp_path, damage):
    path = tmp_path / "v.values"
    write_values_file(_values(), str(path))
    data = path.read_bytes()
    path.write_bytes(b"NOTVALUE" + data[8:] if damage == "magic" else data[:300])
    with pytest.raises(CheckpointError, match=r"v\.values: .*delete it and build again"):
        map_values_file(str(path))


def _read_once_in_child(ckpt, requests, shared_dir):
    """In a spawned process: read_once, then report how often Checkpoint was opened here."""
    from hubexport import checkpoint

    opened = []
    original = checkpoint.Checkpoint.__init__

    def counting(self, path):
        opened.append(path)
        original(self, path)

    checkpoint.Checkpoint.__init__ = counting
    values = read_once(ckpt, requests, shared_dir)
    return len(opened), {k: np.array(v) for k, v in values.items()}


def test_read_once_reads_the_checkpoint_once_for_several_processes(tmp_path):
    """Four processes racing for the same checkpoint: one opens it, all get its values."""
    values = _values()
    ckpt = tmp_path / "model.ckpt"
    write_v1_checkpoint({**values, "global_step": np.array(5, np.int64)}, ckpt)
    requests = [VariableRequest(name, value.shape) for name, value in values.items()]
    shared = tmp_path / "shared"
    shared.mkdir()
    with concurrent.futures.ProcessPoolExecutor(
            4, mp_context=multiprocessing.get_context("spawn")) as pool:
        outcomes = list(pool.map(_read_once_in_child, [str(ckpt)] * 4, [requests] * 4,
                                 [str(shared)] * 4))
    assert sorted(n for n, _ in outcomes) == [0, 0, 0, 1]
    for _, got in outcomes:
        assert list(got) == list(values)  # global_step is not requested
        for name, value in values.items():
            np.testing.assert_array_equal(got[name], value)
    assert len(list(shared.glob("*.values"))) == 1
    assert not list(shared.glob("*.tmp-*"))


def test_read_once_checks_the_checkpoint(tmp_path):
    values = _values()
    ckpt = tmp_path / "model.ckpt"
    write_v1_checkpoint(values, ckpt)
    requests = [VariableRequest("Net/conv/weights", (3, 3, 3, 6)),
                VariableRequest("Net/missing", (1,))]
    with pytest.raises(CheckpointError, match=r"model\.ckpt does not fit the net: .*"
                       r"Net/conv/weights has shape \[3, 3, 3, 5\], the net needs "
                       r"\[3, 3, 3, 6\].*Net/missing missing|Net/missing missing"):
        read_once(ckpt, requests, tmp_path)
    assert not list(tmp_path.glob("*.values"))


def test_read_once_without_a_shared_dir_reads_directly(tmp_path):
    values = _values()
    ckpt = tmp_path / "model.ckpt"
    write_v1_checkpoint(values, ckpt)
    requests = [VariableRequest(name, value.shape) for name, value in values.items()]
    got = read_once(ckpt, requests)
    assert list(got) == list(values)
    for name, value in values.items():
        np.testing.assert_array_equal(got[name], value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]  # no values file
    with pytest.raises(CheckpointError, match=r"Net/missing missing"):
        read_once(ckpt, requests + [VariableRequest("Net/missing", (1,))])


# ---------------------------------------------------------------------------
# V2 checkpoints
# ---------------------------------------------------------------------------

V2_MEMBER = "tiny_v2_0.25_128.ckpt"
V2_FILENAME = "tiny_v2_0.25_128.tgz"


def _v2_values():
    return {**_values(), "global_step": np.array(12, np.int64)}


def _requests(values):
    return [VariableRequest(n, v.shape) for n, v in values.items() if n != "global_step"]


def _spec(data, url):
    checkpoint = types.SimpleNamespace(
        url=url, size=len(data), checksum_algo="sha256",
        checksum_hex=hashlib.sha256(data).hexdigest(), member=V2_MEMBER,
        filename=V2_FILENAME)
    return types.SimpleNamespace(name="tiny_v2", checkpoint=checkpoint)


def test_v2_tarball_is_fetched_extracted_and_read_back(http_server, tmp_path):
    """A MobileNet-shaped .tgz over loopback HTTP: fetch returns the V2 prefix, Checkpoint reads
    every value back; the cached extraction is reused; read_once works on it too."""
    values = _v2_values()
    tarball = tmp_path / V2_FILENAME
    write_standin_tarball(values, V2_MEMBER, tarball, "v2")
    data = tarball.read_bytes()
    http_server.add_file("/m/" + V2_FILENAME, data)
    spec = _spec(data, http_server.url("/m/" + V2_FILENAME))
    cache = tmp_path / "cache"
    path = fetch.fetch_checkpoint(spec, cache_dir=cache, progress=False)
    assert path.name == V2_MEMBER and path.parent.name == V2_MEMBER
    assert sorted(os.listdir(path.parent)) == [
        "checkpoint", V2_MEMBER + ".data-00000-of-00001", V2_MEMBER + ".index"]
    for where in (path, path.parent):  # the prefix, and the directory (its state file)
        ckpt = Checkpoint(where)
        assert ckpt.shapes == {n: v.shape for n, v in values.items()}
        assert ckpt.dtypes == {n: v.dtype.name for n, v in values.items()}
        got = ckpt.values(values)
        for name, value in values.items():
            np.testing.assert_array_equal(got[name], value)
    assert fetch.fetch_checkpoint(spec, cache_dir=cache) == path
    assert len(http_server.requests_for("/m/" + V2_FILENAME)) == 1
    shared = tmp_path / "shared"
    shared.mkdir()
    got = read_once(path, _requests(values), shared)
    np.testing.assert_array_equal(got["Net/conv/weights"], values["Net/conv/weights"])


@pytest.fixture
def v2_prefix(tmp_path):
    prefix = tmp_path / "ckpt" / V2_MEMBER / V2_MEMBER
    prefix.parent.mkdir(parents=True)
    write_v2_checkpoint(_v2_values(), prefix)
    return prefix


def _damage(prefix, what):
    data_file = prefix.parent / (prefix.name + ".data-00000-of-00001")
    index = prefix.parent / (prefix.name + ".index")
    if what == "missing_shard":
        data_file.unlink()
    elif what == "truncated_shard":
        data_file.write_bytes(data_file.read_bytes()[:100])
    elif what == "flipped_shard":
        b = bytearray(data_file.read_bytes())
        b[40:104] = bytes(x ^ 0xFF for x in b[40:104])
        data_file.write_bytes(bytes(b))
    elif what == "missing_index":
        index.unlink()
    elif what == "truncated_index":
        index.write_bytes(index.read_bytes()[:60])


V2_DAMAGE = {
    # damage: (fails when opening?, message regex)
    "missing_shard": (False, r"cannot read variable Net/\S+ \(.*No such file"),
    "truncated_shard": (False, r"cannot read variable Net/\S+ \("),
    "flipped_shard": (False, r"cannot read variable Net/\S+ \(.*[Cc]hecksum"),
    "missing_index": (True, r"not a readable TensorFlow checkpoint"),
    "truncated_index": (True, r"not a readable TensorFlow checkpoint"),
}


@pytest.mark.parametrize("damage", sorted(V2_DAMAGE))
def test_damaged_v2_checkpoint_is_one_line(v2_prefix, damage):
    """Each error names the prefix and the directory to delete, on one line, no traceback."""
    at_open, pattern = V2_DAMAGE[damage]
    _damage(v2_prefix, damage)
    with pytest.raises(CheckpointError) as err:
        ckpt = Checkpoint(v2_prefix)
        assert not at_open, "opened a checkpoint with a damaged index"
        ckpt.values(_v2_values())
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(v2_prefix) + ": ")
    assert re.search(pattern, message), message
    assert message.endswith("delete its directory %s from the cache and fetch again"
                            % v2_prefix.parent), message


def test_v2_checkpoint_checked_against_requests(v2_prefix):
    values = _v2_values()
    Checkpoint(v2_prefix).check(_requests(values))
    with pytest.raises(CheckpointError, match=r"does not fit the net: Net/missing missing"):
        Checkpoint(v2_prefix).check(_requests(values) + [VariableRequest("Net/missing", (1,))])


def test_v1_and_v2_checkpoints_read_the_same_values(tmp_path):
    values = _v2_values()
    write_v1_checkpoint(values, tmp_path / "v1.ckpt")
    write_v2_checkpoint(values, tmp_path / "v2.ckpt")
    a, b = Checkpoint(tmp_path / "v1.ckpt"), Checkpoint(tmp_path / "v2.ckpt")
    assert a.shapes == b.shapes and a.dtypes == b.dtypes
    va, vb = a.values(values), b.values(values)
    for name in values:
        np.testing.assert_array_equal(va[name], vb[name])
