"""scripts/gpu_check.py and scripts/prepare_gpu_carry.sh without a GPU: the refusal, the plan,
the time budget, the report, the batch search, the carry's install, and the CUDA stages'
plumbing run on the CPU (docs/gpu.md)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gc = _load()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ----------------------------------------------------------------------------------------
# the command without CUDA, and its plan
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["bash", str(ROOT / "scripts/gpu_check.sh")], [sys.executable, str(SCRIPT)]])
def test_refuses_without_cuda_in_one_line(command, tmp_path):
    if _cuda():
        pytest.skip("this machine has CUDA")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gpu_check: cannot run: CUDA is missing") and "docs/gpu.md" in lines[0]
    assert proc.stdout == ""
    assert not (tmp_path / "out").exists()  # nothing written, nothing installed


def test_refusal_names_missing_packages_too(monkeypatch):
    monkeypatch.setattr(gc, "cuda_problem", lambda: "CUDA is missing: torch x is a CPU-only build")
    monkeypatch.setattr(gc, "find_missing", lambda: {"metaworld", "hydra"})
    line = gc.refuse_line()
    assert line.startswith("gpu_check: cannot run: CUDA is missing")
    assert "also missing: hydra-core, metaworld" in line and "prepare_gpu_carry.sh" in line


def test_dry_run_prints_the_plan_without_cuda(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name in ("preflight", "bench_octo", "cuda_rng", "max_batch", "bench_envs", "mt10_pixel", "mt10_octo"):
        assert f"  {name} " in proc.stdout
    assert "bench_octo.py --skip-cpu --precisions bf16,fp32" in proc.stdout
    assert "recipes/mt10.py preset=gpu" in proc.stdout and "model=octo_small" in proc.stdout
    assert not (tmp_path / "out").exists()
    only = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--only", "max_batch", "--budget", "max_batch=99"],
                          capture_output=True, text=True, timeout=60)
    assert only.returncode == 0 and "bench_octo" not in only.stdout and "   99 s" in only.stdout
    bad = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--only", "bench_gpu"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown stage(s) bench_gpu" in bad.stderr


def test_octo_targets_are_bench_octos():
    tree = ast.parse((ROOT / "benchmarks/bench_octo.py").read_text())
    targets = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                   and any(getattr(t, "id", None) == "TARGETS" for t in node.targets))
    assert targets == gc.OCTO_TARGETS


# ----------------------------------------------------------------------------------------
# the time budget
# ----------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _stage(clock, name, budget, takes, status="ok", min_s=10.0, calls=None, **kw):
    def run(ctx, timeout):
        if calls is not None:
            calls.append((name, timeout))
        if takes == "raise":
            raise RuntimeError("boom")
        clock.now += min(takes, timeout)
        return gc.StageResult(name, status if takes <= timeout else "timeout", summary=f"{name} ran")

    return gc.Stage(name, name, budget, run, min_s=min_s, **kw)


def test_time_budget_skips_what_does_not_fit_and_banks_unused_time():
    clock, calls, seen = FakeClock(), [], []

    class Ctx:
        missing, gl_error = set(), None

    stages = [
        _stage(clock, "fast", 100, 40, calls=calls),  # leaves 60 s to the next ones
        _stage(clock, "long", 100, 500, calls=calls),  # may use 160 s: stopped there
        _stage(clock, "next", 100, 10, calls=calls, min_s=60),  # 540 - 10 - 200 = 330 left: runs
        _stage(clock, "big", 400, 400, calls=calls, min_s=400),  # 320 left < 400: skipped
        _stage(clock, "last", 100, 30, calls=calls),
    ]
    results = gc.run_stages(stages, Ctx(), deadline=540, clock=clock, on_result=lambda r: seen.append(len(r)),
                            reserve=10)
    assert [(r.name, r.status) for r in results] == [
        ("fast", "ok"), ("long", "timeout"), ("next", "ok"), ("big", "skipped"), ("last", "ok")]
    assert dict(calls)["long"] == 160 and dict(calls)["next"] == 100 and dict(calls)["last"] == 190
    assert results[3].summary.startswith("skipped: out of time (320 s left, needs at least 400 s)")
    assert [r.seconds for r in results] == [40, 160, 10, 0, 30]
    assert seen == [1, 2, 3, 4, 5]  # the report is rewritten after every stage
    assert clock.now <= 540 - 10


def test_time_budget_never_passes_the_deadline():
    clock = FakeClock()
    stages = [_stage(clock, f"s{i}", 200, 200) for i in range(5)]
    results = gc.run_stages(stages, None, deadline=540, clock=clock, reserve=10)
    assert [r.status for r in results] == ["ok", "ok", "timeout", "skipped", "skipped"]
    assert clock.now == 530 and all("out of time" in r.summary for r in results[3:])


def test_a_failing_stage_does_not_stop_the_others():
    clock = FakeClock()

    class Ctx:
        missing, gl_error = {"metaworld"}, "eglInitialize failed"

    stages = [_stage(clock, "crash", 50, "raise"), _stage(clock, "sim", 50, 5, needs=("torch", "metaworld")),
              _stage(clock, "gl", 50, 5, needs_gl=True), _stage(clock, "fine", 50, 5, needs=("torch",))]
    results = gc.run_stages(stages, Ctx(), deadline=540, clock=clock)
    assert [r.status for r in results] == ["failed", "skipped", "skipped", "ok"]
    assert results[0].summary == "RuntimeError: boom" and "RuntimeError: boom" in results[0].log_tail
    assert results[1].summary == "skipped: missing metaworld"
    assert results[2].summary == "skipped: no EGL rendering (eglInitialize failed)"


def test_a_stage_command_is_killed_at_its_timeout_with_its_group(tmp_path):
    code = ("import subprocess, time; p = subprocess.Popen(['sleep', '60']); print('child', p.pid, flush=True); "
            "time.sleep(60)")
    start = time.monotonic()
    ran = gc.run_logged([sys.executable, "-c", code], 2, tmp_path / "stage.log")
    assert ran.timed_out and ran.rc is None and time.monotonic() - start < 20
    pid = int(next(line for line in ran.output.splitlines() if line.startswith("child")).split()[1])
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert "stopped after 2 s" in (tmp_path / "stage.log").read_text()
    failed = gc.run_logged([sys.executable, "-c", "print('about to fail'); raise SystemExit(3)"], 30,
                           tmp_path / "fail.log")
    result = gc.result_of("x", failed, {}, "", ["cmd"])
    assert result.status == "failed" and failed.rc == 3 and "about to fail" in result.log_tail


# ----------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------
def _fake_results():
    octo = {"gpu": "NVIDIA H200", "window": 2, "image_size": 128, "iters": 8, "targets": gc.OCTO_TARGETS,
            "cuda": {"config": "small", "batch": 256, "results": {
                "bf16": {"act": 7500.0, "fwd_bwd": 2500.0, "update": 2345.0, "update2": 1300.0, "ratio": 1.07,
                         "ratio2": 1.92, "peak_gib": 31.5},
                "fp32": {"act": 3000.0, "fwd_bwd": 900.0, "update": 800.0, "update2": 450.0, "ratio": 1.12,
                         "ratio2": 2.0, "peak_gib": 55.0}}}}
    envs = {"task": "push-v3", "chunk_size": 4, "cpus": 16, "mujoco_gl": "egl", "rows": [
        {"obs": "128px", "setup": "bare (1 raw env + renderer)", "steps_per_s": 600.0, "x_bare": 1.0},
        {"obs": "128px", "setup": "chunked, 32 envs in 1 process", "steps_per_s": 580.0, "x_bare": 0.97},
        {"obs": "128px", "setup": "pool, 16 workers x 2 envs", "steps_per_s": 6400.0, "x_bare": 10.7}],
        "pool": {"workers": 16, "frames_per_s": 6400.0, "x_bare": 10.7, "scaling": 0.67, "target_x_bare": 9.6,
                 "met": True}}
    checks = {"restored CUDA RNG state == saved one": True, "final weights equal (bit for bit)": True}
    batch = {"cap_gib": 24.0, "total_gib": 139.8, "fraction": 0.172, "precision": "bf16", "image_size": 128,
             "update": "PPO", "windows": {"1": {"max_batch": 392, "first_failing": 400, "complete": True,
                                                "trials": [{"batch": 256, "fits": True}, {"batch": 512, "fits": False}],
                                                "at_max": {"peak_allocated_gib": 22.9, "peak_reserved_gib": 23.6,
                                                           "samples_per_s": 2100.0}},
                                          "2": {"skipped": "out of time", "trials": []}}}
    return [
        gc.StageResult("preflight", "ok", 8, "NVIDIA H200 (139.8 GiB)"),
        gc.StageResult("bench_octo", "ok", 70, gc.summarize_octo(octo), octo, command="python bench_octo.py"),
        gc.StageResult("cuda_rng", "ok", 20, "equal", {"steps": 20, "checkpoint_every": 5, "killed_after_step": 12,
                                                       "checks": checks}),
        gc.StageResult("max_batch", "ok", 60, gc.summarize_max_batch(batch), batch),
        gc.StageResult("bench_envs", "ok", 45, gc.summarize_envs(envs), envs),
        gc.StageResult("mt10_pixel", "failed", 150, "exit 1: error: something", {"jobs": [], "started": ["reach-v3"]},
                       log_tail="Traceback (most recent call last):\nValueError: something", command="python mt10.py"),
        gc.StageResult("mt10_octo", "skipped", 0, "skipped: out of time (30 s left, needs at least 45 s)"),
    ]


def test_report_from_fake_results_marks_targets_met_and_missed(tmp_path):
    results = _fake_results()
    meta = {"limit_s": 540, "setup_s": 12, "wall_s": 512.4, "finished": True, "date": "2027-01-01 00:00 UTC",
            "info": {"gpu": "NVIDIA H200", "gpu_count": 1, "gpu_memory_gib": 139.8, "python": "3.12.3",
                     "torch": "2.11.0+cu128", "versions": {"torchrl": "0.14.1 (carried)"}}}
    md = gc.format_report(results, meta)
    assert md.startswith("# GPU check, 2027-01-01 00:00 UTC")
    assert "Wall time 8 min 32 s of the 9 min limit" in md
    assert "Stopped itself before the limit: mt10_octo skipped (out of time)." in md
    assert "| bf16 PPO update samples/s (1 backbone pass) (Octo-small, batch 256) | >= 2,000 | 2,345 | met |" in md
    assert "| bf16 act samples/s (Octo-small, batch 256) | >= 8,000 | 7,500 | MISSED |" in md
    assert "| bf16 peak memory of an update, GiB (Octo-small, batch 256) | <= 40.0 | 31.5 | met |" in md
    assert "16 rendering workers, x one bare process | >= 9.6 | 10.70 (6,400/s) | met |" in md
    assert "| kill + resume on CUDA equals the uninterrupted run | bit for bit | equal | met |" in md
    assert "| bf16 | 7,500 | 2,500 | 2,345 | 1,300 | 1.07 / 1.92 | 31.50 |" in md
    assert "| 1 | 392 | 400 | 22.9 | 23.6 | 2,100 | 256, 512 OOM |" in md and "| 2 | out of time |" in md
    assert "| mt10_pixel | failed | 150 s | exit 1: error: something |" in md
    assert "```\nTraceback (most recent call last):\nValueError: something\n```" in md
    assert "torchrl 0.14.1 (carried)" in md
    path = gc.write_report(tmp_path, results, meta)
    assert path.read_text() == md
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["status"] for s in saved["stages"]] == [r.status for r in results]


def test_report_of_a_missed_resume_and_no_targets():
    bad = gc.StageResult("cuda_rng", "failed", 20, "MISMATCH", {"steps": 20, "checkpoint_every": 5,
                                                               "killed_after_step": 12,
                                                               "checks": {"final weights equal (bit for bit)": False}})
    md = gc.format_report([bad], {"wall_s": 30})
    assert "| kill + resume on CUDA equals the uninterrupted run | bit for bit | differs | MISSED |" in md
    assert "| final weights equal (bit for bit) | NO |" in md
    assert "No target was measured." in gc.format_report([], {"wall_s": 1})


def test_read_recipe_run_collects_jobs_and_last_iteration(tmp_path):
    job = tmp_path / "jobs/ours/reach-v3/seed_1"
    (job / "logs/ours_reach-v3/scalars/time").mkdir(parents=True)
    (job / "result.json").write_text(json.dumps({"task": "reach-v3", "algo": "ours", "wall_time_s": 12.5,
                                                 "env_steps": 5120, "updates": 10, "metrics": {"success_rate": 0.5}}))
    (job / "logs/ours_reach-v3/scalars/env_steps_per_s.csv").write_text("2560,900.0\n5120,1500.0\n")
    (job / "logs/ours_reach-v3/scalars/time/update.csv").write_text("2560,2.0\n5120,1.5\n")
    (tmp_path / "jobs/ours/push-v3/seed_1").mkdir(parents=True)  # started, not finished
    (tmp_path / "results.md").write_text("| Task | Acc. |\n")
    data = gc.read_recipe_run(tmp_path)
    (j,) = data["jobs"]
    assert (j["task"], j["env_steps_per_s"], j["time_update"], j["iterations"]) == ("reach-v3", 1500.0, 1.5, 2)
    assert data["started"] == ["push-v3", "reach-v3"] and data["results_md"] == "| Task | Acc. |\n"
    assert gc.summarize_recipe(data) == "1 job(s) finished of 2 started, last-iteration env steps/s median 1,500"


def test_recipe_stage_settings_pass_the_recipes_checks():
    """The stages' overrides are valid recipe settings (device=cpu only because no GPU is here)."""
    from hydra import compose, initialize_config_dir

    sys.path.insert(0, str(ROOT / "recipes"))
    import mt10_config

    for name in ("mt10_pixel", "mt10_octo"):
        overrides = gc.recipe_overrides(name)
        assert len({o.split("=")[0] for o in overrides}) == len(overrides)  # Hydra refuses a key given twice
        with initialize_config_dir(str(ROOT / "recipes" / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[*overrides, "device=cpu"])
        mt10_config.check_config(cfg)
        assert cfg.model.precision == "bf16" and cfg.env.num_envs == 64 and cfg.eval.video_episodes == 0
        assert cfg.model.name == ("octo_small" if name == "mt10_octo" else "pixel")
        assert len(mt10_config.resolve_tasks(cfg)) == (1 if name == "mt10_octo" else 10)


# ----------------------------------------------------------------------------------------
# the batch search, the carry
# ----------------------------------------------------------------------------------------
def test_search_max_batch_doubles_then_bisects():
    tried = []

    def fits(b):
        tried.append(b)
        return b <= 300

    assert gc.search_max_batch(fits) == {"max_batch": 296, "first_failing": 304, "complete": True}
    assert tried[:4] == [64, 128, 256, 512] and len(tried) <= 10
    assert gc.search_max_batch(lambda b: b <= 20) == {"max_batch": 16, "first_failing": 24, "complete": True}
    assert gc.search_max_batch(lambda b: True, cap=1024)["complete"] is False  # the cap, not the memory
    left = iter([5, 5, 0])
    assert gc.search_max_batch(lambda b: True, time_left=lambda: next(left)) == {
        "max_batch": 128, "first_failing": None, "complete": False}


def _wheel(path: Path, dist: str, version: str = "1.0") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    whl = path / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(f"{dist}/__init__.py", "VALUE = 42\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return whl


def test_install_carry_installs_wheels_and_skips_fill_ins_the_machine_has(tmp_path):
    _wheel(tmp_path / "whl", "gpucheck_dummy")
    _wheel(tmp_path / "whl", "tqdm", "0.0.1")  # a fill-in: this machine has tqdm, so it stays out
    cmd = [sys.executable, str(SCRIPT), "install", "--wheels", str(tmp_path / "whl"),
           "--target", str(tmp_path / "site")]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "install: 1 wheels" in first.stdout and "the box has tqdm" in first.stdout
    assert (tmp_path / "site/gpucheck_dummy/__init__.py").exists() and not (tmp_path / "site/tqdm").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "already in" in again.stdout
    assert gc.wheel_fits_python("av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl", (3, 12))
    assert not gc.wheel_fits_python("mujoco-3.3.0-cp312-cp312-manylinux2014_x86_64.whl", (3, 11))


def test_prepare_carry_dry_run_lists_what_it_would_fetch():
    def snapshot():
        return {p: sorted(x.name for x in (ROOT / p).iterdir()) for p in (".whl", ".debs") if (ROOT / p).is_dir()}

    before = snapshot()
    proc = subprocess.run(["bash", str(ROOT / "scripts/prepare_gpu_carry.sh"), "--dry-run"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for spec in ("torchrl==0.14.1", "tensordict==0.14.3", "metaworld==3.1.1", "mujoco==3.3.0", "hydra-core==1.3.8",
                 "omegaconf==2.3.1", "matplotlib==", "antlr4-python3-runtime==4.9.3", "libegl1", "libglvnd0"):
        assert spec in out, spec
    assert " torch==" not in out and " av==" not in out  # torch is the box's; video only with --with-video
    assert "--python-version 3.12" in out and "nothing changed" in out
    assert snapshot() == before
    video = subprocess.run(["bash", str(ROOT / "scripts/prepare_gpu_carry.sh"), "--dry-run", "--with-video",
                            "--no-debs"], capture_output=True, text=True, timeout=60)
    assert "av==18.1.0" in video.stdout and "libegl1" not in video.stdout


# ----------------------------------------------------------------------------------------
# the CUDA stages' plumbing, on the CPU
# ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_kill_and_resume_stage_on_cpu(tmp_path):
    ctx = gc.Context(out=tmp_path / "out", work=tmp_path / "work", device="cpu")
    result = gc.stage_cuda_rng(ctx, 240)
    assert result.status == "ok", (result.summary, result.log_tail)
    assert result.data["killed"] and result.data["resumed"]["resumed_from"] == 10
    assert all(result.data["checks"].values()) and len(result.data["checks"]) == 6
    assert result.data["control"]["weights_sha256"] != result.data["uninterrupted"]["weights_sha256"]


@pytest.mark.slow
def test_max_batch_child_on_cpu_with_simulated_out_of_memory(tmp_path):
    out = tmp_path / "mb.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "_max-batch-child", "--device", "cpu", "--tiny", "--windows",
                           "1", "--start", "2", "--step", "2", "--simulate-oom-above", "5", "--precision", "fp32",
                           "--seconds", "200", "--json", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    entry = data["windows"]["1"]
    assert (entry["max_batch"], entry["first_failing"], entry["complete"]) == (4, 6, True)
    assert [t["batch"] for t in entry["trials"]] == [2, 4, 8, 6]
    assert entry["at_max"]["samples_per_s"] > 0
    assert gc.summarize_max_batch(data) == "under 24 GiB, fp32, 1 backbone pass: window 1: batch 4"
