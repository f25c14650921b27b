"""Ray's overhead: remote collection vs local worker-process collection, and a 2-job sweep.

Not a test. Prints ratios measured in one run (docs/scaling.md quotes them):

1. **Collection** (state and pixels): env steps/s of whole-episode batches of the recipe's
   policy, ``workers`` envs, by
   * ``local``: TorchRL's ``Collector`` over ``make_metaworld_env(num_workers=W)`` (one env
     per worker process, the policy in this process, as ``env.num_workers=W``; a
     ``WorkerPoolEnv``);
   * ``Ray``: :class:`~torchrl_chunk.distributed.RayEpisodeCollector` with ``W`` actors on a
     private local Ray instance of ``W`` CPUs (weights pushed every batch, as the recipe);
   and the bytes sent (weights) and received (the batch) per iteration. Batches are
   measured after one warm-up batch (actor start-up is a one-off, reported apart).
2. **Sweep**: the recipe's smoke preset as 2 jobs (``algo=ours seeds=[1,2]``) one after
   the other here vs ``launcher=ray`` with 2 CPUs (ideal 0.5 on 2 cores), once starting its
   own Ray instance (``ray.address=null``) and once joining a cluster already up (``ray
   start`` before, as on a real cluster); each a fresh ``python recipes/mt10.py`` with a
   warm demo cache. ``--sweep-steps`` adds a longer job to show the fixed start-up cost
   (Ray instance, worker processes importing torch) being amortised.

Usage::

    python benchmarks/bench_ray.py                       # both parts, about 9 min on 2 cores
    python benchmarks/bench_ray.py --skip-sweep --batches 5
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchrl.collectors import Collector
from torchrl.envs.utils import ExplorationType

from torchrl_chunk.distributed import RayEpisodeCollector, init_ray
from torchrl_chunk.envs import make_metaworld_env
from torchrl_chunk.keys import STEPS_EXECUTED_KEY

ROOT = Path(__file__).resolve().parents[1]


def policy_for(pixels: bool, horizon: int):
    torch.manual_seed(0)
    if pixels:
        from torchrl_chunk.modules.pixel import make_pixel_actor_critic

        return make_pixel_actor_critic(chunk_size=horizon)[0]
    from torchrl_chunk.modules.mlp import make_mlp_actor_critic

    return make_mlp_actor_critic(torch.zeros(39), torch.ones(39), chunk_size=horizon)[0]


def steps_of(batch) -> int:
    return int(batch["next", STEPS_EXECUTED_KEY].sum())


def bench_local(make_env, policy, workers: int, decisions: int, batches: int) -> float:
    collector = Collector(make_env(num_envs=workers, num_workers=workers), policy,
                          frames_per_batch=workers * decisions, total_frames=-1,
                          exploration_type=ExplorationType.RANDOM, auto_register_policy_transforms=False)
    it = iter(collector)
    try:
        collector.set_seed(0)
        collector.reset()
        next(it)  # warm-up
        steps, start = 0, time.perf_counter()
        for i in range(batches):
            collector.set_seed(i + 1)
            collector.reset()
            steps += steps_of(next(it))
        return steps / (time.perf_counter() - start)
    finally:
        collector.shutdown()


def bench_ray(make_env, policy, workers: int, decisions: int, batches: int) -> tuple[float, float, int, int]:
    remote = RayEpisodeCollector(make_env, policy, num_envs=workers, num_workers=workers,
                                 decisions_per_env=decisions, num_threads=1)
    try:
        start = time.perf_counter()
        remote.collect(0)  # actor start-up, weight-sync set-up
        startup = time.perf_counter() - start
        steps, start = 0, time.perf_counter()
        for i in range(batches):
            steps += steps_of(remote.collect(i + 1))
        return steps / (time.perf_counter() - start), startup, remote.bytes_sent, remote.bytes_received
    finally:
        remote.shutdown()


def run_recipe(args: list[str], cwd: Path, cache: Path) -> float:
    env = {**os.environ, "TORCHRL_CHUNK_CACHE": str(cache), "RAY_AUTH_MODE": "disabled"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "mt10.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"recipe failed: {' '.join(args)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def start_head(num_cpus: int) -> str:
    """``ray start --head`` on 127.0.0.1 (a cluster that is up before the sweep is launched)."""
    import socket

    ray_bin = str(Path(sys.executable).parent / "ray")
    with socket.socket() as sock:  # a free port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                    f"--num-cpus={num_cpus}", "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, capture_output=True, env=env)
    return f"127.0.0.1:{port}"


def stop_head() -> None:
    """``ray stop`` (it stops every Ray process on this machine: run the benchmark alone)."""
    subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True)


def bench_sweep(steps: int, tmp: Path) -> tuple[float, float, float]:
    """Wall times: 2 jobs one after the other; launcher=ray starting its own Ray instance;
    launcher=ray joining a cluster that is already up."""
    common = ["preset=smoke", "algo=ours", "seeds=[1,2]", f"train.total_env_steps={steps}"]
    cache = tmp / "cache"
    run_recipe([*common, f"run_dir={tmp / f'warm_{steps}'}"], tmp, cache)  # fills the demo cache for both
    local = run_recipe([*common, f"run_dir={tmp / f'local_{steps}'}"], tmp, cache)
    own = run_recipe([*common, "launcher=ray", "ray.num_cpus=2", f"run_dir={tmp / f'ray_{steps}'}"], tmp, cache)
    address = start_head(2)
    try:
        joined = run_recipe([*common, "launcher=ray", f"ray.address={address}", f"run_dir={tmp / f'rayc_{steps}'}"],
                            tmp, cache)
    finally:
        stop_head()
    return local, own, joined


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="push-v3")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--decisions", type=int, default=50, help="chunk decisions per env per batch")
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--skip-collection", action="store_true")
    p.add_argument("--sweep-steps", type=int, nargs="*", default=[600, 6000],
                   help="train.total_env_steps of the sweep's jobs (600 = the smoke preset)")
    args = p.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    torch.set_num_threads(1)
    print(f"cores: {os.cpu_count()}  task: {args.task}  workers: {args.workers}  "
          f"batch: {args.workers} envs x {args.decisions} decisions (h=4)")

    if not args.skip_collection:
        bench_collection(args)
    if args.skip_sweep:
        return
    print("\n| 2 jobs (algo=ours, seeds 1 and 2), smoke preset, env steps per job | one after the other "
          "| launcher=ray, own Ray instance | ratio | launcher=ray, cluster already up | ratio | target <= 0.65 |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for steps in args.sweep_steps:
            local, own, joined = bench_sweep(steps, Path(tmp))
            met = "met" if min(own, joined) / local <= 0.65 else "missed"
            print(f"| {steps} | {local:.1f} s | {own:.1f} s | {own / local:.2f} | {joined:.1f} s | "
                  f"{joined / local:.2f} | {met} |", flush=True)


def bench_collection(args) -> None:
    import ray

    init_ray(num_cpus=args.workers, log_to_driver=False)
    print("\n| observation | local workers steps/s | Ray steps/s | Ray / local | target >= 0.8 "
          "| sent / received per batch | Ray start-up |")
    print("|---|---|---|---|---|---|---|")
    for pixels in (False, True):
        make_env = functools.partial(make_metaworld_env, args.task, chunk_size=4, seed=1, from_pixels=pixels,
                                     image_size=args.image_size)
        policy = policy_for(pixels, 4)
        local = bench_local(make_env, policy, args.workers, args.decisions, args.batches)
        ray_rate, startup, sent, received = bench_ray(make_env, policy, args.workers, args.decisions,
                                                      args.batches)
        name = f"pixels {args.image_size} px" if pixels else "state"
        met = "met" if ray_rate / local >= 0.8 else "missed"
        print(f"| {name} | {local:.0f} | {ray_rate:.0f} | {ray_rate / local:.2f} | {met} | "
              f"{sent / 1e6:.2f} MB / {received / 1e6:.2f} MB | {startup:.1f} s |", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
