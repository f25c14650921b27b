"""Running a run's jobs: each (algorithm, task, seed) here, in processes or as a Ray task; Table I at the end.

A recipe hands :func:`launch` its *job* and its *plan*:

* the job, ``job(settings, job_id, job_dir, position) -> record``, trains and evaluates one
  :class:`JobId` (algorithm, task, seed) in ``job_dir`` and returns its ``result.json`` record
  (:mod:`.results`). It must be a module-level function (it is pickled to shard processes
  and Ray workers) and leave ``settings`` unchanged;
* the plan, a function that checks the settings, opens the run directory and returns a
  :class:`RunPlan`: the jobs in run order, the plain (picklable) settings every job gets,
  and where the jobs run.

:func:`launch` then skips the jobs a resumed run finished already (:func:`.results.finished_result`),
runs the others in this process, over ``parallel`` processes (:mod:`.sharding`; the jobs of one
(task, seed) run one after the other in the same process, and the (task, seed) units go to the
processes round-robin) or as one Ray task each (``launcher="ray"``: all finish or fail before
the errors are reported, a stop cancels them and each resumes from its checkpoint), and
writes Table I (:func:`.results.write_tables`) and ``wall_time.txt``.

Errors end in one line, said once, here: the plan and the jobs raise :class:`JobError` with
the line to print (:func:`failure_message` words a job's failure: its cause, the fix where
it is known, its last good checkpoint, the traceback in ``error.log``), and :func:`launch`
prints it and exits with status 1; a stop (SIGTERM / SIGINT, :mod:`.stop`) says what was saved
and exits ``128 + signum``. Any other exception of a job run here is a bug and keeps its
traceback; a Ray task's comes back as one line (its traceback in ``error.log``).

Why hand-written: TorchRL has no experiment launcher (its ``Trainer`` runs one loop in one
process); Hydra's launchers start a process per configuration, with no resume that skips
finished jobs and no stop at the jobs' safe points.
"""

from __future__ import annotations

import errno
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from torchrl_chunk.experiment import stop
from torchrl_chunk.experiment.checkpoint import last_good_checkpoint
from torchrl_chunk.experiment.run_dir import RunDirError
from torchrl_chunk.experiment.results import RESULT, finished_result, write_tables
from torchrl_chunk.experiment.sharding import map_shards, shard
from torchrl_chunk.experiment.stop import StopRequested, StopSignals


class JobError(ValueError):
    """An error that ends the run, worded as the one line :func:`launch` prints (``error: ...``)."""

    exit_code = 1


class JobId(NamedTuple):
    """One job of a run."""

    algo: str
    task: str
    seed: int


#: ``job(settings, job_id, job_dir, position) -> result.json record``
JobFn = Callable[[dict, JobId, Path, int], dict]


@dataclass
class RayOptions:
    """The run's Ray cluster (joined or started once, for the whole run) and its tasks' resources."""

    address: str | None = None  # None or "local": a private instance; "auto" or "HOST:PORT": a cluster
    num_cpus: int | None = None  # CPUs of a private instance
    python_path: Sequence[str] = ()  # where the workers import the job's module from (e.g. recipes/)
    job_cpus: int = 1  # resources of one job's Ray task (launcher="ray")
    job_gpus: float = 0.0
    max_retries: int = 0  # a job whose worker dies runs again, from its checkpoint
    address_key: Sequence[str] = ()  # the setting that gets the cluster's address, for the jobs to join it


@dataclass
class RunPlan:
    """What :func:`launch` runs."""

    run_dir: Path  # as the user gave it (messages, tables); the jobs get it made absolute
    settings: dict  # what every job gets: plain data, paths absolute (workers run elsewhere)
    jobs: list[JobId]  # in run order
    parallel: int = 1  # processes for the local launcher
    launcher: str = "local"  # or "ray": one Ray task per job
    ray: RayOptions | None = None  # a Ray cluster for the run (the ray launcher, or jobs that use Ray)
    eval_protocol: dict | None = field(default=None)  # result.json's "eval" record a finished job must have


def job_dir(run_dir: Path | str, algo: str, task: str, seed: int) -> Path:
    """``jobs/<algo>/<task>/seed_<k>/``; a run directory from before seeds keeps ``jobs/<algo>/<task>/``."""
    legacy = Path(run_dir) / "jobs" / algo / task
    if (legacy / "checkpoint").exists() or (legacy / RESULT).exists():
        return legacy  # resume=<an older run dir> finds its checkpoints where they are
    return legacy / f"seed_{seed}"


def absolute_paths(settings: dict, keys: Sequence[Sequence[str]]) -> dict:
    """``settings`` with the relative paths at ``keys`` (e.g. ``("demos", "cache_dir")``) resolved against
    this directory (a Ray worker's is not the driver's); ``""``, ``"random"`` and ``None`` stay."""
    for path in keys:
        parent = settings
        for k in path[:-1]:
            parent = parent.get(k) or {}
        value = parent.get(path[-1])
        if isinstance(value, str) and value not in ("", "random"):
            parent[path[-1]] = str(Path(value).expanduser().resolve())
    return settings


def failure_message(name: str, job_dir: Path, err: BaseException,
                    fix: Callable[[BaseException], str | None] | None = None) -> str:
    """One line: what stopped job ``name`` (``"<algo>/<task>"``), the fix where the cause is known (a full
    or read-only disk; ``fix(cause)`` adds the caller's), the last good checkpoint (only one that
    verifies and loads: :func:`.checkpoint.last_good_checkpoint`) and how to go on. The traceback
    goes to the job's ``error.log`` (the run directory's when the job's cannot be written)."""
    run_dir = next((p.parent for p in job_dir.parents if p.name == "jobs"), job_dir)  # run_dir/jobs/algo/task[/seed_k]
    where = ""
    for log in (job_dir / "error.log", run_dir / "error.log"):
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("".join(traceback.format_exception(err)))
        except OSError:
            continue
        where = f" (traceback in {log})"
        break
    msg = f"error: {name}: {' '.join(str(err).split())}"

    def add(sentence: str) -> None:
        nonlocal msg
        msg = msg.rstrip(" .") + ". " + sentence

    chain, e = [], err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:  # the fix, from the first cause this knows
        code = getattr(e, "errno", None)
        if code in (errno.ENOSPC, errno.EDQUOT):
            add(f"The disk of {job_dir} is full: free space there (or move the run directory to a larger disk), "
                "then resume.")
        elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
            add(f"{getattr(e, 'filename', None) or job_dir} cannot be written by this user: fix the permissions of it "
                "or its directory (or move the run directory somewhere writable), then resume.")
        elif fix is not None and (hint := fix(e)):
            add(hint)
        else:
            continue
        break
    ckpt, iteration, note = last_good_checkpoint(job_dir)
    if ckpt is not None:
        add(f"The last good checkpoint is {ckpt} (iteration {iteration}{'; ' + note if note else ''}): "
            f"resume={run_dir} goes on from it with the same settings and data; to change training settings "
            "(e.g. a lower optim.lr), start a new run_dir.")
    elif note is None:
        add(f"Nothing of this job was checkpointed yet: resume={run_dir} starts it again.")
    elif str(job_dir / "checkpoint") not in msg:  # an error about the checkpoint itself already says what to do
        add(f"No checkpoint of this job can be loaded ({note}): delete {job_dir / 'checkpoint'} and "
            f"resume={run_dir} starts it again from scratch.")
    return msg + where


# ----------------------------------------------------------------------------------------
# where the jobs run: this process, shard processes, Ray tasks
# ----------------------------------------------------------------------------------------
def run_shard(jobs: list[JobId], job: JobFn, settings: dict, run_dir: str, protocol: dict | None,
              position: int) -> list[dict]:
    """The ``jobs`` one after the other in this process (a finished one is read, not run again)."""
    results: list[dict] = []
    for algo, task, seed in jobs:  # a stop between two jobs: the others start on resume
        stop.check(lambda: f"{len(results)} of {len(jobs)} jobs finished, the others start on resume")
        path = job_dir(run_dir, algo, task, seed)
        done = finished_result(path, protocol)  # finished before a resume, with the same eval protocol
        results.append(done if done is not None else job(settings, JobId(algo, task, seed), path, position))
    return results


def ray_job(job: JobFn, settings: dict, job_id: JobId, run_dir: str, protocol: dict | None) -> dict:
    """One job as a Ray task. A job whose worker dies is run again by Ray and resumes from its
    checkpoint; an error of the job itself comes back as ``{"error": line}`` (not retried)."""
    try:
        return run_shard([job_id], job, settings, run_dir, protocol, 0)[0]
    except JobError as err:  # its one line: a Ray task must not exit its worker
        return {"error": str(err)}
    except Exception as err:  # noqa: BLE001 - any other failure: one line, the traceback in error.log
        algo, task, seed = job_id
        return {"error": failure_message(f"{algo} (seed {seed})/{task}", job_dir(run_dir, algo, task, seed), err)}


def run_on_ray(job: JobFn, plan: RunPlan, ray: Any) -> list[dict]:
    """Every job as a Ray task; all of them finish (or fail) before the errors are reported."""
    opts, root = plan.ray or RayOptions(), _absolute(plan.run_dir)
    remote = ray.remote(num_cpus=opts.job_cpus, num_gpus=float(opts.job_gpus),
                        max_retries=int(opts.max_retries))(ray_job)
    futures = [remote.remote(job, plan.settings, j, str(root), plan.eval_protocol) for j in plan.jobs]
    pending = list(futures)
    while pending and stop.requested() is None:  # not ray.get: it would wait through a SIGTERM / SIGINT
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
    for future in pending:  # a stop: the running jobs get a KeyboardInterrupt and end; their checkpoints stay
        ray.cancel(future)
    results, errors = [], []
    for (algo, task, seed), future in zip(plan.jobs, futures):
        if future in pending:
            continue
        try:
            result = ray.get(future)
        except Exception as err:  # noqa: BLE001 - e.g. its worker died more than max_retries times
            result = {"error": f"error: {algo}/{task} (seed {seed}): {' '.join(str(err).split())[:500]}"}
        (errors if "error" in result else results).append(result.get("error", result))
    n = len(plan.jobs)
    if pending:
        raise StopRequested(stop.requested(), f"{len(pending)} Ray job(s) cancelled, each resumes from its last "
                            f"checkpoint (train.checkpoint_every_iters); {len(results)} of {n} finished"
                            + (f", {len(errors)} failed: {' / '.join(errors)}" if errors else ""))
    if errors:
        raise JobError("\n".join(errors) + f"\n{len(results)} of {n} jobs finished; resume={root} "
                       "runs the others again from their checkpoints.")
    return results


def run_jobs(job: JobFn, plan: RunPlan) -> list[dict]:
    """Every job of ``plan`` (see the module's docstring); raises :class:`JobError`, :class:`StopRequested`
    or ``BrokenProcessPool`` (a shard process killed) for :func:`launch` to word."""
    ray = None
    if plan.ray is not None:  # one cluster for the whole run: the shard processes and Ray tasks join it
        from torchrl_chunk.distributed import init_ray

        ray = init_ray(plan.ray.address, num_cpus=plan.ray.num_cpus, python_path=[str(p) for p in plan.ray.python_path])
        if plan.ray.address_key:
            parent = plan.settings
            for k in plan.ray.address_key[:-1]:
                parent = parent[k]
            parent[plan.ray.address_key[-1]] = ray.get_runtime_context().gcs_address
    on_ray = plan.launcher == "ray"
    signals = StopSignals(announce="once the Ray jobs are cancelled (they keep their checkpoints)" if on_ray else
                          "the next safe point (the end of this iteration, with a checkpoint)",
                          second=f"the checkpoints written so far are kept: resume={plan.run_dir} continues from them")
    with signals:  # SIGTERM / SIGINT: a checkpoint at the next safe point, one line, exit 128 + signum
        try:
            if on_ray:
                return run_on_ray(job, plan, ray)
            units: dict[tuple[str, int], list[JobId]] = {}  # the jobs of one (task, seed), in run order
            for j in plan.jobs:
                units.setdefault((j.task, j.seed), []).append(j)
            shards = [[j for unit in s for j in unit] for s in shard(list(units.values()), int(plan.parallel))]
            return map_shards(run_shard, shards, job, plan.settings, str(_absolute(plan.run_dir)), plan.eval_protocol)
        finally:
            if ray is not None:
                ray.shutdown()  # a private instance stops now, not at interpreter exit


def launch(job: JobFn, plan: Callable[..., RunPlan], *args: Any) -> list[dict]:
    """Run ``plan(*args)``'s jobs with ``job``; write Table I and ``wall_time.txt``; return the records.

    The one entry point of a recipe's ``main``: every error ends here, in one line on stderr,
    with exit status 1 (:class:`JobError` from the plan or a job, :class:`~.run_dir.RunDirError`
    from the plan), ``128 + signum`` (a stop:
    what was saved and ``resume=<run_dir> continues``) or 1 (a shard process killed, e.g. by
    the out-of-memory killer).
    """
    try:
        run = plan(*args)  # the settings checked and the run directory opened before any job starts
    except JobError as err:
        raise SystemExit(str(err)) from None
    except RunDirError as err:  # a run directory that cannot be used, or a refused resume
        raise SystemExit(f"error: {err}") from None
    t0 = time.time()
    try:
        results = run_jobs(job, run)
    except JobError as err:
        raise SystemExit(str(err)) from None
    except StopRequested as err:
        print(f"{err}; resume={run.run_dir} continues", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    except BrokenProcessPool:  # a parallel_tasks process was killed (e.g. by the out-of-memory killer)
        raise SystemExit(f"error: a parallel_tasks process died abruptly (an exit code of -9 is most often the "
                         f"out-of-memory killer: lower parallel_tasks); the checkpoints of its jobs are kept: "
                         f"resume={run.run_dir} continues from them.") from None
    md = write_tables(Path(run.run_dir), results)
    wall = time.time() - t0
    (Path(run.run_dir) / "wall_time.txt").write_text(f"{wall:.1f}\n")
    print(f"\n{md}\nrun directory: {run.run_dir}  (wall time {wall / 60:.1f} min)")
    return results


def _absolute(run_dir: Path | str) -> Path:
    return Path(run_dir).expanduser().resolve()
