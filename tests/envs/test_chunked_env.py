"""ChunkedEnv on a toy env with known dynamics (tests/envs/toy.py)."""

from __future__ import annotations

import pytest
import torch
from torchrl.collectors import Collector
from torchrl.envs import Compose, RewardScaling, RewardSum, SerialEnv, StepCounter, TransformedEnv
from torchrl.envs.utils import check_env_specs

from torchrl_chunk.envs import ChunkedEnv

from .toy import CountingEnv

H = 4


def chunk(rewards, batch=()):
    """An action chunk whose first entry (= the step reward of CountingEnv) is ``rewards``."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    a = torch.zeros(*batch, len(rewards), 2)
    a[..., 0] = rewards
    return a


def test_single_env_stops_at_first_done():
    base = CountingEnv([2], batched=False)
    env = ChunkedEnv(base, H)
    td = env.reset()
    td["action"] = chunk([1.0, 2.0, 4.0, 8.0])
    nxt = env.step(td)["next"]
    assert nxt["steps_executed"].item() == 2
    assert nxt["reward"].item() == 3.0  # 1 + 2, the 4 and 8 were not executed
    assert nxt["done"].item() and nxt["terminated"].item() and not nxt["truncated"].item()
    assert nxt["success"].item()
    assert nxt["observation", "state"].item() == 2.0
    assert base.executed.item() == 2  # remaining actions really skipped
    assert nxt["steps_executed"].dtype == torch.int64 and nxt["steps_executed"].shape == (1,)


def test_partial_batch_termination_exact_sums_despite_stale_slots():
    # env 0 finishes at inner step 2; the base returns stale rewards for it afterwards
    # (like SerialEnv/ParallelEnv), which MultiAction would sum. We must not.
    base = CountingEnv([2, 5, 9])
    env = ChunkedEnv(base, H)
    td = env.reset()
    td["action"] = chunk([1.0, 2.0, 4.0, 8.0], (3,))
    td = env.step(td)
    nxt = td["next"]
    assert nxt["steps_executed"].squeeze(-1).tolist() == [2, 4, 4]
    assert nxt["reward"].squeeze(-1).tolist() == [3.0, 15.0, 15.0]
    assert nxt["done"].squeeze(-1).tolist() == [True, False, False]
    assert nxt["success"].squeeze(-1).tolist() == [True, False, False]
    assert base.executed.squeeze(-1).tolist() == [2, 4, 4]
    # second macro-step: env 0 is masked out by the caller, env 1 finishes at inner step 1
    td2 = td["next"].clone()
    td2["action"] = chunk([16.0, 32.0, 64.0, 128.0], (3,))
    td2["_step"] = torch.tensor([False, True, True])
    nxt2 = env.step(td2)["next"]
    assert nxt2["steps_executed"].squeeze(-1).tolist() == [0, 1, 4]
    assert nxt2["reward"].squeeze(-1).tolist() == [0.0, 16.0, 240.0]
    assert nxt2["done"].squeeze(-1).tolist() == [True, True, False]
    assert base.executed.squeeze(-1).tolist() == [2, 5, 8]


def test_serial_env_base_exact_sums():
    base = SerialEnv(2, [lambda: CountingEnv([2], batched=False), lambda: CountingEnv([7], batched=False)])
    env = ChunkedEnv(base, H)
    td = env.reset()
    td["action"] = chunk([1.0, 10.0, 100.0, 1000.0], (2,))
    nxt = env.step(td)["next"]
    assert nxt["reward"].squeeze(-1).tolist() == [11.0, 1111.0]
    assert nxt["steps_executed"].squeeze(-1).tolist() == [2, 4]
    env.close()


def test_transforms_on_top_run_when_all_envs_finish_mid_chunk():
    # MultiAction trap (b): with every env done inside the chunk, transforms after it were
    # skipped. Here StepCounter and a reward transform must still run on that macro-step.
    env = TransformedEnv(
        ChunkedEnv(CountingEnv([2, 3]), H),
        Compose(StepCounter(), RewardScaling(loc=0.0, scale=10.0), RewardSum()),
    )
    td = env.reset()
    td["action"] = chunk([1.0, 2.0, 4.0, 8.0], (2,))
    nxt = env.step(td)["next"]
    assert nxt["done"].all()
    assert nxt["steps_executed"].squeeze(-1).tolist() == [2, 3]
    assert nxt["step_count"].squeeze(-1).tolist() == [1, 1]
    assert nxt["reward"].squeeze(-1).tolist() == [30.0, 70.0]
    assert nxt["episode_reward"].squeeze(-1).tolist() == [30.0, 70.0]


def test_truncation_mid_chunk_is_not_termination():
    env = ChunkedEnv(CountingEnv([100], max_steps=6, batched=False), H)
    td = env.reset()
    td["action"] = chunk([1.0] * H)
    td = env.step(td)
    assert td["next", "steps_executed"].item() == 4 and not td["next", "done"].item()
    td = td["next"].clone()
    td["action"] = chunk([1.0] * H)
    nxt = env.step(td)["next"]
    assert nxt["steps_executed"].item() == 2
    assert nxt["truncated"].item() and nxt["done"].item()
    assert not nxt["terminated"].item() and not nxt["success"].item()


@pytest.mark.parametrize(
    "aggregation, gamma, expected",
    [
        ("sum", None, 1.0 + 2.0 + 4.0),
        ("discounted_sum", 0.5, 1.0 + 0.5 * 2.0 + 0.25 * 4.0),
        ("max", None, 4.0),
        ("last", None, 4.0),
    ],
)
def test_reward_aggregations_use_executed_steps_only(aggregation, gamma, expected):
    env = ChunkedEnv(CountingEnv([3, 9]), H, reward_aggregation=aggregation, gamma=gamma)
    td = env.reset()
    td["action"] = chunk([1.0, 2.0, 4.0, 100.0], (2,))
    nxt = env.step(td)["next"]
    assert nxt["reward"][0].item() == pytest.approx(expected)


def test_max_aggregation_with_negative_rewards():
    env = ChunkedEnv(CountingEnv([2], batched=False), H, reward_aggregation="max")
    td = env.reset()
    td["action"] = chunk([-3.0, -5.0, 9.0, 9.0])
    assert env.step(td)["next", "reward"].item() == -3.0


@pytest.mark.parametrize(
    "make_base",
    [
        lambda: CountingEnv([2], batched=False),
        lambda: CountingEnv([2, 5, 9]),
        lambda: SerialEnv(2, lambda: CountingEnv([3], batched=False)),
    ],
    ids=["single", "batch-locked", "serial"],
)
def test_check_env_specs(make_base):
    env = ChunkedEnv(make_base(), H)
    check_env_specs(env)
    assert env.action_spec.shape[-2:] == (H, 2)
    env.close()


def test_rollout_counts_env_steps():
    env = ChunkedEnv(CountingEnv([6, 3]), H)
    td = env.rollout(5, break_when_any_done=False, break_when_all_done=True)
    executed = td["next", "steps_executed"]
    # rows after an env finished are copies of its last row: count only until done
    done_before = torch.cat(
        [torch.zeros_like(td["next", "done"][:, :1]), td["next", "done"][:, :-1]], 1
    ).cummax(1).values
    total = torch.where(done_before, 0, executed).sum(1).squeeze(-1)
    assert total.tolist() == [6, 3]


def test_collector_with_partial_resets():
    env = ChunkedEnv(CountingEnv([3, 5]), H)
    collector = Collector(env, None, frames_per_batch=8, total_frames=16)
    batches = list(collector)
    collector.shutdown()
    data = batches[-1]
    k = data["next", "steps_executed"]
    assert ((k >= 1) & (k <= H)).all()
    # env 0 (episodes of 3 steps) runs chunks of 3; env 1 (5 steps) alternates 4, 1
    assert set(k[0].flatten().tolist()) == {3}
    assert set(k[1].flatten().tolist()) == {1, 4}


def test_bad_inputs():
    env = ChunkedEnv(CountingEnv([2, 2]), H)
    td = env.reset()
    td["action"] = torch.zeros(2, 3, 2)
    with pytest.raises(ValueError, match=r"expected an action chunk of shape \(2, 4, 2\)"):
        env.step(td)
    with pytest.raises(ValueError, match="needs an intra-chunk gamma"):
        ChunkedEnv(CountingEnv([2]), H, reward_aggregation="discounted_sum")
    with pytest.raises(ValueError, match="only used by"):
        ChunkedEnv(CountingEnv([2]), H, gamma=0.9)
    with pytest.raises(ValueError, match="chunk_size"):
        ChunkedEnv(CountingEnv([2]), 0)


def test_a_base_env_without_the_success_entry_is_refused():
    """Without a success flag every episode would be a failure: say so at construction."""
    from torchrl.envs import ExcludeTransform

    base = TransformedEnv(CountingEnv([3, 5]), ExcludeTransform("success"))
    with pytest.raises(ValueError, match="no 'success' entry.*success_key"):
        ChunkedEnv(base, H)
    env = ChunkedEnv(base, H, success_key=None)  # explicitly no success flag
    assert "success" not in env.rollout(2, lambda td: td.set("action", chunk([1.0] * H, (2,))))["next"].keys()


@pytest.mark.slow
def test_gymnasium_vector_env_stops_every_chunk_at_the_first_done():
    """GymEnv(num_envs=3) steps its envs in lockstep and restarts them itself: ChunkedEnv cuts the
    chunk for all envs at the first done, and episode lengths add up to the env's own counts."""
    from torchrl.envs import GymEnv

    env = ChunkedEnv(TransformedEnv(GymEnv("InvertedPendulum-v5", num_envs=3), StepCounter()), H, success_key=None)
    torch.manual_seed(0)
    td = env.rollout(40, lambda td: td.set("action", 3 * torch.randn(*td.shape, H, 1)), break_when_any_done=False)
    done, executed = td["next", "done"].squeeze(-1), td["next", "steps_executed"].squeeze(-1)
    assert done.any(0).sum() >= 5 and not done.all(0).all()  # partial dones happened
    assert (executed == executed[:1]).all()  # lockstep: every env ran the same steps
    assert (executed[:, done.any(0)] <= H).all() and (executed[:, ~done.any(0)] == H).all()
    # the StepCounter of the base counts env steps since each reset: it must equal our sums
    counts = td["next", "step_count"].squeeze(-1)
    for i in range(3):
        total = 0
        for t in range(td.shape[1]):
            total += int(executed[i, t])
            assert int(counts[i, t]) == total, (i, t)
            if done[i, t]:
                total = 0
