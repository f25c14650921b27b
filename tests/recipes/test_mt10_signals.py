"""Stops and failures of the MT10 recipe, each ending in one line.

SIGTERM / SIGINT: a checkpoint at the next safe point, one line, exit 128 + signum, and the
resumed run equals an uninterrupted one. A dead env worker, a full or read-only disk and an
unusable ``MUJOCO_GL``: one line naming the job, the cause, the fix and the last good
checkpoint, which is only ever one that loads; the traceback goes to ``error.log``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "mt10.py"
sys.path.insert(0, str(ROOT / "recipes"))
import mt10  # noqa: E402
import mt10_utils as u  # noqa: E402

from torchrl_chunk import gl  # noqa: E402
from torchrl_chunk.envs import WorkerError  # noqa: E402
from torchrl_chunk.experiment import (  # noqa: E402
    CheckpointError, JobError, JobId, JobState, StopRequested, StopSignals)
from torchrl_chunk.experiment.checkpoint import previous_dir  # noqa: E402

# Twenty iterations of 320 env steps, so that a signal sent once the first one is logged lands
# mid-training however fast the machine (with three, a quiet machine could finish first); only
# the stop writes a checkpoint during post-training.
ARGS = ["preset=smoke", "algo=ours", "train.total_env_steps=6400", "train.checkpoint_every_iters=100"]
JOB = Path("jobs/ours/reach-v3/seed_1")
STOPPED = re.compile(r"stopped by (SIG\w+): ours/reach-v3 \(seed 1\) checkpointed at iteration (\d+) \((.+)\); "
                     r"resume=(\S+) continues")


# ---------------------------------------------------------------------- the recipe, signalled
def start(args, cwd: Path, cache: str = "cache", **kw) -> subprocess.Popen:
    env = {**os.environ, "TORCHRL_CHUNK_CACHE": str(cwd / cache), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(RECIPE), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals, **kw)


def _default_signals() -> None:
    """The recipe starts as from a shell, whatever code run earlier in this test process left
    ignored or blocked (a child inherits both)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})


def signal_after_first_iteration(proc: subprocess.Popen, job: Path, send) -> tuple[str, str]:
    """``send()`` once the job has saved the checkpoint that ends its SFT (post-training starts:
    the stop lands in its first iterations, twenty to go); the outputs. (Not the logs: TorchRL's
    CSV logger may write its files only at the end.)"""
    state, deadline = job / "checkpoint" / "state.pt", time.time() + 300
    while proc.poll() is None and time.time() < deadline and not state.exists():
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before its SFT checkpoint appeared"
    send()
    out, err = proc.communicate(timeout=300)
    return out, err


def test_sigterm_checkpoints_says_one_line_exits_143_and_resume_equals_the_uninterrupted_run(tmp_path):
    reference = start([*ARGS, "run_dir=full"], tmp_path, cache="cache_full")  # side by side, its own demo cache
    proc = start([*ARGS, "run_dir=run"], tmp_path)
    out, err = signal_after_first_iteration(proc, tmp_path / "run" / JOB, lambda: proc.send_signal(signal.SIGTERM))
    assert proc.returncode == 143, (err[-3000:], out[-3000:])
    assert len(err.strip().splitlines()) == 1, err
    m = STOPPED.fullmatch(err.strip())
    assert m and m[4] == "run" and m[1] == "SIGTERM", err
    assert Path(m[3]) == tmp_path / "run" / JOB / "checkpoint"
    state = torch.load(Path(m[3]) / "state.pt", weights_only=False)
    assert state["iteration"] == int(m[2]) >= 0 and state["phase"] == "rl"  # the SFT one, or an iteration's off the every-100 schedule
    assert not (tmp_path / "run" / JOB / "result.json").exists()
    assert "SIGTERM: stopping at the next safe point" in out  # said at once, on stdout

    resumed = subprocess.run([sys.executable, str(RECIPE), "resume=run"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=600, env={**os.environ, "TORCHRL_CHUNK_CACHE": str(tmp_path / "cache")})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference.communicate(timeout=600)
    assert reference.returncode == 0
    # Bit for bit, as tests/recipes/test_mt10.py::test_resume_after_kill_matches_uninterrupted (same reasons).
    a, b = (json.loads((tmp_path / d / JOB / "result.json").read_text()) for d in ("full", "run"))
    for key in ("metrics", "history", "env_steps", "updates", "buffer"):
        assert a[key] == b[key], key
    wa, wb = (torch.load(tmp_path / d / JOB / "checkpoint" / "state.pt", weights_only=False)["modules"]["actor"]
              for d in ("full", "run"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_ctrl_c_checkpoints_says_one_line_and_exits_130_without_a_traceback(tmp_path):
    proc = start([*ARGS, "run_dir=run"], tmp_path, start_new_session=True)  # its own group, as a shell's job
    out, err = signal_after_first_iteration(proc, tmp_path / "run" / JOB,
                                            lambda: os.killpg(proc.pid, signal.SIGINT))  # Ctrl-C: the whole group
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    m = STOPPED.fullmatch(err.strip())
    assert m and m[1] == "SIGINT", err
    assert torch.load(Path(m[3]) / "state.pt", weights_only=False)["iteration"] == int(m[2])


# ---------------------------------------------------------------------- in this process
@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo_cache")  # the expert demos, collected once for these tests


def smoke_config(cache: Path, *overrides: str):
    with initialize_config_dir(str(ROOT / "recipes" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["preset=smoke", "algo=ours", "train.total_env_steps=2000",
                                           f"demos.cache_dir={cache}", *overrides])
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def job_dir(tmp_path: Path, algo: str = "ours") -> Path:
    return tmp_path / "run" / "jobs" / algo / "reach-v3" / "seed_1"


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_a_dead_env_worker_is_one_line_with_the_fix_and_the_last_good_checkpoint(tmp_path, monkeypatch, cache):
    real_collect, calls = u.collect, []

    def collect(*args):
        calls.append(1)
        if len(calls) == 3:
            raise WorkerError("env worker 1 (pid 4242) died during step (exit code -9); see its output above for "
                              "the cause (e.g. out of memory or a GL crash)")
        return real_collect(*args)

    monkeypatch.setattr(u, "collect", collect)
    job = job_dir(tmp_path)
    with pytest.raises(JobError) as err:
        mt10.run_job(smoke_config(cache), JobId("ours", "reach-v3", 1), job)
    msg = one_line(err)
    assert msg.startswith("error: ours/reach-v3: env worker 1 (pid 4242) died during step (exit code -9)")
    assert "out-of-memory killer: lower env.num_workers or env.num_envs" in msg
    assert f"The last good checkpoint is {job / 'checkpoint'} (iteration 2)" in msg
    assert f"resume={tmp_path / 'run'} goes on from it" in msg and msg.endswith(f"(traceback in {job / 'error.log'})")
    assert "WorkerError" in (job / "error.log").read_text()


def test_env_workers_killed_by_the_same_signal_are_a_stop_not_an_error(tmp_path, monkeypatch):
    """Slurm signals every process of the job: the env workers die with the learner's SIGTERM."""
    def dies(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        raise WorkerError("env worker 0 (pid 1) died during step (exit code -15)")

    monkeypatch.setattr(mt10, "train_and_evaluate", dies)
    with StopSignals(announce=None), pytest.raises(StopRequested) as err:
        mt10.run_job({"seed": 1}, JobId("ours", "reach-v3", 1), job_dir(tmp_path))
    assert err.value.exit_code == 143
    assert err.value.detail == ("ours/reach-v3 (seed 1) stopped mid-iteration (its env workers got the signal too); "
                                "it has no checkpoint yet")


def checkpointed_job(tmp_path: Path, iteration: int = 1) -> SimpleNamespace:
    """Enough of a ``mt10_utils.Job`` for ``save_checkpoint``, with one checkpoint written."""
    job = SimpleNamespace(dir=job_dir(tmp_path), state=JobState(phase="rl", iteration=iteration),
                          modules={"actor": torch.nn.Linear(2, 2)}, buffer=None, spec=SimpleNamespace(bc=False))
    job.dir.mkdir(parents=True)
    u.save_checkpoint(job, 1.0)
    return job


@pytest.mark.parametrize("failure", ["enospc", "torch-full-disk"])
def test_a_disk_that_fills_during_a_checkpoint_is_one_line_and_the_previous_one_stays(tmp_path, monkeypatch,
                                                                                      failure):
    import shutil

    from torchrl_chunk.experiment import checkpoint

    job = checkpointed_job(tmp_path)
    real_save, real_usage = torch.save, shutil.disk_usage

    def full_disk(obj, path, *a, **k):
        real_save(obj, path, *a, **k)  # a partial file, then the error
        if failure == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=0))
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # what torch says

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    job.state.iteration = 2
    with pytest.raises(CheckpointError) as err:
        u.save_checkpoint(job, 2.0)
    assert err.value.errno == errno.ENOSPC
    assert not (job.dir / "checkpoint.tmp").exists()  # its space is given back
    msg = u.stop_message("ours", "reach-v3", job.dir, err.value)
    assert "\n" not in msg and msg.startswith(f"error: ours/reach-v3: could not write the checkpoint of iteration 2 in "
                                              f"{job.dir}")
    assert f"The disk of {job.dir} is full: free space there" in msg
    assert f"The last good checkpoint is {job.dir / 'checkpoint'} (iteration 1)" in msg


def test_a_read_only_checkpoint_directory_is_one_line(tmp_path, monkeypatch):
    from torchrl_chunk.experiment import checkpoint

    job = checkpointed_job(tmp_path)

    def read_only(obj, path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(checkpoint.torch, "save", read_only)
    with pytest.raises(CheckpointError) as err:
        u.save_checkpoint(job, 2.0)
    msg = u.stop_message("ours", "reach-v3", job.dir, err.value)
    assert f"{job.dir / 'checkpoint.tmp' / 'state.pt'} cannot be written by this user: fix the permissions" in msg
    assert f"The last good checkpoint is {job.dir / 'checkpoint'} (iteration 1)" in msg


def test_an_unwritable_job_directory_is_one_line_with_the_traceback_in_the_run_directory(tmp_path, monkeypatch,
                                                                                        cache):
    job, real_mkdir = job_dir(tmp_path), Path.mkdir

    def mkdir(self, *a, **k):
        if self == job or job in self.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(JobError) as err:
        mt10.run_job(smoke_config(cache), JobId("ours", "reach-v3", 1), job)
    msg = one_line(err)
    assert msg.startswith(f"error: ours/reach-v3: [Errno 13] Permission denied: '{job}'")
    assert f"{job} cannot be written by this user: fix the permissions of it or its directory" in msg
    assert f"Nothing of this job was checkpointed yet: resume={tmp_path / 'run'} starts it again" in msg
    assert msg.endswith(f"(traceback in {tmp_path / 'run' / 'error.log'})")


def test_mujoco_gl_that_cannot_render_pixels_is_one_line(tmp_path, monkeypatch, cache):
    """``MUJOCO_GL=nonsense`` with pixels: torchrl_chunk.gl's reason, raised at the first frame."""
    reason = gl._why_unusable("nonsense")
    monkeypatch.setattr(gl, "RENDERING_UNAVAILABLE", reason)
    job = job_dir(tmp_path)
    cfg = smoke_config(cache, "env.from_pixels=true", "model=pixel", "env.image_size=32")
    with pytest.raises(JobError) as err:
        mt10.run_job(cfg, JobId("ours", "reach-v3", 1), job)
    msg = one_line(err)
    assert msg.startswith("error: ours/reach-v3: Pixel observations need MuJoCo rendering, but MUJOCO_GL=nonsense is "
                          "not a value MuJoCo knows")
    assert "set MUJOCO_GL=egl" in msg and "Nothing of this job was checkpointed yet" in msg
    assert "RuntimeError" in (job / "error.log").read_text()


def test_a_checkpoint_that_cannot_be_loaded_is_never_the_last_good_one(tmp_path):
    job = checkpointed_job(tmp_path, iteration=3)
    job.state.iteration = 4
    u.save_checkpoint(job, 2.0)  # checkpoint/ (4), checkpoint.prev/ (3)
    ckpt, prev = job.dir / "checkpoint", previous_dir(job.dir)
    msg = u.stop_message("ours", "reach-v3", job.dir, ValueError("x"))
    assert f"The last good checkpoint is {ckpt} (iteration 4)" in msg

    (ckpt / "state.pt").write_bytes((ckpt / "state.pt").read_bytes()[:-10])  # truncated: its manifest fails
    msg = u.stop_message("ours", "reach-v3", job.dir, ValueError("x"))
    assert f"The last good checkpoint is {prev} (iteration 3; {ckpt} is damaged: " in msg  # what resume loads

    (prev / "state.pt").write_bytes(b"garbage")
    msg = u.stop_message("ours", "reach-v3", job.dir, ValueError("x"))
    assert "last good checkpoint" not in msg
    assert f"No checkpoint of this job can be loaded ({ckpt} is damaged: " in msg and f"delete {ckpt}" in msg

    # a checkpoint without a manifest (written before them) that does not load, as resume reports it
    for d in (ckpt, prev):
        (d / "manifest.json").unlink()
    (ckpt / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as err:
        u.load_checkpoint(job.dir, job.modules, None)
    msg = u.stop_message("sft", "reach-v3", job.dir, err.value)
    assert "cannot be loaded" in msg and "last good checkpoint" not in msg and msg.count(f"Delete {ckpt}") == 1


def test_a_stop_during_sft_or_the_final_evaluation(tmp_path, monkeypatch, cache):
    """SFT is not checkpointed midway: a stop there saves nothing (SFT starts again on resume). The
    final evaluation is cut short at once: the checkpoint it started from is already on disk."""
    cfg = smoke_config(cache, "algo=sft")
    job = job_dir(tmp_path, "sft")
    with StopSignals(announce=None):
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(StopRequested) as err:
            mt10.run_job(cfg, JobId("sft", "reach-v3", 1), job)
    assert err.value.detail == "sft/reach-v3 (seed 1) was in its SFT (step 0 of 20), which starts again on resume"
    assert not (job / "checkpoint").exists()

    def evaluate_then_signal(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # cut short
        raise AssertionError("not cut short")

    monkeypatch.setattr(u, "evaluate", evaluate_then_signal)
    with StopSignals(announce=None), pytest.raises(StopRequested) as err:
        mt10.run_job(cfg, JobId("sft", "reach-v3", 1), job)
    assert err.value.detail == (f"sft/reach-v3 (seed 1) was in its final evaluation, which runs again on resume from "
                                f"its checkpoint ({job / 'checkpoint'})")
    assert torch.load(job / "checkpoint" / "state.pt", weights_only=False)["phase"] == "eval"


def test_a_parallel_tasks_process_that_dies_is_one_line(tmp_path, monkeypatch, cache):
    from concurrent.futures.process import BrokenProcessPool

    from torchrl_chunk.experiment import launcher

    def broken(*args):
        raise BrokenProcessPool("A process in the process pool was terminated abruptly")

    monkeypatch.setattr(launcher, "map_shards", broken)
    with pytest.raises(SystemExit) as err:
        mt10.main(smoke_config(cache, f"run_dir={tmp_path / 'run'}"))
    msg = one_line(err)
    assert msg.startswith("error: a parallel_tasks process died abruptly") and f"resume={tmp_path / 'run'}" in msg
