"""Table I metrics, tables and the fixed-configuration evaluation runner."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tensordict.nn import TensorDictModule

from _gl import requires_gl

from torchrl_chunk.evaluation import (
    AVERAGE_ROW,
    MISSING,
    compute_task_metrics,
    evaluate_mt10,
    evaluate_policy,
    merge_episodes,
    merge_results,
    mt10_average,
    results_to_csv,
    results_to_markdown,
)

REACH = "reach-v3"


# ------------------------------------------------------------------------------ metrics
def test_metrics_all_successes():
    lengths = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    m = compute_task_metrics(lengths, [True] * 10)
    assert m["success_rate"] == 1.0
    assert m["len_p10"] == 10.0  # inverted CDF: the ceil(0.1 * 10) = 1st shortest
    linear = compute_task_metrics(lengths, [True] * 10, percentile_method="linear")
    assert linear["len_p10"] == pytest.approx(19.0)  # 10 + 0.9 * (20 - 10)
    assert m["avg_shortest_10pct"] == 10.0  # ceil(0.1 * 10) = 1 episode
    assert m["num_episodes"] == 10 and m["num_successes"] == 10


def test_failures_count_as_max_steps():
    # 20 episodes: 4 successes of length 5, 16 failures recorded with a bogus length 3
    lengths = [5] * 4 + [3] * 16
    succ = [True] * 4 + [False] * 16
    m = compute_task_metrics(lengths, succ, max_steps=200)
    assert m["success_rate"] == 0.2
    assert m["len_p10"] == 5.0  # the shortest 10 % are successes
    assert m["avg_shortest_10pct"] == 5.0  # ceil(2.0) = 2 shortest
    m2 = compute_task_metrics([5, 7, 200, 200], [True, True, False, False], max_steps=200)
    # p10 over [5, 7, 200, 200]: the ceil(0.4) = 1st shortest; same for the mean
    assert m2["len_p10"] == 5.0
    assert m2["avg_shortest_10pct"] == 5.0


def test_shortest_ten_percent_of_128_is_13_episodes():
    lengths = np.arange(1, 129)
    m = compute_task_metrics(lengths, np.ones(128, bool), max_steps=200)
    assert m["avg_shortest_10pct"] == pytest.approx(np.mean(np.arange(1, 14)))  # 13 shortest
    assert m["len_p10"] == 13.0  # the 13th shortest


def test_missing_rule_below_ten_percent_success():
    n = 128
    lengths = np.full(n, 200)
    lengths[:13] = 40
    succ12 = np.zeros(n, bool)
    succ12[:12] = True
    succ13 = np.zeros(n, bool)
    succ13[:13] = True
    low = compute_task_metrics(lengths, succ12)
    assert low["len_p10"] is None and low["avg_shortest_10pct"] is None
    assert low["success_rate"] == pytest.approx(12 / 128)
    ok = compute_task_metrics(lengths, succ13)
    # at exactly ceil(10 %) successes both metrics are success lengths, never the cap
    assert ok["avg_shortest_10pct"] == 40.0 and ok["len_p10"] == 40.0
    md = results_to_markdown({"PPO": {REACH: low}, "Ours": {REACH: ok}})
    reach_row = [line for line in md.splitlines() if line.startswith("| Reach")][0]
    cells = [c.strip() for c in reach_row.strip("|").split("|")]
    assert cells == ["Reach", "0.09", "0.10", MISSING, "40.00", MISSING, "40.00"]


def test_bad_metric_inputs():
    with pytest.raises(ValueError, match="same number"):
        compute_task_metrics([1, 2], [True])
    with pytest.raises(ValueError, match="at least one"):
        compute_task_metrics([], [])
    with pytest.raises(ValueError, match=r"\[1, max_steps=200\]"):
        compute_task_metrics([0, 5], [True, True])
    with pytest.raises(ValueError, match="finite"):
        compute_task_metrics([float("nan")], [False])


def test_average_row_missing_if_any_task_missing():
    per_task = {
        "reach-v3": {"success_rate": 1.0, "len_p10": 30.0, "avg_shortest_10pct": 25.0},
        "push-v3": {"success_rate": 0.0, "len_p10": None, "avg_shortest_10pct": None},
    }
    avg = mt10_average(per_task)
    assert avg["success_rate"] == 0.5 and avg["len_p10"] is None and avg["avg_shortest_10pct"] is None
    per_task["push-v3"] = {"success_rate": 0.5, "len_p10": 50.0, "avg_shortest_10pct": 45.0}
    avg = mt10_average(per_task)
    assert avg["len_p10"] == 40.0 and avg["avg_shortest_10pct"] == 35.0


def test_table_layout_and_merge():
    a = {
        "push-v3": {"success_rate": 0.34, "len_p10": 59.0, "avg_shortest_10pct": 55.42},
        "reach-v3": {"success_rate": 0.29, "len_p10": 42.0, "avg_shortest_10pct": 32.75},
    }
    b = {
        "reach-v3": {"success_rate": 0.93, "len_p10": 26.0, "avg_shortest_10pct": 23.75},
        "push-v3": {"success_rate": 0.77, "len_p10": 41.0, "avg_shortest_10pct": 38.08},
    }
    table = merge_results({"SFT": a, "Ours": b})
    assert list(table) == ["reach-v3", "push-v3", AVERAGE_ROW]  # MT10 order, average last
    assert table[AVERAGE_ROW]["Ours"]["success_rate"] == pytest.approx(0.85)
    csv_text = results_to_csv({"SFT": a, "Ours": b})
    lines = csv_text.strip().splitlines()
    assert lines[0] == "Task,Acc.,,Len.,,Avg(l.),"
    assert lines[1] == ",SFT,Ours,SFT,Ours,SFT,Ours"
    assert lines[2] == "Reach,0.29,0.93,42.00,26.00,32.75,23.75"
    assert lines[3] == "Push,0.34,0.77,59.00,41.00,55.42,38.08"
    assert lines[4].startswith("Average,0.32,0.85,50.50,33.50,")
    md = results_to_markdown(table)  # a merged table is accepted too
    assert md.splitlines()[0] == "| Task | Acc. |  | Len. |  | Avg(l.) |  |"
    assert "| Pick-Place" not in md and "| Reach | 0.29 | 0.93 |" in md


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
