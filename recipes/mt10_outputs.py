"""A job's outputs: ``result.json``, the video, the learning curve, Table I, and stop messages.

Split from ``mt10_utils.py`` (which re-exports these names) to keep each recipe file readable
in one sitting; like the rest of the recipe, nothing here trains.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig

from torchrl_chunk import evaluation
from torchrl_chunk.video import realtime_fps, write_mp4
from mt10_jobs import RESULT

VIDEO = "eval.mp4"  # the first eval.video_episodes final-eval episodes (pixels only)


def finished_result(cfg: DictConfig, job_dir: Path) -> dict | None:
    """A job's ``result.json`` when it is complete and made with the current eval protocol.

    ``None`` (the job goes on from its checkpoint) when it is missing, unreadable (a kill
    while writing it) or made with other ``eval.episodes`` / ``eval.eval_seed`` (a resume
    with new evaluation settings redoes the final evaluation only, from the final weights).
    """
    path = job_dir / RESULT
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    protocol = result.get("eval", eval_protocol(cfg))  # result.json files before this field
    if protocol != eval_protocol(cfg):
        print(f"{result['algo']}/{result['task']}: evaluated with {protocol}, now {eval_protocol(cfg)}: "
              "evaluating again from its final checkpoint")
        return None
    return result


def eval_protocol(cfg: DictConfig) -> dict:
    return {"episodes": int(cfg.eval.episodes), "eval_seed": int(cfg.eval.eval_seed)}


def write_result(cfg: DictConfig, job, metrics: dict, wall_time_s: float) -> dict:
    """``result.json`` first, then the video and the learning curve (their failure costs nothing)."""
    episodes = metrics.pop("episodes", None)
    b = job.buffer
    result = {
        "algo": job.algo, "label": job.spec.label, "task": job.task, "seed": int(cfg.seed), "metrics": metrics,
        "eval": eval_protocol(cfg),
        "env_steps": job.state["env_steps"], "updates": job.state["updates"], "wall_time_s": wall_time_s,
        "buffer": {"trajectories": b.num_trajectories, "admitted": b.stats.admitted, "rejected": b.stats.rejected,
                   "incomplete": b.stats.incomplete, "evicted": b.stats.evicted, "length_limit": b.length_limit,
                   "base_length_limit": b.base_length_limit, "adaptive": b.adaptive is not None,
                   "length_weighting": b.length_weighting, "expert_trajectories": b.num_expert_trajectories,
                   "bc_coeff": float(job.bc.coeff)},
        "history": job.state["history"],
    }
    tmp = job.dir / (RESULT + ".tmp")  # a kill leaves no truncated result.json
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, job.dir / RESULT)
    if episodes is not None and episodes.frames:
        frames = [episodes.frames[i] for i in sorted(episodes.frames)]
        try:
            write_mp4(frames, job.dir / VIDEO, fps=realtime_fps(job.horizon))
        except Exception as err:  # noqa: BLE001 - the numbers are saved; say why there is no video
            print(f"warning: {job.algo}/{job.task}: no {VIDEO} ({type(err).__name__}: {err})", file=sys.stderr)
    plot_curve(result, job.dir / "learning_curve.png")
    return result


def plot_curve(result: dict, path: Path) -> None:
    if len(result["history"]) < 2:
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
