"""Table I metrics: success rate, Len. (10th percentile) and Avg(l.) (shortest 10 %)."""

from __future__ import annotations

import numpy as np
import pytest

from torchrl_chunk.evaluation import MISSING, compute_task_metrics, mt10_average, results_to_markdown

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
