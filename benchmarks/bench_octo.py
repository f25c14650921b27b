"""Throughput of Octo with the paper's chunk heads: acting, forward+backward, PPO updates.

For fp32 and bf16 (:mod:`torchrl_chunk.modules.precision`), on a batch of chunk
decisions in the MetaWorld setting (one 128 px camera, history window 2, 16 language
tokens from a precomputed table), it measures samples/s of

* **act**: the actor's forward with sampling, no grad (what collection runs);
* **fwd+bwd**: one actor forward and the backward of its joint chunk log-prob: one
  backbone pass with its backward, the unit an update is compared with;
* **update**: one full PPO update -- ``ChunkClipPPOLoss`` forward (clipped surrogate,
  clipped value loss), backward, gradient clipping, AdamW step -- with the backbone run
  once for actor and critic (``shared_backbone=True``, the default for a shared
  backbone) and, for comparison, twice (``shared_backbone=False``, TorchRL's
  ``ClipPPOLoss`` behaviour).

and the ratio ``time(update) / time(fwd+bwd)`` for both update paths. The three timed
functions are interleaved iteration by iteration and medians are taken, so the ratios
come from one run under the same load. Target with one backbone pass: <= 1.2 (two
passes: about 2).

CPU always, with ``OctoConfig.tiny()`` and a small batch by default (1-2 minutes on 2
cores; ``--cpu-config small`` for the real model). CUDA too when a GPU is visible, with
the paper's Octo-small at batch 256, its peak memory, and the targets for an H200 in
bf16 printed next to the measured numbers. Weights are random (throughput does not
depend on them). Usage::

    python benchmarks/bench_octo.py                         # CPU tiny (+ CUDA small)
    python benchmarks/bench_octo.py --cpu-batch 16 --iters 5
    python benchmarks/bench_octo.py --skip-cpu              # CUDA only
    python benchmarks/bench_octo.py --skip-cpu --precisions bf16,fp32 --json octo.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
from tensordict import TensorDict

from torchrl_chunk.keys import IMAGE_KEY, SAMPLE_LOG_PROB_KEY, TASK_ID_KEY
from torchrl_chunk.modules.octo import OctoConfig, count_parameters, find_octo_backbones, make_octo_actor_critic
from torchrl_chunk.modules.precision import with_precision
from torchrl_chunk.precision import PRECISIONS, autocast
from torchrl_chunk.objectives import ChunkClipPPOLoss

NUM_TASKS = 10
GIB = 2**30
# targets: Octo-small, batch 256, bf16, one H200
TARGETS = {"update": 2000.0, "act": 8000.0, "peak_gib": 40.0, "ratio": 1.2}


def make_obs(batch: int, window: int, image_size: int, device: torch.device) -> TensorDict:
    frames = (window,) if window > 1 else ()
    image = torch.randint(0, 256, (batch, *frames, image_size, image_size, 3), dtype=torch.uint8)
    task = torch.randint(0, NUM_TASKS, (batch, 1))
    return TensorDict({IMAGE_KEY: image, TASK_ID_KEY: task}, [batch]).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Setup:
    """Actor, critic (shared backbone), a collected PPO batch and the two update paths."""

    def __init__(self, cfg: OctoConfig, batch: int, image_size: int, device: torch.device):
        torch.manual_seed(0)
        self.device = device
        actor, critic = make_octo_actor_critic(
            cfg, chunk_size=4, action_dim=4, instructions=torch.randn(NUM_TASKS, 16, 768)
        )
        self.actor, self.critic = actor.to(device), critic.to(device)
        (self.backbone,) = find_octo_backbones(self.actor)
        self.window, self.image_size = cfg.window_size, image_size
        self.td = self.make_batch(batch)
        self.losses = {
            shared: ChunkClipPPOLoss(self.actor, self.critic, chunk_size=4, shared_backbone=shared)
            for shared in (True, False)
        }
        self.optims = {
            k: torch.optim.AdamW(loss.parameters(), lr=1e-6) for k, loss in self.losses.items()
        }

    def make_batch(self, batch: int) -> TensorDict:
        """A collected PPO batch of ``batch`` chunk decisions (actions, log-probs, values, GAE targets)."""
        device = self.device
        td = make_obs(batch, self.window, self.image_size, device)
        with torch.no_grad():  # what the collector stores
            self.actor(td)
            value = self.critic(td.clone())["state_value"]
        td["advantage"] = torch.randn(batch, 1, device=device)
        td["value_target"] = value + torch.randn(batch, 1, device=device)
        td["state_value"] = value
        return td

    def act(self, precision: str):
        def run():
            with torch.no_grad():
                with_precision(self.actor, precision)(self.td.clone())

        return run

    def fwd_bwd(self, precision: str):
        def run():
            with autocast(precision, self.device):
                out = self.actor(self.td.clone())
            out[SAMPLE_LOG_PROB_KEY].mean().backward()
            self.actor.zero_grad(set_to_none=True)

        return run

    def update(self, precision: str, shared: bool):
        loss, optim = self.losses[shared], self.optims[shared]

        def run():
            loss.precision = precision
            out = loss(self.td.clone())
            total = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
            optim.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(loss.parameters(), 1.0)
            optim.step()

        return run


def measure(fns: dict, device: torch.device, iters: int, warmup: int) -> tuple[dict, dict]:
    """Median seconds per call and peak memory (GiB, CUDA) per function, interleaved."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    peaks = dict.fromkeys(fns, 0.0)
    for i in range(warmup + iters):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
            if device.type == "cuda":
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated(device) / GIB)
    return {k: statistics.median(v) for k, v in times.items()}, peaks


def bench(device: torch.device, cfg: OctoConfig, name: str, batch: int, args, on_result=None) -> dict:
    """``on_result(precision, figures)`` is called after each precision (e.g. to save them)."""
    setup = Setup(cfg, batch, args.image_size, device)
    camera = cfg.image_tokenizer("primary").image_size
    print(
        f"[{device.type}] Octo {name}: backbone {count_parameters(setup.backbone.transformer):,} "
        f"params; window {cfg.window_size}, image {args.image_size} px -> {camera} px; "
        f"batch {batch}"
    )
    header = (
        f"[{device.type}] {'precision':9} {'act/s':>9} {'fwd+bwd/s':>10} {'update/s':>9} "
        f"{'update/s':>9} {'update / fwd+bwd':>17}"
    )
    print(header + (f" {'peak GiB':>9}" if device.type == "cuda" else ""))
    print(
        f"[{device.type}] {'':9} {'':>9} {'':>10} {'1 pass':>9} {'2 passes':>9} "
        f"{'1 pass':>8} {'2 passes':>8}"
    )
    results = {}
    for precision in args.precisions:
        fns = {
            "act": setup.act(precision),
            "fwd_bwd": setup.fwd_bwd(precision),
            "update": setup.update(precision, True),
            "update2": setup.update(precision, False),
        }
        t, peak = measure(fns, device, args.iters, args.warmup)
        r = {k: batch / v for k, v in t.items()}
        r["ratio"], r["ratio2"] = t["update"] / t["fwd_bwd"], t["update2"] / t["fwd_bwd"]
        r["peak_gib"] = peak["update"]
        results[precision] = r
        line = (
            f"[{device.type}] {precision:9} {r['act']:9.1f} {r['fwd_bwd']:10.1f} {r['update']:9.1f} "
            f"{r['update2']:9.1f} {r['ratio']:8.2f} {r['ratio2']:8.2f}"
        )
        print(line + (f" {r['peak_gib']:9.2f}" if device.type == "cuda" else ""), flush=True)
        if on_result is not None:
            on_result(precision, r)
    if set(results) == set(PRECISIONS):
        ok = "met" if results["bf16"]["ratio"] <= TARGETS["ratio"] else "MISSED"
        print(
            f"[{device.type}] target update / fwd+bwd <= {TARGETS['ratio']} with one backbone pass "
            f"(bf16: {results['bf16']['ratio']:.2f}, {ok}; fp32: {results['fp32']['ratio']:.2f})"
        )
    return results


class JsonReport:
    """``--json PATH``: the figures so far, rewritten after each precision (a killed run keeps them)."""

    def __init__(self, path: str | None, **meta):
        self.path, self.data = path, {**meta, "targets": TARGETS}

    def add(self, device: str, setting: dict):
        def on_result(precision: str, figures: dict) -> None:
            entry = self.data.setdefault(device, {**setting, "results": {}})
            entry["results"][precision] = figures
            self.save()

        return on_result

    def save(self) -> None:
        if self.path:
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as f:
                json.dump(self.data, f, indent=1)
            os.replace(tmp, self.path)


def print_targets(results: dict, batch: int, is_small: bool) -> None:
    if "bf16" not in results:
        return
    r = results["bf16"]
    note = "" if is_small and batch == 256 else " (not the target setting: Octo-small, batch 256)"
    for key, label, fmt, better in (
        ("update", "PPO update samples/s", ".0f", "ge"),
        ("act", "act samples/s", ".0f", "ge"),
        ("peak_gib", "peak memory GiB (update)", ".2f", "le"),
    ):
        met = r[key] >= TARGETS[key] if better == "ge" else r[key] <= TARGETS[key]
        sign = ">=" if better == "ge" else "<="
        print(
            f"[cuda] target (H200, bf16) {label} {sign} {TARGETS[key]:g}: measured "
            f"{r[key]:{fmt}} -> {'met' if met else 'MISSED'}{note}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-config", choices=["tiny", "small"], default="tiny")
    p.add_argument("--cpu-batch", type=int, default=32)
    p.add_argument("--gpu-batch", type=int, default=256)
    p.add_argument("--iters", type=int, default=8, help="timed iterations (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--window", type=int, default=2, choices=[1, 2])
    p.add_argument("--image-size", type=int, default=128, help="env image size (resized)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--skip-cpu", action="store_true")
    p.add_argument("--precisions", default=",".join(PRECISIONS),
                   help=f"comma-separated, measured in this order (default: {','.join(PRECISIONS)})")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the figures to PATH (JSON)")
    args = p.parse_args()
    args.precisions = [x for x in args.precisions.split(",") if x]
    bad = [x for x in args.precisions if x not in PRECISIONS]
    if bad or not args.precisions:
        p.error(f"--precisions: choose from {', '.join(PRECISIONS)} (got {bad or 'none'})")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    report = JsonReport(args.json, torch=torch.__version__, window=args.window, image_size=args.image_size,
                        iters=args.iters, warmup=args.warmup)
    report.save()
    if not args.skip_cpu:
        small = args.cpu_config == "small"
        cfg = OctoConfig(window_size=args.window) if small else OctoConfig.tiny(window_size=args.window)
        bench(torch.device("cpu"), cfg, args.cpu_config, args.cpu_batch, args,
              report.add("cpu", {"config": args.cpu_config, "batch": args.cpu_batch}))
    if torch.cuda.is_available():
        print(
            f"GPU: {torch.cuda.get_device_name()} (TF32 matmul "
            f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}, PyTorch defaults)"
        )
        report.data["gpu"] = torch.cuda.get_device_name()
        results = bench(torch.device("cuda"), OctoConfig(window_size=args.window), "small", args.gpu_batch, args,
                        report.add("cuda", {"config": "small", "batch": args.gpu_batch}))
        print_targets(results, args.gpu_batch, True)
    else:
        print(
            "no CUDA device visible: GPU numbers skipped (targets on an H200, Octo-small, batch "
            f"256, bf16: update >= {TARGETS['update']:g} samples/s, act >= {TARGETS['act']:g} "
            f"samples/s, peak <= {TARGETS['peak_gib']:g} GiB)"
        )


if __name__ == "__main__":
    main()
