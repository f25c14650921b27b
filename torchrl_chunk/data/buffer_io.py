"""Saving and restoring a :class:`~torchrl_chunk.data.LengthFilteredReplayBuffer` (its dumps/loads).

A dump directory holds ``rows/`` (the live rows, ascending storage row, a memory-mapped
TensorDict), ``sampler/`` (the sampling generator's state) and ``length_filtered_buffer.json``
(the trajectory table, the length limit and its rule, the running statistics), written last
and atomically. Kept apart from the buffer's admission logic so each file reads in one sitting.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tensordict import TensorDict

from torchrl_chunk.data.admission import AdmissionReport
from torchrl_chunk.data.length_limit import AdaptiveLengthLimit
from torchrl_chunk.data.trajectories import as_action_bounds

if TYPE_CHECKING:
    from torchrl_chunk.data.demo_buffer import LengthFilteredReplayBuffer

_META_FILE = "length_filtered_buffer.json"
# 1: "incomplete" counted under stats["rejected"], no sampler RNG state; 1-2: TorchRL's dump of
# all max_size storage rows under storage/; 3: the live rows only, ascending, under rows/;
# 4: + the adaptive length limit's state, the paper's limit and the length weighting.
_META_VERSION = 4
_ROWS_DIR = "rows"


@dataclass
class Trajectory:
    """One stored trajectory in the buffer's table."""

    traj_id: int
    length: int  # env steps
    slots: list[int]  # storage rows
    expert: bool


def dump_buffer(buf: LengthFilteredReplayBuffer, path: Path) -> None:
    """Write ``buf`` to ``path`` (see :meth:`LengthFilteredReplayBuffer.dumps`)."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(path / _ROWS_DIR, ignore_errors=True)
    buf.replay_buffer.storage.dump_rows(path / _ROWS_DIR, buf._sampler.live)
    buf._sampler.dumps(path / "sampler")
    meta = {
        "version": _META_VERSION,
        "horizon": buf.horizon,
        "mode": buf.mode,
        "length_limit": buf.length_limit,
        "base_length_limit": buf.base_length_limit,
        "adaptive": buf.adaptive.state_dict() if buf.adaptive is not None else None,
        "min_trajectories": buf.min_trajectories,
        "length_weighting": buf.length_weighting,
        "max_size": buf.max_size,
        "max_trajectories": buf.max_trajectories,
        "action_bounds": buf.action_bounds,
        "trajectories": [asdict(t) for t in buf._trajs],
        "free": buf._free,
        "next_slot": buf._next_slot,
        "next_traj_id": buf._next_traj_id,
        "stats": asdict(buf.stats),
    }
    tmp = path / (_META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta))
    tmp.replace(path / _META_FILE)  # the table is written last, atomically


def load_buffer(buf: LengthFilteredReplayBuffer, path: Path) -> None:
    """Restore ``buf`` from ``path`` (see :meth:`LengthFilteredReplayBuffer.loads`)."""
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
    version = meta.get("version", 1)
    if version > _META_VERSION:
        raise ValueError(
            f"{meta_file} was written by a newer torchrl_chunk (format {version}, this one "
            f"reads up to {_META_VERSION}); upgrade torchrl_chunk to load it."
        )
    if meta["horizon"] != buf.horizon or meta["max_size"] != buf.max_size:
        raise ValueError(
            f"Saved buffer has horizon={meta['horizon']}, max_size={meta['max_size']}; this "
            f"one has horizon={buf.horizon}, max_size={buf.max_size}. Build it with the same."
        )
    live = torch.tensor(sorted(s for t in meta["trajectories"] for s in t["slots"]), dtype=torch.long)
    storage = buf.replay_buffer.storage
    if version < 3:  # rows at their storage row among all max_size rows
        storage.load_rows(TensorDict.load_memmap(path / "storage"), live, src_index=live)
    else:
        rows = TensorDict.load_memmap(path / _ROWS_DIR)
        if rows.shape[0] != live.numel():
            raise ValueError(
                f"{path / _ROWS_DIR} holds {rows.shape[0]} rows, its table {live.numel()}; "
                "the dump is damaged: restore it from a backup."
            )
        storage.load_rows(rows, live)
    storage.reserve(max(meta["next_slot"], 1))  # the allocation it had when saved
    buf._sampler.loads(path / "sampler")
    stats = dict(meta["stats"])
    if version == 1:  # "incomplete" was a rejection reason
        stats["rejected"] = dict(stats["rejected"])
        stats["incomplete"] = stats["rejected"].pop("incomplete", 0)
    buf.mode = meta["mode"]
    buf.length_limit = meta["length_limit"]
    if version >= 4:  # before: a fixed limit, uniform sampling
        buf.base_length_limit = meta["base_length_limit"]
        buf.adaptive = AdaptiveLengthLimit.from_state_dict(meta["adaptive"]) if meta["adaptive"] else None
        buf.min_trajectories = meta["min_trajectories"]
        buf.length_weighting = meta["length_weighting"]
    else:  # the saved file wins: a fixed limit, uniform sampling
        buf.base_length_limit = meta["length_limit"]
        buf.adaptive = None
        buf.length_weighting = 0.0
    buf.max_trajectories = meta["max_trajectories"]
    buf.action_bounds = as_action_bounds(meta["action_bounds"])
    buf._trajs = [Trajectory(**t) for t in meta["trajectories"]]
    buf._free = list(meta["free"])
    buf._next_slot = meta["next_slot"]
    buf._next_traj_id = meta["next_traj_id"]
    buf.stats = AdmissionReport(**stats)
    buf._sampler._empty()
    for t in buf._trajs:
        buf._sampler.mark(t.slots, True, t.length)
    buf._rows = sum(len(t.slots) for t in buf._trajs)


__all__ = ["Trajectory", "dump_buffer", "load_buffer"]
