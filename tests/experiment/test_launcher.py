"""The launcher: jobs in order, shards by (task, seed), finished jobs skipped, Ray tasks, errors in one line."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from torchrl_chunk.experiment import JobError, JobId, RayOptions, RunPlan, StopRequested, StopSignals, launch
from torchrl_chunk.experiment import launcher

METRICS = {"success_rate": 1.0, "len_p10": 20.0, "avg_shortest_10pct": 20.0}


def record(job: JobId, **extra) -> dict:
    return {"algo": job.algo, "label": job.algo.upper(), "task": job.task, "seed": job.seed, "metrics": METRICS,
            **extra}


def plan(tmp_path: Path, jobs, **kw) -> RunPlan:
    return RunPlan(run_dir=tmp_path / "run", settings={"x": 1}, jobs=list(jobs), **kw)


def test_job_dirs_have_a_seed_level_and_older_run_dirs_keep_theirs(tmp_path):
    assert launcher.job_dir(tmp_path, "ours", "push-v3", 3) == tmp_path / "jobs/ours/push-v3/seed_3"
    legacy = tmp_path / "jobs/ours/reach-v3"
    (legacy / "checkpoint").mkdir(parents=True)  # a run directory from before seeds
    assert launcher.job_dir(tmp_path, "ours", "reach-v3", 1) == legacy  # its checkpoint is found on resume


def test_jobs_run_in_order_and_finished_ones_are_read_not_run(tmp_path, capsys):
    jobs = [JobId(a, "reach-v3", 1) for a in ("sft", "ours")]
    done = tmp_path / "run" / "jobs" / "sft" / "reach-v3" / "seed_1"
    done.mkdir(parents=True)
    (done / "result.json").write_text(json.dumps(record(jobs[0], eval={"episodes": 8, "eval_seed": 7})))
    ran = []

    def job(settings, job_id, job_dir, position):
        ran.append((settings, job_id, job_dir, position))
        return record(job_id, eval={"episodes": 8, "eval_seed": 7})

    results = launch(job, lambda: plan(tmp_path, jobs, eval_protocol={"episodes": 8, "eval_seed": 7}))
    assert [r["algo"] for r in results] == ["sft", "ours"]
    assert ran == [({"x": 1}, jobs[1], tmp_path / "run" / "jobs" / "ours" / "reach-v3" / "seed_1", 0)]
    assert "| Reach |" in (tmp_path / "run" / "results.md").read_text()
    assert float((tmp_path / "run" / "wall_time.txt").read_text()) >= 0
    assert f"run directory: {tmp_path / 'run'}" in capsys.readouterr().out

    # another eval protocol: the finished job is evaluated again (its job runs, from its checkpoint)
    ran.clear()
    launch(job, lambda: plan(tmp_path, jobs, eval_protocol={"episodes": 16, "eval_seed": 7}))
    assert [j for _, j, _, _ in ran] == jobs


def test_the_jobs_of_a_task_and_seed_stay_in_one_shard(tmp_path, monkeypatch):
    seen = {}

    def map_shards(fn, shards, *args):
        seen["shards"] = shards
        return []

    monkeypatch.setattr(launcher, "map_shards", map_shards)
    jobs = [JobId(a, t, s) for t in ("reach-v3", "push-v3", "door-open-v3") for s in (1, 2) for a in ("sft", "ours")]
    launcher.run_jobs(lambda *a: {}, plan(tmp_path, jobs, parallel=2))
    units = [jobs[i:i + 2] for i in range(0, len(jobs), 2)]  # (task, seed) units, round-robin
    assert seen["shards"] == [[*units[0], *units[2], *units[4]], [*units[1], *units[3], *units[5]]]


def test_errors_end_in_one_line_at_the_top(tmp_path, capsys):
    def fails(settings, job_id, job_dir, position):
        raise JobError(f"error: {job_id.algo}/{job_id.task}: it failed")

    with pytest.raises(SystemExit) as err:
        launch(fails, lambda: plan(tmp_path, [JobId("ours", "reach-v3", 1)]))
    assert str(err.value) == "error: ours/reach-v3: it failed"

    def bad_plan():
        raise JobError("error: env.horizon must be >= 1, got 0. Fix these settings and run again.")

    with pytest.raises(SystemExit) as err:
        launch(fails, bad_plan)
    assert str(err.value).startswith("error: env.horizon must be >= 1")

    def stops(settings, job_id, job_dir, position):
        raise StopRequested(signal.SIGTERM, "ours/reach-v3 (seed 1) checkpointed at iteration 3")

    with pytest.raises(SystemExit) as err:
        launch(stops, lambda: plan(tmp_path, [JobId("ours", "reach-v3", 1)]))
    assert err.value.code == 143
    assert capsys.readouterr().err.strip() == (f"stopped by SIGTERM: ours/reach-v3 (seed 1) checkpointed at iteration 3"
                                               f"; resume={tmp_path / 'run'} continues")


def test_any_error_of_a_ray_job_comes_back_as_one_line_with_its_traceback_kept(tmp_path):
    def crash(*args):
        raise RuntimeError("remote collection lost a Ray worker 4 times in a row\n(ActorDiedError)")

    out = launcher.ray_job(crash, {}, JobId("ours", "push-v3", 2), str(tmp_path), None)
    assert out["error"].startswith("error: ours (seed 2)/push-v3: remote collection lost") and "\n" not in out["error"]
    assert "RuntimeError" in (tmp_path / "jobs/ours/push-v3/seed_2/error.log").read_text()

    def fails(*args):
        raise JobError("error: ours/push-v3: its one line")

    assert launcher.ray_job(fails, {}, JobId("ours", "push-v3", 2), str(tmp_path), None) == {
        "error": "error: ours/push-v3: its one line"}


class FakeRay:
    """``ray`` for ``run_on_ray``: jobs that never finish, or finish as given; the driver may get a SIGTERM."""

    def __init__(self, outcomes=None):
        self.cancelled, self.outcomes, self.options = [], outcomes, None

    def remote(self, **options):
        self.options = options
        return lambda fn: SimpleNamespace(remote=lambda *args: object())

    def wait(self, pending, num_returns, timeout):
        if self.outcomes is not None:
            return pending, []
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        return [], pending

    def get(self, future):
        return self.outcomes.pop(0)

    def cancel(self, future):
        self.cancelled.append(future)


def test_launcher_ray_cancels_the_jobs_on_a_stop(tmp_path):
    fake = FakeRay()
    run = plan(tmp_path, [JobId("ours", "reach-v3", 1), JobId("ours", "reach-v3", 2)], launcher="ray",
               ray=RayOptions(job_cpus=2, job_gpus=0.5, max_retries=1))
    with StopSignals(announce=None), pytest.raises(StopRequested) as err:
        launcher.run_on_ray(lambda *a: {}, run, fake)
    assert len(fake.cancelled) == 2 and err.value.exit_code == 143
    assert fake.options == {"num_cpus": 2, "num_gpus": 0.5, "max_retries": 1}
    assert err.value.detail == ("2 Ray job(s) cancelled, each resumes from its last checkpoint "
                                "(train.checkpoint_every_iters); 0 of 2 finished")


def test_launcher_ray_reports_every_failed_job_once_all_ended(tmp_path):
    fake = FakeRay([{"error": "error: ours/reach-v3: boom"}, record(JobId("sft", "reach-v3", 1))])
    run = plan(tmp_path, [JobId("ours", "reach-v3", 1), JobId("sft", "reach-v3", 1)], launcher="ray")
    with pytest.raises(JobError) as err:
        launcher.run_on_ray(lambda *a: {}, run, fake)
    assert str(err.value) == (f"error: ours/reach-v3: boom\n1 of 2 jobs finished; resume={tmp_path / 'run'} runs "
                              "the others again from their checkpoints.")


def test_a_parallel_tasks_process_that_dies_is_one_line(tmp_path, monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    def broken(*args):
        raise BrokenProcessPool("A process in the process pool was terminated abruptly")

    monkeypatch.setattr(launcher, "map_shards", broken)
    with pytest.raises(SystemExit) as err:
        launch(lambda *a: {}, lambda: plan(tmp_path, [JobId("ours", "reach-v3", 1)]))
    msg = str(err.value)
    assert msg.startswith("error: a parallel_tasks process died abruptly") and f"resume={tmp_path / 'run'}" in msg
