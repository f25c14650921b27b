"""Mixed precision: bf16 autocast over fp32 master weights, for learning and for acting.

``precision="bf16"`` runs the backbone's matmuls, convolutions and attention in
bfloat16 under :func:`torch.autocast`, while

* every parameter (and so every gradient and the optimiser state) stays fp32: autocast
  casts copies of the weights per op, it never changes the module;
* the heads (:class:`~torchrl_chunk.modules.heads.ChunkGaussianHead`,
  :class:`~torchrl_chunk.modules.heads.ValueHead`) run in fp32 with autocast off
  (:func:`full_precision`), on the embedding cast up. So ``loc``, ``scale`` and
  ``V(o)`` are fp32, and everything built on them -- the chunk log-likelihood, the PPO
  ratio ``exp(log pi - log pi_old)`` (Eq. 3), the clipped surrogate (Eq. 2), the value
  loss and GAE targets (Eq. 4-5), the BC likelihood (Eq. 6) -- is computed in fp32. A
  bf16 ratio would be wrong by up to 2^-8 relative, the size of the clip range's
  resolution near 1.

bf16 has fp32's exponent range, so no loss scaling is needed (unlike fp16).

``"fp32"`` leaves everything as it was (no autocast region is entered).

The recipe's ``model.precision`` maps onto:

* the losses' ``precision=`` argument (``ChunkClipPPOLoss``, ``SelfBCLoss``; ``PPOBCLoss``
  checks its two agree): the whole loss forward, including a value estimator it runs,
  is under :func:`autocast`;
* :func:`with_precision` for the acting policy handed to collectors and evaluation;
* :func:`autocast` around anything else, e.g. ``loss.value_estimator(rollout)``.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def check_precision(precision: str) -> str:
    """Return ``precision`` if it is ``"fp32"`` or ``"bf16"``, else raise one line."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}.")
    return precision


def precision_dtype(precision: str) -> torch.dtype:
    """``"fp32"`` -> ``torch.float32``, ``"bf16"`` -> ``torch.bfloat16``."""
    return _DTYPES[check_precision(precision)]


def _device_type(device: torch.device | str | None) -> str:
    if device is None:
        return "cpu"
    return torch.device(device).type


def autocast(precision: str, device: torch.device | str | None = None):
    """A context running ``precision``: bf16 autocast on ``device``'s type, or nothing.

    ``"fp32"`` returns a null context (it does not switch off an enclosing autocast).
    ``"bf16"`` on a device type without autocast support raises one line.
    """
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    device_type = _device_type(device)
    if not torch.amp.is_autocast_available(device_type):
        raise ValueError(f"precision='bf16' needs autocast, which {device_type!r} lacks.")
    return torch.autocast(device_type, dtype=torch.bfloat16)


def compute_dtype(device: torch.device | str, dtype: torch.dtype) -> torch.dtype:
    """The dtype the matmuls on ``device`` run in right now: the autocast dtype inside an
    enabled autocast region, else ``dtype`` (that of the tensors involved)."""
    device_type = _device_type(device)
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return dtype


def full_precision(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in the layer's own (fp32) dtype with autocast switched off.

    The heads use this: a bf16 embedding is cast up and the head's output is fp32, so
    distributions, log-probs and values never hold bf16 (see the module docstring).
    Outside autocast with an fp32 input it is exactly ``layer(x)``.
    """
    weight = next(layer.parameters(), None)
    if weight is not None and x.dtype != weight.dtype:
        x = x.to(weight.dtype)
    device_type = x.device.type
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            return layer(x)
    return layer(x)


class AutocastPolicy(TensorDictModuleBase):
    """Runs ``policy`` under :func:`autocast` (bf16 acting); same keys, same outputs.

    A thin wrapper so that collectors and evaluation, which only call ``policy(td)``,
    act in bf16. The wrapped policy's parameters stay fp32 and shared (no copy): what
    the learner updates is what acts. The autocast device is that of the policy's
    parameters, so the wrapper follows ``policy.to(device)``.
    ``get_dist`` is forwarded under the same autocast.

    Args:
        policy: a TensorDict module (e.g. the chunk actor).
        precision: ``"bf16"`` or ``"fp32"`` (then it only forwards).
    """

    def __init__(self, policy: TensorDictModuleBase, precision: Precision = "bf16") -> None:
        super().__init__()
        self.precision = check_precision(precision)
        self.policy = policy
        self.in_keys = list(policy.in_keys)
        self.out_keys = list(policy.out_keys)

    def _autocast(self, tensordict: TensorDictBase):
        # where the policy computes: its parameters' device (the input may still be on CPU)
        param = next(self.policy.parameters(), None)
        device = param.device if param is not None else tensordict.device
        return autocast(self.precision, device)

    def forward(self, tensordict: TensorDictBase, *args, **kwargs) -> TensorDictBase:
        with self._autocast(tensordict):
            return self.policy(tensordict, *args, **kwargs)

    def get_dist(self, tensordict: TensorDictBase, *args, **kwargs):
        with self._autocast(tensordict):
            return self.policy.get_dist(tensordict, *args, **kwargs)


def with_precision(policy: TensorDictModuleBase, precision: Precision) -> TensorDictModuleBase:
    """The acting policy for ``precision``: ``policy`` itself for ``"fp32"``, an
    :class:`AutocastPolicy` around it for ``"bf16"``."""
    if check_precision(precision) == "fp32":
        return policy
    return AutocastPolicy(policy, precision)


__all__ = [
    "PRECISIONS",
    "AutocastPolicy",
    "Precision",
    "autocast",
    "check_precision",
    "compute_dtype",
    "full_precision",
    "precision_dtype",
    "with_precision",
]
