"""Remote collection on a local Ray cluster: the env side equals a local collector, batches are
reproducible, a killed actor is replaced and the same batch collected again."""

from __future__ import annotations

import functools
import os
import signal
import time

import pytest
import torch
from torchrl.collectors import Collector
from torchrl.envs.utils import ExplorationType

from _ray import reach_controller
from torchrl_chunk.distributed import RayEpisodeCollector
from torchrl_chunk.envs import NonFiniteActionError, make_metaworld_env
from torchrl_chunk.keys import SUCCESS_KEY
from torchrl_chunk.modules.mlp import make_mlp_actor_critic

pytestmark = pytest.mark.slow
MAKE_ENV = functools.partial(make_metaworld_env, "reach-v3", chunk_size=4, seed=3)


def local_batch(policy, seed: int, num_envs: int = 4, decisions: int = 20, exploration=ExplorationType.DETERMINISTIC):
    collector = Collector(MAKE_ENV(num_envs=num_envs), policy, frames_per_batch=num_envs * decisions,
                          total_frames=-1, exploration_type=exploration)
    try:
        collector.set_seed(seed)
        collector.reset()
        return next(iter(collector))
    finally:
        collector.shutdown()


def test_remote_batches_equal_a_local_collector_env_by_env(ray_connected):
    """Same seeds per env (worker k holds envs k*n..), same chunking, same [num_envs, T] order.

    The policy is batch-invariant (one Linear layer), so any difference would be the env side's.
    """
    torch.set_num_threads(1)
    policy = reach_controller()
    remote = RayEpisodeCollector(MAKE_ENV, policy, num_envs=4, num_workers=2, decisions_per_env=20,
                                 exploration_type=ExplorationType.DETERMINISTIC)
    try:
        got = remote.collect(5)
    finally:
        remote.shutdown()
    want = local_batch(policy, 5)
    assert got.shape == want.shape == torch.Size([4, 20])
    assert got["next", SUCCESS_KEY].any()  # real episodes, some of them successful
    assert (got.exclude("collector") == want.exclude("collector")).all()
    assert remote.bytes_received == got.bytes() and remote.bytes_sent > 0


def test_batches_are_reproducible_and_a_killed_actor_is_replaced(ray_connected):
    torch.manual_seed(0)
    actor, _ = make_mlp_actor_critic(torch.zeros(39), torch.ones(39), horizon=4, hidden=(32,))
    remote = RayEpisodeCollector(MAKE_ENV, actor, num_envs=4, num_workers=2, decisions_per_env=10)
    try:
        first = remote.collect(7).exclude("collector")
        other = remote.collect(8).exclude("collector")
        assert not (first["action"] == other["action"]).all()  # exploration noise follows the seed
        pids = remote.worker_pids()
        os.kill(pids[1], signal.SIGKILL)
        time.sleep(1.0)
        with pytest.warns(UserWarning, match="Ray collector worker was lost"):
            again = remote.collect(7).exclude("collector")
        assert remote.restarts == 1
        assert (again == first).all()  # the dead worker's share is collected again, identically
        assert set(remote.worker_pids()).isdisjoint(pids[1:])
    finally:
        remote.shutdown()


def test_an_error_in_the_env_comes_back_as_itself(ray_connected):
    torch.manual_seed(0)
    actor, _ = make_mlp_actor_critic(torch.zeros(39), torch.ones(39), horizon=4, hidden=(8,))
    with torch.no_grad():
        for p in actor.parameters():
            p.fill_(float("nan"))
    remote = RayEpisodeCollector(MAKE_ENV, actor, num_envs=2, num_workers=2, decisions_per_env=2,
                                 exploration_type=ExplorationType.DETERMINISTIC)
    try:
        with pytest.raises(NonFiniteActionError, match="reach-v3"):
            remote.collect(1)
        assert remote.restarts == 0  # not mistaken for a lost worker
    finally:
        remote.shutdown()


def test_num_envs_must_split_evenly():
    with pytest.raises(ValueError, match="multiple of num_workers"):
        RayEpisodeCollector(MAKE_ENV, reach_controller(), num_envs=3, num_workers=2, decisions_per_env=1)
