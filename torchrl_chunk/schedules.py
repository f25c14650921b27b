"""Schedules for the PPO weight beta_t of the online objective (Section II.C, Eq. 7-8)."""

from __future__ import annotations

import math

import torch
from torch import nn


class BetaSchedule(nn.Module):
    """A scalar weight ``beta_t`` that depends on a step counter ``t``.

    The counter lives in a buffer, so it is saved and restored with ``state_dict``
    (a resumed run continues the schedule where it stopped). Who advances ``t``, and in
    which unit (env steps, decisions, updates), is the caller's choice: call
    :meth:`step` with the amount; :class:`~torchrl_chunk.objectives.PPOBCLoss` can also do
    it once per forward call.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("t", torch.zeros((), dtype=torch.int64))

    def step(self, n: int = 1) -> None:
        """Advance the counter by ``n`` (``n >= 0``)."""
        if n < 0:
            raise ValueError(f"A schedule only moves forward; got step({n}).")
        self.t += int(n)

    def value(self, t: int | float) -> float:
        raise NotImplementedError("abstract: each schedule defines value(t)")

    def forward(self, t: int | float | None = None) -> float:
        """``beta`` at step ``t`` (default: the current counter)."""
        return self.value(int(self.t) if t is None else t)


class TanhWarmup(BetaSchedule):
    r"""``beta_t = tanh(t / T_warmup)`` (Eq. 8).

    ``beta_0 = 0``: training starts from behaviour cloning alone; ``beta`` reaches 0.76 at
    ``t = T_warmup`` and 0.96 at ``2 T_warmup``. ``warmup_steps = 0`` means no warm-up
    (``beta = 1`` from the start). The paper uses ``T_warmup = 40k`` steps.

    Example:
        >>> s = TanhWarmup(40_000)
        >>> s.step(40_000); round(s(), 4)
        0.7616
    """

    def __init__(self, warmup_steps: int | float) -> None:
        super().__init__()
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, (int, float)) or not (
                0 <= warmup_steps < math.inf):
            raise ValueError(
                f"warmup_steps must be a finite number >= 0 (0 = no warm-up; inf would keep beta at 0 "
                f"forever), got {warmup_steps!r}."
            )
        self.warmup_steps = float(warmup_steps)

    def value(self, t: int | float) -> float:
        if t < 0:
            raise ValueError(f"t must be >= 0, got {t}.")
        if self.warmup_steps == 0:
            return 1.0
        return math.tanh(t / self.warmup_steps)

    def extra_repr(self) -> str:
        return f"warmup_steps={self.warmup_steps:g}, t={int(self.t)}"


class Constant(BetaSchedule):
    """``beta_t = value`` for every ``t``: the paper's fixed 1:1 ablation uses ``Constant(1.0)``."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"Constant schedule value must be finite and >= 0, got {value}.")
        self.constant = float(value)

    def value(self, t: int | float) -> float:
        return self.constant

    def extra_repr(self) -> str:
        return f"value={self.constant:g}, t={int(self.t)}"


def expert_share_decay(expert_fraction: float, floor: float) -> float:
    r"""A BC weight that decays as the demo buffer fills with the agent's own successes.

    .. math:: \lambda_t = f + (1 - f)\,\rho_t,

    where :math:`\rho_t` is the share of the buffer's rows that come from expert demos
    (1 at the start, falling as the agent's short successes are admitted and, with an
    adaptive length limit, as slow experts are evicted) and :math:`f` the floor. The self-BC
    loss is then multiplied by :math:`\lambda_t` (an option of the recipe, ``bc.decay_floor``;
    the paper keeps it at 1). Rationale: once the buffer is mostly the agent's own behaviour,
    imitating it mostly anchors the policy where it is; the decay hands the weight to PPO.

    Example:
        >>> expert_share_decay(1.0, 0.1), round(expert_share_decay(0.2, 0.1), 2)
        (1.0, 0.28)
    """
    if not 0.0 <= expert_fraction <= 1.0:
        raise ValueError(f"expert_fraction must lie in [0, 1], got {expert_fraction!r}.")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"floor must lie in [0, 1], got {floor!r}.")
    return floor + (1.0 - floor) * expert_fraction


__all__ = ["BetaSchedule", "Constant", "TanhWarmup", "expert_share_decay"]
