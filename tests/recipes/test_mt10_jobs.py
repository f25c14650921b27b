"""Where jobs run: seed directories, per-job settings, absolute paths, errors of Ray jobs."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "recipes"))
import mt10  # noqa: E402
import mt10_jobs as jobs  # noqa: E402


def test_any_error_of_a_ray_job_comes_back_as_one_line_with_its_traceback_kept(tmp_path, monkeypatch):
    def crash(*args):
        raise RuntimeError("remote collection lost a Ray worker 4 times in a row\n(ActorDiedError)")

    monkeypatch.setattr(mt10, "run_units", crash)
    out = mt10.ray_job({"algo": {"names": ["ours"]}}, "ours", "push-v3", 2, str(tmp_path))
    assert out["error"].startswith("error: ours (seed 2)/push-v3: remote collection lost") and "\n" not in out["error"]
    assert "RuntimeError" in (tmp_path / "jobs/ours/push-v3/seed_2/error.log").read_text()


def test_job_dirs_have_a_seed_level_and_older_run_dirs_keep_theirs(tmp_path):
    assert jobs.job_dir(tmp_path, "ours", "push-v3", 3) == tmp_path / "jobs/ours/push-v3/seed_3"
    legacy = tmp_path / "jobs/ours/reach-v3"
    (legacy / "checkpoint").mkdir(parents=True)  # a run directory from before seeds
    assert jobs.job_dir(tmp_path, "ours", "reach-v3", 1) == legacy  # its checkpoint is found on resume


def test_job_config_sets_the_seed_and_leaves_the_run_settings_alone():
    cfg = OmegaConf.create({"seed": 1, "demos": {"seed": None}})
    job = jobs.job_config(cfg, 4)
    assert job.seed == 4 and cfg.seed == 1
    assert job.demos.seed is None  # null: the demos follow the job's seed (mt10_utils.expert_demos)


def test_paths_are_made_absolute_for_workers_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = jobs.absolute_paths({"run_dir": "run", "demos": {"cache_dir": "c"}, "model": {"instructions": "random",
                                                                                    "checkpoint": None}})
    assert cfg["run_dir"] == str(tmp_path / "run") and cfg["demos"]["cache_dir"] == str(tmp_path / "c")
    assert cfg["model"] == {"instructions": "random", "checkpoint": None}
