"""ChunkClipPPOLoss as a drop-in for TorchRL's ClipPPOLoss, and the "step" discount's key.

TorchRL's own PPO test-suite is run against the subclass by
``scripts/torchrl_tests/run_ppo_tests.py`` (see ``test_torchrl_ppo_suite.py``); the tests
here pin the same behaviour on small batches without the TorchRL sources.
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.modules import IndependentNormal, ProbabilisticActor, ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.utils import ValueEstimators

from _loss_helpers import OBS_DIM, STATE, make_actor_critic, make_rollout
from torchrl_chunk.objectives import ChunkClipPPOLoss

#: ClipPPOLoss's constructor defaults where ChunkClipPPOLoss uses the paper's.
TORCHRL_DEFAULTS = dict(clip_value=None, loss_critic_type="smooth_l1", critic_coeff=None, entropy_coeff=None)
A = 3


def per_step_actor_critic(obs_key=STATE, prefix=()):
    torch.manual_seed(0)
    actor = ProbabilisticActor(
        TensorDictModule(
            nn.Sequential(nn.Linear(OBS_DIM, 2 * A), NormalParamExtractor()),
            in_keys=[obs_key],
            out_keys=[(*prefix, "loc"), (*prefix, "scale")],
        ),
        in_keys={"loc": (*prefix, "loc"), "scale": (*prefix, "scale")},
        out_keys=[(*prefix, "action")],
        distribution_class=IndependentNormal,  # event over the action dim: one log-prob per step
        return_log_prob=True,
        log_prob_key=(*prefix, "action_log_prob"),
    )
    critic = ValueOperator(nn.Linear(OBS_DIM, 1), in_keys=[obs_key], out_keys=[(*prefix, "state_value")])
    return actor, critic


def per_step_rollout(actor, B=2, T=6, seed=0):
    td = make_rollout(actor, B=B, T=T, seed=seed, steps=torch.ones(B, T, 1, dtype=torch.long))
    td["next", "done"][:, -1] = True
    td["next", "terminated"][0, -1] = True
    return td


def perturb(module, scale=0.3):
    """Move the policy away from the one that collected the data: ratios != 1, clipping bites."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def assert_same_outputs(ours, ref):
    assert set(ours.keys(True, True)) == set(ref.keys(True, True))
    for key in ref.keys(True, True):
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-6, atol=1e-7, msg=str(key))


@pytest.mark.parametrize("chunk_size", [1, None])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"reduction": "none"},
        {"reduction": "sum"},
        {"clip_epsilon": (0.2, 0.28), "clip_value": 0.2},
        {"functional": False},
        {"normalize_advantage": True, "entropy_coeff": 0.05},
        {"separate_losses": True, "clip_value": True, "loss_critic_type": "l2"},
    ],
    ids=["defaults", "reduction-none", "reduction-sum", "asymmetric-clip", "not-functional",
         "normalized-entropy", "separate-clip-value"],
)
def test_per_step_actions_give_clip_ppo_numbers(chunk_size, options):
    actor, critic = per_step_actor_critic()
    td = per_step_rollout(actor)
    assert td["action"].shape == (2, 6, A)  # [*B, action_dim]: no chunk dim
    kwargs = {**TORCHRL_DEFAULTS, **options}
    ours = ChunkClipPPOLoss(actor, critic, chunk_size=chunk_size, **kwargs)
    ref = ClipPPOLoss(actor, critic, **kwargs)
    perturb(actor)
    out, out_ref = ours(td.clone()), ref(td.clone())  # both run GAE(0.99, 0.95) inside
    assert_same_outputs(out, out_ref)
    assert out_ref["clip_fraction"] > 0


@pytest.mark.parametrize("chunk_size", [1, None])
def test_multi_agent_batch_gives_clip_ppo_numbers(chunk_size):
    """MARL layout: root batch [B], per-agent entries under "agents" with batch [B, n]."""
    n, B = 3, 4
    obs = ("agents", "observation")
    actor, critic = per_step_actor_critic(obs_key=obs, prefix=("agents",))
    g = torch.Generator().manual_seed(1)
    td = TensorDict({"agents": TensorDict({"observation": torch.randn(B, n, OBS_DIM, generator=g)}, [B, n])}, [B])
    with torch.no_grad():
        actor(td)
        critic(td)
    td["agents", "advantage"] = torch.randn(B, n, 1, generator=g)
    td["agents", "value_target"] = torch.randn(B, n, 1, generator=g)
    keys = dict(
        action=("agents", "action"), sample_log_prob=("agents", "action_log_prob"),
        advantage=("agents", "advantage"), value_target=("agents", "value_target"),
        value=("agents", "state_value"),
    )
    ours = ChunkClipPPOLoss(actor, critic, chunk_size=chunk_size, **TORCHRL_DEFAULTS)
    ref = ClipPPOLoss(actor, critic, **TORCHRL_DEFAULTS)
    ours.set_keys(**keys)
    ref.set_keys(**keys)
    perturb(actor)
    assert_same_outputs(ours(td.clone()), ref(td.clone()))


def test_chunk_checks_stay_for_chunk_size_above_one():
    actor, critic = per_step_actor_critic()
    td = per_step_rollout(actor)
    with pytest.raises(ValueError, match=r"chunk_size=4\) expects actions shaped \[\*batch, h, action_dim\]"):
        ChunkClipPPOLoss(actor, critic, chunk_size=4)(td)


def test_value_key_set_after_construction():
    """As in ClipPPOLoss, the critic's value key may be set after the loss is built."""
    actor, _ = per_step_actor_critic()
    critic = ValueOperator(nn.Linear(OBS_DIM, 1), in_keys=[STATE], out_keys=["my_value"])
    td = per_step_rollout(actor)
    loss = ChunkClipPPOLoss(actor, critic, chunk_size=1)
    loss.set_keys(value="my_value")
    assert torch.isfinite(loss(td)["loss_critic"])


def test_value_estimator_is_restored_from_state_dict():
    actor, critic = make_actor_critic()
    saved = ChunkClipPPOLoss(actor, critic, gamma=0.5)
    saved.value_estimator  # built on first use, so part of state_dict from now on
    fresh = ChunkClipPPOLoss(actor, critic)
    fresh.load_state_dict(saved.state_dict())
    assert fresh.value_estimator.gamma.item() == 0.5


# -- discount="step": gamma ** k must survive make_value_estimator and set_keys ---------


def gae_by_hand(td, critic, steps, gamma, lmbda):
    """A_t = delta_t + gamma^{k_t} lambda (1 - done_t) A_{t+1},
    delta_t = r_t + gamma^{k_t} (1 - term_t) V(o_{t+1}) - V(o_t)."""
    with torch.no_grad():
        v = critic(td.clone())["state_value"][0, :, 0]
        v_next = critic(td["next"].clone())["state_value"][0, :, 0]
    r = td["next", "reward"][0, :, 0]
    done = td["next", "done"][0, :, 0].float()
    term = td["next", "terminated"][0, :, 0].float()
    gam = gamma ** steps[0, :, 0].float()
    adv, running = torch.zeros_like(r), 0.0
    for t in reversed(range(r.numel())):
        delta = r[t] + gam[t] * v_next[t] * (1 - term[t]) - v[t]
        running = delta + gam[t] * lmbda * (1 - done[t]) * running
        adv[t] = running
    return adv


def step_rollout(actor):
    steps = torch.tensor([4, 1, 3, 4, 2]).view(1, 5, 1)
    td = make_rollout(actor, B=1, T=5, steps=steps)
    td["next", "done"][0, 4] = True
    td["next", "terminated"][0, 4] = True
    return td, steps


@pytest.mark.parametrize(
    "estimator, hyper, lmbda",
    [
        (ValueEstimators.GAE, {"gamma": 0.9, "lmbda": 0.8}, 0.8),
        (ValueEstimators.GAE, {"gamma": 0.9, "lmbda": 0.8, "deactivate_vmap": True}, 0.8),
        (ValueEstimators.TD0, {"gamma": 0.9}, 0.0),
    ],
    ids=["gae", "gae-no-vmap", "td0"],
)
def test_step_discount_survives_make_value_estimator(estimator, hyper, lmbda):
    actor, critic = make_actor_critic()
    td, steps = step_rollout(actor)
    loss = ChunkClipPPOLoss(actor, critic, discount="step")
    loss.make_value_estimator(estimator, **hyper)
    with torch.no_grad():
        loss.value_estimator(td)
    expected = gae_by_hand(td, critic, steps, gamma=0.9, lmbda=lmbda)
    torch.testing.assert_close(td["advantage"][0, :, 0], expected, rtol=1e-5, atol=1e-6)
    per_chunk = gae_by_hand(td, critic, torch.ones_like(steps), gamma=0.9, lmbda=lmbda)
    assert not torch.allclose(expected, per_chunk)  # the data tells the two discounts apart


def test_steps_key_is_a_loss_key():
    actor, critic = make_actor_critic()
    td, steps = step_rollout(actor)
    td["chunk_len"] = td["next"].pop("steps_executed")
    loss = ChunkClipPPOLoss(actor, critic, discount="step")
    assert ("next", "steps_executed") in loss.in_keys
    chunk_keys = ChunkClipPPOLoss(actor, critic, discount="chunk").in_keys
    assert loss.in_keys == [*chunk_keys, ("next", "steps_executed")]  # TorchRL's order, key added once
    loss.set_keys(steps_to_next_obs="chunk_len")
    assert "chunk_len" in loss.in_keys
    loss.make_value_estimator(ValueEstimators.GAE, gamma=0.99, lmbda=0.95)
    with torch.no_grad():
        loss.value_estimator(td)
    expected = gae_by_hand(td, critic, steps, gamma=0.99, lmbda=0.95)
    torch.testing.assert_close(td["advantage"][0, :, 0], expected, rtol=1e-5, atol=1e-6)


def test_chunk_discount_ignores_the_steps_key():
    actor, critic = make_actor_critic()
    td, steps = step_rollout(actor)
    loss = ChunkClipPPOLoss(actor, critic, discount="chunk")
    loss.make_value_estimator(ValueEstimators.GAE, gamma=0.9, lmbda=0.8)
    with torch.no_grad():
        loss.value_estimator(td)
    expected = gae_by_hand(td, critic, torch.ones_like(steps), gamma=0.9, lmbda=0.8)
    torch.testing.assert_close(td["advantage"][0, :, 0], expected, rtol=1e-5, atol=1e-6)
