"""Running experiments: run directories, crash-safe checkpoints, process shards, diagnostics.

These are the parts of a training script that are not the method itself (the recipes'
loops read as the paper's Fig. 1(b) because they live here):

* :mod:`.run_dir` -- create a run directory safely, one run per directory, resume rules;
* :mod:`.checkpoint` -- weights and demo buffer saved together, surviving a kill at any point;
* :mod:`.sharding` -- independent jobs over several processes;
* :mod:`.stop` -- SIGTERM / SIGINT: a checkpoint at the next safe point, one line, exit 128 + signum;
* :mod:`.metrics` -- per-iteration PPO diagnostics without a host sync per minibatch.
"""

from torchrl_chunk.experiment.checkpoint import (
    CheckpointError,
    load_checkpoint,
    recover_checkpoint,
    save_checkpoint,
)
from torchrl_chunk.experiment.metrics import IterationLog
from torchrl_chunk.experiment.run_dir import (
    RunDirError,
    check_writable,
    config_diff,
    load_run_settings,
    open_run_dir,
    resume_settings,
    save_run_settings,
)
from torchrl_chunk.experiment.sharding import map_shards, shard
from torchrl_chunk.experiment.stop import StopRequested, StopSignals

__all__ = [
    "CheckpointError",
    "IterationLog",
    "RunDirError",
    "StopRequested",
    "StopSignals",
    "check_writable",
    "config_diff",
    "load_checkpoint",
    "load_run_settings",
    "map_shards",
    "open_run_dir",
    "recover_checkpoint",
    "resume_settings",
    "save_checkpoint",
    "save_run_settings",
    "shard",
]
