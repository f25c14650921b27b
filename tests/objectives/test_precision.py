"""bf16 losses: finite, close to fp32, fp32 parameters, fp32 log-probs, ratios and values."""

from __future__ import annotations

import pytest
import torch

from objectives._models import (
    MODELS,
    demo_chunks,
    loss_and_grads,
    make_model,
    observations,
    params_of,
    ppo_batch,
)
from torchrl_chunk.modules.precision import with_precision
from torchrl_chunk.precision import autocast, loss_autocast
from torchrl_chunk.objectives import ChunkClipPPOLoss, PPOBCLoss, SelfBCLoss
from torchrl_chunk.schedules import Constant


def ppo_bc(actor, critic, precision):
    ppo = ChunkClipPPOLoss(actor, critic, chunk_size=4, precision=precision)
    return PPOBCLoss(ppo, SelfBCLoss(actor, loss_form="nll", precision=precision), Constant(1.0))


@pytest.mark.parametrize("kind", MODELS)
def test_bf16_is_finite_and_close_to_fp32(kind):
    actor, critic = make_model(kind)
    td, demo = ppo_batch(actor, critic, kind), demo_chunks(kind)
    params = params_of(actor, critic)
    out32, g32 = loss_and_grads(ppo_bc(actor, critic, "fp32"), params, td, demo)
    out16, g16 = loss_and_grads(ppo_bc(actor, critic, "bf16"), params, td, demo)
    for key in ("loss_objective", "loss_critic", "loss_bc", "kl_approx", "mean_ratio"):
        assert out16[key].dtype == torch.float32 and torch.isfinite(out16[key])
        torch.testing.assert_close(out16[key], out32[key], rtol=0.01, atol=0.01, msg=key)
    flat32, flat16 = torch.cat([g.flatten() for g in g32]), torch.cat([g.flatten() for g in g16])
    assert torch.isfinite(flat16).all()
    assert torch.nn.functional.cosine_similarity(flat32, flat16, dim=0) > 0.95
    assert all(g.dtype == torch.float32 for g in g16)


def test_parameters_stay_fp32_through_an_update():
    actor, critic = make_model("octo")
    td, demo = ppo_batch(actor, critic, "octo"), demo_chunks("octo")
    loss = ppo_bc(actor, critic, "bf16")
    optim = torch.optim.AdamW(loss.parameters(), lr=1e-3)
    out = loss(td.clone(), demo.clone())
    sum(v for k, v in out.items() if k.startswith("loss_")).backward()
    optim.step()
    assert all(p.dtype == torch.float32 for p in params_of(actor, critic))
    assert all(p.grad.dtype == torch.float32 for p in params_of(actor, critic) if p.grad is not None)
    assert all(v.dtype == torch.float32 for s in optim.state.values() for v in s.values() if v.is_floating_point())


def test_log_probs_and_values_are_fp32_under_bf16():
    """The ratio of Eq. 3 is exp of a difference of log-probs: both must be fp32."""
    actor, critic = make_model("octo")
    td = ppo_batch(actor, critic, "octo")
    loss = ChunkClipPPOLoss(actor, critic, precision="bf16")
    with loss_autocast("bf16", td, loss):
        log_prob, dist, _ = loss._get_cur_log_prob(td.clone())
        value = critic(td.clone())["state_value"]
    assert log_prob.dtype == dist.base_dist.loc.dtype == value.dtype == torch.float32
    # GAE targets (Eq. 5) from a bf16 critic: fp32 too
    n = 6
    td = observations("octo", n)
    td["next"] = observations("octo", n, seed=1)
    td["next", "reward"] = torch.ones(n, 1)
    td["next", "done"] = td["next", "terminated"] = torch.zeros(n, 1, dtype=torch.bool)
    loss = ChunkClipPPOLoss(actor, critic, precision="bf16", deactivate_vmap=True)
    with torch.no_grad():
        loss.value_estimator(td)  # under bf16 autocast by itself
    assert td["advantage"].dtype == td["value_target"].dtype == torch.float32
    assert torch.isfinite(td["advantage"]).all()


def test_on_policy_ratio_is_one_when_acting_and_learning_in_bf16():
    """Collected by the bf16 acting wrapper, evaluated by the bf16 loss with the same
    weights: every ratio is 1 and nothing is clipped."""
    actor, critic = make_model("pixel")
    td = ppo_batch(actor, critic, "pixel").exclude("action", "action_log_prob")
    with torch.no_grad():
        with_precision(actor, "bf16")(td)
    loss = ChunkClipPPOLoss(actor, critic, precision="bf16")
    out = loss(td)
    assert out["max_ratio"].item() == pytest.approx(1.0, abs=1e-5)
    assert out["clip_fraction"].item() == 0.0


def test_precision_arguments():
    actor, critic = make_model("mlp")
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16', got 'fp16'"):
        ChunkClipPPOLoss(actor, critic, precision="fp16")
    with pytest.raises(ValueError, match="precision must be"):
        SelfBCLoss(actor, precision="half")
    with pytest.raises(ValueError, match="must use one precision, got 'bf16' and 'fp32'"):
        PPOBCLoss(ChunkClipPPOLoss(actor, critic, precision="bf16"), SelfBCLoss(actor))
    loss = ppo_bc(actor, critic, "bf16")
    assert loss.precision == "bf16"
    loss.ppo_loss.precision = "fp32"  # settable between updates
    with pytest.raises(ValueError, match="precision must be"):
        loss.bc_loss.precision = "fp8"


def test_the_loss_runs_its_value_estimator_in_its_precision_no_loop_autocast_needed():
    """``loss.value_estimator(batch)`` with precision='bf16' runs the critic under bf16 autocast
    by itself (before, the loop had to wrap it), and its targets are the autocast ones."""
    from _loss_helpers import make_actor_critic, make_rollout

    actor, critic = make_actor_critic()
    seen = []
    critic.register_forward_pre_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    td = make_rollout(actor, B=2, T=4)
    loss = ChunkClipPPOLoss(actor, critic, chunk_size=4, precision="bf16")
    with torch.no_grad():
        loss.value_estimator(td.clone())
    assert seen and all(seen)
    want = td.clone()
    with torch.no_grad(), autocast("bf16", "cpu"):
        loss.value_estimator._estimator(want)
    got = td.clone()
    with torch.no_grad():
        loss.value_estimator(got)
    assert torch.equal(got["advantage"], want["advantage"]) and got["advantage"].dtype == torch.float32
    seen.clear()
    with torch.no_grad():
        ChunkClipPPOLoss(actor, critic, chunk_size=4).value_estimator(td.clone())
    assert seen and not any(seen)  # fp32: no autocast
