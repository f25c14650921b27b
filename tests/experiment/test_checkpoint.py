"""A job checkpoint survives a kill at any point of a save (weights and buffer agree)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from torchrl_chunk.experiment import checkpoint as ckpt_mod
from torchrl_chunk.experiment.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no cleanup handler sees it."""


class TwoFileBuffer:
    """The recipe's buffer contract (dumps/loads a directory), with an iteration marker."""

    def __init__(self, iteration: int = -1):
        self.iteration = iteration

    def dumps(self, path):
        path = Path(path)
        path.mkdir(parents=True)
        for name in ("a.txt", "b.txt"):
            _ops.tick()  # a kill may land between the two files
            (path / name).write_text(str(self.iteration))

    def loads(self, path):
        a, b = ((Path(path) / n).read_text() for n in ("a.txt", "b.txt"))
        assert a == b, "torn buffer"
        self.iteration = int(a)


class _Ops:
    """Counts file-system steps of a save and raises Killed at step ``kill_at``."""

    def __init__(self):
        self.kill_at, self.count = None, 0

    def tick(self):
        self.count += 1
        if self.kill_at is not None and self.count == self.kill_at:
            raise Killed


_ops = _Ops()


@pytest.fixture
def interruptible(monkeypatch):
    real_replace, real_rmtree = os.replace, shutil.rmtree

    def replace(*a, **k):
        _ops.tick()
        return real_replace(*a, **k)

    def rmtree(path, *a, **k):
        _ops.tick()
        files = sorted(p for p in Path(path).rglob("*") if p.is_file())
        if files:  # delete one file, then maybe die half-way through the tree
            files[0].unlink()
            _ops.tick()
        return real_rmtree(path, *a, **k)

    monkeypatch.setattr(ckpt_mod.os, "replace", replace)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    _ops.kill_at, _ops.count = None, 0
    yield _ops
    _ops.kill_at = None


def _save(job_dir, iteration):
    actor = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(actor.weight, float(iteration))
    save_checkpoint(job_dir, {"iteration": iteration}, {"actor": actor}, TwoFileBuffer(iteration))


def _load(job_dir):
    actor, buffer = torch.nn.Linear(2, 2), TwoFileBuffer()
    payload = load_checkpoint(job_dir, {"actor": actor}, buffer)
    assert payload is not None
    assert payload["iteration"] == buffer.iteration == int(actor.weight[0, 0])  # one iteration
    return payload["iteration"]


def _killed_save(job, ops, kill_at):
    """A job with checkpoints of iterations 0 and 1 (kept as checkpoint.prev) whose save of
    iteration 2 dies at step ``kill_at``."""
    job.mkdir()
    _save(job, 0)
    _save(job, 1)
    ops.count, ops.kill_at = 0, kill_at
    with pytest.raises(Killed):
        _save(job, 2)
    ops.kill_at = None


def test_save_steps_are_counted(tmp_path, interruptible):
    _save(tmp_path, 0)
    _save(tmp_path, 1)
    interruptible.count = 0
    _save(tmp_path, 2)
    assert interruptible.count >= 7  # buffer files, renames, the deletion of the oldest one
    assert _load(tmp_path) == 2


def test_kill_at_every_step_of_a_save_leaves_a_consistent_checkpoint(tmp_path, interruptible):
    (tmp_path / "probe").mkdir()
    _save(tmp_path / "probe", 0)
    _save(tmp_path / "probe", 1)
    interruptible.count = 0
    _save(tmp_path / "probe", 2)
    steps = interruptible.count
    seen = set()
    for kill_at in range(1, steps + 1):
        job = tmp_path / f"kill{kill_at}"
        _killed_save(job, interruptible, kill_at)
        got = _load(job)  # never torn, never lost
        assert got in (1, 2)
        seen.add(got)
        _save(job, 3)  # the next save after a kill works (CI once failed exactly here)
        assert _load(job) == 3
        assert sorted(p.name for p in job.iterdir()) == ["checkpoint", "checkpoint.prev"]
    assert seen == {1, 2}  # both sides of the commit point were exercised


def test_first_save_killed_leaves_no_checkpoint(tmp_path, interruptible):
    interruptible.kill_at = 2
    with pytest.raises(Killed):
        _save(tmp_path, 1)
    interruptible.kill_at = None
    assert load_checkpoint(tmp_path, {"actor": torch.nn.Linear(2, 2)}, TwoFileBuffer()) is None


def test_missing_buffer_is_an_error_not_a_silent_restart(tmp_path):
    _save(tmp_path, 1)
    shutil.rmtree(tmp_path / "checkpoint" / "buffer")
    with pytest.raises(CheckpointError, match="damaged: .*buffer.a.txt is missing; no good earlier"):
        load_checkpoint(tmp_path, {"actor": torch.nn.Linear(2, 2)}, TwoFileBuffer())


def test_kill_during_recovery_is_recovered_next_time(tmp_path, interruptible):
    """The recovery on the next start moves and deletes directories too: kill it as well."""
    for kill_save in (3, 4, 5, 6, 7):  # between the renames, before and during the rotation
        for kill_recover in (1, 2, 3):
            job = tmp_path / f"s{kill_save}r{kill_recover}"
            _killed_save(job, interruptible, kill_save)
            interruptible.count, interruptible.kill_at = 0, kill_recover
            try:
                _load(job)
            except Killed:
                pass
            interruptible.kill_at = None
            assert _load(job) in (1, 2)
            _save(job, 3)
            assert _load(job) == 3


def test_a_damaged_checkpoint_is_never_loaded_the_one_before_is(tmp_path):
    """A truncated or altered file (e.g. a demo-buffer row file) is caught by the manifest; the
    damaged checkpoint is set aside, so the next save cannot rotate away the good one."""
    _save(tmp_path, 1)
    _save(tmp_path, 2)
    (tmp_path / "checkpoint" / "buffer" / "a.txt").write_text("")  # truncated
    with pytest.warns(UserWarning, match="a.txt has 0 bytes, the checkpoint wrote 1.*resuming from the one before"):
        assert _load(tmp_path) == 1
    assert (tmp_path / "checkpoint.damaged" / "buffer" / "a.txt").read_text() == ""  # kept for a look
    assert not (tmp_path / "checkpoint.prev").exists()
    _save(tmp_path, 3)  # the run goes on from 1: the next save keeps 1 as checkpoint.prev
    assert _load(tmp_path) == 3
    (tmp_path / "checkpoint" / "buffer" / "a.txt").write_text("")
    (tmp_path / "checkpoint.prev" / "buffer" / "b.txt").write_text("7")  # same size, altered
    with pytest.raises(CheckpointError, match="damaged: .*a.txt has 0 bytes.*no good earlier checkpoint"):
        _load(tmp_path)
    assert (tmp_path / "checkpoint" / "buffer" / "a.txt").exists()  # refused, not deleted


def test_a_kill_while_a_damaged_checkpoint_is_set_aside_resumes_from_the_good_one(tmp_path):
    _save(tmp_path, 1)
    _save(tmp_path, 2)
    os.replace(tmp_path / "checkpoint", tmp_path / "checkpoint.damaged")  # killed between the two renames
    assert _load(tmp_path) == 1


def test_foreign_or_old_layout_checkpoints_are_refused_not_overwritten(tmp_path):
    (tmp_path / "a" / "checkpoint").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="has no state.pt"):
        load_checkpoint(tmp_path / "a", {"actor": torch.nn.Linear(2, 2)}, None)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "checkpoint.pt").write_bytes(b"old")
    with pytest.raises(CheckpointError, match="layout of an earlier version"):
        load_checkpoint(tmp_path / "b", {"actor": torch.nn.Linear(2, 2)}, None)
    assert (tmp_path / "b" / "checkpoint.pt").read_bytes() == b"old"


# -- check before training that RAM and disk can hold the job ---------------------
def test_check_capacity_names_the_shortfall_and_the_fix(tmp_path, monkeypatch):
    from torchrl_chunk.experiment.checkpoint import CapacityError, check_capacity

    GB = 10**9
    monkeypatch.setattr(ckpt_mod, "_mem_available", lambda: 3 * GB)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100 * GB, 95 * GB, 5 * GB))
    check_capacity(2 * GB, 4 * GB, tmp_path / "not" / "yet")  # a job directory not created yet
    with pytest.raises(CapacityError, match=r"^4.00 GB of RAM needed, 3.00 GB available \(MemAvailable\): "
                       r"lower buffer.max_size or use buffer.storage=memmap.$"):
        check_capacity(4 * GB, 0, tmp_path)
    with pytest.raises(CapacityError, match=r"^6.00 GB of disk needed under .*job, 5.00 GB free: free disk "
                       r"space there, use another run directory or lower buffer.max_size.$"):
        check_capacity(0, 6 * GB, tmp_path / "job")


def test_check_capacity_reads_this_machine(tmp_path, monkeypatch):
    from torchrl_chunk.experiment.checkpoint import CapacityError, check_capacity

    available = ckpt_mod._mem_available()
    assert available is None or available > 0
    check_capacity(0, 0, tmp_path)
    with pytest.raises(CapacityError, match="of disk needed"):
        check_capacity(0, shutil.disk_usage(tmp_path).free + 10**12, tmp_path)
    monkeypatch.setattr(ckpt_mod, "Path", lambda p: Path(tmp_path / "no_meminfo") if p == "/proc/meminfo" else Path(p))
    assert ckpt_mod._mem_available() is None  # no /proc/meminfo: the RAM check is skipped
    check_capacity(10**15, 0, tmp_path)
