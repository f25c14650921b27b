"""Remote collection on a local Ray cluster: the env side equals a local collector, batches are
reproducible, a killed actor is replaced and the same batch collected again, a batch that
runs out of time fails with a message.

Every collector gets ``timeout_s=TIMEOUT_S``: on a loaded machine a test fails, it does not hang."""

from __future__ import annotations

import functools
import os
import signal
import time

import pytest
import torch
from torchrl.collectors import Collector
from torchrl.envs.utils import ExplorationType

from _ray import TIMEOUT_S, reach_controller
from torchrl_chunk.data import LengthFilteredReplayBuffer
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

    The actors run the policy on 2 envs at a time, the local collector on 4. The policy is
    batch-invariant by construction (elementwise ops only, test_batch_invariance.py), so any
    difference would be the env side's. (An ``nn.Linear`` is not, on every x86 CPU: with
    MKL's AVX2 kernels (AMD) its actions differed by up to 6e-7, and the states by 1e-3.)
    """
    torch.set_num_threads(1)
    policy = reach_controller()
    remote = RayEpisodeCollector(MAKE_ENV, policy, num_envs=4, num_workers=2, decisions_per_env=20,
                                 exploration_type=ExplorationType.DETERMINISTIC, timeout_s=TIMEOUT_S)
    try:
        got = remote.collect(5)
    finally:
        remote.shutdown()
    want = local_batch(policy, 5)
    assert got.shape == want.shape == torch.Size([4, 20])
    assert got["next", SUCCESS_KEY].any()  # real episodes, some of them successful
    assert (got.exclude("collector") == want.exclude("collector")).all()
    assert remote.bytes_received == got.bytes() and remote.bytes_sent > 0
    # the demo buffer takes the remote batch as it takes a local one: whole episodes, true lengths
    buffer = LengthFilteredReplayBuffer([_expert()], chunk_size=4)
    report = buffer.extend(got)
    lengths = []
    for row in got.unbind(0):  # every row starts at a reset: sum the steps up to each success
        done, steps, success = (row["next", k].flatten() for k in ("done", "steps_executed", SUCCESS_KEY))
        start = 0
        for end in torch.nonzero(done).flatten().tolist():
            if success[end]:
                lengths.append(int(steps[start:end + 1].sum()))
            start = end + 1
    assert lengths and sorted(report.admitted_lengths) == sorted(lengths)
    assert "fragment" not in report.rejected


def _expert():
    from tensordict import TensorDict

    last = torch.arange(200).eq(199).view(200, 1)
    t = torch.linspace(0, 1, 200).unsqueeze(-1)  # a demo that moves (only its length matters here)
    return TensorDict({("observation", "state"): t.expand(200, 39).clone(), "action": (t - 0.5).expand(200, 4).clone(),
                       ("next", "done"): last, ("next", "success"): last}, [200])


def test_batches_are_reproducible_and_a_killed_actor_is_replaced(ray_connected):
    """Bit for bit with an MLP policy (matmuls): every batch runs the policy on the same shapes
    (2 envs per actor, 1 thread) on the same CPU, so with the same kernels. It relies on that:
    a replacement actor with another batch size or thread count could differ in the last bits."""
    torch.manual_seed(0)
    actor, _ = make_mlp_actor_critic(torch.zeros(39), torch.ones(39), chunk_size=4, hidden=(32,))
    remote = RayEpisodeCollector(MAKE_ENV, actor, num_envs=4, num_workers=2, decisions_per_env=10,
                                 timeout_s=TIMEOUT_S)
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
    actor, _ = make_mlp_actor_critic(torch.zeros(39), torch.ones(39), chunk_size=4, hidden=(8,))
    with torch.no_grad():
        for p in actor.parameters():
            p.fill_(float("nan"))
    remote = RayEpisodeCollector(MAKE_ENV, actor, num_envs=2, num_workers=2, decisions_per_env=2,
                                 exploration_type=ExplorationType.DETERMINISTIC, timeout_s=TIMEOUT_S)
    try:
        with pytest.raises(NonFiniteActionError, match="reach-v3"):
            remote.collect(1)
        assert remote.restarts == 0  # not mistaken for a lost worker
    finally:
        remote.shutdown()


def test_num_envs_must_split_evenly():
    with pytest.raises(ValueError, match="multiple of num_workers"):
        RayEpisodeCollector(MAKE_ENV, reach_controller(), num_envs=3, num_workers=2, decisions_per_env=1)


def test_a_collection_without_cpus_times_out_with_a_message(ray_connected):
    """3 actors of 1 CPU on the 2-CPU cluster: never placed. A bounded wait, not a hang."""
    remote = RayEpisodeCollector(MAKE_ENV, reach_controller(), num_envs=3, num_workers=3, decisions_per_env=1,
                                 timeout_s=2.0)
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutError, match=r"within timeout_s=2 s \(3 Ray actors .* may lack free CPUs"):
            remote.collect(0)
        assert time.monotonic() - start < 60
        assert remote.restarts == 0 and remote.actors() == [] and remote._placement is None
    finally:
        remote.shutdown()


def test_a_batch_that_runs_out_of_time_stops_its_actors_and_the_next_starts_anew(ray_connected):
    """Actors that do not answer in time (here: envs that take a minute to build, as starved
    actors would): TimeoutError after timeout_s, not a lost worker; the next call rebuilds."""

    def slow_env(**kwargs):  # defined here: cloudpickle sends it to the actors by value
        time.sleep(120)
        return MAKE_ENV(**kwargs)

    remote = RayEpisodeCollector(slow_env, reach_controller(), num_envs=2, num_workers=2, decisions_per_env=2,
                                 exploration_type=ExplorationType.DETERMINISTIC, timeout_s=5.0)
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="starved of CPU on a loaded machine"):
            remote.collect(0)
        assert time.monotonic() - start < 60
        assert remote.restarts == 0 and remote.actors() == [] and remote._placement is None
        remote.make_env, remote.timeout_s = MAKE_ENV, TIMEOUT_S
        assert remote.collect(0).shape == torch.Size([2, 2])  # new actors, placed on the freed CPUs
    finally:
        remote.shutdown()


def test_timeout_s_is_checked():
    with pytest.raises(ValueError, match="timeout_s must be > 0 or None"):
        RayEpisodeCollector(MAKE_ENV, reach_controller(), num_envs=2, num_workers=2, decisions_per_env=1, timeout_s=0)
