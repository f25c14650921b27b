"""Builders shared by the loss tests: a tiny chunk actor/critic and rollout batches."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

from torchrl_chunk.modules import make_chunk_actor_critic

OBS_DIM, EMBED, H, A = 5, 16, 4, 2
STATE = ("observation", "state")


def make_backbone(seed: int = 0) -> TensorDictModule:
    torch.manual_seed(seed)
    return TensorDictModule(
        nn.Sequential(nn.Linear(OBS_DIM, EMBED), nn.Tanh()), in_keys=[STATE], out_keys=["embedding"]
    )


def make_actor_critic(chunk_size: int = H, separate: bool = False, seed: int = 0):
    critic_backbone = make_backbone(seed + 1) if separate else None
    return make_chunk_actor_critic(
        make_backbone(seed), EMBED, chunk_size, A, critic_backbone=critic_backbone
    )


def make_rollout(actor, B: int = 3, T: int = 6, seed: int = 0, steps: torch.Tensor | None = None):
    """A [B, T] batch of chunk decisions with stored actions and log-probs."""
    g = torch.Generator().manual_seed(seed)
    td = TensorDict(
        {
            STATE: torch.randn(B, T, OBS_DIM, generator=g),
            ("next", *STATE): torch.randn(B, T, OBS_DIM, generator=g),
            ("next", "reward"): torch.rand(B, T, 1, generator=g),
            ("next", "done"): torch.zeros(B, T, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(B, T, 1, dtype=torch.bool),
            ("next", "steps_executed"): (
                steps if steps is not None else torch.full((B, T, 1), actor_chunk_size(actor))
            ),
        },
        [B, T],
    )
    with torch.no_grad():
        actor(td)
    return td


def actor_chunk_size(actor) -> int:
    for m in actor.modules():
        if hasattr(m, "chunk_size") and hasattr(m, "log_std"):
            return m.chunk_size
    raise AssertionError("no ChunkGaussianHead in actor")


def demo_batch(n=6, h=4, seed=0, pad_from=None):
    g = torch.Generator().manual_seed(seed)
    td = TensorDict(
        {
            STATE: torch.randn(n, OBS_DIM, generator=g),
            ("vla_action", "chunk"): torch.rand(n, h, A, generator=g) * 2 - 1,
            "action_is_pad": torch.zeros(n, h, dtype=torch.bool),
        },
        [n],
    )
    if pad_from is not None:  # sample i is padded from step pad_from[i] on
        for i, k in enumerate(pad_from):
            td["action_is_pad"][i, k:] = True
    return td
