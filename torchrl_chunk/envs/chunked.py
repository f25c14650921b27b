"""``ChunkedEnv``: execute an action chunk ``[..., h, action_dim]`` as one macro-step.

Section II.A of the paper (action-chunked PPO, Eq. 1-3): the policy emits a chunk
``a_{t:t+h-1}`` from one observation; the environment executes the ``h`` actions in
order and PPO sees one transition per chunk. This wrapper turns any TorchRL env into
such a macro-step env. It is an :class:`~torchrl.envs.EnvBase` (not a transform) so that
every transform stacked on top of it always runs, which avoids the two pitfalls of
TorchRL 0.14's ``MultiAction`` (stale reward
slots after an early done in batched envs; transforms after ``MultiAction`` skipped when
every env finishes inside the chunk).
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded, Categorical
from torchrl.envs import Compose, EnvBase, TransformedEnv
from torchrl.envs.transforms import VecGymEnvTransform
from torchrl.envs.utils import step_mdp

from torchrl_chunk.keys import STEPS_EXECUTED_KEY, SUCCESS_KEY

__all__ = ["ChunkedEnv", "RewardAggregation"]

RewardAggregation = Literal["sum", "discounted_sum", "max", "last"]
_AGGREGATIONS = ("sum", "discounted_sum", "max", "last")


def _autoresets(env) -> bool:
    """Whether ``env`` is a gym(nasium) vector env: it steps every sub-env in lockstep and
    restarts a finished one by itself (TorchRL's ``VecGymEnvTransform``), so it cannot leave a
    finished env out of the remaining steps of a chunk."""
    def flat(transform):
        return [t for part in transform for t in flat(part)] if isinstance(transform, Compose) else [transform]

    while isinstance(env, TransformedEnv):
        if any(isinstance(t, VecGymEnvTransform) for t in flat(env.transform)):
            return True
        env = env.base_env
    return False


class ChunkedEnv(EnvBase):
    """Wrap a TorchRL env so that one step executes a whole action chunk.

    The action of the wrapped env is ``[*B, h, action_dim]``. :meth:`step` executes the
    ``h`` actions in order, one base step each, and returns one macro-step:

    * the chunk stops at the first ``done`` (terminated or truncated) of an env; the
      remaining actions of that env are **not** executed. Batched bases (``SerialEnv``,
      ``ParallelEnv``, batch-locked envs that honour it) receive a ``"_step"`` mask so
      finished envs are not stepped; batch-unlocked bases are indexed by TorchRL. A
      gym(nasium) vector env (``GymEnv(name, num_envs=n)``) steps all its envs in lockstep
      and restarts finished ones itself, so there the chunk stops for **every** env at the
      first done of any: the others execute fewer than ``h`` steps, which
      ``steps_executed`` records (as TorchRL's ``MultiAction`` does);
    * ``("next", "steps_executed")`` (int64 ``[*B, 1]``, ``1..h``; 0 after ``reset``
      and for envs masked out by an outer ``"_step"``) counts the executed base steps.
      Use it as GAE's ``steps_to_next_obs`` for the SMDP discount ``gamma ** k`` and to
      measure trajectory lengths in env steps;
    * ``("next", "reward")`` aggregates the rewards of the executed steps only
      (``"sum"`` by default; ``"discounted_sum"`` uses ``sum_j gamma**j r_j`` with the
      intra-chunk ``gamma``; ``"max"``; ``"last"``);
    * ``("next", "success")`` (bool ``[*B, 1]``) is True if any executed step reported
      success (the base env must have the boolean ``success_key`` entry, else the wrapper
      refuses it; ``success_key=None`` writes no success flag);
    * ``done`` / ``terminated`` / ``truncated`` and the observations are those of the
      last executed step of each env.

    **Observations made once per chunk.** The policy sees only the observation after a
    chunk, so an expensive one (a camera frame) need not be made after every base step. A
    base env may offer two methods: ``defer_observations()``, a context manager inside
    which its steps may leave such entries stale, and ``deferred_observations()``, which
    makes them for the envs stepped since and returns them (a TensorDict of the env's
    batch, e.g. ``{("observation", "image"): ...}``). The wrapper steps the chunk inside
    the first and writes the second over the macro-step's observation. Each env is then
    at its last executed step, so the result equals making the entry after every step.
    :class:`~torchrl_chunk.envs.metaworld.MetaWorldEnv` does this for its camera: one
    render per chunk instead of ``h`` (about 4x fewer renders with the paper's ``h = 4``).
    Other envs run as they are.

    Args:
        base_env: any TorchRL env with a single action key of shape ``[*B, action_dim]``.
        chunk_size: ``h``, the number of actions per chunk (the paper uses 4).

    Keyword Args:
        reward_aggregation: how the executed steps' rewards are combined.
        gamma: intra-chunk discount for ``"discounted_sum"`` (required there, refused
            otherwise).
        success_key: boolean success entry of the base env (``None`` to disable).
        steps_executed_key: where the executed-step count is written (under ``"next"``).

    Examples:
        >>> from torchrl.envs import SerialEnv
        >>> env = ChunkedEnv(SerialEnv(2, make_base), chunk_size=4)
        >>> td = env.rollout(10)
        >>> td["next", "steps_executed"].sum(-2)  # env steps per worker
    """

    def __init__(
        self,
        base_env: EnvBase,
        chunk_size: int,
        *,
        reward_aggregation: RewardAggregation = "sum",
        gamma: float | None = None,
        success_key: str | tuple[str, ...] | None = SUCCESS_KEY,
        steps_executed_key: str = STEPS_EXECUTED_KEY,
    ) -> None:
        if not isinstance(base_env, EnvBase):
            raise TypeError(
                f"ChunkedEnv wraps a torchrl EnvBase, got {type(base_env).__name__}."
            )
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
        if reward_aggregation not in _AGGREGATIONS:
            raise ValueError(
                f"reward_aggregation={reward_aggregation!r} is not one of {_AGGREGATIONS}."
            )
        if reward_aggregation == "discounted_sum":
            if gamma is None or not 0.0 < float(gamma) <= 1.0:
                raise ValueError(
                    "reward_aggregation='discounted_sum' needs an intra-chunk gamma in "
                    f"(0, 1], got gamma={gamma}."
                )
        elif gamma is not None:
            raise ValueError(
                f"gamma is only used by reward_aggregation='discounted_sum' (got "
                f"reward_aggregation={reward_aggregation!r}); drop gamma or change it."
            )
        if len(base_env.action_keys) != 1:
            raise ValueError(
                "ChunkedEnv supports base envs with exactly one action key, got "
                f"{base_env.action_keys}."
            )
        if len(base_env.reward_keys) != 1:
            raise ValueError(
                "ChunkedEnv supports base envs with exactly one reward key, got "
                f"{base_env.reward_keys}."
            )
        super().__init__(
            device=base_env.device,
            batch_size=base_env.batch_size,
            allow_done_after_reset=getattr(base_env, "_allow_done_after_reset", False),
        )
        self.base_env = base_env
        self._lockstep = _autoresets(base_env)
        self.chunk_size = int(chunk_size)
        self.reward_aggregation = reward_aggregation
        self.gamma = None if gamma is None else float(gamma)
        self.steps_executed_key = steps_executed_key
        self._action_key = base_env.action_key
        self._reward_key = base_env.reward_key
        self._done_keys = list(base_env.done_keys)
        batch = tuple(base_env.batch_size)

        base_action = base_env.full_action_spec[self._action_key]
        if base_action.ndim != len(batch) + 1:
            raise ValueError(
                "ChunkedEnv expects a flat action of shape [*batch, action_dim], got an "
                f"action spec of shape {tuple(base_action.shape)} for batch {batch}."
            )
        self.action_dim = int(base_action.shape[-1])
        chunk_action = base_action.unsqueeze(-2).expand(
            *batch, self.chunk_size, self.action_dim
        )
        full_action = base_env.full_action_spec.clone()
        full_action[self._action_key] = chunk_action
        self.full_action_spec = full_action

        obs = base_env.full_observation_spec.clone()
        obs[steps_executed_key] = Bounded(
            low=0,
            high=self.chunk_size,
            shape=(*batch, 1),
            dtype=torch.int64,
            device=self.device,
        )
        if success_key is not None:
            if success_key in obs.keys(True, True):
                if obs[success_key].dtype != torch.bool:
                    raise ValueError(
                        f"success_key {success_key!r} of the base env has dtype "
                        f"{obs[success_key].dtype}; ChunkedEnv needs a bool flag."
                    )
            else:
                raise ValueError(
                    f"The base env has no {success_key!r} entry, so every episode would count as a "
                    "failure: pass success_key=<your env's bool success entry>, add a transform that "
                    "writes one (docs/guide.md, 'Any env'), or success_key=None for no success flag."
                )
        self.success_key = success_key
        self.full_observation_spec = obs
        self.full_reward_spec = base_env.full_reward_spec.clone()
        self.full_done_spec = base_env.full_done_spec.clone()
        self.full_state_spec = base_env.full_state_spec.clone()

    # ------------------------------------------------------------------ helpers
    def _check_chunk(self, chunk: torch.Tensor | None) -> None:
        expected = (*self.batch_size, self.chunk_size, self.action_dim)
        if chunk is None:
            raise KeyError(
                f"ChunkedEnv.step needs an action chunk under {self._action_key!r} of "
                f"shape {expected} ([*batch, chunk_size, action_dim])."
            )
        if tuple(chunk.shape) != expected:
            raise ValueError(
                f"ChunkedEnv expected an action chunk of shape {expected} "
                f"([*batch, chunk_size={self.chunk_size}, action_dim={self.action_dim}]), "
                f"got {tuple(chunk.shape)}."
            )

    def _any_done(self, next_td: TensorDictBase) -> torch.Tensor:
        done = torch.zeros(self.batch_size, dtype=torch.bool, device=self.device)
        for key in self._done_keys:
            flag = next_td.get(key)
            done = done | flag.reshape(*self.batch_size, -1).any(-1)
        return done

    def _next_root(self, td: TensorDictBase) -> TensorDictBase:
        """``"next"`` becomes the root for the following inner step (keeps other root keys)."""
        return step_mdp(
            td, keep_other=True, exclude_reward=True, exclude_done=False, exclude_action=True
        )

    # ------------------------------------------------------------------ EnvBase API
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        if tensordict is not None:
            tensordict = tensordict.exclude(
                self.steps_executed_key, *self._done_keys, self._action_key
            )
        out = self.base_env.reset(tensordict, **kwargs)
        out = out.exclude("_reset")
        shape = (*self.batch_size, 1)
        out.set(
            self.steps_executed_key,
            torch.zeros(shape, dtype=torch.int64, device=self.device),
        )
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        chunk = tensordict.get(self._action_key, None)
        self._check_chunk(chunk)
        batch = tuple(self.batch_size)
        step_mask = tensordict.get("_step", None)
        if step_mask is None:
            active = torch.ones(batch, dtype=torch.bool, device=self.device)
        else:
            active = step_mask.reshape(batch).clone()
        col = (*batch, 1)
        executed = torch.zeros(col, dtype=torch.int64, device=self.device)
        reward_dtype = self.full_reward_spec[self._reward_key].dtype
        reward_acc = torch.zeros(
            self.full_reward_spec[self._reward_key].shape, dtype=reward_dtype, device=self.device
        )
        success = torch.zeros(col, dtype=torch.bool, device=self.device)
        td = tensordict.exclude(
            self._action_key, "_step", "next", self.steps_executed_key
        )
        defer = getattr(self.base_env, "defer_observations", None)
        with defer() if defer is not None else contextlib.nullcontext():
            out, reward_acc, executed, success = self._execute(td, chunk, active, executed, reward_acc, success)
        if defer is not None:  # each env's entry as after its last executed step
            out.update(self.base_env.deferred_observations())
        out.set(self._reward_key, reward_acc)
        out.set(self.steps_executed_key, executed)
        if self.success_key is not None:
            out.set(self.success_key, success)
        return out

    def _execute(self, td, chunk, active, executed, reward_acc, success):
        """The chunk's base steps; ``(last observations, reward, steps executed, success)``."""
        batch = tuple(self.batch_size)
        col = (*batch, 1)
        reward_dtype = reward_acc.dtype
        track_success = self.success_key is not None
        last = None
        for j in range(self.chunk_size):
            td.set(self._action_key, chunk[..., j, :])
            if batch and not bool(active.all()):
                td.set("_step", active)
            td = self.base_env.step(td)
            td.pop("_step", None)
            nxt = td.get("next")
            mask = active.reshape(col)
            reward = nxt.get(self._reward_key).to(reward_dtype)
            rmask = mask.reshape(*batch, *([1] * (reward.ndim - len(batch))))
            if self.reward_aggregation == "sum":
                reward_acc = torch.where(rmask, reward_acc + reward, reward_acc)
            elif self.reward_aggregation == "discounted_sum":
                reward_acc = torch.where(
                    rmask, reward_acc + (self.gamma**j) * reward, reward_acc
                )
            elif self.reward_aggregation == "max":
                first = (executed == 0).reshape(rmask.shape)
                candidate = torch.where(first, reward, torch.maximum(reward_acc, reward))
                reward_acc = torch.where(rmask, candidate, reward_acc)
            else:  # "last"
                reward_acc = torch.where(rmask, reward, reward_acc)
            executed = executed + mask.to(torch.int64)
            if track_success:
                success = success | (mask & nxt.get(self.success_key).reshape(col))
            if last is None or bool(active.all()):
                last = nxt.copy()
            else:
                last = torch.where(active, nxt, last)
            done_now = self._any_done(nxt)
            active = active & ~done_now
            if not bool(active.any()) or j == self.chunk_size - 1:
                break
            if self._lockstep and bool(done_now.any()):
                break  # an auto-resetting vector env would restart the finished envs
            td = self._next_root(td)
        return last.copy(), reward_acc, executed, success

    def _set_seed(self, seed: int | None) -> None:
        self.base_env.set_seed(seed, static_seed=True)

    def close(self, *, raise_if_closed: bool = True) -> None:
        try:
            self.base_env.close(raise_if_closed=raise_if_closed)
        except TypeError:  # older signature
            self.base_env.close()
        super().close(raise_if_closed=raise_if_closed)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(chunk_size={self.chunk_size}, "
            f"reward_aggregation={self.reward_aggregation!r}, base_env={self.base_env})"
        )
