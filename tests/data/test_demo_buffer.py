"""LengthFilteredReplayBuffer: admission rules, eviction, chunk targets, persistence."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from _loss_helpers import make_actor_critic
from _trajectories import A, OBS, chunked_traj, traj
from torchrl_chunk.data import LengthFilteredReplayBuffer
from torchrl_chunk.objectives import SelfBCLoss

H = 4



def buffer(mode="filtered", experts=(5, 8), **kw):
    kw.setdefault("max_size", 1000)
    return LengthFilteredReplayBuffer(
        [traj(T, tag=100 * i) for i, T in enumerate(experts)], chunk_size=H, mode=mode, batch_size=16, **kw
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
    assert report.rejected == {"failure": 1} and report.num_rejected == 1  # the tail is not offered
    assert report.incomplete == 1 and report.offered == 3


def test_list_elements_holding_several_trajectories_are_split():
    """Collector rows: each row holds consecutive episodes and a running tail."""
    buf = buffer()
    rows = [torch.cat([traj(3), traj(4), traj(2)[:1]]), torch.cat([traj(9), traj(6, success=False)])]
    report = buf.extend(rows)
    assert report.admitted_lengths == [3, 4]
    assert report.rejected == {"too_long": 1, "failure": 1} and report.incomplete == 1


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
    rows = buf.replay_buffer.storage.get(buf._sampler.live)
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
    buf2 = buffer(experts=(5, 8), length_limit=9)
    traj_c = chunked_traj(steps)
    assert buf2.extend([traj_c]).admitted_lengths == [9]
    rows = buf2.replay_buffer.storage.get(torch.as_tensor(buf2._trajs[-1].slots))
    assert rows["action_is_pad"].tolist() == [[False] * 4, [False] * 4, [False, True, True, True]]
    torch.testing.assert_close(rows["vla_action", "chunk"], traj_c["action"])  # no bounds: as emitted


def small_experts(n=2, scale=0.5):
    demos = [traj(5, tag=0.0) for _ in range(n)]
    for d in demos:
        d["action"] = torch.linspace(-scale, scale, 5 * A).view(5, A)
    return demos


def test_chunks_are_stored_as_emitted_unless_bounds_are_given():
    """Pendulum-like +-2 actions keep their values by default; bounds clip the agent's chunks."""
    raw = LengthFilteredReplayBuffer(small_experts(), chunk_size=H, length_limit=20)
    traj_c = chunked_traj([4, 4, 1])
    raw.extend(traj_c)
    stored = raw.replay_buffer.storage.get(torch.as_tensor(raw._trajs[-1].slots))["vla_action", "chunk"]
    assert stored.abs().max() > 1.0  # the toy chunks are N(0, 9) samples
    torch.testing.assert_close(stored, traj_c["action"])
    bounded = LengthFilteredReplayBuffer(small_experts(), chunk_size=H, length_limit=20, action_bounds=(-2.0, 2.0))
    bounded.extend(traj_c)
    stored = bounded.replay_buffer.storage.get(torch.as_tensor(bounded._trajs[-1].slots))["vla_action", "chunk"]
    torch.testing.assert_close(stored, traj_c["action"].clamp(-2, 2))


def test_action_bounds_from_a_spec_per_dimension_and_bad_demos():
    from torchrl.data import Bounded

    spec = Bounded(low=torch.tensor([-1.0, -3.0]), high=torch.tensor([1.0, 3.0]), shape=(A,))
    buf = LengthFilteredReplayBuffer(small_experts(), chunk_size=H, action_bounds=spec)
    assert buf.action_bounds == ((-1.0, -3.0), (1.0, 3.0))
    with pytest.raises(ValueError, match=r"Expert demo 0 has actions outside action_bounds low=-1.0, high=1.0"):
        LengthFilteredReplayBuffer(small_experts(scale=2.0), chunk_size=H, action_bounds=(-1, 1))
    with pytest.raises(ValueError, match="low < high"):
        LengthFilteredReplayBuffer(small_experts(), chunk_size=H, action_bounds=(1, -1))


def test_sample_feeds_self_bc_loss():
    actor, _ = make_actor_critic()  # obs 5, chunk_size 4, action 2, like this buffer
    buf = buffer()
    out = SelfBCLoss(actor)(buf.sample())
    assert torch.isfinite(out["loss_bc"])


@pytest.mark.parametrize("storage", ["memory", "memmap"])
def test_save_load_round_trip(tmp_path, storage):
    kw = {"storage": storage, "scratch_dir": tmp_path / "scratch"} if storage == "memmap" else {}
    buf = buffer(max_size=30, **kw)
    buf.extend([traj(4, tag=7), traj(2, success=False), traj(6, tag=9)])
    buf.dumps(tmp_path / "ckpt")

    restored = buffer(experts=(2,), max_size=30)  # any seed: loads replaces it
    restored.loads(tmp_path / "ckpt")
    assert restored.trajectory_lengths == buf.trajectory_lengths
    assert restored.length_limit == buf.length_limit
    assert restored.stats == buf.stats
    idx = buf._sampler.live
    assert (restored.replay_buffer.storage.get(idx) == buf.replay_buffer.storage.get(idx)).all()
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
        LengthFilteredReplayBuffer([], chunk_size=H)
    with pytest.raises(ValueError, match="did not succeed"):
        LengthFilteredReplayBuffer([traj(4, success=False)], chunk_size=H)
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
    with pytest.raises(ValueError, match="chunk_size=4"):
        buf.extend([short_chunks])


# -- non-finite values are never stored ---------------------------------------
def _poison(td, key, value, t=1):
    td = td.clone()
    td[key][t] = value
    return td


@pytest.mark.parametrize(
    "make",
    [
        lambda: _poison(traj(3), "action", float("nan")),
        lambda: _poison(traj(3), "action", float("inf")),  # the old buffer clamped it to 1
        lambda: _poison(traj(3), ("observation", "state"), float("-inf")),
        lambda: _poison(chunked_traj([4, 2]), "action", float("nan"), t=0),
        lambda: _poison(chunked_traj([4, 2]), ("observation", "state"), float("nan")),
    ],
)
def test_non_finite_trajectories_are_rejected_and_never_stored(make):
    buf = buffer(length_limit=9)
    report = buf.extend([make(), traj(4, tag=7)])
    assert report.rejected == {"non_finite": 1} and report.admitted_lengths == [4]
    assert buf.stats.rejected == {"non_finite": 1}
    assert buf.trajectory_lengths == [5, 8, 4] and len(buf) == 17
    rows = buf.replay_buffer.storage.get(buf._sampler.live)
    for key in rows.keys(True, True):
        if rows[key].is_floating_point():
            assert torch.isfinite(rows[key]).all(), key
    assert buf.metrics()["buffer/rejected_non_finite"] == 1


def test_non_finite_expert_demo_raises_naming_demo_and_key():
    bad = _poison(traj(6, tag=100), ("observation", "state"), float("nan"))
    with pytest.raises(ValueError, match=r"Expert demo 1 has NaN or inf in \('observation', 'state'\).*drop or repair"):
        LengthFilteredReplayBuffer([traj(5), bad], chunk_size=H)
    with pytest.raises(ValueError, match=r"Expert demo 0 has NaN or inf in 'action'"):
        LengthFilteredReplayBuffer(torch.cat([_poison(traj(4), "action", float("inf")), traj(3)]), chunk_size=H)


def test_expert_demos_that_do_not_fit_raise():
    """The old buffer silently evicted or dropped expert demos that did not fit."""
    with pytest.raises(ValueError, match="need 13 rows.*max_size=12"):
        buffer(experts=(5, 8), max_size=12)
    with pytest.raises(ValueError, match="max_trajectories=1"):
        buffer(experts=(5, 8), max_trajectories=1)


def test_refused_newcomer_evicts_nothing():
    """Stored: an expert of 3 steps (3 rows) and a chunked 8-step trajectory (2 rows); 1 row
    free. A 5-step newcomer needs 5 rows: evicting the 8 frees only 2 and the 3 is shorter
    than it, so it is refused and the 8 stays (the old buffer evicted the 8, then refused)."""
    buf = buffer(mode="unrestricted", experts=(3,), max_size=6)
    assert buf.extend([chunked_traj([4, 4])]).admitted == 1
    report = buf.extend([traj(5)])
    assert report.rejected == {"no_room": 1} and report.evicted == 0
    assert buf.trajectory_lengths == [3, 8] and len(buf) == 5


# -- sampling: the same draws as the original buffer -----------------------------------
# Expected values recorded with the buffer of commit fbef562 (before the reshape): for a
# given generator state and sequence of extends, sample() must return the same rows.
_GOLDEN = [
    (1, 0, [5, 8, 6, 4], [10, 21, 17, 20, 1, 1], [1, 3, 2, 3, 0, 0]),
    (1, 1, [5, 6, 4, 7], [12, 18, 4, 14, 21, 8], [4, 2, 0, 2, 3, 4]),
    (2, 1, [5, 6, 4, 6, 2], [7, 7, 13, 15, 3, 0], [5, 5, 2, 2, 0, 0]),
    (1, 1, [5, 4, 6, 2, 5], [18, 6, 21, 6, 3, 7], [7, 5, 3, 5, 0, 5]),
]


def test_sampling_matches_the_original_buffer_with_evictions():
    buf = LengthFilteredReplayBuffer(
        [traj(5, tag=100), traj(8, tag=200), traj(6, tag=300)], chunk_size=H, max_size=24,
        batch_size=6, generator=torch.Generator().manual_seed(7),
    )
    offers = ([traj(4, tag=400)], [traj(7, tag=500), traj(3, success=False, tag=600)],
              [traj(6, tag=700), traj(2, tag=800)], [traj(5, tag=900)])
    for offer, (admitted, evicted, lengths, index, traj_id) in zip(offers, _GOLDEN):
        report = buf.extend(offer)
        assert (report.admitted, report.evicted, buf.trajectory_lengths) == (admitted, evicted, lengths)
        batch = buf.sample()
        assert batch["index"].tolist() == index and batch["traj_id"].tolist() == traj_id
        assert torch.equal(buf._sampler.live, torch.tensor(sorted(s for t in buf._trajs for s in t.slots)))


# -- persistence ---------------------------------------------------------------------
def test_round_trip_restores_the_sampler_generator(tmp_path):
    buf = LengthFilteredReplayBuffer([traj(5), traj(8)], chunk_size=H, max_size=40, batch_size=8,
                                     generator=torch.Generator().manual_seed(1))
    buf.extend([traj(4, tag=3), traj(9), traj(2, tag=5)[:1]])
    buf.sample()
    buf.dumps(tmp_path / "ckpt")
    expected = [buf.sample() for _ in range(3)]
    restored = LengthFilteredReplayBuffer([traj(2)], chunk_size=H, max_size=40, batch_size=8,
                                          generator=torch.Generator().manual_seed(99))
    restored.loads(tmp_path / "ckpt")
    for want in expected:
        assert (restored.sample() == want).all()
    assert restored.stats == buf.stats and restored.stats.incomplete == 1


def test_loads_a_buffer_saved_by_the_previous_version(tmp_path):
    """tests/data/fixtures/buffer_v1 was written by the buffer of commit fbef562, where an
    incomplete tail counted as a rejection; samples recorded with that version."""
    buf = LengthFilteredReplayBuffer([traj(3)], chunk_size=H, max_size=20, batch_size=4,
                                     generator=torch.Generator().manual_seed(5))
    saved = shutil.copytree(Path(__file__).parent / "fixtures" / "buffer_v1", tmp_path / "v1")
    buf.loads(saved)  # a copy: a memmap storage may write where it loaded from
    assert buf.trajectory_lengths == [5, 4, 7] and len(buf) == 16
    assert buf.stats.rejected == {"failure": 1} and buf.stats.incomplete == 1
    assert [buf.sample()["index"].tolist() for _ in range(2)] == [[3, 15, 16, 14], [7, 7, 0, 10]]
    assert buf.extend([traj(2, tag=600)]).admitted == 1
    assert buf.sample()["index"].tolist() == [6, 10, 1, 12]


def test_loads_refuses_a_newer_format(tmp_path):
    buffer().dumps(tmp_path / "c")
    meta_file = tmp_path / "c" / "length_filtered_buffer.json"
    meta_file.write_text(meta_file.read_text().replace('"version": 4', '"version": 5'))
    with pytest.raises(ValueError, match="newer torchrl_chunk.*upgrade"):
        buffer().loads(tmp_path / "c")


def test_metrics_for_logging():
    buf = buffer()
    buf.extend([traj(3), traj(9), traj(4, success=False), traj(2)[:1]])
    m = buf.metrics()
    assert m["buffer/rows"] == len(buf) == 16 and m["buffer/trajectories"] == 3
    assert m["buffer/admitted"] == 1 and m["buffer/rejected"] == 2 and m["buffer/incomplete"] == 1
    assert m["buffer/rejected_too_long"] == 1 and m["buffer/rejected_failure"] == 1
    assert m["buffer/rejected_no_room"] == 0 and m["buffer/length_limit"] == 8


def test_a_chunked_trajectory_without_step_counts_is_refused_not_measured_as_T_times_h():
    buf = buffer()
    no_counts = chunked_traj([4, 1]).exclude(("next", "steps_executed"))
    with pytest.raises(KeyError, match="steps_executed.*ChunkedEnv"):
        buf.add(no_counts)


def test_an_expert_demo_that_never_moves_is_refused_at_seeding():
    still = traj(6)
    still["action"] = torch.zeros(6, A)
    with pytest.raises(ValueError, match=r"Expert demo 1 never moves \(all its actions are zero"):
        LengthFilteredReplayBuffer([traj(5), still], chunk_size=H)
    frozen = traj(6)
    frozen["observation", "state"] = torch.ones(6, OBS)
    with pytest.raises(ValueError, match="Expert demo 0 never moves .its state never changes"):
        LengthFilteredReplayBuffer([frozen], chunk_size=H)


def test_experts_with_a_flat_observation_tensor_are_checked_too():
    demo = traj(6).exclude("observation")
    demo["observation"] = torch.arange(6.0).unsqueeze(-1)  # e.g. gymnasium's Pendulum: a tensor
    LengthFilteredReplayBuffer([demo], chunk_size=H)
    demo["observation"] = torch.ones(6, 1)
    with pytest.raises(ValueError, match="its state never changes"):
        LengthFilteredReplayBuffer([demo], chunk_size=H)


def test_a_spec_whose_envs_have_different_bounds_is_refused():
    from torchrl.data import Bounded

    spec = Bounded(low=torch.tensor([[-1.0, -1.0], [-2.0, -2.0]]), high=torch.tensor([[1.0, 1.0], [2.0, 2.0]]),
                   shape=(2, A))
    with pytest.raises(ValueError, match="bounds differ between its envs"):
        LengthFilteredReplayBuffer(small_experts(), chunk_size=H, action_bounds=spec)


# -- chunk_size, formerly horizon ---------------------------------------------------------
def test_the_old_horizon_keyword_still_builds_the_buffer_with_a_warning():
    with pytest.warns(DeprecationWarning, match=r"`horizon=` is deprecated, use `chunk_size=`"):
        old = LengthFilteredReplayBuffer([traj(5)], horizon=H)
    assert old.chunk_size == H
    with pytest.raises(TypeError, match=r"both `horizon=`.*`chunk_size=`"):
        LengthFilteredReplayBuffer([traj(5)], horizon=H, chunk_size=H)


def test_the_horizon_attribute_warns_and_is_read_only():
    buf = buffer()
    with pytest.warns(DeprecationWarning, match=r"`\.horizon` is deprecated, use `\.chunk_size`"):
        assert buf.horizon == H == buf.chunk_size
    with pytest.raises(AttributeError):
        buf.horizon = 2


def test_saved_tables_keep_the_horizon_key_and_either_key_loads(tmp_path):
    """Readers of format 4 (torchrl_chunk 0.1) look the chunk size up as "horizon": the dump
    keeps that key; a table naming it "chunk_size" loads too."""
    buf = buffer(max_size=30)
    assert buf.state_dict()["horizon"] == H and "chunk_size" not in buf.state_dict()
    buf.dumps(tmp_path / "c")
    table = tmp_path / "c" / "length_filtered_buffer.json"
    assert '"horizon": 4' in table.read_text()
    table.write_text(table.read_text().replace('"horizon": 4', '"chunk_size": 4'))
    restored = buffer(experts=(2,), max_size=30)
    restored.loads(tmp_path / "c")
    assert restored.trajectory_lengths == buf.trajectory_lengths
    table.write_text(table.read_text().replace('"chunk_size": 4', '"chunk_size": 3'))
    with pytest.raises(ValueError, match="chunk_size=3"):
        buffer(max_size=30).loads(tmp_path / "c")


def test_the_trajectory_helpers_take_the_old_keyword_with_a_warning():
    from torchrl_chunk.data.trajectories import length_and_success

    assert length_and_success(traj(5), chunk_size=H) == (5, True)
    with pytest.warns(DeprecationWarning, match="chunk_size="):
        assert length_and_success(traj(5), horizon=H) == (5, True)
    with pytest.raises(TypeError, match="both"):
        length_and_success(traj(5), H, horizon=H)  # chunk_size by position and horizon=
