"""Time one PPOBCLoss forward+backward against one TorchRL ClipPPOLoss forward+backward.

Same actor, critic and rollout minibatch for both; PPOBCLoss also runs SelfBCLoss on a
demo minibatch of the same size (that is the extra work Eq. 7 adds). Prints median
times over repeats and their ratios, measured in this one run.

    python benchmarks/bench_losses.py [--batch 256] [--repeats 200] [--obs-dim 39]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.utils import ValueEstimators

from torchrl_chunk.modules import make_chunk_actor_critic
from torchrl_chunk.objectives import ChunkClipPPOLoss, PPOBCLoss, SelfBCLoss
from torchrl_chunk.schedules import TanhWarmup


def build(obs_dim: int, hidden: int, horizon: int, action_dim: int):
    def backbone():
        return TensorDictModule(
            nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()),
            in_keys=[("observation", "state")],
            out_keys=["embedding"],
        )

    return make_chunk_actor_critic(backbone(), hidden, horizon, action_dim, critic_backbone=backbone())


def median_time(fn, repeats: int) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--obs-dim", type=int, default=39)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--horizon", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, h, a = args.batch, args.horizon, 4
    actor, critic = build(args.obs_dim, args.hidden, h, a)

    rollout = TensorDict(
        {
            ("observation", "state"): torch.randn(n, args.obs_dim),
            ("next", "observation", "state"): torch.randn(n, args.obs_dim),
            ("next", "reward"): torch.rand(n, 1),
            ("next", "done"): torch.zeros(n, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
        },
        [n],
    )
    with torch.no_grad():
        actor(rollout)
    demo = TensorDict(
        {
            ("observation", "state"): torch.randn(n, args.obs_dim),
            ("vla_action", "chunk"): torch.rand(n, h, a) * 2 - 1,
            "action_is_pad": torch.zeros(n, h, dtype=torch.bool),
        },
        [n],
    )

    ref = ClipPPOLoss(actor, critic, clip_epsilon=0.2, clip_value=True, loss_critic_type="l2",
                      critic_coeff=0.5, entropy_coeff=0.0)
    ref.make_value_estimator(ValueEstimators.GAE, gamma=0.99, lmbda=0.95)
    chunk_ppo = ChunkClipPPOLoss(actor, critic, horizon=h)
    ours = PPOBCLoss(chunk_ppo, SelfBCLoss(actor, loss_form="mse"), TanhWarmup(40_000))
    ours.schedule.step(20_000)
    with torch.no_grad():
        chunk_ppo.value_estimator(rollout)  # advantage/value_target precomputed for all three

    def total(out):
        return sum(v for k, v in out.items() if k.startswith("loss_"))

    def step_ref():
        total(ref(rollout)).backward()

    def step_chunk():
        total(chunk_ppo(rollout)).backward()

    def step_ours():
        total(ours(rollout, demo)).backward()

    t_ref = median_time(step_ref, args.repeats)
    t_chunk = median_time(step_chunk, args.repeats)
    t_ours = median_time(step_ours, args.repeats)
    print(f"batch {n} decisions, chunk {h}x{a}, MLP {args.obs_dim}-{args.hidden}-{args.hidden}, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print(f"TorchRL ClipPPOLoss        fwd+bwd: {t_ref * 1e3:8.3f} ms")
    print(f"ChunkClipPPOLoss           fwd+bwd: {t_chunk * 1e3:8.3f} ms  ratio {t_chunk / t_ref:5.2f}x")
    print(f"PPOBCLoss (PPO + self-BC)  fwd+bwd: {t_ours * 1e3:8.3f} ms  ratio {t_ours / t_ref:5.2f}x")


if __name__ == "__main__":
    main()
