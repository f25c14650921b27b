"""LeRobot's ACT (lerobot 0.4.4, random init from a local config) as a chunk-Gaussian actor + critic.

Skipped when lerobot, ACT's dependencies or a torchvision that loads with this torch are
missing (CI installs ``.[test]`` only): see ``torchrl_chunk/modules/lerobot_act.py`` for the
install lines.
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

pytest.importorskip("lerobot")

from torchrl_chunk.modules import lerobot_act  # noqa: E402  (imports no lerobot itself)

try:
    lerobot_act.import_act()
except ImportError as err:
    pytest.skip(f"lerobot's ACT is not importable: {err}", allow_module_level=True)

from torchrl.modules.vla import LeRobotPolicyWrapper  # noqa: E402

from torchrl_chunk.keys import SAMPLE_LOG_PROB_KEY  # noqa: E402
from torchrl_chunk.modules.lerobot_act import (  # noqa: E402
    IMAGENET_STATS,
    ACTChunkModel,
    act_config,
    act_policy,
    make_act_actor_critic,
)
from torchrl_chunk.modules.vla import VLA_LOC_KEY, vla_chunk_scale  # noqa: E402
from torchrl_chunk.objectives import ChunkClipPPOLoss, SelfBCLoss  # noqa: E402

H, A, S, PX = 4, 4, 39, 32
IMAGE, STATE = ("observation", "image"), ("observation", "state")
SMALL = {"dim_model": 32, "n_heads": 2, "dim_feedforward": 64, "n_encoder_layers": 1, "n_decoder_layers": 1}
MODES = ["state", "image"]


def obs(*batch, seed=0, image=True):
    g = torch.Generator().manual_seed(seed)
    td = TensorDict({STATE: torch.randn(*batch, S, generator=g)}, batch_size=list(batch))
    if image:
        td.set(IMAGE, torch.randint(0, 256, (*batch, PX, PX, 3), dtype=torch.uint8, generator=g))
    return td


def build(mode="state", chunk_size=H, act_chunk_size=None, **kw):
    torch.manual_seed(0)
    config = act_config(
        state_dim=S, action_dim=A, chunk_size=act_chunk_size or chunk_size,
        image_size=PX if mode == "image" else None, **SMALL,
    )
    actor, critic = make_act_actor_critic(config, chunk_size=chunk_size, action_dim=A, example=obs(2), **kw)
    return act_policy(actor), actor, critic


def act_chunk(policy, td, mode, chunk_size=H):
    """ACT's own deterministic chunk on ``td`` (flat batch), computed without our wrapper."""
    state = td[STATE]
    if mode == "state":
        batch = {"observation.environment_state": state, "observation.state": state[:, :0]}
    else:
        mean, std = (torch.tensor(t).view(3, 1, 1) for t in IMAGENET_STATS)
        image = (td[IMAGE].permute(0, 3, 1, 2).float() / 255 - mean) / std
        batch = {"observation.state": state, "observation.images": [image]}
    return policy.model(batch)[0][:, :chunk_size]


def rollout(actor, B=3, T=2):
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


@pytest.mark.parametrize("mode", MODES)
def test_log_prob_is_one_joint_scalar_per_chunk_around_acts_own_chunk(mode):
    policy, actor, critic = build(mode)
    td = obs(3, 2)
    with torch.no_grad():
        actor(td)
        critic(td)
    assert td["action"].shape == (3, 2, H, A) and td[SAMPLE_LOG_PROB_KEY].shape == (3, 2)
    assert td["state_value"].shape == (3, 2, 1) and td["embedding"].shape == (3, 2, SMALL["dim_model"])
    expected = torch.distributions.Normal(td["loc"], td["scale"]).log_prob(td["action"]).sum((-2, -1))
    torch.testing.assert_close(actor.get_dist(td).log_prob(td["action"]), expected)
    with torch.no_grad():
        torch.testing.assert_close(act_chunk(policy, td.reshape(-1), mode).reshape(3, 2, H, A), td["loc"])
    with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
        torch.testing.assert_close(actor(obs(2))["action"], actor(obs(2))[VLA_LOC_KEY])
        assert actor(obs())["action"].shape == (H, A)  # unbatched
    assert vla_chunk_scale(actor).log_std.shape == (H, A)
    # a camera goes through TorchRL's LeRobotPolicyWrapper (the TinyVLA path), state only does not
    assert any(isinstance(m, LeRobotPolicyWrapper) for m in actor.modules()) == (mode == "image")


@pytest.mark.parametrize("mode", MODES)
def test_ppo_and_self_bc_train_act(mode):
    policy, actor, critic = build(mode)
    ppo = ChunkClipPPOLoss(actor, critic, chunk_size=H, deactivate_vmap=True)
    assert ppo.shared_backbone
    data = rollout(actor)
    with torch.no_grad():
        ppo.value_estimator(data)
    calls = []
    hook = policy.model.encoder.register_forward_hook(lambda *_: calls.append(1))
    out = ppo(data.reshape(-1))
    hook.remove()
    assert len(calls) == 1  # actor and critic share one ACT pass
    (out["loss_objective"] + out["loss_critic"]).backward()
    assert torch.isfinite(out["loss_objective"]) and torch.isfinite(out["loss_critic"])
    for name, p in policy.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert vla_chunk_scale(actor).log_std.grad.abs().sum() > 0
    policy.zero_grad()
    demos = obs(6, seed=3)
    demos.set(("vla_action", "chunk"), torch.rand(6, H, A) * 2 - 1)
    demos.set("action_is_pad", torch.zeros(6, H, dtype=torch.bool))
    out = SelfBCLoss(actor)(demos)
    out["loss_bc"].backward()
    assert torch.isfinite(out["loss_bc"])
    assert policy.model.action_head.weight.grad.abs().sum() > 0
    assert policy.model.encoder.layers[0].linear1.weight.grad.abs().sum() > 0


def test_a_longer_act_chunk_gives_its_first_h_actions():
    policy, actor, _ = build(act_chunk_size=6)
    assert policy.config.chunk_size == 6
    td = obs(3)
    with torch.no_grad():
        loc = actor(td)["loc"]
        assert loc.shape == (3, H, A)
        torch.testing.assert_close(loc, act_chunk(policy, td, "state"))


def test_stats_dropout_and_bf16():
    state_stats = (torch.randn(S), torch.rand(S) + 0.5)
    action_stats = (torch.randn(A), torch.rand(A) + 0.5)
    policy, actor, _ = build(state_stats=state_stats, action_stats=action_stats)
    td = obs(4)
    with torch.no_grad():
        loc = actor(td.clone())["loc"]
        normed = td.clone().set(STATE, (td[STATE] - state_stats[0]) / state_stats[1])
        torch.testing.assert_close(loc, act_chunk(policy, normed, "state") * action_stats[1] + action_stats[0])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = actor(td.clone())
    assert out["loc"].dtype == out["scale"].dtype == out[SAMPLE_LOG_PROB_KEY].dtype == torch.float32
    # ACT's own default dropout (0.1) is switched off unless dropout=None
    config = act_config(state_dim=S, action_dim=A, chunk_size=H, dropout=0.1, **SMALL)
    for dropout, p in ((0.0, 0.0), (None, 0.1)):
        actor, _ = make_act_actor_critic(config, chunk_size=H, action_dim=A, dropout=dropout)
        ps = {m.p for m in act_policy(actor).modules() if isinstance(m, torch.nn.Dropout)}
        assert ps == {p}


def test_mismatches_are_refused():
    config = act_config(state_dim=S, action_dim=A, chunk_size=H, **SMALL)
    with pytest.raises(ValueError, match="action_dim=3"):
        make_act_actor_critic(config, chunk_size=H, action_dim=3)
    with pytest.raises(ValueError, match="chunk_size must be 1..4"):
        make_act_actor_critic(config, chunk_size=5, action_dim=A)
    with pytest.raises(TypeError, match="ACTConfig or an ACTPolicy"):
        make_act_actor_critic(torch.nn.Linear(2, 2), chunk_size=H, action_dim=A)
    _, actor, critic = build()
    with pytest.raises(ValueError, match="actor built for chunks of 4"):
        ChunkClipPPOLoss(actor, critic, chunk_size=8)
    with pytest.raises(ValueError, match="states of size 39"):
        actor(TensorDict({STATE: torch.zeros(2, 7)}, [2]))
    assert isinstance(ACTChunkModel(act_policy(actor), 2), torch.nn.Module)


def test_the_old_horizon_keyword_and_attribute_warn():
    with pytest.warns(DeprecationWarning, match="use `chunk_size=`"):
        config = act_config(state_dim=S, action_dim=A, horizon=H, **SMALL)
    assert config.chunk_size == config.n_action_steps == H
    with pytest.warns(DeprecationWarning, match="use `chunk_size=`"):
        actor, _ = make_act_actor_critic(config, horizon=H, action_dim=A)
    with pytest.raises(TypeError, match="both"):
        make_act_actor_critic(config, horizon=H, chunk_size=H, action_dim=A)
    (model,) = [m for m in actor.modules() if isinstance(m, ACTChunkModel)]
    assert model.chunk_size == H
    with pytest.warns(DeprecationWarning, match=r"use `\.chunk_size`"):
        assert model.horizon == H
