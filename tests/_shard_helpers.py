"""A picklable job function for tests of torchrl_chunk.experiment.sharding (spawned processes)."""

import os


def job(items, scale, position):
    if "boom" in items:
        raise ValueError("boom in a shard")
    return [(x * scale, position, os.getpid()) for x in items]
