"""Storage of the demo buffer's rows that follows the rows held, and its footprint.

Why hand-written: TorchRL's ``LazyTensorStorage(max_size)`` and ``LazyMemmapStorage`` allocate
``max_size`` rows at the first write, and their checkpointer dumps every allocated row. With
the recipe's ``max_size=200000`` and 128 px images that is ~10 GB per job, in RAM and in every
checkpoint, for a buffer holding a few thousand rows. :class:`GrowingTensorStorage` is still a
TorchRL :class:`~torchrl.data.replay_buffers.storages.TensorStorage` (TorchRL's ``get``/``set``
and :class:`~torchrl.data.TensorDictReplayBuffer` sampling run unchanged); it only chooses how
many rows to allocate, grows when a write needs more, and dumps or loads a chosen set of rows.

Capacity follows a fixed ladder ``max_size, ceil(max_size/2), ceil(max_size/4), ...``: the
smallest rung that holds the highest row written. Growing to the next rung copies the rows
into a fresh allocation of at most twice the size, so RAM (or scratch disk) stays within ~2x
the rows held, and the transient peak while growing to ``max_size`` is ``1.5 * max_size``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tensordict import TensorDictBase
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.data.replay_buffers.storages import TensorStorage

_COPY_BYTES = 64 * 2**20  # rows are copied (growth, dump, load) in pieces of about this size
_GEN_DIR = "rows_{}"  # memmap scratch files of one capacity: <scratch_dir>/rows_<capacity>/
_GEN_PATTERN = re.compile(r"rows_\d+")
_GENERATOR_FILE = "generator.pt"


def capacity_for(rows: int, max_size: int) -> int:
    """The smallest rung of ``max_size, ceil(max_size/2), ceil(max_size/4), ...`` holding ``rows``."""
    cap = max_size
    while (half := -(-cap // 2)) >= rows and half < cap:
        cap = half
    return cap


def _remove(path: str, owner_pid: int) -> None:
    """Delete scratch files, only in the process that made them (not in a forked worker)."""
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)


def _max_index(cursor) -> int:
    if isinstance(cursor, slice):
        raise TypeError("GrowingTensorStorage.set takes row indices, not a slice.")
    return int(torch.as_tensor(cursor).max())


def _layout(td: TensorDictBase) -> dict[str, tuple]:
    """``{key: (dtype, row shape)}`` of every leaf, to compare two row layouts."""
    return {str(k): (str(v.dtype), tuple(v.shape[1:])) for k, v in td.items(True, True)}


class GrowingTensorStorage(TensorStorage):
    """A TorchRL ``TensorStorage`` whose allocation grows with the highest row written.

    Rows are written at explicit indices (the demo buffer chooses them); a write beyond the
    current capacity first grows the allocation to the next rung (:func:`capacity_for`).
    ``len(storage)`` is the number of rows up to the highest written one (TorchRL's ``get``
    reads below it).

    Args:
        max_size: the most rows it may ever hold.
        memmap: keep rows in memory-mapped files under ``<scratch_dir>/rows_<capacity>/``
            rather than in RAM. One buffer per directory: leftovers of a killed run are
            deleted at the first write, the files when the storage is garbage-collected or
            the process exits (they are scratch: a checkpoint holds its own dump).
        scratch_dir: the directory of those files (default: a fresh temporary directory).
    """

    def __init__(self, max_size: int, *, memmap: bool = False, scratch_dir: str | Path | None = None) -> None:
        super().__init__(None, max_size)
        self.scratch_dir = None
        if memmap:
            self.scratch_dir = Path(scratch_dir if scratch_dir is not None else tempfile.mkdtemp(
                prefix="torchrl_chunk_rows_"))
            if scratch_dir is None:
                weakref.finalize(self, _remove, str(self.scratch_dir), os.getpid())
        self.capacity = 0
        self._finalizer: weakref.finalize | None = None

    # -- sizes ------------------------------------------------------------------------
    @property
    def row_bytes(self) -> int:
        """Bytes of one stored row (every leaf, e.g. a uint8 image counts H*W*3)."""
        if not self.initialized:
            raise RuntimeError("The storage holds no rows yet: row_bytes is known after the first write.")
        return sum(v.element_size() * v[0].numel() for v in self._storage.values(True, True))

    @property
    def allocated_bytes(self) -> int:
        """Bytes allocated now (RAM, or scratch files for a memmap storage)."""
        return self.capacity * self.row_bytes if self.initialized else 0

    # -- TorchRL storage hooks --------------------------------------------------------
    def set(self, cursor, data, *, set_cursor: bool = True):
        need = _max_index(cursor) + 1
        if need > self.max_size:
            raise IndexError(f"Row {need - 1} is beyond the storage's max_size={self.max_size} rows.")
        self.reserve(need, template=data[0] if not self.initialized else None)
        return super().set(cursor, data, set_cursor=set_cursor)

    def _get_new_len(self, data, cursor) -> None:
        self._len = max(self._len, _max_index(cursor) + 1)

    def _init(self, data) -> None:  # TorchRL's lazy-init hook: allocate the smallest rung
        self.reserve(1, template=data)

    # -- growth -----------------------------------------------------------------------
    def reserve(self, rows: int, template: TensorDictBase | None = None) -> None:
        """Make room for rows ``0 .. rows-1`` (``template``: one row, for the first allocation)."""
        if self.initialized and rows <= self.capacity:
            return
        capacity = capacity_for(rows, self.max_size)
        if not self.initialized:
            if template is None:
                raise RuntimeError("The first reserve() needs a template row.")
            if self.scratch_dir is not None and self.scratch_dir.is_dir():
                for stale in self.scratch_dir.iterdir():
                    if _GEN_PATTERN.fullmatch(stale.name):
                        shutil.rmtree(stale, ignore_errors=True)
            self._storage, finalizer = self._allocate(template.detach(), capacity)
        else:
            old, old_finalizer = self._storage, self._finalizer
            new, finalizer = self._allocate(old[0], capacity)
            for start in range(0, len(self), self._rows_per_copy()):
                stop = min(start + self._rows_per_copy(), len(self))
                new[start:stop] = old[start:stop]
            self._storage = new
            del old
            if old_finalizer is not None:
                old_finalizer()  # deletes the previous rung's files
        self._finalizer, self.capacity, self.initialized = finalizer, capacity, True
        self.__dict__.pop("_total_shape_value", None)  # TorchRL caches the allocated shape
        self._bump_mutation_revision()

    def _allocate(self, row: TensorDictBase, capacity: int):
        if self.scratch_dir is None:
            return torch.empty_like(row.expand(capacity)), None
        where = self.scratch_dir / _GEN_DIR.format(capacity)
        shutil.rmtree(where, ignore_errors=True)
        out = row.clone().expand(capacity).memmap_like(prefix=where)
        return out, weakref.finalize(self, _remove, str(where), os.getpid())

    def _rows_per_copy(self) -> int:
        return max(1, _COPY_BYTES // max(1, self.row_bytes))

    # -- persistence ------------------------------------------------------------------
    def dump_rows(self, path: str | Path, index: torch.Tensor) -> None:
        """Write rows ``index`` (in that order) to ``path`` as a memory-mapped TensorDict.

        Copied in pieces of ~64 MB, so a dump needs no RAM for the whole buffer.
        """
        n, step = int(index.numel()), self._rows_per_copy()
        out = self._storage[0].clone().expand(n).memmap_like(prefix=Path(path))
        for start in range(0, n, step):
            out[start : start + step] = self._storage[index[start : start + step]]

    def load_rows(self, src: TensorDictBase, index: torch.Tensor,
                  src_index: torch.Tensor | None = None) -> None:
        """Write ``src[src_index]`` (all of ``src`` by default) at rows ``index``, in pieces."""
        if self.initialized and _layout(src) != _layout(self._storage):
            raise ValueError(
                f"The saved rows hold {_layout(src)}, this buffer's rows {_layout(self._storage)}: "
                "build the buffer with the same observations (pixels, image size) and chunk_size."
            )
        if index.numel() == 0:
            return
        self.reserve(int(index.max()) + 1, template=src[0])
        step = self._rows_per_copy()
        for start in range(0, index.numel(), step):
            rows = src_index[start : start + step] if src_index is not None else slice(start, start + step)
            self.set(index[start : start + step], src[rows])


class LiveRowSampler(Sampler):
    r"""Sampling over the storage rows that belong to live trajectories.

    Evicting a trajectory frees rows in the middle of the storage; this sampler never
    returns a freed row. Occupancy is a mask updated per admitted or evicted trajectory;
    the sorted index of live rows is built from it at most once between two changes.
    Its saved state is the generator's; occupancy comes from the buffer's table.

    ``length_weighting`` :math:`\alpha`: 0 (default) draws uniformly over rows. With
    :math:`\alpha > 0`, a trajectory of length :math:`L` (env steps) holding :math:`n` rows
    gets the sampling mass

    .. math:: P(\text{trajectory}) \propto L^{1-\alpha},
              \qquad p(\text{row}) \propto L^{1-\alpha} / n,

    spread evenly over its rows: :math:`\alpha = 1` makes every trajectory equally likely,
    :math:`\alpha = 2` gives it a share :math:`\propto 1/L`. Dividing by :math:`n` matters
    because an expert demo holds one row per env step and a chunked agent trajectory one per
    decision (:math:`n \approx L/h`). Weights are computed in float64 relative to the
    shortest live trajectory, so no weight underflows. TorchRL's
    ``PrioritizedSampler`` keeps priorities in a sum tree for TD-error updates and draws
    with its own RNG (not our saved generator); a per-row weight set once at admission
    needs only ``torch.multinomial``.
    """

    def __init__(self, max_size: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.occupied = torch.zeros(max_size, dtype=torch.bool)  # 1 byte per row: kept whole
        self.row_length = torch.ones(max_size, dtype=torch.float64)  # env-step length of the row's trajectory
        self.row_count = torch.ones(max_size, dtype=torch.float64)  # rows of the row's trajectory
        self.length_weighting = 0.0
        self._live: torch.Tensor | None = None
        self._weights: torch.Tensor | None = None
        self._gen = generator

    def mark(self, slots: Sequence[int] | slice, occupied: bool, length: int | None = None) -> None:
        """Mark rows live or free; ``length``: the env-step length of the trajectory ``slots`` hold."""
        self.occupied[slots] = occupied
        if length is not None:
            self.row_length[slots] = float(length)
            self.row_count[slots] = float(len(slots))
        self._live = self._weights = None

    def set_length_weighting(self, alpha: float) -> None:
        if not (isinstance(alpha, (int, float)) and alpha >= 0 and alpha == alpha and alpha != float("inf")):
            raise ValueError(f"length_weighting must be a finite number >= 0 (0 = uniform), got {alpha!r}.")
        self.length_weighting = float(alpha)
        self._weights = None

    @property
    def live(self) -> torch.Tensor:
        """Storage rows of live trajectories, ascending."""
        if self._live is None:
            self._live = self.occupied.nonzero().flatten()
        return self._live

    def sample(self, storage, batch_size: int):
        live = self.live
        if live.numel() == 0:
            raise RuntimeError("The demo buffer is empty: seed it with expert trajectories first.")
        if self.length_weighting == 0.0:
            pick = torch.randint(live.numel(), (batch_size,), generator=self._gen)
        else:
            if self._weights is None:
                length = self.row_length[live]
                self._weights = (length / length.min()).pow(1.0 - self.length_weighting) / self.row_count[live]
            pick = torch.multinomial(self._weights, batch_size, replacement=True, generator=self._gen)
        return live[pick], {}

    def _empty(self) -> None:
        self.mark(slice(None), False)

    def state_dict(self) -> dict:
        return {"generator": self._gen.get_state()} if self._gen is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        if self._gen is not None and "generator" in state_dict:
            self._gen.set_state(state_dict["generator"])

    def dumps(self, path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), path / _GENERATOR_FILE)

    def loads(self, path) -> None:  # buffers saved before version 2 hold no generator state
        if (Path(path) / _GENERATOR_FILE).is_file():
            self.load_state_dict(torch.load(Path(path) / _GENERATOR_FILE))


@dataclass(frozen=True)
class BufferFootprint:
    """What a demo buffer holding ``rows`` rows costs (see :func:`footprint`), in bytes.

    Attributes:
        rows: rows held.
        row_bytes: bytes of one row.
        ram_bytes: peak RAM of the buffer: its allocation, the previous one while it grows
            to that size, and the ~64 MB pieces a dump or load copies rows through
            (``storage="memory"``); for ``"memmap"`` only those pieces (the files are in
            ``scratch_bytes``; the OS caches them in reclaimable memory).
        scratch_bytes: peak size of the memmap scratch files (0 for ``"memory"``).
        checkpoint_bytes: one :meth:`~LengthFilteredReplayBuffer.dumps` (live rows only).
        disk_bytes: peak disk of the buffer in a job directory: three dumps (a job keeps its
            checkpoint and the one before it, ``checkpoint.prev``, and a save writes the new
            one before it drops the oldest) plus ``scratch_bytes``.
    """

    rows: int
    row_bytes: int
    ram_bytes: int
    scratch_bytes: int
    checkpoint_bytes: int
    disk_bytes: int


# The trajectory table (slots as JSON, <= 8 bytes a row) and the files' metadata of a dump.
_TABLE_BYTES_PER_ROW = 8
_DUMP_OVERHEAD = 64 * 2**10


def footprint(rows: int, row_bytes: int, max_size: int, storage: str) -> BufferFootprint:
    """Peak RAM and disk of a buffer of ``max_size`` rows holding ``rows`` rows of ``row_bytes``."""
    if not 0 <= rows <= max_size:
        raise ValueError(f"rows must be in [0, max_size={max_size}], got {rows}.")
    capacity = capacity_for(max(rows, 1), max_size)
    previous = -(-capacity // 2) if capacity > 1 else 0  # the rung it grew from
    peak = (capacity + previous) * row_bytes
    pieces = min(capacity * row_bytes, _COPY_BYTES + row_bytes)  # a dump's or load's copy piece
    ram, scratch = (peak + pieces, 0) if storage == "memory" else (pieces, peak)
    ram += max_size  # the sampler's occupancy mask, one byte a row
    dump = rows * (row_bytes + _TABLE_BYTES_PER_ROW) + _DUMP_OVERHEAD
    return BufferFootprint(rows, row_bytes, ram, scratch, dump, 3 * dump + scratch)


__all__ = ["BufferFootprint", "GrowingTensorStorage", "LiveRowSampler", "capacity_for", "footprint"]
