"""The three shared-backbone models (MLP, pixel CNN, Octo tiny) and PPO / demo batches
for them, for the one-pass and mixed-precision loss tests."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from torchrl_chunk.keys import IMAGE_KEY, STATE_KEY, TASK_ID_KEY
from torchrl_chunk.modules import make_mlp_actor_critic, make_pixel_actor_critic

H, A, TASKS = 4, 4, 10
MODELS = ("mlp", "pixel", "octo")


def make_model(kind: str, *, separate: bool = False, seed: int = 0):
    """``(actor, critic)`` of a small model, sharing the backbone unless ``separate``."""
    torch.manual_seed(seed)
    if kind == "mlp":
        return make_mlp_actor_critic(
            torch.zeros(39), torch.ones(39), chunk_size=H, action_dim=A, hidden=(32, 32),
            separate_critic=separate,
        )
    if kind == "pixel":
        return make_pixel_actor_critic(
            chunk_size=H, action_dim=A, channels=8, embed_dim=32, separate_critic=separate
        )
    if kind == "octo":
        from torchrl_chunk.modules.octo import OctoConfig, make_octo_actor_critic

        return make_octo_actor_critic(
            OctoConfig.tiny(window_size=1), H, A,
            instructions=torch.randn(TASKS, 16, 768), separate_critic=separate,
        )
    raise ValueError(kind)


def observations(kind: str, n: int, seed: int = 0) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    td = TensorDict({TASK_ID_KEY: torch.randint(0, TASKS, (n, 1), generator=g)}, [n])
    if kind == "mlp":
        td[STATE_KEY] = torch.randn(n, 39, generator=g)
    else:
        td[IMAGE_KEY] = torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8)
    return td


def ppo_batch(actor, critic, kind: str, n: int = 12, seed: int = 0) -> TensorDict:
    """Collected chunk decisions with advantages, targets and old values set so that both
    the ratio clip (Eq. 2) and the value clip (Eq. 4) bite. The batch keeps the
    ``"embedding"`` the acting policy wrote, as a collector's rollout does."""
    td = observations(kind, n, seed)
    with torch.no_grad():
        actor(td)
        v = critic(td.clone())["state_value"]
    g = torch.Generator().manual_seed(seed + 1)
    td["action_log_prob"] = td["action_log_prob"] + (torch.rand(n, generator=g) - 0.5)
    td["advantage"] = torch.randn(n, 1, generator=g)
    td["value_target"] = v + torch.randn(n, 1, generator=g)
    td["state_value"] = v + (torch.rand(n, 1, generator=g) - 0.5)
    return td


def demo_chunks(kind: str, n: int = 8, seed: int = 5) -> TensorDict:
    td = observations(kind, n, seed)
    g = torch.Generator().manual_seed(seed)
    td["vla_action", "chunk"] = torch.rand(n, H, A, generator=g) * 2 - 1
    pad = torch.zeros(n, H, dtype=torch.bool)
    pad[: n // 2, 2:] = True
    td["action_is_pad"] = pad
    return td


def params_of(*modules) -> list[torch.nn.Parameter]:
    seen: dict[int, torch.nn.Parameter] = {}
    for m in modules:
        for p in m.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


def loss_and_grads(loss, params, *batches):
    """``(loss outputs, gradients)`` of the sum of the ``loss_*`` terms."""
    for p in params:
        p.grad = None
    out = loss(*[b.clone() for b in batches])
    sum(v for k, v in out.items() if k.startswith("loss_")).backward()
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    for p in params:
        p.grad = None
    return out.detach(), grads
