r"""A length limit for the demo buffer that follows the agent (an option; not in the paper).

The paper admits an agent's success ``x_i`` to D_demo when :math:`L(x_i) \le \ell_{limit}`,
with ``ell_limit`` the length of the longest expert demo, fixed for the whole run. Once the
policy is much faster than the experts, that limit admits anything up to demonstration
speed, and the self-BC term keeps pulling the policy back towards it. The
:class:`AdaptiveLengthLimit` rule moves the limit with the agent's own successes:

.. math::

    \ell_t = \min\Big(\ell_0,\; \max\big(\ell_{min},\;
             \big\lceil Q_q(W_t) \big\rceil\big)\Big)
    \qquad \text{once } |W_t| \ge n_{min} \text{ (else } \ell_t = \ell_0),

where

* :math:`W_t` holds the lengths (env steps) of the agent's ``window`` most recent
  *successful*, finite trajectories offered to the buffer, admitted or not;
* :math:`Q_q` is their ``quantile``-quantile (``numpy.quantile``, ``"inverted_cdf"``:
  always an observed length);
* :math:`\ell_0` is the paper's limit (the longest expert demo) and stays the ceiling;
* :math:`\ell_{min}` (``min_limit``, default 1) is a floor.

Properties the buffer relies on:

* **It follows the agent and never drops below what the current policy achieves**: by
  construction at least a fraction ``quantile`` of the recent successes satisfy
  :math:`L \le \ell_t`, so the buffer keeps admitting the faster part of what the policy
  does now. If the policy slows down, the limit rises again (never above :math:`\ell_0`).
* **Nothing changes before** :math:`n_{min}` successes: on a task the agent rarely solves
  (peg-insert-side at the start) the rule is the paper's.

After each update the buffer evicts stored trajectories longer than :math:`\ell_t`
(longest first, experts included) while it holds more than ``min_trajectories``
(the :class:`~torchrl_chunk.data.LengthFilteredReplayBuffer` decides that part).

The rule is a few lines of arithmetic on a deque; no library we build on has it.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Iterable

import numpy as np


class AdaptiveLengthLimit:
    """``ell_t`` from a running quantile of the agent's recent success lengths (see module docs).

    Args:
        quantile: ``q`` in ``(0, 1]``; 0.5: the limit is the median recent success length.
        window: how many recent successful trajectories :math:`W_t` holds.
        min_successes: :math:`n_{min}`; the paper's limit holds until this many were seen.
        min_limit: :math:`\\ell_{min}`, a floor in env steps.

    Example:
        >>> rule = AdaptiveLengthLimit(quantile=0.5, window=4, min_successes=2)
        >>> rule.observe([60, 40]); rule.limit(80)
        40
        >>> rule.observe([90, 95, 100]); rule.limit(80)  # slower again: capped by the paper's
        80
    """

    def __init__(self, quantile: float = 0.5, window: int = 100, min_successes: int = 10,
                 min_limit: int = 1) -> None:
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile must lie in (0, 1], got {quantile!r}.")
        if not (isinstance(quantile, (int, float)) and not isinstance(quantile, bool)):
            raise ValueError(f"quantile must be a number in (0, 1], got {quantile!r}.")
        if not (isinstance(window, int) and not isinstance(window, bool) and window >= 1):
            raise ValueError(f"window must be a whole number of trajectories >= 1, got {window!r}.")
        if not (isinstance(min_successes, int) and 1 <= min_successes <= window):
            raise ValueError(
                f"min_successes must be a whole number in [1, window={window}], got {min_successes!r}.")
        if not (isinstance(min_limit, int) and min_limit >= 1):
            raise ValueError(f"min_limit must be a whole number of env steps >= 1, got {min_limit!r}.")
        self.quantile = float(quantile)
        self.window = window
        self.min_successes = min_successes
        self.min_limit = min_limit
        self.recent: deque[int] = deque(maxlen=window)

    def observe(self, success_lengths: Iterable[int]) -> None:
        """Add the lengths of successful, finite agent trajectories (oldest first)."""
        self.recent.extend(int(n) for n in success_lengths)

    def limit(self, base_limit: int) -> int:
        """``ell_t`` given the paper's limit ``base_limit`` (:math:`\\ell_0`)."""
        if len(self.recent) < self.min_successes:
            return int(base_limit)
        q = float(np.quantile(np.fromiter(self.recent, float), self.quantile, method="inverted_cdf"))
        return int(min(base_limit, max(self.min_limit, math.ceil(q))))

    def state_dict(self) -> dict:
        """Settings and the window, JSON-serialisable (saved in the buffer's table)."""
        return {"quantile": self.quantile, "window": self.window, "min_successes": self.min_successes,
                "min_limit": self.min_limit, "recent": list(self.recent)}

    @classmethod
    def from_state_dict(cls, state: dict) -> AdaptiveLengthLimit:
        rule = cls(state["quantile"], state["window"], state["min_successes"], state["min_limit"])
        rule.observe(state["recent"])
        return rule

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(quantile={self.quantile:g}, window={self.window}, "
                f"min_successes={self.min_successes}, min_limit={self.min_limit}, seen={len(self.recent)})")


__all__ = ["AdaptiveLengthLimit"]
