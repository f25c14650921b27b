"""Tables in Table I's layout: one {label: {task: metrics}} builder, Markdown and CSV."""

from __future__ import annotations

import pytest

from torchrl_chunk.evaluation import (
    AVERAGE_ROW,
    TABLE_I_LABELS,
    build_table,
    merge_results,
    results_to_csv,
    results_to_markdown,
)


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


def test_build_table_from_job_results():
    m = {"success_rate": 0.5, "len_p10": 40.0, "avg_shortest_10pct": 35.0}
    jobs = [
        {"label": "Ours", "task": "push-v3", "metrics": m},
        {"label": "Ablation", "task": "reach-v3", "metrics": m},
        {"label": "SFT", "task": "reach-v3", "metrics": {**m, "success_rate": 0.1}},
        {"label": "SFT", "task": "reach-v3", "metrics": {**m, "success_rate": 0.2}},  # later wins
    ]
    table = build_table(jobs)
    assert list(table) == ["Ours", "Ablation", "SFT"]  # order of appearance
    assert table["SFT"] == {"reach-v3": {**m, "success_rate": 0.2}}
    ordered = build_table(jobs, label_order=TABLE_I_LABELS)
    assert list(ordered) == ["SFT", "Ours", "Ablation"]  # Table I's columns, then the others
    md = results_to_markdown(ordered)
    assert md.splitlines()[2] == "|  | SFT | Ours | Ablation | SFT | Ours | Ablation | SFT | Ours | Ablation |"
    with pytest.raises(ValueError, match=r"result 1 lacks \['metrics'\]"):
        build_table([jobs[0], {"label": "Ours", "task": "push-v3"}])


def test_build_table_averages_seeds():
    def job(seed, succ, length):
        return {"label": "Ours", "task": "push-v3", "seed": seed,
                "metrics": {"success_rate": succ, "len_p10": length, "avg_shortest_10pct": length}}

    table = build_table([job(1, 0.5, 40.0), job(2, 1.0, None), job(2, 0.9, 30.0), job(3, 0.7, 50.0)])
    row = table["Ours"]["push-v3"]  # seed 2's later result wins, then the mean over seeds 1-3
    assert row["seeds"] == 3 and row["success_rate"] == pytest.approx(0.7)
    assert row["len_p10"] == pytest.approx(40.0)
    row = build_table([job(1, 0.5, 40.0), job(2, 0.1, None)])["Ours"]["push-v3"]
    assert row["avg_shortest_10pct"] is None  # as the Average row: missing if any seed's is
