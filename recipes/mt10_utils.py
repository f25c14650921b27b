"""Everything recipes/mt10.py builds, so that its loop reads as the paper's Fig. 1(b).

Like TorchRL's ``sota-implementations/ppo/utils_mujoco.py``: settings checks, the run
directory, demos, model, losses, buffer, collector, evaluation and the job's outputs. The
loop file never builds an env, a model or a loss itself.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from torchrl_chunk import evaluation
from torchrl_chunk.data import LengthFilteredReplayBuffer
from torchrl_chunk.envs import MT10_TASKS, NUM_EVAL_CONFIGS, collect_expert_demos, derive_seed, load_demos, make_metaworld_env, save_demos
from torchrl_chunk.experiment import RunDirError, load_checkpoint, load_run_settings, open_run_dir, resume_settings
from torchrl_chunk.experiment import save_checkpoint as _save_checkpoint
from torchrl_chunk.keys import SUCCESS_KEY
from torchrl_chunk.objectives import ChunkClipPPOLoss, PPOBCLoss, SelfBCLoss
from torchrl_chunk.schedules import Constant, TanhWarmup
from torchrl_chunk.video import realtime_fps, require_pyav, write_mp4
from torchrl.collectors import Collector
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.record.loggers import get_logger

RESULT = "result.json"
VIDEO = "eval.mp4"  # the first eval.video_episodes final-eval episodes (pixels only)


class Seeds:
    """Named ``derive_seed`` streams: each random quantity of a job has its own."""

    COLLECTION = 7  # per-iteration reseeding of the training envs
    INIT = 11  # torch's global RNG at the start of a job: model initialisation, exploration
    DEMO_SAMPLING = 12  # the demo buffer's sampling generator


#: Overrides that ``resume=`` applies: they change neither the training data nor the updates.
RESUME_ALLOWED = ("eval", "logger", "device", "env.num_workers", "parallel_tasks", "threads_per_process")


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
    "env.horizon": _int(1), "env.num_envs": _int(1), "env.num_workers": _int(1), "env.max_steps": _int(1),
    "env.decisions_per_env": _int(1, optional=True), "env.image_size": _int(8),
    "demos.num": _int(1), "demos.seed": _int(0),
    "ppo.clip_epsilon": _num(0, open_lo=True), "ppo.gamma": _num(0, 1, open_lo=True), "ppo.lmbda": _num(0, 1),
    "ppo.critic_coeff": _num(0), "ppo.entropy_coeff": _num(0), "ppo.epochs": _int(1), "ppo.minibatch_size": _int(1),
    "bc.coeff": _num(0), "bc.batch_size": _int(1), "bc.pretrain_steps": _int(0), "bc.pretrain_batch_size": _int(1),
    "bc.pretrain_lr": _num(0, optional=True, open_lo=True),
    "buffer.length_limit": _int(1, optional=True), "buffer.max_size": _int(1),
    "schedule.warmup_steps": _num(0, open_lo=True), "schedule.constant": _num(0),
    "optim.lr": _num(0, open_lo=True), "optim.critic_lr": _num(0, optional=True, open_lo=True),
    "optim.weight_decay": _num(0), "optim.max_grad_norm": _num(0, open_lo=True),
    "train.total_env_steps": _int(1), "train.eval_every_env_steps": _int(1),
    "train.quick_eval_episodes": _int(1), "train.checkpoint_every_iters": _int(1),
    "eval.episodes": _int(1), "eval.eval_seed": _int(0), "eval.num_envs": _int(1), "eval.video_episodes": _int(0),
}
CHOICES = {
    "device": ("auto", "cpu", "cuda"), "ppo.discount": ("chunk", "step"),
    "bc.loss_form": ("nll", "mse", "nll_detached_scale"), "buffer.mode": ("filtered", "static", "unrestricted"),
    "buffer.storage": ("memory", "memmap"), "schedule.kind": ("tanh", "constant"),
    "schedule.unit": ("env_steps", "updates"), "optim.name": ("adam", "adamw"),
    "logger.backend": ("csv", "tensorboard", "wandb"), "model.name": ("mlp", "pixel", "octo_small"),
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


def check_config(cfg: DictConfig) -> None:
    """Raise ``SystemExit`` with every invalid setting named, before anything is written."""
    errors = []
    for key, rule in NUMERIC.items():
        problem = _check_number(key, OmegaConf.select(cfg, key, default=None), rule)
        if problem:
            errors.append(problem)
    for key, valid in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value not in valid:
            errors.append(f"{key} must be one of {', '.join(valid)}, got {value!r}")
    unknown = [n for n in cfg.algo.names if n not in cfg.algorithms]
    if unknown:
        errors.append(f"unknown algorithm(s) {unknown} in algo.names; valid: {', '.join(cfg.algorithms)}")
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
    if cfg.env.num_workers not in (1, cfg.env.num_envs):
        errors.append(f"env.num_workers must be 1 or env.num_envs={cfg.env.num_envs}, got {cfg.env.num_workers}")
    if cfg.eval.video_episodes and cfg.env.from_pixels:
        try:
            require_pyav()
        except ImportError as err:
            errors.append(f"eval.video_episodes={cfg.eval.video_episodes}: {err}")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        errors.append("device=cuda but no CUDA device is visible; use device=auto or cpu")
    return errors


def resolve_tasks(cfg: DictConfig) -> list[str]:
    tasks = list(MT10_TASKS) if cfg.tasks == "all" else list(cfg.tasks)
    unknown = [t for t in tasks if t not in MT10_TASKS]
    if unknown:
        raise SystemExit(f"error: unknown task(s) {unknown}; valid MT10 tasks: {', '.join(MT10_TASKS)}")
    return tasks


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
    if cfg.resume:
        run_dir = Path(cfg.resume)
        try:
            saved = load_run_settings(run_dir)
            overrides = {k: OmegaConf.select(cfg, k) for k in _command_line_overrides()}
            settings, added = resume_settings(saved, OmegaConf.to_container(cfg, resolve=True), overrides,
                                              RESUME_ALLOWED)
        except RunDirError as err:
            raise SystemExit(f"error: {err}") from None
        settings.update(run_dir=str(run_dir), resume=None)
        cfg = OmegaConf.create(settings)
        check_config(cfg)
        print(f"resuming {run_dir}")
        if added:
            print(f"  settings not in its config.yaml, from the defaults: {', '.join(added)}")
        if overrides:
            print(f"  with {', '.join(f'{k}={v}' for k, v in overrides.items())}")
    else:
        check_config(cfg)
        run_dir = Path(cfg.run_dir) if cfg.run_dir else _new_run_dir(cfg)
        settings = OmegaConf.to_container(cfg, resolve=True)
        settings["run_dir"] = str(run_dir)
        cfg = OmegaConf.create(settings)
    resolve_tasks(cfg)
    try:
        if open_run_dir(run_dir, OmegaConf.to_container(cfg), ignore=("run_dir", "resume", *RESUME_ALLOWED)):
            print(f"continuing {run_dir} (same settings)")
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


# ----------------------------------------------------------------------------------------
# a job's parts: demos, model, losses, buffer, optimiser, collector
# ----------------------------------------------------------------------------------------
def expert_demos(cfg: DictConfig, task: str, num: int):
    """Load the task's expert demos from the cache, collecting them once if missing."""
    px = f"_px{cfg.env.image_size}" if cfg.env.from_pixels else ""
    path = Path(cfg.demos.cache_dir) / f"{task}_n{num}_seed{cfg.demos.seed}_T{cfg.env.max_steps}{px}.pt"
    if path.exists():
        return load_demos(path)
    demos = collect_expert_demos(
        task, num, cfg.demos.seed, max_steps=cfg.env.max_steps,
        from_pixels=cfg.env.from_pixels, image_size=cfg.env.image_size,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_demos(demos, path)
    return demos


def build_model(cfg: DictConfig, demos, horizon: int):
    m = cfg.model
    if m.name == "mlp":
        from torchrl_chunk.modules.mlp import make_mlp_actor_critic, observation_stats

        mean, std = observation_stats(demos.trajectories)
        return make_mlp_actor_critic(
            mean, std, horizon=horizon, hidden=tuple(m.hidden), task_embed_dim=m.task_embed_dim,
            separate_critic=m.separate_critic, log_std_init=m.log_std_init,
        )
    if m.name == "pixel":
        from torchrl_chunk.modules.pixel import make_pixel_actor_critic

        return make_pixel_actor_critic(
            horizon=horizon, channels=m.channels, embed_dim=m.embed_dim,
            separate_critic=m.separate_critic, log_std_init=m.log_std_init,
        )
    return _build_octo(cfg, horizon)


def _build_octo(cfg: DictConfig, horizon: int):
    from torchrl_chunk.envs import TASK_INSTRUCTIONS
    from torchrl_chunk.modules.octo import OctoConfig, make_octo_actor_critic

    m = cfg.model
    if m.instructions == "random":  # smoke tests only: no T5 here
        gen = torch.Generator().manual_seed(int(cfg.seed))
        instructions = torch.randn(len(MT10_TASKS), 16, 768, generator=gen)
    elif m.instructions:
        instructions = Path(m.instructions)
    elif m.t5_path:
        instructions = [TASK_INSTRUCTIONS[t] for t in MT10_TASKS]
    else:
        raise SystemExit(
            "error: model=octo_small needs task-instruction embeddings: set model.t5_path to a "
            "local t5-base directory, or model.instructions to a table made by "
            "`python -m torchrl_chunk.modules.octo.convert instructions T5_DIR DST` (docs/octo.md)."
        )
    if m.checkpoint is None:
        print("warning: model.checkpoint is null: Octo starts from random weights", file=sys.stderr)
    window = {"window_size": int(m.window_size)}
    config = OctoConfig.tiny(**window) if m.size == "tiny" else OctoConfig(**window)
    return make_octo_actor_critic(
        config, horizon, 4, instructions=instructions, checkpoint=m.checkpoint,
        separate_critic=m.separate_critic, t5_path=m.t5_path, log_std_init=m.log_std_init,
    )


def make_optimizer(cfg: DictConfig, actor, critic, lr: float | None = None) -> torch.optim.Optimizer:
    """Two parameter groups: the actor's (incl. a shared trunk) and the critic-only ones."""
    actor_params = list(actor.parameters())
    ids = {id(p) for p in actor_params}
    critic_only = [p for p in critic.parameters() if id(p) not in ids]
    lr = cfg.optim.lr if lr is None else lr
    critic_lr = cfg.optim.critic_lr if cfg.optim.critic_lr is not None else lr
    groups = [{"params": actor_params, "lr": lr}, {"params": critic_only, "lr": critic_lr}]
    opt = torch.optim.AdamW if cfg.optim.name == "adamw" else torch.optim.Adam
    return opt(groups, weight_decay=cfg.optim.weight_decay)


@dataclass
class Job:
    """One (algorithm, task): its parts and the counters a checkpoint saves."""

    algo: str
    task: str
    dir: Path
    spec: DictConfig
    horizon: int
    device: torch.device
    actor: Any
    critic: Any
    buffer: LengthFilteredReplayBuffer
    ppo: ChunkClipPPOLoss
    bc: SelfBCLoss
    loss: PPOBCLoss
    optim: torch.optim.Optimizer
    logger: Any
    gen: torch.Generator
    state: dict = field(default_factory=lambda: {
        "phase": "sft", "iteration": 0, "env_steps": 0, "updates": 0, "history": [],
        "episodes": 0, "successes": 0, "gen": None, "wall_time_s": 0.0})
    restored: dict | None = None

    @property
    def modules(self) -> dict:
        return {"actor": self.actor, "critic": self.critic, "schedule": self.loss.schedule, "optim": self.optim}


def make_job(cfg: DictConfig, algo: str, task: str, job_dir: Path) -> Job:
    """Build a job's parts in a fixed order (it fixes the random draws) and restore its checkpoint."""
    spec = cfg.algorithms[algo]
    h, seed, task_idx = int(spec.horizon), int(cfg.seed), MT10_TASKS.index(task)
    device = learner_device(cfg)
    torch.set_num_threads(int(cfg.threads_per_process))
    torch.manual_seed(derive_seed(seed, task_idx, Seeds.INIT))
    job_dir.mkdir(parents=True, exist_ok=True)

    demos = expert_demos(cfg, task, int(spec.num_demos))
    actor, critic = build_model(cfg, demos, h)
    actor, critic = actor.to(device), critic.to(device)
    gen = torch.Generator().manual_seed(derive_seed(seed, task_idx, Seeds.DEMO_SAMPLING))
    buffer = LengthFilteredReplayBuffer(
        demos.trajectories, horizon=h, mode=spec.buffer_mode, length_limit=cfg.buffer.length_limit,
        max_size=cfg.buffer.max_size, storage=cfg.buffer.storage, scratch_dir=job_dir / "buffer_scratch",
        generator=gen,
    )
    bc = SelfBCLoss(actor, loss_form=cfg.bc.loss_form, coeff=cfg.bc.coeff)
    ppo = ChunkClipPPOLoss(
        actor, critic, horizon=h, discount=cfg.ppo.discount, gamma=cfg.ppo.gamma, lmbda=cfg.ppo.lmbda,
        clip_epsilon=cfg.ppo.clip_epsilon, clip_value=cfg.ppo.clip_value, critic_coeff=cfg.ppo.critic_coeff,
        entropy_coeff=cfg.ppo.entropy_coeff, normalize_advantage=cfg.ppo.normalize_advantage,
        deactivate_vmap=cfg.model.name != "mlp",  # torch.vmap does not support the conv layers
    )
    schedule = TanhWarmup(cfg.schedule.warmup_steps) if spec.schedule == "tanh" else Constant(cfg.schedule.constant)
    loss = PPOBCLoss(
        ppo, bc, schedule, scale_critic=cfg.schedule.scale_critic,
        advance_schedule="per_update" if cfg.schedule.unit == "updates" else "manual",
    )
    optim = make_optimizer(cfg, actor, critic)
    logger = get_logger(cfg.logger.backend, logger_name=str(job_dir / "logs"), experiment_name=f"{algo}_{task}")
    job = Job(algo, task, job_dir, spec, h, device, actor, critic, buffer, ppo, bc, loss, optim, logger, gen)
    job.state["gen"] = gen.get_state()
    job.restored = load_checkpoint(job_dir, job.modules, buffer if spec.bc else None)
    if job.restored is not None:
        job.state.update({k: job.restored[k] for k in job.state})
        gen.set_state(job.state["gen"])
    return job


def save_checkpoint(job: Job, wall_time_s: float) -> None:
    job.state["gen"] = job.gen.get_state()
    job.state["wall_time_s"] = wall_time_s
    _save_checkpoint(job.dir, job.state, job.modules, job.buffer if job.spec.bc else None)


def make_collector(cfg: DictConfig, job: Job) -> Collector:
    """TorchRL's collector over the chunked env; each collection holds whole episodes."""
    decisions = int(cfg.env.decisions_per_env or math.ceil(cfg.env.max_steps / job.horizon))
    env = make_metaworld_env(
        job.task, num_envs=cfg.env.num_envs, chunk_size=job.horizon, seed=int(cfg.seed), max_steps=cfg.env.max_steps,
        from_pixels=cfg.env.from_pixels, image_size=cfg.env.image_size, num_workers=cfg.env.num_workers,
    )
    collector = Collector(
        env, job.actor, frames_per_batch=cfg.env.num_envs * decisions, total_frames=-1,
        exploration_type=ExplorationType.RANDOM, policy_device=job.device, env_device="cpu", storing_device="cpu",
        auto_register_policy_transforms=False,  # the chunk policies are not recurrent
    )
    if job.restored is not None:  # building the collector may draw random numbers: undo that
        torch.set_rng_state(job.restored["torch_rng"])
    return collector


def collect(collector: Collector, batches, seed: int, iteration: int):
    """One batch of fresh episodes seeded by (seed, iteration): a resumed run sees the same data.

    ``batches`` is ``iter(collector)``; the reseed and reset apply to its next batch.
    """
    collector.set_seed(derive_seed(seed, iteration, Seeds.COLLECTION))
    collector.reset()
    return next(batches)


# ----------------------------------------------------------------------------------------
# evaluation and outputs
# ----------------------------------------------------------------------------------------
def evaluate(cfg: DictConfig, job: Job, episodes: int, record: int = 0) -> dict:
    """The paper's protocol on the first ``episodes`` fixed configurations (deterministic policy)."""
    def policy(td):
        return job.actor(td.to(job.device)).to("cpu")

    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        return evaluation.evaluate_policy(
            policy, job.task, num_episodes=episodes, num_envs=cfg.eval.num_envs, chunk_size=job.horizon,
            max_steps=cfg.env.max_steps, eval_seed=cfg.eval.eval_seed,
            from_pixels=cfg.env.from_pixels, image_size=cfg.env.image_size, record_episodes=record,
        )


def write_result(cfg: DictConfig, job: Job, metrics: dict, wall_time_s: float) -> dict:
    """``result.json`` first, then the video and the learning curve (their failure costs nothing)."""
    episodes = metrics.pop("episodes", None)
    b = job.buffer
    result = {
        "algo": job.algo, "label": job.spec.label, "task": job.task, "metrics": metrics,
        "env_steps": job.state["env_steps"], "updates": job.state["updates"], "wall_time_s": wall_time_s,
        "buffer": {"trajectories": b.num_trajectories, "admitted": b.stats.admitted, "rejected": b.stats.rejected,
                   "evicted": b.stats.evicted, "length_limit": b.length_limit},
        "history": job.state["history"],
    }
    (job.dir / RESULT).write_text(json.dumps(result, indent=1))
    if episodes is not None and episodes.frames:
        frames = [episodes.frames[i] for i in sorted(episodes.frames)]
        try:
            write_mp4(frames, job.dir / VIDEO, fps=realtime_fps(job.horizon))
        except Exception as err:  # noqa: BLE001 - the numbers are saved; say why there is no video
            print(f"warning: {job.algo}/{job.task}: no {VIDEO} ({type(err).__name__}: {err})", file=sys.stderr)
    plot_curve(result, job.dir / "learning_curve.png")
    return result


def plot_curve(result: dict, path: Path) -> None:
    if len(result["history"]) < 2:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = result["history"]
    x = [r["env_steps"] for r in hist]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(x, [r["success_rate"] for r in hist], marker="o")
    ax[0].set(xlabel="env steps", ylabel="success rate (quick eval)", ylim=(-0.02, 1.02))
    ax[1].plot(x, [r["avg_shortest_10pct"] if r["avg_shortest_10pct"] is not None else math.nan for r in hist],
               marker="o")
    ax[1].set(xlabel="env steps", ylabel="Avg(l.) (quick eval)")
    fig.suptitle(f"{result['label']} on {result['task']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_tables(run_dir: Path, results: list[dict]) -> str:
    table: dict[str, dict[str, dict]] = {}
    for r in results:
        table.setdefault(r["label"], {})[r["task"]] = r["metrics"]
    md = evaluation.results_to_markdown(table)
    (run_dir / "results.md").write_text(md)
    (run_dir / "results.csv").write_text(evaluation.results_to_csv(table))
    return md


# ----------------------------------------------------------------------------------------
# one update and one log line per iteration
# ----------------------------------------------------------------------------------------
def optimizer_step(cfg: DictConfig, job: Job, out) -> dict[str, torch.Tensor]:
    """Back-propagate the sum of the ``loss_*`` terms; clip each parameter group; step."""
    total = sum(v for k, v in out.items() if k.startswith("loss_"))
    if not torch.isfinite(total):
        raise FloatingPointError(f"non-finite loss {total.item()}")
    job.optim.zero_grad()
    total.backward()
    actor, critic = (torch.nn.utils.clip_grad_norm_(g["params"], cfg.optim.max_grad_norm)
                     for g in job.optim.param_groups)
    job.optim.step()
    job.state["updates"] += 1
    return {"grad_norm": actor, "grad_norm_critic": critic}


def log_iteration(job: Job, log, data, report, steps: int, bar) -> dict[str, float]:
    """One ``log_metrics`` call: PPO diagnostics, timings, beta, buffer and quick-eval numbers."""
    state, buffer = job.state, job.buffer
    nxt = data["next"]
    done = nxt["done"].squeeze(-1)
    state["episodes"] += int(done.sum())
    state["successes"] += int((done & nxt[SUCCESS_KEY].squeeze(-1)).sum())
    row = log.summary(env_steps=steps)
    row.update(beta=job.loss.beta if job.spec.bc else 1.0,
               train_success=state["successes"] / max(1, state["episodes"]))
    if job.spec.bc:
        s = buffer.stats
        row.update({"buffer/rows": len(buffer), "buffer/trajectories": buffer.num_trajectories,
                    "buffer/admitted": s.admitted, "buffer/evicted": s.evicted,
                    "buffer/length_limit": buffer.length_limit})
        row.update({f"buffer/rejected_{why}": n for why, n in s.rejected.items()})
    last = state["history"][-1]
    if last["env_steps"] == state["env_steps"]:  # a quick evaluation ran this iteration
        row.update({"eval/success_rate": last["success_rate"], "eval/len_p10": last["len_p10"],
                    "eval/avg_shortest_10pct": last["avg_shortest_10pct"]})
    row = {k: v for k, v in row.items() if v is not None}
    job.logger.log_metrics(row, step=state["env_steps"])
    bar.update(steps)
    bar.set_postfix(succ=f"{row['train_success']:.2f}", eval=f"{last['success_rate']:.2f}",
                    beta=f"{row['beta']:.2f}", buf=buffer.num_trajectories, refresh=False)
    return row
