"""Post-train a policy on MetaWorld MT10 with action-chunked PPO + self-BC (arXiv 2509.25718).

    python recipes/mt10.py                               # CPU default: SFT-10 and Ours, 10 tasks
    python recipes/mt10.py algo=all                      # the four columns of Table I
    python recipes/mt10.py preset=paper model=octo_small # Section III's settings
    python recipes/mt10.py preset=smoke                  # whole pipeline, one task, < 1 min
    python recipes/mt10.py resume=runs/mt10/<stamp>      # continue a killed run
    python recipes/mt10.py seeds=[1,2,3] launcher=ray    # every job per seed, as Ray tasks (docs/scaling.md)

One job per (algorithm, task, seed), single-task post-training as in the paper:

    SFT on the expert demos, then, until the env-step budget is spent (Fig. 1(b)):
        collect chunks -> admit short successes to the demo buffer -> GAE per chunk decision
        -> epochs of beta_t * L_PPO + L_BC minibatches -> step beta_t -> quick eval
    and finally the 128 fixed evaluation configurations (Table I).

This file is the job and its loop; ``mt10_utils.py`` builds its parts and ``mt10_config.py``
checks the settings and plans the run. ``torchrl_chunk.experiment.launch`` runs the jobs (here,
in ``parallel_tasks`` processes or as Ray tasks), skips those a resumed run finished, keeps
crash-safe checkpoints, and says every error and stop in one line. A run directory holds the
resolved config, logs, per-job checkpoints and demo buffers, and at the end results.md /
results.csv (Table I layout) and learning-curve PNGs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import mt10_utils as u
from mt10_config import plan_run
from torchrl_chunk.envs import WorkerError
from torchrl_chunk.experiment import (
    CheckpointError, IterationLog, JobError, JobId, StopRequested, last_good_checkpoint, launch, stop)
from torchrl_chunk.keys import STEPS_EXECUTED_KEY


# A job that fails with one of these stops the run in one line (mt10_utils.stop_message); its traceback goes to
# error.log. Also MuJoCo's GL errors (torchrl_chunk.gl), RuntimeErrors that start with GL_ERRORS.
ONE_LINE_ERRORS = (CheckpointError, FloatingPointError, ValueError, OSError, WorkerError)
GL_ERRORS = ("Pixel observations need MuJoCo rendering", "Could not create an offscreen OpenGL context")


def run_job(settings: dict | DictConfig, job: JobId, job_dir: Path, position: int = 0) -> dict:
    """One (algorithm, task, seed) job, wherever the launcher runs it: its ``result.json`` record.

    Every failure it knows ends as a :class:`JobError` with one line (the traceback in
    ``error.log``); a stop signal at a safe point, as :class:`StopRequested`."""
    cfg = OmegaConf.create(settings)  # the run's settings, with the job's seed: everything it draws derives from it
    cfg.seed = int(job.seed)
    algo, task = job.algo, job.task
    try:
        return train_and_evaluate(cfg, algo, task, job_dir, position)
    except JobError:  # already its one line
        raise
    except (*ONE_LINE_ERRORS, RuntimeError, KeyboardInterrupt) as err:  # incl. a diverged env or policy, a full disk
        signum = stop.requested()
        if signum is not None and isinstance(err, (WorkerError, KeyboardInterrupt)):  # its env workers got it too
            ckpt, iteration, _ = last_good_checkpoint(job_dir)
            raise StopRequested(signum, f"{algo}/{task} (seed {cfg.seed}) stopped mid-iteration (its env workers got "
                                "the signal too); " + (f"its last good checkpoint is {ckpt} (iteration {iteration})"
                                                       if ckpt else "it has no checkpoint yet")) from err
        if isinstance(err, ONE_LINE_ERRORS) or str(err).startswith(GL_ERRORS):  # the traceback goes to error.log
            raise JobError(u.stop_message(algo, task, job_dir, err)) from err
        raise


def train_and_evaluate(cfg: DictConfig, algo: str, task: str, job_dir: Path, position: int) -> dict:
    t_start = time.time()
    job = u.make_job(cfg, algo, task, job_dir)  # restores the job's checkpoint, if any
    wall_before = job.state.wall_time_s  # spent before a resume

    def wall() -> float:  # seconds spent on this job, across resumes
        return wall_before + time.time() - t_start

    try:
        if job.state.phase == "sft":
            if not u.load_shared_sft(cfg, job):  # SFT-10, Ours and PPO clone the same demos alike: once per run
                sft(cfg, job)
                u.store_shared_sft(cfg, job)
            job.state.phase = "rl" if job.spec.ppo else "eval"
            u.save_checkpoint(job, wall())
            stop.check(lambda: f"{algo}/{task} (seed {cfg.seed}) checkpointed after its SFT ({job_dir / 'checkpoint'})")
        if job.state.phase == "rl":
            post_train(cfg, job, position, wall)
        record = int(cfg.eval.video_episodes) if cfg.env.from_pixels else 0  # episodes 0 .. record-1
        u.close_eval_envs(job)  # the quick evaluations' workers: the final one builds its own
        with stop.interruptible(f"{algo}/{task} (seed {cfg.seed}) was in its final evaluation, which runs again on "
                                f"resume from its checkpoint ({job_dir / 'checkpoint'})"):  # cut short: nothing is lost
            metrics = u.evaluate(cfg, job, int(cfg.eval.episodes), record=record)  # Table I protocol
        return u.write_result(cfg, job, metrics, wall())
    finally:
        u.close_eval_envs(job)  # the evaluation worker processes, if any


def sft(cfg: DictConfig, job: u.Job) -> None:
    """Behaviour cloning on the expert demos: the policy at t = 0 of Eq. 8."""
    optim = u.make_optimizer(cfg, job.actor, job.critic, lr=cfg.bc.pretrain_lr)
    steps = int(cfg.bc.pretrain_steps)
    for step in range(steps):  # a stop here: SFT is not checkpointed midway, it starts again on resume
        stop.check(lambda: f"{job.algo}/{job.task} (seed {cfg.seed}) was in its SFT (step {step} of {steps}), which "
                           "starts again on resume")
        out = job.bc(job.buffer.sample(int(cfg.bc.pretrain_batch_size)).to(job.device))
        if not torch.isfinite(out["loss_bc"]):
            raise JobError(
                f"error: {job.algo}/{job.task}: the SFT loss became {out['loss_bc'].item()}; lower "
                "bc.pretrain_lr or check the demos. Nothing was checkpointed."
            )
        optim.zero_grad()
        out["loss_bc"].backward()
        optim.step()


def post_train(cfg: DictConfig, job: u.Job, position: int, wall) -> None:
    """Fig. 1(b): collect -> admit -> GAE -> PPO+BC epochs -> beta step -> eval, until the budget."""
    state, buffer, total = job.state, job.buffer, int(cfg.train.total_env_steps)
    collector = u.make_collector(cfg, job)  # here, or Ray actors (collector.backend=ray)
    bar = tqdm(total=total, initial=state.env_steps, desc=f"{job.algo} {job.task}", position=position,
               unit="step", dynamic_ncols=True, file=sys.stdout, mininterval=2.0)
    buffer.length_weighting = float(cfg.buffer.length_weighting)  # SFT sampled uniformly
    try:  # the collector's workers stop on every path, an error of the first evaluation included
        stop.check(lambda: f"{job.algo}/{job.task} (seed {cfg.seed}) checkpointed at iteration {state.iteration} "
                           f"({job.dir / 'checkpoint'})")  # a stop while the job was built: nothing new to save
        if state.iteration == 0:
            state.history.append({"env_steps": 0, **u.evaluate(cfg, job, cfg.train.quick_eval_episodes,
                                                                  collector=collector)})
        while state.env_steps < total:
            log = IterationLog()
            with log.timer("collect"):  # whole fresh episodes, seeded by (seed, iteration)
                data = u.collect(collector, int(cfg.seed), state.iteration)
            steps = int(data["next", STEPS_EXECUTED_KEY].sum())
            with log.timer("admit"):  # offer every finished episode; the buffer admits short successes
                if job.spec.bc:
                    buffer.extend(data)
                    buffer.discard_open_episodes()  # the next batch starts fresh episodes
                    u.set_bc_weight(cfg, job)  # bc.coeff, or decayed as the buffer fills with own successes
            data = data.to(job.device)
            with log.timer("update"):
                with torch.no_grad():  # in the loss's precision (bf16 autocast or none); targets fp32
                    job.ppo.value_estimator(data)  # GAE over chunk decisions (Eq. 5)
                flat = data.reshape(-1)
                for _ in range(int(cfg.ppo.epochs)):
                    for idx in torch.randperm(flat.shape[0]).split(int(cfg.ppo.minibatch_size)):
                        # beta_t * L_PPO + L_BC on a demo-buffer batch (Eq. 7), or PPO alone
                        out = job.loss(flat[idx]) if job.spec.bc else job.ppo(flat[idx])
                        log.add_update(out, u.optimizer_step(cfg, job, out))
            if cfg.schedule.unit == "env_steps":
                job.loss.schedule.step(steps)  # beta_t (Eq. 8), t in env steps
            state.env_steps += steps
            state.iteration += 1
            if u.quick_eval_due(cfg, state.env_steps, steps):
                with log.timer("eval"):
                    state.history.append({"env_steps": state.env_steps,
                                             **u.evaluate(cfg, job, cfg.train.quick_eval_episodes,
                                                          collector=collector)})
            u.log_iteration(job, log, data, steps, bar, collector)
            stopping = stop.requested()  # SIGTERM / SIGINT: the end of an iteration is the safe point
            every = int(cfg.train.checkpoint_every_iters)
            if stopping or state.iteration % every == 0 or state.env_steps >= total:
                state.phase = "eval" if state.env_steps >= total else "rl"
                u.save_checkpoint(job, wall())
                stopping = stop.requested()  # also one received while saving: this checkpoint is the stop's
            if stopping:
                raise StopRequested(stopping, f"{job.algo}/{job.task} (seed {cfg.seed}) checkpointed at iteration "
                                              f"{state.iteration} ({job.dir / 'checkpoint'})")
    finally:
        bar.close()
        collector.shutdown()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Check the settings, run every job (algorithm x task x seed) and write Table I; errors in one line."""
    launch(run_job, plan_run, cfg)


if __name__ == "__main__":
    main()
