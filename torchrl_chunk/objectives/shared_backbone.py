"""One backbone pass per PPO loss forward when the actor and the critic share it.

With the paper's layout (Fig. 1(a); :func:`~torchrl_chunk.modules.make_chunk_actor_critic`
with ``critic_backbone=None``) the actor is ``backbone -> chunk head`` and the critic
``backbone -> value head`` around the *same* backbone module. TorchRL's ``ClipPPOLoss``
runs the actor (for ``log pi``, Eq. 3) and then the critic (for ``V``, Eq. 4) on the same
batch, so the backbone -- all of Octo-small's cost -- runs twice with identical inputs
and identical parameters, and its activations are held twice for backward.

The loss gradient does not need the second pass. With ``e = f_psi(o)`` the embedding,

.. math::
    \\nabla_\\psi (L_{PPO} + c_V L_{critic})
        = \\Big(\\frac{\\partial L_{PPO}}{\\partial e} + c_V \\frac{\\partial L_{critic}}{\\partial e}\\Big)
          \\frac{\\partial e}{\\partial \\psi},

so computing ``e`` once and feeding it to both heads gives the same gradient as two
passes (up to the order of floating-point sums): the shared backbone still receives
actor + critic gradient.

:class:`BackboneReuse` implements this without changing TorchRL's loss code: while the
loss computes ``log pi`` it *records* the outputs of each shared module; while it
computes the value loss the same modules *replay* them instead of running. A replay
happens only when the module is called on the very same input tensors (same storage,
view and version counter: a detached view of the batch counts, a new or modified batch
does not); anything else runs the module as usual. The records are dropped when the
loss forward ends, so a stale ``"embedding"`` -- e.g. one written into the rollout
during collection -- is never read: the recorded one is computed by this forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from tensordict import TensorDictBase, is_tensor_collection
from tensordict.nn import TensorDictModuleBase
from torch import nn


def _module_paths(root: nn.Module) -> dict[int, str]:
    """``id(module) -> dotted name`` (first name) for every submodule of ``root``."""
    paths: dict[int, str] = {}
    for name, module in root.named_modules(remove_duplicate=False):
        paths.setdefault(id(module), name)
    return paths


def shared_modules(actor: nn.Module, critic: nn.Module | None) -> list[TensorDictModuleBase]:
    """The outermost TensorDict modules with parameters that ``actor`` and ``critic`` both
    contain (the same objects), in the critic's order; ``[]`` when there are none."""
    if critic is None:
        return []
    in_actor = _module_paths(actor)
    found: list[tuple[str, TensorDictModuleBase]] = []
    for name, module in critic.named_modules():
        if any(name == p or name.startswith(p + ".") for p, _ in found if p):
            continue  # inside a module already found
        if name == "" and module is actor:
            continue
        if (
            isinstance(module, TensorDictModuleBase)
            and id(module) in in_actor
            and next(module.parameters(), None) is not None
        ):
            found.append((name, module))
    return [m for _, m in found]


def _param_leaves(params, path: str) -> dict:
    sub = params.get(tuple(path.split("."))) if path else params
    return dict(sub.items(True, True)) if sub is not None else {}


def shared_param_mode(loss, module: nn.Module) -> str | None:
    """How a functional loss binds ``module``'s parameters for the critic, relative to the
    actor: ``"tied"`` (the same tensors: the critic loss trains them), ``"detached"``
    (their detached data, TorchRL's ``separate_losses=True``) or ``None`` (anything
    else: different or mixed tensors, so replaying the actor's outputs would be wrong)."""
    if not getattr(loss, "functional", False):
        return "tied"
    a_path = _module_paths(loss.actor_network).get(id(module))
    c_path = _module_paths(loss.critic_network).get(id(module))
    if a_path is None or c_path is None:
        return None
    actor = _param_leaves(loss.actor_network_params, a_path)
    critic = _param_leaves(loss.critic_network_params, c_path)
    if not actor or actor.keys() != critic.keys():
        return None
    modes = set()
    for key, a in actor.items():
        c = critic[key]
        if a.data_ptr() != c.data_ptr() or a.shape != c.shape or a.stride() != c.stride():
            return None
        if not (a.requires_grad or c.requires_grad):
            continue  # a buffer or a frozen weight: same values, nothing to train
        if c is a:
            modes.add("tied")
        elif a.requires_grad and not c.requires_grad:
            modes.add("detached")
        else:
            return None  # two trainable tensors over one storage: not one parameter
    if len(modes) > 1:
        return None
    return modes.pop() if modes else "tied"


def _signature(value) -> tuple | None:
    """What identifies an input tensor: its storage, view and in-place version."""
    if not isinstance(value, torch.Tensor):
        return None
    return (
        value.data_ptr(),
        value.device,
        value.dtype,
        tuple(value.shape),
        value.stride(),
        value._version,
    )


class BackboneReuse:
    """Record a module's outputs once, replay them for a later call on the same inputs.

    Args:
        modules: the shared TensorDict modules (see :func:`shared_modules`).
        detach: replay detached outputs (for a critic bound to detached parameters).

    Replayed outputs are the recorded ones: a backbone with dropout active (train mode)
    shares its dropout masks between actor and critic, where two passes would draw two.

    Use ``with reuse.recording():`` around the actor's evaluation and
    ``with reuse.replaying():`` around the critic's, then :meth:`clear`. Each context
    sets an instance-level ``forward`` on the modules and restores them on exit.
    """

    def __init__(self, modules: list[TensorDictModuleBase], *, detach: bool = False) -> None:
        self.modules = list(modules)
        self.detach = detach
        self._records: dict[int, tuple[tuple, dict, tuple]] = {}
        self.replays = 0  # replayed calls so far (a count for tests and logs)

    def clear(self) -> None:
        """Drop the records (and the autograd graph they hold)."""
        self._records.clear()

    def _inputs(self, module: TensorDictModuleBase, tensordict: TensorDictBase) -> tuple | None:
        sig = []
        for key in module.in_keys:
            s = _signature(tensordict.get(key, None))
            if s is None:
                return None  # a missing or non-tensor input: never replay
            sig.append(s)
        return tuple(sig)

    @contextlib.contextmanager
    def _patched(self, mode: str) -> Iterator[None]:
        saved = []
        try:
            for module in self.modules:
                saved.append((module, module.__dict__.get("forward")))
                module.forward = self._wrap(module, module.forward, mode)
            yield
        finally:
            for module, own in saved:
                del module.forward
                if own is not None:
                    module.forward = own

    def recording(self):
        """Calls run the modules and remember their outputs per input signature."""
        return self._patched("record")

    def replaying(self):
        """Calls on recorded inputs write the recorded outputs; others run the module."""
        return self._patched("replay")

    def _wrap(self, module, forward, mode: str):
        def reuse_forward(tensordict, *args, **kwargs):
            plain = not args and not kwargs and is_tensor_collection(tensordict)
            sig = self._inputs(module, tensordict) if plain else None
            record = self._records.get(id(module))
            if mode == "replay" and sig is not None and record is not None and record[0] == sig:
                for key, value in record[1].items():
                    tensordict.set(key, value.detach() if self.detach else value)
                self.replays += 1
                return tensordict
            out = forward(tensordict, *args, **kwargs)
            if mode == "record" and sig is not None and is_tensor_collection(out) and not (
                set(module.in_keys) & set(module.out_keys)  # overwrites its own input
            ):
                outputs = {key: out.get(key, None) for key in module.out_keys}
                if all(isinstance(v, torch.Tensor) for v in outputs.values()):
                    # the inputs are held too: a freed input's memory reused by a new tensor
                    # (same address, version 0) must not match the signature
                    inputs = tuple(tensordict.get(key) for key in module.in_keys)
                    self._records[id(module)] = (sig, outputs, inputs)
            return out

        return reuse_forward


__all__ = ["BackboneReuse", "shared_modules", "shared_param_mode"]
