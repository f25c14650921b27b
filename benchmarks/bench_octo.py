"""Throughput of the full Octo-small backbone with the paper's chunk heads.

Measures, for the MetaWorld setting (one 128 px camera resized to 256 px, history window 2,
16 language tokens from a precomputed table; sequence length 562):

* forward samples/s (actor: backbone + chunk Gaussian head, sampling, no grad);
* forward+backward samples/s (one backbone pass: actor forward, backward of the chunk
  log-prob through the whole backbone);
* one full PPO-style update on CPU: ``ChunkClipPPOLoss`` forward (it runs the actor and
  the critic separately, so the shared backbone runs twice), backward, gradient clipping
  and an AdamW step, on a batch of ``--ppo-batch`` chunk decisions.

CPU always; CUDA too when a GPU is visible. Weights are random (throughput does not depend
on them). Usage::

    python benchmarks/bench_octo.py                      # quick CPU run
    python benchmarks/bench_octo.py --batch 4 --iters 5 --ppo-batch 16
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from tensordict import TensorDict

from torchrl_chunk.keys import IMAGE_KEY, SAMPLE_LOG_PROB_KEY, TASK_ID_KEY
from torchrl_chunk.modules.octo import OctoConfig, count_parameters, find_octo_backbones, make_octo_actor_critic

NUM_TASKS = 10


def make_batch(batch: int, window: int, image_size: int, device: torch.device) -> TensorDict:
    shape = (batch, image_size, image_size, 3) if window == 1 else (batch, window, image_size, image_size, 3)
    return TensorDict(
        {
            IMAGE_KEY: torch.randint(0, 256, shape, dtype=torch.uint8, device=device),
            TASK_ID_KEY: torch.randint(0, NUM_TASKS, (batch, 1), device=device),
        },
        [batch],
        device=device,
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / iters


def bench_device(args, device: torch.device, batch: int) -> None:
    torch.manual_seed(0)
    cfg = OctoConfig(window_size=args.window)
    table = torch.randn(NUM_TASKS, 16, 768)
    actor, critic = make_octo_actor_critic(cfg, horizon=4, action_dim=4, instructions=table)
    actor, critic = actor.to(device), critic.to(device)
    (backbone,) = find_octo_backbones(actor)
    heads = {id(p): p for p in list(actor.parameters()) + list(critic.parameters())}
    print(
        f"[{device}] backbone params {count_parameters(backbone.transformer):,}; "
        f"backbone + heads {sum(p.numel() for p in heads.values()):,}; window {args.window}, "
        f"batch {batch}"
    )
    td = make_batch(batch, args.window, args.image_size, device)

    def fwd():
        with torch.no_grad():
            actor(td.clone())

    def fwd_bwd():
        # one backbone pass: actor forward, backward of the joint chunk log-prob
        out = actor(td.clone())
        out[SAMPLE_LOG_PROB_KEY].mean().backward()
        actor.zero_grad(set_to_none=True)

    t = timeit(fwd, device, args.iters, args.warmup)
    print(f"[{device}] forward          {batch / t:8.2f} samples/s  ({t * 1e3:.0f} ms / batch)")
    t = timeit(fwd_bwd, device, args.iters, args.warmup)
    print(f"[{device}] forward+backward {batch / t:8.2f} samples/s  ({t * 1e3:.0f} ms / batch)")


def bench_ppo_update(args) -> None:
    from torchrl_chunk.objectives import ChunkClipPPOLoss

    torch.manual_seed(0)
    device = torch.device("cpu")
    cfg = OctoConfig(window_size=args.window)
    actor, critic = make_octo_actor_critic(
        cfg, horizon=4, action_dim=4, instructions=torch.randn(NUM_TASKS, 16, 768)
    )
    loss_fn = ChunkClipPPOLoss(actor, critic, horizon=4)
    optim = torch.optim.AdamW(loss_fn.parameters(), lr=1e-5)
    td = make_batch(args.ppo_batch, args.window, args.image_size, device)
    with torch.no_grad():  # what the collector stores
        actor(td)
        critic(td)
    td["advantage"] = torch.randn(args.ppo_batch, 1)
    td["value_target"] = td["state_value"] + torch.randn(args.ppo_batch, 1)

    def step():
        out = loss_fn(td.clone())
        loss = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(loss_fn.parameters(), 1.0)
        optim.step()

    t = timeit(step, device, 1, 1)
    print(
        f"[cpu] PPO update (ChunkClipPPOLoss + AdamW, shared backbone run for actor and "
        f"critic) on {args.ppo_batch} chunks: {t:.2f} s  ({args.ppo_batch / t:.2f} samples/s)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=2, help="CPU batch size")
    p.add_argument("--gpu-batch", type=int, default=64)
    p.add_argument("--ppo-batch", type=int, default=4, help="chunks in the CPU PPO update")
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--window", type=int, default=2, choices=[1, 2])
    p.add_argument("--image-size", type=int, default=128, help="env image size (resized to 256)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--skip-ppo", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    bench_device(args, torch.device("cpu"), args.batch)
    if not args.skip_ppo:
        bench_ppo_update(args)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        print(f"GPU: {torch.cuda.get_device_name()} (fp32, TF32 off)")
        bench_device(args, torch.device("cuda"), args.gpu_batch)
    else:
        print("no CUDA device visible: GPU numbers skipped")


if __name__ == "__main__":
    main()
