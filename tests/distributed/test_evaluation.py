"""Remote evaluation gives exactly the per-episode results of a local one; one that cannot
run fails after timeout_s with a message."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from _ray import TIMEOUT_S, reach_controller
from torchrl_chunk.distributed import RayEpisodeCollector, evaluate_policy_ray
from torchrl_chunk.distributed.evaluation import wave_shards
from torchrl_chunk.envs import make_metaworld_env
from torchrl_chunk.evaluation import evaluate_policy


def test_wave_shards_deal_whole_waves():
    shards = wave_shards(range(40), 16, 3)  # waves 0-15, 16-31, 32-39
    assert [s.tolist() for s in shards] == [list(range(16)), list(range(16, 32)), list(range(32, 40))]
    shards = wave_shards(range(40), 8, 2)
    assert shards[0].tolist() == [*range(0, 8), *range(16, 24), *range(32, 40)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(40))
    assert len(wave_shards(range(5), 16, 4)) == 1  # never an empty shard
    with pytest.raises(ValueError, match="num_shards"):
        wave_shards(range(4), 16, 0)


@pytest.mark.slow
def test_remote_evaluation_equals_local_episode_by_episode(ray_connected):
    """Exact on any CPU, for two reasons: the shards run the local waves' batch shapes (16 envs,
    the last wave's 8 episodes padded to 16: wave_shards), which is what makes a matmul policy's
    episodes equal (same shapes, same CPU, same kernels); and this policy is batch-invariant by
    construction besides."""
    torch.set_num_threads(1)
    policy = reach_controller(gain=4.0)  # succeeds, in lengths that vary from episode to episode
    kwargs = dict(num_episodes=40, num_envs=16, return_episodes=True, timeout_s=TIMEOUT_S)
    local = evaluate_policy(policy, "reach-v3", **{k: v for k, v in kwargs.items() if k != "timeout_s"})
    remote = evaluate_policy_ray(policy, "reach-v3", num_workers=3, **kwargs)  # a shard of 8 alone
    lengths = local["episodes"].lengths
    assert 0.2 < local["success_rate"] and len(set(lengths.tolist())) > 3
    np.testing.assert_array_equal(remote["episodes"].lengths, lengths)
    np.testing.assert_array_equal(remote["episodes"].successes, local["episodes"].successes)
    assert {k: v for k, v in remote.items() if k != "episodes"} == {k: v for k, v in local.items() if k != "episodes"}

    collector = RayEpisodeCollector(functools.partial(make_metaworld_env, "reach-v3", chunk_size=4), policy,
                                    num_envs=2, num_workers=2, decisions_per_env=2, timeout_s=TIMEOUT_S)
    try:
        collector.collect(0)  # the actors exist; the evaluation runs on them, not on new tasks
        on_actors = evaluate_policy_ray(policy, "reach-v3", num_workers=3, actors=collector.actors(), **kwargs)
    finally:
        collector.shutdown()
    np.testing.assert_array_equal(on_actors["episodes"].lengths, lengths)


@pytest.mark.slow
def test_an_evaluation_without_cpus_times_out_with_a_message(ray_connected):
    """Tasks of 3 CPUs on the 2-CPU cluster are never scheduled: TimeoutError, not a hang."""
    with pytest.raises(TimeoutError, match=r"1 Ray tasks of 3 CPU\(s\)\) did not finish within timeout_s=2 s"):
        evaluate_policy_ray(reach_controller(), "reach-v3", num_workers=1, num_episodes=2, num_threads=3,
                            timeout_s=2.0)
