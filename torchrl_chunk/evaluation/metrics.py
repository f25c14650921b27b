r"""Metrics of the paper's Table I (Section III.A.3).

"Each task is evaluated over 128 episodes under a shared random seed for all models.
Reported metrics include: average success rate (Acc.) over the 128 episodes; the 10th
percentile of the trajectory-length distribution (Len.); and the mean length of the
shortest 10% of trajectories (Avg(l.)) across all episodes."

With ``N`` episodes of lengths :math:`l_i` (env steps until the first success;
**failures count as** ``max_steps``, 200) and success flags :math:`s_i`:

* ``success_rate`` (Acc.) :math:`= \frac{1}{N}\sum_i s_i`;
* ``len_p10`` (Len.) = 10th percentile of the :math:`l_i`, by default the classic
  "inverted CDF" definition (``numpy.percentile(..., method="inverted_cdf")``): the
  :math:`\lceil 0.1 N\rceil`-th shortest length (the 13th of 128). It is always an
  observed length (Table I reports whole numbers) and, whenever it is reported, a
  success length. ``percentile_method="linear"`` gives numpy's interpolating default;
* ``avg_shortest_10pct`` (Avg(l.)) = mean of the :math:`k = \lceil 0.1 N\rceil`
  shortest lengths (13 of 128);
* both length metrics are reported missing (``None``, printed "–") when fewer than
  10 % of the episodes succeed, since they would then measure the cap, not the policy;
* the "Average" row averages each metric over tasks; a length average is missing if
  any task's value is missing (as the PPO column of Table I).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["AVERAGE_ROW", "METRICS", "compute_task_metrics", "mt10_average"]

#: Name of the averaged row.
AVERAGE_ROW = "Average"
#: The metrics of Table I: ``(key in the metrics dict, column label)``.
METRICS = (("success_rate", "Acc."), ("len_p10", "Len."), ("avg_shortest_10pct", "Avg(l.)"))


def compute_task_metrics(
    lengths: Sequence[int] | np.ndarray,
    successes: Sequence[bool] | np.ndarray,
    *,
    max_steps: int = 200,
    percentile: float = 10.0,
    shortest_fraction: float = 0.1,
    min_success_rate: float = 0.1,
    percentile_method: str = "inverted_cdf",
) -> dict[str, float | int | None]:
    """Table I metrics from per-episode lengths (env steps) and success flags.

    Failed episodes count as ``max_steps`` whatever length was recorded. Returns a dict
    with ``success_rate``, ``len_p10`` (the ``percentile``-th percentile of the
    lengths, ``numpy.percentile`` with ``percentile_method``; the default
    ``"inverted_cdf"`` is the ``ceil(N * percentile / 100)``-th shortest length),
    ``avg_shortest_10pct`` (mean of the ``ceil(shortest_fraction * N)``
    shortest lengths), ``num_episodes`` and ``num_successes``. The two length metrics
    are ``None`` when fewer than ``min_success_rate * N`` episodes succeed.
    """
    lengths = np.asarray(lengths, dtype=np.float64).reshape(-1)
    successes = np.asarray(successes, dtype=bool).reshape(-1)
    n = lengths.size
    if n == 0:
        raise ValueError("compute_task_metrics needs at least one episode, got none.")
    if successes.size != n:
        raise ValueError(
            f"lengths ({n}) and successes ({successes.size}) must have the same number of episodes."
        )
    if not np.isfinite(lengths).all():
        raise ValueError(f"episode lengths must be finite, got {lengths}.")
    if (lengths[successes] < 1).any() or (lengths[successes] > max_steps).any():
        raise ValueError(
            f"successful episode lengths must lie in [1, max_steps={max_steps}], got "
            f"{lengths[successes]}."
        )
    lengths = np.where(successes, lengths, float(max_steps))
    num_succ = int(successes.sum())
    out: dict[str, float | int | None] = {
        "success_rate": num_succ / n,
        "len_p10": None,
        "avg_shortest_10pct": None,
        "num_episodes": n,
        "num_successes": num_succ,
    }
    if num_succ >= min_success_rate * n:
        out["len_p10"] = float(np.percentile(lengths, percentile, method=percentile_method))
        k = max(1, math.ceil(shortest_fraction * n))
        out["avg_shortest_10pct"] = float(np.sort(lengths)[:k].mean())
    return out


def mt10_average(per_task: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | None]:
    """Average row: mean of each metric over tasks; ``None`` if any task's value is ``None``."""
    if not per_task:
        raise ValueError("mt10_average needs at least one task.")
    out: dict[str, float | None] = {}
    for key, _ in METRICS:
        vals = [m.get(key) for m in per_task.values()]
        out[key] = None if any(v is None for v in vals) else float(np.mean(vals))
    return out
