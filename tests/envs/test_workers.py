"""WorkerPoolEnv: N envs over W processes give the numbers of one process; errors come back."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from torchrl.collectors import Collector

from _gl import requires_gl
from _ray import reach_controller

from torchrl_chunk.envs import NonFiniteActionError, WorkerError, WorkerPoolEnv, make_metaworld_env, split_envs
from torchrl_chunk.evaluation import evaluate_policy

REACH = "reach-v3"


def _collect(env, batches: int = 2, decisions: int = 30):
    """Batches of a TorchRL collector with a policy that succeeds mid-chunk (partial resets)."""
    collector = Collector(env, reach_controller(), frames_per_batch=env.batch_size[0] * decisions, total_frames=-1,
                          auto_register_policy_transforms=False)
    collector.set_seed(3)
    out = []
    for data in collector:
        out.append(data)
        if len(out) == batches:
            break
    collector.shutdown()
    return out


def test_split_envs():
    assert split_envs(5, 2) == [(0, 3), (3, 2)]
    assert split_envs(4, 4) == [(0, 1), (1, 1), (2, 1), (3, 1)]
    with pytest.raises(ValueError, match="between 1 and num_envs=2"):
        split_envs(2, 3)


@pytest.mark.parametrize("workers, start_method", [(2, None), (3, "spawn")])
def test_pool_equals_one_process(workers, start_method):
    """Any worker count (uneven splits too): the same batches, bit for bit, as 4 envs in one process.

    The workers only step the envs: the policy runs here on the whole batch of 4 either way
    (and reach_controller is batch-invariant by construction besides)."""
    local = _collect(make_metaworld_env(REACH, num_envs=4, seed=1))
    env = make_metaworld_env(REACH, num_envs=4, num_workers=workers, seed=1, start_method=start_method)
    assert isinstance(env, WorkerPoolEnv) and env.batch_size == torch.Size([4])
    pooled = _collect(env)
    assert sum(int(d["next", "success"].sum()) for d in local) > 0  # episodes end inside chunks
    for a, b in zip(local, pooled):
        assert (a == b).all()


@requires_gl
def test_pool_pixels_equal_one_process():
    kw = dict(num_envs=2, seed=1, from_pixels=True, image_size=32)
    local = _collect(make_metaworld_env(REACH, **kw), batches=1, decisions=8)[0]
    pooled = _collect(make_metaworld_env(REACH, num_workers=2, **kw), batches=1, decisions=8)[0]
    image = ("next", "observation", "image")
    assert pooled[image].dtype == torch.uint8 and pooled[image].float().std() > 0
    assert (local == pooled).all()


def test_evaluation_over_workers_is_exact():
    """The fixed configurations reach the workers ("config_index"): per-episode equality.
    (The policy runs here, on waves of 4 in both.)"""
    policy = reach_controller()
    kw = dict(num_episodes=6, num_envs=4, return_episodes=True)
    one = evaluate_policy(policy, REACH, **kw)["episodes"]
    two = evaluate_policy(policy, REACH, num_workers=2, **kw)["episodes"]
    assert one.successes.any()
    assert (one.lengths == two.lengths).all() and (one.successes == two.successes).all()


def test_worker_error_comes_back_as_itself():
    """A worker's exception is re-raised here with its type (before: EOFError / "worker dead")."""
    env = make_metaworld_env(REACH, num_envs=2, num_workers=2, seed=1)
    try:
        td = env.reset()
        td["action"] = torch.zeros(2, 4, 4)
        td["action"][1, 2] = float("nan")  # env 1, on worker 1: named by its index in the pool
        with pytest.raises(NonFiniteActionError, match="env 1: the policy produced a non-finite action") as info:
            env.step(td)
        assert "Traceback" in str(info.value.__cause__)  # the worker's traceback is chained
        td["action"] = torch.zeros(2, 4, 4)
        with pytest.raises(WorkerError, match="reset it before stepping"):  # worker 0 did step
            env.step(td)
        td = env.reset()
        env.step(td.set("action", torch.zeros(2, 4, 4)))  # the workers survive the error
    finally:
        env.close()


@pytest.mark.parametrize("victim", [0, 1])
def test_dead_worker_is_reported_not_hung(victim):
    """A worker killed while idle (its pipe already closed) or mid-command: one WorkerError,
    the other workers' replies read, and the pool refuses further use."""
    env = make_metaworld_env(REACH, num_envs=2, num_workers=2, seed=1)
    try:
        td = env.reset()
        os.kill(env.worker_pids()[victim], signal.SIGKILL)
        env._procs[victim].join(timeout=10)  # dead before the next command is sent
        td["action"] = torch.zeros(2, 4, 4)
        with pytest.raises(WorkerError, match=rf"env worker {victim} \(pid \d+\) died during step \(exit code -9\)"):
            env.step(td)
        with pytest.raises(WorkerError, match="cannot be used any more: close it and build a new one"):
            env.reset()
    finally:
        env.close()


def test_eval_pool_needs_the_configurations():
    """Each worker would count its own configurations: a reset must say which ones."""
    env = make_metaworld_env(REACH, num_envs=2, num_workers=2, mode="eval", num_eval_configs=4)
    try:
        with pytest.raises(ValueError, match="resets of this worker pool must pass 'config_index'"):
            env.reset()
    finally:
        env.close()


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="num_workers=3 must be between 1 and num_envs=2"):
        make_metaworld_env(REACH, num_envs=2, num_workers=3)
    with pytest.raises(ValueError, match="start_method must be 'spawn' or 'forkserver'"):
        make_metaworld_env(REACH, num_envs=2, num_workers=2, start_method="fork")
    with pytest.raises(ValueError, match="no non-tensor entries"):
        make_metaworld_env(REACH, num_envs=2, num_workers=2, include_instruction=True)
