"""Statistics over seeds: score matrices, t-intervals, rliable's IQM/mean CIs, plots, Markdown."""

from __future__ import annotations

import numpy as np
import pytest

from torchrl_chunk.evaluation import MISSING_LENGTH, compute_statistics, write_statistics
from torchrl_chunk.evaluation.statistics import (
    aggregate_intervals,
    history_matrix,
    score_matrix,
    statistics_markdown,
    task_intervals,
)
from torchrl_chunk.evaluation.statistics import fraction_above, iqm

TASKS = ("push-v3", "reach-v3", "door-open-v3")  # not in MT10 order on purpose
REPS = 200


def result(label, task, seed, acc, avg, history=()):
    return {"algo": label.lower(), "label": label, "task": task, "seed": seed, "history": list(history),
            "metrics": {"success_rate": acc, "len_p10": avg, "avg_shortest_10pct": avg}}


def history(offset, steps=(0, 5000, 10000)):
    return [{"env_steps": s, "success_rate": offset + s / 20000, "avg_shortest_10pct": 100.0 - s / 200}
            for s in steps]


def synthetic(seeds=(0, 1, 2)):
    """2 labels × 3 tasks × len(seeds) seeds; Ours succeeds more and faster, and has histories."""
    rng = np.random.default_rng(0)
    out = []
    for label, base in (("Ours", 0.8), ("SFT", 0.4)):  # Table I order puts SFT first
        for t in TASKS:
            for s in seeds:
                acc = float(np.clip(base + rng.normal(0, 0.1), 0, 1))
                hist = history(0.1 * s) if label == "Ours" else ()
                out.append(result(label, t, s, acc, 60.0 - 30 * acc, hist))
    return out


def test_score_matrix_layout_order_and_later_wins():
    res = synthetic() + [result("SFT", "push-v3", 1, 0.123, 45.0)]  # replaces the earlier seed-1 push result
    acc = score_matrix(res, "success_rate")
    assert list(acc) == ["SFT", "Ours"]  # Table I order
    assert acc["SFT"].shape == (3, 3)
    assert acc["SFT"][1, 1] == 0.123  # row: seed 1; column: push-v3, after reach-v3 (MT10 order)
    only = score_matrix(res, "avg_shortest_10pct", labels=["Ours"], tasks=["door-open-v3"])
    assert list(only) == ["Ours"] and only["Ours"].shape == (3, 1)


def test_missing_length_counts_as_max_steps():
    res = [result("SFT", "reach-v3", s, 0.05 * s, None if s == 0 else 30.0) for s in (0, 1)]
    np.testing.assert_array_equal(score_matrix(res, "avg_shortest_10pct")["SFT"], [[200.0], [30.0]])
    assert MISSING_LENGTH == 200.0
    assert score_matrix(res, "avg_shortest_10pct", missing=150.0)["SFT"][0, 0] == 150.0
    res[0]["metrics"]["success_rate"] = None
    with pytest.raises(ValueError, match="only a length metric may be missing"):
        score_matrix(res, "success_rate")


def test_ragged_seeds_are_one_line_errors():
    res = [r for r in synthetic() if not (r["label"] == "Ours" and r["task"] == "reach-v3" and r["seed"] == 2)]
    with pytest.raises(ValueError, match=r"^label 'Ours' has no result for task 'reach-v3' with seed\(s\) \[2\]") as e:
        score_matrix(res, "success_rate")
    assert "\n" not in str(e.value)
    res = synthetic() + [result("Ours", t, 3, 0.5, 40.0) for t in TASKS]
    with pytest.raises(ValueError, match=r"^labels have different seeds \('SFT': \[0, 1, 2\], 'Ours': \[0, 1, 2, 3\]\)"):
        score_matrix(res, "success_rate")
    with pytest.raises(ValueError, match="no results for label"):
        score_matrix(synthetic(), "success_rate", labels=["PPO"])


def test_t_interval_on_a_known_sample():
    mean, ci = task_intervals(np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]))
    np.testing.assert_allclose(mean, [2.0, 5.0])
    half = 4.302652729911275 / np.sqrt(3)  # t_{0.975, 2} * s / sqrt(n), s = 1
    np.testing.assert_allclose(ci, [[2.0 - half, 5.0], [2.0 + half, 5.0]])
    _, ci90 = task_intervals(np.array([[1.0], [2.0], [3.0]]), confidence=0.9)
    assert ci90[1, 0] - 2.0 == pytest.approx(2.919985580353726 / np.sqrt(3))
    assert task_intervals(np.array([[0.5, 0.7]]))[1] is None  # one seed: no interval


def test_iqm_and_mean_on_a_hand_made_matrix():
    scores = {"A": np.array([[0.0, 0.0, 0.0, 1.0], [2.0, 3.0, 10.0, 100.0]])}
    points, cis = aggregate_intervals(scores, reps=REPS)
    np.testing.assert_allclose(points["A"], [1.5, 14.5])  # IQM: mean of 0, 1, 2, 3 (middle half of 8)
    from rliable import metrics

    assert metrics.aggregate_iqm(scores["A"]) == 1.5
    assert cis["A"].shape == (2, 2)
    assert (cis["A"][0] <= points["A"]).all() and (points["A"] <= cis["A"][1]).all()


def test_aggregate_cis_contain_points_and_are_deterministic():
    acc = score_matrix(synthetic(), "success_rate")
    points, cis = aggregate_intervals(acc, reps=REPS, seed=3)
    for label in acc:
        assert (cis[label][0] <= points[label]).all() and (points[label] <= cis[label][1]).all()
        assert (cis[label][1] > cis[label][0]).all()
    again = aggregate_intervals(acc, reps=REPS, seed=3)[1]
    other = aggregate_intervals(acc, reps=REPS, seed=4)[1]
    for label in acc:
        np.testing.assert_array_equal(cis[label], again[label])
    assert any(not np.array_equal(cis[label], other[label]) for label in acc)
    assert points["Ours"][0] > cis["SFT"][1][0]  # Ours' IQM lies above SFT's whole interval


def test_history_matrix_shared_steps_and_nearest_binning():
    res = synthetic()
    steps, acc = history_matrix(res, "success_rate")["Ours"]
    assert list(history_matrix(res, "success_rate")) == ["Ours"]  # SFT has no history
    np.testing.assert_array_equal(steps, [0, 5000, 10000])
    assert acc.shape == (3, 3, 3)
    np.testing.assert_allclose(acc[2, 0], [0.2, 0.45, 0.7])  # seed 2 (offset 0.2), reach-v3
    # One run evaluated at other steps: too few shared steps, so the grid is its steps
    # and every other run contributes its nearest evaluation.
    odd = next(r for r in res if r["label"] == "Ours" and r["task"] == "push-v3" and r["seed"] == 0)
    odd["history"] = history(0.0, steps=(100, 9900))
    steps, acc = history_matrix(res, "success_rate")["Ours"]
    np.testing.assert_array_equal(steps, [100, 9900])
    np.testing.assert_allclose(acc[1, 0], [0.1, 0.6])  # seed 1, reach-v3: its evaluations at 0 and 10000
    np.testing.assert_allclose(acc[0, 1], [0.005, 0.495])  # the odd run itself, push-v3


@pytest.mark.parametrize("shape", [(3, 4), (2, 5), (5, 3), (1, 1), (3, 4, 6), (7, 10, 2)])
def test_vectorized_statistics_equal_rliables(shape):
    from rliable import library, metrics

    x = np.random.default_rng(sum(shape)).random(shape)
    steps = [x] if x.ndim == 2 else [x[..., k] for k in range(shape[-1])]
    np.testing.assert_allclose(iqm(x), [metrics.aggregate_iqm(xk) for xk in steps] if x.ndim == 3
                               else metrics.aggregate_iqm(x), rtol=1e-12)
    taus = np.linspace(0.0, 1.0, 101)
    np.testing.assert_array_equal(fraction_above(steps[0], taus), library.score_distributions(steps[0], taus))


def test_markdown_tables():
    res = synthetic()
    stats = compute_statistics(res, reps=REPS)
    md = statistics_markdown(stats)
    lines = md.splitlines()
    assert "3 seeds (0, 1, 2)" in md and f"{REPS} reps" in md and "counts as 200" in md
    i = lines.index("| Task | Acc. |  | Avg(l.) |  |")
    assert lines[i + 2] == "|  | SFT | Ours | SFT | Ours |"
    assert [row.split(" | ")[0] for row in lines[i + 3:i + 6]] == ["| Reach", "| Push", "| Door-Open"]
    acc = score_matrix(res, "success_rate")["Ours"][:, 0]  # Ours on reach-v3
    half = 4.302652729911275 * acc.std(ddof=1) / np.sqrt(3)
    assert lines[i + 3].split(" | ")[2] == f"{acc.mean():.2f} ± {half:.2f}"
    j = lines.index("| Label | IQM Acc. | Mean Acc. | IQM Avg(l.) | Mean Avg(l.) |")
    points, cis = stats.aggregates["success_rate"]
    assert lines[j + 3].startswith(f"| Ours | {points['Ours'][0]:.2f} [{cis['Ours'][0, 0]:.2f}, {cis['Ours'][1, 0]:.2f}] |")


def test_head_to_head_counts_tasks():
    res = [result("Ours", t, s, acc, avg) for s in (0, 1) for t, acc, avg in
           (("push-v3", 1.0, 40.0), ("reach-v3", 0.9, 30.0), ("door-open-v3", 0.5, 90.0))]
    res += [result("PPO", t, s, acc, avg) for s in (0, 1) for t, acc, avg in
            (("push-v3", 1.0, 45.0), ("reach-v3", 1.0, 20.0), ("door-open-v3", 0.2, None))]
    md = statistics_markdown(compute_statistics(res, reps=REPS))
    assert "| PPO | 2 of 3 | 2 of 3 |" in md  # Acc.: push (tie), door-open; Avg(l.): push, door-open (200)
    assert "against each other label" not in statistics_markdown(
        compute_statistics([r for r in res if r["label"] == "PPO"], reps=REPS))


def test_write_statistics_files(tmp_path):
    md = write_statistics(synthetic(), tmp_path / "out", reps=REPS)
    assert (tmp_path / "out" / "stats.md").read_text() == md
    for name in ("aggregate.png", "performance_profile.png", "sample_efficiency.png"):
        data = (tmp_path / "out" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000
    # Without any history there is no sample-efficiency figure; the others are written.
    no_hist = [{**r, "history": []} for r in synthetic()]
    write_statistics(no_hist, tmp_path / "nh", reps=REPS)
    assert (tmp_path / "nh" / "aggregate.png").exists() and not (tmp_path / "nh" / "sample_efficiency.png").exists()
    # Without out_dir: only the Markdown.
    assert write_statistics(synthetic(), None, reps=REPS) == md


def test_one_seed_writes_nothing(tmp_path):
    assert write_statistics(synthetic(seeds=(0,)), tmp_path, reps=REPS) is None
    assert list(tmp_path.iterdir()) == []
    assert write_statistics([], tmp_path, reps=REPS) is None


def test_bootstrap_leaves_numpy_global_random_state_alone():
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    aggregate_intervals({"A": np.random.default_rng(0).random((3, 2))}, reps=REPS, seed=7)
    assert np.random.random() == expected
