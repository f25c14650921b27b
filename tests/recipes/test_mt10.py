"""The MT10 recipe end to end on the smoke preset, resume after a kill, and bad input."""

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

from _gl import requires_gl

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "mt10.py"


def run(args, cwd, **kw):
    env = {**os.environ, "TORCHRL_CHUNK_CACHE": str(cwd / "cache"), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(RECIPE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw
    )


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("smoke")
    start = time.time()
    proc = run(["preset=smoke", "run_dir=run"], cwd)
    proc.elapsed = time.time() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "run", proc


def test_smoke_pipeline_writes_table_and_artifacts(smoke_run):
    run_dir, proc = smoke_run
    md = (run_dir / "results.md").read_text()
    assert "| Reach |" in md and "SFT" in md and "Ours" in md
    csv_lines = (run_dir / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("Task,Acc.") and csv_lines[-1].startswith("Average")
    ours = json.loads((run_dir / "jobs/ours/reach-v3/seed_1/result.json").read_text())
    assert ours["metrics"]["num_episodes"] == 8
    assert ours["env_steps"] >= 600 and ours["updates"] > 0
    assert ours["buffer"]["length_limit"] >= 1 and ours["buffer"]["trajectories"] >= 2
    assert len(ours["history"]) >= 2  # quick evals at 0 and later
    assert 0 < ours["wall_time_s"] < proc.elapsed  # once counted, although saved at every checkpoint
    sft = json.loads((run_dir / "jobs/sft/reach-v3/seed_1/result.json").read_text())
    assert sft["env_steps"] == 0  # SFT never interacts with the env
    assert (run_dir / "config.yaml").exists()
    assert (run_dir / "jobs/ours/reach-v3/seed_1/checkpoint/state.pt").exists()
    assert (run_dir / "jobs/ours/reach-v3/seed_1/checkpoint/buffer/length_filtered_buffer.json").exists()
    leftovers = {p.name for p in (run_dir / "jobs/ours/reach-v3/seed_1").glob("checkpoint.*")}
    assert leftovers <= {"checkpoint.prev"}  # the one before is kept; no half-written save
    assert not (run_dir / "jobs/ours/reach-v3/seed_1/eval.mp4").exists()  # no video without pixels
    assert (run_dir / "jobs/ours/reach-v3/seed_1/learning_curve.png").stat().st_size > 1000
    assert "run directory" in proc.stdout


def test_demo_levers_leave_sft_alone_and_act_in_post_training(smoke_run, tmp_path):
    """Issue 11's levers (adaptive limit, length-weighted demo batches, BC decay): the SFT jobs
    and Ours' SFT phase are those of the default run; post-training logs and uses them."""
    levers = ["buffer.length_limit=adaptive", "buffer.adaptive.min_successes=1", "buffer.length_weighting=2",
              "bc.decay_floor=0.2"]
    proc = run(["preset=smoke", "run_dir=run", *levers], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = "jobs/{}/reach-v3/seed_1/result.json"
    new, old = (json.loads((d / job.format("ours")).read_text()) for d in (tmp_path / "run", smoke_run[0]))
    assert new["history"][0] == old["history"][0]  # after SFT, before post-training: the same policy
    assert json.loads((tmp_path / "run" / job.format("sft")).read_text())["metrics"] == \
        json.loads((smoke_run[0] / job.format("sft")).read_text())["metrics"]
    assert new["buffer"]["adaptive"] and new["buffer"]["length_weighting"] == 2.0
    assert new["buffer"]["length_limit"] <= new["buffer"]["base_length_limit"] == old["buffer"]["length_limit"]
    assert new["buffer"]["bc_coeff"] < 1.0
    # a job killed during its final evaluation: resumed, it writes the same result (the BC weight too)
    (tmp_path / "run" / job.format("ours")).unlink()
    proc = run(["resume=run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "run" / job.format("ours")).read_text())["buffer"] == new["buffer"]
    logs = tmp_path / "run/jobs/ours/reach-v3/seed_1/logs/ours_reach-v3/scalars"
    coeffs = [float(line.split(",")[1]) for line in (logs / "bc_coeff.csv").read_text().splitlines()]
    assert coeffs[0] <= 1.0 and min(coeffs) < 1.0  # decayed once the agent's successes entered the buffer
    saved = json.loads((tmp_path / "run/jobs/ours/reach-v3/seed_1/checkpoint/buffer/length_filtered_buffer.json")
                       .read_text())
    assert saved["adaptive"]["min_successes"] == 1 and saved["length_weighting"] == 2.0


def test_resume_of_a_config_saved_before_a_new_setting(smoke_run, tmp_path):
    import shutil

    run_dir = tmp_path / "old"
    shutil.copytree(smoke_run[0], run_dir)
    cfg = (run_dir / "config.yaml").read_text()
    assert "video_episodes:" in cfg
    (run_dir / "config.yaml").write_text("\n".join(l for l in cfg.splitlines() if "video_episodes:" not in l))
    proc = run([f"resume={run_dir}"], tmp_path)  # every job finished: only the tables are rewritten
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "from the defaults: eval.video_episodes" in proc.stdout
    assert (run_dir / "results.md").read_text() == (smoke_run[0] / "results.md").read_text()


def test_resume_after_kill_matches_uninterrupted(tmp_path):
    args = ["preset=smoke", "algo=ours", "train.total_env_steps=1500"]
    full = run([*args, "run_dir=full"], tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]

    env = {**os.environ, "TORCHRL_CHUNK_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [sys.executable, str(RECIPE), *args, "run_dir=killed"], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    ckpt = tmp_path / "killed/jobs/ours/reach-v3/seed_1/checkpoint/state.pt"
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                state = torch.load(ckpt, weights_only=False)
            except Exception:  # being replaced right now
                state = None
            if state and state["phase"] == "rl" and state["iteration"] >= 1:
                proc.send_signal(signal.SIGKILL)
                killed_at = state["iteration"]
                break
        time.sleep(0.05)
    proc.wait()
    assert killed_at is not None, "the run finished or stalled before it could be killed mid-training"
    assert not (tmp_path / "killed/jobs/ours/reach-v3/seed_1/result.json").exists()

    # Bit for bit: the resumed run redoes the same computations with the same batch shapes and
    # threads_per_process, on the same CPU (so with the same kernels).
    resumed = run(["resume=killed"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((tmp_path / "full/jobs/ours/reach-v3/seed_1/result.json").read_text())
    b = json.loads((tmp_path / "killed/jobs/ours/reach-v3/seed_1/result.json").read_text())
    assert b["metrics"] == a["metrics"]
    assert b["history"] == a["history"]
    assert (b["env_steps"], b["updates"], b["buffer"]) == (a["env_steps"], a["updates"], a["buffer"])
    pa = torch.load(tmp_path / "full/jobs/ours/reach-v3/seed_1/checkpoint/state.pt", weights_only=False)["modules"]["actor"]
    pb = torch.load(tmp_path / "killed/jobs/ours/reach-v3/seed_1/checkpoint/state.pt", weights_only=False)["modules"]["actor"]
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=0, atol=0)


PIXEL_TINY = ["preset=smoke", "algo=ours", "env.image_size=32", "env.num_envs=2", "train.total_env_steps=100",
              "bc.pretrain_steps=2", "eval.episodes=2", "eval.num_envs=2", "train.quick_eval_episodes=2"]


@requires_gl
@pytest.mark.parametrize("model", ["pixel", "octo_small"])
def test_pixel_models_run_in_the_recipe(tmp_path, model):
    """Pixels render in 2 worker processes, collection and evaluation alike."""
    # Octo also runs its learner and its acting in bf16 (model.precision; the preset=gpu setting)
    extra = ["model.size=tiny", "model.instructions=random", "model.precision=bf16"] if model == "octo_small" else []
    proc = run([*PIXEL_TINY, f"model={model}", "env.num_workers=2", *extra, "run_dir=run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run/jobs/ours/reach-v3/seed_1/result.json").read_text())
    assert result["env_steps"] >= 100 and result["metrics"]["num_episodes"] == 2
    # eval.video_episodes (default 4) is capped by eval.episodes: both episodes are filmed
    av = pytest.importorskip("av")
    with av.open(str(tmp_path / "run/jobs/ours/reach-v3/seed_1/eval.mp4")) as container:
        frames = list(container.decode(video=0))
    assert frames[0].width == frames[0].height == 32
    assert len(frames) >= 2 * 2 + 4  # reset + >= 1 decision per episode, 4 black frames between
    if model != "pixel":
        return
    # the same run in one process: the same numbers and weights (worker count is not a training setting).
    # Exact because the workers only step and render the envs: the CNN policy and the learner run in
    # the main process on the same batch shapes (env.num_envs, eval.num_envs) whatever the count.
    proc = run([*PIXEL_TINY, f"model={model}", "env.num_workers=1", "run_dir=one"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((tmp_path / "one/jobs/ours/reach-v3/seed_1/result.json").read_text())
    assert (one["metrics"], one["history"], one["buffer"]) == (result["metrics"], result["history"], result["buffer"])
    weights = [torch.load(tmp_path / f"{d}/jobs/ours/reach-v3/seed_1/checkpoint/state.pt", weights_only=False)
               ["modules"]["actor"] for d in ("run", "one")]
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=0, atol=0)


def test_octo_without_instructions_is_refused(tmp_path):
    proc = run(["preset=smoke", "model=octo_small", "model.size=tiny", "run_dir=run"], tmp_path)
    assert proc.returncode != 0 and "t5_path" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [  # the recipe's own checks (tests/recipes/test_mt10_config.py has every setting)
        (["algo.names=[nope]"], "unknown algorithm(s) ['nope'] in algo.names"),
        (["tasks=[reach-v4]"], "unknown task(s) ['reach-v4']"),
        (["model.name=resnet"], "model.name must be one of mlp, pixel, octo_small"),
        (["resume=does/not/exist"], "resume=does/not/exist is not a run directory"),
        (["eval.video_episodes=-1"], "eval.video_episodes must be >= 0"),
        (["+model.horizon=3"], "model.horizon=3 but algorithm"),
        (["train.total_env_steps=-600"], "train.total_env_steps must be >= 1, got -600"),
        (["eval.episodes=0"], "eval.episodes must be >= 1, got 0"),
    ],
)
def test_bad_input_is_reported_before_anything_is_written(tmp_path, args, message):
    proc = run(["preset=smoke", "run_dir=run", *args], tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # no config.yaml for a run that cannot start


def test_a_buffer_the_machine_cannot_hold_stops_before_training(tmp_path):
    """The demo buffer's RAM at buffer.max_size rows is checked before SFT: twice this machine's
    available memory in 241-byte state rows."""
    available = next(int(l.split()[1]) * 1024 for l in open("/proc/meminfo") if l.startswith("MemAvailable"))
    rows = 2 * available // 241
    proc = run(["preset=smoke", "run_dir=run", f"buffer.max_size={rows}"], tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"the demo buffer (buffer.max_size={rows} rows of 241 B) does not fit" in proc.stderr
    assert "lower buffer.max_size" in proc.stderr
    assert not list((tmp_path / "run").rglob("checkpoint"))


@pytest.mark.parametrize("group", ["algo=nope", "model=resnet"])
def test_unknown_config_groups_are_hydras_error(tmp_path, group):
    """Hydra refuses these while composing, before the recipe runs: its own message, no traceback."""
    proc = run(["preset=smoke", "run_dir=run", group], tmp_path)
    name, value = group.split("=")
    assert proc.returncode != 0
    assert f"Could not find '{name}/{value}'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_run_dir_that_is_a_file_or_under_one(tmp_path):
    (tmp_path / "f").write_text("x")
    for run_dir, message in (("f", "run_dir=f is a file"), ("f/run", "which is a file")):
        proc = run(["preset=smoke", f"run_dir={run_dir}"], tmp_path)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "f").read_text() == "x"


def test_existing_run_dir_with_other_settings_is_refused(smoke_run, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(smoke_run[0], run_dir)
    before = (run_dir / "config.yaml").read_text()
    proc = run(["preset=smoke", f"run_dir={run_dir}", "train.total_env_steps=1200"], tmp_path)
    assert proc.returncode != 0
    assert "train.total_env_steps: 600 -> 1200" in proc.stderr and f"resume={run_dir}" in proc.stderr
    assert (run_dir / "config.yaml").read_text() == before
    assert (run_dir / "results.md").read_text() == (smoke_run[0] / "results.md").read_text()


def test_resume_applies_evaluation_overrides_and_refuses_training_ones(smoke_run, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(smoke_run[0], run_dir)
    refused = run([f"resume={run_dir}", "optim.lr=1.0", "eval.episodes=4"], tmp_path)
    assert refused.returncode != 0
    assert "would change them: optim.lr." in refused.stderr and "Traceback" not in refused.stderr
    proc = run([f"resume={run_dir}", "eval.episodes=4"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "with eval.episodes=4" in proc.stdout
    for algo in ("sft", "ours"):  # every finished job is evaluated again, from its final weights
        result = json.loads((run_dir / f"jobs/{algo}/reach-v3/seed_1/result.json").read_text())
        assert result["metrics"]["num_episodes"] == 4 and result["eval"]["episodes"] == 4
    ours = json.loads((smoke_run[0] / "jobs/ours/reach-v3/seed_1/result.json").read_text())
    again = json.loads((run_dir / "jobs/ours/reach-v3/seed_1/result.json").read_text())
    assert (again["env_steps"], again["updates"], again["history"]) == (ours["env_steps"], ours["updates"],
                                                                         ours["history"])  # no retraining
    assert "episodes: 4" in (run_dir / "config.yaml").read_text()  # the record says what was used


def test_corrupt_checkpoint_is_reported(tmp_path):
    job = tmp_path / "run/jobs/sft/reach-v3/seed_1/checkpoint"
    job.mkdir(parents=True)
    (job / "state.pt").write_bytes(b"not a checkpoint")
    proc = run(["preset=smoke", "algo=sft", "run_dir=run"], tmp_path)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "cannot be loaded" in out and f"Delete {job}" in out  # run_dir made absolute: any worker finds it
    assert "Traceback" not in proc.stderr and f"traceback in {job.parent / 'error.log'}" in proc.stderr
    assert (job / "state.pt").read_bytes() == b"not a checkpoint"  # never overwritten


def test_jobs_share_their_sft_with_the_same_results(smoke_run, tmp_path):
    """SFT-10 and Ours of one task and seed clone the same demos alike: the Ours job loads the
    SFT job's SFT (bc.share_sft, default) and ends exactly as when it runs its own."""
    run_dir, proc = smoke_run
    assert "ours/reach-v3 (seed 1): SFT loaded from the sft job (same settings)" in proc.stdout
    assert len(list((run_dir / "shared_sft/reach-v3/seed_1").glob("*.pt"))) == 1
    alone = run(["preset=smoke", "run_dir=run", "bc.share_sft=false"], tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "SFT loaded" not in alone.stdout and not (tmp_path / "run/shared_sft").exists()
    for algo in ("sft", "ours"):
        shared, own = (json.loads((d / f"jobs/{algo}/reach-v3/seed_1/result.json").read_text())
                       for d in (run_dir, tmp_path / "run"))
        shared.pop("wall_time_s"), own.pop("wall_time_s")
        assert shared == own, algo
        weights = [torch.load(d / f"jobs/{algo}/reach-v3/seed_1/checkpoint/state.pt", weights_only=False)["modules"]
                   for d in (run_dir, tmp_path / "run")]
        for name in ("actor", "critic"):
            assert all(torch.equal(a, b) for a, b in zip(weights[0][name].values(), weights[1][name].values()))


def test_the_shared_sft_key_follows_the_sft_settings():
    """Settings that change the SFT (its steps, the demos, the model, the seed, the chunk size)
    give another shared SFT; the post-training ones do not."""
    from _recipe_config import config  # puts recipes/ on the path

    import mt10_utils

    def path(*overrides, algo="ours", seed=1):
        cfg = config(*overrides)
        cfg.seed = seed
        spec = cfg.algorithms[algo]
        job = type("J", (), {"task": "reach-v3", "spec": spec, "chunk_size": int(spec.horizon),
                             "dir": Path(f"/r/jobs/{algo}/reach-v3/seed_{seed}")})()
        return mt10_utils.shared_sft_path(cfg, job)

    base = path()
    assert base.parent == Path("/r/shared_sft/reach-v3/seed_1")  # in the run directory
    assert path(algo="sft") == path(algo="ppo") == base  # Table I's columns share
    for same in ("ppo.epochs=3", "train.total_env_steps=900", "bc.decay_floor=0.1", "buffer.length_limit=adaptive",
                 "schedule.warmup_steps=10", "eval.episodes=4"):
        assert path(same) == base, same
    for other in ("bc.pretrain_steps=21", "demos.num=3", "model.hidden=[32,32]", "env.horizon=2",
                  "threads_per_process=2", "bc.pretrain_lr=1e-3"):
        assert path(other) != base, other
    assert path(algo="sft100") != base and path(seed=2) != base
