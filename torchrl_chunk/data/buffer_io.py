"""The files of a saved :class:`~torchrl_chunk.data.LengthFilteredReplayBuffer`, and their old formats.

A dump directory holds ``rows/`` (the live rows, ascending storage row, a memory-mapped
TensorDict, written by the buffer's storage), ``sampler/`` (the sampling generator's state,
written by its sampler) and ``length_filtered_buffer.json`` (the buffer's ``state_dict``: the
trajectory table, the length limit and its rule, the running statistics), written last and
atomically. This module reads and writes that table and brings tables of older formats to the
current one; it knows nothing of the buffer class (the buffer saves and restores itself, as
TorchRL's replay buffers do through their storage, sampler and writer).
"""

from __future__ import annotations

import json
from pathlib import Path

from tensordict import TensorDict, TensorDictBase

TABLE_FILE = "length_filtered_buffer.json"
ROWS_DIR = "rows"
SAMPLER_DIR = "sampler"
# 1: "incomplete" counted under stats["rejected"], no sampler RNG state; 1-2: TorchRL's dump of
# all max_size storage rows under storage/; 3: the live rows only, ascending, under rows/;
# 4: + the adaptive length limit's state, the paper's limit and the length weighting.
VERSION = 4


def write_table(path: Path, state: dict) -> None:
    """Write the buffer's ``state_dict`` as the dump's table, atomically (it is written last)."""
    tmp = path / (TABLE_FILE + ".tmp")
    tmp.write_text(json.dumps({"version": VERSION, **state}))
    tmp.replace(path / TABLE_FILE)


def read_table(path: Path) -> dict:
    """The table of the dump at ``path``, brought to the current format (version 4)."""
    table_file = path / TABLE_FILE
    if not table_file.is_file():
        raise FileNotFoundError(
            f"{path} is not a saved LengthFilteredReplayBuffer (no {TABLE_FILE}); "
            "pass the directory given to dumps()."
        )
    try:
        state = json.loads(table_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{table_file} is corrupt ({err}); restore it from a backup.") from err
    version = state.get("version", 1)
    if version > VERSION:
        raise ValueError(
            f"{table_file} was written by a newer torchrl_chunk (format {version}, this one "
            f"reads up to {VERSION}); upgrade torchrl_chunk to load it."
        )
    if version == 1:  # "incomplete" was a rejection reason
        stats = dict(state["stats"])
        stats["rejected"] = dict(stats["rejected"])
        stats["incomplete"] = stats["rejected"].pop("incomplete", 0)
        state["stats"] = stats
    if version < 4:  # a fixed limit, uniform sampling
        state.update(base_length_limit=state["length_limit"], adaptive=None, length_weighting=0.0,
                     min_trajectories=None)
    state["version"] = version
    return state


def read_rows(path: Path, version: int, live) -> tuple[TensorDictBase, object | None]:
    """The saved rows and, for formats 1-2 (all ``max_size`` rows), the rows to take from them."""
    if version < 3:  # rows at their storage row among all max_size rows
        return TensorDict.load_memmap(path / "storage"), live
    rows = TensorDict.load_memmap(path / ROWS_DIR)
    if rows.shape[0] != live.numel():
        raise ValueError(
            f"{path / ROWS_DIR} holds {rows.shape[0]} rows, its table {live.numel()}; "
            "the dump is damaged: restore it from a backup."
        )
    return rows, None


__all__ = ["ROWS_DIR", "SAMPLER_DIR", "TABLE_FILE", "VERSION", "read_rows", "read_table", "write_table"]
