"""Merge the results of several MT10 run directories into one Table I.

    python -m torchrl_chunk.experiment.merge_results runs/mt10/A runs/mt10/B [--out merged]
    python -m torchrl_chunk.experiment.merge_results runs/mt10/A runs/mt10/B=450k   # B's columns: "Ours (450k)"

Each run directory holds jobs/<algo>/<task>/seed_<k>/result.json (written by recipes/mt10.py;
jobs/<algo>/<task>/result.json in run directories from before seeds). Several seeds of a
label and task are averaged (see torchrl_chunk.evaluation.build_table).
Columns are the algorithms' labels, in Table I's order (SFT, SFT-100, PPO, Ours, then any
others); when two runs have the same label, the later run directory wins for the tasks
they share, unless a ``DIR=TAG`` argument tags one run's labels as ``"<label> (TAG)"``
(e.g. to compare budgets or seeds side by side). Writes <out>/results.md and
<out>/results.csv and prints the markdown table.

Marks: "–" is a length metric not measured (fewer than 10% of the episodes succeeded), "n/a"
a task that a column has no result for. When the columns cover different tasks (runs of
different task lists), the Average row is the mean over the tasks every column has, named
"Average (k of n tasks)", and the legend under the table names the tasks each column lacks.

When some label has more than one seed, it also prints the statistics over seeds
(torchrl_chunk.evaluation.write_statistics: per-task mean ± 95% t-interval, IQM and mean
with 95% stratified-bootstrap CIs from rliable) and writes them to <out>/stats.md with
<out>/aggregate.png, <out>/performance_profile.png and <out>/sample_efficiency.png.
They need every label to have the same seeds on every task; otherwise a warning says
what is missing and only the table is written. --reps sets the bootstrap replicates
(50000, rliable's default: a few seconds per label; 2000 is enough for a quick look),
--no-stats skips them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from torchrl_chunk.evaluation import (
    TABLE_I_LABELS,
    build_table,
    results_to_csv,
    results_to_markdown,
    write_statistics,
)
from torchrl_chunk.experiment.launcher import JobError


def collect(run_dirs: list[Path | str]) -> dict[str, dict[str, dict]]:
    """Table of ``label -> task -> metrics``; an argument ``DIR=TAG`` tags DIR's labels."""
    return build_table(load_results(run_dirs), label_order=TABLE_I_LABELS)


def load_results(run_dirs: list[Path | str]) -> list[dict]:
    """The jobs' ``result.json`` dicts, in argument order; ``DIR=TAG`` tags DIR's labels."""
    results = []
    for arg in run_dirs:
        run_dir, _, tag = str(arg).partition("=")
        run_dir = Path(run_dir)
        files = sorted([*run_dir.glob("jobs/*/*/result.json"), *run_dir.glob("jobs/*/*/seed_*/result.json")])
        if not files:
            raise JobError(f"error: {run_dir} holds no jobs/<algo>/<task>/seed_<k>/result.json; is it a finished run?")
        seed = _run_seed(run_dir)
        for f in files:
            r = json.loads(f.read_text())
            r.setdefault("seed", seed)  # results from before seeds: the run's seed (a newer run replaces them)
            results.append({**r, "label": f"{r['label']} ({tag})" if tag else r["label"]})
    return results


def _run_seed(run_dir: Path) -> int | None:
    try:
        from omegaconf import OmegaConf

        return int(OmegaConf.load(run_dir / "config.yaml").seed)
    except Exception:  # noqa: BLE001 - no or an unreadable config.yaml: the seed is unknown
        return None


def main(argv: list[str] | None = None) -> None:
    """The command line; an error ends in its one line on stderr, with exit status 1."""
    try:
        _main(argv)
    except JobError as err:
        raise SystemExit(str(err)) from None


def _main(argv: list[str] | None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", help="run directories, each optionally DIR=TAG")
    p.add_argument("--out", type=Path, default=None, help="directory for results.md/.csv (and stats.md, PNGs)")
    p.add_argument("--reps", type=int, default=50000, help="bootstrap replicates of the statistics over seeds")
    p.add_argument("--no-stats", action="store_true", help="no statistics over seeds, only the table")
    args = p.parse_args(argv)
    results = load_results(args.run_dirs)
    table = build_table(results, label_order=TABLE_I_LABELS)
    md = results_to_markdown(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(md)
        (args.out / "results.csv").write_text(results_to_csv(table))
    sys.stdout.write(md)
    if not args.no_stats:
        try:
            stats = write_statistics(results, args.out, reps=args.reps)
        except ValueError as err:  # seeds missing somewhere: the table above still stands
            print(f"warning: no statistics over seeds: {err}", file=sys.stderr)
        else:
            if stats is not None:
                sys.stdout.write("\n" + stats)


if __name__ == "__main__":
    main()
