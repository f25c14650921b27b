"""The report of :mod:`~torchrl_chunk.evaluation.statistics`: ``stats.md`` and rliable's plots of a multi-seed run.

:func:`write_statistics` writes the Markdown and the figures; the maths stays in
``statistics`` (this module imports it, never the other way round).

``aggregate.png`` (IQM and mean with their CIs), ``performance_profile.png`` (Acc.) and
``sample_efficiency.png`` (IQM of the quick evaluations' Acc. and Avg(l.) versus env steps).
Drawn by ``rliable.plot_utils``; the bands use ``min(reps, 2000)`` bootstrap replicates
(rliable's default for profiles), the tables the full ``reps``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from torchrl_chunk.evaluation.statistics import (
    STAT_METRICS, SeedStatistics, bootstrap, compute_statistics, fraction_above, history_matrix, iqm, max_seeds,
    statistics_markdown)

_BAND_REPS = 2000


def plot_statistics(
    stats: SeedStatistics, results: Sequence[Mapping], out_dir: Path | str, *, seed: int = 0
) -> list[Path]:
    """``aggregate.png``, ``performance_profile.png`` and ``sample_efficiency.png`` in ``out_dir``.

    The sample-efficiency figure needs a label with quick-evaluation histories
    (:func:`history_matrix`) and is not written without one; labels without (SFT,
    SFT-100) appear in it as a dashed horizontal line at their final IQM. Returns the
    files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    from rliable import plot_utils

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    band_reps = min(stats.reps, _BAND_REPS)
    colors = dict(zip(stats.labels, sns.color_palette("colorblind", n_colors=len(stats.labels))))
    written = []

    names = [f"{agg} {name}" for _, name in STAT_METRICS for agg in ("IQM", "Mean")]
    points = {lb: np.concatenate([stats.aggregates[m][0][lb] for m, _ in STAT_METRICS]) for lb in stats.labels}
    cis = {lb: np.concatenate([stats.aggregates[m][1][lb] for m, _ in STAT_METRICS], axis=1) for lb in stats.labels}
    fig, _ = plot_utils.plot_interval_estimates(points, cis, metric_names=names, algorithms=list(stats.labels),
                                                colors=colors, row_height=0.6, xlabel="")
    written.append(_save(fig, out_dir / "aggregate.png", plt))

    taus = np.linspace(0.0, 1.0, 101)
    profiles, bands = bootstrap(stats.scores["success_rate"], lambda x: fraction_above(x, taus),
                                 band_reps, seed, stats.confidence)
    fig, ax = plt.subplots(figsize=(6, 4))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=bands, colors=colors, ax=ax,
                                         xlabel=r"Acc. ($\tau$)", ylabel=r"Fraction of runs with Acc. $> \tau$",
                                         legend=True, legendsize="medium")
    written.append(_save(fig, out_dir / "performance_profile.png", plt))

    curves = {m: history_matrix(results, m, labels=stats.labels, tasks=stats.tasks) for m, _ in STAT_METRICS}
    if curves["success_rate"]:
        fig, axes = plt.subplots(1, len(STAT_METRICS), figsize=(12, 4.5))
        for ax, (m, name) in zip(axes, STAT_METRICS):
            lo = min(int(steps[0]) for steps, _ in curves[m].values())
            hi = max(int(steps[-1]) for steps, _ in curves[m].values())
            for lb in stats.labels:
                if lb in curves[m]:
                    steps, scores = curves[m][lb]
                    est, band = bootstrap({lb: scores}, iqm, band_reps, seed, stats.confidence)
                    plot_utils.plot_sample_efficiency_curve(steps, est, band, algorithms=[lb], colors=colors, ax=ax,
                                                            xlabel="env steps", ylabel=f"IQM {name} (quick eval)",
                                                            labelsize="large", ticklabelsize="medium")
                else:
                    ax.hlines(stats.aggregates[m][0][lb][0], lo, hi, colors=[colors[lb]], linestyles="dashed",
                              label=f"{lb} (final)")
            ax.legend(fontsize="medium")
        written.append(_save(fig, out_dir / "sample_efficiency.png", plt))
    return written


def _save(fig, path: Path, plt) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path




def write_statistics(
    results: Sequence[Mapping], out_dir: Path | str | None, *, reps: int = 50000, seed: int = 0
) -> str | None:
    """``stats.md`` and the plots of :func:`plot_statistics` in ``out_dir``; returns the Markdown.

    Does nothing and returns ``None`` unless some label has two seeds or more (an
    interval needs them). With ``out_dir=None`` only the Markdown is made. Raises the
    ``ValueError`` of :func:`score_matrix` when the results do not form a full matrix.
    """
    results = list(results)
    if max_seeds(results) < 2:
        return None
    stats = compute_statistics(results, reps=reps, seed=seed)
    md = statistics_markdown(stats)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "stats.md").write_text(md)
        plot_statistics(stats, results, out_dir, seed=seed)
    return md


__all__ = ["plot_statistics", "write_statistics"]
