"""MetaWorld MT10 for action-chunked PPO (paper Section III.A.1), in three modules.

* :mod:`~torchrl_chunk.envs.metaworld.tasks`: the MT10 task list and instructions, seed
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
    DEMO_STREAM,
    EVAL_SEED,
    MT10_TASKS,
    NUM_EVAL_CONFIGS,
    TASK_INSTRUCTIONS,
    TRAIN_STREAM,
    derive_seed,
    make_eval_configs,
    make_task_configs,
    task_index,
    task_name,
)

__all__ = [
    "ACTION_DIM",
    "CAMERA",
    "DEMO_STREAM",
    "EVAL_SEED",
    "MT10_TASKS",
    "MetaWorldEnv",
    "NUM_EVAL_CONFIGS",
    "NonFiniteActionError",
    "NonFiniteObservationError",
    "STATE_DIM",
    "TASK_INSTRUCTIONS",
    "TRAIN_STREAM",
    "TaskSim",
    "derive_seed",
    "make_eval_configs",
    "make_metaworld_env",
    "make_task_configs",
    "task_index",
    "task_name",
]
