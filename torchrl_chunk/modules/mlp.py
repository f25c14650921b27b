"""The CPU default policy: an MLP on the 39-dim MetaWorld state plus a task embedding.

It stands in for the VLA backbone where no GPU and no pretrained weights are at hand:
it trains from scratch in seconds on CPU and exposes the same interface to the losses as
Octo-small (a backbone writing ``"embedding"``, the paper's single-Linear heads).
The task instruction enters as a learned embedding of ``("observation", "task_id")``:
with a fixed prompt per task, a lookup table is all a language encoder would give.

Observations are normalised with fixed statistics (the expert demos' mean and std, std
floored, result clipped), as a measured prototype of this method did; see
:func:`observation_stats`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn

from torchrl_chunk._deprecation import renamed_kwarg
from torchrl_chunk.keys import STATE_KEY, TASK_ID_KEY
from torchrl_chunk.modules.heads import EMBEDDING_KEY, make_chunk_actor_critic


def observation_stats(
    trajectories: Sequence[TensorDictBase], *, std_floor: float = 0.05
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and floored std of ``("observation", "state")`` over demo trajectories."""
    states = torch.cat([t.get(STATE_KEY).reshape(-1, t.get(STATE_KEY).shape[-1]) for t in trajectories])
    if states.shape[0] == 0:
        raise ValueError("observation_stats needs at least one observation.")
    return states.mean(0), states.std(0, unbiased=False).clamp_min(std_floor)


class StateEncoder(nn.Module):
    """``(state [*B, D], task_id [*B, 1]) -> embedding [*B, hidden[-1]]``."""

    def __init__(
        self,
        obs_mean: torch.Tensor,
        obs_std: torch.Tensor,
        *,
        hidden: Sequence[int] = (256, 256),
        num_tasks: int = 10,
        task_embed_dim: int = 16,
        activation: type[nn.Module] = nn.ReLU,
        clip: float = 10.0,
    ) -> None:
        super().__init__()
        if obs_mean.shape != obs_std.shape or obs_mean.ndim != 1:
            raise ValueError(
                f"obs_mean and obs_std must be 1-D and equal-shaped, got {tuple(obs_mean.shape)} "
                f"and {tuple(obs_std.shape)}."
            )
        if (obs_std <= 0).any():
            raise ValueError("obs_std must be positive everywhere (floor it, see observation_stats).")
        self.register_buffer("obs_mean", obs_mean.clone().float())
        self.register_buffer("obs_std", obs_std.clone().float())
        self.clip = clip
        self.task_embed = nn.Embedding(num_tasks, task_embed_dim) if task_embed_dim > 0 else None
        layers: list[nn.Module] = []
        width = obs_mean.shape[0] + task_embed_dim
        for h in hidden:
            layers += [nn.Linear(width, h), activation()]
            width = h
        self.net = nn.Sequential(*layers)
        self.embed_dim = width

    def forward(self, state: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        x = ((state - self.obs_mean) / self.obs_std).clamp(-self.clip, self.clip)
        if self.task_embed is not None:
            x = torch.cat([x, self.task_embed(task_id.squeeze(-1).long())], -1)
        return self.net(x)


@renamed_kwarg("horizon", "chunk_size")
def make_mlp_actor_critic(
    obs_mean: torch.Tensor,
    obs_std: torch.Tensor,
    *,
    chunk_size: int = 4,
    action_dim: int = 4,
    hidden: Sequence[int] = (256, 256),
    num_tasks: int = 10,
    task_embed_dim: int = 16,
    separate_critic: bool = True,
    log_std_init: float = -1.0,
):
    """The CPU default actor (ReLU MLP) and critic (Tanh MLP, its own trunk by default).

    Returns ``(actor, critic)`` as :func:`~torchrl_chunk.modules.make_chunk_actor_critic`
    does, with chunks of ``chunk_size`` (``h``; ``horizon=`` is its deprecated old name).
    ``separate_critic=False`` shares the actor's trunk (the paper's Fig. 1(a)).
    """

    def encoder(activation):
        return TensorDictModule(
            StateEncoder(
                obs_mean, obs_std, hidden=hidden, num_tasks=num_tasks,
                task_embed_dim=task_embed_dim, activation=activation,
            ),
            in_keys=[STATE_KEY, TASK_ID_KEY],
            out_keys=[EMBEDDING_KEY],
        )

    backbone = encoder(nn.ReLU)
    critic_backbone = encoder(nn.Tanh) if separate_critic else None
    embed_dim = hidden[-1] if hidden else obs_mean.shape[0] + task_embed_dim
    return make_chunk_actor_critic(
        backbone, embed_dim, chunk_size, action_dim,
        critic_backbone=critic_backbone, log_std_init=log_std_init,
    )


__all__ = ["StateEncoder", "make_mlp_actor_critic", "observation_stats"]
