"""The checkpoint stage's shared read: values files and read_once across processes."""

from __future__ import annotations

import concurrent.futures
import multiprocessing

import numpy as np
import pytest

from hubexport.checkpoint import map_values_file, read_once, write_values_file
from hubexport.errors import CheckpointError
from hubexport.nets.layers import VariableRequest
from hubexport.standin import write_v1_checkpoint


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
