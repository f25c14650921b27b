"""What the demo buffer did, per task, next to how fast the policy got: the evidence for Table I.

    python -m torchrl_chunk.experiment.buffer_report RUN [RUN ...] [--label Ours] [--against PPO] [--curve avg|acc]

Reads the same ``jobs/<algo>/<task>/seed_<k>/result.json`` files as :mod:`.merge_results` and
prints one markdown table, one row per task, means over the seeds of ``--label``:

* the buffer at the end of training (``result.json``'s ``buffer`` record): the paper's length
  limit ℓ_0 (longest expert demo), the limit it ended at (lower with ``length_limit=adaptive``),
  the trajectories it held (of them the experts'), how many it evicted, and the BC weight;
* the quick evaluations' Avg(l.) (``--curve acc``: success rate) at each evaluation point
  (``history``; the k-th point of every seed, whose env-step counts differ by less than one
  collection), so one can see whether the episodes were still getting shorter (or the success
  rate still rising) when the budget ran out;
* the final Avg(l.) of ``--label`` and of ``--against``, and on how many seeds ``--label``'s
  was the shorter (a missing Avg(l.), no success at all, counts as 200, the episode cap).

It is a report, not a statistic: the confidence intervals are in :mod:`.merge_results`' stats.md.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import numpy as np

from torchrl_chunk.evaluation import MISSING_LENGTH  # no success: the episode cap, as in the statistics
from torchrl_chunk.experiment.launcher import JobError
from torchrl_chunk.experiment.merge_results import load_results


def _avg_len(metrics: dict) -> float:
    value = metrics.get("avg_shortest_10pct")
    return MISSING_LENGTH if value is None else float(value)


def _fmt(values: list[float], digits: int = 1) -> str:
    finite = [v for v in values if v is not None]
    return f"{np.mean(finite):.{digits}f}" if finite else "-"


def _success(metrics: dict) -> float:
    return float(metrics["success_rate"])


def report(results: list[dict], label: str = "Ours", against: str = "PPO", curve: str = "avg") -> str:
    """The markdown table described in the module docstring; ``curve`` is ``"avg"`` or ``"acc"``."""
    if curve not in ("avg", "acc"):
        raise JobError(f"error: curve={curve!r}; pass --curve avg (Avg(l.)) or --curve acc (success rate)")
    point, curve_name, digits = (_avg_len, "Avg(l.)", 1) if curve == "avg" else (_success, "Acc.", 2)
    by_task: dict[str, dict[str, dict]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        by_task[r["task"]][r["label"]][r.get("seed")] = r  # a later run replaces an earlier seed
    if not any(label in labels for labels in by_task.values()):
        raise JobError(f"error: no result labelled {label!r}; pass --label with one of "
                         f"{sorted({lab for labels in by_task.values() for lab in labels})}")
    n_evals = max(len(r.get("history", [])) for labels in by_task.values() for r in labels.get(label, {}).values())
    head = ["Task", "seeds", "ℓ_0", "limit at end", "stored (experts)", "evicted", "BC weight"]
    head += [f"{curve_name} eval {k}" for k in range(n_evals)] + [f"Avg(l.) {label}", f"Avg(l.) {against}",
                                                             f"{label} shorter"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task in sorted(by_task):
        ours, other = by_task[task].get(label, {}), by_task[task].get(against, {})
        if not ours:
            continue
        buf = [r.get("buffer") or {} for r in ours.values()]
        points = [_fmt([point(r["history"][k]) for r in ours.values() if len(r.get("history", [])) > k], digits)
                  for k in range(n_evals)]
        shared = sorted(set(ours) & set(other), key=str)
        wins = sum(_avg_len(ours[s]["metrics"]) < _avg_len(other[s]["metrics"]) for s in shared)
        row = [task, str(len(ours)), _fmt([b.get("base_length_limit") for b in buf], 0),
               _fmt([b.get("length_limit") for b in buf], 1),
               f"{_fmt([b.get('trajectories') for b in buf])} ({_fmt([b.get('expert_trajectories') for b in buf])})",
               _fmt([b.get("evicted") for b in buf]), _fmt([b.get("bc_coeff") for b in buf], 2), *points,
               _fmt([_avg_len(r["metrics"]) for r in ours.values()], 2),
               _fmt([_avg_len(r["metrics"]) for r in other.values()], 2) if other else "-",
               f"{wins}/{len(shared)}" if shared else "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """The command line; an error ends in its one line on stderr, with exit status 1."""
    try:
        _main(argv)
    except JobError as err:
        raise SystemExit(str(err)) from None


def _main(argv: list[str] | None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", help="run directories (as for merge_results)")
    p.add_argument("--label", default="Ours", help="the algorithm whose buffer is reported")
    p.add_argument("--against", default="PPO", help="the algorithm whose final Avg(l.) is compared")
    p.add_argument("--curve", default="avg", choices=("avg", "acc"), help="quick evaluations: Avg(l.) or success")
    args = p.parse_args(argv)
    sys.stdout.write(report(load_results(args.run_dirs), args.label, args.against, args.curve))


if __name__ == "__main__":
    main()
