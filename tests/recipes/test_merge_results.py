"""recipes/merge_results.py: several run directories -> one Table I."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("merge_results", ROOT / "recipes" / "merge_results.py")
merge_results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(merge_results)


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


def test_tagged_run_gets_its_own_columns(tmp_path, capsys):
    write_result(tmp_path / "a", "ours", "Ours", "reach-v3", 0.5, 30.0)
    write_result(tmp_path / "b", "ours", "Ours", "reach-v3", 1.0, 20.0)
    merge_results.main([str(tmp_path / "a"), f"{tmp_path / 'b'}=450k"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "|  | Ours | Ours (450k) | Ours | Ours (450k) | Ours | Ours (450k) |"
    assert lines[3].startswith("| Reach | 0.50 | 1.00 | 30.00 | 20.00 |")
