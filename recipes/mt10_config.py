"""Settings of recipes/mt10.py: checked before anything is written, and the run directory.

``check_config`` names every invalid setting in one line: first keys that are not settings,
missing settings and values of the wrong type (the typed schema of :mod:`mt10_schema`), then
ranges, choices and combinations.
``prepare_run`` then creates a new run directory, continues one with the same settings, or
resumes one (``resume=``) applying only the overrides in :data:`RESUME_ALLOWED`; the rules
themselves live in :mod:`torchrl_chunk.experiment.run_dir`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mt10_schema import settings_problems
from torchrl_chunk.envs import MT10_TASKS, NUM_EVAL_CONFIGS, TASK_INSTRUCTIONS
from torchrl_chunk.envs.metaworld import resolve_task_list
from torchrl_chunk.envs.workers import available_cpus
from torchrl_chunk.experiment import RunDirError, load_run_settings, open_run_dir, resume_settings, save_run_settings
from torchrl_chunk.experiment.run_dir import flatten
from torchrl_chunk.video import require_pyav

#: Overrides that ``resume=`` applies: they change neither the training data nor the updates.
#: (``threads_per_process`` is not: CPU kernels may sum in another order with other thread
#: counts, and a resumed run must equal an uninterrupted one bit for bit.)
RESUME_ALLOWED = ("eval", "logger", "device", "env.num_workers", "env.worker_timeout_s", "parallel_tasks", "launcher",
                  "ray")


# ----------------------------------------------------------------------------------------
# settings: every value checked before anything is written
# ----------------------------------------------------------------------------------------
def _int(lo: int, hi: float = math.inf, optional: bool = False):
    return ("int", lo, hi, optional)


def _num(lo: float, hi: float = math.inf, optional: bool = False, open_lo: bool = False):
    return ("num", lo, hi, optional, open_lo)


#: Numeric settings and their ranges (``open_lo``: strictly greater than ``lo``).
NUMERIC = {
    "seed": _int(0), "parallel_tasks": _int(1), "threads_per_process": _int(1),
    "env.horizon": _int(1), "env.num_envs": _int(1), "env.max_steps": _int(1),
    "env.decisions_per_env": _int(1, optional=True), "env.worker_timeout_s": _num(0, open_lo=True), "env.image_size": _int(8),
    "demos.num": _int(1), "demos.seed": _int(0, optional=True),
    "ppo.clip_epsilon": _num(0, open_lo=True), "ppo.gamma": _num(0, 1, open_lo=True), "ppo.lmbda": _num(0, 1),
    "ppo.critic_coeff": _num(0), "ppo.entropy_coeff": _num(0), "ppo.epochs": _int(1), "ppo.minibatch_size": _int(1),
    "bc.coeff": _num(0), "bc.batch_size": _int(1), "bc.pretrain_steps": _int(0), "bc.pretrain_batch_size": _int(1),
    "bc.pretrain_lr": _num(0, optional=True, open_lo=True),
    "buffer.max_size": _int(1), "buffer.length_weighting": _num(0), "bc.decay_floor": _num(0, 1, optional=True),
    "buffer.adaptive.quantile": _num(0, 1, open_lo=True), "buffer.adaptive.window": _int(1),
    "buffer.adaptive.min_successes": _int(1),
    "schedule.warmup_steps": _num(0), "schedule.constant": _num(0),
    "optim.lr": _num(0, open_lo=True), "optim.critic_lr": _num(0, optional=True, open_lo=True),
    "optim.weight_decay": _num(0), "optim.max_grad_norm": _num(0, open_lo=True),
    "train.total_env_steps": _int(1), "train.eval_every_env_steps": _int(1),
    "train.quick_eval_episodes": _int(1), "train.checkpoint_every_iters": _int(1),
    "eval.episodes": _int(1), "eval.eval_seed": _int(0), "eval.num_envs": _int(1), "eval.video_episodes": _int(0),
    "eval.workers": _int(1), "collector.workers": _int(1),
    "ray.num_cpus": _int(1, optional=True), "ray.max_retries": _int(0), "ray.collector_restarts": _int(0),
    "ray.job_gpus": _num(0),
}
#: Numbers of the model presets, checked when the chosen model has them.
MODEL_NUMERIC = {
    "model.task_embed_dim": _int(1), "model.channels": _int(1), "model.embed_dim": _int(1),
    "model.window_size": _int(1), "model.log_std_init": _num(-math.inf), "model.hidden_dim": _int(1),
    "model.text_dim": _int(1),
}
CHOICES = {
    "device": ("auto", "cpu", "cuda"), "ppo.discount": ("chunk", "step"),
    "bc.loss_form": ("nll", "mse", "nll_detached_scale"), "buffer.mode": ("filtered", "static", "unrestricted"),
    "buffer.storage": ("memory", "memmap"), "schedule.kind": ("tanh", "constant"),
    "schedule.unit": ("env_steps", "updates"), "optim.name": ("adam", "adamw"),
    "logger.backend": ("csv", "tensorboard", "wandb"), "model.name": ("mlp", "pixel", "octo_small", "tiny_vla"),
    "model.precision": ("fp32", "bf16"),
    "launcher": ("local", "ray"), "collector.backend": ("local", "ray"), "eval.backend": ("local", "ray"),
}


def _check_number(key: str, value: Any, rule: tuple) -> str | None:
    kind, lo, hi, optional = rule[:4]
    open_lo = rule[4] if kind == "num" else False
    if value is None:
        return None if optional else f"{key} must be set (got null)"
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "int" and not is_int:
        return f"{key} must be an integer, got {value!r}"
    if kind == "num" and not (is_int or isinstance(value, float)) or (isinstance(value, float) and not math.isfinite(value)):
        return f"{key} must be a finite number, got {value!r}"
    if value < lo or (open_lo and value == lo) or value > hi:
        rel = ">" if open_lo else ">="
        rng = f"{rel} {lo}" + (f" and <= {hi}" if hi != math.inf else "")
        return f"{key} must be {rng}, got {value!r}"
    return None


def check_config(cfg: DictConfig, allow: tuple[str, ...] | list[str] = ()) -> None:
    """Raise ``SystemExit`` with every invalid setting named, before anything is written.

    Keys and types first (:func:`mt10_schema.settings_problems`; ``allow``: keys of a resumed
    run's ``config.yaml`` that are no longer settings); the values are judged once those hold.
    """
    errors = settings_problems(cfg, allow)
    if errors:
        raise SystemExit("error: " + "; ".join(errors) + ". Fix these settings and run again.")
    model_rules = {k: r for k, r in MODEL_NUMERIC.items() if OmegaConf.select(cfg, k, default=None) is not None}
    for key, rule in {**NUMERIC, **model_rules}.items():
        problem = _check_number(key, OmegaConf.select(cfg, key, default=None), rule)
        if problem:
            errors.append(problem)
    clip = cfg.ppo.clip_value  # a bool, null or a number (the schema): a number must be a threshold
    if not (clip is None or isinstance(clip, bool) or (math.isfinite(clip) and clip > 0)):
        errors.append(f"ppo.clip_value must be true (clip at ppo.clip_epsilon), false, null or a number > 0, "
                      f"got {clip!r}")
    hidden = cfg.model.get("hidden")
    if hidden is not None and not (len(hidden) and all(isinstance(n, int) and n >= 1 for n in hidden)):
        errors.append(f"model.hidden must be a non-empty list of layer widths >= 1, got {list(hidden)}")
    for key, valid in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value not in valid:
            errors.append(f"{key} must be one of {', '.join(valid)}, got {value!r}")
    seeds = cfg.get("seeds")
    if seeds is not None and not (OmegaConf.is_list(seeds) and len(seeds) and all(isinstance(k, int) and not isinstance(k, bool) and k >= 0
                                                      for k in seeds) and len(set(seeds)) == len(seeds)):
        errors.append(f"seeds must be null or a list of distinct integers >= 0 (e.g. seeds=[1,2,3]), got {seeds}")
    limit = cfg.buffer.length_limit
    if not (limit is None or limit == "adaptive" or (isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1)):
        errors.append(f"buffer.length_limit must be null (the longest expert demo), a number of env steps >= 1 "
                      f"or adaptive, got {limit!r}")
    adaptive = cfg.buffer.adaptive
    if all(isinstance(adaptive.get(k), int) for k in ("min_successes", "window")) and adaptive.min_successes > adaptive.window:
        errors.append(f"buffer.adaptive.min_successes ({cfg.buffer.adaptive.min_successes}) must be <= "
                      f"buffer.adaptive.window ({cfg.buffer.adaptive.window})")
    unknown = [n for n in cfg.algo.names if n not in cfg.algorithms]
    if unknown:
        errors.append(f"unknown algorithm(s) {unknown} in algo.names; valid: {', '.join(cfg.algorithms)}")
    problem = _tasks_problem(cfg.get("tasks"))
    if problem:
        errors.append(problem)
    errors += demo_source_problems(cfg, read_files=not errors)
    if not errors:
        errors += _check_combinations(cfg)
    if errors:
        raise SystemExit("error: " + "; ".join(errors) + ". Fix these settings and run again.")


def _check_combinations(cfg: DictConfig) -> list[str]:
    errors = []
    model_h = cfg.model.get("horizon")
    for name in cfg.algo.names:
        h = int(cfg.algorithms[name].horizon)
        if model_h is not None and int(model_h) != h:
            errors.append(f"model.horizon={model_h} but algorithm {name} uses chunks of h={h}; set env.horizon and "
                          "model.horizon to the same value")
    if cfg.eval.episodes > NUM_EVAL_CONFIGS:
        errors.append(f"eval.episodes must be <= {NUM_EVAL_CONFIGS} (the fixed evaluation configurations)")
    if cfg.train.quick_eval_episodes > cfg.eval.episodes:
        errors.append("train.quick_eval_episodes must be <= eval.episodes (quick evals use the first configurations)")
    workers = cfg.env.num_workers
    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int)
                              or not 1 <= workers <= cfg.env.num_envs):
        errors.append(f"env.num_workers must be auto or an integer in [1, env.num_envs={cfg.env.num_envs}], "
                      f"got {workers!r}")
    if cfg.collector.backend == "ray":
        if cfg.env.num_envs % cfg.collector.workers:
            errors.append(f"collector.backend=ray needs env.num_envs={cfg.env.num_envs} to be a multiple of "
                          f"collector.workers={cfg.collector.workers} (each Ray collector holds the same number of envs)")
        if cfg.env.num_workers not in (1, "auto"):
            errors.append("collector.backend=ray runs each collector's envs in its actor: set env.num_workers=1 and "
                          "scale with collector.workers")
    if cfg.model.get("precision", "fp32") == "bf16" and "ray" in (cfg.collector.backend, cfg.eval.backend):
        errors.append("model.precision=bf16 acts in bf16 only with collector.backend=local and eval.backend=local "
                      "(Ray workers would act in fp32): use the local backends or model.precision=fp32")
    if cfg.launcher == "ray" and cfg.device == "cuda" and not cfg.ray.job_gpus:
        errors.append("launcher=ray with device=cuda needs ray.job_gpus > 0 (Ray hides the GPUs from tasks that "
                      "ask for none), e.g. ray.job_gpus=1 or 0.25 to share one GPU between four jobs")
    uses_ray = ray_settings(cfg)
    if uses_ray:
        try:
            from torchrl_chunk.distributed import require_ray

            require_ray()
        except ImportError as err:
            errors.append(f"{uses_ray[0]}=ray: {err}")
    if cfg.eval.video_episodes and cfg.env.from_pixels:
        try:
            require_pyav()
        except ImportError as err:
            errors.append(f"eval.video_episodes={cfg.eval.video_episodes}: {err}")
    if cfg.device == "cuda" and not torch.cuda.is_available() and cfg.launcher != "ray":  # jobs run on GPU nodes
        errors.append("device=cuda but no CUDA device is visible; use device=auto or cpu")
    if cfg.model.name == "octo_small" and cfg.model.instructions not in (None, "random"):
        errors += _check_instruction_table(Path(cfg.model.instructions))
    return errors


def _check_instruction_table(path: Path) -> list[str]:
    """The table must hold MT10's instructions in task order (row i is task_id i)."""
    from torchrl_chunk.modules.octo.torch_checkpoint import torch_load

    fix = "write it with the commands of docs/octo.md, section 3 (MT10's list, in task order)"
    if not path.is_file():
        return [f"model.instructions={path} does not exist; {fix}"]
    try:
        blob = torch_load(path, fix, error=ValueError)  # one line naming the file for any bad file
    except ValueError as err:
        return [f"model.instructions={err}"]
    got = blob.get("instructions") if isinstance(blob, dict) else None
    expected = [TASK_INSTRUCTIONS[t] for t in MT10_TASKS]
    if got != expected:
        return [f"model.instructions={path} does not hold MT10's {len(expected)} instructions in task order "
                f"(it has {len(got) if isinstance(got, list) else 'no'} instructions); {fix}"]
    return []


#: ``demos.source``: MetaWorld's scripted experts, a LeRobot v3 dataset, a TorchRL ``rb.dumps`` directory.
DEMO_SOURCES = ("scripted", "lerobot", "replay_buffer")


def demo_source_path(cfg: DictConfig, task: str) -> Path:
    """``demos.path/<task>`` when that folder exists (one source per task), else ``demos.path`` itself."""
    root = Path(str(cfg.demos.path)).expanduser()
    return root / task if (root / task).is_dir() else root


def demo_source_problems(cfg: DictConfig, read_files: bool = True) -> list[str]:
    """``demos.source`` and ``demos.path``; with ``read_files``, each task's source is opened (metadata
    only) and must fit MetaWorld: 4-dim actions, 39-dim states, success recorded (or
    ``demos.assume_success``), enough episodes, frames of ``env.image_size`` with ``env.from_pixels``."""
    from torchrl_chunk.data import DemoSourceError, inspect_demo_source
    from torchrl_chunk.envs.metaworld import ACTION_DIM, STATE_DIM

    d = cfg.demos
    source, path = d.get("source", "scripted"), d.get("path")
    if source not in DEMO_SOURCES:
        return [f"demos.source must be one of {', '.join(DEMO_SOURCES)}, got {source!r}"]
    if source == "scripted":
        return [] if path is None else [f"demos.path={path} is read only with demos.source=lerobot or replay_buffer "
                                         "(scripted collects MetaWorld's experts): set demos.source, or demos.path=null"]
    if not path:
        what = "LeRobot dataset root" if source == "lerobot" else "rb.dumps directory"
        return [f"demos.source={source} needs demos.path: the {what} (or a folder holding one per task, named after "
                "the task)"]
    pixels = bool(cfg.env.from_pixels)
    if source == "lerobot" and pixels and not d.get("image_key"):
        return ["demos.source=lerobot with env.from_pixels=true needs demos.image_key: the dataset's camera column "
                "(an image or video feature, e.g. observation.image)"]
    if not read_files:
        return []
    try:
        tasks = _task_names(cfg.tasks)
    except ValueError:
        return []  # reported by the tasks check
    root = Path(str(path)).expanduser()
    if len(tasks) > 1 and not all((root / t).is_dir() for t in tasks):
        missing = next(t for t in tasks if not (root / t).is_dir())
        return [f"demos.path={path} must hold one source per task, in <path>/<task>/, for a run of {len(tasks)} tasks; "
                f"{root / missing} is missing"]
    algos = [cfg.algorithms[a] for a in cfg.algo.names if a in cfg.algorithms]
    needed = max([int(a.num_demos) for a in algos], default=int(d.num))
    size = int(cfg.env.image_size)
    errors = []
    for task in tasks:
        where = demo_source_path(cfg, task)
        try:
            info = inspect_demo_source(source, where, state_key=d.get("state_key", "observation.state"),
                                       image_key=d.get("image_key") if source == "lerobot" and pixels else None)
        except DemoSourceError as err:
            errors.append(f"demos.path: {err}".rstrip("."))
            continue
        fits = [(info.action_shape[-1:] == (ACTION_DIM,), f"actions of shape {list(info.action_shape)}",
                 f"[{ACTION_DIM}] (MetaWorld's action)"),
                (info.state_shape == (STATE_DIM,), f"states of shape {list(info.state_shape or [])}",
                 f"[{STATE_DIM}] (MetaWorld's state; demos.state_key picks a LeRobot column)")]
        if pixels:
            fits.append((info.image_shape == (size, size, 3), f"images of shape {list(info.image_shape or [])}",
                         f"[{size}, {size}, 3] (env.image_size, HWC)"))
        for ok, got, want in fits:
            if not ok:
                errors.append(f"demos.path={where} holds {got} but {task} needs {want}")
        if not info.has_success and not d.get("assume_success"):
            errors.append(f"demos.path={where} records no success: set demos.assume_success=true if every episode "
                          "in it is a successful demonstration")
        if info.num_episodes < needed:
            errors.append(f"demos.path={where} holds {info.num_episodes} episodes but {needed} are needed (demos.num "
                          "or an algorithm's num_demos); lower it or add demonstrations")
    return errors


def _task_names(tasks: Any) -> list[str]:
    """``tasks`` (a preset, one name, or a list) as MetaWorld v3 task names; ValueError in one line."""
    if OmegaConf.is_list(tasks) or isinstance(tasks, (list, tuple)):
        return resolve_task_list([str(t) if isinstance(t, str) else t for t in tasks])
    if not isinstance(tasks, str):
        raise ValueError(f"tasks must be mt10, mt50, all (= mt10) or a list of MetaWorld v3 task names, got {tasks!r}")
    return resolve_task_list(tasks)


def _tasks_problem(tasks: Any) -> str | None:
    try:
        _task_names(tasks)
    except ValueError as err:
        return f"tasks: {err}".rstrip(".")
    return None


def resolve_tasks(cfg: DictConfig) -> list[str]:
    """The run's tasks: ``tasks=mt10`` (or ``all``), ``mt50``, or a list of MetaWorld v3 names, in that order."""
    try:
        return _task_names(cfg.tasks)
    except ValueError as err:
        raise SystemExit(f"error: tasks: {err}") from None


def ray_settings(cfg: DictConfig) -> list[str]:
    """The settings that put part of the run on Ray (``launcher``, ``collector.backend``, ``eval.backend``)."""
    return [k for k in ("launcher", "collector.backend", "eval.backend") if OmegaConf.select(cfg, k) == "ray"]


def resolve_seeds(cfg: DictConfig) -> list[int]:
    """The seeds every job runs with: ``seeds``, or ``[seed]`` when it is null."""
    return [int(k) for k in cfg.seeds] if cfg.get("seeds") is not None else [int(cfg.seed)]


def env_workers(cfg: DictConfig, num_envs: int | None = None) -> int:
    """Worker processes for ``num_envs`` envs (default ``env.num_envs``).

    ``env.num_workers=auto``: one process for state observations (the fastest layout on
    few cores), and for pixels one worker per core this process may use (its affinity:
    cgroups, Slurm, taskset), shared among ``parallel_tasks`` jobs, up to one per env
    (rendering is per core). Resolved where the job runs (a Ray job on its node).
    """
    n = int(cfg.env.num_envs if num_envs is None else num_envs)
    workers = cfg.env.num_workers
    if workers == "auto":
        workers = available_cpus() // int(cfg.parallel_tasks) if cfg.env.from_pixels else 1
    return max(1, min(int(workers), n))


def learner_device(cfg: DictConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


# ----------------------------------------------------------------------------------------
# the run directory: new, continued (same settings) or resumed (allowed overrides only)
# ----------------------------------------------------------------------------------------
def _command_line_overrides() -> dict[str, Any]:
    """``key -> value`` of the settings given on the command line (Hydra's task overrides)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    return {o.key_or_group: o.value() for o in parsed if o.key_or_group not in ("resume", "run_dir")}


def prepare_run(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """Check the settings, then create (or continue, or resume) the run directory."""
    try:
        if cfg.resume:
            run_dir = Path(cfg.resume)
            saved = load_run_settings(run_dir)
            overrides = {k: OmegaConf.select(cfg, k) for k in _command_line_overrides()}
            settings, added = resume_settings(saved, OmegaConf.to_container(cfg, resolve=True), overrides,
                                              RESUME_ALLOWED)
            cfg = OmegaConf.create({**settings, "run_dir": str(run_dir), "resume": None})
            check_config(cfg, allow=list(flatten(saved)))  # keys an older recipe wrote are kept
            resolve_tasks(cfg)
            save_run_settings(run_dir, OmegaConf.to_container(cfg))
            print(f"resuming {run_dir}")
            if added:
                print(f"  settings not in its config.yaml, from the defaults: {', '.join(added)}")
            if overrides:
                print(f"  with {', '.join(f'{k}={v}' for k, v in overrides.items())}")
        else:
            check_config(cfg)
            resolve_tasks(cfg)
            run_dir = Path(cfg.run_dir) if cfg.run_dir else _new_run_dir(cfg)
            cfg = OmegaConf.create({**OmegaConf.to_container(cfg, resolve=True), "run_dir": str(run_dir)})
            if open_run_dir(run_dir, OmegaConf.to_container(cfg), ignore=("run_dir", "resume", *RESUME_ALLOWED)):
                save_run_settings(run_dir, OmegaConf.to_container(cfg))  # e.g. new eval.* settings
                print(f"continuing {run_dir} (same training settings)")
    except RunDirError as err:
        raise SystemExit(f"error: {err}") from None
    return cfg, run_dir


def _new_run_dir(cfg: DictConfig) -> Path:
    import time

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    stamp = time.strftime("%Y%m%d_%H%M%S")
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:  # one directory per --multirun job
        stamp += f"_{hc.job.num}_{'-'.join(cfg.algo.names)}"
    return Path("runs") / "mt10" / stamp
