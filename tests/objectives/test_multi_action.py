"""TorchRL's MultiAction data is refused by the chunk losses with the way out (ChunkedEnv)."""

from __future__ import annotations

import pytest
import torch
from torchrl.envs import TransformedEnv
from torchrl.envs.transforms import MultiAction

from _loss_helpers import OBS_DIM, make_actor_critic
from envs.toy import CountingEnv
from torchrl_chunk.envs import ChunkedEnv
from torchrl_chunk.objectives import ChunkClipPPOLoss

H = 4


def rollout(env):
    policy = lambda td: td.set("action", torch.ones(*td.shape, H, 2))  # noqa: E731
    td = env.rollout(6, policy, break_when_any_done=False)
    td["observation", "state"] = torch.randn(*td.shape, OBS_DIM)  # what the helpers' actor reads
    td["next", "observation", "state"] = torch.randn(*td.shape, OBS_DIM)
    actor, critic = make_actor_critic(chunk_size=H)
    with torch.no_grad():
        actor(td)
    return td, ChunkClipPPOLoss(actor, critic, chunk_size=H)


def test_stacked_rewards_are_refused_naming_chunked_env():
    td, loss = rollout(TransformedEnv(CountingEnv([20, 20]), MultiAction(stack_rewards=True)))
    assert td["next", "reward"].shape[-2] == H  # one reward per env step
    with pytest.raises(ValueError, match="one reward per env step.*ChunkedEnv"):
        loss.value_estimator(td)


def test_last_step_rewards_are_refused_naming_chunked_env():
    td, loss = rollout(TransformedEnv(CountingEnv([20, 20]), MultiAction(stack_rewards=False)))
    with pytest.raises(KeyError, match="MultiAction keeps the last step's reward only.*ChunkedEnv"):
        loss.value_estimator(td)


def test_chunked_env_data_passes():
    td, loss = rollout(ChunkedEnv(CountingEnv([20, 20]), H))
    loss.value_estimator(td)
    assert td["advantage"].shape == (2, 6, 1)
