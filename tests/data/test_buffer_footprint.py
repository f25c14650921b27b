"""Issue 9: the demo buffer's RAM and checkpoints follow the rows it holds, not max_size."""

from __future__ import annotations

import gc
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from _trajectories import A, OBS, PX, traj
from torchrl_chunk.data import LengthFilteredReplayBuffer
from torchrl_chunk.data.row_storage import capacity_for, footprint

H = 4
BIG = 200_000  # the recipe's default max_size
FIXTURES = Path(__file__).parent / "fixtures"



def make(storage="memory", tmp_path=None, experts=(5, 8), seed=0, **kw):
    kw.setdefault("max_size", BIG)
    if storage == "memmap":
        kw.setdefault("scratch_dir", tmp_path / "scratch")
    image = kw.pop("image", False)
    return LengthFilteredReplayBuffer(
        [traj(T, tag=100 * (i + 1), image=image) for i, T in enumerate(experts)], chunk_size=H,
        storage=storage, batch_size=8, generator=torch.Generator().manual_seed(seed), **kw)


def tensor_bytes(buf) -> int:
    """Bytes of the tensors the storage really allocated."""
    td = buf.replay_buffer.storage._storage
    return sum(v.numel() * v.element_size() for v in td.values(True, True))


def row_bytes_of(buf) -> int:
    td = buf.replay_buffer.storage._storage
    return sum(v[0].numel() * v.element_size() for v in td.values(True, True))


def du(path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def test_capacity_ladder():
    assert capacity_for(BIG, BIG) == BIG and capacity_for(BIG // 2 + 1, BIG) == BIG
    assert capacity_for(300, BIG) == 391 and capacity_for(1, BIG) == 1
    for rows in (1, 2, 3, 13, 300, 391, 392, 5_000, 99_999, 100_001):
        cap = capacity_for(rows, BIG)
        assert rows <= cap <= 2 * rows and capacity_for(cap, BIG) == cap  # a rung maps to itself


@pytest.mark.parametrize("storage", ["memory", "memmap"])
def test_storage_grows_with_the_rows_held_not_max_size(tmp_path, storage):
    """LazyTensorStorage(200000) allocated 200000 rows (and files) at the first write."""
    buf = make(storage, tmp_path, image=True, length_limit=60)
    row = row_bytes_of(buf)
    for step in range(3):
        buf.extend([traj(60, tag=1000 + step, image=True) for _ in range(3)])
        assert len(buf) * row <= tensor_bytes(buf) <= 2 * len(buf) * row
        store = buf.replay_buffer.storage
        assert tensor_bytes(buf) == buf.allocated_bytes == store.capacity * row and buf.row_bytes == row
        if storage == "memmap":  # one set of files, the previous rung's deleted
            assert [p.name for p in (tmp_path / "scratch").iterdir()] == [f"rows_{store.capacity}"]
            assert du(tmp_path / "scratch") - buf.allocated_bytes < 10_000  # + meta.json files
    assert len(buf) == 13 + 9 * 60 and buf.allocated_bytes < 2 * 553 * row < BIG * row / 100


def test_a_row_holds_its_observation_once_as_uint8():
    """One row per env step: o_t (uint8 image) and its chunk; no next observation, no copy
    of the image per chunk window."""
    buf = make(image=True, max_size=100)
    image, state, chunk, pad, traj_id, is_expert = PX * PX * 3, OBS * 4, H * A * 4, H, 8, 1
    assert buf.row_bytes == image + state + chunk + pad + traj_id + is_expert
    stored = {k for k in buf.replay_buffer.storage._storage.keys(True, True)}
    assert stored == {("observation", "image"), ("observation", "state"), ("vla_action", "chunk"),
                      "action_is_pad", "traj_id", "is_expert"}
    assert buf.sample()["observation", "image"].dtype == torch.uint8


@pytest.mark.parametrize("storage", ["memory", "memmap"])
def test_a_dump_holds_the_live_rows_only(tmp_path, storage):
    """The TorchRL dump wrote all max_size rows (47 MB for a few dozen state rows)."""
    buf = make(storage, tmp_path, experts=(5, 8, 6), length_limit=40, max_trajectories=5)
    buf.extend([traj(30, tag=7), traj(20, tag=9)])
    buf.extend([traj(25, tag=11)])  # evicts the 30 (the longest): a hole in the middle
    assert len(buf._free) == 5 and len(buf) == 5 + 8 + 6 + 20 + 25
    buf.dumps(tmp_path / "ckpt")
    size, row = du(tmp_path / "ckpt"), row_bytes_of(buf)
    assert len(buf) * row < size < len(buf) * row + 20_000
    assert size <= footprint(len(buf), row, BIG, storage).checkpoint_bytes


def _table(buf):
    return ([vars(t) for t in buf._trajs], buf._free, buf._next_slot, buf._next_traj_id,
            buf.stats, buf.length_limit, buf.mode, buf._sampler.live.tolist())


def _same_batches(a, b, n=3):
    for _ in range(n):
        x, y = a.sample(), b.sample()
        assert (x == y).all() and x["index"].tolist() == y["index"].tolist()


@pytest.mark.parametrize("saved, restored", [("memory", "memory"), ("memmap", "memmap"), ("memmap", "memory")])
def test_round_trip_after_evictions_continues_identically(tmp_path, saved, restored):
    """Rows go back to their storage rows: samples (with "index"), admissions and evictions
    after a load are those of the buffer that was saved."""
    buf = make(saved, tmp_path, experts=(5, 8, 6), max_size=30, seed=4)
    buf.extend([traj(4, tag=7), traj(7, tag=8)])  # full
    buf.extend([traj(6, tag=9), traj(3, success=False), traj(3, tag=10)])  # evicts the 8, then the 7
    assert len(buf._free) == 6 and buf.stats.evicted == 2
    buf.sample()
    buf.dumps(tmp_path / "ckpt")
    other = make(restored, tmp_path / "other", experts=(2,), max_size=30, seed=99)
    other.loads(tmp_path / "ckpt")
    assert _table(other) == _table(buf) and len(other) == len(buf)
    live = buf._sampler.live
    assert (other.replay_buffer.storage.get(live) == buf.replay_buffer.storage.get(live)).all()
    assert other.replay_buffer.storage.capacity == buf.replay_buffer.storage.capacity
    _same_batches(buf, other)
    for offer in ([traj(5, tag=11), traj(8, tag=12)], [traj(4, tag=13)], [traj(2, tag=14)]):
        assert buf.extend(offer) == other.extend(offer)
        assert _table(other) == _table(buf)
        _same_batches(buf, other)


def test_dump_into_a_used_directory_keeps_only_the_new_rows(tmp_path):
    buf = make(max_size=100)
    buf.extend([traj(30, tag=5)])
    buf.dumps(tmp_path / "c")
    small = make(max_size=100)
    small.dumps(tmp_path / "c")
    assert TensorDict.load_memmap(tmp_path / "c" / "rows").shape == (13,)
    again = make(experts=(3,), max_size=100)
    again.loads(tmp_path / "c")
    assert _table(again) == _table(small)


def test_loads_the_previous_format_written_by_torchrl(tmp_path):
    """tests/data/fixtures/buffer_v2 was written by the buffer of commit a8e70d7 (TorchRL's
    dump of all 24 storage rows, a hole at rows 5-8, a chunked trajectory at rows 12, 11);
    samples recorded with that version."""
    saved = shutil.copytree(FIXTURES / "buffer_v2", tmp_path / "v2")
    buf = make(experts=(3,), max_size=24, seed=42)
    buf.loads(saved)
    assert buf.trajectory_lengths == [5, 6, 4, 6, 2] and buf._free == [5, 6, 7, 8]
    old_rows = TensorDict.load_memmap(saved / "storage")
    live = buf._sampler.live
    assert (buf.replay_buffer.storage.get(live) == old_rows[live]).all()
    for index, traj_id in [([2, 19, 4, 12], [0, 3, 0, 4]), ([17, 12, 3, 19], [2, 4, 0, 3])]:
        batch = buf.sample(4)
        assert batch["index"].tolist() == index and batch["traj_id"].tolist() == traj_id
    report = buf.extend([traj(5, tag=700)])
    assert (report.admitted, report.evicted, buf.trajectory_lengths) == (1, 0, [5, 6, 4, 6, 2, 5])
    assert buf.sample(4)["index"].tolist() == [17, 17, 18, 13]
    buf.dumps(tmp_path / "v3")  # and it saves in the new format
    assert json.loads((tmp_path / "v3" / "length_filtered_buffer.json").read_text())["version"] == 4
    assert not (tmp_path / "v3" / "storage").exists()


def test_load_refuses_rows_of_another_layout(tmp_path):
    make(image=True, max_size=50).dumps(tmp_path / "pixels")
    state_only = make(max_size=50)
    before = _table(state_only)
    with pytest.raises(ValueError, match=r"saved rows hold .* build the buffer with the same observations"):
        state_only.loads(tmp_path / "pixels")
    assert _table(state_only) == before  # nothing was changed


def test_load_refuses_a_damaged_dump(tmp_path):
    buf = make(max_size=50)
    buf.dumps(tmp_path / "c")
    meta_file = tmp_path / "c" / "length_filtered_buffer.json"
    meta = json.loads(meta_file.read_text())
    meta["trajectories"][0]["slots"].append(30)
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="holds 13 rows, its table 14.*damaged"):
        make(max_size=50).loads(tmp_path / "c")


def test_a_loaded_buffer_keeps_its_own_batch_size(tmp_path):
    """TorchRL's loads replaced the batch size given to the constructor by the saved one."""
    make(max_size=50).dumps(tmp_path / "c")
    buf = LengthFilteredReplayBuffer([traj(3)], chunk_size=H, max_size=50, batch_size=5)
    buf.loads(tmp_path / "c")
    assert buf.sample().shape == (5,)


def test_memmap_scratch_files_go_with_the_buffer(tmp_path):
    scratch = tmp_path / "scratch"
    (scratch / "rows_7").mkdir(parents=True)  # left by a killed run
    (scratch / "mine.txt").write_text("not the buffer's")
    buf = make("memmap", tmp_path)
    assert sorted(p.name for p in scratch.iterdir()) == ["mine.txt", "rows_13"]
    del buf
    gc.collect()
    assert [p.name for p in scratch.iterdir()] == ["mine.txt"]


def test_a_forked_worker_does_not_delete_the_scratch_files(tmp_path):
    """A worker forked after the buffer was built (e.g. a ParallelEnv) holds a copy of it."""
    buf = make("memmap", tmp_path)
    pid = os.fork()
    if pid == 0:  # the worker drops its copy
        try:
            buf.replay_buffer.storage._finalizer()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert (tmp_path / "scratch" / "rows_13").is_dir()
    assert (buf.sample()["observation", "state"] >= 100).all()


@pytest.mark.parametrize("bad", [2e5, 0, -3, True, "1000", None])
def test_max_size_must_be_a_whole_number_of_rows(bad):
    with pytest.raises(ValueError, match=r"^max_size must be a whole number of rows >= 1 .*got"):
        make(max_size=bad)
    assert make(max_size=np.int64(40)).max_size == 40


def test_footprint(tmp_path):
    buf = make(max_size=BIG)
    row = buf.row_bytes
    fp = buf.footprint()
    assert (fp.rows, fp.row_bytes, fp.scratch_bytes) == (BIG, row, 0)
    assert 1.5 * BIG * row <= fp.ram_bytes <= 1.5 * BIG * row + 70 * 2**20 + BIG  # growth peak
    assert BIG * row < fp.checkpoint_bytes < BIG * (row + 8) + 2**17
    assert fp.disk_bytes == 3 * fp.checkpoint_bytes  # checkpoint, checkpoint.prev and the one being written
    small = buf.footprint(300)
    assert small.ram_bytes < 2 * (391 + 196) * row + BIG and small.checkpoint_bytes < 300 * (row + 8) + 2**17
    mm = make("memmap", tmp_path, max_size=BIG).footprint()
    assert mm.scratch_bytes == (BIG + BIG // 2) * row  # max_size and the rung it grew from
    assert mm.ram_bytes < 70 * 2**20 + BIG and mm.disk_bytes == 3 * mm.checkpoint_bytes + mm.scratch_bytes
    with pytest.raises(ValueError, match="rows must be in"):
        buf.footprint(BIG + 1)
