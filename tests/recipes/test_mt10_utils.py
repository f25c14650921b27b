"""What a resume redoes (torchrl_chunk.experiment.finished_result with the recipe's eval protocol) and
what a stopped job says (mt10_utils.stop_message)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "recipes"))
import mt10_utils as u  # noqa: E402
from mt10_config import eval_protocol  # noqa: E402

from torchrl_chunk.experiment import finished_result  # noqa: E402
from torchrl_chunk.experiment.results import RESULT  # noqa: E402

CFG = OmegaConf.create({"eval": {"episodes": 128, "eval_seed": 7}})


def write_result(job_dir: Path, **extra) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / RESULT).write_text(json.dumps({"algo": "ours", "task": "reach-v3", "metrics": {}, **extra}))


def test_a_finished_job_is_kept_only_with_the_same_eval_protocol(tmp_path):
    job = tmp_path / "job"
    assert finished_result(job, eval_protocol(CFG)) is None  # not finished
    write_result(job, eval={"episodes": 128, "eval_seed": 7})
    assert finished_result(job, eval_protocol(CFG))["algo"] == "ours"
    write_result(job, eval={"episodes": 64, "eval_seed": 7})
    assert finished_result(job, eval_protocol(CFG)) is None  # evaluated again from its final checkpoint
    write_result(job)  # result.json from before the field: kept as it is
    assert finished_result(job, eval_protocol(CFG)) is not None
    (job / RESULT).write_text('{"algo": "ours", "ta')  # killed while writing (older versions)
    assert finished_result(job, eval_protocol(CFG)) is None


def test_stop_message_is_one_line_with_checkpoint_and_keeps_the_traceback(tmp_path):
    job = tmp_path / "run" / "jobs" / "ours" / "reach-v3"
    (job / "checkpoint").mkdir(parents=True)
    torch.save({"iteration": 5}, job / "checkpoint" / "state.pt")
    try:
        raise ValueError("demo 3 has NaN\nin ('observation', 'state')")
    except ValueError as err:
        msg = u.stop_message("ours", "reach-v3", job, err)
    assert "\n" not in msg and msg.startswith("error: ours/reach-v3: demo 3 has NaN in")
    assert f"{job / 'checkpoint'} (iteration 5)" in msg and f"resume={tmp_path / 'run'}" in msg
    assert "ValueError" in (job / "error.log").read_text()
    (job / "checkpoint" / "state.pt").write_bytes(b"garbage")
    msg = u.stop_message("ours", "reach-v3", job, ValueError("x"))  # a checkpoint that cannot be loaded
    assert "last good checkpoint" not in msg and "No checkpoint of this job can be loaded" in msg


def test_stop_message_names_the_run_dir_from_a_seed_directory(tmp_path):
    job = tmp_path / "run" / "jobs" / "ours" / "reach-v3" / "seed_2"
    (job / "checkpoint").mkdir(parents=True)
    torch.save({"iteration": 1}, job / "checkpoint" / "state.pt")
    assert f"resume={tmp_path / 'run'} goes on" in u.stop_message("ours", "reach-v3", job, ValueError("x"))
