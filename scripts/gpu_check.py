#!/usr/bin/env python
"""One-command GPU check: what a short loan of a GPU box should measure, in one report.

Run it through ``bash scripts/gpu_check.sh`` (it installs what was carried to the box
first; docs/gpu.md says how to carry it). On a machine with CUDA, within ``--limit``
seconds (default 540 = 9 min, counted from ``--started-at``), it runs these stages, each
with a time budget, and writes ``$OUT/gpu_check.md`` (and ``gpu_check.json``, and each
stage's full log under ``gpu_check_logs/``) after every stage:

* ``preflight``   versions, GPU, CPUs, the carried packages, an EGL render test;
* ``bench_octo``  benchmarks/bench_octo.py: Octo-small, batch 256, bf16 then fp32, act /
  fwd+bwd / PPO update samples/s with one and two backbone passes, peak memory, against
  the targets (bf16: update >= 2,000 and act >= 8,000 samples/s, peak <= 40 GiB);
* ``cuda_rng``    a short CUDA training run with crash-safe checkpoints, killed (SIGKILL)
  between two checkpoints and resumed, against the same run uninterrupted: weights, CUDA
  RNG state and the next draws must be equal bit for bit, and the restored CUDA RNG
  state must equal the saved one; a resume that drops the CUDA RNG must differ (control);
* ``max_batch``   the largest Octo-small PPO update batch (bf16, one backbone pass) that
  fits under a 24 GiB cap (``torch.cuda.set_per_process_memory_fraction``), binary search
  on the batch size, for window 1 (the recipe's) and 2 (the benchmark's);
* ``bench_envs``  benchmarks/bench_envs.py at 128 px: 1 process and 16 rendering workers;
* ``mt10_pixel``  ``recipes/mt10.py preset=gpu`` (pixel CNN) over all ten MT10 tasks at a
  small budget;
* ``mt10_octo``   ``recipes/mt10.py preset=gpu model=octo_small`` on one task.

A stage that fails is recorded with the last lines of its log and the next one runs; a
stage that would not fit in the time left is recorded as "skipped: out of time"; a stage
that overruns its budget is stopped (its process group killed). Without CUDA it refuses
in one line naming what is missing, before doing anything. ``--dry-run`` prints the plan.

    bash scripts/gpu_check.sh                      # on the GPU box (docs/gpu.md)
    python scripts/gpu_check.py --dry-run          # the stages, budgets and commands
    python scripts/gpu_check.py --only bench_octo,max_batch --limit 300
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import importlib.util
import json
import math
import os
import platform
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
LIMIT_S = 540.0  # 9 minutes, the whole command (setup included)
REPORT_RESERVE_S = 10.0  # kept free at the end: the last report write, process exits
REPORT_NAME = "gpu_check.md"
#: bench_octo's targets (Octo-small, batch 256, bf16, one H200); a test checks they match.
OCTO_TARGETS = {"update": 2000.0, "act": 8000.0, "peak_gib": 40.0, "ratio": 1.2}
TAIL_LINES = 25

#: import name -> distribution, and what needs it (a stage whose modules are missing is skipped).
MODULES = {
    "torch": "torch", "tensordict": "tensordict", "torchrl": "torchrl", "numpy": "numpy",
    "mujoco": "mujoco", "metaworld": "metaworld", "gymnasium": "gymnasium", "OpenGL": "PyOpenGL",
    "imageio": "imageio", "scipy": "scipy", "cloudpickle": "cloudpickle", "packaging": "packaging",
    "hydra": "hydra-core", "omegaconf": "omegaconf", "tqdm": "tqdm", "matplotlib": "matplotlib",
    "yaml": "PyYAML",
}
LEARNER = ("torch", "tensordict", "torchrl", "numpy", "cloudpickle", "packaging")
SIMULATOR = ("mujoco", "metaworld", "gymnasium", "OpenGL", "imageio", "scipy")
RECIPE = ("hydra", "omegaconf", "tqdm", "matplotlib", "yaml")

#: The recipe stages' budget: preset=gpu as it is (64 envs over the rendering workers, bf16,
#: minibatches of 256), with few demos, few SFT steps, two short collections and a small
#: evaluation, so that the whole pipeline runs on every task in a few minutes.
RECIPE_BUDGET = [
    "algo=ours", "demos.num=4", "bc.pretrain_steps=50", "env.decisions_per_env=10",
    "train.total_env_steps=5120", "train.eval_every_env_steps=5120", "train.quick_eval_episodes=8",
    "train.checkpoint_every_iters=1", "ppo.epochs=2", "eval.episodes=16", "eval.video_episodes=0",
]


class Stopped(Exception):
    """SIGTERM/SIGINT (e.g. the shell's hard ``timeout``): stop the stage, write the report."""


# ----------------------------------------------------------------------------------------
# stages, their results and the time budget
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class StageResult:
    name: str
    status: str  # ok | failed | timeout | skipped
    seconds: float = 0.0
    summary: str = ""
    data: dict = dataclasses.field(default_factory=dict)
    log_tail: str = ""
    budget_s: float | None = None
    command: str = ""


@dataclasses.dataclass
class Stage:
    name: str
    title: str
    budget_s: float
    run: Callable[["Context", float], StageResult]
    min_s: float = 20.0  # less time than this left: skipped
    needs: tuple[str, ...] = ()  # import names
    needs_gl: bool = False
    command: Callable[["Context"], list[str]] | None = None  # for --dry-run and the report


def run_stages(stages: list[Stage], ctx, deadline: float, clock: Callable[[], float] = time.monotonic,
               on_result: Callable[[list[StageResult]], None] | None = None,
               reserve: float = REPORT_RESERVE_S) -> list[StageResult]:
    """Run ``stages`` in order before ``deadline`` (a ``clock()`` value), ``reserve`` s kept free.

    Each stage gets ``min(its budget + the time earlier stages left unused, time left)``;
    with less than its ``min_s`` left it is skipped ("skipped: out of time"), as is a stage
    whose modules (``ctx.missing``) or GL (``ctx.gl_error``) are missing. An exception in a
    stage is recorded as its failure; the next stage runs. ``on_result`` sees the results
    so far after every stage (to rewrite the report).
    """
    results: list[StageResult] = []
    banked = 0.0
    stopped = False
    for stage in stages:
        left = deadline - clock() - reserve
        missing = [m for m in stage.needs if m in getattr(ctx, "missing", ())]
        gl_error = getattr(ctx, "gl_error", None) if stage.needs_gl else None
        if stopped:
            result = StageResult(stage.name, "skipped", summary="skipped: stopped by a signal")
        elif left < stage.min_s:
            result = StageResult(stage.name, "skipped", summary=f"skipped: out of time ({max(left, 0):.0f} s left, "
                                                                 f"needs at least {stage.min_s:.0f} s)")
        elif missing:
            names = ", ".join(MODULES.get(m, m) for m in missing)
            result = StageResult(stage.name, "skipped", summary=f"skipped: missing {names}")
        elif gl_error:
            result = StageResult(stage.name, "skipped", summary=f"skipped: no EGL rendering ({gl_error})")
        else:
            timeout = min(stage.budget_s + banked, left)
            start = clock()
            try:
                result = stage.run(ctx, timeout)
            except Stopped:
                stopped = True
                result = StageResult(stage.name, "timeout", summary="stopped by a signal (hard time limit)")
            except Exception as err:  # noqa: BLE001 - a stage's failure must not stop the others
                result = StageResult(stage.name, "failed", summary=f"{type(err).__name__}: {err}",
                                     log_tail=tail(traceback.format_exc()))
            result.seconds = clock() - start
            banked = max(0.0, banked + stage.budget_s - result.seconds)
        result.budget_s = stage.budget_s
        if not result.command and stage.command is not None:
            try:
                result.command = shlex.join(stage.command(ctx))
            except Exception:  # noqa: BLE001 - only for the report
                pass
        results.append(result)
        if on_result is not None:
            on_result(results)
    return results


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


# ----------------------------------------------------------------------------------------
# processes: a stage's command in its own process group, killed at its timeout
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Ran:
    rc: int | None
    timed_out: bool
    seconds: float
    log: Path
    output: str = ""

    @property
    def tail(self) -> str:
        return tail(self.output)


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=5)
            if sig == signal.SIGTERM:  # the group's other processes (workers) get the KILL too
                continue
            return
        except subprocess.TimeoutExpired:
            continue


def run_logged(cmd: list[str], timeout: float, log: Path, env: dict | None = None, cwd: Path | None = None) -> Ran:
    """Run ``cmd`` (stdout and stderr into ``log``), killing its whole process group at ``timeout``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "w") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            timed_out = True
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            if timed_out or proc.poll() is None:
                _kill_group(proc)
            else:  # the stage is over: leftover workers of its group go too
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
    output = log.read_text(errors="replace")
    if timed_out:
        with open(log, "a") as f:
            f.write(f"\n[gpu_check] stopped after {timeout:.0f} s (the stage's time budget)\n")
    return Ran(None if timed_out else proc.returncode, timed_out, time.monotonic() - start, log, output)


def run_together(jobs: list[tuple[list[str], Path]], timeout: float, env: dict | None = None) -> list[Ran]:
    """Like :func:`run_logged` for several commands at once (one shared timeout)."""
    start, procs = time.monotonic(), []
    try:
        for cmd, log in jobs:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as f:
                f.write(f"$ {shlex.join(cmd)}\n")
                f.flush()
                procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                              start_new_session=True))
        timed_out = []
        for proc in procs:
            try:
                proc.wait(timeout=max(start + timeout - time.monotonic(), 0.1))
                timed_out.append(False)
            except subprocess.TimeoutExpired:
                timed_out.append(True)
    finally:
        for proc in procs:
            if proc.poll() is None:
                _kill_group(proc)
    seconds = time.monotonic() - start
    return [Ran(None if t else p.returncode, t, seconds, log, log.read_text(errors="replace"))
            for p, t, (_, log) in zip(procs, timed_out, jobs)]


def result_of(name: str, ran: Ran, data: dict, summary: str, command: list[str]) -> StageResult:
    """A command's outcome: ok (exit 0), timeout (partial data kept) or failed (log tail)."""
    if ran.timed_out:
        status, summary = "timeout", f"stopped at its budget ({ran.seconds:.0f} s); " + (summary or "no figures")
    elif ran.rc != 0:
        status = "failed"
        last = next((line for line in reversed(ran.output.strip().splitlines()) if line.strip()), "")
        summary = f"exit {ran.rc}: {last[:300]}" + (f"; {summary}" if summary else "")
    else:
        status = "ok"
    return StageResult(name, status, summary=summary, data=data,
                       log_tail=ran.tail if status != "ok" else "", command=shlex.join(command))


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------------------------------
# context: where things go, the environment of the stages' processes
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Context:
    out: Path
    work: Path
    python: str = sys.executable
    cap_gib: float = 24.0
    pixel_parallel: int = 2
    device: str = "cuda"  # "cpu" only in the tests of the stages' plumbing
    cpus: int = dataclasses.field(default_factory=lambda: len(os.sched_getaffinity(0)))
    missing: set = dataclasses.field(default_factory=set)
    gl_error: str | None = None
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.out / "gpu_check_logs"

    def env(self, **extra) -> dict:
        env = dict(os.environ)
        paths = [str(ROOT / ".site")] if (ROOT / ".site").is_dir() else []
        paths += [str(ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env.setdefault("MUJOCO_GL", "egl")
        env["PYTHONUNBUFFERED"] = "1"
        env["TORCHRL_CHUNK_CACHE"] = str(self.work / "cache")
        env.update(extra)
        return env

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


# ----------------------------------------------------------------------------------------
# the stages
# ----------------------------------------------------------------------------------------
def find_missing(modules=MODULES) -> set[str]:
    return {m for m in modules if importlib.util.find_spec(m) is None}


def cuda_problem() -> str | None:
    """Why this machine cannot run the check (``None``: CUDA is there)."""
    if importlib.util.find_spec("torch") is None:
        return "CUDA is missing: torch is not installed"
    import torch

    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"CUDA is missing: torch {torch.__version__} is a CPU-only build and no CUDA device is visible"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (f"CUDA is missing: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device "
            f"(driver not loaded or no GPU{'; CUDA_VISIBLE_DEVICES=' + visible if visible is not None else ''})")


IMPORT_SNIPPET = """
import torch, tensordict, torchrl, torchrl_chunk.objectives, torchrl_chunk.modules.octo, torchrl_chunk.experiment
print('IMPORT_OK', torch.__version__, tensordict.__version__, torchrl.__version__)
"""

GL_SNIPPET = """
import os, torchrl_chunk, mujoco
xml = '<mujoco><worldbody><light pos="0 0 2"/><geom type="sphere" size=".2"/></worldbody></mujoco>'
m = mujoco.MjModel.from_xml_string(xml)
d = mujoco.MjData(m); mujoco.mj_forward(m, d)
r = mujoco.Renderer(m, 64, 64); r.update_scene(d); img = r.render()
try:
    from OpenGL import GL
    s = {k: (GL.glGetString(getattr(GL, k)) or b'?').decode() for k in ('GL_VENDOR', 'GL_RENDERER', 'GL_VERSION')}
except Exception as err:
    s = {'GL_RENDERER': f'? ({type(err).__name__})'}
r.close()
fields = [f'{k}={v}' for k, v in s.items()] + [f'mean={img.mean():.1f}']
print('GL_OK=' + os.environ.get('MUJOCO_GL', '') + '|' + '|'.join(fields))
"""


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for mod, dist in MODULES.items():
        try:
            out[dist] = md.version(dist)
            origin = importlib.util.find_spec(mod)
            if origin is not None and origin.origin and str(ROOT / ".site") in origin.origin:
                out[dist] += " (carried)"
        except md.PackageNotFoundError:
            out[dist] = "missing"
        except Exception:  # noqa: BLE001 - a broken dist-info must not stop the check
            out[dist] = "?"
    return out


def stage_preflight(ctx: Context, timeout: float) -> StageResult:
    import torch

    info = ctx.info
    info["python"] = platform.python_version()
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    props = torch.cuda.get_device_properties(0)
    info["gpu"] = props.name
    info["gpu_count"] = torch.cuda.device_count()
    info["gpu_memory_gib"] = round(props.total_memory / GIB, 1)
    info["capability"] = f"{props.major}.{props.minor}"
    info["cpus"] = ctx.cpus
    try:
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        info["ram_gib"] = round(int(mem.split()[1]) * 1024 / GIB, 1)
    except (OSError, StopIteration, ValueError):
        pass
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15)
        info["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        info["driver"] = None
    try:
        git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        info["commit"] = git.stdout.strip() if git.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        info["commit"] = None
    info["versions"] = _versions()
    info["mujoco_gl"] = ctx.env().get("MUJOCO_GL")
    ctx.missing = find_missing()
    problems = [f"missing {', '.join(MODULES[m] for m in sorted(ctx.missing))}"] if ctx.missing else []
    # the library's imports on this torch (warnings kept: e.g. torchrl's C++ extension), and an EGL frame
    jobs = [([ctx.python, "-W", "always", "-c", IMPORT_SNIPPET], ctx.log("preflight_imports"))]
    if {"mujoco", "OpenGL"} & ctx.missing:
        ctx.gl_error = "mujoco/PyOpenGL missing"
    else:
        jobs.append(([ctx.python, "-c", GL_SNIPPET], ctx.log("preflight_gl")))
    ran = run_together(jobs, min(timeout, 60), ctx.env())
    info["import_warnings"] = [x for x in ran[0].output.splitlines() if "Warning" in x][:10]
    if ran[0].rc != 0 or not any(x.startswith("IMPORT_OK") for x in ran[0].output.splitlines()):
        last = next((x for x in reversed(ran[0].output.strip().splitlines()) if x.strip()), "no output")
        problems.append(f"importing torchrl_chunk failed: {'timed out' if ran[0].timed_out else last[:300]}")
    if len(ran) > 1:
        line = next((x for x in ran[1].output.splitlines() if x.startswith("GL_OK=")), None)
        if ran[1].rc == 0 and line:
            info["gl"] = dict(kv.split("=", 1) for kv in line.split("|"))
        else:
            last = next((x for x in reversed(ran[1].output.strip().splitlines()) if x.strip()), "no output")
            ctx.gl_error = "timed out" if ran[1].timed_out else last[:300]
            problems.append(f"EGL render test failed: {ctx.gl_error}")
    gl = info.get("gl", {})
    summary = (f"{info['gpu']} ({info['gpu_memory_gib']} GiB), torch {info['torch']} (CUDA {info['torch_cuda']}), "
               f"{ctx.cpus} CPUs, GL: {gl.get('GL_RENDERER', 'unavailable')}")
    if problems:
        summary += "; " + "; ".join(problems)
    return StageResult("preflight", "failed" if problems else "ok", summary=summary, data=dict(info))


def _octo_cmd(ctx: Context) -> list[str]:
    return [ctx.python, str(ROOT / "benchmarks/bench_octo.py"), "--skip-cpu", "--precisions", "bf16,fp32",
            "--iters", "8", "--warmup", "2", "--json", str(ctx.work / "bench_octo.json")]


def stage_bench_octo(ctx: Context, timeout: float) -> StageResult:
    cmd = _octo_cmd(ctx)
    ran = run_logged(cmd, timeout, ctx.log("bench_octo"), env=ctx.env())
    data = read_json(ctx.work / "bench_octo.json")
    result = result_of("bench_octo", ran, data, summarize_octo(data), cmd)
    if result.status == "ok" and not data.get("cuda", {}).get("results"):
        result.status, result.summary, result.log_tail = "failed", "no CUDA figures in its output", ran.tail
    return result


def summarize_octo(data: dict) -> str:
    res = data.get("cuda", {}).get("results", {})
    parts = []
    for p in ("bf16", "fp32"):
        if p in res:
            r = res[p]
            parts.append(f"{p}: update {r['update']:,.0f}/s (2 passes {r['update2']:,.0f}/s), act {r['act']:,.0f}/s, "
                         f"peak {r['peak_gib']:.1f} GiB")
    return "; ".join(parts)


def _envs_cmd(ctx: Context) -> list[str]:
    workers = min(16, ctx.cpus)
    return [ctx.python, str(ROOT / "benchmarks/bench_envs.py"), "--num-envs", str(2 * workers), "--workers",
            str(workers), "--image-size", "128", "--seconds", "2", "--repeats", "1", "--no-state", "--json",
            str(ctx.work / "bench_envs.json")]


def stage_bench_envs(ctx: Context, timeout: float) -> StageResult:
    cmd = _envs_cmd(ctx)
    ran = run_logged(cmd, timeout, ctx.log("bench_envs"), env=ctx.env(), cwd=ctx.work)
    data = read_json(ctx.work / "bench_envs.json")
    return result_of("bench_envs", ran, data, summarize_envs(data), cmd)


def summarize_envs(data: dict) -> str:
    rows = {(r["obs"], r["setup"].split(",")[0].split(" (")[0]): r for r in data.get("rows", [])}
    px = [r for (obs, _), r in rows.items() if obs.endswith("px")]
    if not px:
        return ""
    bare = next((r for r in px if r["setup"].startswith("bare")), None)
    one = next((r for r in px if r["setup"].startswith("chunked")), None)
    pool = data.get("pool", {})
    bits = []
    if bare:
        bits.append(f"bare {bare['steps_per_s']:,.0f} env steps/s")
    if one:
        bits.append(f"1 process {one['steps_per_s']:,.0f}")
    if pool:
        bits.append(f"{pool['workers']} workers {pool['frames_per_s']:,.0f} ({pool['x_bare']:.1f}x bare, "
                    f"target >= {pool['target_x_bare']:.1f}x: {'met' if pool['met'] else 'MISSED'})")
    return ", ".join(bits)


# -- CUDA RNG across a kill and a resume ---------------------------------------------------
RNG_STEPS, RNG_EVERY, RNG_KILL_AFTER = 20, 5, 12  # checkpoints at 5, 10, ...; killed after step 12


def _rng_cmd(ctx: Context, job: Path, *extra: str) -> list[str]:
    return [ctx.python, str(Path(__file__).resolve()), "_rng-child", "--dir", str(job), "--steps", str(RNG_STEPS),
            "--every", str(RNG_EVERY), "--device", ctx.device, *extra]


def _last_json(output: str) -> dict:
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return {}


def stage_cuda_rng(ctx: Context, timeout: float) -> StageResult:
    """Uninterrupted vs killed (SIGKILL after step 12, last checkpoint at 10) + resumed."""
    deadline = time.monotonic() + timeout
    base = ctx.work / "cuda_rng"
    shutil.rmtree(base, ignore_errors=True)
    env = ctx.env(CUBLAS_WORKSPACE_CONFIG=":4096:8")
    log = ctx.logs / "cuda_rng"
    log.mkdir(parents=True, exist_ok=True)

    def left() -> float:
        return max(deadline - time.monotonic(), 1.0)

    # the uninterrupted run and the run to be killed, side by side
    with open(log / "full.log", "w") as full_log:
        full = subprocess.Popen(_rng_cmd(ctx, base / "full"), stdout=full_log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    victim = subprocess.Popen(_rng_cmd(ctx, base / "killed", "--hang-after", str(RNG_KILL_AFTER)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              start_new_session=True)
    killed, lines = False, []
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(victim.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:  # the child says "ready" after step 12, then waits to be killed
                if not sel.select(timeout=0.5):
                    if victim.poll() is not None:
                        break
                    continue
                line = victim.stdout.readline()
                if not line:
                    break
                lines.append(line)
                if line.startswith("ready"):
                    os.killpg(victim.pid, signal.SIGKILL)
                    killed = True
                    break
        victim.wait(timeout=left())
        full.wait(timeout=left())
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in (full, victim):
            if proc.poll() is None:
                _kill_group(proc)
        if not killed:
            lines.append(victim.stdout.read())
        victim.stdout.close()
    (log / "killed.log").write_text("".join(lines))
    data = {"steps": RNG_STEPS, "checkpoint_every": RNG_EVERY, "killed_after_step": RNG_KILL_AFTER,
            "killed": killed, "device": ctx.device}
    a = _last_json((log / "full.log").read_text(errors="replace"))
    if not killed or not a:
        why = "the run to kill never reached its kill point" if not killed else "the uninterrupted run failed"
        return StageResult("cuda_rng", "failed", summary=why, data=data,
                           log_tail=tail((log / ("full.log" if killed else "killed.log")).read_text(errors="replace")))
    shutil.copytree(base / "killed", base / "control")  # the same checkpoint, resumed without its CUDA RNG
    (ran_b, ran_c) = run_together([(_rng_cmd(ctx, base / "killed"), log / "resumed.log"),
                                   (_rng_cmd(ctx, base / "control", "--drop-cuda-rng"), log / "control.log")],
                                  left(), env)
    b, c = _last_json(ran_b.output), _last_json(ran_c.output)
    data.update(uninterrupted=a, resumed=b, control=c)
    if not b:
        return StageResult("cuda_rng", "timeout" if ran_b.timed_out else "failed", summary="the resumed run failed",
                           data=data, log_tail=ran_b.tail)
    checks = {
        "resumed from the checkpoint before the kill":
            b.get("resumed_from") == (RNG_KILL_AFTER // RNG_EVERY) * RNG_EVERY,
        "restored RNG state == saved one": bool(b.get("restored_equals_saved")),
        "final weights equal (bit for bit)": b.get("weights_sha256") == a.get("weights_sha256"),
        "final RNG state equal": b.get("rng_sha256") == a.get("rng_sha256"),
        "next draws equal": b.get("next_draws") == a.get("next_draws"),
    }
    # the control must run and differ, or the comparison could not see a lost RNG state
    checks["control (RNG not restored) differs"] = bool(c) and c.get("weights_sha256") != a.get("weights_sha256")
    checks = {k.replace("RNG", f"{ctx.device.upper()} RNG"): v for k, v in checks.items()}
    data["checks"] = checks
    ok = all(checks.values())
    failed = [k for k, v in checks.items() if not v]
    summary = ("MISMATCH: " + "; ".join(failed) if not ok else
               f"kill + resume equals the uninterrupted run bit for bit; restored {ctx.device.upper()} RNG == saved")
    return StageResult("cuda_rng", "ok" if ok else "failed", summary=summary, data=data)


def rng_child(argv: list[str]) -> int:
    """A small CUDA training run with dropout, checkpointed with torchrl_chunk.experiment.

    Prints "ready" and waits to be killed after ``--hang-after`` steps; otherwise prints one
    JSON line: the step it resumed from, whether the restored RNG state equals the saved one,
    and hashes of the final weights and RNG state, and the next four draws.
    """
    p = argparse.ArgumentParser(prog="gpu_check.py _rng-child")
    p.add_argument("--dir", required=True)
    p.add_argument("--steps", type=int, default=RNG_STEPS)
    p.add_argument("--every", type=int, default=RNG_EVERY)
    p.add_argument("--hang-after", type=int, default=0)
    p.add_argument("--drop-cuda-rng", action="store_true", help="the control: resume without the RNG state")
    p.add_argument("--device", default="cuda", help="cpu: only to test this plumbing without a GPU")
    args = p.parse_args(argv)
    import torch

    from torchrl_chunk.experiment import load_checkpoint, save_checkpoint

    torch.use_deterministic_algorithms(True)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    rng_state = torch.cuda.get_rng_state if cuda else torch.get_rng_state
    torch.manual_seed(0)
    torch.cuda.manual_seed_all(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                torch.nn.Linear(256, 1)).to(dev)
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    modules = {"model": model, "optim": optim}
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    state = load_checkpoint(Path(args.dir), modules, None)
    out: dict = {"resumed_from": None}
    start = 0
    if state is not None:
        start = out["resumed_from"] = int(state["step"])
        saved = state["cuda_rng"][0] if cuda and "cuda_rng" in state else state.get("torch_rng") if not cuda else None
        out["restored_equals_saved"] = saved is not None and torch.equal(rng_state(), saved)
        if args.drop_cuda_rng:  # the control: a resume that does not restore the generator
            (torch.cuda.manual_seed_all if cuda else torch.manual_seed)(12345)
    for step in range(start, args.steps):
        x = torch.randn(512, 64, device=dev)
        y = torch.rand(512, 1, device=dev)
        loss = (model(x) - y).pow(2).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if (step + 1) % args.every == 0:
            save_checkpoint(Path(args.dir), {"step": step + 1}, modules, None)
        if args.hang_after and step + 1 == args.hang_after:
            if cuda:
                torch.cuda.synchronize()
            print("ready", flush=True)  # steps after the last checkpoint are done; the parent kills us now
            time.sleep(3600)
            return 1
    weights = b"".join(t.detach().cpu().contiguous().numpy().tobytes() for t in model.state_dict().values())
    out["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    out["rng_sha256"] = hashlib.sha256(rng_state().numpy().tobytes()).hexdigest()
    out["next_draws"] = torch.rand(4, device=dev).tolist()
    print(json.dumps(out), flush=True)
    return 0


# -- the largest Octo-small PPO batch under a memory cap --------------------------------------
def search_max_batch(fits: Callable[[int], bool], start: int = 64, cap: int = 8192, step: int = 8,
                     time_left: Callable[[], float] = lambda: math.inf) -> dict:
    """Largest ``b`` (a multiple of ``step``, ``<= cap``) with ``fits(b)``: doubling, then bisection.

    Returns ``{"max_batch", "first_failing", "complete"}``; ``complete`` is false when
    ``time_left()`` ran out (``max_batch`` is then a lower bound) or ``cap`` was reached.
    """
    lo, hi, b = 0, None, start
    while b <= cap:
        if time_left() <= 0:
            return {"max_batch": lo, "first_failing": hi, "complete": False}
        if fits(b):
            lo, b = b, b * 2
        else:
            hi = b
            break
    if hi is None:
        return {"max_batch": lo, "first_failing": None, "complete": False}
    while hi - lo > step:
        if time_left() <= 0:
            return {"max_batch": lo, "first_failing": hi, "complete": False}
        mid = max(lo + step, (lo + hi) // 2 // step * step)
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return {"max_batch": lo, "first_failing": hi, "complete": True}


def _max_batch_cmd(ctx: Context, seconds: float | None = None) -> list[str]:
    return [ctx.python, str(Path(__file__).resolve()), "_max-batch-child", "--cap-gib", f"{ctx.cap_gib:g}",
            "--windows", "1,2", "--seconds", "BUDGET-10" if seconds is None else f"{seconds:.0f}",
            "--json", str(ctx.work / "max_batch.json")]


def stage_max_batch(ctx: Context, timeout: float) -> StageResult:
    cmd = _max_batch_cmd(ctx, max(timeout - 10, 5))  # the child stops itself, keeping what it found
    ran = run_logged(cmd, timeout, ctx.log("max_batch"), env=ctx.env())
    data = read_json(ctx.work / "max_batch.json")
    return result_of("max_batch", ran, data, summarize_max_batch(data), cmd)


def summarize_max_batch(data: dict) -> str:
    bits = []
    for w, r in data.get("windows", {}).items():
        if "max_batch" in r:
            bound = "" if r.get("complete") else " (at least)"
            bits.append(f"window {w}: batch {r['max_batch']}{bound}")
        elif "skipped" in r:
            bits.append(f"window {w}: {r['skipped']}")
    cap = data.get("cap_gib")
    return (f"under {cap:g} GiB, {data.get('precision')}, 1 backbone pass: " if cap else "") + "; ".join(bits)


def max_batch_child(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gpu_check.py _max-batch-child")
    p.add_argument("--cap-gib", type=float, default=24.0)
    p.add_argument("--windows", default="1,2")
    p.add_argument("--seconds", type=float, default=60.0, help="stop searching after this long")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--json", required=True)
    p.add_argument("--start", type=int, default=64, help="first batch tried (then doubled)")
    p.add_argument("--step", type=int, default=8, help="the answer's granularity")
    # only to test this plumbing without a GPU: Octo tiny on the CPU, "out of memory" above a batch
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--simulate-oom-above", type=int, default=None)
    args = p.parse_args(argv)
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_octo import Setup

    from torchrl_chunk.modules.octo import OctoConfig

    stop_at = time.monotonic() + args.seconds
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    total = torch.cuda.get_device_properties(dev).total_memory if cuda else 0
    fraction = min(1.0, args.cap_gib * GIB / total) if cuda else 1.0
    if cuda:
        torch.cuda.set_per_process_memory_fraction(fraction, dev)
    make_config = OctoConfig.tiny if args.tiny else OctoConfig

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)
    out = {"cap_gib": args.cap_gib, "total_gib": total / GIB, "fraction": fraction, "precision": args.precision,
           "image_size": 128, "update": "ChunkClipPPOLoss + clip + AdamW, shared backbone (1 pass)", "windows": {}}

    def save():
        Path(args.json).write_text(json.dumps(out, indent=1))

    for window in [int(w) for w in args.windows.split(",")]:
        entry = out["windows"][str(window)] = {"trials": []}
        if time.monotonic() > stop_at - 5:
            entry["skipped"] = "out of time"
            save()
            continue
        holder = {"setup": None}

        def fits(batch: int) -> bool:
            record = {"batch": batch}
            try:
                if holder["setup"] is None:
                    holder["setup"] = Setup(make_config(window_size=window), 2, 128, dev)
                setup = holder["setup"]
                if cuda:
                    torch.cuda.reset_peak_memory_stats(dev)
                if args.simulate_oom_above is not None and batch > args.simulate_oom_above:
                    raise torch.cuda.OutOfMemoryError(f"simulated: batch {batch} > {args.simulate_oom_above}")
                setup.td = setup.make_batch(batch)
                update = setup.update(args.precision, True)
                update()  # allocates the optimizer state
                sync()
                t0 = time.perf_counter()
                update()
                sync()
                record.update(fits=True, samples_per_s=batch / (time.perf_counter() - t0))
                if cuda:
                    record.update(peak_allocated_gib=torch.cuda.max_memory_allocated(dev) / GIB,
                                  peak_reserved_gib=torch.cuda.max_memory_reserved(dev) / GIB)
            except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
                if not isinstance(err, torch.cuda.OutOfMemoryError) and not any(
                        m in str(err) for m in ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED")):
                    raise
                record["fits"] = False
                record["error"] = type(err).__name__
                del err
                holder["setup"] = None  # an update cut short may leave recorded activations behind
            finally:
                if holder["setup"] is not None:
                    holder["setup"].td = None
                    for optim in holder["setup"].optims.values():
                        optim.zero_grad(set_to_none=True)
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()
            entry["trials"].append(record)
            save()
            print(f"window {window} batch {batch}: {'fits' if record['fits'] else 'out of memory'}", flush=True)
            return record["fits"]

        entry.update(search_max_batch(fits, start=args.start, step=args.step,
                                      time_left=lambda: stop_at - time.monotonic()))
        best = [t for t in entry["trials"] if t.get("fits") and t["batch"] == entry["max_batch"]]
        if best:
            entry["at_max"] = best[0]
        holder["setup"] = None
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        save()
        print(f"window {window}: largest batch {entry['max_batch']} (complete: {entry['complete']})", flush=True)
    return 0


# -- the recipe on the GPU ----------------------------------------------------------------
def recipe_overrides(name: str, pixel_parallel: int = 2) -> list[str]:
    """``preset=gpu`` and the stage's budget, as Hydra overrides (each key once)."""
    extra = {"mt10_octo": ["model=octo_small", "model.instructions=random", "tasks=[reach-v3]",
                           "bc.pretrain_steps=20", "parallel_tasks=1"],
             "mt10_pixel": ["tasks=all", f"parallel_tasks={pixel_parallel}"]}[name]
    merged = dict(x.split("=", 1) for x in ["preset=gpu", *RECIPE_BUDGET, *extra])  # later ones win
    return [f"{k}={v}" for k, v in merged.items()]


def _recipe_cmd(ctx: Context, name: str) -> list[str]:
    return [ctx.python, str(ROOT / "recipes/mt10.py"), *recipe_overrides(name, ctx.pixel_parallel),
            f"run_dir={ctx.work / name}"]


def _recipe_stage(name: str):
    def run(ctx: Context, timeout: float) -> StageResult:
        cmd = _recipe_cmd(ctx, name)
        ran = run_logged(cmd, timeout, ctx.log(name), env=ctx.env(), cwd=ctx.work)
        data = read_recipe_run(ctx.work / name)
        data["wall_s"] = ran.seconds
        return result_of(name, ran, data, summarize_recipe(data), cmd)

    return run


def _scalars(job: Path) -> dict[str, list[float]]:
    """The job's per-iteration logs (TorchRL CSV logger: ``step,value`` lines)."""
    out = {}
    for csv in job.glob("logs/*/scalars/**/*.csv"):
        key = str(csv.relative_to(next(p for p in csv.parents if p.name == "scalars")).with_suffix(""))
        try:
            out[key] = [float(line.split(",")[1]) for line in csv.read_text().splitlines() if "," in line]
        except (OSError, ValueError, IndexError):
            continue
    return out


def read_recipe_run(run_dir: Path) -> dict:
    jobs = []
    for res in sorted(run_dir.glob("jobs/*/*/seed_*/result.json")):
        r = read_json(res)
        if not r:
            continue
        s = _scalars(res.parent)
        last = {k: v[-1] for k, v in s.items() if v}
        jobs.append({"task": r.get("task"), "algo": r.get("algo"), "wall_time_s": r.get("wall_time_s"),
                     "env_steps": r.get("env_steps"), "updates": r.get("updates"),
                     "success_rate": r.get("metrics", {}).get("success_rate"),
                     "env_steps_per_s": last.get("env_steps_per_s"),
                     "collect_steps_per_s": last.get("collect_steps_per_s"),
                     "time_collect": last.get("time/collect"), "time_update": last.get("time/update"),
                     "iterations": len(s.get("env_steps_per_s", []))})
    started = sorted({p.parent.name for p in run_dir.glob("jobs/*/*/seed_*")})
    table = run_dir / "results.md"
    return {"jobs": jobs, "started": started, "results_md": table.read_text() if table.exists() else None}


def summarize_recipe(data: dict) -> str:
    jobs = data.get("jobs", [])
    if not jobs:
        return f"no job finished ({len(data.get('started', []))} started)"
    rates = [j["env_steps_per_s"] for j in jobs if j.get("env_steps_per_s")]
    rate = f", last-iteration env steps/s median {sorted(rates)[len(rates) // 2]:,.0f}" if rates else ""
    return f"{len(jobs)} job(s) finished of {max(len(data.get('started', [])), len(jobs))} started{rate}"


# -- the plan --------------------------------------------------------------------------------
def make_stages(ctx: Context) -> list[Stage]:
    return [
        Stage("preflight", "Machine, packages, EGL", 30, stage_preflight, min_s=5),
        Stage("bench_octo", "Octo-small throughput (bench_octo)", 110, stage_bench_octo, min_s=40, needs=LEARNER,
              command=_octo_cmd),
        Stage("cuda_rng", "CUDA RNG across a kill and a resume", 40, stage_cuda_rng, min_s=25, needs=LEARNER,
              command=lambda c: _rng_cmd(c, c.work / "cuda_rng/full")),
        Stage("max_batch", f"Largest Octo-small PPO batch under {ctx.cap_gib:g} GiB", 70, stage_max_batch,
              min_s=30, needs=LEARNER, command=_max_batch_cmd),
        Stage("bench_envs", "Env throughput at 128 px (bench_envs)", 55, stage_bench_envs, min_s=30,
              needs=LEARNER + SIMULATOR, needs_gl=True, command=_envs_cmd),
        Stage("mt10_pixel", "preset=gpu (pixel CNN), ten MT10 tasks", 150, _recipe_stage("mt10_pixel"), min_s=60,
              needs=LEARNER + SIMULATOR + RECIPE, needs_gl=True, command=lambda c: _recipe_cmd(c, "mt10_pixel")),
        Stage("mt10_octo", "preset=gpu model=octo_small, one task", 65, _recipe_stage("mt10_octo"), min_s=45,
              needs=LEARNER + SIMULATOR + RECIPE, needs_gl=True, command=lambda c: _recipe_cmd(c, "mt10_octo")),
    ]


# ----------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------
def _fmt(x, spec=",.0f") -> str:
    return "-" if x is None else format(x, spec)


def octo_targets(data: dict) -> list[tuple[str, str, str, str]]:
    """``(target, wanted, measured, met|MISSED)`` rows from bench_octo's CUDA bf16 figures."""
    r = data.get("cuda", {}).get("results", {}).get("bf16")
    if not r:
        return []
    t = {**OCTO_TARGETS, **data.get("targets", {})}
    rows = []
    for key, label, sign, spec in (("update", "bf16 PPO update samples/s (1 backbone pass)", ">=", ",.0f"),
                                   ("act", "bf16 act samples/s", ">=", ",.0f"),
                                   ("peak_gib", "bf16 peak memory of an update, GiB", "<=", ".1f"),
                                   ("ratio", "bf16 update / fwd+bwd (1 pass)", "<=", ".2f")):
        met = r[key] >= t[key] if sign == ">=" else r[key] <= t[key]
        rows.append((label, f"{sign} {t[key]:{spec}}", format(r[key], spec), "met" if met else "MISSED"))
    return rows


def targets_table(results: dict[str, StageResult]) -> list[str]:
    rows = []
    if "bench_octo" in results:
        batch = results["bench_octo"].data.get("cuda", {}).get("batch")
        rows += [(f"{a} (Octo-small, batch {batch})", b, c, d)
                 for a, b, c, d in octo_targets(results["bench_octo"].data)]
    pool = results["bench_envs"].data.get("pool") if "bench_envs" in results else None
    if pool:
        rows.append((f"128 px env steps/s (a frame per chunk), {pool['workers']} rendering workers, x one bare process",
                     f">= {pool['target_x_bare']:.1f}", f"{pool['x_bare']:.2f} ({pool['frames_per_s']:,.0f}/s)",
                     "met" if pool["met"] else "MISSED"))
    rng = results["cuda_rng"].data.get("checks") if "cuda_rng" in results else None
    if rng:
        ok = all(rng.values())
        device = results["cuda_rng"].data.get("device", "cuda").upper()
        rows.append((f"kill + resume on {device} equals the uninterrupted run", "bit for bit",
                     "equal" if ok else "differs", "met" if ok else "MISSED"))
    if not rows:
        return ["No target was measured."]
    return ["| target | wanted | measured | |", "| --- | --- | --- | --- |",
            *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]]


def _section_octo(r: StageResult) -> list[str]:
    cuda = r.data.get("cuda", {})
    res = cuda.get("results", {})
    if not res:
        return []
    lines = [f"{r.data.get('gpu', '')}: Octo-small, batch {cuda.get('batch')}, window {r.data.get('window')}, "
             f"{r.data.get('image_size')} px images, medians of {r.data.get('iters')} iterations (samples/s).", "",
             "| precision | act | fwd+bwd | update (1 pass) | update (2 passes) | update / fwd+bwd (1 / 2 passes) | "
             "peak GiB |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for p, x in res.items():
        lines.append(f"| {p} | {x['act']:,.0f} | {x['fwd_bwd']:,.0f} | {x['update']:,.0f} | {x['update2']:,.0f} | "
                     f"{x['ratio']:.2f} / {x['ratio2']:.2f} | {x['peak_gib']:.2f} |")
    return lines


def _section_envs(r: StageResult) -> list[str]:
    rows = r.data.get("rows", [])
    if not rows:
        return []
    lines = [f"`{r.data.get('task')}`, h = {r.data.get('chunk_size')}, {r.data.get('cpus')} CPUs, "
             f"MUJOCO_GL={r.data.get('mujoco_gl')}; env steps/s (each rendered at 128 px in the pixel rows).", "",
             "| obs | setup | env steps/s | x bare |", "| --- | --- | --- | --- |"]
    lines += [f"| {x['obs']} | {x['setup']} | {x['steps_per_s']:,.0f} | {x['x_bare']:.2f} |" for x in rows]
    pool = r.data.get("pool")
    if pool:
        lines += ["", f"Pool scaling `pool / (W x bare)` = {pool['scaling']:.2f} with W = {pool['workers']}."]
    return lines


def _section_max_batch(r: StageResult) -> list[str]:
    d = r.data
    if not d.get("windows"):
        return []
    lines = [f"`set_per_process_memory_fraction({d['fraction']:.3f})` = {d['cap_gib']:g} GiB of "
             f"{d['total_gib']:.1f} GiB; {d['precision']}, {d['update']}, {d['image_size']} px; a trial runs two "
             "updates (the optimizer state included).", "",
             "| window | largest batch | first failing | peak allocated GiB | peak reserved GiB | samples/s there | "
             "trials |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for w, e in d["windows"].items():
        if "max_batch" not in e:
            lines.append(f"| {w} | {e.get('skipped', 'not finished')} | | | | | |")
            continue
        at = e.get("at_max", {})
        trials = ", ".join(f"{t['batch']}{'' if t.get('fits') else ' OOM'}" for t in e.get("trials", []))
        bound = "" if e.get("complete") else " (lower bound)"
        lines.append(f"| {w} | {e['max_batch']}{bound} | {_fmt(e.get('first_failing'), 'd')} | "
                     f"{_fmt(at.get('peak_allocated_gib'), '.1f')} | {_fmt(at.get('peak_reserved_gib'), '.1f')} | "
                     f"{_fmt(at.get('samples_per_s'))} | {trials} |")
    lines += ["", "The recipe's minibatch also runs the self-BC batch through the backbone "
              "(`ppo.minibatch_size` + `bc.batch_size` samples), and a real 24 GiB card loses ~0.5 GiB to the "
              "CUDA context: keep their sum below the largest batch here, with some headroom."]
    return lines


def _section_rng(r: StageResult) -> list[str]:
    checks = r.data.get("checks")
    if not checks:
        return []
    d = r.data
    dev = d.get("device", "cuda").upper()
    return [f"{d['steps']} Adam steps of an MLP with dropout on {dev} (`torch.randn`/`rand`/dropout draw from the "
            f"{dev} generator), `save_checkpoint` every {d['checkpoint_every']} steps, SIGKILL after step "
            f"{d['killed_after_step']}, resumed with `load_checkpoint`; compared with the same run uninterrupted.",
            "", "| check | |", "| --- | --- |", *[f"| {k} | {'yes' if v else 'NO'} |" for k, v in checks.items()]]


def _section_recipe(r: StageResult) -> list[str]:
    d = r.data
    lines = []
    if r.command:
        lines += ["```", r.command, "```"]
    if d.get("jobs"):
        lines += ["", "| task | wall s | env steps | updates | success (final eval) | env steps/s (last iter.) | "
                  "collect s / update s (last iter.) |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for j in d["jobs"]:
            lines.append(f"| {j['task']} | {_fmt(j['wall_time_s'])} | {_fmt(j['env_steps'])} | {_fmt(j['updates'])} | "
                         f"{_fmt(j['success_rate'], '.2f')} | {_fmt(j['env_steps_per_s'])} | "
                         f"{_fmt(j['time_collect'], '.1f')} / {_fmt(j['time_update'], '.1f')} |")
    if d.get("results_md"):
        lines += ["", "Table (these budgets are for timing, not for success rates):", "", d["results_md"].strip()]
    return lines


def _section_preflight(r: StageResult) -> list[str]:
    warnings = r.data.get("import_warnings")
    return ["Warnings when importing the library:", "", "```", *warnings, "```"] if warnings else []


SECTIONS = {"preflight": _section_preflight, "bench_octo": _section_octo, "bench_envs": _section_envs, "max_batch": _section_max_batch,
            "cuda_rng": _section_rng, "mt10_pixel": _section_recipe, "mt10_octo": _section_recipe}


def format_report(results: list[StageResult], meta: dict) -> str:
    """The Markdown report: header, wall time, summary, targets, one section per stage."""
    by_name = {r.name: r for r in results}
    info = meta.get("info", {})
    wall = meta.get("wall_s", 0.0)
    limit = meta.get("limit_s", LIMIT_S)
    lines = [f"# GPU check, {meta.get('date', time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))}", ""]
    skipped = [r.name for r in results if r.status == "skipped" and "out of time" in r.summary]
    state = "finished" if meta.get("finished") else "in progress (the report is rewritten after every stage)"
    stopped = f" Stopped itself before the limit: {', '.join(skipped)} skipped (out of time)." if skipped else ""
    lines.append(f"Wall time {wall // 60:.0f} min {wall % 60:02.0f} s of the {limit / 60:g} min limit "
                 f"(setup before the stages: {meta.get('setup_s', 0):.0f} s); {state}.{stopped}")
    if info.get("gpu"):
        gl = info.get("gl", {})
        lines += ["", f"Machine: {info.get('gpu')} x{info.get('gpu_count')} ({info.get('gpu_memory_gib')} GiB, "
                  f"compute {info.get('capability')}, driver {info.get('driver')}), {info.get('cpus')} CPUs, "
                  f"{info.get('ram_gib')} GiB RAM; Python {info.get('python')}, torch {info.get('torch')} "
                  f"(CUDA {info.get('torch_cuda')}, cuDNN {info.get('cudnn')}); MUJOCO_GL={info.get('mujoco_gl')}, "
                  f"GL renderer: {gl.get('GL_RENDERER', 'unavailable')}; commit {info.get('commit') or 'unknown'}."]
        versions = info.get("versions")
        if versions:
            lines += ["", "Packages: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."]
    if meta.get("command"):
        lines += ["", f"Command: `{meta['command']}`"]
    lines += ["", "## Summary", "", "| stage | status | time (budget) | result |", "| --- | --- | --- | --- |"]
    for r in results:
        budget = f" ({r.budget_s:.0f} s)" if r.budget_s is not None else ""
        summary = r.summary.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.0f} s{budget} | {summary} |")
    lines += ["", "## Targets", "", *targets_table(by_name)]
    for r in results:
        section = SECTIONS.get(r.name, lambda _: [])(r)
        if not section and r.status == "ok" and not r.command:
            continue
        lines += ["", f"## {meta.get('titles', {}).get(r.name, r.name)}", "", f"Status: **{r.status}** "
                  f"({r.seconds:.0f} s). {r.summary}"]
        if r.command and r.name not in ("mt10_pixel", "mt10_octo"):
            lines += ["", f"Command: `{r.command}`"]
        if section:
            lines += ["", *section]
        if r.log_tail:
            lines += ["", "Last lines of its log:", "", "```", r.log_tail, "```"]
    return "\n".join(lines) + "\n"


def write_report(out: Path, results: list[StageResult], meta: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_NAME
    tmp = out / (REPORT_NAME + ".tmp")
    tmp.write_text(format_report(results, meta))
    os.replace(tmp, path)
    (out / "gpu_check.json").write_text(json.dumps(
        {"meta": meta, "stages": [dataclasses.asdict(r) for r in results]}, indent=1, default=str))
    return path


# ----------------------------------------------------------------------------------------
# installing what was carried (docs/gpu.md): the wheels into .site
# ----------------------------------------------------------------------------------------
#: Carried only in case the box lacks them: installed when no distribution of that name is there.
FILL_INS = {"packaging", "cloudpickle", "tqdm", "imageio", "matplotlib", "contourpy", "cycler", "fonttools",
            "kiwisolver", "pyparsing", "pillow", "python-dateutil", "six", "av"}


def wheel_dist(path: Path) -> str:
    return path.name.split("-")[0].lower().replace("_", "-")


def wheel_fits_python(name: str, version: tuple[int, int] = sys.version_info[:2]) -> bool:
    """Whether a wheel's Python tag admits this CPython (``cp312``; ``cp311-abi3`` from 3.11 on; ``py3``)."""
    python, abi = name[:-4].split("-")[-3:-1]
    tags = [t for t in python.split(".") if t.startswith("cp")]
    if not tags:
        return True
    have = version[0] * 100 + version[1]
    nums = [int(t[2]) * 100 + int(t[3:]) for t in tags]
    return any(n <= have if abi == "abi3" else n == have for n in nums)


def install_carry(argv: list[str]) -> int:
    """``pip install --no-index --no-deps --target .site`` of the carried wheels (fill-ins only if missing)."""
    import importlib.metadata as md

    p = argparse.ArgumentParser(prog="gpu_check.py install")
    p.add_argument("--wheels", default=str(ROOT / ".whl"))
    p.add_argument("--target", default=str(ROOT / ".site"))
    args = p.parse_args(argv)
    wheels, target = sorted(Path(args.wheels).glob("*.whl")), Path(args.target)
    if not wheels:
        print(f"install: no wheels in {args.wheels}: nothing carried, using what this Python has")
        return 0
    chosen, kept = [], []
    for w in wheels:
        dist = wheel_dist(w)
        if dist in FILL_INS:
            try:
                kept.append(f"{dist} {md.version(dist)}")
                continue
            except md.PackageNotFoundError:
                pass
        chosen.append(w)
    foreign = sorted({w.name.split("-")[-3] for w in chosen if not wheel_fits_python(w.name)})
    if foreign:
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        print(f"install: the carried wheels are for {', '.join(foreign)} but this is Python {here}: "
              f"run scripts/prepare_gpu_carry.sh --python-version {here}", file=sys.stderr)
        return 2
    marker = target / ".carried"
    names = "\n".join(w.name for w in chosen)
    if marker.exists() and marker.read_text() == names:
        print(f"install: the {len(chosen)} carried wheels are already in {target}")
        return 0
    print(f"install: {len(chosen)} wheels into {target}" + (f"; the box has {', '.join(kept)}" if kept else ""),
          flush=True)
    target.mkdir(parents=True, exist_ok=True)
    has_pip = importlib.util.find_spec("pip") is not None
    if has_pip:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--upgrade",
               "--disable-pip-version-check", "--root-user-action=ignore", "--target", str(target),
               *map(str, chosen)]
        rc = subprocess.run(cmd).returncode
        if rc != 0:
            print(f"install: pip failed (exit {rc}): {shlex.join(cmd)}", file=sys.stderr)
            return rc
    else:  # no pip on the box: a wheel is a zip of the installed files
        import zipfile

        for w in chosen:
            with zipfile.ZipFile(w) as z:
                z.extractall(target)
            for data in target.glob("*.data"):
                for sub in ("purelib", "platlib"):
                    if (data / sub).is_dir():
                        shutil.copytree(data / sub, target, dirs_exist_ok=True)
                shutil.rmtree(data)
    marker.write_text(names)
    return 0


# ----------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------
def refuse_line() -> str | None:
    problem = cuda_problem()
    if problem is None:
        return None
    missing = sorted(MODULES[m] for m in find_missing() - {"torch"})
    also = f"; also missing: {', '.join(missing)} (carry them: scripts/prepare_gpu_carry.sh)" if missing else ""
    return f"gpu_check: cannot run: {problem}{also}. It needs a CUDA GPU (docs/gpu.md)."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for path in (ROOT, ROOT / ".site"):  # as gpu_check.sh sets PYTHONPATH: the carried packages first
        if path.is_dir() and str(path) not in sys.path:
            sys.path.insert(0, str(path))
    if argv and argv[0] in ("_rng-child", "_max-batch-child", "install", "require-cuda"):
        sub, rest = argv[0], argv[1:]
        if sub == "_rng-child":
            return rng_child(rest)
        if sub == "_max-batch-child":
            return max_batch_child(rest)
        if sub == "install":
            return install_carry(rest)
        line = refuse_line()
        if line:
            print(line, file=sys.stderr)
            return 2
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "gpu_check_out"),
                   help="report directory (default: $OUT, else gpu_check_out/)")
    p.add_argument("--work", default=None, help="scratch directory (default: a new temporary one)")
    p.add_argument("--limit", type=float, default=LIMIT_S, help="seconds for everything, from --started-at")
    p.add_argument("--started-at", type=float, default=None, help="epoch seconds the whole command started")
    p.add_argument("--only", default=None, help="comma-separated stages to run (preflight always runs)")
    p.add_argument("--skip", default="", help="comma-separated stages to leave out")
    p.add_argument("--budget", action="append", default=[], metavar="STAGE=SECONDS", help="change a stage's budget")
    p.add_argument("--cap-gib", type=float, default=24.0, help="memory cap of the max_batch stage")
    p.add_argument("--pixel-parallel", type=int, default=2, help="parallel_tasks of the ten-task pixel run")
    p.add_argument("--dry-run", action="store_true", help="print the stages, budgets and commands; run nothing")
    args = p.parse_args(argv)
    t_start = time.time() if args.started_at is None else args.started_at
    setup_s = max(0.0, time.time() - t_start)
    work = Path(args.work or Path(tempfile.gettempdir()) / "gpu_check_XXXX")  # made below, after the refusal
    ctx = Context(out=Path(args.out), work=work, cap_gib=args.cap_gib, pixel_parallel=args.pixel_parallel)
    stages = make_stages(ctx)
    names = [s.name for s in stages]
    wanted = set(names) if args.only is None else {"preflight", *args.only.split(",")}
    unknown = (wanted | set(filter(None, args.skip.split(",")))) - set(names)
    if unknown:
        p.error(f"unknown stage(s) {', '.join(sorted(unknown))}; stages: {', '.join(names)}")
    for item in args.budget:
        name, _, sec = item.partition("=")
        match = [s for s in stages if s.name == name]
        if not match or not sec:
            p.error(f"--budget {item}: use STAGE=SECONDS with a stage of {', '.join(names)}")
        match[0].budget_s = float(sec)
    stages = [s for s in stages if s.name in wanted and s.name not in args.skip.split(",")]
    if args.dry_run:
        total = sum(s.budget_s for s in stages)
        print(f"gpu_check plan: {len(stages)} stages, budgets {total:.0f} s in all, limit {args.limit:.0f} s "
              f"(report kept {REPORT_RESERVE_S:.0f} s), report {ctx.out / REPORT_NAME}")
        for s in stages:
            cmd = shlex.join(s.command(ctx)) if s.command else "(in this process)"
            print(f"  {s.name:11} {s.budget_s:5.0f} s  {s.title}: {cmd}")
        return 0
    line = refuse_line()
    if line:
        print(line, file=sys.stderr)
        return 2
    ctx.work = work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)

    def on_signal(signum, frame):
        raise Stopped()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    deadline = time.monotonic() + (args.limit - setup_s)
    meta = {"limit_s": args.limit, "setup_s": setup_s, "info": ctx.info, "finished": False,
            "command": "bash scripts/gpu_check.sh " + shlex.join(argv) if argv else "bash scripts/gpu_check.sh",
            "titles": {s.name: s.title for s in stages}, "work": str(work)}

    def on_result(results):
        meta["wall_s"] = time.time() - t_start
        path = write_report(ctx.out, results, meta)
        r = results[-1]
        print(f"[gpu_check {meta['wall_s']:5.0f} s] {r.name}: {r.status} ({r.seconds:.0f} s) {r.summary}", flush=True)
        return path

    print(f"gpu_check: {len(stages)} stages, {args.limit - setup_s:.0f} s left of {args.limit:.0f} s; "
          f"report: {ctx.out / REPORT_NAME}; scratch: {work}", flush=True)
    results = run_stages(stages, ctx, deadline, on_result=on_result)
    meta["finished"] = True
    meta["wall_s"] = time.time() - t_start
    path = write_report(ctx.out, results, meta)
    print(f"gpu_check: done in {meta['wall_s']:.0f} s: {path}")
    bad = [r.name for r in results if r.status in ("failed", "timeout")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
