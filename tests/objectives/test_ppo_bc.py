"""PPOBCLoss: Eq. 7 composition, beta scheduling, critic scaling, NaN guard."""

from __future__ import annotations

import math

import pytest
import torch

from _loss_helpers import demo_batch, make_actor_critic, make_rollout
from torchrl_chunk.objectives import ChunkClipPPOLoss, PPOBCLoss, SelfBCLoss
from torchrl_chunk.schedules import Constant, TanhWarmup


def setup(scale_critic=False, advance="manual", warmup=100, entropy_coeff=0.0, **kwargs):
    actor, critic = make_actor_critic(separate=True)
    ppo = ChunkClipPPOLoss(actor, critic, entropy_coeff=entropy_coeff)
    bc = SelfBCLoss(actor, loss_form="mse")
    loss = PPOBCLoss(
        ppo, bc, TanhWarmup(warmup), scale_critic=scale_critic, advance_schedule=advance, **kwargs
    )
    rollout = make_rollout(actor, B=2, T=8, seed=2)
    with torch.no_grad():
        ppo.value_estimator(rollout)
    rollout = rollout.reshape(-1)
    rollout["action_log_prob"] += 0.3 * torch.randn(rollout.shape[0])  # ratios != 1
    return loss, ppo, bc, rollout, demo_batch(n=8, pad_from=[4, 4, 2, 4, 1, 4, 3, 4])


def total(out):
    return sum(v for k, v in out.items() if k.startswith("loss_"))


@pytest.mark.parametrize("scale_critic", [False, True])
def test_sum_matches_eq7(scale_critic):
    loss, ppo, bc, rollout, demo = setup(scale_critic=scale_critic)
    loss.schedule.step(50)
    beta = math.tanh(50 / 100)
    out = loss(rollout.clone(), demo.clone())
    p, b = ppo(rollout.clone()), bc(demo.clone())
    critic = (beta if scale_critic else 1.0) * p["loss_critic"]
    expected = beta * (p["loss_objective"] + p["loss_entropy"]) + critic + b["loss_bc"]
    assert total(out).item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["beta"].item() == pytest.approx(beta)
    assert out["ppo_objective"].item() == pytest.approx(p["loss_objective"].item(), rel=1e-6)
    for diag in ["clip_fraction", "kl_approx", "ESS", "bc_mse", "bc_nll"]:
        assert diag in out.keys()


def test_beta_zero_is_bc_only_for_the_policy():
    loss, ppo, bc, rollout, demo = setup()
    out = loss(rollout.clone(), demo.clone())  # t = 0
    assert out["beta"].item() == 0.0
    assert out["loss_objective"].item() == 0.0
    actor = ppo.actor_network
    loss.zero_grad(set_to_none=True)
    (out["loss_objective"] + out["loss_bc"]).backward()
    g_mix = {n: p.grad.clone() for n, p in actor.named_parameters() if p.grad is not None}
    loss.zero_grad(set_to_none=True)
    bc(demo.clone())["loss_bc"].backward()
    for n, p in actor.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(g_mix[n], p.grad)


def test_advance_per_update_and_manual():
    loss, *_ , rollout, demo = setup(advance="per_update")
    for _ in range(3):
        loss(rollout.clone(), demo.clone())
    assert int(loss.schedule.t) == 3
    loss2, *_ , rollout, demo = setup(advance="manual")
    loss2(rollout.clone(), demo.clone())
    assert int(loss2.schedule.t) == 0
    loss2.schedule.step(1234)
    assert loss2.beta == pytest.approx(math.tanh(1234 / 100))


def test_schedule_is_checkpointed_with_the_loss():
    loss, *_ = setup()
    loss.schedule.step(42)
    fresh, *_ = setup()
    fresh.load_state_dict(loss.state_dict())
    assert int(fresh.schedule.t) == 42


def test_constant_schedule_fixed_ratio():
    actor, critic = make_actor_critic()
    loss = PPOBCLoss(ChunkClipPPOLoss(actor, critic), SelfBCLoss(actor), Constant(1.0))
    assert loss.beta == 1.0


def test_nan_is_caught_before_backward():
    loss, _, _, rollout, demo = setup()
    loss.schedule.step(10)
    rollout["advantage"][3] = float("nan")
    with pytest.raises(FloatingPointError, match="loss_objective is not finite"):
        loss(rollout, demo)


def test_non_finite_demo_batch_is_named():
    loss, _, _, rollout, demo = setup()
    demo["vla_action", "chunk"][0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf under \('vla_action', 'chunk'\)"):
        loss(rollout, demo)


def test_requires_demo_and_shared_actor():
    loss, _, _, rollout, _ = setup()
    with pytest.raises(ValueError, match="demo batch"):
        loss(rollout, None)
    a1, c1 = make_actor_critic()
    a2, _ = make_actor_critic(seed=5)
    with pytest.raises(ValueError, match="same actor"):
        PPOBCLoss(ChunkClipPPOLoss(a1, c1), SelfBCLoss(a2))
    with pytest.raises(ValueError, match="advance_schedule"):
        PPOBCLoss(ChunkClipPPOLoss(a1, c1), SelfBCLoss(a1), advance_schedule="per_frame")


def test_one_optimizer_step_moves_actor_and_critic():
    loss, ppo, _, rollout, demo = setup()
    loss.schedule.step(100)
    params = list(loss.parameters())
    assert len({id(p) for p in params}) == len(params)  # no parameter listed twice
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-3)
    total(loss(rollout.clone(), demo.clone())).backward()
    opt.step()
    moved = [not torch.equal(b, p) for b, p in zip(before, params)]
    assert all(moved)


def test_beta_scales_the_entropy_term():
    """Eq. 7 weighs the whole policy objective, entropy bonus included, by beta_t."""
    loss, ppo, _, rollout, demo = setup(entropy_coeff=0.05)
    loss.schedule.step(30)
    beta = math.tanh(30 / 100)
    out = loss(rollout.clone(), demo.clone())
    unscaled = ppo(rollout.clone())["loss_entropy"]
    assert unscaled.abs().item() > 1e-3  # a term that can tell scaled from unscaled
    assert out["loss_entropy"].item() == pytest.approx(beta * unscaled.item(), rel=1e-6)
    assert out["ppo_entropy"].item() == pytest.approx(unscaled.item(), rel=1e-6)


class _FixedBuffer:
    """A stand-in demo buffer: always the same batch, records the batch sizes asked for."""

    def __init__(self, batch):
        self.batch, self.asked = batch, []

    def sample(self, batch_size=None):
        self.asked.append(batch_size)
        return self.batch.clone()


@pytest.mark.parametrize("batch_size", [None, 8])
def test_forward_tensordict_form_samples_the_demo_buffer(batch_size):
    loss, _, _, rollout, demo = setup(entropy_coeff=0.01)
    loss.schedule.step(50)
    two_args = loss(rollout.clone(), demo.clone())
    buffer = _FixedBuffer(demo)
    loss.demo_buffer, loss.demo_batch_size = buffer, batch_size
    one_arg = loss(rollout.clone())
    assert buffer.asked == [batch_size]
    assert set(one_arg.keys()) == set(two_args.keys())
    for key in two_args.keys():
        assert torch.equal(one_arg[key], two_args[key]), key
    # an explicit demo batch still wins over the buffer
    loss(rollout.clone(), demo.clone())
    assert buffer.asked == [batch_size]


def test_forward_tensordict_form_with_a_torchrl_replay_buffer():
    from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(64))
    rb.extend(demo_batch(n=32, seed=3, pad_from=[4, 2, 3, 1] * 8))
    loss, _, _, rollout, _ = setup(demo_buffer=rb, demo_batch_size=8)
    torch.manual_seed(0)
    expected = loss(rollout.clone(), rb.sample(8))
    torch.manual_seed(0)
    out = loss(rollout.clone())
    torch.testing.assert_close(out["loss_bc"], expected["loss_bc"], rtol=0, atol=0)


def test_demo_buffer_arguments_are_checked():
    actor, critic = make_actor_critic()
    with pytest.raises(TypeError, match="sample"):
        PPOBCLoss(ChunkClipPPOLoss(actor, critic), SelfBCLoss(actor), demo_buffer=[1, 2])
    with pytest.raises(ValueError, match="demo_batch_size"):
        PPOBCLoss(ChunkClipPPOLoss(actor, critic), SelfBCLoss(actor), demo_batch_size=0)


def test_logging_diagnostics_are_detached_tensors():
    loss, ppo, _, rollout, demo = setup(entropy_coeff=0.01)
    loss.schedule.step(50)
    out = loss(rollout.clone(), demo.clone())
    for key in ["kl_approx", "clip_fraction", "explained_variance", "entropy", "beta", "bc_mse", "bc_nll"]:
        assert isinstance(out[key], torch.Tensor) and not out[key].requires_grad, key
    with torch.no_grad():
        value = ppo.critic_network(rollout.clone())["state_value"]
    target = rollout["value_target"]
    ev = 1 - (target - value).var(correction=0) / target.var(correction=0)
    assert out["explained_variance"].item() == pytest.approx(ev.item(), rel=1e-5)
    assert out["beta"].item() == pytest.approx(math.tanh(0.5))
