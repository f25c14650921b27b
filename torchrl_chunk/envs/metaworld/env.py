"""MetaWorld v3 (MT10, MT50) single-task environments in TorchRL's VLA key schema.

Section III.A.1 of the paper: "10 single-task environments from MT10 with sparse
rewards ... a fixed camera with an elevation of -25 deg and an azimuth of 145 deg". This
module provides

* :class:`MetaWorldEnv`: ``N`` :class:`~torchrl_chunk.envs.metaworld.simulator.TaskSim`
  of one task stepped sequentially in one process, as one batch-locked TorchRL env of
  batch ``[N]`` that honours ``"_step"`` (fastest on few cores for state observations:
  one batched policy forward per decision, no inter-process traffic);
* :func:`make_metaworld_env`: the factory (chunking through
  :class:`~torchrl_chunk.envs.ChunkedEnv`; optional worker processes for pixels through
  :class:`~torchrl_chunk.envs.WorkerPoolEnv`);
* NaN or inf from the simulator raises
  :class:`~torchrl_chunk.envs.metaworld.errors.NonFiniteObservationError`, from the
  policy :class:`~torchrl_chunk.envs.metaworld.errors.NonFiniteActionError`.

Keys (per env, ``*B`` = batch dims):

* ``("observation", "state")``: float32 ``[*B, 39]`` (MetaWorld's goal-observable state);
* ``("observation", "task_id")``: int64 ``[*B, 1]``, index into ``ALL_V3_TASKS`` (the
  MT10 tasks are 0..9, as in ``MT10_TASKS``); its spec has ``num_task_ids(task)`` values
  (10 for an MT10 task, 50 otherwise);
* ``("observation", "image")`` (``from_pixels=True``): uint8 ``[*B, H, W, 3]``,
  **HWC**, RGB, upright, from a free camera (elevation -25, azimuth 145, lookat
  (0, 0.65, 0), distance 1.25), shadows and reflections off;
* ``"language_instruction"`` (``include_instruction=True``): non-tensor string;
* ``"success"``: bool ``[*B, 1]``, MetaWorld's ``info["success"]`` of this step;
* ``"reward"``: float32 ``[*B, 1]``, 1 at the first success step, else 0;
* ``"terminated"`` on success, ``"truncated"`` at ``max_steps`` without success
  (bootstrap), ``"done"`` = either.

Seeding and evaluation configurations: :mod:`torchrl_chunk.envs.metaworld.tasks`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from tensordict import NonTensorData, TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, NonTensor, Unbounded
from torchrl.envs import EnvBase

from torchrl_chunk import gl
from torchrl_chunk.envs.chunked import ChunkedEnv, RewardAggregation
from torchrl_chunk.envs.workers import WorkerPoolEnv
from torchrl_chunk.envs.metaworld.errors import NonFiniteActionError, NonFiniteObservationError
from torchrl_chunk.envs.metaworld.simulator import ACTION_DIM, STATE_DIM, TaskSim
from torchrl_chunk.envs.metaworld.tasks import (
    EVAL_SEED,
    NUM_EVAL_CONFIGS,
    TASK_INSTRUCTIONS,
    TRAIN_STREAM,
    derive_seed,
    make_eval_configs,
    num_task_ids,
    task_index,
    task_name,
)
from torchrl_chunk.keys import ACTION_KEY, INSTRUCTION_KEY, STATE_KEY, SUCCESS_KEY

__all__ = ["MetaWorldEnv", "make_metaworld_env"]


class MetaWorldEnv(EnvBase):
    """``num_envs`` MetaWorld envs of one task as one batch-locked TorchRL env.

    The sub-envs are stepped one after the other in this process (no worker
    processes): on a few CPU cores this is the fastest layout for state observations,
    and the policy runs once per decision on the whole batch. The env honours
    ``"_step"`` (masked-out sub-envs are not stepped; their previous observation is
    returned with reward 0) and partial ``"_reset"``. Stepping a finished sub-env
    without resetting it raises.

    Args:
        task: a MetaWorld v3 task name (see :data:`ALL_V3_TASKS`; MT10's are
            :data:`MT10_TASKS`) or its index there (its ``task_id``).

    Keyword Args:
        num_envs: number of sub-envs; ``None`` gives an unbatched env (batch ``[]``).
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
            (off by default: TorchRL 0.14's ``Collector`` fails on non-tensor entries from
            the second batch on).
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
        self.task = task_name(task)
        self.task_id = task_index(self.task)
        if num_envs is not None and int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1 (or None for an unbatched env), got {num_envs}.")
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}.")
        if from_pixels:
            if int(image_size) < 8:
                raise ValueError(f"image_size must be >= 8 pixels, got {image_size}.")
            gl.check_rendering_available()  # a bad MUJOCO_GL fails here, in one line
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
            TaskSim(
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
        self._defer_render = False
        self._stale = np.zeros(n, bool)  # frames not rendered since the sim last moved
        self._make_specs()

    # ------------------------------------------------------------------ specs
    def _make_specs(self) -> None:
        b = tuple(self.batch_size)
        dev = self.device
        obs = Composite(
            state=Unbounded((*b, STATE_DIM), dtype=torch.float32, device=dev),
            task_id=Categorical(num_task_ids(self.task), (*b, 1), dtype=torch.int64, device=dev),
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
        if not np.isfinite(state).all():
            raise NonFiniteObservationError(self.task, self.worker_index_offset + i, STATE_KEY)
        self._state[i] = state
        if self._image is not None:
            if self._defer_render:
                self._stale[i] = True
            else:
                self._image[i] = self._sims[i].render()
                self._stale[i] = False

    @contextlib.contextmanager
    def defer_observations(self) -> Iterator[None]:
        """Steps inside this context leave the camera frame stale (no render); see
        :meth:`deferred_observations`. :class:`~torchrl_chunk.envs.ChunkedEnv` steps each
        chunk inside it: one render per chunk instead of one per env step."""
        self._defer_render = True
        try:
            yield
        finally:
            self._defer_render = False

    def deferred_observations(self) -> TensorDict:
        """Render the frames left stale by steps under :meth:`defer_observations` and return
        ``{("observation", "image")}`` of every env (empty without pixels): the same frames
        as rendering after every step, since a sim is rendered in the state it stopped in."""
        if self._image is None:
            return TensorDict({}, batch_size=self.batch_size)
        for i in np.flatnonzero(self._stale):
            self._image[i] = self._sims[i].render()
            self._stale[i] = False
        image = torch.from_numpy(self._image.copy()).reshape(*self.batch_size, *self._image.shape[1:])
        out = TensorDict({("observation", "image"): image}, batch_size=self.batch_size)
        dev = self.device
        return out.to(dev) if dev is not None and dev != torch.device("cpu") else out

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
        bad = mask & ~np.isfinite(act).all(-1)
        if bad.any():
            raise NonFiniteActionError(self.task, self.worker_index_offset + np.flatnonzero(bad))
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
            sim.seed(derive_seed(seed, self.worker_index_offset + i, TRAIN_STREAM))

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
    worker_index_offset: int = 0,
    start_method: str | None = None,
    worker_timeout_s: float | None = None,
    reward_aggregation: RewardAggregation = "sum",
    gamma: float | None = None,
    device: torch.device | str = "cpu",
) -> EnvBase:
    """Build a (chunked, batched) MetaWorld v3 env in TorchRL's VLA key schema.

    Args:
        task: a MetaWorld v3 task name (e.g. ``"push-v3"``, any of the fifty of
            :data:`ALL_V3_TASKS`) or its index there (MT10's are 0..9).

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
        num_workers: ``1`` (default) steps the ``N`` envs sequentially in this process;
            ``W > 1`` splits them over ``W`` worker processes (:class:`WorkerPoolEnv`,
            ``N / W`` envs each, chunks executed in the workers, batch still ``[N]``,
            the same numbers as one process). Worth it with pixels: rendering is per
            core. Any ``1 <= W <= N``; train and eval mode.
        start_method: how workers start, ``"forkserver"`` (default where available) or
            ``"spawn"``.
        worker_timeout_s: seconds a worker may take for one command before the pool
            raises (``None``: no limit; a dead worker is reported within a second anyway).
        worker_index_offset: index of the first sub-env in a larger batch split over
            processes or machines: sub-env ``i`` is seeded as sub-env
            ``worker_index_offset + i`` of one env with all of them (e.g. the second of
            two Ray collectors of 4 envs each uses 4).
        reward_aggregation, gamma: see :class:`ChunkedEnv`.
        device: output device.

    Returns:
        A TorchRL env of batch ``[num_envs]``.
    """
    name = task_name(task)
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
    if num_workers > 1:  # W processes x N/W envs each, chunks executed in the workers
        if num_envs is None or include_instruction:
            raise ValueError(
                f"num_workers={num_workers} needs an integer num_envs (got {num_envs}) and no "
                "non-tensor entries (include_instruction=False; the instruction is a constant of the task)."
            )
        if torch.device(device).type != "cpu":
            raise ValueError(
                f"num_workers={num_workers} keeps the envs on CPU (device={device} was asked): "
                "move the policy's inputs to its device instead (the collector's policy_device)."
            )
        inner = functools.partial(
            make_metaworld_env, name, chunk_size=chunk_size, num_workers=1,
            reward_aggregation=reward_aggregation, gamma=gamma, **kwargs,
        )
        return WorkerPoolEnv(
            inner, num_envs, num_workers, offset=worker_index_offset, start_method=start_method,
            timeout_s=worker_timeout_s, require_in_reset="config_index" if mode == "eval" else None,
        )
    base: EnvBase = MetaWorldEnv(name, num_envs=num_envs, worker_index_offset=worker_index_offset, **kwargs)
    if chunk_size is None:
        return base
    return ChunkedEnv(base, chunk_size, reward_aggregation=reward_aggregation, gamma=gamma)
