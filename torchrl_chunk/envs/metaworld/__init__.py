"""MetaWorld v3 (MT10, MT50) for action-chunked PPO (paper Section III.A.1), in four modules.

* :mod:`~torchrl_chunk.envs.metaworld.tasks`: the task lists (:data:`MT10_TASKS`,
  :data:`ALL_V3_TASKS` = MT50, whose index is a task's ``task_id``), instructions, seed
  streams (:func:`derive_seed`) and the fixed evaluation configurations;
* :mod:`~torchrl_chunk.envs.metaworld.simulator`: :class:`TaskSim`, one raw MetaWorld
  simulator with the paper's episode rules and its lazily made camera renderer;
* :mod:`~torchrl_chunk.envs.metaworld.env`: :class:`MetaWorldEnv` (N simulators as one
  batched TorchRL env) and the factory :func:`make_metaworld_env`;
* :mod:`~torchrl_chunk.envs.metaworld.errors`: :class:`NonFiniteObservationError` (the
  simulator diverged) and :class:`NonFiniteActionError` (the policy did).
"""

from torchrl_chunk.envs.metaworld.env import MetaWorldEnv, make_metaworld_env
from torchrl_chunk.envs.metaworld.errors import NonFiniteActionError, NonFiniteObservationError
from torchrl_chunk.envs.metaworld.simulator import ACTION_DIM, CAMERA, STATE_DIM, TaskSim
from torchrl_chunk.envs.metaworld.tasks import (
    ALL_V3_TASKS,
    DEMO_STREAM,
    EVAL_SEED,
    MT10_TASKS,
    MT50_TASKS,
    NUM_EVAL_CONFIGS,
    TASK_INSTRUCTIONS,
    TASK_PRESETS,
    TRAIN_STREAM,
    derive_seed,
    make_eval_configs,
    make_task_configs,
    num_task_ids,
    resolve_task_list,
    task_index,
    task_name,
)

__all__ = [
    "ACTION_DIM",
    "ALL_V3_TASKS",
    "CAMERA",
    "DEMO_STREAM",
    "EVAL_SEED",
    "MT10_TASKS",
    "MT50_TASKS",
    "MetaWorldEnv",
    "NUM_EVAL_CONFIGS",
    "NonFiniteActionError",
    "NonFiniteObservationError",
    "STATE_DIM",
    "TASK_INSTRUCTIONS",
    "TASK_PRESETS",
    "TRAIN_STREAM",
    "TaskSim",
    "derive_seed",
    "make_eval_configs",
    "make_metaworld_env",
    "make_task_configs",
    "num_task_ids",
    "resolve_task_list",
    "task_index",
    "task_name",
]
