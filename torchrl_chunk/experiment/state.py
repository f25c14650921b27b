"""A job's counters: what its checkpoint saves besides weights and the demo buffer.

:class:`JobState` is saved as the plain dict of its fields (:meth:`JobState.to_dict`, the keys
of ``state.pt`` next to ``modules`` and the RNG states), so a checkpoint written before the
state was typed (the same keys, from a dict) loads as it is, and
:func:`~torchrl_chunk.experiment.checkpoint.save_checkpoint` and its manifest see the same
file either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

#: A job's phases, in order: supervised pre-training, post-training, the final evaluation.
PHASES = ("sft", "rl", "eval")


@dataclass
class JobState:
    """Where a job is: its phase and counters, and the quick evaluations so far."""

    phase: str = "sft"  # one of PHASES; a resume continues from it
    iteration: int = 0  # collections done
    env_steps: int = 0  # env steps collected (the budget's unit)
    updates: int = 0  # optimiser steps
    history: list[dict] = field(default_factory=list)  # quick evaluations: {"env_steps": ..., **metrics}
    episodes: int = 0  # training episodes finished
    successes: int = 0  # of them, successful
    wall_time_s: float = 0.0  # seconds spent on the job, across resumes

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {self.phase!r}.")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict, in declaration order: the form a checkpoint saves."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> JobState:
        """The state in ``saved`` (a checkpoint's payload, typed or from before): its other keys
        (``modules``, RNG states) are ignored, a field it lacks keeps its default."""
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})
