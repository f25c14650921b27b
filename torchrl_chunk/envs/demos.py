"""Scripted-expert demonstrations for MetaWorld v3 (MT10 and the other MT50 tasks).

Section III.A.1: "The demonstration dataset is collected with the rule-based policy
provided with the environment, each trajectory capped at 200 steps." SFT uses 10
demonstrations per task, SFT-100 uses 100, and the self-BC buffer of the proposed method
is initialised with the same 10 (Section II.B, Eq. 6; its length limit is the longest
expert trajectory).

Some scripted policies fail some configurations (peg-insert-side about 15 %, and other
MT50 experts: ``scripts/demo_survey.py`` measures all fifty). Only successful episodes
are kept; :attr:`ExpertDemos.num_tries` counts the attempts, and a task whose expert
cannot give ``num_demos`` successes within ``max_tries`` attempts is refused with an
:class:`ExpertDemoError` naming the task and the counts.

Format (consumed by the demonstration buffer; keep it stable): every trajectory is a
``TensorDict`` of batch ``[T]`` (T = env steps up to and including the first success)::

    ("observation", "state")           float32 [T, 39]
    ("observation", "task_id")         int64   [T, 1]          index into ALL_V3_TASKS
    ("observation", "image")           uint8   [T, H, W, 3]   (from_pixels=True only)
    "action"                           float32 [T, 4]          clipped to [-1, 1]
    ("next", "reward")                 float32 [T, 1]          1 at the last step
    ("next", "done"/"terminated"/"success")  bool [T, 1]       True at the last step only
    ("next", "truncated")              bool    [T, 1]          all False
    ("next", "observation", ...)       the next observations (same keys as above)

All trajectories have the same keys, so ``torch.cat(demos.trajectories)`` is a flat
batch whose ends are marked by ``("next", "done")``.

A demo file records what it holds (task, seed, number of demos, episode cap, observation
kind: ``image_size`` or ``None`` for state only) and :func:`load_demos` checks it against what
the caller expects; every demo must move (:func:`~torchrl_chunk.data.trajectories.motionless`:
not all actions (near) zero, a state that changes), checked when demos are collected and
loaded; ``load_demos(..., replay=True)`` also replays every demo's actions from its
configuration (:func:`replay_demos`, from the attempt each demo came from,
:attr:`ExpertDemos.attempts`) and refuses a file whose demos do not reach success.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from torchrl_chunk._io import atomic_torch_save
from torchrl_chunk.data.trajectories import motionless
from torchrl_chunk.envs.metaworld.simulator import STATE_DIM, TaskSim
from torchrl_chunk.envs.metaworld.tasks import ALL_V3_TASKS, DEMO_STREAM, derive_seed, task_index, task_name
from torchrl_chunk.keys import ACTION_KEY, IMAGE_KEY, STATE_KEY, SUCCESS_KEY, TASK_ID_KEY

__all__ = ["DemoFileError", "ExpertDemoError", "ExpertDemos", "check_demos_move", "collect_expert_demos", "load_demos",
           "replay_demos", "save_demos", "scripted_policy"]

_FORMAT_VERSION = 1


class ExpertDemoError(RuntimeError):
    """The expert gave fewer than ``num_demos`` successful episodes in ``tries`` attempts."""

    def __init__(self, task: str, successes: int, num_demos: int, tries: int, max_tries: int, max_steps: int) -> None:
        self.task, self.successes, self.num_demos, self.tries = task, successes, num_demos, tries
        super().__init__(
            f"collect_expert_demos({task!r}): only {successes} of {num_demos} episodes succeeded in "
            f"{tries} tries, and max_tries={max_tries} leaves too few to reach {num_demos} (episodes capped "
            f"at {max_steps} steps): the scripted expert of {task} cannot give {num_demos} demos; raise "
            f"max_tries or max_steps, or leave {task} out of the tasks."
        )


class DemoFileError(ValueError):
    """Demos that must not be used: another task, seed, count or observation kind than
    expected, demos that never move, or demos that do not reach success when replayed.
    The message is one line naming the problem and the fix."""


def scripted_policy(task: str | int) -> Callable[[np.ndarray], np.ndarray]:
    """MetaWorld's rule-based policy of ``task`` as ``state -> action`` (unclipped)."""
    from metaworld.policies import ENV_POLICY_MAP

    name = task_name(task)
    if name not in ENV_POLICY_MAP:
        raise ValueError(f"MetaWorld has no scripted policy for {name!r}; demos cannot be collected for it.")
    return ENV_POLICY_MAP[name]().get_action


@dataclass
class ExpertDemos:
    """Successful scripted-expert trajectories of one task.

    Attributes:
        task: MetaWorld v3 task name.
        seed: seed of the demo configurations (demo stream, distinct from training and
            evaluation streams).
        trajectories: one ``TensorDict`` of batch ``[T]`` per demonstration (format in
            the module docstring).
        num_tries: episodes run to obtain them (failures are discarded).
        max_steps: the episode cap used while collecting.
        image_size: image size, or ``None`` for state-only demos.
        attempts: the attempt (0-based, below ``num_tries``) that gave each demo, i.e. the
            index of its configuration in the demo stream (:func:`replay_demos`); ``None``
            when unknown (files written before it was recorded, demos from elsewhere).
    """

    task: str
    seed: int
    trajectories: list[TensorDict]
    num_tries: int
    max_steps: int = 200
    image_size: int | None = None
    metadata: dict = field(default_factory=dict)
    attempts: list[int] | None = None

    def __len__(self) -> int:
        return len(self.trajectories)

    @property
    def success_rate(self) -> float:
        """Share of the attempts that succeeded (``len(self) / num_tries``)."""
        return len(self) / self.num_tries if self.num_tries else 0.0

    def summary(self) -> str:
        """One line: demos, attempts, lengths, e.g. for the recipe's log."""
        lengths = self.lengths
        span = f"lengths {min(lengths)}-{max(lengths)}" if lengths else "no demos"
        return (f"{self.task}: {len(self)} expert demos in {self.num_tries} attempts "
                f"({self.num_tries - len(self)} failed), {span} env steps (seed {self.seed})")

    @property
    def lengths(self) -> list[int]:
        """Trajectory lengths in env steps (steps to the first success)."""
        return [int(td.batch_size[0]) for td in self.trajectories]

    def cat(self) -> TensorDict:
        """All trajectories concatenated along time (ends marked by ``("next","done")``)."""
        return torch.cat(self.trajectories, 0)

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` (a ``torch.save`` file of plain tensors; atomic replace)."""
        return save_demos(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExpertDemos:
        """Read demos written by :meth:`save`."""
        return load_demos(path)


def _obs_dict(state: np.ndarray, task_id: int, image: np.ndarray | None) -> dict:
    out = {"state": torch.as_tensor(np.asarray(state, np.float32))}
    out["task_id"] = torch.tensor([task_id], dtype=torch.int64)
    if image is not None:
        out["image"] = torch.as_tensor(image.copy())
    return out


def collect_expert_demos(
    task: str | int,
    num_demos: int,
    seed: int,
    *,
    max_steps: int = 200,
    from_pixels: bool = False,
    image_size: int = 128,
    max_tries: int | None = None,
    policy: Callable[[np.ndarray], Any] | None = None,
) -> ExpertDemos:
    """Run MetaWorld's scripted policy and keep ``num_demos`` successful trajectories.

    Each try resets to a fresh configuration drawn from a generator seeded with
    ``derive_seed(seed, 0, demo stream)`` (so the demos are a pure function of
    ``(task, seed)`` and never reuse the evaluation configurations), runs the expert
    for at most ``max_steps`` steps, stops at the first success and keeps the episode
    only if it succeeded. Actions are clipped to ``[-1, 1]`` before they are executed
    and stored (the env clips them anyway, so the trajectory is unchanged). The
    policy's "Constant(s) may be too high" warnings are filtered.

    Args:
        task: MetaWorld v3 task name (any of ``ALL_V3_TASKS``) or its index.
        num_demos: number of successful trajectories to return.
        seed: non-negative demo seed.

    Keyword Args:
        max_steps: episode cap (paper: 200).
        from_pixels, image_size: also record 128 px HWC images.
        max_tries: give up with an :class:`ExpertDemoError` (a ``RuntimeError`` naming
            the task, the successes and the attempts) once this many episodes could no
            longer give ``num_demos`` successes (default ``10 * num_demos + 10``).
        policy: ``state [39] -> action [4]`` to use instead of the task's scripted
            expert (:func:`scripted_policy`), e.g. a failing stand-in in tests.

    Returns:
        :class:`ExpertDemos` with ``trajectories``, ``num_tries`` (attempts, failures
        included) and the settings.
    """
    name = task_name(task)
    if num_demos < 1:
        raise ValueError(f"num_demos must be >= 1, got {num_demos}.")
    max_tries = 10 * num_demos + 10 if max_tries is None else int(max_tries)
    if max_tries < num_demos:
        raise ValueError(f"max_tries ({max_tries}) must be >= num_demos ({num_demos}).")
    tid = task_index(name)
    act = scripted_policy(name) if policy is None else getattr(policy, "get_action", policy)
    sim = TaskSim(name, max_steps=max_steps, image_size=image_size if from_pixels else None)
    sim.seed(derive_seed(seed, 0, DEMO_STREAM))
    trajectories: list[TensorDict] = []
    attempts: list[int] = []  # the attempt of each kept demo (its configuration): replay_demos
    tries = 0
    try:
        while len(trajectories) < num_demos:
            if num_demos - len(trajectories) > max_tries - tries:  # cannot reach num_demos any more
                raise ExpertDemoError(name, len(trajectories), num_demos, tries, max_tries, int(max_steps))
            tries += 1
            state = sim.reset_fresh()
            image = sim.render() if from_pixels else None
            obs, actions, nxt_obs, successes, truncs = [], [], [], [], []
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")
                done = False
                while not done:
                    action = np.clip(np.asarray(act(state), np.float64), -1.0, 1.0).astype(np.float32)
                    obs.append(_obs_dict(state, tid, image))
                    state, success, truncated = sim.step(action)
                    image = sim.render() if from_pixels else None
                    actions.append(torch.as_tensor(action))
                    nxt_obs.append(_obs_dict(state, tid, image))
                    successes.append(success)
                    truncs.append(truncated)
                    done = success or truncated
            if not successes[-1]:
                continue
            T = len(actions)
            flag = torch.zeros(T, 1, dtype=torch.bool)
            flag[-1] = True
            traj = TensorDict(
                {
                    "observation": torch.stack([TensorDict(o, []) for o in obs]),
                    ACTION_KEY: torch.stack(actions),
                    "next": {
                        "observation": torch.stack([TensorDict(o, []) for o in nxt_obs]),
                        "reward": flag.to(torch.float32),
                        "done": flag.clone(),
                        "terminated": flag.clone(),
                        "truncated": torch.zeros(T, 1, dtype=torch.bool),
                        SUCCESS_KEY: flag.clone(),
                    },
                },
                batch_size=[T],
            )
            trajectories.append(traj)
            attempts.append(tries - 1)
    finally:
        sim.close()
    demos = ExpertDemos(
        task=name,
        seed=int(seed),
        trajectories=trajectories,
        num_tries=tries,
        max_steps=int(max_steps),
        image_size=int(image_size) if from_pixels else None,
        attempts=attempts,
    )
    check_demos_move(demos, f"collect_expert_demos({name!r}, seed={int(seed)})",
                     "the expert (policy=) must act; use MetaWorld's scripted policy or one that moves the arm")
    return demos


def check_demos_move(demos: ExpertDemos, where: str, fix: str) -> None:
    """Refuse (:class:`DemoFileError`, one line ``"<where>: ...; <fix>."``) demos of which one
    never moves (:func:`~torchrl_chunk.data.trajectories.motionless`: all its actions (near)
    zero, or its state never changes): cloned, it teaches the policy to stand still."""
    for i, td in enumerate(demos.trajectories):
        reason = motionless(td)
        if reason is not None:
            raise DemoFileError(
                f"{where}: expert demo {i} of {demos.task} never moves ({reason}) although it is marked "
                f"successful, and cloning it teaches the policy to stand still; {fix}."
            )


def replay_demos(demos: ExpertDemos, where: str | None = None) -> bool:
    """Replay every demo's actions from its configuration; refuse demos that do not reach success.

    Feasible for demos collected by :func:`collect_expert_demos` (any policy): attempt ``k``'s
    configuration is the ``k``-th reset of the demo stream seeded from ``(task, seed)``, and
    :attr:`ExpertDemos.attempts` records the attempt of each demo. The stream is re-seeded and
    reset once per attempt up to the last demo's (a failed attempt is only reset: its actions
    were not kept), and each demo's actions are executed from its reset (state only, no
    rendering: the same physics). A demo that does not reach success within its steps is
    refused with a one-line :class:`DemoFileError` naming the demo and the fix. Costs less
    than collecting (no expert policy, no rendering, no failed episodes): about 0.05 s per demo.

    Returns ``False`` without replaying when the attempts are unknown (``None``):
    demonstrations from elsewhere (LeRobot datasets, replay-buffer dumps), which record no
    configuration, and files written before attempts were recorded whose collection had
    failed attempts (:func:`load_demos`). ``True`` when every demo was replayed to success.
    """
    attempts = demos.attempts
    if attempts is None:
        return False
    where = where or f"{demos.task} demos of seed {demos.seed}"
    if len(attempts) != len(demos) or list(attempts) != sorted(set(attempts)) or (attempts and (
            attempts[0] < 0 or attempts[-1] >= demos.num_tries)):
        raise DemoFileError(f"{where}: the demos' attempts {list(attempts)} are not {len(demos)} increasing "
                            f"indices below num_tries={demos.num_tries}; the file is corrupt, delete it to "
                            "collect the demos again.")
    fix = ("the file is stale (collected by other code or another MetaWorld) or not what it says; "
           "delete it to collect the demos again")
    sim = TaskSim(demos.task, max_steps=demos.max_steps, image_size=None)
    sim.seed(derive_seed(demos.seed, 0, DEMO_STREAM))
    try:
        attempt = -1
        for i, (td, kept) in enumerate(zip(demos.trajectories, attempts)):
            while attempt < kept:  # the failed attempts before this demo's: their configurations are drawn
                sim.reset_fresh()
                attempt += 1
            success = False
            for action in td.get(ACTION_KEY).numpy():
                _, success, truncated = sim.step(action)
                if success or truncated:
                    break
            if not success:
                raise DemoFileError(
                    f"{where}: expert demo {i} of {demos.task} does not reach success when its "
                    f"{td.batch_size[0]} actions are replayed from its configuration (attempt {kept} of seed "
                    f"{demos.seed}); {fix}."
                )
    finally:
        sim.close()
    return True


def save_demos(demos: ExpertDemos, path: str | os.PathLike) -> Path:
    """Save ``demos`` to ``path`` (plain tensors, loadable with ``weights_only=True``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": "torchrl_chunk.expert_demos",
        "version": _FORMAT_VERSION,
        "task": demos.task,
        "seed": int(demos.seed),
        "num_tries": int(demos.num_tries),
        "max_steps": int(demos.max_steps),
        "image_size": demos.image_size,
        "metadata": dict(demos.metadata),
        "attempts": None if demos.attempts is None else [int(k) for k in demos.attempts],
        "trajectories": [td.to_dict() for td in demos.trajectories],
    }
    # jobs of several algorithms for one (task, seed) may collect the same demos at once
    # (launcher=ray): each replaces the file whole
    return atomic_torch_save(payload, path)


def load_demos(
    path: str | os.PathLike,
    *,
    task: str | int | None = None,
    seed: int | None = None,
    num: int | None = None,
    max_steps: int | None = None,
    from_pixels: bool | None = None,
    image_size: int | None = None,
    replay: bool = False,
) -> ExpertDemos:
    """Load demos saved by :func:`save_demos` and check that they are what the caller expects.

    A demo file records its task, seed, number of demos, episode cap and observation kind
    (``image_size``, ``None`` for state only); each of ``task``, ``seed``, ``num``,
    ``max_steps``, ``from_pixels`` and ``image_size`` (compared only with ``from_pixels``
    true or unset) that is given must match, and every trajectory's ``task_id`` must be the
    recorded task's. Every demo must move (:func:`check_demos_move`). ``replay=True``
    also replays every demo from its configuration and refuses demos that do not reach
    success (:func:`replay_demos`, about 0.05 s per demo). Every refusal is a one-line
    :class:`DemoFileError` (a ``ValueError``) naming what differs and the fix; missing and
    corrupt files give clear errors too.

    Files written before the demos' attempts were recorded (:attr:`ExpertDemos.attempts`)
    hold every other value checked here and are accepted; when no attempt failed, demo ``i``
    was attempt ``i`` and they are replayed, otherwise their configurations are unknown and
    they are not (``attempts`` stays ``None``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No expert demo file at {str(path)!r}. Create it with "
            f"collect_expert_demos(task, num_demos, seed).save({str(path)!r})."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (pickle/zip errors come in many types)
        raise ValueError(
            f"{str(path)!r} is not a readable expert demo file ({type(err).__name__}: {err}). "
            "It may be truncated or corrupt: delete it and collect the demos again."
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != "torchrl_chunk.expert_demos":
        raise ValueError(
            f"{str(path)!r} is not an expert demo file written by save_demos "
            "(missing format marker); delete it and collect the demos again."
        )
    if payload.get("version") != _FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has demo format version {payload.get('version')}, this code "
            f"reads version {_FORMAT_VERSION}; collect the demos again."
        )
    trajectories = []
    for i, d in enumerate(payload["trajectories"]):
        T = int(d[ACTION_KEY].shape[0])
        td = TensorDict.from_dict(d, batch_size=[T], auto_batch_size=False)
        state = td.get(STATE_KEY, None)
        if state is None or tuple(state.shape) != (T, STATE_DIM) or td.get(TASK_ID_KEY, None) is None:
            raise ValueError(
                f"{str(path)!r}: trajectory {i} lacks {STATE_KEY} [T, {STATE_DIM}] or "
                f"{TASK_ID_KEY}; the file is corrupt, collect the demos again."
            )
        if payload["image_size"] is not None and td.get(IMAGE_KEY, None) is None:
            raise ValueError(f"{str(path)!r}: trajectory {i} lacks {IMAGE_KEY}.")
        trajectories.append(td)
    demos = ExpertDemos(
        task=payload["task"],
        seed=payload["seed"],
        trajectories=trajectories,
        num_tries=payload["num_tries"],
        max_steps=payload["max_steps"],
        image_size=payload["image_size"],
        metadata=payload.get("metadata", {}),
        attempts=payload.get("attempts"),
    )
    if "attempts" not in payload and demos.num_tries == len(demos):  # written before attempts were recorded,
        demos.attempts = list(range(len(demos)))  # by collect_expert_demos: none failed, demo i is attempt i
    _check_expected(demos, path, task=task, seed=seed, num=num, max_steps=max_steps, from_pixels=from_pixels,
                    image_size=image_size)
    check_demos_move(demos, repr(str(path)), "delete the file to collect the demos again, or drop that demo")
    if replay:
        replay_demos(demos, repr(str(path)))
    return demos


def _kind(image_size: int | None) -> str:
    return "state-only demos" if image_size is None else f"{image_size} px image demos"


def _check_expected(demos: ExpertDemos, path: Path, **expected) -> None:
    """One :class:`DemoFileError` listing every recorded value that differs from an expected one."""
    differ = []
    want = expected["task"]
    if want is not None and task_name(want) != demos.task:
        differ.append(f"task {demos.task!r} (expected {task_name(want)!r})")
    for key, have in (("seed", demos.seed), ("max_steps", demos.max_steps)):
        value = expected[key]
        if value is not None and int(value) != int(have):
            differ.append(f"{key} {have} (expected {int(value)})")
    if expected["num"] is not None and int(expected["num"]) != len(demos):
        differ.append(f"{len(demos)} demos (expected {int(expected['num'])})")
    pixels, size = expected["from_pixels"], expected["image_size"]
    if pixels is not None or size is not None:
        want_size = None if pixels is False else size
        if pixels and want_size is None:  # images of any size
            if demos.image_size is None:
                differ.append("state-only demos (expected image demos)")
        elif want_size != demos.image_size:
            want_kind = _kind(None if want_size is None else int(want_size))
            differ.append(f"{_kind(demos.image_size)} (expected {want_kind})")
    tid = task_index(demos.task)
    for i, td in enumerate(demos.trajectories):
        ids = td.get(TASK_ID_KEY)
        if not bool((ids == tid).all()):
            other = int(ids[ids != tid].flatten()[0])
            name = ALL_V3_TASKS[other] if 0 <= other < len(ALL_V3_TASKS) else "?"
            differ.append(f"demo {i} with task_id {other} ({name}), not {demos.task}'s {tid}")
            break
    if differ:
        raise DemoFileError(
            f"{str(path)!r} does not hold the demos expected: {', '.join(differ)}; it is the file of other "
            "demos (or a stale cache): delete it to collect these demos again, or load the file that holds them."
        )
