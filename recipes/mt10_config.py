"""Settings of recipes/mt10.py: the typed schema, every check, the run directory and the run plan.

* **The schema**: one dataclass per section of ``recipes/conf/`` (the model's own, picked by
  ``model.name``). :func:`settings_problems` names every key that is not a setting, every
  missing setting and every value of the wrong type, all at once; the values are never
  converted (:mod:`torchrl_chunk.experiment.settings` says how and why, instead of Hydra's
  ConfigStore). A new setting needs its field here as well as its line in ``config.yaml``
  (``tests/recipes/test_mt10_config.py::test_presets_pass`` names a setting that lacks one).
  ``tasks`` and ``seeds`` are ``Any`` in the schema: :func:`check_config` words their errors.
* **The checks**: :func:`check_config` runs the schema first, then ranges, choices and
  combinations, and raises one :class:`~torchrl_chunk.experiment.JobError` naming every
  invalid setting, before anything is written.
* **The run**: :func:`prepare_run` creates a new run directory, continues one with the same
  settings, or resumes one (``resume=``) applying only the overrides in :data:`RESUME_ALLOWED`
  (the rules live in :mod:`torchrl_chunk.experiment.run_dir`); :func:`plan_run` turns the
  settings into the jobs and launcher of a :class:`~torchrl_chunk.experiment.RunPlan`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from torchrl_chunk.envs import MT10_TASKS, NUM_EVAL_CONFIGS, TASK_INSTRUCTIONS
from torchrl_chunk.envs.metaworld import resolve_task_list
from torchrl_chunk.envs.workers import available_cpus
from torchrl_chunk.experiment import JobError, JobId, RayOptions, RunPlan, absolute_paths
from torchrl_chunk.experiment.run_dir import prepare_run as prepare_run_dir, timestamped_run_dir
from torchrl_chunk.experiment.settings import MAY_BE_ABSENT, expects, range_problem, schema_problems
from torchrl_chunk.experiment.settings import int_range as _int, num_range as _num
from torchrl_chunk.video import require_pyav

RECIPES = Path(__file__).resolve().parent  # Ray workers import the recipe's modules from here

#: Overrides that ``resume=`` applies: they change neither the training data nor the updates.
#: (``threads_per_process`` is not: CPU kernels may sum in another order with other thread
#: counts, and a resumed run must equal an uninterrupted one bit for bit.)
RESUME_ALLOWED = ("eval", "logger", "device", "env.num_workers", "env.worker_timeout_s", "parallel_tasks", "launcher",
                  "ray")
#: Settings that are paths: made absolute before jobs run in other processes or on other nodes.
PATH_SETTINGS = (("run_dir",), ("demos", "cache_dir"), ("demos", "path"), ("model", "checkpoint"),
                 ("model", "instructions"), ("model", "t5_path"))


# ----------------------------------------------------------------------------------------
# the schema: keys and types
# ----------------------------------------------------------------------------------------
@dataclass
class EnvSettings:
    horizon: int
    num_envs: int
    num_workers: Union[int, str] = field(metadata=expects("auto or an integer (worker processes)"))
    max_steps: int
    worker_timeout_s: float
    decisions_per_env: Optional[int]
    from_pixels: bool
    image_size: int


@dataclass
class CollectorSettings:
    backend: str
    workers: int


@dataclass
class RaySettings:
    address: Optional[str]
    num_cpus: Optional[int]
    max_retries: int
    job_gpus: float
    collector_restarts: int


@dataclass
class DemoSettings:
    num: int
    seed: Optional[int]
    cache_dir: str
    source: str
    path: Optional[str]
    assume_success: bool
    state_key: str
    image_key: Optional[str]


@dataclass
class PPOSettings:
    clip_epsilon: float
    clip_value: Optional[Union[bool, float]] = field(metadata=expects(
        "true (clip the value loss at ppo.clip_epsilon), a number > 0 (clip it there), false or null (no clipping)"))
    gamma: float
    lmbda: float
    discount: str
    critic_coeff: float
    entropy_coeff: float
    normalize_advantage: bool
    epochs: int
    minibatch_size: int


@dataclass
class BCSettings:
    loss_form: str
    coeff: float
    decay_floor: Optional[float]
    batch_size: int
    pretrain_steps: int
    pretrain_batch_size: int
    pretrain_lr: Optional[float]
    share_sft: bool


@dataclass
class AdaptiveLimitSettings:
    quantile: float
    window: int
    min_successes: int


@dataclass
class BufferSettings:
    mode: str
    length_limit: Optional[Union[int, str]] = field(metadata=expects(
        "null (the longest expert demo), an integer (env steps) or adaptive"))
    adaptive: AdaptiveLimitSettings
    length_weighting: float
    max_size: int
    storage: str


@dataclass
class ScheduleSettings:
    kind: str
    warmup_steps: float
    constant: float
    unit: str
    scale_critic: bool


@dataclass
class OptimSettings:
    name: str
    lr: float
    critic_lr: Optional[float]
    weight_decay: float
    max_grad_norm: float


@dataclass
class TrainSettings:
    total_env_steps: int
    eval_every_env_steps: int
    quick_eval_episodes: int
    checkpoint_every_iters: int


@dataclass
class EvalSettings:
    episodes: int
    eval_seed: int
    num_envs: int
    backend: str
    workers: int
    video_episodes: int


@dataclass
class LoggerSettings:
    backend: str


@dataclass
class AlgorithmSpec:
    """One entry of ``algorithms`` (what an algorithm name means)."""

    ppo: bool
    bc: bool
    num_demos: int
    buffer_mode: str
    horizon: int
    schedule: str
    label: str


@dataclass
class AlgoSelection:
    """The ``algo`` group: the algorithm names to run."""

    names: List[str]


# ---- the model group: one dataclass per conf/model/<name>.yaml, picked by model.name ----
@dataclass(kw_only=True)
class ModelSettings:
    name: str
    needs_pixels: bool
    log_std_init: float
    buffer_max_size: int
    precision: str
    # A model with a fixed chunk length may declare it; check_config compares it with env.horizon.
    horizon: Optional[int] = field(default=None, metadata=MAY_BE_ABSENT)


@dataclass(kw_only=True)
class MLPModel(ModelSettings):
    hidden: List[int]
    task_embed_dim: int
    separate_critic: bool


@dataclass(kw_only=True)
class PixelModel(ModelSettings):
    channels: int
    embed_dim: int
    separate_critic: bool


@dataclass(kw_only=True)
class OctoSmallModel(ModelSettings):
    size: str
    checkpoint: Optional[str]
    instructions: Optional[str]
    t5_path: Optional[str]
    window_size: int
    separate_critic: bool


@dataclass(kw_only=True)
class TinyVLAModel(ModelSettings):
    hidden_dim: int
    text_dim: int
    use_state: bool
    normalize_state: bool


#: ``model.name`` -> its settings (recipes/conf/model/<name>.yaml).
MODELS: dict[str, type] = {"mlp": MLPModel, "pixel": PixelModel, "octo_small": OctoSmallModel,
                           "tiny_vla": TinyVLAModel}


@dataclass
class Settings:
    """``recipes/conf/config.yaml`` with its groups composed (``algo``, ``model``, ``preset``)."""

    tasks: Any  # mt10 | mt50 | all | a name | a list of names: checked (with the closest names) by check_config
    seed: int
    seeds: Any  # null or a list of distinct ints: checked by check_config
    device: str
    run_dir: Optional[str]
    resume: Optional[str]
    parallel_tasks: int
    launcher: str
    threads_per_process: int
    env: EnvSettings
    collector: CollectorSettings
    ray: RaySettings
    demos: DemoSettings
    ppo: PPOSettings
    bc: BCSettings
    buffer: BufferSettings
    schedule: ScheduleSettings
    optim: OptimSettings
    train: TrainSettings
    eval: EvalSettings
    logger: LoggerSettings
    algorithms: Dict[str, AlgorithmSpec]
    algo: AlgoSelection
    model: Any  # MODELS[model.name]


def settings_problems(cfg: DictConfig | Mapping, allow: Iterable[str] = ()) -> list[str]:
    """Every key that is not a setting, every missing setting and every value of the wrong type,
    one line each (``allow``: keys of a resumed run's ``config.yaml`` that are no longer settings)."""
    if isinstance(cfg, DictConfig):
        try:
            data = OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException as err:  # e.g. ${model.needs_pixels} with no such key
            key = getattr(err, "full_key", None) or "settings"
            return [f"{key} cannot be resolved: {str(err).splitlines()[0]}"]
    else:
        data = dict(cfg)
    problems = schema_problems(data, Settings, source="recipes/conf/config.yaml", allow=allow)
    model = data.get("model")
    if isinstance(model, Mapping):
        name = model.get("name")
        if name in MODELS:  # an unknown name: check_config names the choices
            problems += schema_problems(model, MODELS[name], prefix="model.", source=f"recipes/conf/model/{name}.yaml",
                                        label=f"model={name}", allow=allow)
    elif "model" in data:
        problems.append(f"model must be a group of settings (model={'|'.join(MODELS)}), got {model!r}")
    return problems


# ----------------------------------------------------------------------------------------
# the values: ranges, choices, combinations
# ----------------------------------------------------------------------------------------
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


def check_config(cfg: DictConfig, allow: tuple[str, ...] | list[str] = ()) -> None:
    """Raise :class:`JobError` with every invalid setting named, before anything is written.

    Keys and types first (:func:`settings_problems`; ``allow``: keys of a resumed
    run's ``config.yaml`` that are no longer settings); the values are judged once those hold.
    """
    errors = settings_problems(cfg, allow)
    if errors:
        raise JobError("error: " + "; ".join(errors) + ". Fix these settings and run again.")
    model_rules = {k: r for k, r in MODEL_NUMERIC.items() if OmegaConf.select(cfg, k, default=None) is not None}
    for key, rule in {**NUMERIC, **model_rules}.items():
        problem = range_problem(key, OmegaConf.select(cfg, key, default=None), rule)
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
        raise JobError("error: " + "; ".join(errors) + ". Fix these settings and run again.")


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
        raise JobError(f"error: tasks: {err}") from None


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
# the run: its directory and its plan
# ----------------------------------------------------------------------------------------
def prepare_run(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """Check the settings, then create (or continue, or resume) the run directory."""

    def check(cfg: DictConfig, allow: list[str]) -> None:
        check_config(cfg, allow=allow)
        resolve_tasks(cfg)

    def new_run_dir(cfg: DictConfig) -> Path:  # runs/mt10/<stamp>[_<k>_<algos> under --multirun]
        return timestamped_run_dir(Path("runs") / "mt10", "-".join(cfg.algo.names))

    def resume_defaults(saved: Mapping) -> dict:  # the defaults of the model the run was made with (its group)
        from hydra import compose

        model = (saved.get("model") or {}).get("name")
        return OmegaConf.to_container(compose("config", overrides=[f"model={model}"] if model else []), resolve=True)

    return prepare_run_dir(cfg, check=check, allowed=RESUME_ALLOWED, new_run_dir=new_run_dir,
                           resume_defaults=resume_defaults)


def plan_run(cfg: DictConfig) -> RunPlan:
    """The checked settings as the launcher's plan: every algorithm on each (task, seed), in that order."""
    cfg, path = prepare_run(cfg)  # every setting checked before anything is written
    jobs = [JobId(algo, task, seed) for task in resolve_tasks(cfg) for seed in resolve_seeds(cfg)
            for algo in cfg.algo.names]
    ray = None
    if ray_settings(cfg):  # one cluster for the whole run: the parallel_tasks processes and the Ray tasks join it
        cpus = max(int(cfg.threads_per_process), env_workers(cfg) if cfg.collector.backend == "local" else 1)
        ray = RayOptions(address=cfg.ray.address, num_cpus=cfg.ray.num_cpus, python_path=[str(RECIPES)],
                         job_cpus=cpus, job_gpus=float(cfg.ray.job_gpus), max_retries=int(cfg.ray.max_retries),
                         address_key=("ray", "address"))
    return RunPlan(run_dir=path, settings=absolute_paths(OmegaConf.to_container(cfg, resolve=True), PATH_SETTINGS),
                   jobs=jobs, parallel=int(cfg.parallel_tasks), launcher=str(cfg.launcher), ray=ray,
                   eval_protocol=eval_protocol(cfg))


def eval_protocol(cfg: DictConfig) -> dict:
    """What a finished job's ``result.json`` must have been evaluated with, to be kept on resume."""
    return {"episodes": int(cfg.eval.episodes), "eval_seed": int(cfg.eval.eval_seed)}


def ray_session(cfg: DictConfig):
    """Join (or start) the Ray cluster of ``ray.address``; a no-op inside a Ray worker."""
    from torchrl_chunk.distributed import init_ray

    return init_ray(cfg.ray.address, num_cpus=cfg.ray.num_cpus, python_path=[str(RECIPES)])
