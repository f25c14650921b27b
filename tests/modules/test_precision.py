"""bf16 autocast helpers: fp32 heads under autocast, the acting wrapper, bad input."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from _loss_helpers import EMBED, OBS_DIM, STATE, make_actor_critic
from torchrl_chunk.keys import SAMPLE_LOG_PROB_KEY
from torchrl_chunk.modules import ChunkGaussianHead, ValueHead
from torchrl_chunk.modules.precision import AutocastPolicy, with_precision
from torchrl_chunk.precision import autocast, check_precision, compute_dtype, precision_dtype


def test_heads_stay_fp32_under_autocast():
    head, value = ChunkGaussianHead(EMBED, 4, 2), ValueHead(EMBED)
    x = torch.randn(5, EMBED)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loc, scale = head(x.bfloat16())  # a bf16 embedding, as a bf16 backbone gives
        v = value(x)
        assert torch.nn.Linear(EMBED, 2)(x).dtype == torch.bfloat16  # autocast is on
    assert loc.dtype == scale.dtype == v.dtype == torch.float32
    torch.testing.assert_close(loc, head(x.bfloat16().float())[0])  # fp32 maths on the input
    assert head.mean.weight.dtype == torch.float32


def test_autocast_policy_acts_in_bf16_with_fp32_outputs():
    actor, _ = make_actor_critic()
    td = TensorDict({STATE: torch.randn(6, OBS_DIM)}, [6])
    policy = with_precision(actor, "bf16")
    assert isinstance(policy, AutocastPolicy) and policy.policy is actor
    assert policy.in_keys == actor.in_keys and policy.out_keys == actor.out_keys
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        low = policy(td.clone())
        ref = actor(td.clone())
    assert low["embedding"].dtype == torch.bfloat16  # the backbone ran in bf16
    for key in ("action", "loc", SAMPLE_LOG_PROB_KEY):
        assert low[key].dtype == torch.float32
        torch.testing.assert_close(low[key], ref[key], rtol=0.05, atol=0.05)
    assert policy.get_dist(td.clone()).mean.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in actor.parameters())
    assert with_precision(actor, "fp32") is actor


def test_helpers_and_bad_input():
    assert precision_dtype("bf16") is torch.bfloat16 and precision_dtype("fp32") is torch.float32
    assert compute_dtype("cpu", torch.float32) is torch.float32
    with autocast("bf16", "cpu"):
        assert compute_dtype("cpu", torch.float32) is torch.bfloat16
    with autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16', got 'fp16'"):
        check_precision("fp16")
    with pytest.raises(ValueError, match="precision must be"):
        AutocastPolicy(make_actor_critic()[0], "half")
    with pytest.raises(ValueError, match="lacks"):
        autocast("bf16", "meta")
