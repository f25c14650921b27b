r"""Statistics over seeds: per-task t-intervals, IQM and mean with bootstrap CIs, plots.

A run of several seeds gives, per label (method), a score matrix
:math:`x \in \mathbb{R}^{N \times M}`: :math:`x_{nm}` is seed :math:`n`'s final Acc. or
Avg(l.) on task :math:`m` (:func:`score_matrix`). From it:

* per task (:func:`task_intervals`): the mean over seeds
  :math:`\bar x_m = \frac1N \sum_n x_{nm}` and the Student-t interval
  :math:`\bar x_m \pm t_{(1+c)/2,\,N-1}\, s_m/\sqrt N` (:math:`s_m` the sample standard
  deviation, :math:`c = 0.95`); none with one seed;
* aggregated over tasks (:func:`aggregate_intervals`): the interquartile mean (IQM, the
  mean of the middle 50 % of the :math:`NM` scores, i.e. the 25 % trimmed mean) and the
  mean, each with a 95 % **stratified bootstrap** interval: every replicate resamples
  the :math:`N` seeds with replacement *within each task*, and the interval is the
  2.5th-97.5th percentile of the replicated statistic (Agarwal et al., "Deep
  Reinforcement Learning at the Edge of the Statistical Precipice", NeurIPS 2021);
* a performance profile of Acc. (the fraction of runs with a score above :math:`\tau`,
  :math:`\tau \in [0, 1]`) and sample-efficiency curves (IQM of the quick evaluations'
  Acc. and Avg(l.) versus env steps, :func:`history_matrix`; labels without a history,
  SFT and SFT-100, as a dashed line at their final IQM), each with bootstrap bands.

Avg(l.) is lower-is-better; a missing length (fewer than 10 % successes, see
:mod:`~torchrl_chunk.evaluation.metrics`) counts as ``max_steps`` (200), the length a
failed episode counts as in the protocol, so a run that rarely succeeds scores as
badly as it can rather than dropping out of the matrix.

Why rliable: it is the field's standard for few-run RL results (the paper above, and
the library that ships with it). Its stratified bootstrap, percentile intervals, mean and
plots are used as they are, so the intervals can be compared with other papers' and no
resampling code of ours needs trusting. What is written here is only glue: turning
``result.json`` dicts into rliable's ``{label: [num_seeds, num_tasks]}`` matrices,
aligning the quick-evaluation histories on common env steps, the t-interval (one line of
scipy; rliable has no per-task interval) and the Markdown. Three departures:

* every bootstrap is seeded, for reproducible files: it gets
  ``random_state=np.random.RandomState(seed)`` and, since rliable 1.2's
  ``StratifiedBootstrap.update_indices`` ignores it and draws from numpy's *global* RNG,
  runs with that RNG seeded too (its state restored afterwards). So the profile calls
  :func:`rliable.library.get_interval_estimates` directly, as
  ``create_performance_profile`` does, which takes no seed;
* the two statistics the bootstrap evaluates on every replicate, the IQM and the
  fraction of runs above :math:`\tau`, are numpy one-liners equal to rliable's
  ``metrics.aggregate_iqm`` (``scipy.stats.trim_mean``) and ``library.score_distributions``
  (tested against them) but vectorized over env steps and thresholds: rliable's take
  0.3 ms and 1.7 ms a call, which made 50,000 replicates cost minutes;
* the bands of the two plots use ``min(reps, 2000)`` replicates (rliable's default for
  profiles); the tables use the full ``reps`` (50,000 by default, as rliable's).

rliable, scipy and matplotlib are imported inside the functions that need them, so
``import torchrl_chunk.evaluation`` stays light.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from torchrl_chunk.evaluation.tables import TABLE_I_LABELS, display_name, order_tasks

__all__ = [
    "MISSING_LENGTH",
    "STAT_METRICS",
    "SeedStatistics",
    "aggregate_intervals",
    "compute_statistics",
    "history_matrix",
    "score_matrix",
    "statistics_markdown",
    "bootstrap",
    "fraction_above",
    "iqm",
    "max_seeds",
    "task_intervals",
]

#: What a missing length metric counts as: ``max_steps``, a failed episode's length.
MISSING_LENGTH = 200.0
#: The metrics with statistics: ``(key in the metrics dict, column label)``; Avg(l.) is lower-is-better.
STAT_METRICS = (("success_rate", "Acc."), ("avg_shortest_10pct", "Avg(l.)"))
_LENGTHS = ("len_p10", "avg_shortest_10pct")


def _seed_key(seed):
    return (seed is None, seed if seed is not None else 0)


def _value(metrics: Mapping, metric: str, missing: float, where: str) -> float:
    val = metrics.get(metric)
    if val is None:
        if metric not in _LENGTHS:
            raise ValueError(f"{where} has no {metric!r}; only a length metric may be missing.")
        return float(missing)
    return float(val)


def _runs(results: Iterable[Mapping], labels: Sequence[str] | None) -> dict[str, dict[str, dict]]:
    """``{label: {task: {seed: result}}}``; the later of two results of one label, task and seed wins."""
    runs: dict[str, dict[str, dict]] = {}
    for i, r in enumerate(results):
        missing = [k for k in ("label", "task", "metrics") if k not in r]
        if missing:
            raise ValueError(f"result {i} lacks {missing}; each needs 'label', 'task', 'metrics' (a result.json).")
        runs.setdefault(r["label"], {}).setdefault(r["task"], {})[r.get("seed")] = r
    if not runs:
        raise ValueError("no results: statistics need at least one result.json.")
    if labels is None:
        labels = [lb for lb in TABLE_I_LABELS if lb in runs] + [lb for lb in runs if lb not in TABLE_I_LABELS]
    absent = [lb for lb in labels if lb not in runs]
    if absent:
        raise ValueError(f"no results for label(s) {absent}; the results hold {list(runs)}.")
    return {lb: runs[lb] for lb in labels}


def _full_grid(runs: Mapping[str, Mapping[str, dict]], tasks: Sequence[str] | None) -> tuple[list[str], list]:
    """The tasks and seeds of a full matrix; a one-line ValueError naming what is missing."""
    if tasks is None:
        seen = [t for per_task in runs.values() for t in per_task]
        tasks = order_tasks(seen)
    seed_sets = {}
    for label, per_task in runs.items():
        seeds = sorted({s for t in tasks for s in per_task.get(t, {})}, key=_seed_key)
        for t in tasks:
            lacking = [s for s in seeds if s not in per_task.get(t, {})]
            if not seeds or lacking:
                raise ValueError(f"label {label!r} has no result for task {t!r} with seed(s) {lacking or 'any'}; "
                                 "rliable needs every seed on every task.")
        seed_sets[label] = seeds
    if len({tuple(s) for s in seed_sets.values()}) > 1:
        raise ValueError(f"labels have different seeds ({', '.join(f'{k!r}: {v}' for k, v in seed_sets.items())}); "
                         "a full matrix needs the same seeds for every label.")
    return list(tasks), next(iter(seed_sets.values()))


def score_matrix(
    results: Iterable[Mapping],
    metric: str,
    *,
    labels: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    missing: float = MISSING_LENGTH,
) -> dict[str, np.ndarray]:
    """``{label: scores [num_seeds, num_tasks]}`` of one metric from per-job results.

    ``results`` are ``result.json`` dicts (``"label"``, ``"task"``, ``"seed"``,
    ``"metrics"``); of two with the same label, task and seed the later wins (as in
    :func:`~torchrl_chunk.evaluation.build_table`). Rows are the seeds in increasing
    order; columns the ``tasks`` (default: all tasks of the results, in ``ALL_V3_TASKS``
    order: MT10's first, then the other MT50 tasks).
    ``labels`` default to Table I's order, then the others. A missing length metric
    counts as ``missing`` (``max_steps``, 200). Raises a one-line ``ValueError`` naming
    the label and task when a seed lacks a task, or when labels have different seeds.
    """
    runs = _runs(results, labels)
    tasks, seeds = _full_grid(runs, tasks)
    return {
        label: np.array([[_value(per_task[t][s]["metrics"], metric, missing, f"{label}/{t}/seed {s}")
                          for t in tasks] for s in seeds])
        for label, per_task in runs.items()
    }


def task_intervals(scores: np.ndarray, *, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-task mean over seeds and its Student-t interval (``[2, num_tasks]``: low, high).

    ``scores`` is ``[num_seeds, num_tasks]``; the interval is ``None`` with one seed.
    """
    import scipy.stats

    scores = np.asarray(scores, dtype=np.float64)
    mean = scores.mean(axis=0)
    n = scores.shape[0]
    if n < 2:
        return mean, None
    half = scipy.stats.t.ppf((1 + confidence) / 2, n - 1) * scores.std(axis=0, ddof=1) / np.sqrt(n)
    return mean, np.stack([mean - half, mean + half])


def bootstrap(scores: Mapping[str, np.ndarray], func, reps: int, seed: int, confidence: float):
    """``rliable.library.get_interval_estimates``, seeded; numpy's global random state is left as it was."""
    from rliable import library

    state = np.random.get_state()
    np.random.seed(seed)  # rliable 1.2's StratifiedBootstrap draws its indices from numpy's global RNG
    try:
        with warnings.catch_warnings():  # arch deprecates random_state; rliable 1.2 still passes it
            warnings.simplefilter("ignore", FutureWarning)
            return library.get_interval_estimates(dict(scores), func, reps=reps, confidence_interval_size=confidence,
                                                  random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(state)


def aggregate_intervals(
    scores: Mapping[str, np.ndarray], *, reps: int = 50000, seed: int = 0, confidence: float = 0.95
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """IQM and mean of each label's ``[num_seeds, num_tasks]`` scores, with stratified-bootstrap CIs.

    Returns rliable's pair: ``{label: [iqm, mean]}`` and ``{label: [[iqm_low, mean_low],
    [iqm_high, mean_high]]}``; ``seed`` seeds the bootstrap, so equal inputs give equal CIs.
    """
    from rliable import metrics

    def func(x):
        return np.array([iqm(x), metrics.aggregate_mean(x)])

    return bootstrap(scores, func, reps, seed, confidence)


def iqm(x: np.ndarray) -> np.ndarray:
    """IQM of ``[num_seeds, num_tasks, ...]`` scores over seeds and tasks, per trailing index.

    ``rliable.metrics.aggregate_iqm`` (``scipy.stats.trim_mean(x, 0.25, axis=None)``) of
    each ``x[..., k]``: the mean of the sorted scores without the ``int(0.25 n)`` lowest
    and highest.
    """
    flat = np.sort(x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), axis=0)
    cut = int(0.25 * flat.shape[0])
    return flat[cut:flat.shape[0] - cut].mean(axis=0)


def fraction_above(x: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """``rliable.library.score_distributions(x, taus)``: the fraction of runs with a score above each tau."""
    return (x.reshape(-1, 1) > taus).mean(axis=0)


def _nearest(history: Mapping[int, float], grid: Sequence[int]) -> list[float]:
    steps = np.array(sorted(history))
    return [history[int(steps[np.abs(steps - g).argmin()])] for g in grid]


def history_matrix(
    results: Iterable[Mapping],
    metric: str,
    *,
    labels: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    missing: float = MISSING_LENGTH,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{label: (env_steps [K], scores [num_seeds, num_tasks, K])}`` from the quick evaluations.

    Each result's ``"history"`` lists ``{"env_steps", <metric>, ...}``. The grid is the
    env steps that every run of the label evaluated at; when fewer than two are shared
    (histories that do not align, e.g. runs of different collector batches), it is the
    env steps of the run with the fewest evaluations, and every run contributes, at each
    grid point, its evaluation nearest in env steps. Labels any of whose runs has fewer
    than two evaluations (SFT, SFT-100) are left out. Seeds and tasks as in
    :func:`score_matrix`, whose errors this raises too.
    """
    runs = _runs(results, labels)
    tasks, seeds = _full_grid(runs, tasks)
    out = {}
    for label, per_task in runs.items():
        hists = [{int(h["env_steps"]): _value(h, metric, missing, f"{label}/{t}/seed {s} history")
                  for h in per_task[t][s].get("history") or []} for s in seeds for t in tasks]
        if min(len(h) for h in hists) < 2:
            continue
        grid = sorted(set.intersection(*(set(h) for h in hists)))
        if len(grid) < 2:
            grid = sorted(min(hists, key=len))
        vals = np.array([_nearest(h, grid) for h in hists])
        out[label] = (np.array(grid), vals.reshape(len(seeds), len(tasks), len(grid)))
    return out


@dataclass(frozen=True)
class SeedStatistics:
    """Score matrices and aggregate estimates of every metric in :data:`STAT_METRICS`."""

    labels: tuple[str, ...]
    tasks: tuple[str, ...]
    seeds: tuple
    reps: int
    confidence: float
    #: ``{metric: {label: [num_seeds, num_tasks]}}``.
    scores: dict[str, dict[str, np.ndarray]]
    #: ``{metric: (points, intervals)}`` of :func:`aggregate_intervals`.
    aggregates: dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]


def compute_statistics(
    results: Sequence[Mapping], *, reps: int = 50000, seed: int = 0, confidence: float = 0.95
) -> SeedStatistics:
    """Score matrices and IQM/mean CIs of Acc. and Avg(l.) for all labels and tasks of ``results``.

    A missing Avg(l.) counts as :data:`MISSING_LENGTH`; errors as :func:`score_matrix`.
    """
    runs = _runs(results, None)
    tasks, seeds = _full_grid(runs, None)
    scores = {m: score_matrix(results, m, tasks=tasks) for m, _ in STAT_METRICS}
    aggs = {m: aggregate_intervals(s, reps=reps, seed=seed, confidence=confidence) for m, s in scores.items()}
    return SeedStatistics(tuple(runs), tuple(tasks), tuple(seeds), reps, confidence, scores, aggs)


def _cell(mean: float, ci, digits: int) -> str:
    return f"{mean:.{digits}f}" if ci is None else f"{mean:.{digits}f} ± {(ci[1] - ci[0]) / 2:.{digits}f}"


def statistics_markdown(stats: SeedStatistics, *, digits: int = 2) -> str:
    """Markdown: the per-task "mean ± CI" table, then the aggregate IQM/mean [low, high] table."""
    pct = f"{stats.confidence:.0%}"
    n = len(stats.seeds)
    lines = [
        "## Statistics over seeds", "",
        f"{n} seed{'s' * (n != 1)} ({', '.join(map(str, stats.seeds))}) of every label on every task. "
        f"A missing Avg(l.) (fewer than 10% successes) counts as {MISSING_LENGTH:.0f} (max_steps). "
        "Acc. is higher-is-better, Avg(l.) lower-is-better.", "",
        f"### Per task: mean over seeds ± half-width of the {pct} Student-t interval", "",
    ]
    group, sub = ["Task"], [""]
    for _, name in STAT_METRICS:
        group += [name] + [""] * (len(stats.labels) - 1)
        sub += list(stats.labels)
    lines += ["| " + " | ".join(group) + " |", "|" + "|".join(["---"] * len(group)) + "|",
              "| " + " | ".join(sub) + " |"]
    per_task = {(m, lb): task_intervals(stats.scores[m][lb], confidence=stats.confidence)
                for m, _ in STAT_METRICS for lb in stats.labels}
    for j, task in enumerate(stats.tasks):
        cells = [display_name(task)]
        for m, _ in STAT_METRICS:
            for lb in stats.labels:
                mean, ci = per_task[m, lb]
                cells.append(_cell(mean[j], None if ci is None else ci[:, j], digits))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"### Aggregate over {len(stats.tasks)} tasks × {n} seeds: point estimate [{pct} CI]", "",
              f"Interquartile mean (IQM) and mean of all runs; stratified bootstrap CIs (rliable, "
              f"{stats.reps} reps, percentile method).", ""]
    head = ["Label"] + [f"{agg} {name}" for _, name in STAT_METRICS for agg in ("IQM", "Mean")]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for lb in stats.labels:
        cells = [lb]
        for m, _ in STAT_METRICS:
            points, cis = stats.aggregates[m]
            cells += [f"{points[lb][k]:.{digits}f} [{cis[lb][0, k]:.{digits}f}, {cis[lb][1, k]:.{digits}f}]"
                      for k in range(2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + _head_to_head(stats, digits)) + "\n"


def _head_to_head(stats: SeedStatistics, digits: int, reference: str = "Ours") -> list[str]:
    """Per baseline: on how many tasks ``reference``'s mean over seeds is at least as good."""
    if reference not in stats.labels or len(stats.labels) < 2:
        return []
    acc, length = (stats.scores[m] for m, _ in STAT_METRICS)
    lines = ["", f"### {reference} against each other label, task by task (means over seeds)", "",
             f"| Label | tasks where {reference}'s Acc. >= | tasks where {reference}'s Avg(l.) <= |", "|---|---|---|"]
    for lb in stats.labels:
        if lb != reference:
            better_acc = int((acc[reference].mean(0).round(digits) >= acc[lb].mean(0).round(digits)).sum())
            better_len = int((length[reference].mean(0).round(digits) <= length[lb].mean(0).round(digits)).sum())
            lines.append(f"| {lb} | {better_acc} of {len(stats.tasks)} | {better_len} of {len(stats.tasks)} |")
    return lines


def max_seeds(results: Sequence[Mapping]) -> int:
    """The largest number of seeds any label has on a task (0 without results)."""
    results = list(results)
    if not results:
        return 0
    return max(len({s for seeds in per_task.values() for s in seeds}) for per_task in _runs(results, None).values())
