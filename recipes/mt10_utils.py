"""Everything recipes/mt10.py builds, so that its loop reads as the paper's Fig. 1(b).

Like TorchRL's ``sota-implementations/ppo/utils_mujoco.py``: demos, model, losses, buffer,
collector, evaluation, one update, one log line, the job's ``result.json`` record and its
one-line stop message. The loop file never builds an env, a model or a loss itself. Settings
and the run plan: ``mt10_config.py``; running the jobs, checkpoints and Table I:
``torchrl_chunk.experiment``.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from torchrl_chunk import distributed, evaluation
from torchrl_chunk.data import AdaptiveLengthLimit, LengthFilteredReplayBuffer
from torchrl_chunk.envs import (
    MT10_TASKS, collect_expert_demos, derive_seed, load_demos, make_metaworld_env, save_demos, task_index)
from torchrl_chunk.envs.metaworld import num_task_ids
from torchrl_chunk.envs.metaworld.simulator import RENDER_SAMPLES
from torchrl_chunk.experiment import (
    JobError, JobState, failure_message, load_checkpoint, load_stage, save_job_checkpoint, save_stage, settings_key)
from torchrl_chunk.experiment import write_result as save_result
from torchrl_chunk.experiment.checkpoint import CapacityError, check_capacity
from torchrl_chunk.keys import SUCCESS_KEY
from torchrl_chunk.modules.precision import with_precision
from torchrl_chunk.objectives import ChunkClipPPOLoss, PPOBCLoss, SelfBCLoss
from torchrl_chunk.schedules import Constant, TanhWarmup, expert_share_decay
from torchrl_chunk.video import realtime_fps
from torchrl.collectors import Collector
from torchrl.envs.utils import ExplorationType
from torchrl.record.loggers import get_logger

from mt10_config import demo_source_path, env_workers, eval_protocol, learner_device, ray_session


class Seeds:
    """Named ``derive_seed`` streams: each random quantity of a job has its own."""

    COLLECTION = 7  # per-iteration reseeding of the training envs
    INIT = 11  # torch's global RNG at the start of a job: model initialisation, exploration
    DEMO_SAMPLING = 12  # the demo buffer's sampling generator


# ----------------------------------------------------------------------------------------
# a job's parts: demos, model, losses, buffer, optimiser, collector
# ----------------------------------------------------------------------------------------
def expert_demos(cfg: DictConfig, task: str, num: int):
    """Load the task's expert demos from the cache, collecting them once if missing
    (``demos.source=scripted``), or read them from ``demos.path`` (``lerobot``, ``replay_buffer``).

    A cache file must hold what its name says (task, seed, count, episode cap, observation
    kind) and its demos must reach success when replayed, or the job stops with a one-line
    error naming the file (delete it to collect the demos again); demos that never move are
    refused from any source."""
    from torchrl_chunk.envs.demos import DemoFileError, check_demos_move

    if cfg.demos.get("source", "scripted") != "scripted":
        demos = demos_from_path(cfg, task, num)
        try:
            check_demos_move(demos, f"demos.source={demos.metadata['source']} demos.path={demos.metadata['path']}",
                             "drop it from the demonstrations or record it again")
        except DemoFileError as err:
            raise JobError(f"error: {task}: {err}") from None
        return demos
    px = f"_px{cfg.env.image_size}_aa{RENDER_SAMPLES}" if cfg.env.from_pixels else ""  # frames as rendered now
    seed = int(cfg.seed if cfg.demos.seed is None else cfg.demos.seed)
    path = Path(cfg.demos.cache_dir) / f"{task}_n{num}_seed{seed}_T{cfg.env.max_steps}{px}.pt"
    if path.exists():  # checked against its name; replayed (about 0.05 s per demo, state only)
        return load_demos(path, task=task, seed=seed, num=num, max_steps=int(cfg.env.max_steps),
                          from_pixels=bool(cfg.env.from_pixels), image_size=int(cfg.env.image_size), replay=True)
    demos = collect_expert_demos(
        task, num, seed, max_steps=cfg.env.max_steps,
        from_pixels=cfg.env.from_pixels, image_size=cfg.env.image_size,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_demos(demos, path)
    return demos


def demos_from_path(cfg: DictConfig, task: str, num: int):
    """The first ``num`` successful episodes of ``demos.path`` (its ``<task>/`` folder when there is one).

    Episodes that did not succeed are skipped and counted as tries, like the scripted experts'
    failures; an episode still running when a replay buffer was dumped is left out.
    ``("observation", "task_id")`` is set to the task's index."""
    from torchrl_chunk.data import DemoSourceError, inspect_demo_source, load_lerobot_demos, load_replay_buffer_demos
    from torchrl_chunk.envs import ExpertDemos, task_index
    from torchrl_chunk.envs.metaworld import ACTION_DIM, STATE_DIM

    d, path = cfg.demos, demo_source_path(cfg, task)
    source, state_key = d.source, d.get("state_key", "observation.state")
    where = f"demos.source={source} demos.path={path}"
    sizes = dict(action_dim=ACTION_DIM, state_dim=STATE_DIM, assume_success=bool(d.get("assume_success", False)))
    try:
        if source == "lerobot":
            image_key = d.get("image_key") if cfg.env.from_pixels else None
            total = inspect_demo_source("lerobot", path, state_key=state_key).num_episodes
            kept, tries = [], 0
            while len(kept) < num and tries < total:  # read only as many episodes as needed
                batch = load_lerobot_demos(path, episodes=range(tries, min(total, tries + num - len(kept))),
                                           state_key=state_key, image_key=image_key, **sizes)
                tries += len(batch)
                kept += [td for td in batch if bool(td["next", "success"].any())]
        else:
            kept, tries = [], 0
            for td in load_replay_buffer_demos(path, drop_incomplete=True, **sizes):
                if len(kept) == num:
                    break
                tries += 1
                if bool(td["next", "success"].any()):
                    kept.append(td)
    except DemoSourceError as err:
        raise JobError(f"error: {task}: {where}: {err}") from None
    if len(kept) < num:
        raise JobError(f"error: {task}: {where} holds {len(kept)} successful episodes (of {tries} read) but "
                         f"{num} are needed; lower demos.num (or the algorithm's num_demos) or add demonstrations.")
    tid = task_index(task)
    for i, td in enumerate(kept):
        T = td.shape[0]
        have = td.get(("observation", "task_id"), None)
        if have is not None and not bool((have == tid).all()):
            raise JobError(f"error: {task}: {where}: episode {i} has task_id {int(have.flatten()[0])}, not {task}'s "
                             f"{tid}; use demonstrations of {task}.")
        td.set(("observation", "task_id"), torch.full((T, 1), tid, dtype=torch.int64))
        image = td.get(("observation", "image"), None)
        size = int(cfg.env.image_size)
        if cfg.env.from_pixels and (image is None or tuple(image.shape[1:]) != (size, size, 3)):
            got = "no images" if image is None else f"images of {list(image.shape[1:])}"
            raise JobError(f"error: {task}: {where} has {got}, env.from_pixels needs [{size}, {size}, 3] (uint8 HWC "
                             "frames, env.image_size); resize the demonstrations' frames or change env.image_size.")
    return ExpertDemos(task=task, seed=int(cfg.seed), trajectories=kept, num_tries=tries,
                       max_steps=int(cfg.env.max_steps), image_size=int(cfg.env.image_size) if cfg.env.from_pixels
                       else None, metadata={"source": str(source), "path": str(path)})


def build_model(cfg: DictConfig, demos, chunk_size: int):
    m = cfg.model
    if m.name == "mlp":
        from torchrl_chunk.modules.mlp import make_mlp_actor_critic, observation_stats

        mean, std = observation_stats(demos.trajectories)
        return make_mlp_actor_critic(
            mean, std, chunk_size=chunk_size, hidden=tuple(m.hidden), task_embed_dim=m.task_embed_dim,
            separate_critic=m.separate_critic, log_std_init=m.log_std_init, num_tasks=num_task_ids(demos.task),
        )
    if m.name == "pixel":
        from torchrl_chunk.modules.pixel import make_pixel_actor_critic

        return make_pixel_actor_critic(
            chunk_size=chunk_size, channels=m.channels, embed_dim=m.embed_dim,
            separate_critic=m.separate_critic, log_std_init=m.log_std_init, num_tasks=num_task_ids(demos.task),
        )
    if m.name == "tiny_vla":  # TorchRL's own VLA (torchrl.modules.vla), see torchrl_chunk/modules/vla.py
        from torchrl.modules.vla import TinyVLA

        from torchrl_chunk.envs import TASK_INSTRUCTIONS
        from torchrl_chunk.envs.metaworld import ALL_V3_TASKS
        from torchrl_chunk.modules.mlp import observation_stats
        from torchrl_chunk.modules.vla import make_vla_actor_critic

        vla = TinyVLA(action_dim=4, chunk_size=chunk_size, hidden_dim=m.hidden_dim, text_dim=m.text_dim,
                      use_state=m.use_state)
        return make_vla_actor_critic(  # the task id selects its instruction; example= builds the lazy layers
            vla, chunk_size=chunk_size, action_dim=4, instructions=[TASK_INSTRUCTIONS[t] for t in ALL_V3_TASKS],
            log_std_init=m.log_std_init, example=demos.trajectories[0][:2],
            state_stats=observation_stats(demos.trajectories) if m.use_state and m.normalize_state else None,
        )
    return _build_octo(cfg, chunk_size)


def _build_octo(cfg: DictConfig, chunk_size: int):
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
        raise JobError(
            "error: model=octo_small needs task-instruction embeddings: set model.t5_path to a "
            "local t5-base directory, or model.instructions to a table made by "
            "`python -m torchrl_chunk.modules.octo.convert instructions T5_DIR DST --file mt10_instructions.txt` "
            "(docs/octo.md, section 3, writes that file)."
        )
    if m.checkpoint is None:
        print("warning: model.checkpoint is null: Octo starts from random weights", file=sys.stderr)
    window = {"window_size": int(m.window_size)}
    config = OctoConfig.tiny(**window) if m.size == "tiny" else OctoConfig(**window)
    return make_octo_actor_critic(
        config, chunk_size, 4, instructions=instructions, checkpoint=m.checkpoint,
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
    chunk_size: int  # h (the settings' env.horizon)
    device: torch.device
    actor: Any
    critic: Any
    buffer: LengthFilteredReplayBuffer
    ppo: ChunkClipPPOLoss
    bc: SelfBCLoss
    loss: PPOBCLoss
    optim: torch.optim.Optimizer
    logger: Any
    state: JobState = field(default_factory=JobState)
    demo_generator: torch.Generator | None = None  # the demo buffer's sampling stream
    restored: dict | None = None
    eval_envs: dict = field(default_factory=dict)  # wave size -> worker pool kept for the job's evaluations

    @property
    def modules(self) -> dict:
        return {"actor": self.actor, "critic": self.critic, "schedule": self.loss.schedule, "optim": self.optim}


def make_job(cfg: DictConfig, algo: str, task: str, job_dir: Path) -> Job:
    """Build a job's parts in a fixed order (it fixes the random draws) and restore its checkpoint."""
    spec = cfg.algorithms[algo]
    h, seed, task_idx = int(spec.horizon), int(cfg.seed), task_index(task)
    device = learner_device(cfg)
    torch.set_num_threads(int(cfg.threads_per_process))
    torch.manual_seed(derive_seed(seed, task_idx, Seeds.INIT))
    job_dir.mkdir(parents=True, exist_ok=True)

    demos = expert_demos(cfg, task, int(spec.num_demos))
    actor, critic = build_model(cfg, demos, h)
    actor, critic = actor.to(device), critic.to(device)
    gen = torch.Generator().manual_seed(derive_seed(seed, task_idx, Seeds.DEMO_SAMPLING))
    limit = cfg.buffer.length_limit
    if limit == "adaptive":  # only where the buffer admits by length (Ours); static/unrestricted keep theirs
        limit = AdaptiveLengthLimit(**cfg.buffer.adaptive) if spec.buffer_mode == "filtered" else None
    buffer = LengthFilteredReplayBuffer(
        demos.trajectories, chunk_size=h, mode=spec.buffer_mode, length_limit=limit,
        max_size=cfg.buffer.max_size, storage=cfg.buffer.storage, scratch_dir=job_dir / "buffer_scratch",
        generator=gen,  # uniform sampling for SFT; post_train sets buffer.length_weighting
        action_bounds=(-1.0, 1.0),  # MetaWorld's action space; its envs clip what they execute
    )
    check_footprint(cfg, buffer, algo, task, job_dir)
    precision = cfg.model.get("precision", "fp32")  # bf16: autocast over fp32 weights (torchrl_chunk/precision.py)
    bc = SelfBCLoss(actor, loss_form=cfg.bc.loss_form, coeff=cfg.bc.coeff, precision=precision)
    ppo = ChunkClipPPOLoss(
        actor, critic, chunk_size=h, discount=cfg.ppo.discount, gamma=cfg.ppo.gamma, lmbda=cfg.ppo.lmbda,
        clip_epsilon=cfg.ppo.clip_epsilon, clip_value=cfg.ppo.clip_value, critic_coeff=cfg.ppo.critic_coeff,
        entropy_coeff=cfg.ppo.entropy_coeff, normalize_advantage=cfg.ppo.normalize_advantage,
        deactivate_vmap=cfg.model.name != "mlp",  # torch.vmap does not support the conv layers
        precision=precision,  # one backbone pass when actor and critic share it (Fig. 1(a))
    )
    schedule = TanhWarmup(cfg.schedule.warmup_steps) if spec.schedule == "tanh" else Constant(cfg.schedule.constant)
    loss = PPOBCLoss(  # loss(rollout) samples its demo batch from the buffer (Eq. 7)
        ppo, bc, schedule, demo_buffer=buffer, demo_batch_size=int(cfg.bc.batch_size),
        scale_critic=cfg.schedule.scale_critic,
        advance_schedule="per_update" if cfg.schedule.unit == "updates" else "manual",
    )
    optim = make_optimizer(cfg, actor, critic)
    logger = get_logger(cfg.logger.backend, logger_name=str(job_dir / "logs"), experiment_name=f"{algo}_{task}")
    job = Job(algo, task, job_dir, spec, h, device, actor, critic, buffer, ppo, bc, loss, optim, logger,
              demo_generator=gen)
    job.restored = load_checkpoint(job_dir, job.modules, buffer if spec.bc else None)  # incl. gen's state
    if job.restored is not None:
        job.state = JobState.from_dict(job.restored)  # also a checkpoint from before the state was typed
        if "gen" in job.restored:  # checkpoints from before the buffer saved its own generator
            gen.set_state(job.restored["gen"])
        if spec.bc and job.state.phase != "sft":  # the BC weight follows the restored buffer
            set_bc_weight(cfg, job)
    return job


#: Settings that do not change a job's SFT (its policy at t = 0 of Eq. 8): jobs of one task and
#: seed that differ only in these share one SFT per run (``bc.share_sft``). Any other setting
#: counts, also one added later. ``algorithms`` is left out as a whole: the job's own number
#: of demos and chunk size are part of the key.
SFT_INDEPENDENT = (
    "train", "ppo", "schedule", "eval", "logger", "collector", "ray", "launcher", "parallel_tasks", "resume",
    "run_dir", "seeds", "tasks", "algo", "algorithms", "env.num_envs", "env.num_workers", "env.worker_timeout_s",
    "env.decisions_per_env", "buffer.mode", "buffer.length_limit", "buffer.adaptive", "buffer.length_weighting",
    "bc.decay_floor", "bc.batch_size", "bc.share_sft",
)


def shared_sft_path(cfg: DictConfig, job: Job) -> Path:
    """Where the run keeps the SFT of jobs with the job's SFT settings (task, seed, demos, model, SFT steps...)."""
    key = settings_key({"settings": OmegaConf.to_container(cfg, resolve=True), "task": job.task,
                        "num_demos": int(job.spec.num_demos), "chunk_size": job.chunk_size},
                       [f"settings.{k}" for k in SFT_INDEPENDENT])
    run_dir = next((p.parent for p in job.dir.parents if p.name == "jobs"), job.dir)  # run_dir/jobs/algo/task/seed_k
    return run_dir / "shared_sft" / job.task / f"seed_{int(cfg.seed)}" / f"{key[:24]}.pt"


def load_shared_sft(cfg: DictConfig, job: Job) -> bool:
    """Load the SFT another job of this run computed with the same settings (``bc.share_sft``):
    the weights, torch's random state and the demo sampling stream as they were after it."""
    if not cfg.bc.share_sft:
        return False
    info = load_stage(shared_sft_path(cfg, job), {"actor": job.actor, "critic": job.critic},
                      {"demo_sampling": job.demo_generator})
    if info is not None:
        print(f"{job.algo}/{job.task} (seed {cfg.seed}): SFT loaded from the {info['algo']} job (same settings)")
    return info is not None


def store_shared_sft(cfg: DictConfig, job: Job) -> None:
    if cfg.bc.share_sft:
        save_stage(shared_sft_path(cfg, job), {"actor": job.actor, "critic": job.critic},
                   {"demo_sampling": job.demo_generator}, info={"algo": job.algo})


def check_footprint(cfg: DictConfig, buffer: LengthFilteredReplayBuffer, algo: str, task: str, job_dir: Path) -> None:
    """Before training: the demo buffer's RAM and disk at ``buffer.max_size`` rows (printed for pixels),
    and a one-line stop if this machine cannot hold them (jobs running side by side counted)."""
    fp = buffer.footprint()
    if cfg.env.from_pixels:
        print(f"{algo}/{task}: demo buffer of at most {fp.rows} rows x {fp.row_bytes / 1e3:.1f} kB: up to "
              f"{fp.ram_bytes / 1e9:.2f} GB of RAM and {fp.disk_bytes / 1e9:.2f} GB of disk (buffer.max_size)")
    try:  # the jobs of parallel_tasks side by side; not counted: env workers, finished jobs' checkpoints
        jobs = int(cfg.parallel_tasks)
        check_capacity(fp.ram_bytes * jobs, fp.disk_bytes * jobs, job_dir)
    except CapacityError as err:
        raise JobError(f"error: {algo}/{task}: the demo buffer (buffer.max_size={fp.rows} rows of "
                         f"{fp.row_bytes} B) does not fit: {err}") from err


def save_checkpoint(job: Job, wall_time_s: float) -> None:
    """The job's checkpoint; a disk that fails it raises a ``CheckpointError`` naming why, the
    previous checkpoint kept (:func:`torchrl_chunk.experiment.save_job_checkpoint`)."""
    job.state.wall_time_s = wall_time_s
    save_job_checkpoint(job.dir, job.state, job.modules, job.buffer if job.spec.bc else None)


def stop_message(algo: str, task: str, job_dir: Path, err: BaseException) -> str:
    """One line: what stopped the job, the fix where the cause is known (a full or read-only disk, an
    env worker that died), its last good checkpoint and how to go on; the traceback in ``error.log``
    (:func:`torchrl_chunk.experiment.failure_message`)."""
    from torchrl_chunk.envs import WorkerError

    def fix(cause: BaseException) -> str | None:
        if isinstance(cause, WorkerError) and " died " in str(cause):
            return ("An exit code of -9 is most often the out-of-memory killer: lower env.num_workers or "
                    "env.num_envs, or give the job more memory.")
        return None

    return failure_message(f"{algo}/{task}", job_dir, err, fix)


class LocalCollection:
    """TorchRL's ``Collector`` in this process: one batch of fresh episodes per ``collect(seed)``."""

    bytes_sent = bytes_received = restarts = 0  # nothing crosses a network, nothing is rebuilt

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self._batches = iter(collector)

    def collect(self, seed: int):
        self.collector.set_seed(seed)  # the reseed and reset apply to the next batch
        self.collector.reset()
        return next(self._batches)

    def shutdown(self) -> None:
        self.collector.shutdown()


def make_collector(cfg: DictConfig, job: Job) -> LocalCollection | distributed.RayEpisodeCollector:
    """Whole-episode batches: TorchRL's collector here, or Ray actors (``collector.backend=ray``)."""
    decisions = int(cfg.env.decisions_per_env or math.ceil(cfg.env.max_steps / job.chunk_size))
    make_env = functools.partial(
        make_metaworld_env, job.task, chunk_size=job.chunk_size, seed=int(cfg.seed), max_steps=cfg.env.max_steps,
        from_pixels=cfg.env.from_pixels, image_size=cfg.env.image_size, worker_timeout_s=cfg.env.worker_timeout_s,
    )
    if cfg.collector.backend == "ray":
        ray_session(cfg)
        return distributed.RayEpisodeCollector(
            make_env, job.actor, num_envs=int(cfg.env.num_envs), num_workers=int(cfg.collector.workers),
            decisions_per_env=decisions, max_restarts=int(cfg.ray.collector_restarts),
            num_threads=int(cfg.threads_per_process),
        )
    collector = Collector(
        make_env(num_envs=cfg.env.num_envs, num_workers=env_workers(cfg)), with_precision(job.actor, job.ppo.precision),
        frames_per_batch=cfg.env.num_envs * decisions, total_frames=-1,
        exploration_type=ExplorationType.RANDOM, policy_device=job.device, env_device="cpu", storing_device="cpu",
        auto_register_policy_transforms=False,  # the chunk policies are not recurrent
    )
    if job.restored is not None:  # building the collector may draw random numbers: undo that
        torch.set_rng_state(job.restored["torch_rng"])
    return LocalCollection(collector)


def collect(collector: LocalCollection | distributed.RayEpisodeCollector, seed: int, iteration: int):
    """One batch of fresh episodes seeded by (seed, iteration): a resumed run sees the same data."""
    return collector.collect(derive_seed(seed, iteration, Seeds.COLLECTION))


# ----------------------------------------------------------------------------------------
# evaluation and outputs
# ----------------------------------------------------------------------------------------
def evaluate(cfg: DictConfig, job: Job, episodes: int, record: int = 0, collector=None) -> dict:
    """The paper's protocol on the first ``episodes`` fixed configurations (deterministic policy).

    ``eval.backend=ray``: the same episodes on Ray workers (the same numbers), on the remote
    collector's actors when there are (they hold their CPUs between batches).
    """
    if cfg.eval.backend == "ray":
        ray_session(cfg)
        actors = collector.actors() if isinstance(collector, distributed.RayEpisodeCollector) else None
        return distributed.evaluate_policy_ray(
            job.actor, job.task, num_workers=int(cfg.eval.workers), num_episodes=episodes,
            num_envs=cfg.eval.num_envs, chunk_size=job.chunk_size, max_steps=cfg.env.max_steps,
            eval_seed=cfg.eval.eval_seed, from_pixels=cfg.env.from_pixels, image_size=cfg.env.image_size,
            record_episodes=record, num_threads=int(cfg.threads_per_process), actors=actors,
        )

    actor = with_precision(job.actor, job.ppo.precision)

    def policy(td):  # evaluate_policy runs it deterministically, without gradients
        return actor(td.to(job.device)).to("cpu")

    kwargs = dict(chunk_size=job.chunk_size, max_steps=cfg.env.max_steps, eval_seed=cfg.eval.eval_seed,
                  from_pixels=cfg.env.from_pixels, image_size=cfg.env.image_size)
    wave = min(int(cfg.eval.num_envs), episodes)  # the envs one evaluation wave runs at once
    pool = dict(num_workers=env_workers(cfg, wave), worker_timeout_s=cfg.env.worker_timeout_s)
    env = None
    if pool["num_workers"] > 1:  # the waves' envs over worker processes, started once per job and wave size
        if wave not in job.eval_envs:
            job.eval_envs[wave] = make_metaworld_env(job.task, num_envs=wave, mode="eval",
                                                     num_eval_configs=int(cfg.eval.episodes), **pool, **kwargs)
        env = job.eval_envs[wave]
    return evaluation.evaluate_policy(policy, job.task, num_episodes=episodes, num_envs=cfg.eval.num_envs,
                                      record_episodes=record, env=env, **kwargs)


def close_eval_envs(job: Job) -> None:
    for env in job.eval_envs.values():
        env.close(raise_if_closed=False)
    job.eval_envs.clear()


def write_result(cfg: DictConfig, job: Job, metrics: dict, wall_time_s: float) -> dict:
    """The job's ``result.json`` record (Table I's metrics, its buffer at the end, its quick evaluations),
    written with the final evaluation's video, if recorded, and the learning curve."""
    episodes = metrics.pop("episodes", None)
    b = job.buffer
    result = {
        "algo": job.algo, "label": job.spec.label, "task": job.task, "seed": int(cfg.seed), "metrics": metrics,
        "eval": eval_protocol(cfg),
        "env_steps": job.state.env_steps, "updates": job.state.updates, "wall_time_s": wall_time_s,
        "buffer": {"trajectories": b.num_trajectories, "admitted": b.stats.admitted, "rejected": b.stats.rejected,
                   "incomplete": b.stats.incomplete, "evicted": b.stats.evicted, "length_limit": b.length_limit,
                   "base_length_limit": b.base_length_limit, "adaptive": b.adaptive is not None,
                   "length_weighting": b.length_weighting, "expert_trajectories": b.num_expert_trajectories,
                   "bc_coeff": float(job.bc.coeff)},
        "history": job.state.history,
    }
    frames = [episodes.frames[i] for i in sorted(episodes.frames)] if episodes is not None and episodes.frames else None
    return save_result(job.dir, result, frames, fps=realtime_fps(job.chunk_size))


def quick_eval_due(cfg: DictConfig, env_steps: int, steps: int) -> bool:
    """After the iteration that crosses a multiple of ``train.eval_every_env_steps``, and at the end."""
    every = int(cfg.train.eval_every_env_steps)
    return env_steps // every > (env_steps - steps) // every or env_steps >= int(cfg.train.total_env_steps)


# ----------------------------------------------------------------------------------------
# one update and one log line per iteration
# ----------------------------------------------------------------------------------------
def set_bc_weight(cfg: DictConfig, job: Job) -> float:
    """``bc.coeff``, decayed by the expert share of the demo buffer when ``bc.decay_floor`` is set."""
    coeff = float(cfg.bc.coeff)
    if cfg.bc.decay_floor is not None:
        coeff *= expert_share_decay(job.buffer.expert_row_fraction, float(cfg.bc.decay_floor))
    job.bc.coeff.fill_(coeff)
    return coeff


def optimizer_step(cfg: DictConfig, job: Job, out) -> dict[str, torch.Tensor]:
    """Back-propagate the sum of the ``loss_*`` terms; clip each parameter group; step."""
    total = sum(v for k, v in out.items() if k.startswith("loss_"))
    if not job.spec.bc and not torch.isfinite(total):  # PPOBCLoss checks its own terms
        raise FloatingPointError(f"the loss became {total.item()}.")
    job.optim.zero_grad()
    total.backward()
    actor, critic = (torch.nn.utils.clip_grad_norm_(g["params"], cfg.optim.max_grad_norm)
                     for g in job.optim.param_groups)
    job.optim.step()
    job.state.updates += 1
    return {"grad_norm": actor, "grad_norm_critic": critic}


def log_iteration(job: Job, log, data, steps: int, bar, collector=None) -> dict[str, float]:
    """One ``log_metrics`` call: PPO diagnostics, timings, beta, buffer and quick-eval numbers
    (and, with remote collection, the bytes sent to and received from the Ray actors)."""
    state, buffer = job.state, job.buffer
    nxt = data["next"]
    done = nxt["done"].squeeze(-1)
    state.episodes += int(done.sum())
    state.successes += int((done & nxt[SUCCESS_KEY].squeeze(-1)).sum())
    row = log.summary(env_steps=steps)
    row.update(beta=job.loss.beta if job.spec.bc else 1.0,
               train_success=state.successes / max(1, state.episodes))
    if job.spec.bc:
        row.update(buffer.metrics(prefix="buffer/"), bc_coeff=float(job.bc.coeff))
    if collector is not None and collector.bytes_received:
        row.update({"collect/bytes_sent": collector.bytes_sent, "collect/bytes_received": collector.bytes_received,
                    "collect/restarts": collector.restarts})
    last = state.history[-1]
    if last["env_steps"] == state.env_steps:  # a quick evaluation ran this iteration
        row.update({"eval/success_rate": last["success_rate"], "eval/len_p10": last["len_p10"],
                    "eval/avg_shortest_10pct": last["avg_shortest_10pct"]})
    row = {k: v for k, v in row.items() if v is not None}
    job.logger.log_metrics(row, step=state.env_steps)
    bar.update(steps)
    bar.set_postfix(succ=f"{row['train_success']:.2f}", eval=f"{last['success_rate']:.2f}",
                    beta=f"{row['beta']:.2f}", buf=buffer.num_trajectories,
                    collect=f"{row.get('collect_steps_per_s', 0):.0f}/s", refresh=False)  # env steps/s while collecting
    return row
