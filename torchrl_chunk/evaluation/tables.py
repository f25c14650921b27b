"""Tables in the layout of the paper's Table I: one column per method, per metric.

Results flow through two shapes:

* ``{label: {task: metrics}}`` ("per label"): what :func:`build_table` makes from
  per-job results (each ``{"label", "task", "metrics"}``, e.g. the ``result.json`` of a
  run's jobs) and what :func:`~torchrl_chunk.evaluation.evaluate_mt10` returns for one
  label;
* ``{task: {label: metrics}}`` ("per task", one row per task, then the ``"Average"``
  row): :func:`merge_results`, the rows of :func:`format_table`.

Any MetaWorld v3 tasks can be rows (MT10's ten, MT50's fifty, or a list): rows follow
:data:`~torchrl_chunk.envs.metaworld.ALL_V3_TASKS` (MT10 in Table I order first), and each
task is shown under its display name (:data:`TASK_DISPLAY_NAMES`, e.g. "Pick-Out-of-Hole").

:func:`results_to_markdown` and :func:`results_to_csv` accept either.

Marks: a metric that is not measured (fewer than 10% of the episodes succeeded, so no
length metric) prints as :data:`MISSING` ("–"); a column without a result for a task prints
as :data:`NO_RESULT` ("n/a"). When the columns cover different tasks, the "Average" row of
:func:`merge_results` is the mean over the tasks every column has, and is shown as
"Average (k of n tasks)". The Markdown table is followed by a legend of the marks it uses.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence

from torchrl_chunk.envs.metaworld.tasks import ALL_V3_TASKS
from torchrl_chunk.evaluation.metrics import AVERAGE_ROW, METRICS, mt10_average

__all__ = [
    "AVERAGED_TASKS",
    "MISSING",
    "NO_RESULT",
    "TABLE_I_LABELS",
    "TASK_DISPLAY_NAMES",
    "display_name",
    "order_tasks",
    "build_table",
    "format_table",
    "merge_results",
    "results_to_csv",
    "results_to_markdown",
    "table_legend",
]

#: How a metric that is not measured is printed: fewer than 10% of the episodes succeeded, so
#: the length metrics are ``None`` (in the Average row: on some task).
MISSING = "–"
#: How a cell without a result is printed: that column has no result for that task.
NO_RESULT = "n/a"
#: Key of an Average-row metrics dict of :func:`merge_results` when the columns cover different
#: tasks: the tasks it averages (those every column has).
AVERAGED_TASKS = "averaged_tasks"
#: Column order of the paper's Table I; other labels (ablations) follow them.
TABLE_I_LABELS: tuple[str, ...] = ("SFT", "SFT-100", "PPO", "Ours")

_LOWER_WORDS = {"of"}


def _title(task: str) -> str:
    parts = task.removesuffix("-v3").split("-")
    return "-".join(p if i and p in _LOWER_WORDS else p.capitalize() for i, p in enumerate(parts))


#: Row names of every MetaWorld v3 task: the name without "-v3", each word capitalised
#: ("Button-Press-Topdown", "Pick-Out-of-Hole"), as Table I names MT10's.
TASK_DISPLAY_NAMES: dict[str, str] = {t: _title(t) for t in ALL_V3_TASKS}


def display_name(task: str) -> str:
    """The row name of ``task`` (:data:`TASK_DISPLAY_NAMES`; other names titled the same way)."""
    if task == AVERAGE_ROW:
        return task
    return TASK_DISPLAY_NAMES.get(task) or _title(task)


def order_tasks(tasks: Iterable[str]) -> list[str]:
    """``tasks`` (without duplicates) in table order: :data:`ALL_V3_TASKS` order, others after in given order."""
    seen = list(dict.fromkeys(tasks))
    known = set(seen) & set(ALL_V3_TASKS)
    return [t for t in ALL_V3_TASKS if t in known] + [t for t in seen if t not in known]


def build_table(
    results: Iterable[Mapping], *, label_order: Sequence[str] = ()
) -> dict[str, dict[str, dict]]:
    """``{label: {task: metrics}}`` from per-job results ``{"label", "task", "metrics"}``.

    Labels listed in ``label_order`` (e.g. :data:`TABLE_I_LABELS`) come first, in that
    order; the others follow in order of appearance. When two results share a label, a
    task and a ``"seed"`` (results without one share seed ``None``), the later one wins
    (e.g. a later run directory). Results of several seeds are averaged per metric with
    the rule of the "Average" row (:func:`~torchrl_chunk.evaluation.mt10_average`: a
    length metric is missing if any seed's is), and ``"seeds"`` counts them.
    """
    per_seed: dict[str, dict[str, dict]] = {}
    for i, r in enumerate(results):
        missing = [k for k in ("label", "task", "metrics") if k not in r]
        if missing:
            raise ValueError(
                f"build_table: result {i} lacks {missing}; each result needs 'label', 'task' "
                "and 'metrics' (as in a job's result.json)."
            )
        per_seed.setdefault(r["label"], {}).setdefault(r["task"], {})[r.get("seed")] = dict(r["metrics"])
    table: dict[str, dict[str, dict]] = {}
    for label, tasks in per_seed.items():
        for task, seeds in tasks.items():
            if len(seeds) == 1:
                table.setdefault(label, {})[task] = next(iter(seeds.values()))
            else:
                table.setdefault(label, {})[task] = {**mt10_average(seeds), "seeds": len(seeds)}
    first = [label for label in label_order if label in table]
    return {label: table[label] for label in first + [k for k in table if k not in first]}


def merge_results(per_algorithm: Mapping[str, Mapping[str, Mapping]]) -> dict[str, dict[str, dict]]:
    """Turn ``{label: {task: metrics}}`` into the per-task rows ``{task: {label: metrics}}``.

    Tasks come in :data:`ALL_V3_TASKS` order (MT10's in Table I order, then the other
    MT50 tasks; unknown names after), then an ``"Average"`` row per label
    (recomputed with :func:`~torchrl_chunk.evaluation.mt10_average` if a label's results
    do not carry one).

    When the labels cover different tasks, a row holds only the labels that have it, and
    every label's Average is recomputed over the tasks all labels have (so the columns
    average the same tasks), with those tasks under :data:`AVERAGED_TASKS`; with no task
    common to all labels the Average row is empty.
    """
    if not per_algorithm:
        raise ValueError("merge_results needs at least one algorithm.")
    tasks: list[str] = []
    for res in per_algorithm.values():
        for task in res:
            if task != AVERAGE_ROW and task not in tasks:
                tasks.append(task)
    order = order_tasks(tasks)
    common = [t for t in order if all(t in res for res in per_algorithm.values())]
    table: dict[str, dict[str, dict]] = {t: {} for t in [*order, AVERAGE_ROW]}
    for algo, res in per_algorithm.items():
        for task in order:
            if task in res:
                table[task][algo] = dict(res[task])
        if len(common) < len(order):  # the labels cover different tasks: average the shared ones only
            if common:
                table[AVERAGE_ROW][algo] = {**mt10_average({t: res[t] for t in common}), AVERAGED_TASKS: common}
            continue
        avg = res.get(AVERAGE_ROW)
        if avg is None:
            avg = mt10_average({t: res[t] for t in order if t in res})
        table[AVERAGE_ROW][algo] = dict(avg)
    return table


def format_table(
    table: Mapping[str, Mapping[str, Mapping]],
    *,
    digits: int = 2,
    columns: Sequence[str] = (),
) -> tuple[list[str], list[str], list[list[str]]]:
    """Rows of a Table I layout: (group header, algorithm header, body rows).

    ``table`` holds the per-task rows of :func:`merge_results`; ``columns`` orders the
    labels (those not listed follow in order of appearance). A metric that is ``None``
    prints as :data:`MISSING`, a label absent from a row as :data:`NO_RESULT`; an Average
    row over fewer tasks than the table has (:data:`AVERAGED_TASKS`) is named
    "Average (k of n tasks)".
    """
    algos = _columns(table, columns)
    group = ["Task"]
    sub = [""]
    for _, label in METRICS:
        group += [label] + [""] * (len(algos) - 1)
        sub += algos
    body = []
    averaged = _averaged_tasks(table)
    for task, row in table.items():
        name = display_name(task)
        if task == AVERAGE_ROW and averaged is not None:
            name = f"{AVERAGE_ROW} ({len(averaged)} of {len(_task_rows(table))} tasks)"
        cells = [name]
        for key, _ in METRICS:
            for algo in algos:
                if algo not in row:
                    cells.append(NO_RESULT)
                    continue
                val = row[algo].get(key)
                cells.append(MISSING if val is None else f"{val:.{digits}f}")
        body.append(cells)
    return group, sub, body


def table_legend(table: Mapping[str, Mapping[str, Mapping]], *, columns: Sequence[str] = ()) -> list[str]:
    """Lines explaining the marks of ``table`` (per-task rows of :func:`merge_results`): one per
    mark it uses (:data:`MISSING`, :data:`NO_RESULT`) and, when its Average row covers only the
    tasks every column has, which tasks those are and which tasks each column lacks."""
    algos = _columns(table, columns)
    tasks = _task_rows(table)
    values = [row.get(algo) for row in table.values() for algo in algos]
    lines = []
    if any(v is not None and any(v.get(key) is None for key, _ in METRICS) for v in values):
        lines.append(f"{MISSING}: fewer than 10% of the episodes succeeded, so no length is measured "
                     "(in the Average row: on at least one task).")
    if any(v is None for v in values):
        lines.append(f"{NO_RESULT}: no result for that task in that column.")
    lacking = [f"{algo} lacks {', '.join(display_name(t) for t in tasks if algo not in table[t])}"
               for algo in algos if any(algo not in table[t] for t in tasks)]
    if lacking:
        averaged = _averaged_tasks(table)
        if averaged is not None:
            lines.append(f"{AVERAGE_ROW} ({len(averaged)} of {len(tasks)} tasks): the mean over the tasks every "
                         f"column has ({', '.join(display_name(t) for t in averaged)}); {'; '.join(lacking)}.")
        elif AVERAGE_ROW in table and not table[AVERAGE_ROW]:
            lines.append(f"{AVERAGE_ROW}: none, no task has a result in every column; {'; '.join(lacking)}.")
        else:
            lines.append(f"The columns cover different tasks: {'; '.join(lacking)}.")
    return lines


def _columns(table: Mapping[str, Mapping[str, Mapping]], columns: Sequence[str]) -> list[str]:
    algos: list[str] = list(columns)
    for row in table.values():
        for algo in row:
            if algo not in algos:
                algos.append(algo)
    return algos


def _task_rows(table: Mapping) -> list[str]:
    return [t for t in table if t != AVERAGE_ROW]


def _averaged_tasks(table: Mapping[str, Mapping[str, Mapping]]) -> list[str] | None:
    """The tasks the Average row averages when they are fewer than the table's, else ``None``."""
    for metrics in table.get(AVERAGE_ROW, {}).values():
        averaged = metrics.get(AVERAGED_TASKS)
        if averaged is not None and len(averaged) < len(_task_rows(table)):
            return list(averaged)
    return None


def _merged(results: Mapping) -> tuple[Mapping, list[str]]:
    """The per-task rows of ``{label: {task: metrics}}`` (and its column order), or already merged rows."""
    first = next(iter(results.values()))
    if isinstance(first, Mapping) and first and all(
        isinstance(v, Mapping) and "success_rate" in v for v in first.values()
    ):
        keys = set(results)
        if keys & (set(ALL_V3_TASKS) | {AVERAGE_ROW}):
            return results, []
    return merge_results(results), list(results)


def results_to_markdown(results: Mapping, *, digits: int = 2) -> str:
    """Markdown table in the layout of Table I (group header row, then algorithm row).

    ``results`` is ``{label: {task: metrics}}`` (e.g. from :func:`build_table`, or
    ``{"Ours": evaluate_mt10(...)}``) or the output of :func:`merge_results`. When the
    table shows a mark ("–", "n/a") or an Average over fewer tasks than its rows, a blank
    line and its legend (:func:`table_legend`) follow the table.
    """
    table, columns = _merged(results)
    group, sub, body = format_table(table, digits=digits, columns=columns)
    lines = ["| " + " | ".join(group) + " |", "|" + "|".join(["---"] * len(group)) + "|"]
    lines.append("| " + " | ".join(sub) + " |")
    lines += ["| " + " | ".join(r) + " |" for r in body]
    legend = table_legend(table, columns=columns)
    if legend:
        lines += ["", *legend]
    return "\n".join(lines) + "\n"


def results_to_csv(results: Mapping, *, digits: int = 2) -> str:
    """CSV in the layout of Table I: two header lines (metric group, algorithm); the marks of
    :func:`format_table`, no legend (every line is a table row)."""
    table, columns = _merged(results)
    group, sub, body = format_table(table, digits=digits, columns=columns)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(group)
    writer.writerow(sub)
    writer.writerows(body)
    return buf.getvalue()
