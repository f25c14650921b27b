"""LengthFilteredReplayBuffer: admission rules, eviction, chunk targets, persistence."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from _loss_helpers import make_actor_critic
from torchrl_chunk.data import LengthFilteredReplayBuffer
from torchrl_chunk.objectives import SelfBCLoss

H, A, OBS = 4, 2, 5


def traj(T, success=True, tag=0.0):
    """A per-step trajectory; action[t] = tag + t/100 so rows can be traced back."""
    t = torch.arange(T, dtype=torch.float32)
    td = TensorDict(
        {
            ("observation", "state"): (tag + t).unsqueeze(-1).expand(T, OBS).clone(),
            "action": (tag + t / 100).unsqueeze(-1).expand(T, A).clone(),
            ("next", "done"): torch.zeros(T, 1, dtype=torch.bool),
            ("next", "success"): torch.zeros(T, 1, dtype=torch.bool),
        },
        [T],
    )
    td["next", "done"][-1] = True
    td["next", "success"][-1] = success
    return td


def chunked_traj(steps, success=True):
    """A trajectory from ChunkedEnv: one row per decision, chunks [T, H, A]."""
    T = len(steps)
    td = TensorDict(
        {
            ("observation", "state"): torch.randn(T, OBS),
            "action": torch.randn(T, H, A) * 3,  # raw Gaussian samples, partly out of bounds
            ("next", "steps_executed"): torch.tensor(steps).view(T, 1),
            ("next", "done"): torch.zeros(T, 1, dtype=torch.bool),
            ("next", "success"): torch.zeros(T, 1, dtype=torch.bool),
        },
        [T],
    )
    td["next", "done"][-1] = True
    td["next", "success"][-1] = success
    return td


def buffer(mode="filtered", experts=(5, 8), **kw):
    kw.setdefault("max_size", 1000)
    return LengthFilteredReplayBuffer(
        [traj(T, tag=100 * i) for i, T in enumerate(experts)], horizon=H, mode=mode, batch_size=16, **kw
    )


def test_length_limit_defaults_to_longest_expert():
    buf = buffer(experts=(5, 8, 6))
    assert buf.length_limit == 8
    assert buf.num_trajectories == 3 == buf.num_expert_trajectories
    assert len(buf) == 5 + 8 + 6
    assert buffer(length_limit=3).length_limit == 3


def test_filtered_mode_admission():
    buf = buffer()
    report = buf.extend([traj(8), traj(9), traj(4, success=False), traj(3)])
    assert report.admitted == 2  # 8 (at the limit) and 3
    assert report.rejected == {"too_long": 1, "failure": 1}
    assert report.admitted_lengths == [8, 3]
    assert buf.trajectory_lengths == [5, 8, 8, 3]
    buf.extend([traj(20)])
    assert buf.stats.admitted == 2 and buf.stats.rejected == {"too_long": 2, "failure": 1}


def test_static_mode_never_updates():
    buf = buffer(mode="static")
    report = buf.extend([traj(3), traj(4, success=False)])
    assert report.admitted == 0 and report.rejected == {"static": 2}
    assert buf.trajectory_lengths == [5, 8]


def test_unrestricted_mode_admits_every_success():
    buf = buffer(mode="unrestricted")
    report = buf.extend([traj(50), traj(4, success=False)])
    assert report.admitted == 1 and report.rejected == {"failure": 1}
    assert 50 in buf.trajectory_lengths


def test_flat_batch_is_split_on_done_and_incomplete_tail_is_counted():
    buf = buffer()
    flat = torch.cat([traj(3), traj(6, success=False), traj(4), traj(5)[:2]])
    report = buf.extend(flat)
    assert report.admitted == 2
    assert report.rejected == {"failure": 1, "incomplete": 1}


def test_list_elements_holding_several_trajectories_are_split():
    """Collector rows: each row holds consecutive episodes and a running tail."""
    buf = buffer()
    rows = [torch.cat([traj(3), traj(4), traj(2)[:1]]), torch.cat([traj(9), traj(6, success=False)])]
    report = buf.extend(rows)
    assert report.admitted_lengths == [3, 4]
    assert report.rejected == {"incomplete": 1, "too_long": 1, "failure": 1}


def test_eviction_removes_longest_first_not_oldest():
    buf = buffer(experts=(5, 8, 6), max_size=19)  # full
    report = buf.extend([traj(4)])
    assert report.evicted == 1 and buf.trajectory_lengths == [5, 6, 4]
    buf.extend([traj(6)])  # needs 6 rows, 4 free: evicts one 6 (the oldest of the two 6s)
    assert buf.trajectory_lengths == [5, 4, 6]
    report = buf.extend([traj(7)])  # longer than everything stored: refused, nothing evicted
    assert report.rejected == {"no_room": 1} and report.evicted == 0
    assert len(buf) == 15
    # sampling never returns rows of evicted trajectories
    alive = {t.traj_id for t in buf._trajs}
    for _ in range(20):
        assert set(buf.sample()["traj_id"].tolist()) <= alive


def test_max_trajectories():
    buf = buffer(experts=(5, 8), max_trajectories=2)
    buf.extend([traj(3)])
    assert buf.trajectory_lengths == [5, 3]


def test_chunk_targets_at_trajectory_end_never_cross_trajectories():
    buf = buffer(experts=(3, 6), action_bounds=None)
    rows = buf._storage.get(torch.as_tensor(buf._sampler.live))
    for row in rows.unbind(0):
        tag = 100 * int(row["traj_id"])
        t0 = int(row["observation", "state"][0]) - tag
        T = 3 if row["traj_id"] == 0 else 6
        chunk, pad = row["vla_action", "chunk"][:, 0], row["action_is_pad"]
        for j in range(H):
            real = t0 + j < T
            assert bool(pad[j]) is (not real)
            expected = tag + min(t0 + j, T - 1) / 100  # padding repeats the last action
            assert chunk[j].item() == pytest.approx(expected)


def test_chunked_trajectory_rows():
    steps = [4, 4, 1]  # 9 env steps: over the default limit (8), within an explicit 9
    assert buffer().extend([chunked_traj(steps)]).rejected == {"too_long": 1}
    buf2 = buffer(length_limit=9)
    traj_c = chunked_traj(steps)
    assert buf2.extend([traj_c]).admitted_lengths == [9]
    rows = buf2._storage.get(torch.as_tensor(buf2._trajs[-1].slots))
    assert rows["action_is_pad"].tolist() == [[False] * 4, [False] * 4, [False, True, True, True]]
    assert rows["vla_action", "chunk"].abs().max() <= 1.0  # clipped to the action bounds
    torch.testing.assert_close(rows["vla_action", "chunk"], traj_c["action"].clamp(-1, 1))


def test_sample_feeds_self_bc_loss():
    actor, _ = make_actor_critic()  # obs 5, horizon 4, action 2, like this buffer
    buf = buffer()
    out = SelfBCLoss(actor)(buf.sample())
    assert torch.isfinite(out["loss_bc"])


@pytest.mark.parametrize("storage", ["memory", "memmap"])
def test_save_load_round_trip(tmp_path, storage):
    kw = {"storage": storage, "scratch_dir": tmp_path / "scratch"} if storage == "memmap" else {}
    buf = buffer(max_size=30, **kw)
    buf.extend([traj(4, tag=7), traj(2, success=False), traj(6, tag=9)])
    buf.dumps(tmp_path / "ckpt")

    restored = buffer(experts=(1,), max_size=30)
    restored.loads(tmp_path / "ckpt")
    assert restored.trajectory_lengths == buf.trajectory_lengths
    assert restored.length_limit == buf.length_limit
    assert restored.stats == buf.stats
    idx = torch.as_tensor(buf._sampler.live)
    assert (restored._storage.get(idx) == buf._storage.get(idx)).all()
    # both continue identically
    a, b = buf.extend([traj(3, tag=11)]), restored.extend([traj(3, tag=11)])
    assert a == b and restored.trajectory_lengths == buf.trajectory_lengths


def test_load_errors(tmp_path):
    buf = buffer()
    with pytest.raises(FileNotFoundError, match="not a saved"):
        buf.loads(tmp_path)
    buf.dumps(tmp_path / "c")
    (tmp_path / "c" / "length_filtered_buffer.json").write_text("{broken")
    with pytest.raises(ValueError, match="corrupt"):
        buffer().loads(tmp_path / "c")
    buffer().dumps(tmp_path / "d")
    with pytest.raises(ValueError, match="same"):
        buffer(max_size=50).loads(tmp_path / "d")


def test_bad_input():
    with pytest.raises(ValueError, match="at least one expert"):
        LengthFilteredReplayBuffer([], horizon=H)
    with pytest.raises(ValueError, match="did not succeed"):
        LengthFilteredReplayBuffer([traj(4, success=False)], horizon=H)
    buf = buffer()
    with pytest.raises(ValueError, match="empty trajectory"):
        buf.extend([traj(3)[:0]])
    with pytest.raises(KeyError, match="success"):
        buf.extend([traj(3).exclude(("next", "success"))])
    bad = traj(3)
    bad["action"] = torch.zeros(3, 2, 2, 2)
    with pytest.raises(ValueError, match="action"):
        buf.extend([bad])
    with pytest.raises(ValueError, match="mode"):
        buffer(mode="fifo")
    short_chunks = chunked_traj([3])
    short_chunks["action"] = torch.zeros(1, 3, A)
    with pytest.raises(ValueError, match="horizon=4"):
        buf.extend([short_chunks])
