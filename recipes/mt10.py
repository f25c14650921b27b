"""Post-train a policy on MetaWorld MT10 with action-chunked PPO + self-BC (arXiv 2509.25718).

    python recipes/mt10.py                               # CPU default: SFT-10 and Ours, 10 tasks
    python recipes/mt10.py algo=all                      # the four columns of Table I
    python recipes/mt10.py preset=paper model=octo_small # Section III's settings
    python recipes/mt10.py preset=smoke                  # whole pipeline, one task, < 1 min
    python recipes/mt10.py resume=runs/mt10/<stamp>      # continue a killed run

For each task (single-task post-training, as in the paper) and each algorithm, one job:

    demos  -> SFT (BC on the demo buffer) -> [ collect chunks -> offer finished trajectories
    to the demo buffer -> GAE -> PPO epochs on beta_t * L_PPO + L_BC ] * N -> evaluate

Every stage calls a torchrl_chunk module; this file only wires them (Fig. 1(b)).
A run directory holds the resolved config, logs, per-job checkpoints and demo buffers,
and at the end results.md / results.csv (Table I layout) and learning-curve PNGs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from torchrl_chunk import evaluation
from torchrl_chunk.data import LengthFilteredReplayBuffer
from torchrl_chunk.envs import MT10_TASKS, collect_expert_demos, derive_seed, load_demos, make_metaworld_env, save_demos
from torchrl_chunk.objectives import ChunkClipPPOLoss, PPOBCLoss, SelfBCLoss
from torchrl_chunk.schedules import Constant, TanhWarmup
from torchrl_chunk.video import realtime_fps, require_pyav, write_mp4
from torchrl.collectors import Collector
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.record.loggers import get_logger

CHECKPOINT_DIR = "checkpoint"  # <job>/checkpoint/{state.pt, buffer/}
CHECKPOINT = "state.pt"
RESULT = "result.json"
VIDEO = "eval.mp4"  # the first eval.video_episodes final-eval episodes (pixels only)
_ITER_SEED_STREAM = 7  # derive_seed stream for per-iteration env reseeding


# ----------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------
def resolve_tasks(cfg) -> list[str]:
    tasks = list(MT10_TASKS) if cfg.tasks == "all" else list(cfg.tasks)
    unknown = [t for t in tasks if t not in MT10_TASKS]
    if unknown:
        raise SystemExit(f"error: unknown task(s) {unknown}; valid MT10 tasks: {', '.join(MT10_TASKS)}")
    return tasks


def check_config(cfg) -> None:
    unknown = [n for n in cfg.algo.names if n not in cfg.algorithms]
    if unknown:
        raise SystemExit(f"error: unknown algorithm(s) {unknown}; valid: {', '.join(cfg.algorithms)}")
    model_h = cfg.model.get("horizon")
    for name in cfg.algo.names:
        h = int(cfg.algorithms[name].horizon)
        if model_h is not None and int(model_h) != h:
            raise SystemExit(
                f"error: model.horizon={model_h} but algorithm {name} uses chunks of h={h}; "
                "set env.horizon and model.horizon to the same value."
            )
    videos = int(cfg.eval.video_episodes)
    if videos < 0:
        raise SystemExit(f"error: eval.video_episodes must be >= 0 (0 turns videos off), got {videos}.")
    if videos and cfg.env.from_pixels:
        try:
            require_pyav()
        except ImportError as err:
            raise SystemExit(f"error: eval.video_episodes={videos}: {err}") from None
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise SystemExit(f"error: device must be auto, cpu or cuda, got {cfg.device}")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: device=cuda but no CUDA device is visible; use device=auto or cpu.")


def learner_device(cfg) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


# ----------------------------------------------------------------------------------------
# stage 0: demonstrations and model
# ----------------------------------------------------------------------------------------
def expert_demos(cfg, task: str, num: int):
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


def build_model(cfg, demos, horizon: int):
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
    if m.name == "octo_small":
        from torchrl_chunk.envs import TASK_INSTRUCTIONS
        from torchrl_chunk.modules.octo import OctoConfig, make_octo_actor_critic

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
            config, horizon, 4, instructions=instructions,
            checkpoint=m.checkpoint, separate_critic=m.separate_critic, t5_path=m.t5_path,
            log_std_init=m.log_std_init,
        )
    raise SystemExit(f"error: unknown model {m.name!r}; valid: mlp, pixel, octo_small")


def make_optimizer(cfg, actor, critic, lr: float | None = None):
    """Two parameter groups: the actor's (incl. a shared trunk) and the critic-only ones."""
    actor_params = list(actor.parameters())
    ids = {id(p) for p in actor_params}
    critic_only = [p for p in critic.parameters() if id(p) not in ids]
    lr = cfg.optim.lr if lr is None else lr
    critic_lr = cfg.optim.critic_lr if cfg.optim.critic_lr is not None else lr
    groups = [{"params": actor_params, "lr": lr}, {"params": critic_only, "lr": critic_lr}]
    if cfg.optim.name == "adamw":
        return torch.optim.AdamW(groups, weight_decay=cfg.optim.weight_decay)
    if cfg.optim.name == "adam":
        return torch.optim.Adam(groups, weight_decay=cfg.optim.weight_decay)
    raise SystemExit(f"error: optim.name must be adam or adamw, got {cfg.optim.name}")


# ----------------------------------------------------------------------------------------
# checkpoints: one directory per job, swapped in whole; never with non-finite weights
# ----------------------------------------------------------------------------------------
# <job>/checkpoint/ holds state.pt (weights, optimiser, RNG, counters) and buffer/ (the demo
# buffer), always from the same iteration. A save writes checkpoint.tmp/ completely, then
# renames checkpoint/ -> checkpoint.old/, checkpoint.tmp/ -> checkpoint/, and deletes
# checkpoint.old/. A kill at any point leaves one complete checkpoint that
# recover_checkpoint() finds: checkpoint/ if it exists, otherwise checkpoint.old/.
def _checkpoint_dirs(job_dir: Path) -> tuple[Path, Path, Path]:
    return tuple(job_dir / (CHECKPOINT_DIR + suffix) for suffix in ("", ".old", ".tmp"))


def recover_checkpoint(job_dir: Path) -> Path | None:
    """Bring ``job_dir`` back to one consistent checkpoint after a kill; return its directory."""
    ckpt, old, tmp = _checkpoint_dirs(job_dir)
    if tmp.exists():  # killed while writing (or before its rename): never trusted
        shutil.rmtree(tmp)
    if old.exists():
        if ckpt.exists():  # killed while deleting the previous checkpoint
            shutil.rmtree(old)
        else:  # killed between the two renames: the previous checkpoint is the good one
            os.replace(old, ckpt)
    if ckpt.exists() and not (ckpt / CHECKPOINT).exists():
        raise SystemExit(
            f"error: {ckpt} has no {CHECKPOINT}, so it is not a checkpoint this recipe wrote; "
            f"delete {ckpt} to restart this job from scratch."
        )
    if not ckpt.exists() and (job_dir / "checkpoint.pt").exists():
        raise SystemExit(
            f"error: {job_dir / 'checkpoint.pt'} is in the layout of an earlier version (no "
            f"crash-safe directory). To resume it: mkdir {ckpt} && mv {job_dir / 'checkpoint.pt'} "
            f"{ckpt / CHECKPOINT} && mv {job_dir / 'buffer'} {ckpt / 'buffer'} (if it exists); "
            f"or delete it to restart this job."
        )
    return ckpt if ckpt.exists() else None


def save_checkpoint(job_dir: Path, state: dict, modules: dict, buffer) -> None:
    for name, module in modules.items():
        for pname, p in module.state_dict().items():
            if torch.is_tensor(p) and p.is_floating_point() and not torch.isfinite(p).all():
                raise FloatingPointError(
                    f"{name}.{pname} holds NaN/inf; the last good checkpoint in {job_dir} is kept."
                )
    payload = dict(state)
    payload["modules"] = {k: v.state_dict() for k, v in modules.items()}
    payload["torch_rng"] = torch.get_rng_state()
    recover_checkpoint(job_dir)
    ckpt, old, tmp = _checkpoint_dirs(job_dir)
    tmp.mkdir()
    if buffer is not None:
        buffer.dumps(tmp / "buffer")
    torch.save(payload, tmp / CHECKPOINT)
    if ckpt.exists():
        os.replace(ckpt, old)
    os.replace(tmp, ckpt)
    if old.exists():
        shutil.rmtree(old)


def load_checkpoint(job_dir: Path, modules: dict, buffer) -> dict | None:
    ckpt = recover_checkpoint(job_dir)
    if ckpt is None:
        return None
    path = ckpt / CHECKPOINT
    try:
        payload = torch.load(path, weights_only=False)
        for k, module in modules.items():
            module.load_state_dict(payload["modules"][k])
        if buffer is not None:
            if not (ckpt / "buffer").exists():
                raise FileNotFoundError(f"{ckpt / 'buffer'} (the demo buffer saved with it) is missing")
            buffer.loads(ckpt / "buffer")
    except Exception as err:  # noqa: BLE001 - report any unreadable checkpoint the same way
        raise SystemExit(
            f"error: checkpoint {ckpt} cannot be loaded ({type(err).__name__}: {err}). "
            f"Delete {ckpt} to restart this job from scratch."
        ) from err
    torch.set_rng_state(payload["torch_rng"])
    return payload


# ----------------------------------------------------------------------------------------
# one job = one (algorithm, task)
# ----------------------------------------------------------------------------------------
def evaluate(cfg, actor, task: str, horizon: int, episodes: int, device, record: int = 0) -> dict:
    def policy(td):
        return actor(td.to(device)).to("cpu")

    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        return evaluation.evaluate_policy(
            policy, task, num_episodes=episodes, num_envs=cfg.eval.num_envs, chunk_size=horizon,
            max_steps=cfg.env.max_steps, eval_seed=cfg.eval.eval_seed,
            from_pixels=cfg.env.from_pixels, image_size=cfg.env.image_size, record_episodes=record,
        )


def loss_sum(out) -> torch.Tensor:
    return sum(v for k, v in out.items() if k.startswith("loss_"))


def run_job(cfg, algo: str, task: str, job_dir: Path, position: int = 0) -> dict:
    if (job_dir / RESULT).exists():  # finished before a resume
        return json.loads((job_dir / RESULT).read_text())
    job_dir.mkdir(parents=True, exist_ok=True)
    spec = cfg.algorithms[algo]
    h, seed = int(spec.horizon), int(cfg.seed)
    device = learner_device(cfg)
    torch.set_num_threads(int(cfg.threads_per_process))
    torch.manual_seed(derive_seed(seed, MT10_TASKS.index(task), 11))
    t_start = time.time()

    # -- demos, model, losses ---------------------------------------------------------
    demos = expert_demos(cfg, task, int(spec.num_demos))
    actor, critic = build_model(cfg, demos, h)
    actor, critic = actor.to(device), critic.to(device)
    gen = torch.Generator().manual_seed(derive_seed(seed, MT10_TASKS.index(task), 12))
    buffer = LengthFilteredReplayBuffer(
        demos.trajectories, horizon=h, mode=spec.buffer_mode, length_limit=cfg.buffer.length_limit,
        max_size=cfg.buffer.max_size, storage=cfg.buffer.storage, scratch_dir=job_dir / "buffer_scratch",
        generator=gen,
    )
    bc_loss = SelfBCLoss(actor, loss_form=cfg.bc.loss_form, coeff=cfg.bc.coeff)
    ppo_loss = ChunkClipPPOLoss(
        actor, critic, horizon=h, discount=cfg.ppo.discount, gamma=cfg.ppo.gamma, lmbda=cfg.ppo.lmbda,
        clip_epsilon=cfg.ppo.clip_epsilon, clip_value=cfg.ppo.clip_value, critic_coeff=cfg.ppo.critic_coeff,
        entropy_coeff=cfg.ppo.entropy_coeff, normalize_advantage=cfg.ppo.normalize_advantage,
        deactivate_vmap=cfg.model.name != "mlp",  # torch.vmap does not support the conv layers
    )
    schedule = TanhWarmup(cfg.schedule.warmup_steps) if spec.schedule == "tanh" else Constant(cfg.schedule.constant)
    loss = PPOBCLoss(
        ppo_loss, bc_loss, schedule, scale_critic=cfg.schedule.scale_critic,
        advance_schedule="per_update" if cfg.schedule.unit == "updates" else "manual",
    )
    optim = make_optimizer(cfg, actor, critic)
    modules = {"actor": actor, "critic": critic, "schedule": schedule, "optim": optim}
    logger = get_logger(cfg.logger.backend, logger_name=str(job_dir / "logs"), experiment_name=f"{algo}_{task}")

    state = {"phase": "sft", "iteration": 0, "env_steps": 0, "updates": 0, "history": [],
             "episodes": 0, "successes": 0, "gen": gen.get_state(), "wall_time_s": 0.0}
    restored = load_checkpoint(job_dir, modules, buffer if spec.bc else None)
    if restored is not None:
        state.update({k: restored[k] for k in state})
        gen.set_state(state["gen"])
    wall_before = state["wall_time_s"]  # time spent before a resume

    def checkpoint() -> None:
        state["gen"] = gen.get_state()
        state["wall_time_s"] = wall_before + time.time() - t_start
        save_checkpoint(job_dir, state, modules, buffer if spec.bc else None)

    # -- SFT: behaviour cloning on the expert demos (t = 0 of Eq. 8) ---------------------
    if state["phase"] == "sft":
        sft_optim = make_optimizer(cfg, actor, critic, lr=cfg.bc.pretrain_lr)
        for _ in range(int(cfg.bc.pretrain_steps)):
            out = bc_loss(buffer.sample(int(cfg.bc.pretrain_batch_size)).to(device))
            if not torch.isfinite(out["loss_bc"]):
                raise SystemExit(
                    f"error: {algo}/{task}: the SFT loss became {out['loss_bc'].item()}; lower "
                    "bc.pretrain_lr or check the demos. Nothing was checkpointed."
                )
            sft_optim.zero_grad()
            out["loss_bc"].backward()
            sft_optim.step()
        state["phase"] = "rl" if spec.ppo else "eval"
        checkpoint()

    # -- RL: collect -> buffer -> GAE -> PPO (+ self-BC) ---------------------------------
    if state["phase"] == "rl":
        total = int(cfg.train.total_env_steps)
        # Every collection starts from fresh episodes, so it must be long enough to finish one.
        decisions = int(cfg.env.decisions_per_env or math.ceil(cfg.env.max_steps / h))
        env = make_metaworld_env(
            task, num_envs=cfg.env.num_envs, chunk_size=h, seed=seed, max_steps=cfg.env.max_steps,
            from_pixels=cfg.env.from_pixels, image_size=cfg.env.image_size, num_workers=cfg.env.num_workers,
        )
        collector = Collector(
            env, actor, frames_per_batch=cfg.env.num_envs * decisions, total_frames=-1,
            exploration_type=ExplorationType.RANDOM, policy_device=device, env_device="cpu", storing_device="cpu",
            auto_register_policy_transforms=False,  # the chunk policies are not recurrent
        )
        batches = iter(collector)
        if restored is not None:  # building the collector may draw random numbers: undo that
            torch.set_rng_state(restored["torch_rng"])
        bar = tqdm(total=total, initial=state["env_steps"], desc=f"{algo} {task}", position=position,
                   unit="step", dynamic_ncols=True, leave=True, file=sys.stdout, mininterval=2.0)
        next_eval = (state["env_steps"] // cfg.train.eval_every_env_steps + 1) * cfg.train.eval_every_env_steps
        if state["iteration"] == 0:
            quick = evaluate(cfg, actor, task, h, cfg.train.quick_eval_episodes, device)
            state["history"].append({"env_steps": 0, **quick})
        try:
            while state["env_steps"] < total:
                # Every collection starts from fresh episodes seeded by (seed, iteration): a
                # resumed run sees exactly the batches an uninterrupted one would.
                collector.set_seed(derive_seed(seed, state["iteration"], _ITER_SEED_STREAM))
                collector.reset()
                data = next(batches)
                nxt = data["next"]
                steps = int(nxt["steps_executed"].sum())
                done = nxt["done"].squeeze(-1)
                state["episodes"] += int(done.sum())
                state["successes"] += int((done & nxt["success"].squeeze(-1)).sum())
                report = buffer.extend([data[i] for i in range(data.shape[0])]) if spec.bc else None

                data = data.to(device)
                with torch.no_grad():
                    ppo_loss.value_estimator(data)
                flat = data.reshape(-1)
                logs = []
                for _ in range(int(cfg.ppo.epochs)):
                    for idx in torch.randperm(flat.shape[0]).split(int(cfg.ppo.minibatch_size)):
                        mb = flat[idx]
                        if spec.bc:
                            out = loss(mb, buffer.sample(int(cfg.bc.batch_size)).to(device))
                        else:
                            out = ppo_loss(mb)
                        total_loss = loss_sum(out)
                        if not torch.isfinite(total_loss):
                            raise FloatingPointError(f"non-finite loss {total_loss.item()}")
                        optim.zero_grad()
                        total_loss.backward()
                        torch.nn.utils.clip_grad_norm_(optim.param_groups[0]["params"], cfg.optim.max_grad_norm)
                        torch.nn.utils.clip_grad_norm_(optim.param_groups[1]["params"], cfg.optim.max_grad_norm)
                        optim.step()
                        state["updates"] += 1
                        logs.append({k: float(v.detach().mean()) for k, v in out.items()})
                if cfg.schedule.unit == "env_steps":
                    schedule.step(steps)
                state["env_steps"] += steps
                state["iteration"] += 1

                # -- logging -------------------------------------------------------------------
                row = {k: float(np.mean([l[k] for l in logs if k in l])) for k in logs[0]}
                row.update(beta=loss.beta if spec.bc else 1.0, buffer_rows=len(buffer),
                           buffer_trajectories=buffer.num_trajectories,
                           train_success=state["successes"] / max(1, state["episodes"]))
                if report is not None:
                    row.update(admitted=report.admitted, rejected=report.num_rejected)
                for k, v in row.items():
                    logger.log_scalar(k, v, step=state["env_steps"])
                if state["env_steps"] >= next_eval or state["env_steps"] >= total:
                    quick = evaluate(cfg, actor, task, h, cfg.train.quick_eval_episodes, device)
                    state["history"].append({"env_steps": state["env_steps"], **quick})
                    logger.log_scalar("eval_success", quick["success_rate"], step=state["env_steps"])
                    next_eval += cfg.train.eval_every_env_steps
                bar.update(steps)
                bar.set_postfix(
                    succ=f"{row['train_success']:.2f}",
                    eval=f"{state['history'][-1]['success_rate']:.2f}",
                    beta=f"{row['beta']:.2f}",
                    buf=buffer.num_trajectories,
                    adm=buffer.stats.admitted,
                    rej=sum(n for why, n in buffer.stats.rejected.items() if why != "incomplete"),
                    refresh=False,
                )
                if state["iteration"] % int(cfg.train.checkpoint_every_iters) == 0 or state["env_steps"] >= total:
                    if state["env_steps"] >= total:
                        state["phase"] = "eval"
                    checkpoint()
        except FloatingPointError as err:
            raise SystemExit(
                f"error: {algo}/{task} stopped at iteration {state['iteration']}: {err}. The last good "
                f"checkpoint is {job_dir / CHECKPOINT_DIR}; lower optim.lr or check the data, then resume."
            ) from err
        finally:
            bar.close()
            collector.shutdown()

    # -- final evaluation: 128 fixed configurations (Table I) ----------------------------
    record = int(cfg.eval.video_episodes) if cfg.env.from_pixels else 0  # episodes 0 .. record-1
    metrics = evaluate(cfg, actor, task, h, int(cfg.eval.episodes), device, record=record)
    episodes = metrics.pop("episodes", None)
    result = {
        "algo": algo, "label": spec.label, "task": task, "metrics": metrics,
        "env_steps": state["env_steps"], "updates": state["updates"],
        "wall_time_s": wall_before + time.time() - t_start,
        "buffer": {"trajectories": buffer.num_trajectories, "admitted": buffer.stats.admitted,
                   "rejected": buffer.stats.rejected, "evicted": buffer.stats.evicted,
                   "length_limit": buffer.length_limit},
        "history": state["history"],
    }
    (job_dir / RESULT).write_text(json.dumps(result, indent=1))
    if record:  # after the result: a failed video never costs the training
        frames = [episodes.frames[i] for i in sorted(episodes.frames)]
        try:
            write_mp4(frames, job_dir / VIDEO, fps=realtime_fps(h))
        except Exception as err:  # noqa: BLE001 - the numbers are saved; say why there is no video
            print(f"warning: {algo}/{task}: no {VIDEO} ({type(err).__name__}: {err})", file=sys.stderr)
    plot_curve(result, job_dir / "learning_curve.png")
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
    ax[1].plot(x, [r["avg_shortest_10pct"] if r["avg_shortest_10pct"] is not None else math.nan for r in hist], marker="o")
    ax[1].set(xlabel="env steps", ylabel="Avg(l.) (quick eval)")
    fig.suptitle(f"{result['label']} on {result['task']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------
# the run: jobs over tasks (optionally in parallel processes), then the table
# ----------------------------------------------------------------------------------------
def run_tasks(cfg_dict: dict, tasks: list[str], run_dir: str, position: int) -> list[dict]:
    cfg = OmegaConf.create(cfg_dict)
    return [
        run_job(cfg, algo, task, Path(run_dir) / "jobs" / algo / task, position)
        for task in tasks
        for algo in cfg.algo.names
    ]


def write_tables(run_dir: Path, results: list[dict]) -> str:
    table: dict[str, dict[str, dict]] = {}
    for r in results:
        table.setdefault(r["label"], {})[r["task"]] = r["metrics"]
    md = evaluation.results_to_markdown(table)
    (run_dir / "results.md").write_text(md)
    (run_dir / "results.csv").write_text(evaluation.results_to_csv(table))
    return md


def _flat_keys(cfg, prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        out += _flat_keys(v, name + ".") if isinstance(v, DictConfig) else [name]
    return out


def prepare_run_dir(cfg) -> tuple[DictConfig, Path]:
    if cfg.resume:
        run_dir = Path(cfg.resume)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise SystemExit(f"error: resume={run_dir} is not a run directory (no config.yaml in it).")
        saved_cfg = OmegaConf.load(saved)
        # Settings added to the recipe after this run started take their defaults; every
        # setting the run was started with keeps its saved value.
        defaults = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        added = sorted(set(_flat_keys(defaults)) - set(_flat_keys(saved_cfg)) - {"resume"})
        cfg = OmegaConf.merge(defaults, saved_cfg)
        print(f"resuming {run_dir}")
        if added:
            print(f"  settings not in its config.yaml, from the defaults: {', '.join(added)}")
        return cfg, run_dir
    if cfg.run_dir:
        run_dir = Path(cfg.run_dir)
    else:
        stamp = time.strftime("%Y%m%d_%H%M%S")
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:  # one directory per --multirun job
            stamp += f"_{hc.job.num}_{'-'.join(cfg.algo.names)}"
        run_dir = Path("runs") / "mt10" / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    resolved.run_dir = str(run_dir)
    OmegaConf.save(resolved, run_dir / "config.yaml")
    return resolved, run_dir


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    cfg, run_dir = prepare_run_dir(cfg)
    check_config(cfg)
    tasks = resolve_tasks(cfg)
    t0 = time.time()
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    n_proc = max(1, min(int(cfg.parallel_tasks), len(tasks)))
    if n_proc == 1:
        results = run_tasks(cfg_dict, tasks, str(run_dir), 0)
    else:
        shards = [tasks[i::n_proc] for i in range(n_proc)]
        with ProcessPoolExecutor(n_proc, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_tasks, cfg_dict, s, str(run_dir), i) for i, s in enumerate(shards)]
            results = [r for f in futures for r in f.result()]
    md = write_tables(run_dir, results)
    wall = time.time() - t0
    (run_dir / "wall_time.txt").write_text(f"{wall:.1f}\n")
    print(f"\n{md}\nrun directory: {run_dir}  (wall time {wall / 60:.1f} min)")


if __name__ == "__main__":
    main()
