"""Evaluation protocol, metrics and tables of the paper's Table I (Section III.A.3).

* :mod:`~torchrl_chunk.evaluation.metrics`: Acc., Len. and Avg(l.) of one task's
  episodes (:func:`compute_task_metrics`) and the "Average" row (:func:`mt10_average`);
* :mod:`~torchrl_chunk.evaluation.runner`: the fixed-configuration episodes
  (:func:`evaluate_policy`, :func:`evaluate_mt10`, :func:`run_episodes`,
  :func:`merge_episodes`);
* :mod:`~torchrl_chunk.evaluation.tables`: ``{label: {task: metrics}}`` tables
  (:func:`build_table`) printed as Markdown or CSV in Table I's layout;
* :mod:`~torchrl_chunk.evaluation.statistics`: statistics over seeds with rliable
  (per-task t-intervals, IQM and mean with stratified-bootstrap CIs, plots), written by
  :func:`write_statistics` as ``stats.md`` and PNGs.

The metrics dict of one task: ``{"task", "success_rate", "len_p10",
"avg_shortest_10pct", "num_episodes", "num_successes"}``.
"""

from torchrl_chunk.evaluation.metrics import (
    AVERAGE_ROW,
    METRICS,
    compute_task_metrics,
    mt10_average,
)
from torchrl_chunk.evaluation.runner import (
    EpisodeResults,
    evaluate_mt10,
    evaluate_policy,
    merge_episodes,
    run_episodes,
)
from torchrl_chunk.evaluation.statistics import (
    MISSING_LENGTH,
    STAT_METRICS,
    SeedStatistics,
    aggregate_intervals,
    compute_statistics,
    history_matrix,
    score_matrix,
    statistics_markdown,
    task_intervals,
    write_statistics,
)
from torchrl_chunk.evaluation.stat_plots import plot_statistics
from torchrl_chunk.evaluation.tables import (
    MISSING,
    TABLE_I_LABELS,
    build_table,
    format_table,
    merge_results,
    results_to_csv,
    results_to_markdown,
)

__all__ = [
    "AVERAGE_ROW",
    "EpisodeResults",
    "METRICS",
    "MISSING",
    "MISSING_LENGTH",
    "STAT_METRICS",
    "SeedStatistics",
    "TABLE_I_LABELS",
    "aggregate_intervals",
    "build_table",
    "compute_statistics",
    "compute_task_metrics",
    "evaluate_mt10",
    "evaluate_policy",
    "format_table",
    "history_matrix",
    "merge_episodes",
    "merge_results",
    "mt10_average",
    "plot_statistics",
    "results_to_csv",
    "results_to_markdown",
    "run_episodes",
    "score_matrix",
    "statistics_markdown",
    "task_intervals",
    "write_statistics",
]
