"""MetaWorld v3 tasks (MT10 and MT50), instructions, seed streams and evaluation configurations.

Section III.A.1 of the paper: "10 single-task environments from MT10 with sparse
rewards". Beyond the paper, any of MetaWorld v3's fifty tasks (MT50) can be used. Nothing
here steps a simulator; it names tasks and decides which configuration (object and goal
positions) an episode starts from.

Task identity: a task's ``task_id`` (an observation: the MLP's task embedding, the Octo
instruction row) is its index in :data:`ALL_V3_TASKS`, one fixed tuple of the fifty
tasks whose first ten are :data:`MT10_TASKS` in Table I order. So the ten MT10 tasks keep
the ids 0..9 they always had (MT10 runs are unchanged) and an id means the same task in
every run, whatever its task list. :func:`num_task_ids` gives the size of the id space a
task's model needs: 10 for the MT10 tasks (as before), 50 for the others.

Seeding: MetaWorld ignores
``reset(seed=...)`` and, unless ``seeded_rand_vec`` is set, draws configurations from
the *global* NumPy RNG. Here every sub-env owns a generator seeded with
:func:`derive_seed` ``(seed, env_index, stream)``; training resets draw a fresh
configuration from it. Evaluation resets use configuration ``i`` of a fixed list built
from :data:`EVAL_SEED` through MetaWorld's own task sampler (the legacy global
``RandomState`` stream, :func:`make_task_configs`), which training never uses.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable

import numpy as np

from torchrl_chunk.seeding import DEMO_STREAM, EXPLORATION_STREAM, TRAIN_STREAM, derive_seed

__all__ = [
    "DEMO_STREAM",
    "EXPLORATION_STREAM",
    "ALL_V3_TASKS",
    "EVAL_SEED",
    "MT10_TASKS",
    "MT50_TASKS",
    "NUM_EVAL_CONFIGS",
    "TASK_INSTRUCTIONS",
    "TASK_PRESETS",
    "TRAIN_STREAM",
    "bootstrap_config",
    "derive_seed",
    "make_eval_configs",
    "make_task_configs",
    "num_task_ids",
    "resolve_task_list",
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

#: The other forty tasks of MetaWorld v3's MT50, in MetaWorld's own order
#: (``metaworld.env_dict.ALL_V3_ENVIRONMENTS``) without the MT10 tasks.
_OTHER_MT50_TASKS: tuple[str, ...] = (
    "assembly-v3",
    "basketball-v3",
    "bin-picking-v3",
    "box-close-v3",
    "button-press-topdown-wall-v3",
    "button-press-v3",
    "button-press-wall-v3",
    "coffee-button-v3",
    "coffee-pull-v3",
    "coffee-push-v3",
    "dial-turn-v3",
    "disassemble-v3",
    "door-close-v3",
    "door-lock-v3",
    "door-unlock-v3",
    "hand-insert-v3",
    "faucet-open-v3",
    "faucet-close-v3",
    "hammer-v3",
    "handle-press-side-v3",
    "handle-press-v3",
    "handle-pull-side-v3",
    "handle-pull-v3",
    "lever-pull-v3",
    "pick-place-wall-v3",
    "pick-out-of-hole-v3",
    "plate-slide-v3",
    "plate-slide-side-v3",
    "plate-slide-back-v3",
    "plate-slide-back-side-v3",
    "peg-unplug-side-v3",
    "soccer-v3",
    "stick-push-v3",
    "stick-pull-v3",
    "push-wall-v3",
    "push-back-v3",
    "reach-wall-v3",
    "shelf-place-v3",
    "sweep-into-v3",
    "sweep-v3",
)

#: All fifty MetaWorld v3 tasks (MT50): the ten of :data:`MT10_TASKS` first, in Table I
#: order, then the other forty in MetaWorld's order. A task's ``task_id`` is its index
#: here (so the MT10 tasks keep ids 0..9); tables list tasks in this order.
ALL_V3_TASKS: tuple[str, ...] = MT10_TASKS + _OTHER_MT50_TASKS
#: MetaWorld's MT50 benchmark: every v3 task (the same tuple as :data:`ALL_V3_TASKS`).
MT50_TASKS: tuple[str, ...] = ALL_V3_TASKS

#: Named task lists of the recipe's ``tasks`` setting (``"all"`` is MT10, as it always was).
TASK_PRESETS: dict[str, tuple[str, ...]] = {"mt10": MT10_TASKS, "mt50": MT50_TASKS, "all": MT10_TASKS}

#: One fixed English instruction per task (the VLA prompt); the MT10 ones are unchanged.
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
    "assembly-v3": "pick up the ring nut and place it over the peg",
    "basketball-v3": "pick up the ball and dunk it into the basket",
    "bin-picking-v3": "pick the puck out of one bin and place it into the other bin",
    "box-close-v3": "pick up the lid and close the box with it",
    "button-press-topdown-wall-v3": "press the button from the top, reaching past the wall",
    "button-press-v3": "press the button from the front",
    "button-press-wall-v3": "press the button from the front, reaching past the wall",
    "coffee-button-v3": "press the button of the coffee machine",
    "coffee-pull-v3": "pull the mug out from under the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "pick the ring nut up off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by turning the lock down",
    "door-unlock-v3": "unlock the door by turning the lock",
    "hand-insert-v3": "move the gripper into the hole to the goal position",
    "faucet-open-v3": "turn the faucet handle to open it",
    "faucet-close-v3": "turn the faucet handle to close it",
    "hammer-v3": "pick up the hammer and hammer the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck and place it at the goal position behind the wall",
    "pick-out-of-hole-v3": "pick the puck up out of the hole",
    "plate-slide-v3": "slide the plate into the cabinet",
    "plate-slide-side-v3": "slide the plate sideways into the cabinet",
    "plate-slide-back-v3": "slide the plate back out of the cabinet",
    "plate-slide-back-side-v3": "slide the plate sideways back out of the cabinet",
    "peg-unplug-side-v3": "pull the peg out of the hole sideways",
    "soccer-v3": "push the soccer ball into the goal",
    "stick-push-v3": "pick up the stick and push the thermos to the goal with it",
    "stick-pull-v3": "pick up the stick and pull the thermos to the goal with it",
    "push-wall-v3": "push the puck past the wall to the goal position",
    "push-back-v3": "push the puck back to the goal position",
    "reach-wall-v3": "reach the goal position behind the wall with the gripper",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the edge of the table",
}

#: Seed of the fixed evaluation configurations (the paper: "128 episodes under a shared
#: random seed for all models"). Training and demo collection never use this stream.
EVAL_SEED: int = 20250930
#: Number of fixed evaluation configurations per task.
NUM_EVAL_CONFIGS: int = 128

def _unknown_task_message(task) -> str:
    """One line naming the closest valid task names (MetaWorld v3 spellings)."""
    probe = str(task).strip().lower().replace("_", "-")
    if probe.endswith(("-v1", "-v2")):
        probe = probe[:-3]
    candidates = [probe] if probe.endswith("-v3") else [f"{probe}-v3", probe]
    close: list[str] = []
    for cand in candidates:
        close += [t for t in difflib.get_close_matches(cand, ALL_V3_TASKS, n=3, cutoff=0.7) if t not in close]
    hint = f" Did you mean {', '.join(repr(t) for t in close[:3])}?" if close else ""
    return (
        f"Unknown MetaWorld v3 task {task!r}.{hint} Valid tasks: {', '.join(ALL_V3_TASKS)} "
        "(presets: mt10 = the first 10, mt50 = all 50)."
    )


def task_index(task: str | int) -> int:
    """The ``task_id`` of ``task``: its index in :data:`ALL_V3_TASKS` (0..9 are MT10's).

    Raises a one-line ``ValueError`` naming the closest valid names for an unknown name
    (e.g. ``"reach"`` or ``"reach-v2"``: did you mean ``'reach-v3'``).
    """
    if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
        if 0 <= int(task) < len(ALL_V3_TASKS):
            return int(task)
        raise ValueError(
            f"task index {task} is out of range; valid indices are 0..{len(ALL_V3_TASKS) - 1} "
            f"(0..{len(MT10_TASKS) - 1} are MT10's {', '.join(MT10_TASKS)})."
        )
    if task in ALL_V3_TASKS:
        return ALL_V3_TASKS.index(task)
    raise ValueError(_unknown_task_message(task))


def task_name(task: str | int) -> str:
    """The MetaWorld v3 task name of a name or index (validated as in :func:`task_index`)."""
    return ALL_V3_TASKS[task_index(task)]


def num_task_ids(task: str | int) -> int:
    """Size of the ``task_id`` space of ``task``'s env spec and model (embedding rows).

    10 for the MT10 tasks (ids 0..9, exactly as before MT50 existed, so their models
    draw the same initial weights) and 50 for the others. Either way the ids index
    :data:`ALL_V3_TASKS`, so a table of ``num_task_ids`` rows is
    ``ALL_V3_TASKS[:num_task_ids(task)]``.
    """
    return len(MT10_TASKS) if task_index(task) < len(MT10_TASKS) else len(ALL_V3_TASKS)


def resolve_task_list(tasks: str | Iterable[str]) -> list[str]:
    """The task names of a ``tasks`` setting: a preset (``"mt10"``, ``"mt50"``, ``"all"``
    = MT10) or a list of MetaWorld v3 task names, kept in the given order.

    Raises a one-line ``ValueError`` naming every unknown name with its closest valid
    names, a repeated name, or an empty list.
    """
    if isinstance(tasks, str):
        key = tasks.strip().lower()
        if key in TASK_PRESETS:
            return list(TASK_PRESETS[key])
        if key not in ALL_V3_TASKS:
            raise ValueError(
                f"tasks={tasks!r} is neither a preset ({', '.join(TASK_PRESETS)}) nor a task. "
                + _unknown_task_message(tasks)
            )
        tasks = [key]
    names = list(tasks)
    if not names:
        raise ValueError("tasks is an empty list; give a preset (mt10, mt50) or at least one task name.")
    bad = [t for t in names if not isinstance(t, str) or t not in ALL_V3_TASKS]
    if bad:
        raise ValueError(
            f"unknown task(s) {bad}: "
            + " ".join(_unknown_task_message(t).split(" Valid tasks:")[0] for t in bad)
            + f" Valid tasks: {', '.join(ALL_V3_TASKS)} (presets: mt10, mt50)."
        )
    repeated = sorted({t for t in names if names.count(t) > 1})
    if repeated:
        raise ValueError(f"task(s) {repeated} are listed more than once in tasks.")
    return names


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


@functools.lru_cache(maxsize=64)
def bootstrap_config(task: str):
    """One goal-observable configuration, only used to set a fresh env's flags."""
    return make_task_configs(task, 1, 1)[0]
