"""Mixed precision shared by the losses and the models: bf16 autocast over fp32 master weights.

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

This module knows no model and no loss: the losses (``precision=`` of ``ChunkClipPPOLoss``
and ``SelfBCLoss``: their forward and the value estimator they hold run under
:func:`loss_autocast`) and the models (:mod:`torchrl_chunk.modules.precision`:
``with_precision`` for the acting policy) both build on it.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch
from tensordict import TensorDictBase

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


def loss_autocast(precision: str, tensordict: TensorDictBase | None, module: torch.nn.Module):
    """:func:`autocast` on the device of ``tensordict`` (or of ``module``'s parameters when the
    tensordict has none): the context a loss runs its forward and value estimator in."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    device = tensordict.device if tensordict is not None else None
    if device is None:
        device = next(iter(module.parameters())).device
    return autocast(precision, device)


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


__all__ = ["PRECISIONS", "Precision", "autocast", "check_precision", "compute_dtype", "full_precision",
           "loss_autocast", "precision_dtype"]
