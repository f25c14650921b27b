"""Evaluation protocol and metrics of the paper's Table I (Section III.A.3).

"Each task is evaluated over 128 episodes under a shared random seed for all models.
Reported metrics include: average success rate (Acc.) over the 128 episodes; the 10th
percentile of the trajectory-length distribution (Len.); and the mean length of the
shortest 10% of trajectories (Avg(l.)) across all episodes."

Protocol implemented here:

* episode ``i`` of a task always starts from fixed configuration ``i`` of
  :func:`torchrl_chunk.envs.make_eval_configs` (built from
  :data:`torchrl_chunk.envs.EVAL_SEED`), the policy runs under
  ``ExplorationType.DETERMINISTIC`` and emits action chunks ``[*B, h, 4]``; an episode
  ends at the first success or after ``max_steps`` env steps;
* episode length = env steps until the first success; **failures count as
  ``max_steps``** (200);
* ``success_rate`` = successes / episodes;
* ``len_p10`` = 10th percentile of the lengths, by default the classic
  "inverted CDF" definition (``numpy.percentile(..., method="inverted_cdf")``): the
  ``ceil(0.1 * N)``-th shortest length (the 13th of 128). It is always an observed
  length (Table I reports whole numbers) and, whenever it is reported, a success
  length. ``percentile_method="linear"`` gives numpy's interpolating default;
* ``avg_shortest_10pct`` = mean of the ``ceil(0.1 * N)`` shortest lengths (13 of 128);
* both length metrics are reported missing (``None``, printed "–") when fewer than
  10 % of the episodes succeed, since they would then measure the cap, not the policy;
* the "Average" row averages each metric over tasks; a length average is missing if
  any task's value is missing (as the PPO column of Table I).

Results depend only on (policy, task, episode indices): episodes can be batched or
split over processes (``episode_indices``) and merged with :func:`merge_episodes`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs.utils import ExplorationType, set_exploration_type, step_mdp

from torchrl_chunk.envs.metaworld import (
    EVAL_SEED,
    MT10_TASKS,
    NUM_EVAL_CONFIGS,
    _task_name,
    make_metaworld_env,
)
from torchrl_chunk.keys import IMAGE_KEY, STEPS_EXECUTED_KEY, SUCCESS_KEY

__all__ = [
    "AVERAGE_ROW",
    "EpisodeResults",
    "MISSING",
    "compute_task_metrics",
    "evaluate_mt10",
    "evaluate_policy",
    "format_table",
    "merge_episodes",
    "merge_results",
    "mt10_average",
    "results_to_csv",
    "results_to_markdown",
]

#: How a missing metric is printed.
MISSING = "–"
#: Name of the averaged row.
AVERAGE_ROW = "Average"
_METRICS = (("success_rate", "Acc."), ("len_p10", "Len."), ("avg_shortest_10pct", "Avg(l.)"))


# ---------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------
def compute_task_metrics(
    lengths: Sequence[int] | np.ndarray,
    successes: Sequence[bool] | np.ndarray,
    *,
    max_steps: int = 200,
    percentile: float = 10.0,
    shortest_fraction: float = 0.1,
    min_success_rate: float = 0.1,
    percentile_method: str = "inverted_cdf",
) -> dict[str, float | int | None]:
    """Table I metrics from per-episode lengths (env steps) and success flags.

    Failed episodes count as ``max_steps`` whatever length was recorded. Returns a dict
    with ``success_rate``, ``len_p10`` (the ``percentile``-th percentile of the
    lengths, ``numpy.percentile`` with ``percentile_method``; the default
    ``"inverted_cdf"`` is the ``ceil(N * percentile / 100)``-th shortest length),
    ``avg_shortest_10pct`` (mean of the ``ceil(shortest_fraction * N)``
    shortest lengths), ``num_episodes`` and ``num_successes``. The two length metrics
    are ``None`` when fewer than ``min_success_rate * N`` episodes succeed.
    """
    lengths = np.asarray(lengths, dtype=np.float64).reshape(-1)
    successes = np.asarray(successes, dtype=bool).reshape(-1)
    n = lengths.size
    if n == 0:
        raise ValueError("compute_task_metrics needs at least one episode, got none.")
    if successes.size != n:
        raise ValueError(
            f"lengths ({n}) and successes ({successes.size}) must have the same number of episodes."
        )
    if not np.isfinite(lengths).all():
        raise ValueError(f"episode lengths must be finite, got {lengths}.")
    if (lengths[successes] < 1).any() or (lengths[successes] > max_steps).any():
        raise ValueError(
            f"successful episode lengths must lie in [1, max_steps={max_steps}], got "
            f"{lengths[successes]}."
        )
    lengths = np.where(successes, lengths, float(max_steps))
    num_succ = int(successes.sum())
    out: dict[str, float | int | None] = {
        "success_rate": num_succ / n,
        "len_p10": None,
        "avg_shortest_10pct": None,
        "num_episodes": n,
        "num_successes": num_succ,
    }
    if num_succ >= min_success_rate * n:
        out["len_p10"] = float(np.percentile(lengths, percentile, method=percentile_method))
        k = max(1, math.ceil(shortest_fraction * n))
        out["avg_shortest_10pct"] = float(np.sort(lengths)[:k].mean())
    return out


def mt10_average(per_task: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | None]:
    """Average row: mean of each metric over tasks; ``None`` if any task's value is ``None``."""
    if not per_task:
        raise ValueError("mt10_average needs at least one task.")
    out: dict[str, float | None] = {}
    for key, _ in _METRICS:
        vals = [m.get(key) for m in per_task.values()]
        out[key] = None if any(v is None for v in vals) else float(np.mean(vals))
    return out


# ---------------------------------------------------------------------------------------
# running episodes
# ---------------------------------------------------------------------------------------
@dataclass
class EpisodeResults:
    """Per-episode outcome of one task's evaluation (episode ``i`` = configuration ``i``)."""

    task: str
    episode_indices: np.ndarray
    successes: np.ndarray
    lengths: np.ndarray
    max_steps: int
    #: Camera frames of the recorded episodes (``record_episodes``), keyed by episode
    #: index: uint8 ``[T, H, W, 3]``, the reset frame then one frame per decision.
    frames: dict[int, np.ndarray] = field(default_factory=dict)

    def metrics(self, **kwargs) -> dict[str, float | int | None]:
        """:func:`compute_task_metrics` of these episodes."""
        return compute_task_metrics(
            self.lengths, self.successes, max_steps=self.max_steps, **kwargs
        )


def merge_episodes(parts: Iterable[EpisodeResults]) -> EpisodeResults:
    """Merge results of disjoint episode splits of one task, sorted by episode index."""
    parts = list(parts)
    if not parts:
        raise ValueError("merge_episodes needs at least one part.")
    if len({p.task for p in parts}) != 1 or len({p.max_steps for p in parts}) != 1:
        raise ValueError("merge_episodes: all parts must share the task and max_steps.")
    idx = np.concatenate([p.episode_indices for p in parts])
    if len(np.unique(idx)) != len(idx):
        raise ValueError("merge_episodes: the parts overlap (an episode index appears twice).")
    order = np.argsort(idx)
    return EpisodeResults(
        task=parts[0].task,
        episode_indices=idx[order],
        successes=np.concatenate([p.successes for p in parts])[order],
        lengths=np.concatenate([p.lengths for p in parts])[order],
        max_steps=parts[0].max_steps,
        frames={i: f for p in parts for i, f in p.frames.items()},
    )


def run_episodes(
    policy: Callable[[TensorDictBase], TensorDictBase],
    task: str | int,
    episode_indices: Sequence[int],
    *,
    num_envs: int = 16,
    chunk_size: int = 4,
    max_steps: int = 200,
    num_eval_configs: int = NUM_EVAL_CONFIGS,
    eval_seed: int = EVAL_SEED,
    from_pixels: bool = False,
    image_size: int = 128,
    env=None,
    record_episodes: int = 0,
) -> EpisodeResults:
    """Run ``policy`` on the given fixed evaluation configurations of ``task``.

    Episodes are run ``num_envs`` at a time in one batched chunked env; finished
    episodes are masked with ``"_step"`` so they are not stepped again. Pass ``env``
    (built with ``make_metaworld_env(mode="eval", ...)``) to reuse one.
    ``record_episodes`` keeps the camera frames of episodes ``0 .. record_episodes - 1``
    (those of them in ``episode_indices``) in :attr:`EpisodeResults.frames` (pixel envs
    only; it does not change any result). Splits merged with :func:`merge_episodes`
    therefore hold the same frames as one call.
    """
    name = _task_name(task)
    indices = np.asarray(list(episode_indices), dtype=np.int64)
    if indices.size == 0:
        raise ValueError("run_episodes needs at least one episode index.")
    if len(np.unique(indices)) != indices.size:
        raise ValueError("episode indices must be distinct (each is one fixed configuration).")
    if record_episodes < 0:
        raise ValueError(f"record_episodes must be >= 0, got {record_episodes}.")
    if indices.min() < 0 or indices.max() >= num_eval_configs:
        raise ValueError(
            f"episode indices must lie in [0, {num_eval_configs}), got {indices.min()}..{indices.max()}."
        )
    own_env = env is None
    if own_env:
        env = make_metaworld_env(
            name,
            num_envs=min(num_envs, indices.size),
            chunk_size=chunk_size,
            max_steps=max_steps,
            from_pixels=from_pixels,
            image_size=image_size,
            mode="eval",
            num_eval_configs=num_eval_configs,
            eval_seed=eval_seed,
        )
    if record_episodes and IMAGE_KEY not in env.observation_spec.keys(True, True):
        if own_env:
            env.close()
        raise ValueError(
            f"record_episodes needs camera frames, but the env has no {IMAGE_KEY} entry: "
            "pass from_pixels=True (or an env built with it)."
        )
    batch = int(env.batch_size.numel())
    if env.batch_size != torch.Size([batch]):
        raise ValueError(f"run_episodes needs a flat batched env, got batch {env.batch_size}.")
    successes = np.zeros(indices.size, bool)
    lengths = np.zeros(indices.size, np.int64)
    frames: dict[int, list[np.ndarray]] = {}
    try:
        for start in range(0, indices.size, batch):
            chunk = indices[start : start + batch]
            real = chunk.size
            padded = np.concatenate([chunk, np.full(batch - real, chunk[-1])])
            td = TensorDict(
                {"config_index": torch.as_tensor(padded).view(batch, 1)}, batch_size=[batch]
            )
            td = env.reset(td)
            active = torch.zeros(batch, dtype=torch.bool)
            active[:real] = True
            recorded = [j for j in range(real) if chunk[j] < record_episodes]
            _record(frames, td, recorded, chunk)
            ep_len = torch.zeros(batch, dtype=torch.int64)
            ep_succ = torch.zeros(batch, dtype=torch.bool)
            max_decisions = max_steps + 1  # each macro-step executes >= 1 env step
            for _ in range(max_decisions):
                with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
                    td = policy(td)
                if not bool(active.all()):
                    td.set("_step", active.clone())
                td = env.step(td)
                nxt = td.get("next")
                steps = nxt.get(STEPS_EXECUTED_KEY, None)
                steps = torch.ones(batch, dtype=torch.int64) if steps is None else steps.view(batch)
                ep_len += torch.where(active, steps, 0)
                ep_succ |= active & nxt.get(SUCCESS_KEY).view(batch)
                _record(frames, nxt, [j for j in recorded if active[j]], chunk)
                active &= ~nxt.get("done").view(batch)
                if not bool(active.any()):
                    break
                td = step_mdp(td, keep_other=True)
            else:
                raise RuntimeError(
                    f"{name}: episodes did not end within {max_decisions} decisions; the env's "
                    "max_steps must bound the episode."
                )
            successes[start : start + real] = ep_succ[:real].numpy()
            lengths[start : start + real] = ep_len[:real].numpy()
    finally:
        if own_env:
            env.close()
    if (lengths[~successes] != max_steps).any():
        raise RuntimeError(
            f"{name}: failed episodes ended before max_steps={max_steps}: {lengths[~successes]}; "
            "the env and the evaluation disagree on max_steps."
        )
    return EpisodeResults(
        name, indices, successes, lengths, int(max_steps),
        frames={i: np.stack(f) for i, f in frames.items()},
    )


def _record(frames: dict, td: TensorDictBase, rows: list[int], configs: np.ndarray) -> None:
    """Append the camera frame of each batch row in ``rows`` to its episode's list."""
    if not rows:
        return
    images = td.get(IMAGE_KEY)
    for j in rows:
        frames.setdefault(int(configs[j]), []).append(images[j].cpu().numpy().copy())


def evaluate_policy(
    policy: Callable[[TensorDictBase], TensorDictBase],
    task: str | int,
    *,
    num_episodes: int = NUM_EVAL_CONFIGS,
    episode_indices: Sequence[int] | None = None,
    num_envs: int = 16,
    chunk_size: int = 4,
    max_steps: int = 200,
    eval_seed: int = EVAL_SEED,
    num_eval_configs: int = NUM_EVAL_CONFIGS,
    from_pixels: bool = False,
    image_size: int = 128,
    return_episodes: bool = False,
    record_episodes: int = 0,
) -> dict:
    """Evaluate ``policy`` on one task with the paper's protocol; returns the metrics dict.

    Args:
        policy: a TensorDict module writing ``"action"`` chunks ``[*B, h, 4]`` (run
            under ``ExplorationType.DETERMINISTIC`` and ``torch.no_grad``).
        task: MT10 task name or index.

    Keyword Args:
        num_episodes: use the first ``num_episodes`` fixed configurations (128 for the
            paper's protocol; fewer for a quick eval).
        episode_indices: explicit subset (e.g. one split of several processes); merge
            the returned ``"episodes"`` with :func:`merge_episodes`.
        num_eval_configs: size of the fixed configuration list ``episode_indices``
            index into (default 128). Configuration ``i`` is the same for every list
            size larger than ``i`` (the lists share one RNG stream).
        num_envs: episodes run in parallel (batched, one process).
        chunk_size, max_steps, eval_seed, from_pixels, image_size: env settings.
        return_episodes: add the :class:`EpisodeResults` under ``"episodes"``.
        record_episodes: keep the camera frames of the first that many episodes
            (``from_pixels=True``) in ``out["episodes"].frames``; write them with
            :func:`torchrl_chunk.video.write_mp4`. Implies ``return_episodes``.

    Returns:
        ``{"task", "success_rate", "len_p10", "avg_shortest_10pct", "num_episodes",
        "num_successes"}`` (+ ``"episodes"``).
    """
    if episode_indices is None:
        if not 1 <= num_episodes <= NUM_EVAL_CONFIGS:
            raise ValueError(
                f"num_episodes must be in [1, {NUM_EVAL_CONFIGS}], got {num_episodes}."
            )
        episode_indices = range(num_episodes)
        # The first k configurations of a longer list are the k-list (same RNG stream).
        num_configs = num_episodes
    else:
        num_configs = num_eval_configs
    episodes = run_episodes(
        policy,
        task,
        episode_indices,
        num_envs=num_envs,
        chunk_size=chunk_size,
        max_steps=max_steps,
        num_eval_configs=num_configs,
        eval_seed=eval_seed,
        from_pixels=from_pixels,
        image_size=image_size,
        record_episodes=record_episodes,
    )
    out: dict = {"task": episodes.task, **episodes.metrics()}
    if return_episodes or record_episodes:
        out["episodes"] = episodes
    return out


def evaluate_mt10(
    policy: Callable[[TensorDictBase], TensorDictBase],
    tasks: Sequence[str] = MT10_TASKS,
    **kwargs,
) -> dict[str, dict]:
    """:func:`evaluate_policy` on every task plus an ``"Average"`` row (see :func:`mt10_average`)."""
    results = {}
    for task in tasks:
        res = evaluate_policy(policy, task, **kwargs)
        results[res["task"]] = res
    results[AVERAGE_ROW] = mt10_average({t: r for t, r in results.items()})
    return results


# ---------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------
def _display_name(task: str) -> str:
    if task == AVERAGE_ROW:
        return task
    return "-".join(part.capitalize() for part in task.removesuffix("-v3").split("-"))


def merge_results(per_algorithm: Mapping[str, Mapping[str, Mapping]]) -> dict[str, dict[str, dict]]:
    """Combine ``{algorithm: {task: metrics}}`` results into one table structure.

    Returns ``{task: {algorithm: metrics}}`` with tasks in MT10 order (others after),
    and an ``"Average"`` row per algorithm (recomputed with :func:`mt10_average` if an
    algorithm's results do not carry one).
    """
    if not per_algorithm:
        raise ValueError("merge_results needs at least one algorithm.")
    tasks: list[str] = []
    for res in per_algorithm.values():
        for task in res:
            if task != AVERAGE_ROW and task not in tasks:
                tasks.append(task)
    order = [t for t in MT10_TASKS if t in tasks] + [t for t in tasks if t not in MT10_TASKS]
    table: dict[str, dict[str, dict]] = {t: {} for t in [*order, AVERAGE_ROW]}
    for algo, res in per_algorithm.items():
        for task in order:
            if task in res:
                table[task][algo] = dict(res[task])
        avg = res.get(AVERAGE_ROW)
        if avg is None:
            avg = mt10_average({t: res[t] for t in order if t in res})
        table[AVERAGE_ROW][algo] = dict(avg)
    return table


def format_table(
    table: Mapping[str, Mapping[str, Mapping]], *, digits: int = 2
) -> tuple[list[str], list[str], list[list[str]]]:
    """Rows of a Table I layout: (group header, algorithm header, body rows)."""
    algos: list[str] = []
    for row in table.values():
        for algo in row:
            if algo not in algos:
                algos.append(algo)
    group = ["Task"]
    sub = [""]
    for _, label in _METRICS:
        group += [label] + [""] * (len(algos) - 1)
        sub += algos
    body = []
    for task, row in table.items():
        cells = [_display_name(task)]
        for key, _ in _METRICS:
            for algo in algos:
                val = row.get(algo, {}).get(key)
                cells.append(MISSING if val is None else f"{val:.{digits}f}")
        body.append(cells)
    return group, sub, body


def _as_table(results: Mapping) -> Mapping[str, Mapping[str, Mapping]]:
    # accept {algo: {task: metrics}} as well as an already merged {task: {algo: metrics}}
    first = next(iter(results.values()))
    if isinstance(first, Mapping) and first and all(
        isinstance(v, Mapping) and "success_rate" in v for v in first.values()
    ):
        keys = set(results)
        if keys & (set(MT10_TASKS) | {AVERAGE_ROW}):
            return results
    return merge_results(results)


def results_to_markdown(results: Mapping, *, digits: int = 2) -> str:
    """Markdown table in the layout of Table I (group header row, then algorithm row).

    ``results`` is ``{algorithm: {task: metrics}}`` (e.g. ``{"Ours": evaluate_mt10(...)}``)
    or the output of :func:`merge_results`.
    """
    group, sub, body = format_table(_as_table(results), digits=digits)
    lines = ["| " + " | ".join(group) + " |", "|" + "|".join(["---"] * len(group)) + "|"]
    lines.append("| " + " | ".join(sub) + " |")
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines) + "\n"


def results_to_csv(results: Mapping, *, digits: int = 2) -> str:
    """CSV in the layout of Table I: two header lines (metric group, algorithm)."""
    group, sub, body = format_table(_as_table(results), digits=digits)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(group)
    writer.writerow(sub)
    writer.writerows(body)
    return buf.getvalue()
