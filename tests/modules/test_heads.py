"""The paper's single-Linear policy/value heads and the shared actor/critic builder."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from _loss_helpers import EMBED, OBS_DIM, STATE, make_actor_critic, make_backbone
from torchrl_chunk.modules import ChunkGaussianHead, make_chunk_actor_critic
from torchrl_chunk.keys import SAMPLE_LOG_PROB_KEY
from torchrl.envs.utils import ExplorationType, set_exploration_type


def test_head_shapes_and_single_linear():
    head = ChunkGaussianHead(EMBED, chunk_size=4, action_dim=3, log_std_init=-1.0)
    loc, scale = head(torch.randn(7, EMBED))
    assert loc.shape == scale.shape == (7, 4, 3)
    assert torch.allclose(scale, torch.full_like(scale, torch.exp(torch.tensor(-1.0)).item()))
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 1 and linears[0].out_features == 12


def test_actor_writes_chunk_and_joint_log_prob():
    actor, critic = make_actor_critic()
    td = TensorDict({STATE: torch.randn(6, OBS_DIM)}, [6])
    actor(td)
    critic(td)
    assert td["action"].shape == (6, 4, 2)
    assert td[SAMPLE_LOG_PROB_KEY].shape == (6,)
    assert td["state_value"].shape == (6, 1)
    dist = actor.get_dist(td)
    expected = torch.distributions.Normal(td["loc"], td["scale"]).log_prob(td["action"]).sum((-2, -1))
    torch.testing.assert_close(dist.log_prob(td["action"]), expected)


def test_deterministic_mode_returns_the_mean():
    actor, _ = make_actor_critic()
    td = TensorDict({STATE: torch.randn(3, OBS_DIM)}, [3])
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        actor(td)
    torch.testing.assert_close(td["action"], td["loc"])


def test_shared_vs_separate_backbone():
    bb = make_backbone()
    actor, critic = make_chunk_actor_critic(bb, EMBED, 4, 2)
    shared = {id(p) for p in actor.parameters()} & {id(p) for p in critic.parameters()}
    assert shared == {id(p) for p in bb.parameters()}
    actor, critic = make_chunk_actor_critic(make_backbone(), EMBED, 4, 2, critic_backbone=make_backbone(1))
    assert not ({id(p) for p in actor.parameters()} & {id(p) for p in critic.parameters()})


def test_bad_sizes():
    with pytest.raises(ValueError, match="chunk_size"):
        ChunkGaussianHead(EMBED, chunk_size=0, action_dim=4)
    with pytest.raises(ValueError, match="log_std_init"):
        ChunkGaussianHead(EMBED, 4, 4, log_std_init=5.0)


def test_chunk_head_is_reachable_without_indexing_into_the_actor():
    from torchrl_chunk.modules import chunk_head, make_mlp_actor_critic

    actor, _ = make_mlp_actor_critic(torch.zeros(39), torch.ones(39), chunk_size=4, hidden=(8,))
    head = chunk_head(actor)
    assert head is actor.module[0].module[1].module  # the path users had to spell out
    assert head.log_std.shape == (4, 4)
    with pytest.raises(ValueError, match="one ChunkGaussianHead"):
        chunk_head(torch.nn.Linear(2, 2))
