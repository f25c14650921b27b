"""The fixed-configuration evaluation runner (TorchRL rollouts, waves, splits, frames)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tensordict.nn import TensorDictModule

from _gl import requires_gl

from torchrl_chunk.evaluation import AVERAGE_ROW, evaluate_mt10, evaluate_policy
from torchrl_chunk.evaluation.runner import merge_episodes

REACH = "reach-v3"


# ------------------------------------------------------------------------------ runner
class _ReachController(torch.nn.Module):
    """Deterministic chunk policy: move the hand toward the goal (obs[36:39])."""

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        delta = ((state[..., 36:39] - state[..., 0:3]) * 20).clamp(-1, 1)
        action = torch.cat([delta, torch.zeros_like(delta[..., :1])], -1)
        return action.unsqueeze(-2).expand(*action.shape[:-1], 4, 4).clone()


@pytest.fixture(scope="module")
def reach_policy():
    return TensorDictModule(_ReachController(), in_keys=[("observation", "state")], out_keys=["action"])


class _PerturbedController(torch.nn.Module):
    """A fixed random MLP on top of a scaled reach controller: lengths vary, some fail."""

    def __init__(self, seed: int, gain: float) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(39, 32, generator=g) * 0.3
        self.w2 = torch.randn(32, 16, generator=g) * 0.3
        self.gain = gain

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        noise = torch.tanh(torch.tanh(state @ self.w1) @ self.w2).view(*state.shape[:-1], 4, 4)
        delta = ((state[..., 36:39] - state[..., 0:3]) * 20).clamp(-1, 1)
        base = torch.cat([delta, torch.zeros_like(delta[..., :1])], -1).unsqueeze(-2)
        return (self.gain * base + noise).clamp(-1, 1)


# Per-episode lengths and successes of the step-mask loop evaluate_policy ran before it
# went through env.rollout (commit fbef562), for num_envs < num_episodes (several waves,
# the last one padded). The rollout must reproduce them exactly.
# They were recorded on one CPU, and the controller's noise is a matmul: on another x86 CPU
# (other MKL/ATen kernels) it differs in the last bits (up to 1e-6 here). Integer lengths do
# not: checked with this CPU's AVX-512 kernels, with AVX2 (as on AMD) and SSE4.2/default ones
# (MKL_ENABLE_INSTRUCTIONS, DNNL_MAX_CPU_ISA, ATEN_CPU_CAPABILITY), each wave of one shape.
_BEFORE_ROLLOUT = {
    ("reach-v3", 0, 0.6, 10, 4): ([58, 58, 43, 41, 46, 48, 59, 43, 45, 45], [True] * 10),
    ("reach-v3", 3, 0.2, 7, 3): ([120] * 6 + [87], [False] * 6 + [True]),
    ("drawer-close-v3", 1, 1.0, 7, 3): ([21, 20, 20, 20, 20, 20, 21], [True] * 7),
}


@pytest.mark.parametrize("case", list(_BEFORE_ROLLOUT), ids=lambda c: f"{c[0]}-{c[1]}")
def test_rollout_reproduces_the_step_mask_loop(case):
    task, seed, gain, num_episodes, num_envs = case
    policy = TensorDictModule(
        _PerturbedController(seed, gain), in_keys=[("observation", "state")], out_keys=["action"]
    )
    res = evaluate_policy(
        policy, task, num_episodes=num_episodes, num_envs=num_envs, max_steps=120,
        return_episodes=True,
    )  # fmt: skip
    lengths, successes = _BEFORE_ROLLOUT[case]
    assert res["episodes"].lengths.tolist() == lengths
    assert res["episodes"].successes.tolist() == successes
    assert res["success_rate"] == sum(successes) / num_episodes


def test_quick_eval_reports_steps_to_success(reach_policy):
    res = evaluate_policy(reach_policy, REACH, num_episodes=3, num_envs=2, max_steps=60)
    assert set(res) == {
        "task", "success_rate", "len_p10", "avg_shortest_10pct", "num_episodes", "num_successes",
    }  # fmt: skip
    assert res["success_rate"] == 1.0 and 1 <= res["avg_shortest_10pct"] <= res["len_p10"] <= 60


def test_eval_reproducible_and_split_invariant(reach_policy):
    full = evaluate_policy(reach_policy, REACH, num_episodes=6, num_envs=6, return_episodes=True)
    again = evaluate_policy(reach_policy, REACH, num_episodes=6, num_envs=4, return_episodes=True)
    assert np.array_equal(full["episodes"].lengths, again["episodes"].lengths)
    parts = [
        evaluate_policy(
            reach_policy, REACH, episode_indices=idx, num_eval_configs=6, num_envs=2,
            return_episodes=True,
        )["episodes"]
        for idx in ([4, 0, 2], [5, 1, 3])
    ]  # fmt: skip
    merged = merge_episodes(parts)
    assert merged.episode_indices.tolist() == list(range(6))
    assert np.array_equal(merged.lengths, full["episodes"].lengths)
    assert np.array_equal(merged.successes, full["episodes"].successes)
    assert full["success_rate"] == 1.0  # the controller solves reach
    assert len(set(full["episodes"].lengths.tolist())) > 1  # configurations differ
    assert full["len_p10"] == full["episodes"].lengths.min()  # ceil(0.6) = 1st shortest
    assert full["avg_shortest_10pct"] == full["episodes"].lengths.min()  # ceil(0.6) = 1


def test_eval_with_chunk_actor_is_deterministic():
    from torch import nn

    from torchrl_chunk.modules import make_chunk_actor_critic

    torch.manual_seed(0)
    backbone = TensorDictModule(nn.Linear(39, 8), in_keys=[("observation", "state")], out_keys=["embedding"])
    actor, _ = make_chunk_actor_critic(backbone, 8, 4, 4, log_std_init=1.0)
    seen = []

    def policy(td):
        td = actor(td)
        seen.append((td["action"].clone(), td["loc"].clone()))
        return td

    kwargs = dict(num_episodes=2, num_envs=2, max_steps=12, return_episodes=True)
    r1 = evaluate_policy(policy, REACH, **kwargs)
    r2 = evaluate_policy(policy, REACH, **kwargs)
    assert len(seen) == 6  # 12 steps / chunks of 4, twice
    assert all(torch.equal(a, loc) for a, loc in seen)  # the mean, not a sample (std e^1)
    assert torch.equal(seen[0][0], seen[3][0])
    assert r1["num_episodes"] == 2 and r1["success_rate"] == 0.0
    assert r1["len_p10"] is None and r1["avg_shortest_10pct"] is None
    assert r1["episodes"].lengths.tolist() == [12, 12]  # failures count as max_steps
    assert {k: v for k, v in r1.items() if k != "episodes"} == {
        k: v for k, v in r2.items() if k != "episodes"
    }


def test_evaluate_mt10_average_row(reach_policy):
    res = evaluate_mt10(reach_policy, tasks=[REACH, "drawer-close-v3"], num_episodes=2, num_envs=2, max_steps=40)
    assert list(res) == [REACH, "drawer-close-v3", AVERAGE_ROW]
    assert res[REACH]["success_rate"] == 1.0
    assert res[AVERAGE_ROW]["success_rate"] == pytest.approx(
        (res[REACH]["success_rate"] + res["drawer-close-v3"]["success_rate"]) / 2
    )
    assert math.isfinite(res[AVERAGE_ROW]["success_rate"])


def test_eval_bad_inputs(reach_policy):
    with pytest.raises(ValueError, match="Valid tasks"):
        evaluate_policy(reach_policy, "reach-v1", num_episodes=1)
    with pytest.raises(ValueError, match="num_episodes"):
        evaluate_policy(reach_policy, REACH, num_episodes=0)
    with pytest.raises(ValueError, match="episode indices"):
        evaluate_policy(reach_policy, REACH, episode_indices=[8], num_eval_configs=8)


@requires_gl
def test_record_episodes_keeps_frames_and_changes_nothing(reach_policy):
    kwargs = dict(num_episodes=3, num_envs=2, max_steps=60, from_pixels=True, image_size=16)
    plain = evaluate_policy(reach_policy, REACH, return_episodes=True, **kwargs)
    rec = evaluate_policy(reach_policy, REACH, record_episodes=2, **kwargs)
    assert np.array_equal(rec["episodes"].lengths, plain["episodes"].lengths)
    assert {k: v for k, v in rec.items() if k != "episodes"} == {
        k: v for k, v in plain.items() if k != "episodes"
    }
    frames = rec["episodes"].frames
    assert sorted(frames) == [0, 1] and plain["episodes"].frames == {}
    for i, f in frames.items():
        assert f.dtype == np.uint8 and f.shape[1:] == (16, 16, 3)
        # the reset frame, then one per decision of h = 4 env steps until success
        assert len(f) == 1 + math.ceil(rec["episodes"].lengths[i] / 4)
        assert not np.array_equal(f[0], f[-1])  # the arm moved
    parts = [  # splits record the same episodes (chosen by configuration, not position)
        evaluate_policy(reach_policy, REACH, episode_indices=idx, num_eval_configs=3, record_episodes=2,
                        **{k: v for k, v in kwargs.items() if k != "num_episodes"})["episodes"]
        for idx in ([2, 1], [0])
    ]  # fmt: skip
    merged = merge_episodes(parts).frames
    assert sorted(merged) == [0, 1] and all(np.array_equal(merged[i], frames[i]) for i in merged)


def test_record_episodes_needs_pixels(reach_policy):
    with pytest.raises(ValueError, match="distinct"):
        evaluate_policy(reach_policy, REACH, episode_indices=[0, 0], num_eval_configs=2)
    with pytest.raises(ValueError, match="from_pixels=True"):
        evaluate_policy(reach_policy, REACH, num_episodes=1, record_episodes=1)
