"""The dynamic demonstration buffer D_demo of self behaviour cloning (Section II.B)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.envs.transforms import ActionChunkTransform

from torchrl_chunk.keys import (
    ACTION_CHUNK_KEY,
    ACTION_IS_PAD_KEY,
    ACTION_KEY,
    STEPS_EXECUTED_KEY,
    SUCCESS_KEY,
)

BufferMode = Literal["filtered", "static", "unrestricted"]
_DONE = ("next", "done")
_SUCCESS = ("next", SUCCESS_KEY)
_STEPS = ("next", STEPS_EXECUTED_KEY)
_META_FILE = "length_filtered_buffer.json"


@dataclass
class AdmissionReport:
    """What one :meth:`LengthFilteredReplayBuffer.extend` call did.

    Attributes:
        admitted: trajectories written to the buffer.
        rejected: trajectories not written, by reason: ``"failure"`` (no success),
            ``"too_long"`` (length > length_limit), ``"static"`` (static mode admits
            nothing), ``"incomplete"`` (a segment with no done flag at its end),
            ``"no_room"`` (the buffer is full of shorter trajectories).
        evicted: trajectories removed to make room (longest first).
        admitted_lengths: env-step lengths of the admitted trajectories.
    """

    admitted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    evicted: int = 0
    admitted_lengths: list[int] = field(default_factory=list)

    @property
    def num_rejected(self) -> int:
        return sum(self.rejected.values())

    def _reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


@dataclass
class _Trajectory:
    traj_id: int
    length: int  # env steps
    slots: list[int]  # storage rows
    expert: bool


class _LiveRowSampler(Sampler):
    """Uniform sampling over the storage rows that belong to live trajectories.

    Evicting a trajectory frees its rows in the middle of the storage; this sampler never
    returns a freed row. Its state is derived from the buffer's trajectory table, so it
    saves nothing itself.
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.live = torch.zeros(0, dtype=torch.long)
        self._gen = generator

    def sample(self, storage, batch_size: int):
        if self.live.numel() == 0:
            raise RuntimeError("The demo buffer is empty: seed it with expert trajectories first.")
        pick = torch.randint(self.live.numel(), (batch_size,), generator=self._gen)
        return self.live[pick], {}

    def _empty(self) -> None:
        self.live = torch.zeros(0, dtype=torch.long)

    def dumps(self, path) -> None:  # state is rebuilt from the buffer's table
        pass

    def loads(self, path) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass


class LengthFilteredReplayBuffer(TensorDictReplayBuffer):
    r"""Demo buffer of whole trajectories admitted by success and length (Section II.B).

    The buffer starts with expert trajectories. During training, ``extend`` offers it
    complete trajectories; a trajectory ``x_i`` is admitted when it succeeded and

    .. math:: L(x_i) \le \ell_{limit},

    where ``L`` is its length in env steps and ``ell_limit`` defaults to the length of the
    longest expert trajectory (the paper's rule).

    **Modes**: ``"filtered"`` (the paper), ``"static"`` (never updated after seeding: the
    "no buffer update" ablation), ``"unrestricted"`` (every successful trajectory is
    admitted, whatever its length: the "no restriction" ablation).

    **Eviction**: capacity is ``max_size`` rows (one row per BC sample) and optionally
    ``max_trajectories``. When a new trajectory does not fit, the *longest* trajectories
    are evicted first (expert ones included; among equal lengths the oldest goes first),
    so the buffer keeps the best demonstrations rather than the most recent. A newcomer
    longer than everything already stored is rejected (``"no_room"``) instead.

    **Rows** (what :meth:`sample` returns; a chunk never crosses a trajectory's end):

    * per-step trajectories (expert demos: ``"action"`` ``[T, action_dim]``): one row per
      env step ``t`` with the observation ``o_t`` and the chunk ``a_{t:t+h-1}``, built by
      TorchRL's :class:`~torchrl.envs.transforms.ActionChunkTransform`; the last ``h-1``
      rows are padded (``"action_is_pad"``);
    * chunked trajectories (from :class:`~torchrl_chunk.envs.ChunkedEnv`: ``"action"``
      ``[T, h, action_dim]`` and ``("next", "steps_executed")``): one row per decision
      with the chunk the policy emitted; the steps that were not executed (the last
      chunk, cut short by success or the time limit) are padded. Only the observations at
      decision points exist, hence one row per decision.

    Chunk targets are clipped to ``action_bounds`` (the env clips what it executes, so the
    clipped chunk is what actually happened).

    Each row holds every entry under ``"observation"``, ``("vla_action", "chunk")``
    ``[h, action_dim]``, ``"action_is_pad"`` ``[h]``, ``"traj_id"`` and ``"is_expert"``.

    Args:
        expert_trajectories: the seed demos, a list of per-step trajectory TensorDicts
            (batch ``[T]``) or one flat TensorDict where ``("next", "done")`` marks ends.
            Each must succeed (``("next", "success")``).
        horizon: the chunk length ``h``.

    Keyword Args:
        length_limit: ``ell_limit`` in env steps; default: the longest expert trajectory.
        mode: ``"filtered"``, ``"static"`` or ``"unrestricted"``.
        max_size: capacity in rows.
        max_trajectories: optional capacity in trajectories.
        storage: ``"memory"`` (``LazyTensorStorage``) or ``"memmap"``
            (``LazyMemmapStorage`` under ``scratch_dir``).
        scratch_dir: directory of the memmap storage.
        batch_size: default sample size.
        action_bounds: ``(low, high)`` to clip chunk targets to, or ``None``.
        generator: a ``torch.Generator`` for reproducible sampling.

    Example:
        >>> buf = LengthFilteredReplayBuffer(demos.trajectories, horizon=4, batch_size=256)
        >>> report = buf.extend(completed_rollout_trajectories)
        >>> report.admitted, report.rejected
        (3, {'too_long': 2, 'failure': 5})
        >>> bc_batch = buf.sample()  # observation, ("vla_action","chunk"), "action_is_pad"
    """

    def __init__(
        self,
        expert_trajectories: Sequence[TensorDictBase] | TensorDictBase,
        *,
        horizon: int,
        length_limit: int | None = None,
        mode: BufferMode = "filtered",
        max_size: int = 100_000,
        max_trajectories: int | None = None,
        storage: Literal["memory", "memmap"] = "memory",
        scratch_dir: str | Path | None = None,
        batch_size: int | None = None,
        action_bounds: tuple[float, float] | None = (-1.0, 1.0),
        generator: torch.Generator | None = None,
    ) -> None:
        if mode not in ("filtered", "static", "unrestricted"):
            raise ValueError(
                f"mode must be 'filtered', 'static' or 'unrestricted', got {mode!r}."
            )
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}.")
        if max_size < 1 or (max_trajectories is not None and max_trajectories < 1):
            raise ValueError("max_size and max_trajectories must be >= 1.")
        if length_limit is not None and length_limit < 1:
            raise ValueError(f"length_limit must be >= 1 env step, got {length_limit}.")
        if storage == "memory":
            store = LazyTensorStorage(max_size)
        elif storage == "memmap":
            store = LazyMemmapStorage(max_size, scratch_dir=scratch_dir, existsok=True)
        else:
            raise ValueError(f"storage must be 'memory' or 'memmap', got {storage!r}.")
        super().__init__(storage=store, sampler=_LiveRowSampler(generator), batch_size=batch_size)
        self.horizon = horizon
        self.mode = mode
        self.max_size = max_size
        self.max_trajectories = max_trajectories
        self.action_bounds = action_bounds
        self._chunker = ActionChunkTransform(horizon, done_key=None)
        self._trajs: list[_Trajectory] = []
        self._free: list[int] = []
        self._next_slot = 0
        self._next_traj_id = 0
        self.stats = AdmissionReport()  # cumulative over every extend() call

        experts = list(self._split(expert_trajectories, report=None))
        if not experts:
            raise ValueError(
                "LengthFilteredReplayBuffer needs at least one expert trajectory to seed it "
                "(e.g. torchrl_chunk.envs.collect_expert_demos(...).trajectories)."
            )
        lengths = []
        for traj in experts:
            length, success = self._length_and_success(traj)
            if not success:
                raise ValueError(
                    "An expert trajectory did not succeed (no True in ('next', 'success')): "
                    "seed the buffer with successful demonstrations only."
                )
            lengths.append(length)
        self.length_limit = int(length_limit) if length_limit is not None else max(lengths)
        for traj, length in zip(experts, lengths):
            self._admit(traj, length, expert=True, report=AdmissionReport())

    # -- public API -------------------------------------------------------------------
    def extend(self, trajectories: Sequence[TensorDictBase] | TensorDictBase) -> AdmissionReport:
        """Offer complete trajectories; admit the successful ones no longer than the limit.

        ``trajectories`` is one TensorDict ``[T]`` or a list of them (e.g. the rows of a
        collector batch); each may hold several consecutive trajectories delimited by
        ``("next", "done")``. A trailing segment without a done flag (an episode still
        running) is counted as ``"incomplete"`` and skipped.
        Returns an :class:`AdmissionReport`; the running totals are in ``self.stats``.
        """
        report = AdmissionReport()
        for traj in self._split(trajectories, report=report):
            length, success = self._length_and_success(traj)
            if self.mode == "static":
                report._reject("static")
            elif not success:
                report._reject("failure")
            elif self.mode == "filtered" and length > self.length_limit:
                report._reject("too_long")
            else:
                self._admit(traj, length, expert=False, report=report)
        self._accumulate(report)
        return report

    def add(self, trajectory: TensorDictBase) -> AdmissionReport:
        """Offer one complete trajectory (see :meth:`extend`)."""
        return self.extend([trajectory])

    def __len__(self) -> int:
        """Number of rows (BC samples) currently stored."""
        return int(self._sampler.live.numel())

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

    # -- persistence ------------------------------------------------------------------
    def dumps(self, path: str | Path) -> None:
        """Save storage and the trajectory table under ``path`` (a directory)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        super().dumps(path)
        meta = {
            "horizon": self.horizon,
            "mode": self.mode,
            "length_limit": self.length_limit,
            "max_size": self.max_size,
            "max_trajectories": self.max_trajectories,
            "action_bounds": self.action_bounds,
            "trajectories": [asdict(t) for t in self._trajs],
            "free": self._free,
            "next_slot": self._next_slot,
            "next_traj_id": self._next_traj_id,
            "stats": asdict(self.stats),
        }
        tmp = path / (_META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta))
        tmp.replace(path / _META_FILE)  # the table is written last, atomically

    def loads(self, path: str | Path) -> None:
        """Restore a buffer saved with :meth:`dumps` (same ``horizon`` and capacity)."""
        path = Path(path)
        meta_file = path / _META_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(
                f"{path} is not a saved LengthFilteredReplayBuffer (no {_META_FILE}); "
                "pass the directory given to dumps()."
            )
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta_file} is corrupt ({err}); restore it from a backup.") from err
        if meta["horizon"] != self.horizon or meta["max_size"] != self.max_size:
            raise ValueError(
                f"Saved buffer has horizon={meta['horizon']}, max_size={meta['max_size']}; this "
                f"one has horizon={self.horizon}, max_size={self.max_size}. Build it with the same."
            )
        super().loads(path)
        self.mode = meta["mode"]
        self.length_limit = meta["length_limit"]
        self.max_trajectories = meta["max_trajectories"]
        self.action_bounds = tuple(meta["action_bounds"]) if meta["action_bounds"] else None
        self._trajs = [_Trajectory(**t) for t in meta["trajectories"]]
        self._free = list(meta["free"])
        self._next_slot = meta["next_slot"]
        self._next_traj_id = meta["next_traj_id"]
        self.stats = AdmissionReport(**meta["stats"])
        self._sync_sampler()

    # -- internals --------------------------------------------------------------------
    def _split(self, data, report: AdmissionReport | None) -> Iterable[TensorDictBase]:
        """Yield complete trajectories: every input TensorDict is cut after each done."""
        if isinstance(data, TensorDictBase):
            data = [data]
        for part in data:
            if not isinstance(part, TensorDictBase) or part.batch_dims != 1:
                raise ValueError(
                    "Expected trajectories with one time dim [T] (or a list of them), got "
                    f"{getattr(part, 'batch_size', type(part).__name__)}. Pass collector batches "
                    "row by row ([batch[i] for i in range(batch.shape[0])]) or use "
                    "Collector(traj_format='cat')."
                )
            if part.shape[0] == 0:
                raise ValueError("Got an empty trajectory (0 steps).")
            done = self._get(part, _DONE).reshape(-1)
            start = 0
            for end in torch.nonzero(done).flatten().tolist():
                yield part[start : end + 1]
                start = end + 1
            if start < part.shape[0]:
                if report is None:
                    raise ValueError(
                        "An expert trajectory has no done flag at its end: expert demos must "
                        "be complete trajectories."
                    )
                report._reject("incomplete")

    @staticmethod
    def _get(traj: TensorDictBase, key) -> torch.Tensor:
        value = traj.get(key, None)
        if value is None:
            raise KeyError(
                f"Trajectory has no {key!r} entry (keys: {list(traj.keys(True, True))}). "
                "Trajectories need 'action', ('next', 'done') and ('next', 'success')."
            )
        return value

    def _is_chunked(self, traj: TensorDictBase) -> bool:
        action = self._get(traj, ACTION_KEY)
        if action.ndim == 3:
            if action.shape[1] != self.horizon:
                raise ValueError(
                    f"Chunked trajectory has chunks of length {action.shape[1]}, the buffer "
                    f"uses horizon={self.horizon}."
                )
            return True
        if action.ndim == 2:
            return False
        raise ValueError(
            f"'action' must be [T, action_dim] (per-step) or [T, h, action_dim] (chunked), "
            f"got {tuple(action.shape)}."
        )

    def _length_and_success(self, traj: TensorDictBase) -> tuple[int, bool]:
        success = bool(self._get(traj, _SUCCESS).any())
        if self._is_chunked(traj):
            steps = traj.get(_STEPS, None)
            length = int(steps.sum()) if steps is not None else traj.shape[0] * self.horizon
        else:
            length = traj.shape[0]
        return length, success

    def _rows(self, traj: TensorDictBase, expert: bool, traj_id: int) -> TensorDictBase:
        T = traj.shape[0]
        rows = traj.select("observation").clone()
        if self._is_chunked(traj):
            chunk = traj.get(ACTION_KEY)
            steps = traj.get(_STEPS, None)
            executed = steps.reshape(T, 1) if steps is not None else torch.full((T, 1), self.horizon)
            pad = torch.arange(self.horizon).expand(T, -1) >= executed.to(torch.long)
        else:
            window = self._chunker(TensorDict({ACTION_KEY: traj.get(ACTION_KEY)}, [T]).unsqueeze(0))
            chunk = window.get(ACTION_CHUNK_KEY)[0]
            pad = window.get(ACTION_IS_PAD_KEY)[0]
        chunk = chunk.detach().to(torch.float32)
        if self.action_bounds is not None:
            chunk = chunk.clamp(*self.action_bounds)
        rows.set(ACTION_CHUNK_KEY, chunk)
        rows.set(ACTION_IS_PAD_KEY, pad.bool())
        rows.set("traj_id", torch.full((T,), traj_id, dtype=torch.long))
        rows.set("is_expert", torch.full((T,), expert, dtype=torch.bool))
        return rows

    def _capacity_left(self) -> int:
        return len(self._free) + (self.max_size - self._next_slot)

    def _admit(self, traj: TensorDictBase, length: int, expert: bool, report: AdmissionReport) -> None:
        n = traj.shape[0]
        if n > self.max_size:
            report._reject("no_room")
            return
        # Evict the longest trajectories (oldest first among equals) until the newcomer fits;
        # a newcomer longer than everything stored is refused instead.
        while self._capacity_left() < n or (
            self.max_trajectories is not None and len(self._trajs) >= self.max_trajectories
        ):
            victim = max(range(len(self._trajs)), key=lambda i: (self._trajs[i].length, -i))
            if self._trajs[victim].length < length:
                report._reject("no_room")
                return
            self._free.extend(self._trajs.pop(victim).slots)
            report.evicted += 1
        slots = [self._free.pop() for _ in range(min(n, len(self._free)))]
        fresh = n - len(slots)
        slots += list(range(self._next_slot, self._next_slot + fresh))
        self._next_slot += fresh
        traj_id = self._next_traj_id
        self._next_traj_id += 1
        rows = self._rows(traj, expert, traj_id)
        self._storage.set(torch.tensor(slots), rows)
        self._trajs.append(_Trajectory(traj_id, length, slots, expert))
        report.admitted += 1
        report.admitted_lengths.append(length)
        self._sync_sampler()

    def _sync_sampler(self) -> None:
        slots = [s for t in self._trajs for s in t.slots]
        self._sampler.live = torch.tensor(sorted(slots), dtype=torch.long)

    def _accumulate(self, report: AdmissionReport) -> None:
        self.stats.admitted += report.admitted
        self.stats.evicted += report.evicted
        for reason, count in report.rejected.items():
            self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + count
        self.stats.admitted_lengths.extend(report.admitted_lengths)


__all__ = ["AdmissionReport", "LengthFilteredReplayBuffer"]
