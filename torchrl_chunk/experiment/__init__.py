"""Running experiments: jobs and their launcher, run directories, crash-safe checkpoints, outputs.

These are the parts of a training script that are not the method itself (the recipes'
loops read as the paper's Fig. 1(b) because they live here):

* :mod:`.launcher` -- :func:`launch`: a recipe's jobs (algorithm, task, seed) here, over
  processes or as Ray tasks, finished ones skipped on resume, errors in one line, Table I;
* :mod:`.run_dir` -- create a run directory safely, one run per directory, resume rules;
* :mod:`.settings` -- typed, closed settings checked before anything is written;
* :mod:`.checkpoint` -- weights and demo buffer saved together, surviving a kill at any point;
* :mod:`.state` -- :class:`JobState`, a job's counters, as its checkpoint saves them;
* :mod:`.results` -- ``result.json``, learning curves, ``results.md`` / ``results.csv``;
* :mod:`.shared_stage` -- a stage several jobs compute alike (the SFT of Table I's columns), run once;
* :mod:`.sharding` -- independent jobs over several processes;
* :mod:`.stop` -- SIGTERM / SIGINT: a checkpoint at the next safe point, one line, exit 128 + signum;
* :mod:`.metrics` -- per-iteration PPO diagnostics without a host sync per minibatch.

Command-line tools over finished run directories: ``python -m torchrl_chunk.experiment.merge_results``
(one Table I from several runs) and ``python -m torchrl_chunk.experiment.buffer_report``.
"""

from torchrl_chunk.experiment.checkpoint import (
    CheckpointError,
    last_good_checkpoint,
    load_checkpoint,
    recover_checkpoint,
    save_checkpoint,
    save_job_checkpoint,
)
from torchrl_chunk.experiment.launcher import (
    JobError,
    JobId,
    RayOptions,
    RunPlan,
    absolute_paths,
    failure_message,
    job_dir,
    launch,
)
from torchrl_chunk.experiment.metrics import IterationLog
from torchrl_chunk.experiment.results import finished_result, write_result, write_tables
from torchrl_chunk.experiment.run_dir import (
    RunDirError,
    check_writable,
    config_diff,
    load_run_settings,
    open_run_dir,
    resume_settings,
    save_run_settings,
)
from torchrl_chunk.experiment.shared_stage import load_stage, save_stage, settings_key
from torchrl_chunk.experiment.sharding import map_shards, shard
from torchrl_chunk.experiment.state import JobState
from torchrl_chunk.experiment.stop import StopRequested, StopSignals

__all__ = [
    "CheckpointError",
    "IterationLog",
    "JobError",
    "JobId",
    "JobState",
    "RayOptions",
    "RunDirError",
    "RunPlan",
    "StopRequested",
    "StopSignals",
    "absolute_paths",
    "check_writable",
    "config_diff",
    "failure_message",
    "finished_result",
    "job_dir",
    "last_good_checkpoint",
    "launch",
    "load_checkpoint",
    "load_run_settings",
    "load_stage",
    "map_shards",
    "open_run_dir",
    "recover_checkpoint",
    "resume_settings",
    "save_checkpoint",
    "save_job_checkpoint",
    "save_run_settings",
    "save_stage",
    "settings_key",
    "shard",
    "write_result",
    "write_tables",
]
