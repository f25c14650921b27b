"""One backbone pass for a shared actor/critic backbone: same losses and gradients as two
passes (MLP, pixel CNN, Octo tiny; clipped value loss; PPO + BC), never a stale
embedding, detection and its overrides."""

from __future__ import annotations

import warnings

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from _loss_helpers import make_actor_critic, make_rollout
from objectives._models import MODELS, demo_chunks, loss_and_grads, make_model, params_of, ppo_batch
from torchrl_chunk.objectives import ChunkClipPPOLoss, PPOBCLoss, SelfBCLoss
from torchrl_chunk.objectives.shared_backbone import BackboneReuse
from torchrl_chunk.schedules import Constant


def backbone_of(critic) -> TensorDictModule:
    return critic.module[0]


def count_runs(critic) -> list:
    """Counts the backbone's real computations (a replay skips its inner module)."""
    runs = []
    backbone_of(critic).module.register_forward_hook(lambda *_: runs.append(1))
    return runs


def assert_same(out1, grads1, out2, grads2):
    keys = [k for k in out2.keys() if k.startswith("loss_")]
    assert keys and set(keys) <= set(out1.keys())
    for k in keys:
        torch.testing.assert_close(out1[k], out2[k], rtol=1e-5, atol=1e-6, msg=k)
    for k in ("clip_fraction", "value_clip_fraction", "explained_variance", "kl_approx"):
        if k in out2.keys():
            torch.testing.assert_close(out1[k], out2[k], rtol=1e-5, atol=1e-6, msg=k)
    for g1, g2 in zip(grads1, grads2):
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", MODELS)
def test_one_pass_equals_two_passes(kind):
    actor, critic = make_model(kind)
    td = ppo_batch(actor, critic, kind)
    params = params_of(actor, critic)
    one = ChunkClipPPOLoss(actor, critic, chunk_size=4, shared_backbone=True, entropy_coeff=0.01)
    two = ChunkClipPPOLoss(actor, critic, chunk_size=4, shared_backbone=False, entropy_coeff=0.01)
    runs = count_runs(critic)
    out1, g1 = loss_and_grads(one, params, td)
    assert len(runs) == 1  # the backbone ran once for actor and critic
    out2, g2 = loss_and_grads(two, params, td)
    assert len(runs) == 3
    # both clips bite, so Eq. 2 and Eq. 4 are compared in their clipped branches too
    assert 0 < out2["clip_fraction"] < 1 and 0 < out2["value_clip_fraction"] < 1
    assert any(g.abs().sum() > 0 for g in g1)
    assert_same(out1, g1, out2, g2)


@pytest.mark.parametrize("kind", MODELS)
def test_ppo_bc_one_pass_equals_two_passes(kind):
    """Eq. 7: the BC term runs the actor on its own demo batch in both modes."""
    actor, critic = make_model(kind)
    td, demo = ppo_batch(actor, critic, kind), demo_chunks(kind)
    params = params_of(actor, critic)
    results = []
    for shared in (True, False):
        ppo = ChunkClipPPOLoss(actor, critic, chunk_size=4, shared_backbone=shared)
        loss = PPOBCLoss(ppo, SelfBCLoss(actor, loss_form="nll"), Constant(0.7))
        results.append(loss_and_grads(loss, params, td, demo))
    (out1, g1), (out2, g2) = results
    assert "loss_bc" in out1.keys() and out1["beta"] == pytest.approx(0.7)
    assert_same(out1, g1, out2, g2)


@pytest.mark.parametrize("separate_losses", [False, True])
@pytest.mark.parametrize("delay_actor", [False, True])
def test_torchrl_options_keep_their_meaning(separate_losses, delay_actor):
    """separate_losses: the critic loss leaves the shared backbone alone in both modes
    (the replay is detached); delay_actor: the proximal policy's pass is not reused."""
    actor, critic = make_model("mlp")
    td = ppo_batch(actor, critic, "mlp")
    params = params_of(actor, critic)
    kw = {"separate_losses": separate_losses, "delay_actor": delay_actor}
    one = ChunkClipPPOLoss(actor, critic, shared_backbone=True, **kw)
    two = ChunkClipPPOLoss(actor, critic, shared_backbone=False, **kw)
    with warnings.catch_warnings():  # delay_actor without a target updater warns
        warnings.filterwarnings("ignore", "No target network updater")
        assert_same(*loss_and_grads(one, params, td), *loss_and_grads(two, params, td))
        if separate_losses:  # critic term alone: no gradient reaches the backbone
            one(td.clone())["loss_critic"].backward()
            assert all(p.grad is None for p in backbone_of(critic).parameters())


def test_stale_embedding_in_the_batch_is_never_read():
    """A rollout's "embedding" (from collection, with older weights) must not reach the
    heads: the loss equals the one on the batch without the entry."""
    actor, critic = make_model("mlp")
    td = ppo_batch(actor, critic, "mlp")
    assert "embedding" in td.keys()  # written by the acting policy
    params = params_of(actor, critic)
    loss = ChunkClipPPOLoss(actor, critic, shared_backbone=True)
    clean = loss_and_grads(loss, params, td.exclude("embedding"))
    stale = td.clone()
    stale["embedding"] = torch.full_like(td["embedding"], 3.0)
    assert_same(*loss_and_grads(loss, params, stale), *clean)
    # nor a stale entry left from a previous forward on another batch
    other = ppo_batch(actor, critic, "mlp", seed=7)
    loss(other.clone())
    assert_same(*loss_and_grads(loss, params, td), *clean)


def test_detection_and_overrides():
    shared, separate = make_actor_critic(), make_actor_critic(separate=True)
    one, two = ChunkClipPPOLoss(*shared), ChunkClipPPOLoss(*shared, shared_backbone=False)
    assert one.shared_backbone and not two.shared_backbone
    assert one.state_dict().keys() == two.state_dict().keys()  # checkpoints load either way
    assert not ChunkClipPPOLoss(*separate).shared_backbone
    with pytest.raises(ValueError, match="shared_backbone=True needs actor and critic around one"):
        ChunkClipPPOLoss(*separate, shared_backbone=True)
    with pytest.raises(ValueError, match="shared_backbone must be None, True or False"):
        ChunkClipPPOLoss(*shared, shared_backbone="yes")
    # without a critic term there is nothing to share
    assert not ChunkClipPPOLoss(shared[0], shared[1], critic_coeff=0.0).shared_backbone


def test_separate_critic_runs_both_backbones():
    actor, critic = make_actor_critic(separate=True)
    td = make_rollout(actor).reshape(-1)
    loss = ChunkClipPPOLoss(actor, critic)
    with torch.no_grad():
        loss.value_estimator(td)
    a_runs, c_runs = [], []
    actor.module[0].module[0].module.register_forward_hook(lambda *_: a_runs.append(1))
    critic.module[0].module.register_forward_hook(lambda *_: c_runs.append(1))
    loss(td)
    assert len(a_runs) == len(c_runs) == 1


def test_backbone_is_restored_after_an_error():
    actor, critic = make_actor_critic()
    td = make_rollout(actor).reshape(-1)
    td["advantage"] = torch.randn(td.shape[0], 1)  # no value_target: the critic term fails
    loss = ChunkClipPPOLoss(actor, critic)
    with pytest.raises(KeyError, match="value_target"):
        loss(td)
    backbone = backbone_of(critic)
    assert "forward" not in backbone.__dict__ and not loss._reuse._records
    out = backbone(td.clone())  # the module works as before
    assert out["embedding"].shape == (td.shape[0], 16)


def test_replay_only_on_the_same_inputs():
    module = TensorDictModule(torch.nn.Linear(3, 2), in_keys=["x"], out_keys=["y"])
    runs = []
    module.module.register_forward_hook(lambda *_: runs.append(1))
    reuse = BackboneReuse([module])
    td = TensorDict({"x": torch.randn(4, 3)}, [4])
    with reuse.recording():
        y = module(td)["y"]
    with reuse.replaying():
        assert module(td.detach())["y"] is y  # a detached view of the same batch: replay
        module(TensorDict({"x": td["x"].clone()}, [4]))  # new storage: runs
        td["x"].add_(1.0)  # modified in place: runs
        module(td)
    assert len(runs) == 3 and reuse.replays == 1
    reuse.clear()
    with reuse.replaying():
        module(td)  # nothing recorded any more
    assert len(runs) == 4 and "forward" not in module.__dict__
