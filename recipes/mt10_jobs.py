"""Where a run's jobs run: their directories and seeds, and the Ray session.

One job is one (algorithm, task, seed); it writes ``run_dir/jobs/<algo>/<task>/seed_<k>/``
wherever it runs (this process, a ``parallel_tasks`` process, a Ray worker on another node),
so its settings carry absolute paths and the run's ``seed`` replaced by its own.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from torchrl_chunk import distributed

RESULT = "result.json"


#: Settings that are paths: made absolute before jobs run in other processes or on other
#: nodes (a Ray worker's working directory is not the driver's).
PATH_SETTINGS = (("run_dir",), ("demos", "cache_dir"), ("demos", "path"), ("model", "checkpoint"),
                 ("model", "instructions"), ("model", "t5_path"))


def absolute_paths(cfg_dict: dict) -> dict:
    """``cfg_dict`` with the relative paths of :data:`PATH_SETTINGS` resolved against this directory."""
    for keys in PATH_SETTINGS:
        parent = cfg_dict
        for k in keys[:-1]:
            parent = parent.get(k) or {}
        value = parent.get(keys[-1])
        if isinstance(value, str) and value not in ("", "random"):
            parent[keys[-1]] = str(Path(value).expanduser().resolve())
    return cfg_dict


def job_dir(run_dir: Path | str, algo: str, task: str, seed: int) -> Path:
    """``jobs/<algo>/<task>/seed_<k>/``; a run directory from before seeds keeps ``jobs/<algo>/<task>/``."""
    legacy = Path(run_dir) / "jobs" / algo / task
    if (legacy / "checkpoint").exists() or (legacy / RESULT).exists():
        return legacy  # resume=<an older run dir> finds its checkpoints where they are
    return legacy / f"seed_{seed}"


def job_config(cfg: DictConfig, seed: int) -> DictConfig:
    """The run's settings with ``seed`` set to this job's (everything a job draws derives from it)."""
    job_cfg = cfg.copy()
    job_cfg.seed = int(seed)
    return job_cfg


def ray_session(cfg: DictConfig):
    """Join (or start) the Ray cluster of ``ray.address``; a no-op inside a Ray worker."""
    here = Path(__file__).resolve().parent  # Ray workers import mt10_utils: recipes/ on their path
    return distributed.init_ray(cfg.ray.address, num_cpus=cfg.ray.num_cpus, python_path=[str(here)])
