r"""Admission to the demo buffer D_demo (Section II.B), as pure functions.

A finished trajectory ``x_i`` offered to D_demo is admitted when it succeeded, holds only
finite values, and

.. math:: L(x_i) \le \ell_{limit},

where ``L`` is its length in env steps (the paper's rule; ``ell_limit`` defaults to the
longest expert demonstration). :func:`admit` decides that; :func:`plan_eviction` decides
which stored trajectories make room for it. Neither touches a buffer, so both are tested
alone; :class:`~torchrl_chunk.data.LengthFilteredReplayBuffer` applies their decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

BufferMode = Literal["filtered", "static", "unrestricted"]
MODES = ("filtered", "static", "unrestricted")

#: Why a finished trajectory was offered and not stored (``"fragment"``: the end of an
#: episode whose start was never offered, so its length is unknown; see ``data/episodes.py``).
REASONS = ("static", "non_finite", "failure", "too_long", "no_room", "fragment")


def admit(
    length: int, success: bool, finite: bool, mode: BufferMode, length_limit: int
) -> str | None:
    """Return ``None`` to admit a finished trajectory, else the reason (from :data:`REASONS`).

    Args:
        length: ``L(x_i)``, the trajectory's length in env steps.
        success: whether it succeeded.
        finite: whether its actions and observations are all finite (no NaN or inf).
        mode: ``"filtered"`` (the paper), ``"static"`` (admits nothing: the "no buffer
            update" ablation) or ``"unrestricted"`` (every finite success, whatever its
            length: the "no restriction" ablation).
        length_limit: ``ell_limit`` in env steps (used by ``"filtered"`` only).

    Examples:
        >>> admit(40, True, True, "filtered", 50), admit(60, True, True, "filtered", 50)
        (None, 'too_long')
    """
    if mode == "static":
        return "static"
    if not finite:
        return "non_finite"
    if not success:
        return "failure"
    if mode == "filtered" and length > length_limit:
        return "too_long"
    return None


def plan_eviction(
    lengths: Sequence[int],
    rows: Sequence[int],
    free_rows: int,
    new_length: int,
    new_rows: int,
    max_rows: int,
    max_trajectories: int | None = None,
) -> list[int] | None:
    """Which stored trajectories to evict so that a newcomer fits; ``None`` if it cannot.

    The *longest* stored trajectories go first (among equal lengths the oldest), so the
    buffer keeps the best demonstrations rather than the most recent. A newcomer that
    would need a trajectory shorter than itself evicted is refused (``None``, reason
    ``"no_room"``), and then nothing is evicted.

    Args:
        lengths: env-step lengths of the stored trajectories, oldest first.
        rows: storage rows each of them holds.
        free_rows: rows free now.
        new_length: the newcomer's length in env steps.
        new_rows: the rows it needs.
        max_rows: the storage capacity in rows.
        max_trajectories: optional capacity in trajectories.

    Returns:
        Indices into ``lengths``, in eviction order (empty if it fits as is), or ``None``.

    Examples:
        >>> plan_eviction([5, 8, 6], [5, 8, 6], 0, new_length=4, new_rows=4, max_rows=19)
        [1]
    """
    if new_rows > max_rows:
        return None
    alive = list(range(len(lengths)))
    victims: list[int] = []
    while free_rows < new_rows or (max_trajectories is not None and len(alive) >= max_trajectories):
        victim = max(alive, key=lambda i: (lengths[i], -i))
        if lengths[victim] < new_length:
            return None
        alive.remove(victim)
        victims.append(victim)
        free_rows += rows[victim]
    return victims


@dataclass
class AdmissionReport:
    """What :meth:`LengthFilteredReplayBuffer.extend` did (one call, or the running total).

    One meaning for "rejected": a *finished* trajectory (one that ends with a done flag)
    was offered and not stored. A segment with no done flag at its end (an episode still
    running when the batch ended) is not offered at all: it is counted in ``incomplete``,
    never in ``rejected``.

    Attributes:
        admitted: finished trajectories stored.
        rejected: finished trajectories not stored, by reason: ``"static"`` (static mode
            stores nothing), ``"non_finite"`` (NaN or inf in an action or observation),
            ``"failure"`` (no success), ``"too_long"`` (length > length_limit),
            ``"no_room"`` (the buffer is full of shorter trajectories).
        incomplete: trailing segments without a done flag (not offered).
        evicted: stored trajectories removed to make room (longest first), or because
            an adaptive length limit fell below their length.
        admitted_lengths: env-step lengths of the admitted trajectories.
    """

    admitted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    incomplete: int = 0
    evicted: int = 0
    admitted_lengths: list[int] = field(default_factory=list)

    @property
    def num_rejected(self) -> int:
        """Finished trajectories offered and not stored, all reasons together."""
        return sum(self.rejected.values())

    @property
    def offered(self) -> int:
        """Finished trajectories offered: ``admitted + num_rejected``."""
        return self.admitted + self.num_rejected

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def add(self, other: AdmissionReport) -> None:
        """Accumulate ``other`` into this report (used for the running totals)."""
        self.admitted += other.admitted
        self.incomplete += other.incomplete
        self.evicted += other.evicted
        for reason, count in other.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + count
        self.admitted_lengths.extend(other.admitted_lengths)


__all__ = ["AdmissionReport", "BufferMode", "MODES", "REASONS", "admit", "plan_eviction"]
