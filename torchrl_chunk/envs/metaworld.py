"""MetaWorld MT10 single-task environments in TorchRL's VLA key schema.

Section III.A.1 of the paper: "10 single-task environments from MT10 with sparse
rewards ... a fixed camera with an elevation of -25 deg and an azimuth of 145 deg". This
module provides

* :data:`MT10_TASKS` (Table I order) and :data:`TASK_INSTRUCTIONS`;
* :class:`MetaWorldEnv`: ``N`` MetaWorld envs of one task stepped sequentially in one
  process, as one batch-locked TorchRL env of batch ``[N]`` that honours ``"_step"``
  (fastest on few cores for state observations: one batched policy forward per
  decision, no inter-process traffic);
* :func:`make_metaworld_env`: the factory (optional ``ParallelEnv`` workers for pixels,
  chunking through :class:`~torchrl_chunk.envs.ChunkedEnv`);
* :func:`make_eval_configs`: the fixed evaluation configurations.

Keys (per env, ``*B`` = batch dims):

* ``("observation", "state")``: float32 ``[*B, 39]`` (MetaWorld's goal-observable state);
* ``("observation", "task_id")``: int64 ``[*B, 1]``, index into :data:`MT10_TASKS`;
* ``("observation", "image")`` (``from_pixels=True``): uint8 ``[*B, H, W, 3]``,
  **HWC**, RGB, upright, from a free camera (elevation -25, azimuth 145, lookat
  (0, 0.65, 0), distance 1.25), shadows and reflections off;
* ``"language_instruction"`` (``include_instruction=True``): non-tensor string;
* ``"success"``: bool ``[*B, 1]``, MetaWorld's ``info["success"]`` of this step;
* ``"reward"``: float32 ``[*B, 1]``, 1 at the first success step, else 0;
* ``"terminated"`` on success, ``"truncated"`` at ``max_steps`` without success
  (bootstrap), ``"done"`` = either.

Seeding (see ``notes/metaworld.md`` sections 1.6 and 7): MetaWorld ignores
``reset(seed=...)`` and, unless ``seeded_rand_vec`` is set, draws configurations from
the *global* NumPy RNG. Here every sub-env owns a generator seeded with
``SeedSequence([seed, env_index, stream])``; training resets draw a fresh configuration
from it (``seeded_rand_vec=True``). Evaluation resets use configuration ``i`` of a fixed
list built from :data:`EVAL_SEED` through MetaWorld's own task sampler (the legacy
global ``RandomState`` stream), which training never uses.
"""

from __future__ import annotations

import atexit
import functools
import weakref
from typing import Any, Literal

import numpy as np
import torch
from tensordict import NonTensorData, TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, NonTensor, Unbounded
from torchrl.envs import EnvBase, ParallelEnv

from torchrl_chunk.envs import _gl
from torchrl_chunk.envs.chunked import ChunkedEnv, RewardAggregation
from torchrl_chunk.keys import ACTION_KEY, INSTRUCTION_KEY, SUCCESS_KEY

__all__ = [
    "CAMERA",
    "EVAL_SEED",
    "MT10_TASKS",
    "MetaWorldEnv",
    "TASK_INSTRUCTIONS",
    "make_eval_configs",
    "make_metaworld_env",
    "task_index",
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

#: Free camera of the paper's figures (elevation -25, azimuth 145); fovy is the model's 45.
CAMERA: dict[str, Any] = {
    "lookat": (0.0, 0.65, 0.0),
    "distance": 1.25,
    "azimuth": 145.0,
    "elevation": -25.0,
}

STATE_DIM = 39
ACTION_DIM = 4
# Seed-sequence stream tags: distinct streams for training envs and demo collection.
_TRAIN_STREAM = 0
_DEMO_STREAM = 1


# ---------------------------------------------------------------------------------------
# task names, seeds, configurations
# ---------------------------------------------------------------------------------------
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


def _task_name(task: str | int) -> str:
    return MT10_TASKS[task_index(task)]


def derive_seed(seed: int, index: int, stream: int = _TRAIN_STREAM) -> int:
    """A 32-bit seed for sub-env ``index``, independent across indices and streams.

    ``SeedSequence`` hashing avoids the MetaWorld traps "seed 0 means unseeded" and
    "consecutive seeds share structure".
    """
    if int(seed) < 0:
        raise ValueError(f"seeds must be non-negative integers, got {seed}.")
    state = np.random.SeedSequence([int(seed), int(index), int(stream)]).generate_state(1)
    return int(state[0])


def _make_tasks(task: str, num: int, seed: int) -> list:
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
    return tuple(_make_tasks(task, num_configs, eval_seed))


def make_eval_configs(
    task: str | int, num_configs: int = NUM_EVAL_CONFIGS, eval_seed: int = EVAL_SEED
) -> list:
    """The fixed evaluation configurations of ``task`` (a list of MetaWorld ``Task``).

    Built once per process with ``metaworld.MT1(task, seed=eval_seed)`` and the goal
    count raised to ``num_configs``; configuration ``i`` fixes the object and goal
    positions of evaluation episode ``i``. The list is a pure function of
    ``(task, num_configs, eval_seed)``.
    """
    task = _task_name(task)
    if num_configs < 1:
        raise ValueError(f"num_configs must be >= 1, got {num_configs}.")
    if eval_seed is None or int(eval_seed) < 0:
        raise ValueError(f"eval_seed must be a non-negative int, got {eval_seed}.")
    return list(_cached_eval_configs(task, int(num_configs), int(eval_seed)))


@functools.lru_cache(maxsize=16)
def _bootstrap_task(task: str):
    # one goal-observable Task, only used to set the env flags (goal observable, task set)
    return _make_tasks(task, 1, 1)[0]


# ---------------------------------------------------------------------------------------
# one raw MetaWorld env (numpy level, no TorchRL)
# ---------------------------------------------------------------------------------------
_LIVE_RENDERING_SIMS: weakref.WeakSet = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _close_renderers() -> None:
    # Free GL contexts before interpreter teardown (otherwise EGL prints tracebacks).
    for sim in list(_LIVE_RENDERING_SIMS):
        sim.close_renderer()


def _track_renderer(sim: _TaskSim) -> None:
    global _ATEXIT_REGISTERED
    if not _ATEXIT_REGISTERED:
        # registered after MuJoCo's own EGL atexit hook (made with the first context),
        # so it runs before the display is terminated (atexit runs last-in first-out)
        atexit.register(_close_renderers)
        _ATEXIT_REGISTERED = True
    _LIVE_RENDERING_SIMS.add(sim)


class _TaskSim:
    """One raw MetaWorld env of one task: sparse success, step cap, optional renderer."""

    def __init__(self, task: str, *, max_steps: int, image_size: int | None) -> None:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        self.task = task
        self.raw = ALL_V3_ENVIRONMENTS[task]()
        self.raw.set_task(_bootstrap_task(task))
        self.raw.max_path_length = max(int(max_steps), self.raw.max_path_length)
        self.max_steps = int(max_steps)
        self.image_size = image_size
        self._renderer = None
        self._camera = None
        self.t = 0
        self.done = True

    # -- configuration
    def seed(self, seed: int) -> None:
        self.raw.seed(int(seed))

    def reset_fresh(self) -> np.ndarray:
        """Reset to a new configuration drawn from this env's own RNG (training)."""
        self.raw._freeze_rand_vec = False
        self.raw.seeded_rand_vec = True  # use raw.np_random, not the global np.random
        return self._reset()

    def reset_config(self, config) -> np.ndarray:
        """Reset to a fixed configuration (a MetaWorld ``Task``), e.g. for evaluation."""
        self.raw.set_task(config)  # freezes the rand_vec to the config's
        return self._reset()

    def _reset(self) -> np.ndarray:
        state, _ = self.raw.reset()
        self.t = 0
        self.done = False
        return state  # float64, as MetaWorld returns it (the scripted policies read it)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, bool, bool]:
        """One env step; returns ``(state, success, truncated)``."""
        if self.done:
            raise RuntimeError(
                f"{self.task}: stepping a finished episode; reset it first (pass a "
                "'_reset' mask) or exclude it with a '_step' mask."
            )
        state, _, _, _, info = self.raw.step(action)
        self.t += 1
        success = bool(info["success"])
        truncated = (not success) and self.t >= self.max_steps
        self.done = success or truncated
        return state, success, truncated

    # -- pixels
    def render(self) -> np.ndarray:
        if self._renderer is None:
            self._renderer = self._make_renderer()
            _track_renderer(self)
        self._renderer.update_scene(self.raw.data, camera=self._camera)
        return self._renderer.render()

    def _make_renderer(self):
        import mujoco

        _gl.ensure_headless_gl()
        size = int(self.image_size)
        vis = self.raw.model.vis.global_
        vis.offwidth = max(int(vis.offwidth), size)
        vis.offheight = max(int(vis.offheight), size)
        try:
            renderer = mujoco.Renderer(self.raw.model, size, size)
        except Exception as err:  # noqa: BLE001  (GL errors come in many types)
            raise _gl.gl_error(err) from err
        if getattr(renderer, "_gl_context", None) is None and getattr(
            renderer, "_mjr_context", None
        ) is None:
            raise _gl.gl_error()
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        cam.lookat[:] = CAMERA["lookat"]
        cam.distance = CAMERA["distance"]
        cam.azimuth = CAMERA["azimuth"]
        cam.elevation = CAMERA["elevation"]
        self._camera = cam
        return renderer

    def close_renderer(self) -> None:
        if self._renderer is not None:
            try:
                self._renderer.close()
            finally:
                self._renderer = None

    def close(self) -> None:
        self.close_renderer()
        self.raw.close()


# ---------------------------------------------------------------------------------------
# TorchRL env: N sub-envs stepped sequentially in this process
# ---------------------------------------------------------------------------------------
class MetaWorldEnv(EnvBase):
    """``num_envs`` MetaWorld envs of one task as one batch-locked TorchRL env.

    The sub-envs are stepped one after the other in this process (no worker
    processes): on a few CPU cores this is the fastest layout for state observations,
    and the policy runs once per decision on the whole batch. The env honours
    ``"_step"`` (masked-out sub-envs are not stepped; their previous observation is
    returned with reward 0) and partial ``"_reset"``. Stepping a finished sub-env
    without resetting it raises.

    Args:
        task: an MT10 task name (see :data:`MT10_TASKS`) or its index.

    Keyword Args:
        num_envs: number of sub-envs; ``None`` gives an unbatched env (batch ``[]``),
            e.g. one per ``ParallelEnv`` worker.
        seed: base seed; sub-env ``i`` is seeded with
            ``derive_seed(seed, worker_index_offset + i)``.
        max_steps: episode cap in env steps (truncation, bootstrapped). Default 200.
        from_pixels: add ``("observation", "image")`` (uint8, HWC).
        image_size: image height and width (default 128).
        mode: ``"train"`` (every reset draws a fresh configuration from the sub-env's
            RNG) or ``"eval"`` (resets use the fixed configurations of
            :func:`make_eval_configs`; pass ``"config_index"`` (int64 ``[*B, 1]``) in
            the reset tensordict to choose them, otherwise they are used in order).
        num_eval_configs, eval_seed: the evaluation configurations (eval mode).
        include_instruction: add the non-tensor ``"language_instruction"`` entry
            (off by default: TorchRL's ``Collector`` fails on non-tensor entries from
            the second batch on, see ``notes/torchrl-api.md`` section 3).
        worker_index_offset: offset of the sub-env indices used for seeding (distinct
            offsets give distinct workers).
        device: device of the output tensors.
    """

    def __init__(
        self,
        task: str | int,
        *,
        num_envs: int | None = 1,
        seed: int = 0,
        max_steps: int = 200,
        from_pixels: bool = False,
        image_size: int = 128,
        mode: Literal["train", "eval"] = "train",
        num_eval_configs: int = NUM_EVAL_CONFIGS,
        eval_seed: int = EVAL_SEED,
        include_instruction: bool = False,
        worker_index_offset: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.task = _task_name(task)
        self.task_id = task_index(self.task)
        if num_envs is not None and int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1 (or None for an unbatched env), got {num_envs}.")
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
        if from_pixels and int(image_size) < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {image_size}.")
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}.")
        batch = () if num_envs is None else (int(num_envs),)
        super().__init__(device=device, batch_size=torch.Size(batch))
        self.num_sims = 1 if num_envs is None else int(num_envs)
        self.max_steps = int(max_steps)
        self.from_pixels = bool(from_pixels)
        self.image_size = int(image_size)
        self.mode = mode
        self.include_instruction = bool(include_instruction)
        self.worker_index_offset = int(worker_index_offset)
        self.instruction = TASK_INSTRUCTIONS[self.task]
        self._sims = [
            _TaskSim(
                self.task,
                max_steps=self.max_steps,
                image_size=self.image_size if self.from_pixels else None,
            )
            for _ in range(self.num_sims)
        ]
        self.eval_configs = (
            make_eval_configs(self.task, num_eval_configs, eval_seed) if mode == "eval" else None
        )
        self._cursor = 0
        self._set_seed(seed)
        n = self.num_sims
        self._state = np.zeros((n, STATE_DIM), np.float32)
        self._success = np.zeros((n, 1), bool)
        self._terminated = np.zeros((n, 1), bool)
        self._truncated = np.zeros((n, 1), bool)
        self._image = (
            np.zeros((n, self.image_size, self.image_size, 3), np.uint8)
            if self.from_pixels
            else None
        )
        self._task_ids = torch.full((n, 1), self.task_id, dtype=torch.int64)
        self._make_specs()

    # ------------------------------------------------------------------ specs
    def _make_specs(self) -> None:
        b = tuple(self.batch_size)
        dev = self.device
        obs = Composite(
            state=Unbounded((*b, STATE_DIM), dtype=torch.float32, device=dev),
            task_id=Categorical(len(MT10_TASKS), (*b, 1), dtype=torch.int64, device=dev),
            shape=b,
            device=dev,
        )
        if self.from_pixels:
            obs["image"] = Bounded(
                0, 255, (*b, self.image_size, self.image_size, 3), dtype=torch.uint8, device=dev
            )
        spec = Composite(
            observation=obs,
            **{SUCCESS_KEY: Categorical(2, (*b, 1), dtype=torch.bool, device=dev)},
            shape=b,
            device=dev,
        )
        if self.include_instruction:
            spec[INSTRUCTION_KEY] = NonTensor(shape=b, example_data=self.instruction, device=dev)
        self.observation_spec = spec
        self.action_spec = Bounded(-1.0, 1.0, (*b, ACTION_DIM), dtype=torch.float32, device=dev)
        self.reward_spec = Bounded(0.0, 1.0, (*b, 1), dtype=torch.float32, device=dev)
        self.full_done_spec = Composite(
            done=Categorical(2, (*b, 1), dtype=torch.bool, device=dev),
            terminated=Categorical(2, (*b, 1), dtype=torch.bool, device=dev),
            truncated=Categorical(2, (*b, 1), dtype=torch.bool, device=dev),
            shape=b,
            device=dev,
        )

    # ------------------------------------------------------------------ helpers
    def _flat_mask(self, tensordict: TensorDictBase | None, key: str) -> np.ndarray:
        if tensordict is None:
            return np.ones(self.num_sims, bool)
        mask = tensordict.get(key, None)
        if mask is None:
            return np.ones(self.num_sims, bool)
        return mask.reshape(self.num_sims).cpu().numpy().astype(bool)

    def _output(self, reward: np.ndarray | None) -> TensorDict:
        b = self.batch_size
        dev = self.device
        obs = {
            "state": torch.from_numpy(self._state.copy()),
            "task_id": self._task_ids.clone(),
        }
        if self._image is not None:
            obs["image"] = torch.from_numpy(self._image.copy())
        term = torch.from_numpy(self._terminated.copy())
        trunc = torch.from_numpy(self._truncated.copy())
        data = {
            "observation": obs,
            SUCCESS_KEY: torch.from_numpy(self._success.copy()),
            "terminated": term,
            "truncated": trunc,
            "done": term | trunc,
        }
        if reward is not None:
            data["reward"] = torch.from_numpy(reward)
        out = TensorDict(data, batch_size=[self.num_sims])
        if tuple(b) != (self.num_sims,):
            out = out.reshape(b)
        if self.include_instruction:
            out.set(INSTRUCTION_KEY, NonTensorData(self.instruction, batch_size=b))
        if dev is not None and dev != torch.device("cpu"):
            out = out.to(dev)
        return out

    def _write_sim(self, i: int, state: np.ndarray) -> None:
        self._state[i] = state
        if self._image is not None:
            self._image[i] = self._sims[i].render()

    # ------------------------------------------------------------------ EnvBase API
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        reset = self._flat_mask(tensordict, "_reset")
        cfg = None if tensordict is None else tensordict.get("config_index", None)
        if cfg is not None:
            if self.eval_configs is None:
                raise ValueError(
                    "'config_index' was passed to reset, but this env was built with "
                    "mode='train'; build it with mode='eval' to use fixed configurations."
                )
            cfg = cfg.reshape(self.num_sims).cpu().numpy()
        for i in np.flatnonzero(reset):
            sim = self._sims[i]
            if self.eval_configs is None:
                state = sim.reset_fresh()
            else:
                if cfg is not None:
                    idx = int(cfg[i])
                else:
                    idx = self._cursor % len(self.eval_configs)
                    self._cursor += 1
                if not 0 <= idx < len(self.eval_configs):
                    raise IndexError(
                        f"config_index {idx} out of range: {len(self.eval_configs)} "
                        "evaluation configurations were built (num_eval_configs)."
                    )
                state = sim.reset_config(self.eval_configs[idx])
            self._write_sim(i, state)
            self._success[i] = False
            self._terminated[i] = False
            self._truncated[i] = False
        return self._output(None)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get(ACTION_KEY)
        expected = (*self.batch_size, ACTION_DIM)
        if tuple(action.shape) != expected:
            hint = ""
            if action.ndim == len(expected) + 1:
                hint = (
                    " It looks like an action chunk: wrap the env in ChunkedEnv "
                    "(make_metaworld_env(..., chunk_size=h)) to execute chunks."
                )
            raise ValueError(
                f"MetaWorldEnv({self.task}) expected an action of shape {expected} "
                f"([*batch, {ACTION_DIM}]), got {tuple(action.shape)}.{hint}"
            )
        act = action.detach().reshape(self.num_sims, ACTION_DIM).cpu().numpy()
        mask = self._flat_mask(tensordict, "_step")
        if not np.isfinite(act[mask]).all():
            raise ValueError(f"MetaWorldEnv({self.task}) received a non-finite action: {act}.")
        act = np.clip(act, -1.0, 1.0).astype(np.float32)
        reward = np.zeros((self.num_sims, 1), np.float32)
        for i in np.flatnonzero(mask):
            state, success, truncated = self._sims[i].step(act[i])
            self._write_sim(i, state)
            self._success[i] = success
            self._terminated[i] = success
            self._truncated[i] = truncated
            reward[i] = float(success)  # sparse: 1 at the first success (then terminated)
        return self._output(reward)

    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            return
        for i, sim in enumerate(self._sims):
            sim.seed(derive_seed(seed, self.worker_index_offset + i, _TRAIN_STREAM))

    def close(self, *, raise_if_closed: bool = True) -> None:
        for sim in getattr(self, "_sims", []):
            sim.close()
        self._sims = []
        super().close(raise_if_closed=raise_if_closed)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(task={self.task!r}, batch_size={tuple(self.batch_size)}, "
            f"mode={self.mode!r}, from_pixels={self.from_pixels}, max_steps={self.max_steps})"
        )


# ---------------------------------------------------------------------------------------
# factory
# ---------------------------------------------------------------------------------------
def make_metaworld_env(
    task: str | int,
    *,
    num_envs: int = 1,
    chunk_size: int | None = 4,
    seed: int = 0,
    max_steps: int = 200,
    from_pixels: bool = False,
    image_size: int = 128,
    mode: Literal["train", "eval"] = "train",
    num_eval_configs: int = NUM_EVAL_CONFIGS,
    eval_seed: int = EVAL_SEED,
    include_instruction: bool = False,
    num_workers: int = 1,
    reward_aggregation: RewardAggregation = "sum",
    gamma: float | None = None,
    device: torch.device | str = "cpu",
) -> EnvBase:
    """Build a (chunked, batched) MetaWorld MT10 env in TorchRL's VLA key schema.

    Args:
        task: an MT10 task name (e.g. ``"push-v3"``) or its index in :data:`MT10_TASKS`.

    Keyword Args:
        num_envs: batch size ``N``; the result has batch ``[N]``.
        chunk_size: action horizon ``h`` (paper: 4). The result is a
            :class:`ChunkedEnv` whose action is ``[N, h, 4]``; ``None`` returns the
            per-step env (action ``[N, 4]``).
        seed: base seed of the training configurations.
        max_steps: episode cap in env steps (default 200, truncation).
        from_pixels, image_size: add ``("observation", "image")`` uint8 ``[N, H, W, 3]``.
        mode: ``"train"`` (fresh configuration per reset) or ``"eval"`` (fixed list).
        num_eval_configs, eval_seed: the fixed evaluation configurations.
        include_instruction: add the non-tensor ``"language_instruction"``.
        num_workers: ``1`` (default) steps the ``N`` envs sequentially in this process.
            ``num_workers == num_envs > 1`` runs one env per ``ParallelEnv`` worker
            process (worth it with pixels: rendering dominates). Train mode only.
        reward_aggregation, gamma: see :class:`ChunkedEnv`.
        device: output device.

    Returns:
        A TorchRL env of batch ``[num_envs]``.
    """
    name = _task_name(task)
    if int(num_workers) < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}.")
    kwargs = dict(
        seed=seed,
        max_steps=max_steps,
        from_pixels=from_pixels,
        image_size=image_size,
        mode=mode,
        num_eval_configs=num_eval_configs,
        eval_seed=eval_seed,
        include_instruction=include_instruction,
        device=device,
    )
    if num_workers == 1:
        base: EnvBase = MetaWorldEnv(name, num_envs=num_envs, **kwargs)
    else:
        if num_workers != num_envs:
            raise ValueError(
                f"num_workers={num_workers} must equal num_envs={num_envs} (one env per "
                "worker process keeps the batch flat); use num_workers=1 to step several "
                "envs sequentially in one process."
            )
        if mode != "train":
            raise ValueError(
                "mode='eval' runs in one process (fixed configurations are chosen through "
                "the reset tensordict); split the episode indices over processes instead "
                "(torchrl_chunk.evaluation.evaluate_policy(episode_indices=...))."
            )
        base = ParallelEnv(
            num_workers,
            functools.partial(MetaWorldEnv, name, num_envs=None, **kwargs),
            create_env_kwargs=[{"worker_index_offset": i} for i in range(num_workers)],
            serial_for_single=True,
        )
    if chunk_size is None:
        return base
    return ChunkedEnv(base, chunk_size, reward_aggregation=reward_aggregation, gamma=gamma)
