"""Scripted-expert demonstrations: format, reproducibility, save/load."""

from __future__ import annotations

import pytest
import torch

from _gl import requires_gl

from torchrl_chunk.envs import ExpertDemos, collect_expert_demos, load_demos, save_demos
from torchrl_chunk.envs.demos import ExpertDemoError, scripted_policy

REACH = "reach-v3"


@pytest.fixture(scope="module")
def demos() -> ExpertDemos:
    return collect_expert_demos(REACH, 3, seed=11)


def test_format(demos):
    assert len(demos) == 3 and demos.task == REACH and demos.seed == 11
    assert demos.num_tries == 3 and demos.success_rate == 1.0  # reach's expert never fails
    for td, T in zip(demos.trajectories, demos.lengths):
        assert td.batch_size == (T,) and 1 < T <= 200
        assert td["observation", "state"].shape == (T, 39)
        assert td["observation", "state"].dtype == torch.float32
        assert td["observation", "task_id"].shape == (T, 1)
        assert (td["observation", "task_id"] == 0).all()
        assert td["action"].dtype == torch.float32 and td["action"].shape == (T, 4)
        assert td["action"].abs().max() <= 1.0
        for key in ("done", "terminated", "success"):
            flag = td["next", key]
            assert flag.dtype == torch.bool and flag.shape == (T, 1)
            assert flag[-1].item() and not flag[:-1].any()
        assert not td["next", "truncated"].any()
        assert td["next", "reward"].dtype == torch.float32 and td["next", "reward"].sum() == 1.0
        # next observation of step t is the observation of step t + 1
        assert torch.equal(td["next", "observation", "state"][:-1], td["observation", "state"][1:])
    flat = demos.cat()
    assert flat.batch_size == (sum(demos.lengths),)
    assert flat["next", "done"].sum() == 3


def test_reproducible_and_seed_dependent(demos):
    again = collect_expert_demos(REACH, 3, seed=11)
    assert again.lengths == demos.lengths
    assert all(torch.equal(a["action"], b["action"]) for a, b in zip(again.trajectories, demos.trajectories))
    other = collect_expert_demos(REACH, 1, seed=12)
    assert not torch.equal(other.trajectories[0]["observation", "state"][0], demos.trajectories[0]["observation", "state"][0])


def test_save_load_roundtrip(demos, tmp_path):
    path = save_demos(demos, tmp_path / "sub" / "reach.pt")
    loaded = load_demos(path)
    assert loaded.lengths == demos.lengths and loaded.num_tries == demos.num_tries
    assert loaded.task == REACH and loaded.seed == 11 and loaded.image_size is None
    for a, b in zip(loaded.trajectories, demos.trajectories):
        assert (a == b).all()
        assert set(a.keys(True, True)) == set(b.keys(True, True))
    assert ExpertDemos.load(demos.save(tmp_path / "m.pt")).lengths == demos.lengths


def test_concurrent_writers_of_one_cache_file_do_not_collide(demos, tmp_path):
    """Jobs of several algorithms may save the same demos at once (launcher=ray): each writes
    its own temporary file (a fixed ``<name>.tmp`` was shared, and is here in the way)."""
    path = tmp_path / "reach.pt"
    (tmp_path / "reach.pt.tmp").mkdir()  # another writer's temporary file, as a fixed name had it
    save_demos(demos, path)
    assert load_demos(path).lengths == demos.lengths
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reach.pt", "reach.pt.tmp"]  # nothing left over


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="collect_expert_demos"):
        load_demos(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="corrupt"):
        load_demos(bad)
    other = tmp_path / "other.pt"
    torch.save({"a": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="not an expert demo file"):
        load_demos(other)


def test_bad_task_and_tries():
    with pytest.raises(ValueError, match="Did you mean 'reach-v3'"):
        collect_expert_demos("reach-v2", 1, seed=0)
    with pytest.raises(RuntimeError, match="only 0 of 1 episodes succeeded in 2 tries"):
        collect_expert_demos(REACH, 1, seed=0, max_steps=3, max_tries=2)
    with pytest.raises(ValueError, match=r"max_tries \(2\) must be >= num_demos \(3\)"):
        collect_expert_demos(REACH, 3, seed=0, max_tries=2)


def test_attempts_count_failures_and_only_successes_are_kept(monkeypatch):
    """A policy that fails every other episode: 3 demos take exactly 5 attempts."""
    import numpy as np

    from torchrl_chunk.envs.metaworld import simulator

    expert, attempt, calls = scripted_policy(REACH), [0], []
    reset_fresh = simulator.TaskSim.reset_fresh

    def counting_reset(self):
        attempt[0] += 1
        return reset_fresh(self)

    def flaky(state):  # the expert on odd attempts, a motionless arm (never a success) on even ones
        calls.append(attempt[0])
        return expert(state) if attempt[0] % 2 == 1 else np.zeros(4)

    monkeypatch.setattr(simulator.TaskSim, "reset_fresh", counting_reset)
    demos = collect_expert_demos(REACH, 3, seed=5, max_steps=60, policy=flaky)
    assert attempt[0] == 5 and demos.num_tries == 5 and len(demos) == 3
    assert demos.success_rate == pytest.approx(0.6)
    assert all(td["next", "success"][-1].item() for td in demos.trajectories)  # failures were dropped
    assert calls.count(2) == calls.count(4) == 60  # the two failed attempts ran to the 60-step cap
    assert [calls.count(k) for k in (1, 3, 5)] == demos.lengths  # the kept ones are the odd attempts
    assert demos.summary().startswith("reach-v3: 3 expert demos in 5 attempts (2 failed), lengths ")


def test_a_task_whose_expert_cannot_give_enough_demos_is_refused():
    """A stand-in expert that never succeeds: refused with the counts, as soon as
    ``num_demos`` successes are out of reach within ``max_tries``."""
    import numpy as np

    calls = []

    def never(state):
        calls.append(1)
        return np.zeros(4)  # the arm stays put, the goal is >= 0.15 m away: never a success

    with pytest.raises(ExpertDemoError) as err:
        collect_expert_demos(REACH, 10, seed=0, max_steps=4, max_tries=13, policy=never)
    e = err.value
    assert isinstance(e, RuntimeError) and (e.task, e.successes, e.num_demos, e.tries) == (REACH, 0, 10, 4)
    assert len(calls) == 4 * 4  # stopped after 4 attempts: 10 successes need 10 of the 9 left
    msg = str(e)
    assert "\n" not in msg and "only 0 of 10 episodes succeeded in 4 tries" in msg
    assert "cannot give 10 demos" in msg and "leave reach-v3 out of the tasks" in msg


def test_scripted_policy_of_an_mt50_task():
    """A task beyond MT10 (cheap one): its own expert, its global task id."""
    demos = collect_expert_demos("handle-press-v3", 2, seed=3)
    assert len(demos) == 2 and demos.task == "handle-press-v3"
    for td in demos.trajectories:
        assert (td["observation", "task_id"] == 30).all()  # ALL_V3_TASKS.index("handle-press-v3")
        assert td["next", "success"][-1].item() and td.batch_size[0] < 200
    with pytest.raises(ValueError, match="Did you mean 'handle-press-v3'"):
        scripted_policy("handle-press")


@requires_gl
def test_pixel_demo():
    demos = collect_expert_demos(REACH, 1, seed=3, from_pixels=True, image_size=32)
    td = demos.trajectories[0]
    T = demos.lengths[0]
    assert td["observation", "image"].shape == (T, 32, 32, 3)
    assert td["observation", "image"].dtype == torch.uint8
    assert td["next", "observation", "image"].shape == (T, 32, 32, 3)
    assert torch.equal(td["next", "observation", "image"][:-1], td["observation", "image"][1:])
    assert demos.image_size == 32
