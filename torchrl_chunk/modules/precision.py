"""Acting in mixed precision: :func:`with_precision` wraps a policy for collectors and evaluation.

The precision helpers themselves (:func:`~torchrl_chunk.precision.autocast`,
:func:`~torchrl_chunk.precision.full_precision`, ...) live in :mod:`torchrl_chunk.precision`,
shared with the losses.

The recipe's ``model.precision`` maps onto the losses' ``precision=`` argument
(``ChunkClipPPOLoss``, ``SelfBCLoss``; ``PPOBCLoss`` checks its two agree: the loss forward and
the value estimator it holds run under autocast) and onto :func:`with_precision` for the
acting policy handed to collectors and evaluation.
"""

from __future__ import annotations

from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

from torchrl_chunk.precision import Precision, autocast, check_precision


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


__all__ = ["AutocastPolicy", "with_precision"]
