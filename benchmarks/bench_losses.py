"""Time one PPOBCLoss update against one TorchRL ClipPPOLoss update, shared and separate critic.

An update is forward, backward and an AdamW step. Same actor, critic and rollout minibatch
for both losses; PPOBCLoss also runs SelfBCLoss on a demo minibatch of the same size (the
extra work of Eq. 7). For each critic layout (``shared``: actor and critic on one backbone,
the paper's Fig. 1(a); ``separate``: a backbone each) it prints median times over repeats
and the ratios, all measured in this one run, against the targets (<= 1.3 shared, <= 1.6
separate).

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


def build(obs_dim: int, hidden: int, horizon: int, action_dim: int, separate: bool):
    def backbone():
        return TensorDictModule(
            nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()),
            in_keys=[("observation", "state")],
            out_keys=["embedding"],
        )

    return make_chunk_actor_critic(backbone(), hidden, horizon, action_dim,
                                   critic_backbone=backbone() if separate else None)


def median_times(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each function, timed in turns (one call of each per round), so a
    change of load on the machine during the run affects all of them alike."""
    for fn in fns.values():
        for _ in range(10):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


TARGETS = {"shared": 1.3, "separate": 1.6}


def measure(args, separate: bool) -> dict[str, float]:
    torch.manual_seed(0)
    n, h, a = args.batch, args.horizon, 4
    actor, critic = build(args.obs_dim, args.hidden, h, a, separate)
    rollout = TensorDict(
        {
            ("observation", "state"): torch.randn(n, args.obs_dim),
            ("next", "observation", "state"): torch.randn(n, args.obs_dim),
            ("next", "reward"): torch.rand(n, 1),
            ("next", "done"): torch.zeros(n, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
            ("next", "steps_executed"): torch.full((n, 1), h),
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
    chunk_ppo = ChunkClipPPOLoss(actor, critic, chunk_size=h)
    ours = PPOBCLoss(chunk_ppo, SelfBCLoss(actor, loss_form="mse"), TanhWarmup(40_000))
    ours.schedule.step(20_000)
    with torch.no_grad():
        chunk_ppo.value_estimator(rollout)  # advantage/value_target precomputed for all
    optim = torch.optim.AdamW(list(actor.parameters()) + list(critic.parameters()), lr=1e-5)

    def update(loss_fn):
        def step():
            out = loss_fn()
            optim.zero_grad()
            sum(v for k, v in out.items() if k.startswith("loss_")).backward()
            optim.step()
        return step

    fns = {"ref": update(lambda: ref(rollout)), "chunk": update(lambda: chunk_ppo(rollout)),
           "ours": update(lambda: ours(rollout, demo))}
    return {**median_times(fns, args.repeats), "shared_pass": float(chunk_ppo.shared_backbone)}


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
    print(f"batch {args.batch} decisions, chunk {args.horizon}x4, MLP {args.obs_dim}-{args.hidden}-{args.hidden}, "
          f"{args.threads} thread(s), median of {args.repeats} updates (fwd + bwd + AdamW step)")
    for layout, target in TARGETS.items():
        t = measure(args, separate=layout == "separate")
        ratio = t["ours"] / t["ref"]
        print(f"[{layout} critic{', one backbone pass' if t['shared_pass'] else ''}]")
        print(f"  TorchRL ClipPPOLoss        update: {t['ref'] * 1e3:8.3f} ms")
        print(f"  ChunkClipPPOLoss           update: {t['chunk'] * 1e3:8.3f} ms  ratio {t['chunk'] / t['ref']:5.2f}x")
        print(f"  PPOBCLoss (PPO + self-BC)  update: {t['ours'] * 1e3:8.3f} ms  ratio {ratio:5.2f}x  "
              f"(target <= {target}: {'met' if ratio <= target else 'NOT met'})")


if __name__ == "__main__":
    main()
