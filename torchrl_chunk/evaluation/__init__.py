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

from torchrl_chunk.evaluation.metrics import AVERAGE_ROW, compute_task_metrics, mt10_average
from torchrl_chunk.evaluation.runner import EpisodeResults, evaluate_mt10, evaluate_policy
from torchrl_chunk.evaluation.stat_plots import write_statistics
from torchrl_chunk.evaluation.statistics import MISSING_LENGTH, compute_statistics
from torchrl_chunk.evaluation.tables import (
    MISSING,
    TABLE_I_LABELS,
    build_table,
    merge_results,
    results_to_csv,
    results_to_markdown,
)

# What a user of the protocol calls; the building blocks (run_episodes, merge_episodes,
# score_matrix, task_intervals, aggregate_intervals, history_matrix, statistics_markdown,
# plot_statistics, format_table, ...) are imported from their modules.
__all__ = [
    "AVERAGE_ROW",
    "EpisodeResults",
    "MISSING",
    "MISSING_LENGTH",
    "TABLE_I_LABELS",
    "build_table",
    "compute_statistics",
    "compute_task_metrics",
    "evaluate_mt10",
    "evaluate_policy",
    "merge_results",
    "mt10_average",
    "results_to_csv",
    "results_to_markdown",
    "write_statistics",
]
