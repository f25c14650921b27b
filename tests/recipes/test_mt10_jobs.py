"""The recipe's side of running jobs: each job's settings, the run's plan, absolute paths.

The launcher itself (job directories, shards, Ray tasks, resume) is tested in
tests/experiment/test_launcher.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "recipes"))
import mt10  # noqa: E402
import mt10_config  # noqa: E402
from _recipe_config import config  # noqa: E402

from torchrl_chunk.experiment import JobId, absolute_paths  # noqa: E402


def test_a_job_gets_the_run_settings_with_its_own_seed_and_leaves_them_alone(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(mt10, "train_and_evaluate", lambda cfg, algo, task, job_dir, position: seen.append(cfg) or {})
    settings = {"seed": 1, "demos": {"seed": None}}
    mt10.run_job(settings, JobId("ours", "push-v3", 4), tmp_path, 0)
    assert seen[0].seed == 4 and settings["seed"] == 1
    assert seen[0].demos.seed is None  # null: the demos follow the job's seed (mt10_utils.expert_demos)


def test_the_plan_runs_every_algorithm_on_each_task_and_seed_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config("tasks=[reach-v3,push-v3]", "seeds=[1,2]", "algo=all", "run_dir=run", "parallel_tasks=2")
    plan = mt10_config.plan_run(cfg)
    algos = list(cfg.algo.names)
    assert plan.jobs == [JobId(a, t, s) for t in ("reach-v3", "push-v3") for s in (1, 2) for a in algos]
    assert plan.run_dir == Path("run") and plan.settings["run_dir"] == str(tmp_path / "run")
    assert plan.parallel == 2 and plan.launcher == "local" and plan.ray is None
    assert plan.eval_protocol == {"episodes": cfg.eval.episodes, "eval_seed": cfg.eval.eval_seed}
    assert OmegaConf.load(tmp_path / "run" / "config.yaml").seeds == [1, 2]  # the run directory is open


def test_paths_are_made_absolute_for_workers_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = absolute_paths({"run_dir": "run", "demos": {"cache_dir": "c"}, "model": {"instructions": "random",
                                                                              "checkpoint": None}},
                         mt10_config.PATH_SETTINGS)
    assert cfg["run_dir"] == str(tmp_path / "run") and cfg["demos"]["cache_dir"] == str(tmp_path / "c")
    assert cfg["model"] == {"instructions": "random", "checkpoint": None}
