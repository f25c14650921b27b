"""Scripted-expert demonstrations: format, reproducibility, save/load."""

from __future__ import annotations

import re

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


# ----------------------------------------------------------------------------------------
# A demo file says what it holds and is checked on load
# ----------------------------------------------------------------------------------------
def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_a_file_of_other_demos_is_refused_naming_both(demos, tmp_path):
    """A valid push-v3 file under reach-v3's cache name was used for reach without a word."""
    from torchrl_chunk.envs.demos import DemoFileError

    path = save_demos(collect_expert_demos("push-v3", 1, seed=11), tmp_path / "reach-v3_n3_seed11_T200.pt")
    expect = dict(task=REACH, seed=11, num=3, max_steps=200, from_pixels=False, image_size=128)
    with pytest.raises(DemoFileError) as err:
        load_demos(path, **expect)
    msg = _one_line(err)
    assert f"{str(path)!r} does not hold the demos expected: task 'push-v3' (expected 'reach-v3'), 1 demos " \
           "(expected 3); " in msg
    assert msg.endswith("delete it to collect these demos again, or load the file that holds them.")
    assert isinstance(err.value, ValueError)  # the recipe's jobs stop on it with one line
    assert load_demos(path).task == "push-v3"  # no expectations: loaded as it is

    own = save_demos(demos, tmp_path / "reach.pt")
    assert load_demos(own, **expect).lengths == demos.lengths  # what it says it holds: loaded
    for kw, differs in [
        (dict(seed=12), "seed 11 (expected 12)"),
        (dict(max_steps=150), "max_steps 200 (expected 150)"),
        (dict(from_pixels=True, image_size=64), "state-only demos (expected 64 px image demos)"),
        (dict(task=1), "task 'reach-v3' (expected 'push-v3')"),  # a task index is a task too
    ]:
        with pytest.raises(DemoFileError, match="does not hold the demos expected: " + re.escape(differs) + ";"):
            load_demos(own, **{**expect, **kw})


def test_a_file_whose_task_ids_are_another_tasks_is_refused(tmp_path):
    from torchrl_chunk.envs.demos import DemoFileError

    push = collect_expert_demos("push-v3", 1, seed=11)
    push.task = REACH  # says reach-v3, holds push-v3's demos
    path = save_demos(push, tmp_path / "reach.pt")
    with pytest.raises(DemoFileError, match=r"demo 0 with task_id 1 \(push-v3\), not reach-v3's 0"):
        load_demos(path, task=REACH)


def _tampered(demos, i, **entries) -> ExpertDemos:
    trajectories = [td.clone() for td in demos.trajectories]
    for key, fill in entries.items():
        key = tuple(key.split("__")) if "__" in key else key
        trajectories[i].set(key, fill(trajectories[i].get(key)))
    return ExpertDemos(task=demos.task, seed=demos.seed, trajectories=trajectories, num_tries=demos.num_tries,
                       attempts=demos.attempts)


def test_demos_that_never_move_are_refused(demos, tmp_path):
    """Zero actions marked successful were admitted and cloned (the policy learns to stand still)."""
    from torchrl_chunk.envs.demos import DemoFileError

    still = _tampered(demos, 1, action=torch.zeros_like)
    path = save_demos(still, tmp_path / "still.pt")
    with pytest.raises(DemoFileError) as err:
        load_demos(path)
    assert _one_line(err) == (
        f"{str(path)!r}: expert demo 1 of reach-v3 never moves (all its actions are zero (|a| <= 0.0001)) although "
        "it is marked successful, and cloning it teaches the policy to stand still; delete the file to collect "
        "the demos again, or drop that demo.")

    first = demos.trajectories[0]["observation", "state"][:1]

    def frozen(state):  # every state, the next ones too, is the first one
        return first.expand_as(state).clone()

    path = save_demos(_tampered(demos, 0, observation__state=frozen, next__observation__state=frozen),
                      tmp_path / "frozen.pt")
    with pytest.raises(DemoFileError, match=r"expert demo 0 of reach-v3 never moves \(its state never changes "
                                            r"\(by more than 1e-06\)\)"):
        load_demos(path)


def test_replay_refuses_demos_that_do_not_reach_success(demos, tmp_path):
    from torchrl_chunk.envs.demos import DemoFileError, replay_demos

    assert demos.attempts == [0, 1, 2]
    path = save_demos(demos, tmp_path / "reach.pt")
    assert load_demos(path, replay=True).attempts == [0, 1, 2]  # the scripted demos pass
    wrong = save_demos(_tampered(demos, 2, action=lambda a: -a), tmp_path / "wrong.pt")  # moves, but away
    load_demos(wrong)  # not replayed: loaded
    with pytest.raises(DemoFileError) as err:
        load_demos(wrong, replay=True)
    T = demos.lengths[2]
    assert _one_line(err) == (
        f"{str(wrong)!r}: expert demo 2 of reach-v3 does not reach success when its {T} actions are replayed from "
        "its configuration (attempt 2 of seed 11); the file is stale (collected by other code or another "
        "MetaWorld) or not what it says; delete it to collect the demos again.")
    assert replay_demos(demos) is True


def test_replay_follows_the_attempts_failures_included(monkeypatch):
    """Failed attempts draw configurations too: the demos of attempts 1, 3, 5 replay from theirs."""
    import numpy as np

    from torchrl_chunk.envs.demos import replay_demos
    from torchrl_chunk.envs.metaworld import simulator

    expert, attempt = scripted_policy(REACH), [0]
    reset_fresh = simulator.TaskSim.reset_fresh

    def counting_reset(self):
        attempt[0] += 1
        return reset_fresh(self)

    with monkeypatch.context() as m:
        m.setattr(simulator.TaskSim, "reset_fresh", counting_reset)
        demos = collect_expert_demos(REACH, 3, seed=5, max_steps=60,
                                     policy=lambda s: expert(s) if attempt[0] % 2 == 1 else np.zeros(4))
    assert demos.attempts == [0, 2, 4] and demos.num_tries == 5
    assert replay_demos(demos) is True
    shifted = ExpertDemos(task=REACH, seed=5, trajectories=demos.trajectories, num_tries=5, max_steps=60,
                          attempts=[1, 2, 4])  # demo 0 replayed from another configuration
    with pytest.raises(ValueError, match="expert demo 0 of reach-v3 does not reach success"):
        replay_demos(shifted)
    # attempts unknown (demos from elsewhere, older files with failed attempts): not replayed
    unknown = ExpertDemos(task=REACH, seed=5, trajectories=demos.trajectories, num_tries=3, max_steps=60)
    assert replay_demos(unknown) is False


def test_a_file_from_before_attempts_were_recorded_is_checked_and_replayed(demos, tmp_path):
    """Old cache files record task, seed, count, cap and kind (all checked); with no failed attempt
    demo i was attempt i, and they are replayed; with failed ones they are accepted unreplayed."""
    from torchrl_chunk.envs.demos import DemoFileError

    def old(d, name):
        path = save_demos(d, tmp_path / name)
        payload = torch.load(path, weights_only=True)
        del payload["attempts"]  # as save_demos wrote it before
        torch.save(payload, path)
        return path

    loaded = load_demos(old(demos, "old.pt"), task=REACH, seed=11, num=3, max_steps=200, from_pixels=False,
                        replay=True)
    assert loaded.attempts == [0, 1, 2] and loaded.num_tries == 3
    with pytest.raises(DemoFileError, match="expert demo 2 of reach-v3 does not reach success"):
        load_demos(old(_tampered(demos, 2, action=lambda a: -a), "wrong.pt"), replay=True)
    failed_once = _tampered(demos, 0)
    failed_once.num_tries = 4
    assert load_demos(old(failed_once, "failed.pt"), replay=True).attempts is None  # configurations unknown


def test_the_recipe_passes_its_expectations_to_the_cache(demos, tmp_path, monkeypatch):
    """recipes/mt10_utils.expert_demos: a push-v3 file under reach-v3's cache name stops the job with one
    line naming the file; the cache of these demos is loaded (and replayed); a motionless demo from
    demos.path stops it too."""
    from pathlib import Path

    from omegaconf import OmegaConf

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "recipes"))
    import mt10_utils

    from torchrl_chunk.envs.demos import DemoFileError
    from torchrl_chunk.experiment import JobError

    cfg = OmegaConf.create({"seed": 11, "demos": {"source": "scripted", "seed": None, "cache_dir": str(tmp_path)},
                            "env": {"max_steps": 200, "from_pixels": False, "image_size": 128}})
    cache = tmp_path / "reach-v3_n3_seed11_T200.pt"
    save_demos(collect_expert_demos("push-v3", 3, seed=11), cache)
    with pytest.raises(DemoFileError, match=re.escape(f"{str(cache)!r} does not hold the demos expected: task "
                                                      "'push-v3' (expected 'reach-v3');")):
        mt10_utils.expert_demos(cfg, REACH, 3)
    save_demos(demos, cache)
    assert mt10_utils.expert_demos(cfg, REACH, 3).lengths == demos.lengths

    still = _tampered(demos, 0, action=torch.zeros_like)
    still.metadata = {"source": "lerobot", "path": "/data/reach"}
    monkeypatch.setattr(mt10_utils, "demos_from_path", lambda cfg, task, num: still)
    with pytest.raises(JobError) as err:
        mt10_utils.expert_demos(OmegaConf.merge(cfg, {"demos": {"source": "lerobot"}}), REACH, 3)
    assert str(err.value).startswith("error: reach-v3: demos.source=lerobot demos.path=/data/reach: expert demo 0 "
                                     "of reach-v3 never moves (all its actions are zero")
    assert str(err.value).endswith("; drop it from the demonstrations or record it again.")
