"""python -m torchrl_chunk.experiment.buffer_report: the demo buffer's end state and the speed curve, per task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from torchrl_chunk.experiment import buffer_report


def write(run: Path, algo: str, label: str, seed: int, avg, history=(), buffer=None):
    job = run / "jobs" / algo / "push-v3" / f"seed_{seed}"
    job.mkdir(parents=True)
    result = {"label": label, "task": "push-v3", "seed": seed, "history": list(history), "buffer": buffer,
              "metrics": {"success_rate": 1.0, "len_p10": avg, "avg_shortest_10pct": avg}}
    (job / "result.json").write_text(json.dumps(result))


def test_means_over_seeds_curve_and_head_to_head(tmp_path, capsys):
    buf = {"base_length_limit": 70, "length_limit": 50, "trajectories": 20, "expert_trajectories": 2,
           "evicted": 5, "bc_coeff": 0.2}
    write(tmp_path / "r", "ours", "Ours", 1, 40.0, [{"avg_shortest_10pct": 60.0}, {"avg_shortest_10pct": 40.0}], buf)
    write(tmp_path / "r", "ours", "Ours", 2, None, [{"avg_shortest_10pct": 50.0}, {"avg_shortest_10pct": None}],
          {**buf, "length_limit": 60, "bc_coeff": 0.4})
    write(tmp_path / "r", "ppo", "PPO", 1, 45.0)
    write(tmp_path / "r", "ppo", "PPO", 2, 30.0)
    buffer_report.main([str(tmp_path / "r")])
    head, _, row = capsys.readouterr().out.splitlines()
    assert head.split(" | ")[-3:] == ["Avg(l.) Ours", "Avg(l.) PPO", "Ours shorter |"]
    # limit (50+60)/2, BC weight (0.2+0.4)/2, curve (60+50)/2 and (40+200)/2: no success counts as the cap
    assert row == "| push-v3 | 2 | 70 | 55.0 | 20.0 (2.0) | 5.0 | 0.30 | 55.0 | 120.0 | 120.00 | 37.50 | 1/2 |"


def test_unknown_label(tmp_path):
    write(tmp_path / "r", "ppo", "PPO", 1, 45.0)
    with pytest.raises(SystemExit, match="no result labelled 'Ours'; pass --label with one of \\['PPO'\\]"):
        buffer_report.main([str(tmp_path / "r")])


def test_success_curve(tmp_path, capsys):
    hist = [{"success_rate": 0.25, "avg_shortest_10pct": 90.0}, {"success_rate": 0.5, "avg_shortest_10pct": 80.0}]
    write(tmp_path / "r", "ours", "Ours", 1, 80.0, hist, {})
    write(tmp_path / "r", "ours", "Ours", 2, 80.0, [{**h, "success_rate": 1.0} for h in hist], {})
    buffer_report.main([str(tmp_path / "r"), "--curve", "acc"])
    head, _, row = capsys.readouterr().out.splitlines()
    assert "Acc. eval 1" in head
    assert row.split(" | ")[7:9] == ["0.62", "0.75"]
