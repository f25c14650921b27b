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


def _mt50_grid(seeds=(None,)):
    """Job results of two labels on all fifty tasks, in a shuffled task order."""
    import random

    from torchrl_chunk.envs.metaworld import ALL_V3_TASKS

    tasks = list(ALL_V3_TASKS)
    random.Random(0).shuffle(tasks)
    jobs = []
    for seed in seeds:
        for label, base in (("Ours", 0.5), ("SFT", 0.1)):
            for task in tasks:
                i = ALL_V3_TASKS.index(task)
                succ = base + 0.01 * i + (0.05 * seed if seed else 0.0)
                length = None if (label == "SFT" and task == "peg-insert-side-v3") else 40.0 + i
                jobs.append({"label": label, "task": task, "seed": seed,
                             "metrics": {"success_rate": succ, "len_p10": length, "avg_shortest_10pct": length}})
    return jobs


def test_table_i_layout_for_all_fifty_tasks():
    from torchrl_chunk.envs.metaworld import ALL_V3_TASKS, MT10_TASKS
    from torchrl_chunk.evaluation.tables import TASK_DISPLAY_NAMES, display_name

    table = merge_results(build_table(_mt50_grid(), label_order=TABLE_I_LABELS))
    assert list(table) == [*ALL_V3_TASKS, AVERAGE_ROW]  # MT10 in Table I order first, then the other forty
    assert table[AVERAGE_ROW]["Ours"]["success_rate"] == pytest.approx(0.5 + 0.01 * 24.5)
    assert table[AVERAGE_ROW]["Ours"]["len_p10"] == pytest.approx(64.5)
    assert table[AVERAGE_ROW]["SFT"]["len_p10"] is None  # one task's length missing: the average is too

    assert set(TASK_DISPLAY_NAMES) == set(ALL_V3_TASKS)
    assert len(set(TASK_DISPLAY_NAMES.values())) == 50  # every row is told apart
    assert [display_name(t) for t in MT10_TASKS[:3]] == ["Reach", "Push", "Pick-Place"]  # Table I's names
    assert display_name("pick-out-of-hole-v3") == "Pick-Out-of-Hole"
    assert display_name("button-press-topdown-wall-v3") == "Button-Press-Topdown-Wall"

    md = results_to_markdown(build_table(_mt50_grid(), label_order=TABLE_I_LABELS)).splitlines()
    assert len(md) == 3 + 50 + 1 + 2  # two header rows and the rule, 50 tasks, Average; a blank line, the legend
    assert md[2] == "|  | SFT | Ours | SFT | Ours | SFT | Ours |"
    assert md[3] == "| Reach | 0.10 | 0.50 | 40.00 | 40.00 | 40.00 | 40.00 |"
    assert md[10] == "| Peg-Insert-Side | 0.17 | 0.57 | – | 47.00 | – | 47.00 |"
    assert md[13] == "| Assembly | 0.20 | 0.60 | 50.00 | 50.00 | 50.00 | 50.00 |"
    assert md[-4] == "| Sweep | 0.59 | 0.99 | 89.00 | 89.00 | 89.00 | 89.00 |"
    assert md[-3] == "| Average | 0.34 | 0.74 | – | 64.50 | – | 64.50 |"  # 0.345 and 0.745 (binary) round down
    assert md[-2:] == ["", "–: fewer than 10% of the episodes succeeded, so no length is measured (in the Average "
                           "row: on at least one task)."]
    assert [row.split(" | ")[0][2:] for row in md[3:-3]] == [TASK_DISPLAY_NAMES[t] for t in ALL_V3_TASKS]
    csv_lines = results_to_csv(build_table(_mt50_grid())).strip().splitlines()
    assert len(csv_lines) == 2 + 50 + 1 and csv_lines[-1].startswith("Average,")


def test_rliable_statistics_over_fifty_tasks():
    from torchrl_chunk.envs.metaworld import ALL_V3_TASKS
    from torchrl_chunk.evaluation.statistics import compute_statistics, score_matrix, statistics_markdown

    jobs = _mt50_grid(seeds=(1, 2, 3))
    acc = score_matrix(jobs, "success_rate")
    assert acc["Ours"].shape == (3, 50)  # seeds x tasks, tasks in ALL_V3_TASKS order
    assert acc["Ours"][0, :3].tolist() == pytest.approx([0.55, 0.56, 0.57])
    length = score_matrix(jobs, "avg_shortest_10pct")
    assert (length["SFT"][:, ALL_V3_TASKS.index("peg-insert-side-v3")] == 200.0).all()  # missing counts as 200
    stats = compute_statistics(jobs, reps=200)
    assert stats.tasks == ALL_V3_TASKS and stats.labels == ("SFT", "Ours")
    points, cis = stats.aggregates["success_rate"]
    assert points["Ours"][1] == pytest.approx(0.5 + 0.245 + 0.1)  # the mean over 3 seeds x 50 tasks
    assert cis["Ours"][0, 1] <= points["Ours"][1] <= cis["Ours"][1, 1]
    md = statistics_markdown(stats)
    assert "### Aggregate over 50 tasks × 3 seeds" in md and "| Pick-Out-of-Hole | " in md
    assert "| SFT | 50 of 50 | 50 of 50 |" in md  # Ours is better on every one of the fifty tasks


def _m(acc, length):
    return {"success_rate": acc, "len_p10": length, "avg_shortest_10pct": length}


def test_columns_of_different_tasks_average_the_shared_ones_and_mark_missing_cells():
    """Issue 19: merging results of different task lists averaged different tasks per column without a
    word, and a missing result printed as "–", the mark of "fewer than 10% successes"."""
    from torchrl_chunk.evaluation.tables import AVERAGED_TASKS, MISSING, NO_RESULT, table_legend

    assert (MISSING, NO_RESULT) == ("–", "n/a")
    sft = {"reach-v3": _m(0.5, 30.0), "push-v3": _m(0.25, None), "pick-place-v3": _m(0.75, 50.0)}
    ours = {"reach-v3": _m(1.0, 20.0), "pick-place-v3": _m(0.25, 60.0),
            AVERAGE_ROW: _m(0.9, 10.0)}  # a carried Average over Ours's own tasks is not the shared one
    table = merge_results({"SFT": sft, "Ours": ours})
    assert "Ours" not in table["push-v3"]  # no result: nothing made up
    assert table[AVERAGE_ROW]["SFT"] == {**_m(0.625, 40.0), AVERAGED_TASKS: ["reach-v3", "pick-place-v3"]}
    assert table[AVERAGE_ROW]["Ours"]["success_rate"] == pytest.approx(0.625)
    assert table[AVERAGE_ROW]["Ours"]["len_p10"] == pytest.approx(40.0)
    md = results_to_markdown({"SFT": sft, "Ours": ours}).splitlines()
    assert md[3:] == [
        "| Reach | 0.50 | 1.00 | 30.00 | 20.00 | 30.00 | 20.00 |",
        "| Push | 0.25 | n/a | – | n/a | – | n/a |",  # SFT's lengths not measured, Ours never ran push
        "| Pick-Place | 0.75 | 0.25 | 50.00 | 60.00 | 50.00 | 60.00 |",
        "| Average (2 of 3 tasks) | 0.62 | 0.62 | 40.00 | 40.00 | 40.00 | 40.00 |",
        "",
        "–: fewer than 10% of the episodes succeeded, so no length is measured (in the Average row: on at least "
        "one task).",
        "n/a: no result for that task in that column.",
        "Average (2 of 3 tasks): the mean over the tasks every column has (Reach, Pick-Place); Ours lacks Push.",
    ]
    csv_lines = results_to_csv({"SFT": sft, "Ours": ours}).splitlines()
    assert csv_lines[3] == "Push,0.25,n/a,–,n/a,–,n/a" and csv_lines[-1].startswith("Average (2 of 3 tasks),0.62,")
    assert len(csv_lines) == 2 + 3 + 1  # rows only, no legend

    # no task in every column: no Average, said so
    apart = merge_results({"SFT": {"push-v3": _m(0.5, 30.0)}, "Ours": {"reach-v3": _m(1.0, 20.0)}})
    assert apart[AVERAGE_ROW] == {}
    assert table_legend(apart, columns=["SFT", "Ours"])[-1] == (
        "Average: none, no task has a result in every column; SFT lacks Reach; Ours lacks Push.")
    # the same tasks everywhere: the Average row and its carried values as before, no legend without marks
    same = merge_results({"SFT": {"reach-v3": _m(0.5, 30.0)}, "Ours": {"reach-v3": _m(1.0, 20.0),
                                                                        AVERAGE_ROW: _m(0.9, 10.0)}})
    assert same[AVERAGE_ROW] == {"SFT": _m(0.5, 30.0), "Ours": _m(0.9, 10.0)}
    assert results_to_markdown(same).splitlines()[-1] == "| Average | 0.50 | 0.90 | 30.00 | 10.00 | 30.00 | 10.00 |"
