"""From collected trajectories to the BC rows of the demo buffer D_demo (Section II.B).

A trajectory is a TensorDict with one time dim ``[T]``, in one of two layouts:

* per-step (expert demos): ``"action"`` ``[T, action_dim]``, one row per env step;
* chunked (from :class:`~torchrl_chunk.envs.ChunkedEnv`): ``"action"`` ``[T, h, action_dim]``
  and ``("next", "steps_executed")`` ``[T, 1]``, one row per decision.

Both carry ``("next", "done")`` and ``("next", "success")``.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from tensordict import NestedKey, TensorDict, TensorDictBase
from torchrl.envs.transforms import ActionChunkTransform

from torchrl_chunk._deprecation import renamed_kwarg
from torchrl_chunk.keys import (
    ACTION_CHUNK_KEY,
    ACTION_IS_PAD_KEY,
    ACTION_KEY,
    STEPS_EXECUTED_KEY,
    SUCCESS_KEY,
)

DONE = ("next", "done")
SUCCESS = ("next", SUCCESS_KEY)
STEPS = ("next", STEPS_EXECUTED_KEY)
OBSERVATION = "observation"


def get_entry(traj: TensorDictBase, key: NestedKey) -> torch.Tensor:
    """``traj[key]``, or a ``KeyError`` that lists what a trajectory needs."""
    value = traj.get(key, None)
    if value is None:
        raise KeyError(
            f"Trajectory has no {key!r} entry (keys: {list(traj.keys(True, True))}). "
            "Trajectories need 'action', ('next', 'done') and ('next', 'success')."
        )
    return value


def split_trajectories(
    data: Sequence[TensorDictBase] | TensorDictBase,
) -> Iterator[TensorDictBase | None]:
    """Cut every input TensorDict ``[T]`` after each ``("next", "done")``.

    Yields each finished trajectory, and ``None`` for a trailing segment with no done flag
    (an episode still running when the batch ended).
    """
    if isinstance(data, TensorDictBase):
        data = [data]
    for part in data:
        if not isinstance(part, TensorDictBase) or part.batch_dims != 1:
            raise ValueError(
                "Expected trajectories with one time dim [T] (or a list of them), got "
                f"{getattr(part, 'batch_size', type(part).__name__)}. Pass collector batches "
                "row by row ([batch[i] for i in range(batch.shape[0])]) or use "
                "Collector(traj_format='cat')."
            )
        if part.shape[0] == 0:
            raise ValueError("Got an empty trajectory (0 steps).")
        start = 0
        for end in torch.nonzero(get_entry(part, DONE).reshape(-1)).flatten().tolist():
            yield part[start : end + 1]
            start = end + 1
        if start < part.shape[0]:
            yield None


@renamed_kwarg("horizon", "chunk_size")
def expert_trajectories(
    data: Sequence[TensorDictBase] | TensorDictBase, chunk_size: int
) -> tuple[list[TensorDictBase], list[int]]:
    """The expert demos in ``data`` and their lengths; raises naming the first unusable demo.

    Each demo must end with a done flag, succeed and be finite (the buffer never stores
    non-finite values), and there must be at least one.
    """
    experts, lengths = [], []
    for i, traj in enumerate(split_trajectories(data)):
        if traj is None:
            raise ValueError(
                "An expert trajectory has no done flag at its end: expert demos must "
                "be complete trajectories."
            )
        length, success = length_and_success(traj, chunk_size)
        if not success:
            raise ValueError(
                f"Expert demo {i} did not succeed (no True in ('next', 'success')): "
                "seed the buffer with successful demonstrations only."
            )
        bad = non_finite_key(traj)
        if bad is not None:
            raise ValueError(
                f"Expert demo {i} has NaN or inf in {bad!r}: drop or repair that demo "
                "before seeding the buffer (it never stores non-finite values)."
            )
        still = motionless(traj)
        if still is not None:
            raise ValueError(
                f"Expert demo {i} never moves ({still}) although it succeeded: cloning it teaches the "
                "policy to stand still; drop that demo or record it again."
            )
        experts.append(traj)
        lengths.append(length)
    if not experts:
        raise ValueError(
            "LengthFilteredReplayBuffer needs at least one expert trajectory to seed it "
            "(e.g. torchrl_chunk.envs.collect_expert_demos(...).trajectories)."
        )
    return experts, lengths


#: An expert demo "never moves" when every entry of every action is within this of zero (a
#: MetaWorld action of 1e-4 moves the hand 1 µm per step: the arm stands still) ...
MOTIONLESS_ACTION_ATOL = 1e-4
#: ... or when no entry of its ``("observation", "state")`` (next states included) ever differs
#: from its first value by more than this (float32 noise: the recorded state is frozen).
MOTIONLESS_STATE_ATOL = 1e-6


def motionless(traj: TensorDictBase) -> str | None:
    """Why the expert demo ``traj`` never moves, or ``None`` if it does.

    A demo never moves when all its actions are (near) zero (``|a| <=``
    :data:`MOTIONLESS_ACTION_ATOL` everywhere) or when it has a state entry
    (``("observation", "state")``, or a flat ``"observation"``; with the next one when present) that
    never changes by more than :data:`MOTIONLESS_STATE_ATOL` over two or more states. Such a demo,
    marked successful, teaches the policy to stand still. One pass over the actions and states.
    Checked where expert demos enter: :func:`expert_trajectories` (the buffer's seeding),
    ``collect_expert_demos``, ``load_demos`` and the recipe's ``demos.path`` sources.
    """
    action = get_entry(traj, ACTION_KEY).detach()
    if action.numel() and action.is_floating_point() and float(action.abs().max()) <= MOTIONLESS_ACTION_ATOL:
        return f"all its actions are zero (|a| <= {MOTIONLESS_ACTION_ATOL:g})"
    state, nxt = _state(traj), _state(traj.get("next", None))
    if torch.is_tensor(state) and state.is_floating_point() and state.ndim >= 1:
        if torch.is_tensor(nxt) and nxt.shape[1:] == state.shape[1:] and nxt.shape[0]:
            state = torch.cat([state, nxt[-1:]])
        state = state.detach()
        if state.shape[0] > 1 and float((state - state[:1]).abs().max()) <= MOTIONLESS_STATE_ATOL:
            return f"its state never changes (by more than {MOTIONLESS_STATE_ATOL:g})"
    return None


def _state(td: TensorDictBase | None) -> torch.Tensor | None:
    """``("observation", "state")``, or ``"observation"`` itself when it is a tensor (a flat
    observation, e.g. a gymnasium env's)."""
    obs = td.get(OBSERVATION, None) if td is not None else None
    return obs.get("state", None) if isinstance(obs, TensorDictBase) else obs


@renamed_kwarg("horizon", "chunk_size")
def is_chunked(traj: TensorDictBase, chunk_size: int) -> bool:
    """Whether ``traj`` holds chunks ``[T, h, action_dim]`` (else per-step actions)."""
    action = get_entry(traj, ACTION_KEY)
    if action.ndim == 3:
        if action.shape[1] != chunk_size:
            raise ValueError(
                f"Chunked trajectory has chunks of length {action.shape[1]}, the buffer "
                f"uses chunk_size={chunk_size}."
            )
        return True
    if action.ndim == 2:
        return False
    raise ValueError(
        f"'action' must be [T, action_dim] (per-step) or [T, h, action_dim] (chunked), "
        f"got {tuple(action.shape)}."
    )


@renamed_kwarg("horizon", "chunk_size")
def length_and_success(traj: TensorDictBase, chunk_size: int) -> tuple[int, bool]:
    """``L(x_i)`` in env steps (executed steps of a chunked trajectory) and its success."""
    success = bool(get_entry(traj, SUCCESS).any())
    if is_chunked(traj, chunk_size):
        length = int(executed_steps(traj).sum())
    else:
        length = traj.shape[0]
    return length, success


def executed_steps(traj: TensorDictBase) -> torch.Tensor:
    """``("next", "steps_executed")`` of a chunked trajectory, or an error saying where it comes from."""
    steps = traj.get(STEPS, None)
    if steps is None:
        raise KeyError(
            "A chunked trajectory ([T, h, action_dim] actions) has no ('next', 'steps_executed'): its "
            "length in env steps is unknown (a chunk cut short by a done runs fewer than h steps). "
            "Collect through torchrl_chunk.envs.ChunkedEnv, which writes it."
        )
    return steps


def non_finite_key(traj: TensorDictBase) -> NestedKey | None:
    """The first of ``"action"`` and the ``"observation"`` entries holding NaN or inf, if any."""
    entries = [(ACTION_KEY, get_entry(traj, ACTION_KEY))]
    obs = traj.get(OBSERVATION, None)
    if isinstance(obs, TensorDictBase):
        entries += [((OBSERVATION, *_as_tuple(k)), v) for k, v in obs.items(True, True)]
    elif obs is not None:
        entries.append((OBSERVATION, obs))
    for key, value in entries:
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            return key
    return None


def _as_tuple(key: NestedKey) -> tuple:
    return key if isinstance(key, tuple) else (key,)


Bounds = tuple  # (low, high): floats, or per-dimension tuples of floats


def as_action_bounds(bounds) -> Bounds | None:
    """``(low, high)`` from a pair of numbers or per-dimension sequences, or from a TorchRL
    ``Bounded`` action spec (``env.action_spec``; a chunk spec's bounds are taken per action
    dim); ``None`` stays ``None``."""
    if bounds is None:
        return None
    space = getattr(bounds, "space", None)
    if space is not None and hasattr(space, "low"):  # a TorchRL Bounded spec
        low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
        if low.ndim:  # [*batch, (h,) action_dim]: one bound per action dim, the same for every env
            low, high = low.reshape(-1, low.shape[-1]), high.reshape(-1, high.shape[-1])
            if not (bool((low == low[:1]).all()) and bool((high == high[:1]).all())):
                raise ValueError("action_bounds: the spec's bounds differ between its envs or chunk steps; "
                                 "pass one (low, high) pair for the buffer.")
            low, high = low[0], high[0]
    elif hasattr(bounds, "shape") or getattr(bounds, "domain", None) is not None:
        raise TypeError(
            f"action_bounds: {type(bounds).__name__} has no low/high bounds; pass a Bounded action "
            "spec, a (low, high) pair, or None to store actions as emitted.")
    else:
        try:
            low, high = bounds
        except (TypeError, ValueError):
            raise TypeError(f"action_bounds must be (low, high), a Bounded spec or None, got {bounds!r}.") from None
    low, high = torch.as_tensor(low, dtype=torch.float64), torch.as_tensor(high, dtype=torch.float64)
    if low.shape != high.shape or low.ndim > 1 or not bool((low < high).all()):
        raise ValueError(f"action_bounds need low < high of one shape (scalars or [action_dim]), got {bounds!r}.")
    as_py = (lambda t: float(t)) if low.ndim == 0 else (lambda t: tuple(float(x) for x in t))
    return as_py(low), as_py(high)


def out_of_bounds(traj: TensorDictBase, bounds: Bounds | None) -> str | None:
    """A one-line description of the first action outside ``bounds``, if any."""
    if bounds is None:
        return None
    action = get_entry(traj, ACTION_KEY).detach()
    low, high = (torch.as_tensor(b, dtype=action.dtype) for b in bounds)
    bad = (action < low) | (action > high)
    if not bool(bad.any()):
        return None
    return (f"actions outside action_bounds low={bounds[0]}, high={bounds[1]} "
            f"(min {action.min().item():.4g}, max {action.max().item():.4g})")


@renamed_kwarg("horizon", "chunk_size")
def chunk_rows(
    traj: TensorDictBase,
    chunk_size: int,
    *,
    traj_id: int,
    expert: bool,
    action_bounds: Bounds | None,
    chunker: ActionChunkTransform,
) -> TensorDictBase:
    r"""The BC rows of one trajectory; a chunk never crosses the trajectory's end.

    * per-step: one row per env step ``t`` with ``o_t`` and ``a_{t:t+h-1}`` (TorchRL's
      :class:`~torchrl.envs.transforms.ActionChunkTransform`); the last ``h-1`` rows
      are padded (``"action_is_pad"``, the padding repeats the last action);
    * chunked: one row per decision with the chunk the policy emitted; the steps not
      executed (the last chunk, cut short by success or the time limit) are padded.

    With ``action_bounds``, chunk targets are clipped to them (an env that clips what it
    executes ran the clipped chunk); ``None`` stores them as emitted. Each row holds every ``"observation"`` entry,
    ``("vla_action", "chunk")`` ``[h, action_dim]``, ``"action_is_pad"`` ``[h]``,
    ``"traj_id"`` and ``"is_expert"``.
    """
    T = traj.shape[0]
    rows = traj.select(OBSERVATION).clone()
    if is_chunked(traj, chunk_size):
        chunk = traj.get(ACTION_KEY)
        executed = executed_steps(traj).reshape(T, 1)
        pad = torch.arange(chunk_size).expand(T, -1) >= executed.to(torch.long)
    else:
        window = chunker(TensorDict({ACTION_KEY: traj.get(ACTION_KEY)}, [T]).unsqueeze(0))
        chunk = window.get(ACTION_CHUNK_KEY)[0]
        pad = window.get(ACTION_IS_PAD_KEY)[0]
    chunk = chunk.detach().to(torch.float32)
    if action_bounds is not None:
        low, high = (torch.as_tensor(b, dtype=chunk.dtype) for b in action_bounds)
        chunk = torch.clamp(chunk, low, high)
    rows.set(ACTION_CHUNK_KEY, chunk)
    rows.set(ACTION_IS_PAD_KEY, pad.bool())
    rows.set("traj_id", torch.full((T,), traj_id, dtype=torch.long))
    rows.set("is_expert", torch.full((T,), expert, dtype=torch.bool))
    return rows


__all__ = ["MOTIONLESS_ACTION_ATOL", "MOTIONLESS_STATE_ATOL", "as_action_bounds", "chunk_rows", "out_of_bounds",
           "expert_trajectories", "length_and_success", "motionless", "non_finite_key", "split_trajectories"]
