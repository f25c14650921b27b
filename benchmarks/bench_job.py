"""One Table I unit end to end: an earlier commit's code vs this checkout, same settings, one run.

Not a test. Runs the recipe (``recipes/mt10.py``) twice on one task, SFT-10 then Ours (one
Table I unit), once with the code of ``--baseline`` (a temporary ``git worktree``) and once
with this checkout, one after the other on the same machine, and prints the wall time of each
job and of the whole command, their ratios, and whether the two give the same Table I
numbers. Each side collects its own expert demos (a fresh demo cache each), so both start
from nothing, as a user does.

* ``--model pixel`` (default): the small CNN on 64 px frames, 1,000 SFT steps, 30k env steps
  of post-training, a quick evaluation every 10k (the pixel command of docs/results.md);
* ``--model mlp``: the README's main command (``preset=cpu``, 150k env steps) on one task.

    python benchmarks/bench_job.py                        # pixels, against df6e017 (issue 20 filed)
    python benchmarks/bench_job.py --model mlp --task push-v3
    python benchmarks/bench_job.py --env-steps 10000 --sft-steps 300   # a quicker look
    python benchmarks/bench_job.py -- threads_per_process=2            # more settings, both sides

Equal settings give equal numbers up to float summation (the last digits of a metric may
differ where a change reorders sums); the script prints both sides' metrics. Run it on an
otherwise idle machine: the two sides run one after the other, so a load that comes or goes
in between skews the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("success_rate", "len_p10", "avg_shortest_10pct")


def run_side(tree: Path, run_dir: Path, overrides: list[str]) -> float:
    """The recipe in ``tree``'s code; its wall time in seconds."""
    env = {"PYTHONPATH": str(tree), "TORCHRL_CHUNK_CACHE": str(run_dir.parent / f"{run_dir.name}_demos")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "recipes/mt10.py", *overrides, f"run_dir={run_dir}"], cwd=tree,
                          env={**os.environ, **env}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"error: the run in {tree} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall


def job_results(run_dir: Path) -> dict[str, dict]:
    """``algo -> result.json`` of a one-task, one-seed run."""
    return {json.loads(p.read_text())["algo"]: json.loads(p.read_text())
            for p in sorted(run_dir.glob("jobs/*/*/*/result.json"))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", default="df6e017", help="the earlier commit (default: the code issue 20 measured)")
    p.add_argument("--model", choices=["pixel", "mlp"], default="pixel")
    p.add_argument("--task", default="reach-v3")
    p.add_argument("--env-steps", type=int, default=None, help="post-training env steps (pixel: 30000, mlp: the preset's)")
    p.add_argument("--sft-steps", type=int, default=None, help="pixel: 1000, mlp: the preset's")
    p.add_argument("--image-size", type=int, default=64, help="pixel only")
    p.add_argument("--eval-every", type=int, default=None, help="pixel: 10000, mlp: the preset's")
    p.add_argument("--keep", type=Path, default=None, help="keep both run directories here")
    p.add_argument("extra", nargs="*", help="more recipe settings for both sides, after --")
    args = p.parse_args(argv)
    overrides = [f"model={args.model}", f"tasks=[{args.task}]", "algo=default", "parallel_tasks=1"]
    if args.model == "pixel":
        args.env_steps, args.sft_steps, args.eval_every = (args.env_steps or 30000, args.sft_steps or 1000,
                                                           args.eval_every or 10000)
        overrides += [f"env.image_size={args.image_size}", "eval.video_episodes=0"]
    for key, value in (("train.total_env_steps", args.env_steps), ("bc.pretrain_steps", args.sft_steps),
                       ("train.eval_every_env_steps", args.eval_every)):
        if value is not None:
            overrides.append(f"{key}={value}")
    overrides += args.extra
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench_job_") as tmp:
        out = args.keep or Path(tmp)
        base_tree = Path(tmp) / "baseline_tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base_tree), args.baseline], cwd=ROOT,
                       check=True)
        try:
            print(f"settings (both sides): {' '.join(overrides)}", flush=True)
            walls = {"baseline": run_side(base_tree, out / "baseline", overrides)}
            print(f"baseline ({args.baseline}): {walls['baseline']:.0f} s", flush=True)
            walls["new"] = run_side(ROOT, out / "new", overrides)
            print(f"this checkout ({commit.strip()}{', uncommitted changes' if dirty else ''}): {walls['new']:.0f} s")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)
        base, new = job_results(out / "baseline"), job_results(out / "new")
    what = f"{args.image_size} px" if args.model == "pixel" else "state MLP"
    print(f"\n| {args.task}, {what} | baseline {args.baseline} | this checkout | ratio |")
    print("|---|---|---|---|")
    for algo in base:
        b, n = base[algo]["wall_time_s"], new[algo]["wall_time_s"]
        print(f"| {algo} job (s) | {b:.0f} | {n:.0f} | {b / n:.2f}x |")
    print(f"| whole command (s) | {walls['baseline']:.0f} | {walls['new']:.0f} | "
          f"{walls['baseline'] / walls['new']:.2f}x |")
    same = True
    for algo in base:
        bm, nm = ([r["metrics"][k] for k in METRICS] for r in (base[algo], new[algo]))
        same &= bm == nm
        print(f"{algo}: success, Len., Avg(l.) baseline {bm} / this checkout {nm}")
    print("the same Table I numbers" if same else "the Table I numbers differ (see above)")


if __name__ == "__main__":
    main()
