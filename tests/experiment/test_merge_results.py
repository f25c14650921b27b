"""python -m torchrl_chunk.experiment.merge_results: several run directories -> one Table I."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from torchrl_chunk.experiment import JobError, merge_results


def write_result(run: Path, algo: str, label: str, task: str, acc: float, avg: float | None):
    job = run / "jobs" / algo / task
    job.mkdir(parents=True)
    metrics = {"success_rate": acc, "len_p10": avg, "avg_shortest_10pct": avg}
    (job / "result.json").write_text(json.dumps({"label": label, "task": task, "metrics": metrics}))


def test_merges_columns_from_two_runs(tmp_path, capsys):
    write_result(tmp_path / "a", "sft", "SFT", "reach-v3", 0.5, 30.0)
    write_result(tmp_path / "a", "sft", "SFT", "push-v3", 0.25, 50.0)
    write_result(tmp_path / "b", "ours", "Ours", "reach-v3", 1.0, 20.0)
    write_result(tmp_path / "b", "ours", "Ours", "push-v3", 0.75, None)
    merge_results.main([str(tmp_path / "b"), str(tmp_path / "a"), "--out", str(tmp_path / "m")])
    md = (tmp_path / "m" / "results.md").read_text()
    assert md == capsys.readouterr().out
    lines = md.splitlines()
    assert lines[2] == "|  | SFT | Ours | SFT | Ours | SFT | Ours |"
    assert lines[3].startswith("| Reach | 0.50 | 1.00 | 30.00 | 20.00 |")
    assert lines[4].startswith("| Push | 0.25 | 0.75 | 50.00 | – |")
    assert lines[5] == "| Average | 0.38 | 0.88 | 40.00 | – | 40.00 | – |"
    assert (tmp_path / "m" / "results.csv").read_text().splitlines()[1] == ",SFT,Ours,SFT,Ours,SFT,Ours"


def test_seed_directories_are_found_and_averaged(tmp_path):
    for seed, acc in ((1, 0.5), (2, 1.0)):
        job = tmp_path / "r" / "jobs" / "ours" / "reach-v3" / f"seed_{seed}"
        job.mkdir(parents=True)
        metrics = {"success_rate": acc, "len_p10": 20.0 * seed, "avg_shortest_10pct": 20.0}
        (job / "result.json").write_text(json.dumps({"label": "Ours", "task": "reach-v3", "seed": seed,
                                                     "metrics": metrics}))
    row = merge_results.collect([tmp_path / "r"])["Ours"]["reach-v3"]
    assert row["seeds"] == 2 and row["success_rate"] == 0.75 and row["len_p10"] == 30.0


def test_an_older_run_without_seeds_is_replaced_by_a_newer_one_of_its_seed(tmp_path):
    write_result(tmp_path / "old", "ours", "Ours", "reach-v3", 0.5, 30.0)  # jobs/<algo>/<task>/, no "seed"
    (tmp_path / "old" / "config.yaml").write_text("seed: 1\n")
    job = tmp_path / "new" / "jobs" / "ours" / "reach-v3" / "seed_1"
    job.mkdir(parents=True)
    metrics = {"success_rate": 1.0, "len_p10": 20.0, "avg_shortest_10pct": 20.0}
    (job / "result.json").write_text(json.dumps({"label": "Ours", "task": "reach-v3", "seed": 1, "metrics": metrics}))
    row = merge_results.collect([tmp_path / "old", tmp_path / "new"])["Ours"]["reach-v3"]
    assert row == metrics  # the later run wins for seed 1, as documented; not a mean of two "seeds"


def test_not_a_run_directory(tmp_path):
    with pytest.raises(SystemExit, match="no jobs"):
        merge_results.main([str(tmp_path)])
    with pytest.raises(JobError, match="no jobs"):
        merge_results.load_results([tmp_path])
    proc = subprocess.run([sys.executable, "-m", "torchrl_chunk.experiment.merge_results", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"error: {tmp_path} holds no jobs/<algo>/<task>/seed_<k>/result.json; is it a finished run?"]


def test_tagged_run_gets_its_own_columns(tmp_path, capsys):
    write_result(tmp_path / "a", "ours", "Ours", "reach-v3", 0.5, 30.0)
    write_result(tmp_path / "b", "ours", "Ours", "reach-v3", 1.0, 20.0)
    merge_results.main([str(tmp_path / "a"), f"{tmp_path / 'b'}=450k"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "|  | Ours | Ours (450k) | Ours | Ours (450k) | Ours | Ours (450k) |"
    assert lines[3].startswith("| Reach | 0.50 | 1.00 | 30.00 | 20.00 |")


def write_seed_result(run: Path, algo: str, label: str, task: str, seed: int, acc: float, history=()):
    job = run / "jobs" / algo / task / f"seed_{seed}"
    job.mkdir(parents=True)
    metrics = {"success_rate": acc, "len_p10": 60.0 - 30 * acc, "avg_shortest_10pct": 60.0 - 30 * acc}
    (job / "result.json").write_text(json.dumps({"label": label, "task": task, "seed": seed, "metrics": metrics,
                                                 "history": list(history)}))


def multi_seed_runs(tmp_path: Path, seeds=(0, 1, 2)) -> list[str]:
    """An SFT run and an Ours run (with quick-evaluation histories), both of ``seeds`` on two tasks."""
    for seed in seeds:
        for i, task in enumerate(("reach-v3", "push-v3")):
            write_seed_result(tmp_path / "sft", "sft", "SFT", task, seed, 0.3 + 0.1 * seed)
            hist = [{"env_steps": s, "success_rate": 0.3 + s / 20000, "avg_shortest_10pct": 80.0 - s / 500}
                    for s in (0, 5000, 10000)]
            write_seed_result(tmp_path / "ours", "ours", "Ours", task, seed, 0.7 + 0.1 * seed - 0.05 * i, hist)
    return [str(tmp_path / "sft"), str(tmp_path / "ours")]


PNGS = ("aggregate.png", "performance_profile.png", "sample_efficiency.png")


def test_several_seeds_write_stats_and_plots(tmp_path, capsys):
    merge_results.main([*multi_seed_runs(tmp_path), "--out", str(tmp_path / "m"), "--reps", "200"])
    out = capsys.readouterr().out
    stats = (tmp_path / "m" / "stats.md").read_text()
    assert out == (tmp_path / "m" / "results.md").read_text() + "\n" + stats
    assert "3 seeds (0, 1, 2)" in stats and "200 reps" in stats
    assert "| Reach | 0.40 ± 0.25 | 0.80 ± 0.25 |" in stats  # 0.3/0.4/0.5: s = 0.1, t_{0.975,2} 0.1/sqrt(3) = 0.248
    assert "| SFT | 0.40 [" in stats and "| Ours | 0.77 [" in stats  # IQM: mean of the middle 4 of 6 runs (0.775)
    for name in PNGS:
        assert (tmp_path / "m" / name).read_bytes().startswith(b"\x89PNG")


def test_several_seeds_without_out_print_stats_only(tmp_path, capsys):
    merge_results.main([*multi_seed_runs(tmp_path), "--reps", "200"])
    assert "## Statistics over seeds" in capsys.readouterr().out
    assert not list(tmp_path.glob("**/*.png")) and not list(tmp_path.glob("**/stats.md"))


def test_no_stats_flag_and_one_seed_write_no_stats(tmp_path, capsys):
    runs = multi_seed_runs(tmp_path)
    merge_results.main([*runs, "--out", str(tmp_path / "m"), "--no-stats"])
    assert (tmp_path / "m" / "results.md").exists() and not (tmp_path / "m" / "stats.md").exists()
    one = multi_seed_runs(tmp_path / "one", seeds=(4,))
    merge_results.main([*one, "--out", str(tmp_path / "m1"), "--reps", "200"])
    assert (tmp_path / "m1" / "results.md").exists()
    assert not (tmp_path / "m1" / "stats.md").exists() and not list((tmp_path / "m1").glob("*.png"))
    assert "Statistics" not in capsys.readouterr().out


def test_ragged_seeds_warn_and_keep_the_table(tmp_path, capsys):
    runs = multi_seed_runs(tmp_path)
    write_seed_result(tmp_path / "ours", "ours", "Ours", "reach-v3", 3, 0.9)  # seed 3 lacks push-v3
    merge_results.main([*runs, "--out", str(tmp_path / "m"), "--reps", "200"])
    err = capsys.readouterr().err
    assert "warning: no statistics over seeds: label 'Ours' has no result for task 'push-v3' with seed(s) [3]" in err
    assert (tmp_path / "m" / "results.md").exists() and not (tmp_path / "m" / "stats.md").exists()



def test_the_recipe_writes_the_same_stats_as_merge_results(tmp_path, monkeypatch):
    """The launcher's write_tables (recipes/mt10.py's Table I) and merge_results make stats.md with one
    library call."""
    import functools

    from torchrl_chunk import evaluation
    from torchrl_chunk.experiment import write_tables

    monkeypatch.setattr(evaluation, "write_statistics", functools.partial(evaluation.write_statistics, reps=200))
    runs = multi_seed_runs(tmp_path)
    merge_results.main([*runs, "--out", str(tmp_path / "m"), "--reps", "200"])
    (tmp_path / "run").mkdir()
    md = write_tables(tmp_path / "run", merge_results.load_results(runs))
    stats = (tmp_path / "run" / "stats.md").read_text()
    assert stats == (tmp_path / "m" / "stats.md").read_text() and md.endswith("\n" + stats)
    assert all((tmp_path / "run" / name).exists() for name in PNGS)
    one = tmp_path / "one"
    one.mkdir()
    write_tables(one, merge_results.load_results(multi_seed_runs(one, seeds=(4,))))
    assert (one / "results.md").exists() and not (one / "stats.md").exists()


def test_runs_of_different_task_lists_average_the_shared_tasks_and_say_so(tmp_path, capsys):
    """Issue 19: columns covering different tasks were averaged over different tasks without a word,
    and a missing result printed "–", the mark of fewer than 10% successes."""
    write_result(tmp_path / "a", "sft", "SFT", "reach-v3", 0.5, 30.0)
    write_result(tmp_path / "a", "sft", "SFT", "push-v3", 0.25, None)  # fewer than 10% successes: "–"
    write_result(tmp_path / "b", "ours", "Ours", "reach-v3", 1.0, 20.0)  # a run of reach-v3 only
    merge_results.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m"), "--no-stats"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[3:] == [
        "| Reach | 0.50 | 1.00 | 30.00 | 20.00 | 30.00 | 20.00 |",
        "| Push | 0.25 | n/a | – | n/a | – | n/a |",
        "| Average (1 of 2 tasks) | 0.50 | 1.00 | 30.00 | 20.00 | 30.00 | 20.00 |",  # SFT over reach only
        "",
        "–: fewer than 10% of the episodes succeeded, so no length is measured (in the Average row: on at least "
        "one task).",
        "n/a: no result for that task in that column.",
        "Average (1 of 2 tasks): the mean over the tasks every column has (Reach); Ours lacks Push.",
    ]
    assert (tmp_path / "m" / "results.md").read_text().splitlines() == lines
    assert (tmp_path / "m" / "results.csv").read_text().splitlines()[-1] == \
        "Average (1 of 2 tasks),0.50,1.00,30.00,20.00,30.00,20.00"
