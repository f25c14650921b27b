"""Env throughput: batched chunked MetaWorld env vs one bare MetaWorld process.

Not a test. Prints env steps/s (base env steps, resets included, random actions, no
policy) of

* ``bare``: one raw MetaWorld env driven by a plain Python loop (the ceiling of one
  process), with a ``mujoco.Renderer`` frame per chunk of ``h`` steps in the pixel rows
  (after the chunk, or at the episode's end: the frames a chunk policy sees, as the chunked
  env renders them);
* ``chunked``: ``make_metaworld_env(task, num_envs=N, chunk_size=h)`` (N envs stepped
  sequentially in this process, one TorchRL step per chunk, finished envs reset by
  ``env.step_and_maybe_reset`` as in a collector);
* ``pool`` (pixels only): the same ``N`` envs over ``num_workers=W`` worker processes
  (:class:`~torchrl_chunk.envs.WorkerPoolEnv`, ``N / W`` envs each, chunks run in the
  workers, batch ``[N]``),

and each figure as a ratio to ``bare`` measured in the same run (setups measured
round-robin ``--repeats`` times; medians), and the pool's scaling ``pool / (W x bare)``.
Targets: 2 workers on 2 cores >= 1.6x bare; 16 workers on 16 cores >= 0.6 x W
x bare (>= 6,000 env steps/s). Usage::

    python benchmarks/bench_envs.py --task push-v3 --num-envs 8 --seconds 3 --repeats 3
    python benchmarks/bench_envs.py --workers 16 --num-envs 64   # a 16-core box
    python benchmarks/bench_envs.py --json envs.json             # the figures as JSON too
    python benchmarks/bench_envs.py --no-state --workers 16 --num-envs 32   # pixel rows only (scripts/gpu_check.py)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from torchrl_chunk.envs import make_metaworld_env
from torchrl_chunk.envs.metaworld import TaskSim
from torchrl_chunk.envs.workers import available_cpus


def bench_bare(task: str, seconds: float, image_size: int | None, chunk_size: int, max_steps: int = 200) -> float:
    sim = TaskSim(task, max_steps=max_steps, image_size=image_size)
    sim.seed(1)
    rng = np.random.default_rng(0)
    sim.reset_fresh()
    if image_size:
        sim.render()
    steps, in_chunk = 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            _, success, truncated = sim.step(rng.uniform(-1, 1, 4).astype(np.float32))
            steps, in_chunk = steps + 1, in_chunk + 1
            if image_size and (in_chunk == chunk_size or success or truncated):
                sim.render()  # the frame after the chunk
                in_chunk = 0
            if success or truncated:
                sim.reset_fresh()
                in_chunk = 0
                if image_size:
                    sim.render()
    rate = steps / (time.perf_counter() - start)
    sim.close()
    return rate


def bench_torchrl(env, seconds: float) -> float:
    """Random chunks, ``step_and_maybe_reset`` (partial auto-reset of finished envs)."""
    torch.manual_seed(0)
    td = env.reset()
    for _ in range(2):  # warm-up (lazy renderers, first allocations)
        td["action"] = env.action_spec.rand()
        _, td = env.step_and_maybe_reset(td)
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        td["action"] = env.action_spec.rand()
        out, td = env.step_and_maybe_reset(td)
        steps += int(out["next", "steps_executed"].sum())
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="push-v3")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="round-robin repeats (median)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=None, help="worker processes (pixels; default: one per core, at most --num-envs)")
    parser.add_argument("--no-pixels", action="store_true")
    parser.add_argument("--no-state", action="store_true", help="only the pixel rows (e.g. a short GPU-box check)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures to PATH (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n, h, px = args.num_envs, args.chunk_size, args.image_size
    w = args.workers or min(n, available_cpus())
    print(
        f"task={args.task} num_envs={n} h={h} seconds/measure={args.seconds} "
        f"repeats={args.repeats} cpus={os.cpu_count()} MUJOCO_GL={os.environ.get('MUJOCO_GL')} "
        f"loadavg(before)={os.getloadavg()[0]:.2f}"
    )
    # (obs, name, reference name, measure function); envs are built once, measured
    # round-robin so that load changes on a shared machine hit every setup alike
    if args.no_state and args.no_pixels:
        parser.error("--no-state and --no-pixels leave nothing to measure")
    setups, envs = [], []
    if not args.no_state:
        envs.append(make_metaworld_env(args.task, num_envs=n, chunk_size=h, seed=1))
        setups += [
            ("state", "bare (1 raw env, python loop)", None, lambda: bench_bare(args.task, args.seconds, None, h)),
            ("state", f"chunked, {n} envs in 1 process", "state", lambda e=envs[-1]: bench_torchrl(e, args.seconds)),
        ]
    if not args.no_pixels:
        envs.append(make_metaworld_env(args.task, num_envs=n, chunk_size=h, seed=1, from_pixels=True, image_size=px))
        one = envs[-1]
        envs.append(
            make_metaworld_env(
                args.task, num_envs=n, num_workers=w, chunk_size=h, seed=1, from_pixels=True, image_size=px
            )
        )
        pool_env = envs[-1]
        setups += [
            (f"{px}px", "bare (1 raw env + a frame per chunk)", None, lambda: bench_bare(args.task, args.seconds, px, h)),
            (f"{px}px", f"chunked, {n} envs in 1 process", f"{px}px", lambda: bench_torchrl(one, args.seconds)),
            (f"{px}px", f"pool, {w} workers x {n // w} envs", f"{px}px", lambda: bench_torchrl(pool_env, args.seconds)),
        ]
    rates: list[list[float]] = [[] for _ in setups]
    for _ in range(args.repeats):
        for i, (_, _, _, fn) in enumerate(setups):
            rates[i].append(fn())
    for env in envs:
        env.close()
    med = [float(np.median(r)) for r in rates]
    bare = {obs: med[i] for i, (obs, _, ref, _) in enumerate(setups) if ref is None}
    print(f"{'obs':6} {'setup':42} {'env steps/s':>12} {'x bare':>8}   runs")
    for i, (obs, name, _, _) in enumerate(setups):
        runs = " ".join(f"{r:.0f}" for r in rates[i])
        print(f"{obs:6} {name:42} {med[i]:12.0f} {med[i] / bare[obs]:8.2f}   [{runs}]")
    if not args.no_pixels:
        pool, ref = med[-1], bare[f"{px}px"]
        target = "2 workers: >= 1.6x bare" if w == 2 else f"{w} workers: >= 0.6 x {w} x bare"
        goal = 1.6 if w == 2 else 0.6 * w
        print(f"pool / bare = {pool / ref:.2f} (target {target}: {'met' if pool / ref >= goal else 'missed'}); "
              f"pool / ({w} x bare) = {pool / (w * ref):.2f}; {pool:.0f} env steps/s")
    print(f"loadavg(after)={os.getloadavg()[0]:.2f}")
    if args.json:
        rows = [{"obs": obs, "setup": name, "steps_per_s": med[i], "x_bare": med[i] / bare[obs], "runs": rates[i]}
                for i, (obs, name, _, _) in enumerate(setups)]
        out = {"task": args.task, "num_envs": n, "chunk_size": h, "image_size": px, "workers": w,
               "cpus": os.cpu_count(), "mujoco_gl": os.environ.get("MUJOCO_GL"), "rows": rows}
        if not args.no_pixels:
            out["pool"] = {"workers": w, "frames_per_s": pool, "x_bare": pool / ref, "scaling": pool / (w * ref),
                           "target_x_bare": goal, "met": pool / ref >= goal}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
