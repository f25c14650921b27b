"""SelfBCLoss: Eq. 6 against a hand computation, pad mask, loss forms, errors."""

from __future__ import annotations

import math
import re

import pytest
import torch

from _loss_helpers import demo_batch, make_actor_critic
from torchrl_chunk.objectives import SelfBCLoss


def policy_params(actor, td):
    with torch.no_grad():
        probe = actor(td.clone())
    return probe["loc"], probe["scale"]


def test_nll_matches_eq6(actor_critic):
    actor, _ = actor_critic
    td = demo_batch()
    out = SelfBCLoss(actor)(td.clone())
    loc, scale = policy_params(actor, td)
    a = td["vla_action", "chunk"]
    elem = -((a - loc) ** 2) / (2 * scale**2) - scale.log() - 0.5 * math.log(2 * math.pi)
    expected = -elem.sum((-2, -1)).mean()  # mean over samples of -log pi(a_{t:t+h-1} | o_t)
    assert out["loss_bc"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["bc_nll"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_pad_mask_drops_padded_steps(actor_critic):
    actor, _ = actor_critic
    pad_from = [4, 3, 1, 2, 4, 1]
    td = demo_batch(pad_from=pad_from)
    loss = SelfBCLoss(actor)
    out = loss(td.clone())
    loc, scale = policy_params(actor, td)
    a = td["vla_action", "chunk"]
    elem = -((a - loc) ** 2) / (2 * scale**2) - scale.log() - 0.5 * math.log(2 * math.pi)
    expected = torch.stack([-elem[i, :k].sum() for i, k in enumerate(pad_from)]).mean()
    assert out["loss_bc"].item() == pytest.approx(expected.item(), rel=1e-5)
    # garbage (even NaN) in padded targets changes nothing
    td2 = td.clone()
    td2["vla_action", "chunk"][td2["action_is_pad"]] = float("nan")
    assert loss(td2)["loss_bc"].item() == pytest.approx(out["loss_bc"].item(), rel=1e-6)
    # and with the mask switched off, the padded steps do count
    unmasked = SelfBCLoss(actor, mask_padding=False)
    assert "action_is_pad" not in unmasked.in_keys
    assert unmasked(td.clone())["loss_bc"].item() != pytest.approx(out["loss_bc"].item(), rel=1e-3)


def test_mse_on_chunk_mean(actor_critic):
    actor, _ = actor_critic
    pad_from = [4, 2, 4, 1, 3, 4]
    td = demo_batch(pad_from=pad_from)
    out = SelfBCLoss(actor, loss_form="mse")(td.clone())
    loc, _ = policy_params(actor, td)
    err = (loc - td["vla_action", "chunk"]) ** 2
    expected = torch.stack([err[i, :k].mean() for i, k in enumerate(pad_from)]).mean()
    assert out["loss_bc"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_mse_and_detached_scale_leave_the_std_to_ppo(actor_critic):
    actor, _ = actor_critic
    log_std = [p for n, p in actor.named_parameters() if n.endswith("log_std")][0]
    for form in ["mse", "nll_detached_scale"]:
        actor.zero_grad(set_to_none=True)
        SelfBCLoss(actor, loss_form=form)(demo_batch())["loss_bc"].backward()
        assert log_std.grad is None or log_std.grad.abs().sum() == 0, form
    actor.zero_grad(set_to_none=True)
    SelfBCLoss(actor, loss_form="nll")(demo_batch())["loss_bc"].backward()
    assert log_std.grad.abs().sum() > 0


def test_detached_scale_has_nll_value(actor_critic):
    actor, _ = actor_critic
    td = demo_batch()
    nll = SelfBCLoss(actor)(td.clone())["loss_bc"]
    det = SelfBCLoss(actor, loss_form="nll_detached_scale")(td.clone())["loss_bc"]
    assert det.item() == pytest.approx(nll.item(), rel=1e-6)


def test_coeff_scales_loss(actor_critic):
    actor, _ = actor_critic
    td = demo_batch()
    base = SelfBCLoss(actor)(td.clone())["loss_bc"]
    assert SelfBCLoss(actor, coeff=0.25)(td.clone())["loss_bc"].item() == pytest.approx(0.25 * base.item(), rel=1e-6)


def test_reduction_none_gives_per_sample(actor_critic):
    actor, _ = actor_critic
    out = SelfBCLoss(actor, reduction="none")(demo_batch(n=5))
    assert out["loss_bc"].shape == (5,)


def test_functional_on_off_same_numbers(actor_critic):
    actor, _ = actor_critic
    td = demo_batch(pad_from=[1, 2, 3, 4, 4, 4])
    for form in ["nll", "mse", "nll_detached_scale"]:
        a = SelfBCLoss(actor, loss_form=form, functional=True)(td.clone())["loss_bc"]
        b = SelfBCLoss(actor, loss_form=form, functional=False)(td.clone())["loss_bc"]
        torch.testing.assert_close(a, b)


def test_set_keys_and_in_keys(actor_critic):
    actor, _ = actor_critic
    loss = SelfBCLoss(actor)
    assert ("vla_action", "chunk") in loss.in_keys and "action_is_pad" in loss.in_keys
    loss.set_keys(action="expert_chunk")
    assert "expert_chunk" in loss.in_keys
    td = demo_batch()
    td["expert_chunk"] = td.pop(("vla_action", "chunk"))
    assert torch.isfinite(loss(td)["loss_bc"])
    with pytest.raises(ValueError):
        loss.set_keys(not_a_key="x")


def test_demo_batch_without_actions_raises(actor_critic):
    actor, _ = actor_critic
    td = demo_batch().exclude(("vla_action", "chunk"))
    with pytest.raises(KeyError, match="no action chunk"):
        SelfBCLoss(actor)(td)


def test_wrong_chunk_shape_raises(actor_critic):
    actor, _ = actor_critic
    with pytest.raises(ValueError, match="chunk_size or action_dim differ"):
        SelfBCLoss(actor)(demo_batch(h=3))
    td = demo_batch()
    td["vla_action", "chunk"] = td["vla_action", "chunk"][:, 0]
    with pytest.raises(ValueError, match=r"\[\*batch, h, action_dim\]"):
        SelfBCLoss(actor)(td)


def test_bad_options(actor_critic):
    actor, _ = actor_critic
    with pytest.raises(ValueError, match="loss_form"):
        SelfBCLoss(actor, loss_form="l1")
    with pytest.raises(ValueError, match="coeff"):
        SelfBCLoss(actor, coeff=-1.0)


def test_overfits_a_small_demo_set():
    actor, _ = make_actor_critic()
    td = demo_batch(n=16, pad_from=[4] * 12 + [1, 2, 3, 2])
    loss = SelfBCLoss(actor, loss_form="mse")
    opt = torch.optim.Adam(loss.parameters(), lr=1e-2)
    first = loss(td.clone())["loss_bc"].item()
    for _ in range(150):
        opt.zero_grad()
        loss(td.clone())["loss_bc"].backward()
        opt.step()
    assert loss(td.clone())["loss_bc"].item() < 0.25 * first


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize(
    "key, index",
    [(("vla_action", "chunk"), (2, 0, 1)), (("observation", "state"), (3, 0))],
    ids=["chunk", "observation"],
)
def test_non_finite_demo_batch_raises_naming_the_key(actor_critic, key, index, bad):
    actor, _ = actor_critic
    td = demo_batch(pad_from=[4, 4, 2, 4, 4, 4])  # sample 2 is padded from step 2 on
    td[key][index] = bad
    with pytest.raises(ValueError, match=rf"NaN or inf under {re.escape(repr(key))} \(1 of") as err:
        SelfBCLoss(actor)(td)
    assert "\n" not in str(err.value) and "non_finite" in str(err.value)
    if bad != bad:  # unchecked, a NaN reaches the loss (an inf observation may not: tanh saturates)
        assert torch.isnan(SelfBCLoss(actor, check_finite=False)(td)["loss_bc"])


def test_non_finite_padded_steps_are_fine(actor_critic):
    actor, _ = actor_critic
    td = demo_batch(pad_from=[4, 4, 2, 4, 4, 4])
    td["vla_action", "chunk"][2, 3] = float("inf")  # padded: never reaches the loss
    assert torch.isfinite(SelfBCLoss(actor)(td)["loss_bc"])
