"""Jobs over processes: round-robin shards, results in order, errors surface."""

from __future__ import annotations

import os

import pytest
from _shard_helpers import job

from torchrl_chunk.experiment import map_shards, shard


def test_shard_is_round_robin_and_never_empty():
    assert shard([1, 2, 3, 4, 5], 2) == [[1, 3, 5], [2, 4]]
    assert shard([1, 2], 4) == [[1], [2]]
    with pytest.raises(ValueError, match="num_shards must be >= 1"):
        shard([1], 0)


def test_one_shard_runs_in_this_process():
    assert map_shards(job, [[1, 2]], 10) == [(10, 0, os.getpid()), (20, 0, os.getpid())]


def test_several_shards_run_in_child_processes_in_order():
    out = map_shards(job, shard([1, 2, 3], 2), 1)
    assert [(x, pos) for x, pos, _ in out] == [(1, 0), (3, 0), (2, 1)]
    # A pool of 2 spawned workers (a fast shard can leave both to one of them).
    assert os.getpid() not in {pid for *_, pid in out}
    with pytest.raises(ValueError, match="boom in a shard"):
        map_shards(job, [["boom"], [1]], 1)
