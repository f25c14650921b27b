"""What a PPO practitioner reads each iteration, gathered without a host sync per minibatch.

:class:`IterationLog` keeps the loss outputs (``loss_*`` terms and detached diagnostics such
as ``kl_approx``, ``clip_fraction``, ``explained_variance``, ``beta``, ``bc_*``) and gradient
norms of every update as tensors, and reduces them once in :meth:`IterationLog.summary`:
one stack and one mean per entry, one transfer per entry. Timings of the stages (``collect``,
``update``, ``eval``) come from :meth:`IterationLog.timer`; ``summary`` turns them into
``time/<stage>`` seconds and, given the env steps of the iteration, ``env_steps_per_s``
(over all timed stages: the training throughput) and ``collect_steps_per_s`` (collection
alone).

Why hand-written: TorchRL's ``timeit`` is a process-global registry (two jobs in one process
would mix their timers) and ``Logger.log_metrics`` takes the reduced values; the reduction
over minibatches is this class.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from tensordict import TensorDictBase


class IterationLog:
    """Per-iteration training diagnostics; create one per collection."""

    def __init__(self) -> None:
        self._updates: list[dict[str, torch.Tensor]] = []
        self._seconds: dict[str, float] = {}

    @contextmanager
    def timer(self, stage: str) -> Iterator[None]:
        """Add the wall time of the ``with`` block to ``time/<stage>``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[stage] = self._seconds.get(stage, 0.0) + time.perf_counter() - start

    def add_update(
        self, out: TensorDictBase | Mapping[str, torch.Tensor], extra: Mapping[str, torch.Tensor] | None = None
    ) -> None:
        """Record one optimiser step: every scalar entry of the loss output, and ``extra`` (grad norms)."""
        row = {k: v.detach() for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}
        row.update({k: v.detach() for k, v in (extra or {}).items()})
        self._updates.append(row)

    @property
    def num_updates(self) -> int:
        return len(self._updates)

    def summary(self, env_steps: int | None = None) -> dict[str, float]:
        """Mean of every recorded entry over the updates, plus timings and throughput."""
        out: dict[str, float] = {}
        if self._updates:
            keys = list(dict.fromkeys(k for row in self._updates for k in row))
            # one reduction per key on the values' own device, then one host transfer per key
            means = [torch.stack([row[k].float().reshape(()) for row in self._updates if k in row]).mean() for k in keys]
            out.update((k, float(m.cpu())) for k, m in zip(keys, means))
        out["updates"] = float(len(self._updates))
        for stage, seconds in self._seconds.items():
            out[f"time/{stage}"] = seconds
        if env_steps is not None and sum(self._seconds.values()) > 0:
            out["env_steps_per_s"] = env_steps / sum(self._seconds.values())  # the whole iteration
            if self._seconds.get("collect"):
                out["collect_steps_per_s"] = env_steps / self._seconds["collect"]
        return out
