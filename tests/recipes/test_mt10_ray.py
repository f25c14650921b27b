"""The MT10 recipe on a local Ray cluster: a 2-job sweep that loses a worker mid-run and still
equals the local run, and the smoke preset with remote collection and remote evaluation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "mt10.py"
SWEEP = ["preset=smoke", "algo=ours", "seeds=[1,2]", "train.total_env_steps=1200"]
pytestmark = pytest.mark.slow


def command(args, cwd: Path) -> tuple[list[str], dict]:
    env = {**os.environ, "TORCHRL_CHUNK_CACHE": str(cwd.parent / "cache"), "PYTHONUNBUFFERED": "1"}
    return [sys.executable, str(RECIPE), *args], env


def run(args, cwd: Path) -> subprocess.CompletedProcess:
    cmd, env = command(args, cwd)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def job(run_dir: Path, seed: int) -> Path:
    return run_dir / "jobs" / "ours" / "reach-v3" / f"seed_{seed}"


def same_job(a: Path, b: Path) -> None:
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    for key in ("metrics", "history", "env_steps", "updates", "buffer", "seed"):
        assert ra[key] == rb[key], key
    wa, wb = (torch.load(d / "checkpoint" / "state.pt", weights_only=False)["modules"]["actor"] for d in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory) -> Path:
    """The two seeds run here, one after the other: the reference."""
    cwd = tmp_path_factory.mktemp("local")
    proc = run([*SWEEP, "run_dir=run"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "run"


def test_sweep_on_ray_survives_a_killed_worker_and_equals_the_local_run(local_sweep, ray_cluster, tmp_path):
    cwd = tmp_path / "ray"
    cwd.mkdir()
    cmd, env = command([*SWEEP, "launcher=ray", f"ray.address={ray_cluster}", "run_dir=run"], cwd)
    log = (cwd / "out.log").open("w+")  # a file, not a pipe nobody reads while polling (it could fill)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    run_dir, killed = cwd / "run", None
    try:
        deadline = time.time() + 300
        while killed is None and proc.poll() is None and time.time() < deadline:
            started = [s for s in (1, 2) if (job(run_dir, s) / "checkpoint" / "state.pt").exists()]
            busy = subprocess.run(["pgrep", "-f", "ray::ray_job"], capture_output=True, text=True).stdout.split()
            if started and busy and not any((job(run_dir, s) / "result.json").exists() for s in (1, 2)):
                os.kill(int(busy[0]), signal.SIGKILL)  # a job's worker dies after its first checkpoint
                killed = int(busy[0])
            time.sleep(0.2)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.seek(0)
        out = log.read()
        log.close()
    assert killed is not None, "no job was caught running"
    assert proc.returncode == 0, out[-3000:]
    assert "died" in out  # Ray reports the lost worker, then runs the job again
    # Bit for bit: a Ray job runs the local job's computations, with its batch shapes and its
    # threads_per_process (the recipe sets both), on this CPU: the same kernels.
    for seed in (1, 2):  # each job in its own seed directory, resumed from its checkpoint: bit for bit
        same_job(job(run_dir, seed), job(local_sweep, seed))
    md = (run_dir / "results.md").read_text()
    assert md == (local_sweep / "results.md").read_text()  # the table: means over the two seeds


def test_smoke_with_remote_collection_and_evaluation_in_a_sweep(local_sweep, ray_cluster, tmp_path):
    """All three on: jobs, their envs (2 actors each) and their evaluations on the 2-CPU cluster.

    Two jobs each reserving 2 collector CPUs on a 2-CPU cluster must queue, not deadlock.
    Remote collection does not give the local run's batches bit for bit (see docs/scaling.md,
    "Same numbers?"); what must be equal is checked: the evaluations of the same policy.
    """
    proc = run(["preset=smoke", "algo=ours", "seeds=[1,2]", "launcher=ray", "collector.backend=ray",
                "eval.backend=ray", f"ray.address={ray_cluster}", "run_dir=run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for seed in (1, 2):
        result = json.loads((job(tmp_path / "run", seed) / "result.json").read_text())
        reference = json.loads((job(local_sweep, seed) / "result.json").read_text())
        assert result["env_steps"] >= 600 and result["updates"] > 0
        # The evaluation before RL sees the same (SFT) policy: remote evaluation gives the local numbers
        # (its shards run the local waves' shapes and thread count: distributed/evaluation.py).
        assert result["history"][0] == reference["history"][0]
    logs = "".join(p.read_text() for p in (tmp_path / "run").rglob("scalars/collect/bytes_received.csv"))
    assert logs.strip(), "the bytes received per iteration are logged"
