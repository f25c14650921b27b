"""TorchRL's continuous VLAs (TinyVLA) as chunk-Gaussian actors with a shared-trunk critic."""

from __future__ import annotations

import pytest
import torch
from tensordict import NonTensorStack, TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules.vla import TinyVLA

from torchrl_chunk.keys import SAMPLE_LOG_PROB_KEY
from torchrl_chunk.modules import make_vla_actor_critic
from torchrl_chunk.modules.vla import VLA_LOC_KEY, vla_chunk_scale
from torchrl_chunk.objectives import ChunkClipPPOLoss, SelfBCLoss

H, A, S, PX = 4, 4, 39, 16
IMAGE, STATE, TASK = ("observation", "image"), ("observation", "state"), ("observation", "task_id")
PROMPTS = ["reach the goal", "push the puck"]


def obs(*batch, seed=0, task=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDict(
        {
            IMAGE: torch.randint(0, 256, (*batch, PX, PX, 3), dtype=torch.uint8, generator=g),
            STATE: torch.randn(*batch, S, generator=g),
            TASK: torch.full((*batch, 1), task, dtype=torch.long),
        },
        batch_size=list(batch),
    )


def build(chunk_size=H, **kw):
    torch.manual_seed(0)
    vla = TinyVLA(action_dim=A, chunk_size=H, hidden_dim=32, text_dim=8)
    kw = {"instructions": PROMPTS, **kw}
    actor, critic = make_vla_actor_critic(vla, chunk_size=chunk_size, action_dim=A, example=obs(2), **kw)
    return vla, actor, critic


def rollout(actor, B=3, T=4):
    td = obs(B, T, seed=1)
    nxt = obs(B, T, seed=2)
    for key in nxt.keys(True, True):
        td.set(("next", *key), nxt[key])
    td.set(("next", "reward"), torch.rand(B, T, 1))
    td.set(("next", "done"), torch.zeros(B, T, 1, dtype=torch.bool))
    td.set(("next", "terminated"), torch.zeros(B, T, 1, dtype=torch.bool))
    td.set(("next", "steps_executed"), torch.full((B, T, 1), H))
    with torch.no_grad():
        actor(td)
    return td


def demos(n=8):
    td = obs(n, seed=3)
    td.set(("vla_action", "chunk"), torch.rand(n, H, A) * 2 - 1)
    td.set("action_is_pad", torch.zeros(n, H, dtype=torch.bool))
    return td


def trunk_calls(vla):
    calls = []
    vla.trunk.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_log_prob_is_one_joint_scalar_per_chunk_around_the_vlas_own_chunk():
    vla, actor, critic = build()
    td = obs(3, 5)
    with torch.no_grad():
        actor(td)
        critic(td)
    assert td["action"].shape == (3, 5, H, A) and td[SAMPLE_LOG_PROB_KEY].shape == (3, 5)
    assert td["state_value"].shape == (3, 5, 1)
    dist = actor.get_dist(td)
    expected = torch.distributions.Normal(td["loc"], td["scale"]).log_prob(td["action"]).sum((-2, -1))
    torch.testing.assert_close(dist.log_prob(td["action"]), expected)
    # the mean is TinyVLA's own continuous output on the mapped inputs (HWC -> CHW, task id -> prompt)
    flat = td.reshape(-1)
    vla_in = TensorDict({IMAGE: flat[IMAGE].permute(0, 3, 1, 2), STATE: flat[STATE]}, [15])
    vla_in.set("language_instruction", NonTensorStack(*[PROMPTS[0]] * 15))
    with torch.no_grad():
        torch.testing.assert_close(vla(vla_in)["vla_action", "chunk"].reshape(3, 5, H, A), td["loc"])
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        torch.testing.assert_close(actor(obs(2))["action"], actor(obs(2))[VLA_LOC_KEY])
    assert vla_chunk_scale(actor).log_std.shape == (H, A)
    # unbatched observations work too
    with torch.no_grad():
        assert actor(obs())["action"].shape == (H, A)


def test_instruction_follows_the_task_id():
    _, actor, _ = build()
    with torch.no_grad():
        a, b = (actor(obs(2, task=t))["loc"] for t in (0, 1))
    assert not torch.allclose(a, b)  # same pixels and state, another prompt
    with pytest.raises(ValueError, match="task id 5 has no instruction"):
        actor(obs(2, task=5))
    _, fixed, _ = build(instructions=None)  # no table: "task <id>"
    with torch.no_grad():
        fixed(obs(2, task=7))
    _, one, _ = build(instructions="reach the goal")  # one prompt for all: no task id read
    assert TASK not in one.in_keys


def test_ppo_and_self_bc_train_the_vla():
    vla, actor, critic = build()
    ppo = ChunkClipPPOLoss(actor, critic, chunk_size=H, deactivate_vmap=True)
    assert ppo.shared_backbone
    data = rollout(actor)
    with torch.no_grad():
        ppo.value_estimator(data)
    out = ppo(data.reshape(-1))
    (out["loss_objective"] + out["loss_critic"]).backward()
    assert torch.isfinite(out["loss_objective"]) and torch.isfinite(out["loss_critic"])
    for name, p in vla.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert vla_chunk_scale(actor).log_std.grad.abs().sum() > 0
    vla.zero_grad()
    for form in ("nll", "mse"):
        bc = SelfBCLoss(actor, loss_form=form)
        out = bc(demos())
        assert torch.isfinite(out["loss_bc"])
        out["loss_bc"].backward()
        assert vla.head.weight.grad.abs().sum() > 0 and vla.trunk[0].weight.grad.abs().sum() > 0


def test_the_critic_shares_the_trunk_and_the_loss_runs_it_once():
    vla, actor, critic = build()
    shared = {id(p) for p in actor.parameters()} & {id(p) for p in critic.parameters()}
    assert shared == {id(p) for p in vla.parameters()}
    data = rollout(actor)
    grads = {}
    for shared_backbone, passes in ((True, 1), (False, 2)):
        ppo = ChunkClipPPOLoss(actor, critic, chunk_size=H, deactivate_vmap=True, shared_backbone=shared_backbone)
        with torch.no_grad():
            ppo.value_estimator(data)
        batch = data.reshape(-1)
        calls = trunk_calls(vla)
        out = ppo(batch)
        assert len(calls) == passes
        vla.zero_grad()
        out["loss_critic"].backward()  # the value loss alone reaches the trunk, not the action head
        assert vla.trunk[0].weight.grad.abs().sum() > 0 and vla.head.weight.grad is None
        grads[shared_backbone] = vla.trunk[0].weight.grad.clone()
        vla.trunk._forward_hooks.clear()
    torch.testing.assert_close(grads[True], grads[False])


def test_mismatches_are_refused():
    vla = TinyVLA(action_dim=A, chunk_size=H, hidden_dim=32)
    with pytest.raises(ValueError, match="chunk_size=5"):
        make_vla_actor_critic(vla, chunk_size=5, action_dim=A, example=obs(2))
    with pytest.raises(ValueError, match="action_dim=3"):
        make_vla_actor_critic(vla, chunk_size=H, action_dim=3, example=obs(2))
    with pytest.raises(ValueError, match="lazy"):
        make_vla_actor_critic(vla, chunk_size=H, action_dim=A)
    _, actor, critic = build()
    with pytest.raises(ValueError, match="actor built for chunks of 4"):
        ChunkClipPPOLoss(actor, critic, chunk_size=8)
    with pytest.raises(ValueError, match="continuous chunk head"):
        make_vla_actor_critic(TinyVLA(action_dim=A, chunk_size=H, action_head="tokens", vocab_size=8),
                              chunk_size=H, action_dim=A)
    with pytest.raises(ValueError, match="no submodule 'backbone'"):
        make_vla_actor_critic(TinyVLA(action_dim=A, chunk_size=H), chunk_size=H, action_dim=A,
                              feature_module="backbone")
    with pytest.raises(TypeError, match="VLAWrapperBase"):
        make_vla_actor_critic(torch.nn.Linear(2, 2), chunk_size=H, action_dim=A)


def test_state_stats_and_bf16():
    stats = (torch.randn(S), torch.rand(S) + 0.5)
    vla, actor, _ = build(state_stats=stats)
    td = obs(4)
    with torch.no_grad():
        loc = actor(td.clone())["loc"]
        vla_in = TensorDict({IMAGE: td[IMAGE].permute(0, 3, 1, 2), STATE: (td[STATE] - stats[0]) / stats[1]}, [4])
        vla_in.set("language_instruction", NonTensorStack(*[PROMPTS[0]] * 4))
        torch.testing.assert_close(vla(vla_in)["vla_action", "chunk"], loc)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = actor(td.clone())
    assert out["loc"].dtype == out["scale"].dtype == out[SAMPLE_LOG_PROB_KEY].dtype == torch.float32
