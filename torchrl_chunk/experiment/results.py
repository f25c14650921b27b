"""A run's outputs: each job's ``result.json`` (with its video and learning curve) and Table I.

A job is finished when its ``result.json`` exists, reads, and was made with the run's
evaluation protocol (:func:`finished_result`); a resume skips it then. ``result.json`` is
written atomically (:func:`write_result`), so a kill never leaves a truncated one. At the end
of a run :func:`write_tables` writes ``results.md`` / ``results.csv`` in Table I's layout (and,
with several seeds, ``stats.md`` and its plots) from the jobs' records.

A record holds at least ``algo``, ``label``, ``task``, ``seed`` and ``metrics`` (what
:func:`torchrl_chunk.evaluation.build_table` reads); ``history`` (quick evaluations, each with
``env_steps``, ``success_rate`` and ``avg_shortest_10pct``) makes the learning curve, and
``eval`` the protocol that :func:`finished_result` compares.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RESULT = "result.json"
VIDEO = "eval.mp4"  # the first recorded episodes of the final evaluation
CURVE = "learning_curve.png"


def finished_result(job_dir: Path, protocol: Mapping[str, Any] | None = None) -> dict | None:
    """A job's ``result.json`` when it is complete and made with ``protocol``.

    ``None`` (the job goes on from its checkpoint) when it is missing, unreadable (a kill
    while writing it, in older versions) or its ``eval`` record differs from ``protocol`` (a
    resume with new evaluation settings redoes the final evaluation only). A ``result.json``
    without ``eval`` (older runs) counts as made with ``protocol``.
    """
    path = Path(job_dir) / RESULT
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if protocol is None:
        return result
    protocol = dict(protocol)
    saved = result.get("eval", protocol)
    if saved != protocol:
        print(f"{result['algo']}/{result['task']}: evaluated with {saved}, now {protocol}: "
              "evaluating again from its final checkpoint")
        return None
    return result


def write_result(job_dir: Path, result: dict, frames: Sequence | None = None, fps: float = 30.0) -> dict:
    """``result.json`` first (atomically), then ``eval.mp4`` of ``frames`` (one ``[T, H, W, 3]``
    uint8 array per episode) and the learning curve: their failure costs nothing. Returns ``result``."""
    job_dir = Path(job_dir)
    tmp = job_dir / (RESULT + ".tmp")  # a kill leaves no truncated result.json
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, job_dir / RESULT)
    if frames:
        from torchrl_chunk.video import write_mp4

        try:
            write_mp4(list(frames), job_dir / VIDEO, fps=fps)
        except Exception as err:  # noqa: BLE001 - the numbers are saved; say why there is no video
            print(f"warning: {result['algo']}/{result['task']}: no {VIDEO} ({type(err).__name__}: {err})",
                  file=sys.stderr)
    plot_curve(result, job_dir / CURVE)
    return result


def plot_curve(result: Mapping[str, Any], path: Path) -> None:
    """Success rate and Avg(l.) of the quick evaluations against env steps (two or more of them)."""
    if len(result.get("history", ())) < 2:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = result["history"]
    x = [r["env_steps"] for r in hist]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(x, [r["success_rate"] for r in hist], marker="o")
    ax[0].set(xlabel="env steps", ylabel="success rate (quick eval)", ylim=(-0.02, 1.02))
    ax[1].plot(x, [r["avg_shortest_10pct"] if r["avg_shortest_10pct"] is not None else math.nan for r in hist],
               marker="o")
    ax[1].set(xlabel="env steps", ylabel="Avg(l.) (quick eval)")
    fig.suptitle(f"{result['label']} on {result['task']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_tables(run_dir: Path, results: list[dict]) -> str:
    """``results.md``/``.csv`` (Table I); with several seeds also ``stats.md`` and its PNGs.

    The statistics (``evaluation.write_statistics``: t-intervals, rliable's IQM and mean
    with bootstrap CIs, plots) are appended to the returned Markdown; if the jobs do not
    form a full seeds × tasks matrix, a warning says why and only the table is written.
    """
    from torchrl_chunk import evaluation  # imported here: MetaWorld's envs come with it

    run_dir = Path(run_dir)
    table = evaluation.build_table(results, label_order=evaluation.TABLE_I_LABELS)
    md = evaluation.results_to_markdown(table)
    seeds = sorted({r.get("seed") for r in results if r.get("seed") is not None})
    if len(seeds) > 1:
        md += f"\nEach cell: the mean over seeds {', '.join(map(str, seeds))} (jobs/<algo>/<task>/seed_<k>/).\n"
    (run_dir / "results.md").write_text(md)
    (run_dir / "results.csv").write_text(evaluation.results_to_csv(table))
    if len(seeds) > 1:
        try:
            stats = evaluation.write_statistics(results, run_dir)
        except ValueError as err:
            print(f"warning: no stats.md: {err}", file=sys.stderr)
        else:
            md += "" if stats is None else "\n" + stats
    return md
