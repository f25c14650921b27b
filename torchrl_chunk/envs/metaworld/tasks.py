"""The MT10 tasks, their instructions, seed streams and fixed evaluation configurations.

Section III.A.1 of the paper: "10 single-task environments from MT10 with sparse
rewards". Nothing here steps a simulator; it names tasks and decides which
configuration (object and goal positions) an episode starts from.

Seeding (see ``notes/metaworld.md`` sections 1.6 and 7): MetaWorld ignores
``reset(seed=...)`` and, unless ``seeded_rand_vec`` is set, draws configurations from
the *global* NumPy RNG. Here every sub-env owns a generator seeded with
:func:`derive_seed` ``(seed, env_index, stream)``; training resets draw a fresh
configuration from it. Evaluation resets use configuration ``i`` of a fixed list built
from :data:`EVAL_SEED` through MetaWorld's own task sampler (the legacy global
``RandomState`` stream, :func:`make_task_configs`), which training never uses.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "DEMO_STREAM",
    "EXPLORATION_STREAM",
    "EVAL_SEED",
    "MT10_TASKS",
    "NUM_EVAL_CONFIGS",
    "TASK_INSTRUCTIONS",
    "TRAIN_STREAM",
    "bootstrap_config",
    "derive_seed",
    "make_eval_configs",
    "make_task_configs",
    "task_index",
    "task_name",
]

#: The ten MT10 tasks in the order of the paper's Table I.
MT10_TASKS: tuple[str, ...] = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)

#: One fixed English instruction per task (the VLA prompt).
TASK_INSTRUCTIONS: dict[str, str] = {
    "reach-v3": "reach the red goal position with the gripper",
    "push-v3": "push the puck to the goal position",
    "pick-place-v3": "pick up the puck and place it at the goal position",
    "door-open-v3": "open the door by pulling its handle",
    "drawer-open-v3": "open the drawer",
    "drawer-close-v3": "close the drawer",
    "button-press-topdown-v3": "press the button from the top",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}

#: Seed of the fixed evaluation configurations (the paper: "128 episodes under a shared
#: random seed for all models"). Training and demo collection never use this stream.
EVAL_SEED: int = 20250930
#: Number of fixed evaluation configurations per task.
NUM_EVAL_CONFIGS: int = 128

#: Seed-sequence stream tag of the training envs (see :func:`derive_seed`).
TRAIN_STREAM = 0
#: Seed-sequence stream tag of scripted-expert demonstration collection.
DEMO_STREAM = 1
#: Seed-sequence stream tag of a remote collector's exploration noise
#: (:class:`torchrl_chunk.distributed.SeededCollector`).
EXPLORATION_STREAM = 3


def task_index(task: str | int) -> int:
    """Index of ``task`` in :data:`MT10_TASKS`; raises a ``ValueError`` naming the valid ones."""
    if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
        if 0 <= int(task) < len(MT10_TASKS):
            return int(task)
        raise ValueError(
            f"task index {task} is out of range; valid indices are 0..{len(MT10_TASKS) - 1} "
            f"for {list(MT10_TASKS)}."
        )
    if task in MT10_TASKS:
        return MT10_TASKS.index(task)
    hint = ""
    if isinstance(task, str) and f"{task}-v3" in MT10_TASKS:
        hint = f" Did you mean {task + '-v3'!r}?"
    raise ValueError(
        f"Unknown MetaWorld MT10 task {task!r}.{hint} Valid tasks: {', '.join(MT10_TASKS)}."
    )


def task_name(task: str | int) -> str:
    """The MT10 task name of a name or index (validated as in :func:`task_index`)."""
    return MT10_TASKS[task_index(task)]


def derive_seed(seed: int, index: int, stream: int = TRAIN_STREAM) -> int:
    """A 32-bit seed for sub-env ``index``, independent across indices and streams.

    ``SeedSequence`` hashing avoids the MetaWorld traps "seed 0 means unseeded" and
    "consecutive seeds share structure".
    """
    if int(seed) < 0:
        raise ValueError(f"seeds must be non-negative integers, got {seed}.")
    state = np.random.SeedSequence([int(seed), int(index), int(stream)]).generate_state(1)
    return int(state[0])


def make_task_configs(task: str, num: int, seed: int) -> list:
    """``num`` configurations (MetaWorld ``Task``) of ``task`` from ``metaworld.MT1(task, seed)``.

    MetaWorld's goal count is a module-level knob; it is raised to ``num`` and always
    restored. The list is a pure function of its arguments (the global NumPy state does
    not matter).
    """
    import metaworld

    old = metaworld._N_GOALS
    metaworld._N_GOALS = int(num)  # module-level knob (it leaks): always restored below
    try:
        bench = metaworld.MT1(task, seed=int(seed))
    finally:
        metaworld._N_GOALS = old
    return list(bench.train_tasks)


@functools.lru_cache(maxsize=64)
def _cached_eval_configs(task: str, num_configs: int, eval_seed: int) -> tuple:
    return tuple(make_task_configs(task, num_configs, eval_seed))


def make_eval_configs(
    task: str | int, num_configs: int = NUM_EVAL_CONFIGS, eval_seed: int = EVAL_SEED
) -> list:
    """The fixed evaluation configurations of ``task`` (a list of MetaWorld ``Task``).

    Built once per process with ``metaworld.MT1(task, seed=eval_seed)`` and the goal
    count raised to ``num_configs``; configuration ``i`` fixes the object and goal
    positions of evaluation episode ``i``. The list is a pure function of
    ``(task, num_configs, eval_seed)``.
    """
    task = task_name(task)
    if num_configs < 1:
        raise ValueError(f"num_configs must be >= 1, got {num_configs}.")
    if eval_seed is None or int(eval_seed) < 0:
        raise ValueError(f"eval_seed must be a non-negative int, got {eval_seed}.")
    return list(_cached_eval_configs(task, int(num_configs), int(eval_seed)))


@functools.lru_cache(maxsize=16)
def bootstrap_config(task: str):
    """One goal-observable configuration, only used to set a fresh env's flags."""
    return make_task_configs(task, 1, 1)[0]
