"""ChunkClipPPOLoss: Eq. 2-5 against hand computations, validation, TorchRL parity."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.modules import IndependentNormal, ProbabilisticActor
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.utils import ValueEstimators

from _loss_helpers import A, EMBED, STATE, make_actor_critic, make_backbone, make_rollout
from torchrl_chunk.modules.heads import ChunkGaussianHead
from torchrl_chunk.objectives import ChunkClipPPOLoss


def normal_chunk_log_prob(loc, scale, action):
    """Joint log-density of a factorised Gaussian over [h, A], written out by hand."""
    elem = -((action - loc) ** 2) / (2 * scale**2) - scale.log() - 0.5 * math.log(2 * math.pi)
    return elem.sum((-2, -1))


def flat_batch_with_offsets(actor, critic, n=64, seed=0):
    td = make_rollout(actor, B=1, T=n, seed=seed).reshape(-1)
    g = torch.Generator().manual_seed(seed + 100)
    # Shift the stored (old) log-prob so that some ratios leave [0.8, 1.2]: clipping bites.
    td["action_log_prob"] = td["action_log_prob"] + (torch.rand(n, generator=g) - 0.5)
    td["advantage"] = torch.randn(n, 1, generator=g)
    td["value_target"] = torch.randn(n, 1, generator=g)
    with torch.no_grad():
        v_now = critic(td.clone())["state_value"]
    td["state_value"] = v_now + (torch.rand(n, 1, generator=g) - 0.5)  # V_old
    return td


def test_surrogate_matches_eq2_eq3(actor_critic):
    actor, critic = actor_critic
    td = flat_batch_with_offsets(actor, critic)
    loss = ChunkClipPPOLoss(actor, critic, chunk_size=4)
    out = loss(td.clone())

    with torch.no_grad():
        probe = actor(td.clone().exclude("action", "action_log_prob"))
        logp = normal_chunk_log_prob(probe["loc"], probe["scale"], td["action"])
        r = (logp - td["action_log_prob"]).exp().unsqueeze(-1)  # Eq. 3, joint over the chunk
        adv = td["advantage"]
        expected = -torch.min(r * adv, r.clamp(0.8, 1.2) * adv).mean()  # Eq. 2
    assert out["loss_objective"].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    frac = ((r < 0.8) | (r > 1.2)).float().mean().item()
    assert 0 < out["clip_fraction"].item() == pytest.approx(frac, abs=1e-6)


def test_clipped_value_loss_matches_eq4(actor_critic):
    actor, critic = actor_critic
    td = flat_batch_with_offsets(actor, critic, seed=1)
    out = ChunkClipPPOLoss(actor, critic)(td.clone())
    with torch.no_grad():
        v = critic(td.clone())["state_value"]
        v_old, R = td["state_value"], td["value_target"]
        v_clip = v_old + (v - v_old).clamp(-0.2, 0.2)
        expected = 0.5 * torch.max((R - v) ** 2, (R - v_clip) ** 2).mean()
    assert out["loss_critic"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["value_clip_fraction"].item() > 0


def _value_target(discount, lmbda=0.0):
    actor, critic = make_actor_critic()
    steps = torch.tensor([4, 2, 3]).view(1, 3, 1)
    td = make_rollout(actor, B=1, T=3, steps=steps)
    td["next", "done"][0, 1:] = True  # step 1: time-limit truncation; step 2: termination
    td["next", "terminated"][0, 2] = True
    td["next", "truncated"] = td["next", "done"] & ~td["next", "terminated"]
    loss = ChunkClipPPOLoss(actor, critic, discount=discount, lmbda=lmbda)
    with torch.no_grad():
        loss.value_estimator(td)
        v_next = critic(td["next"].clone())["state_value"]
    return td, v_next, steps


@pytest.mark.parametrize("discount", ["chunk", "step"])
def test_one_step_target_matches_eq5(discount):
    """lambda = 0: R = R_t + gamma^(1 or k) V_old(o_{t+1}); termination drops the bootstrap."""
    td, v_next, steps = _value_target(discount)
    r = td["next", "reward"]
    gamma = 0.99 if discount == "chunk" else 0.99 ** steps.float()
    not_term = (~td["next", "terminated"]).float()
    expected = r + gamma * v_next * not_term
    torch.testing.assert_close(td["value_target"], expected, rtol=1e-5, atol=1e-6)
    # truncated step (index 1) bootstraps, terminated step (index 2) does not
    assert td["value_target"][0, 1] != pytest.approx(r[0, 1].item())
    assert td["value_target"][0, 2].item() == pytest.approx(r[0, 2].item())


@pytest.mark.parametrize("discount", ["chunk", "step"])
def test_gae_recursion_with_per_chunk_discount(discount):
    """GAE (lambda 0.95): A_t = delta_t + gamma_t * lambda * (1 - done_t) * A_{t+1}."""
    actor, critic = make_actor_critic()
    steps = torch.tensor([4, 1, 3, 4, 2]).view(1, 5, 1)
    td = make_rollout(actor, B=1, T=5, steps=steps)
    td["next", "done"][0, 4] = True
    td["next", "terminated"][0, 4] = True
    loss = ChunkClipPPOLoss(actor, critic, discount=discount)
    with torch.no_grad():
        loss.value_estimator(td)
        v = critic(td.clone())["state_value"][0, :, 0]
        v_next = critic(td["next"].clone())["state_value"][0, :, 0]
    r = td["next", "reward"][0, :, 0]
    done = td["next", "done"][0, :, 0].float()
    term = td["next", "terminated"][0, :, 0].float()
    k = steps[0, :, 0].float()
    gam = torch.full_like(r, 0.99) if discount == "chunk" else 0.99**k
    adv = torch.zeros(5)
    running = 0.0
    for t in reversed(range(5)):
        delta = r[t] + gam[t] * v_next[t] * (1 - term[t]) - v[t]
        running = delta + gam[t] * 0.95 * (1 - done[t]) * running
        adv[t] = running
    torch.testing.assert_close(td["advantage"][0, :, 0], adv, rtol=1e-5, atol=1e-6)


def test_paper_defaults(actor_critic):
    loss = ChunkClipPPOLoss(*actor_critic)
    assert loss.clip_epsilon.item() == pytest.approx(0.2)
    assert loss.critic_coeff.item() == pytest.approx(0.5)
    assert loss.entropy_coeff.item() == 0.0
    assert loss.loss_critic_type == "l2"
    assert bool(loss.clip_value)
    assert loss.value_estimator.gamma.item() == pytest.approx(0.99)
    assert loss.value_estimator.lmbda.item() == pytest.approx(0.95)
    assert loss.discount == "chunk"


def _per_action_actor():
    head = TensorDictModule(ChunkGaussianHead(EMBED, 4, A), in_keys=["embedding"], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        TensorDictSequential(make_backbone(), head),
        in_keys=["loc", "scale"],
        out_keys=["action"],
        distribution_class=IndependentNormal,  # default event_dim=1: per-action log-probs
        return_log_prob=True,
    )


def test_per_action_log_prob_is_refused(actor_critic):
    _, critic = actor_critic
    bad = _per_action_actor()
    td = make_rollout(bad, B=1, T=8).reshape(-1)
    assert td["action_log_prob"].shape == (8, 4)  # what TorchRL would silently accept
    loss = ChunkClipPPOLoss(bad, critic)
    with torch.no_grad():
        loss.value_estimator(td)
    with pytest.raises(ValueError, match="event_dim"):
        loss(td)


def test_current_log_prob_per_action_is_refused(actor_critic):
    """Stored log-prob looks right but the actor's distribution is per action."""
    good, critic = actor_critic
    td = make_rollout(good, B=1, T=8).reshape(-1)
    loss = ChunkClipPPOLoss(_per_action_actor(), critic)
    with torch.no_grad():
        loss.value_estimator(td)
    with pytest.raises(ValueError, match="joint log-prob per chunk"):
        loss(td)


def test_wrong_chunk_shape_raises(actor_critic):
    actor, critic = actor_critic
    td = make_rollout(actor, B=1, T=4).reshape(-1)
    with pytest.raises(ValueError, match="chunk_size=3"):
        ChunkClipPPOLoss(actor, critic, chunk_size=3)(td)
    flat = td.clone()
    flat["action"] = flat["action"][:, 0]
    with pytest.raises(ValueError, match=r"\[\*batch, h, action_dim\]"):
        ChunkClipPPOLoss(actor, critic)(flat)


def test_bad_arguments():
    actor, critic = make_actor_critic()
    with pytest.raises(ValueError, match="discount"):
        ChunkClipPPOLoss(actor, critic, discount="episode")
    with pytest.raises(ValueError, match="chunk_size"):
        ChunkClipPPOLoss(actor, critic, chunk_size=0)


def _grads(module):
    return {n: (p.grad is not None and p.grad.abs().sum().item() > 0) for n, p in module.named_parameters()}


@pytest.mark.parametrize("separate", [True, False])
def test_gradient_isolation(separate):
    actor, critic = make_actor_critic(separate=separate)
    td = flat_batch_with_offsets(actor, critic, seed=3)
    loss = ChunkClipPPOLoss(actor, critic)

    loss(td.clone())["loss_critic"].backward()
    policy_only = {n: g for n, g in _grads(actor).items() if "mean" in n or "log_std" in n}
    assert policy_only and not any(policy_only.values()), policy_only
    assert any(g for n, g in _grads(critic).items() if "value" in n)
    if separate:
        assert not any(_grads(actor).values())
    actor.zero_grad(set_to_none=True)
    critic.zero_grad(set_to_none=True)

    loss(td.clone())["loss_objective"].backward()
    value_only = {n: g for n, g in _grads(critic).items() if "value" in n}
    assert value_only and not any(value_only.values()), value_only
    assert any(_grads(actor).values())


def test_functional_on_off_same_numbers():
    a1, c1 = make_actor_critic(separate=True)
    td = flat_batch_with_offsets(a1, c1, seed=4)
    out_f = ChunkClipPPOLoss(a1, c1, functional=True)(td.clone())
    out_m = ChunkClipPPOLoss(a1, c1, functional=False)(td.clone())
    for key in ["loss_objective", "loss_critic", "loss_entropy", "clip_fraction", "kl_approx"]:
        torch.testing.assert_close(out_f[key], out_m[key])


class _Squeeze(nn.Module):
    """Runs a chunk_size-1 chunk head and drops the chunk dim: a plain per-step Gaussian."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, emb):
        loc, scale = self.head(emb)
        return loc.squeeze(-2), scale.squeeze(-2)


def test_chunk_size_one_reduces_to_torchrl_clip_ppo():
    actor, critic = make_actor_critic(chunk_size=1)
    head = actor.module[0].module[1].module  # the ChunkGaussianHead
    backbone = actor.module[0].module[0]
    flat_actor = ProbabilisticActor(
        TensorDictSequential(
            backbone, TensorDictModule(_Squeeze(head), in_keys=["embedding"], out_keys=["loc", "scale"])
        ),
        in_keys=["loc", "scale"],
        out_keys=["action"],
        distribution_class=IndependentNormal,
        return_log_prob=True,
    )
    td = make_rollout(actor, B=2, T=5, seed=7)
    td["next", "done"][:, -1] = True
    td["next", "terminated"][0, -1] = True
    td_flat = td.clone()
    td_flat["action"] = td["action"].squeeze(-2)

    ours = ChunkClipPPOLoss(actor, critic)
    ref = ClipPPOLoss(
        flat_actor, critic, clip_epsilon=0.2, clip_value=True, loss_critic_type="l2",
        critic_coeff=0.5, entropy_coeff=0.0,
    )
    ref.make_value_estimator(ValueEstimators.GAE, gamma=0.99, lmbda=0.95)
    # Make the policy differ from the one that collected the data so ratios are not all 1.
    with torch.no_grad():
        head.mean.weight.add_(0.3)
    out, out_ref = ours(td.clone()), ref(td_flat.clone())
    for key in ["loss_objective", "loss_critic", "loss_entropy", "clip_fraction", "entropy", "ESS"]:
        torch.testing.assert_close(out[key], out_ref[key], rtol=1e-5, atol=1e-6)
    assert out["loss_objective"].abs().item() > 0


def test_an_actor_of_another_chunk_size_is_refused_at_construction():
    actor, critic = make_actor_critic(chunk_size=2)
    with pytest.raises(ValueError, match="actor built for chunks of 2"):
        ChunkClipPPOLoss(actor, critic, chunk_size=4)  # before any data
    ChunkClipPPOLoss(actor, critic, chunk_size=2)
    ChunkClipPPOLoss(actor, critic, chunk_size=None)  # no chunk_size claimed: nothing to compare


def test_chunk_data_without_step_counts_raises_instead_of_discounting_per_chunk(actor_critic):
    actor, critic = actor_critic
    td = make_rollout(actor, B=2, T=5).exclude(("next", "steps_executed"))
    for discount in ("step", "chunk"):
        loss = ChunkClipPPOLoss(actor, critic, chunk_size=4, discount=discount)
        with pytest.raises(KeyError, match="no executed-step count per chunk.*ChunkedEnv"):
            with torch.no_grad():
                loss.value_estimator(td)
        with pytest.raises(KeyError, match="executed-step count"):
            loss(td.reshape(-1))  # the loss computes the advantage itself: same check
        loss.make_value_estimator(ValueEstimators.TDLambda, gamma=0.9, lmbda=0.9)  # any estimator
        with pytest.raises(KeyError, match="executed-step count"):
            loss.value_estimator(td)
    ChunkClipPPOLoss(actor, critic, chunk_size=None).value_estimator(td)  # per-step data needs none
    renamed = td.set(("next", "k"), torch.full((2, 5, 1), 4))
    loss = ChunkClipPPOLoss(actor, critic, chunk_size=4, discount="step")
    loss.set_keys(steps_to_next_obs=("next", "k"))
    loss.value_estimator(renamed)  # the count where the user's env writes it


# -- chunk_size, formerly horizon -----------------------------------------------------------
def test_the_old_horizon_keyword_still_works_with_a_warning(actor_critic):
    actor, critic = actor_critic
    with pytest.warns(DeprecationWarning, match=r"`horizon=` is deprecated, use `chunk_size=`; it will be removed"):
        loss = ChunkClipPPOLoss(actor, critic, horizon=4)
    assert loss.chunk_size == 4
    with pytest.raises(ValueError, match="chunk_size=3"), pytest.warns(DeprecationWarning):
        ChunkClipPPOLoss(actor, critic, horizon=3)(make_rollout(actor, B=1, T=4).reshape(-1))


def test_horizon_and_chunk_size_at_once_are_refused(actor_critic):
    actor, critic = actor_critic
    with pytest.raises(TypeError, match=r"ChunkClipPPOLoss\(\) got both `horizon=` \(deprecated\) and `chunk_size=`"):
        ChunkClipPPOLoss(actor, critic, horizon=4, chunk_size=4)


def test_the_horizon_attribute_warns_and_is_read_only(actor_critic):
    loss = ChunkClipPPOLoss(*actor_critic, chunk_size=4)
    with pytest.warns(DeprecationWarning, match=r"`\.horizon` is deprecated, use `\.chunk_size`"):
        assert loss.horizon == 4
    with pytest.raises(AttributeError):
        loss.horizon = 2


def test_the_new_names_raise_no_deprecation_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        actor, critic = make_actor_critic(chunk_size=4)
        loss = ChunkClipPPOLoss(actor, critic, chunk_size=4)
        td = make_rollout(actor, B=2, T=3)
        with torch.no_grad():
            loss.value_estimator(td)
        loss(td.reshape(-1))


def test_an_actor_module_of_the_user_declaring_the_old_horizon_is_still_compared():
    """A head written before the rename stores a plain ``horizon``: still checked, no warning."""

    class OldHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.horizon, self.inner = 2, ChunkGaussianHead(EMBED, 2, A)

        def forward(self, embedding):
            return self.inner(embedding)

    head = OldHead()
    del head.inner.chunk_size  # only the old attribute is declared
    actor = ProbabilisticActor(
        TensorDictSequential(make_backbone(), TensorDictModule(head, ["embedding"], ["loc", "scale"])),
        in_keys=["loc", "scale"], distribution_class=IndependentNormal, distribution_kwargs={"event_dim": 2},
        return_log_prob=True)
    with pytest.raises(ValueError, match="actor built for chunks of 2"):
        ChunkClipPPOLoss(actor, None, chunk_size=4, critic_coeff=None)
