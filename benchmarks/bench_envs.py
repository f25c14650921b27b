"""Env throughput: batched chunked MetaWorld env vs one bare MetaWorld process.

Not a test. Prints env steps/s (base env steps, resets included, random actions, no
policy) of

* ``bare``: one raw MetaWorld env driven by a plain Python loop (the ceiling of one
  process), with a ``mujoco.Renderer`` frame per step in the pixel rows;
* ``chunked``: ``make_metaworld_env(task, num_envs=N, chunk_size=h)`` (N envs stepped
  sequentially in this process, one TorchRL step per chunk, finished envs reset by
  ``env.step_and_maybe_reset`` as in a collector);
* ``chunked-parallel`` (pixels only): ``num_workers=W`` ParallelEnv processes, one env
  each,

and each figure as a ratio to ``bare`` measured in the same run. Usage::

    python benchmarks/bench_envs.py --task push-v3 --num-envs 8 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from torchrl_chunk.envs import make_metaworld_env
from torchrl_chunk.envs.metaworld import _TaskSim


def bench_bare(task: str, seconds: float, image_size: int | None, max_steps: int = 200) -> float:
    sim = _TaskSim(task, max_steps=max_steps, image_size=image_size)
    sim.seed(1)
    rng = np.random.default_rng(0)
    sim.reset_fresh()
    if image_size:
        sim.render()
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            _, success, truncated = sim.step(rng.uniform(-1, 1, 4).astype(np.float32))
            if image_size:
                sim.render()
            steps += 1
            if success or truncated:
                sim.reset_fresh()
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
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="ParallelEnv workers (pixels)")
    parser.add_argument("--no-pixels", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"task={args.task} num_envs={args.num_envs} h={args.chunk_size} "
        f"seconds/measure={args.seconds} cpus={os.cpu_count()} MUJOCO_GL={os.environ.get('MUJOCO_GL')}"
    )
    rows = []
    bare = bench_bare(args.task, args.seconds, None)
    rows.append(("state", "bare (1 raw env, python loop)", bare, bare))
    env = make_metaworld_env(args.task, num_envs=args.num_envs, chunk_size=args.chunk_size, seed=1)
    rows.append(("state", f"chunked, {args.num_envs} envs in 1 process", bench_torchrl(env, args.seconds), bare))
    env.close()
    if not args.no_pixels:
        px = args.image_size
        bare_px = bench_bare(args.task, args.seconds, px)
        rows.append((f"{px}px", "bare (1 raw env + renderer)", bare_px, bare_px))
        env = make_metaworld_env(
            args.task, num_envs=args.num_envs, chunk_size=args.chunk_size, seed=1,
            from_pixels=True, image_size=px,
        )  # fmt: skip
        rows.append((f"{px}px", f"chunked, {args.num_envs} envs in 1 process", bench_torchrl(env, args.seconds), bare_px))
        env.close()
        w = args.workers
        env = make_metaworld_env(
            args.task, num_envs=w, num_workers=w, chunk_size=args.chunk_size, seed=1,
            from_pixels=True, image_size=px,
        )  # fmt: skip
        rows.append((f"{px}px", f"chunked, ParallelEnv {w} workers x 1 env", bench_torchrl(env, args.seconds), bare_px))
        env.close()
    print(f"{'obs':6} {'setup':42} {'env steps/s':>12} {'x bare':>8}")
    for obs, name, rate, ref in rows:
        print(f"{obs:6} {name:42} {rate:12.0f} {rate / ref:8.2f}")


if __name__ == "__main__":
    main()
