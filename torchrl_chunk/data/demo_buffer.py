"""The dynamic demonstration buffer D_demo of self behaviour cloning (Section II.B)."""

from __future__ import annotations

import numbers
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch
from tensordict import TensorDictBase
from torchrl.data import TensorDictReplayBuffer
from torchrl.envs.transforms import ActionChunkTransform

from torchrl_chunk._deprecation import renamed_attribute, renamed_kwarg
from torchrl_chunk.data.admission import MODES, REASONS, AdmissionReport, BufferMode, admit, plan_eviction
from torchrl_chunk.data import buffer_io
from torchrl_chunk.data.episodes import EpisodeStitcher
from torchrl_chunk.data.length_limit import AdaptiveLengthLimit
from torchrl_chunk.data.row_storage import BufferFootprint, GrowingTensorStorage, LiveRowSampler, footprint
from torchrl_chunk.data.trajectories import (
    as_action_bounds, chunk_rows, expert_trajectories, length_and_success, non_finite_key, out_of_bounds,
    split_trajectories)


# The key of the chunk size in state_dict() and in the dump's table file: still "horizon", the
# name readers of format <= 4 look up (see LengthFilteredReplayBuffer.state_dict).
_SAVED_CHUNK_SIZE_KEY = "horizon"


def _saved_chunk_size(state: dict) -> int:
    """The chunk size of a saved state: its old key ``"horizon"`` (every file so far) or ``"chunk_size"``."""
    if _SAVED_CHUNK_SIZE_KEY in state:
        return state[_SAVED_CHUNK_SIZE_KEY]
    return state["chunk_size"]


@dataclass
class Trajectory:
    """One stored trajectory in the buffer's table."""

    traj_id: int
    length: int  # env steps
    slots: list[int]  # storage rows
    expert: bool


class LengthFilteredReplayBuffer:
    r"""Demo buffer of whole trajectories admitted by success and length (Section II.B).

    The buffer starts with expert trajectories. During training, :meth:`extend` offers it
    finished trajectories; :func:`~torchrl_chunk.data.admission.admit` decides each one:
    ``x_i`` is admitted when it succeeded, is finite, and

    .. math:: L(x_i) \le \ell_{limit},

    where ``L`` is its length in env steps and ``ell_limit`` defaults to the length of the
    longest expert trajectory (the paper's rule). ``length_limit="adaptive"`` (or an
    :class:`~torchrl_chunk.data.AdaptiveLengthLimit`) moves ``ell_limit`` with a quantile
    of the agent's recent success lengths, never above the paper's limit, and evicts what
    no longer qualifies (the maths is in :mod:`torchrl_chunk.data.length_limit`).

    **Sampling**: uniform over rows by default; ``length_weighting`` :math:`\alpha > 0`
    gives a trajectory of length ``L`` the share :math:`\propto L^{1-\alpha}` of the draws,
    spread over its rows (1: every trajectory equally likely; 2: shares :math:`\propto 1/L`;
    :class:`~torchrl_chunk.data.row_storage.LiveRowSampler`). It can be changed at any
    time (e.g. uniform for SFT, weighted for post-training).

    **Modes**: ``"filtered"`` (the paper), ``"static"`` (never updated after seeding: the
    "no buffer update" ablation), ``"unrestricted"`` (every successful trajectory is
    admitted, whatever its length: the "no restriction" ablation).

    **Eviction** (:func:`~torchrl_chunk.data.admission.plan_eviction`): capacity is
    ``max_size`` rows (one row per BC sample) and optionally ``max_trajectories``. When a
    newcomer does not fit, the *longest* trajectories are evicted first (expert ones
    included; among equal lengths the oldest), so the buffer keeps the best demonstrations
    rather than the most recent. A newcomer longer than what it would have to evict is
    refused (``"no_room"``) and nothing is evicted.

    **Whole episodes only**: :meth:`extend` takes collector batches as they come and judges
    each episode on its length from its reset: segments cut by batch boundaries are joined
    by ``("collector", "traj_ids")`` (:mod:`torchrl_chunk.data.episodes`); a segment still
    running is held for its continuation (counted as ``incomplete``), and the end of an
    episode whose start was never offered is rejected as ``"fragment"``.

    **Rejected** means one thing: a finished trajectory offered and not stored (reasons in
    :data:`~torchrl_chunk.data.admission.REASONS`). NaN or inf values are never stored:
    such trajectories are rejected as ``"non_finite"``, and such expert demos raise.

    **Rows** (:func:`~torchrl_chunk.data.trajectories.chunk_rows`; one per env step of an
    expert demo, one per decision of a chunked trajectory): ``"observation"`` entries,
    ``("vla_action", "chunk")`` ``[h, action_dim]`` (clipped to ``action_bounds`` if given),
    ``"action_is_pad"`` ``[h]``, ``"traj_id"``, ``"is_expert"``; :meth:`sample` adds the
    storage ``"index"``. Each env step's observation is stored once (in the row of that step
    or decision; ``("next", ...)`` entries are not stored) and keeps its dtype (uint8 images).
    Storage and sampling are a TorchRL :class:`~torchrl.data.TensorDictReplayBuffer`
    (:attr:`replay_buffer`) whose sampler draws among live rows (see Sampling).

    **Footprint**: the storage grows with the rows held (within 2x, never more than
    ``max_size``) and :meth:`dumps` writes the live rows only; :attr:`row_bytes` and
    :meth:`footprint` say what ``max_size`` rows will cost in RAM and on disk.

    Args:
        expert_trajectories: the seed demos, a list of per-step trajectory TensorDicts
            (batch ``[T]``) or one flat TensorDict where ``("next", "done")`` marks ends.
            Each must succeed (``("next", "success")``), be finite, and all must fit.
        chunk_size: the chunk size ``h`` (``horizon=`` is its deprecated old name, ``.horizon``
            of the attribute).

    Keyword Args:
        length_limit: ``ell_limit`` in env steps; default (``None``): the longest expert
            trajectory; ``"adaptive"`` or an ``AdaptiveLengthLimit``: that limit moved by
            the agent's successes (``mode="filtered"`` only).
        min_trajectories: the adaptive limit evicts no trajectory while the buffer holds
            this many or fewer; default: the number of expert demos.
        length_weighting: :math:`\alpha`, see Sampling (0: uniform).
        mode: ``"filtered"``, ``"static"`` or ``"unrestricted"``.
        max_size: capacity in rows.
        max_trajectories: optional capacity in trajectories.
        storage: ``"memory"`` (rows in RAM) or ``"memmap"`` (memory-mapped files under
            ``scratch_dir``); either allocates rows as they are stored, not ``max_size`` up
            front (:class:`~torchrl_chunk.data.row_storage.GrowingTensorStorage`).
        scratch_dir: directory of the memmap storage (one buffer per directory).
        batch_size: default sample size.
        action_bounds: ``None`` (default): chunk targets are stored as the policy emitted
            them. The env's action spec (``env.action_spec``) or ``(low, high)`` (numbers
            or per-dimension sequences): expert demos outside them are refused and the
            agent's chunks are clipped to them (what an env that clips its actions, like
            MetaWorld's, executed).
        generator: a ``torch.Generator`` for reproducible sampling (saved by :meth:`dumps`).
        max_open_episodes: running episodes :meth:`extend` holds for their continuation at
            most (the least recently continued go first); not saved by :meth:`dumps`, so the
            end of an episode running at a save is refused as a fragment after :meth:`loads`.

    Example:
        >>> buf = LengthFilteredReplayBuffer(demos.trajectories, chunk_size=4, batch_size=256)
        >>> report = buf.extend(completed_rollout_trajectories)
        >>> report.admitted, report.rejected, report.incomplete
        (3, {'too_long': 2, 'failure': 5}, 1)
        >>> bc_batch = buf.sample()  # observation, ("vla_action","chunk"), "action_is_pad"
    """

    horizon = renamed_attribute("horizon", "chunk_size")

    @renamed_kwarg("horizon", "chunk_size")
    def __init__(
        self,
        expert_trajectories: Sequence[TensorDictBase] | TensorDictBase,
        *,
        chunk_size: int,
        length_limit: int | Literal["adaptive"] | AdaptiveLengthLimit | None = None,
        mode: BufferMode = "filtered",
        max_size: int = 100_000,
        max_trajectories: int | None = None,
        storage: Literal["memory", "memmap"] = "memory",
        scratch_dir: str | Path | None = None,
        batch_size: int | None = None,
        action_bounds=None,
        generator: torch.Generator | None = None,
        min_trajectories: int | None = None,
        length_weighting: float = 0.0,
        max_open_episodes: int = 1024,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be 'filtered', 'static' or 'unrestricted', got {mode!r}.")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
        if isinstance(max_size, bool) or not isinstance(max_size, numbers.Integral) or max_size < 1:
            raise ValueError(
                f"max_size must be a whole number of rows >= 1 (one per BC sample), got {max_size!r}.")
        max_size = int(max_size)  # e.g. a numpy integer
        if max_trajectories is not None and max_trajectories < 1:
            raise ValueError(f"max_trajectories must be >= 1 or None, got {max_trajectories!r}.")
        self.adaptive: AdaptiveLengthLimit | None = None
        if length_limit == "adaptive":
            length_limit = AdaptiveLengthLimit()
        if isinstance(length_limit, AdaptiveLengthLimit):
            if mode != "filtered":
                raise ValueError(f"an adaptive length_limit needs mode='filtered', got mode={mode!r}.")
            self.adaptive, length_limit = length_limit, None
        elif isinstance(length_limit, str) or (length_limit is not None and length_limit < 1):
            raise ValueError(
                f"length_limit must be a whole number of env steps >= 1, 'adaptive' or None, got {length_limit!r}.")
        if min_trajectories is not None and min_trajectories < 0:
            raise ValueError(f"min_trajectories must be >= 0 or None, got {min_trajectories!r}.")
        if storage not in ("memory", "memmap"):
            raise ValueError(f"storage must be 'memory' or 'memmap', got {storage!r}.")
        store = GrowingTensorStorage(max_size, memmap=storage == "memmap", scratch_dir=scratch_dir)
        self._sampler = LiveRowSampler(max_size, generator)
        self._sampler.set_length_weighting(length_weighting)
        self.replay_buffer = TensorDictReplayBuffer(
            storage=store, sampler=self._sampler, batch_size=batch_size)
        self.chunk_size = chunk_size
        self.mode = mode
        self.max_size = max_size
        self.max_trajectories = max_trajectories
        self.min_trajectories = min_trajectories
        self.action_bounds = as_action_bounds(action_bounds)
        self._chunker = ActionChunkTransform(chunk_size, done_key=None)
        self._trajs: list[Trajectory] = []
        self._free: list[int] = []
        self._next_slot = 0
        self._next_traj_id = 0
        self._rows = 0
        self.stats = AdmissionReport()  # running totals over every extend() call
        # episodes still running, by collector trajectory id (none held when nothing is admitted)
        self._stitcher = EpisodeStitcher(0 if mode == "static" else max_open_episodes)
        self._seed(expert_trajectories, length_limit)

    def _seed(self, data, length_limit: int | None) -> None:
        experts, lengths = expert_trajectories(data, self.chunk_size)
        for i, traj in enumerate(experts):
            bad = out_of_bounds(traj, self.action_bounds)
            if bad is not None:
                raise ValueError(
                    f"Expert demo {i} has {bad}: pass the env's action spec as action_bounds, or "
                    "action_bounds=None to store actions as they are.")
        rows = sum(t.shape[0] for t in experts)
        if rows > self.max_size or len(experts) > (self.max_trajectories or len(experts)):
            raise ValueError(
                f"The {len(experts)} expert demos need {rows} rows; the buffer holds "
                f"max_size={self.max_size} rows, max_trajectories={self.max_trajectories}. "
                "Raise them or pass fewer demos."
            )
        self.base_length_limit = int(length_limit) if length_limit is not None else max(lengths)
        self.length_limit = self.base_length_limit  # ell_t; moves only with an adaptive rule
        if self.min_trajectories is None:
            self.min_trajectories = len(experts)
        for traj, length in zip(experts, lengths):
            self._store(traj, length, expert=True)

    # -- public API -------------------------------------------------------------------
    def extend(self, trajectories: Sequence[TensorDictBase] | TensorDictBase) -> AdmissionReport:
        """Offer collected data; store the finished episodes :func:`admit` accepts and that fit.

        ``trajectories``: a collector batch ``[N, T]``, one TensorDict ``[T]``, or a list of
        them (e.g. the rows of a batch), in the order they were collected. Episodes cut by
        batch boundaries are joined across calls by ``("collector", "traj_ids")``
        (:class:`~torchrl_chunk.data.episodes.EpisodeStitcher`), so an episode is judged
        on its length from its reset, whatever ``frames_per_batch``. A segment still running
        at the end of the data is held for its continuation and counted in ``incomplete``;
        a finished segment whose start was never seen is rejected as ``"fragment"``. With an
        adaptive limit, the offered successes first update ``length_limit``, the offers are
        admitted under the new limit, then stored trajectories that exceed it are evicted.
        Returns an :class:`AdmissionReport`; the running totals are in ``self.stats``.
        """
        found = self._stitcher.stitch(trajectories)
        report = AdmissionReport(incomplete=found.incomplete)
        for _ in range(found.fragments):
            report.reject("fragment")
        return self._offer(found.finished, report)

    def add(self, trajectory: TensorDictBase) -> AdmissionReport:
        """Offer one whole trajectory ``[T]``, from its reset to its done flag.

        Unlike :meth:`extend` it needs no start marker or trajectory id: the caller vouches
        that ``trajectory`` starts at a reset (e.g. an episode recorded by hand).
        """
        report = AdmissionReport()
        whole = list(split_trajectories(trajectory))
        if len(whole) != 1 or whole[0] is None:
            raise ValueError(
                "add() takes one whole trajectory [T] whose only done flag is its last step; "
                "use extend() for collector batches.")
        return self._offer(whole, report)

    def discard_open_episodes(self) -> int:
        """Forget the running episodes :meth:`extend` holds for their continuation.

        Call it when the collector abandons its episodes (``collector.reset()``,
        ``reset_at_each_iter=True``); their ends, if offered later, are refused as fragments.
        Returns how many were dropped.
        """
        return self._stitcher.discard_open()

    def _offer(self, finished: list[TensorDictBase], report: AdmissionReport) -> AdmissionReport:
        offers = [(traj, *length_and_success(traj, self.chunk_size), non_finite_key(traj) is None)
                  for traj in finished]
        if self.adaptive is not None:  # ell_t from the recent successes, these offers included
            self.adaptive.observe(length for _, length, success, finite in offers if success and finite)
            self.length_limit = self.adaptive.limit(self.base_length_limit)
        for traj, length, success, finite in offers:
            reason = admit(length, success, finite, self.mode, self.length_limit)
            if reason is None:
                reason = self._make_room(traj.shape[0], length, report)
            if reason is None:
                self._store(traj, length, expert=False)
                report.admitted += 1
                report.admitted_lengths.append(length)
            else:
                report.reject(reason)
        if self.adaptive is not None:  # what no longer qualifies goes (newcomers all do)
            self._evict_too_long(report)
        self.stats.add(report)
        return report

    def sample(self, batch_size: int | None = None) -> TensorDictBase:
        """A batch of BC rows drawn with replacement among the live rows (uniformly, or
        weighted by trajectory length with ``length_weighting > 0``)."""
        return self.replay_buffer.sample(batch_size)

    def __len__(self) -> int:
        """Number of rows (BC samples) currently stored."""
        return self._rows

    @property
    def num_trajectories(self) -> int:
        return len(self._trajs)

    @property
    def trajectory_lengths(self) -> list[int]:
        """Env-step lengths of the stored trajectories, in admission order."""
        return [t.length for t in self._trajs]

    @property
    def num_expert_trajectories(self) -> int:
        return sum(t.expert for t in self._trajs)

    @property
    def expert_row_fraction(self) -> float:
        """Share of the stored rows that come from expert demos (1.0 at the start)."""
        return sum(len(t.slots) for t in self._trajs if t.expert) / max(1, self._rows)

    @property
    def length_weighting(self) -> float:
        """``alpha`` of the sampling weights (0: uniform over rows; see Sampling)."""
        return self._sampler.length_weighting

    @length_weighting.setter
    def length_weighting(self, alpha: float) -> None:
        self._sampler.set_length_weighting(alpha)

    def metrics(self, prefix: str = "buffer/") -> dict[str, int]:
        """Running totals to log once per iteration (every reason present, 0 if unseen)."""
        s = self.stats
        out = {"rows": len(self), "trajectories": self.num_trajectories,
               "expert_trajectories": self.num_expert_trajectories, "admitted": s.admitted,
               "rejected": s.num_rejected, "incomplete": s.incomplete, "evicted": s.evicted,
               "length_limit": self.length_limit}
        out.update({f"rejected_{why}": s.rejected.get(why, 0) for why in REASONS})
        return {prefix + k: v for k, v in out.items()}

    @property
    def row_bytes(self) -> int:
        """Bytes of one stored row (known once the expert demos seeded the buffer)."""
        return self.replay_buffer.storage.row_bytes

    @property
    def allocated_bytes(self) -> int:
        """Bytes the storage holds now (RAM, or scratch files with ``storage="memmap"``)."""
        return self.replay_buffer.storage.allocated_bytes

    def footprint(self, rows: int | None = None) -> BufferFootprint:
        """Peak RAM and disk of this buffer once it holds ``rows`` rows (default ``max_size``).

        For the recipe to print at start and to check (``check_capacity``) before training.
        """
        storage = "memory" if self.replay_buffer.storage.scratch_dir is None else "memmap"
        return footprint(self.max_size if rows is None else rows, self.row_bytes, self.max_size, storage)

    # -- persistence: state_dict (the table), dumps/loads (files; formats in data/buffer_io.py) --
    def state_dict(self) -> dict:
        """Everything but the rows, the sampler's generator and the running episodes held by
        :meth:`extend` (not saved: their ends are refused as fragments after a restore): the trajectory table, the
        length limit and its rule, the sampling weights' exponent and the running totals
        (JSON-serialisable).

        The chunk size is stored under its old key ``"horizon"``: the table file's readers
        up to format 4 (``buffer_io``, torchrl_chunk 0.1) look it up by that name, so writing
        ``"chunk_size"`` would make dumps unreadable to them; :meth:`load_state_dict` reads
        either key."""
        return {
            _SAVED_CHUNK_SIZE_KEY: self.chunk_size, "mode": self.mode, "length_limit": self.length_limit,
            "base_length_limit": self.base_length_limit,
            "adaptive": self.adaptive.state_dict() if self.adaptive is not None else None,
            "min_trajectories": self.min_trajectories, "length_weighting": self.length_weighting,
            "max_size": self.max_size, "max_trajectories": self.max_trajectories,
            "action_bounds": self.action_bounds, "trajectories": [asdict(t) for t in self._trajs],
            "free": self._free, "next_slot": self._next_slot, "next_traj_id": self._next_traj_id,
            "stats": asdict(self.stats),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned; the rows must be in the storage already."""
        saved = _saved_chunk_size(state)
        if saved != self.chunk_size or state["max_size"] != self.max_size:
            raise ValueError(
                f"Saved buffer has chunk_size={saved}, max_size={state['max_size']}; this "
                f"one has chunk_size={self.chunk_size}, max_size={self.max_size}. Build it with the same."
            )
        self.mode = state["mode"]
        self.length_limit = state["length_limit"]
        self.base_length_limit = state["base_length_limit"]
        self.adaptive = AdaptiveLengthLimit.from_state_dict(state["adaptive"]) if state["adaptive"] else None
        if state["min_trajectories"] is not None:
            self.min_trajectories = state["min_trajectories"]
        self.length_weighting = state["length_weighting"]
        self.max_trajectories = state["max_trajectories"]
        self.action_bounds = as_action_bounds(state["action_bounds"])
        self._trajs = [Trajectory(**t) for t in state["trajectories"]]
        self._free = list(state["free"])
        self._next_slot = state["next_slot"]
        self._next_traj_id = state["next_traj_id"]
        self.stats = AdmissionReport(**state["stats"])
        self._sampler.mark(slice(None), False)
        for t in self._trajs:
            self._sampler.mark(t.slots, True, t.length)
        self._rows = sum(len(t.slots) for t in self._trajs)

    def dumps(self, path: str | Path) -> None:
        """Save the live rows, the sampler's generator state and :meth:`state_dict`.

        Only live rows are written (``rows/``, ascending storage row), so a dump's size
        follows :func:`len`, not ``max_size``. :meth:`loads` puts each row back at its
        storage row, so sampling, the ``"index"`` of samples and later admissions and
        evictions continue exactly as without the round trip.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / buffer_io.TABLE_FILE).unlink(missing_ok=True)  # first: a dump cut short is no dump
        shutil.rmtree(path / buffer_io.ROWS_DIR, ignore_errors=True)
        self.replay_buffer.storage.dump_rows(path / buffer_io.ROWS_DIR, self._sampler.live)
        self._sampler.dumps(path / buffer_io.SAMPLER_DIR)
        buffer_io.write_table(path, self.state_dict())  # last: a dump without it is not one

    def loads(self, path: str | Path) -> None:
        """Restore a buffer saved with :meth:`dumps` (same ``chunk_size``, ``max_size`` and row layout).

        Reads every format so far (1-2: TorchRL's dump of all ``max_size`` rows; 1-3: a
        fixed length limit). The batch size given to the constructor is kept.
        """
        path = Path(path)
        state = buffer_io.read_table(path)
        if _saved_chunk_size(state) != self.chunk_size or state["max_size"] != self.max_size:
            self.load_state_dict(state)  # raises, naming the difference
        live = torch.tensor(sorted(s for t in state["trajectories"] for s in t["slots"]), dtype=torch.long)
        rows, src_index = buffer_io.read_rows(path, state["version"], live)
        storage = self.replay_buffer.storage
        storage.load_rows(rows, live, src_index=src_index)
        storage.reserve(max(state["next_slot"], 1))  # the allocation it had when saved
        self._sampler.loads(path / buffer_io.SAMPLER_DIR)
        self.load_state_dict(state)

    # -- internals --------------------------------------------------------------------
    def _make_room(self, rows: int, length: int, report: AdmissionReport) -> str | None:
        """Evict what :func:`plan_eviction` says; ``"no_room"`` if the newcomer can't fit."""
        victims = plan_eviction(
            [t.length for t in self._trajs], [len(t.slots) for t in self._trajs],
            len(self._free) + self.max_size - self._next_slot, length, rows,
            self.max_size, self.max_trajectories,
        )
        if victims is None:
            return "no_room"
        self._evict(victims, report)
        return None

    def _evict_too_long(self, report: AdmissionReport) -> None:
        """Evict trajectories longer than ``length_limit``, longest (then oldest) first,
        while more than ``min_trajectories`` remain."""
        order = sorted(range(len(self._trajs)), key=lambda i: (-self._trajs[i].length, i))
        too_long = [i for i in order if self._trajs[i].length > self.length_limit]
        self._evict(too_long[: max(0, len(self._trajs) - self.min_trajectories)], report)

    def _evict(self, victims: list[int], report: AdmissionReport) -> None:
        for victim in [self._trajs[i] for i in victims]:
            self._free.extend(victim.slots)
            self._sampler.mark(victim.slots, False)
            self._rows -= len(victim.slots)
        gone = set(victims)
        self._trajs = [t for i, t in enumerate(self._trajs) if i not in gone]
        report.evicted += len(victims)

    def _store(self, traj: TensorDictBase, length: int, expert: bool) -> None:
        n = traj.shape[0]
        slots = [self._free.pop() for _ in range(min(n, len(self._free)))]
        fresh = n - len(slots)
        slots += list(range(self._next_slot, self._next_slot + fresh))
        self._next_slot += fresh
        traj_id = self._next_traj_id
        self._next_traj_id += 1
        rows = chunk_rows(
            traj, self.chunk_size, traj_id=traj_id, expert=expert,
            action_bounds=self.action_bounds, chunker=self._chunker,
        )
        self.replay_buffer.storage.set(torch.tensor(slots), rows)
        self._trajs.append(Trajectory(traj_id, length, slots, expert))
        self._sampler.mark(slots, True, length)
        self._rows += n

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(rows={len(self)}, trajectories={self.num_trajectories}, "
                f"mode={self.mode!r}, length_limit={self.length_limit}{' (adaptive)' if self.adaptive else ''}, "
                f"max_size={self.max_size})")


__all__ = ["LengthFilteredReplayBuffer", "Trajectory"]
