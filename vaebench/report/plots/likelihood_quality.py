"""The likelihood-quality plane: bits/dim (the report's bpd_elbo) against FID, one point per run, with
the Pareto front of the runs (lower is better on both).

A perceptual loss, a sharper decoder or a smaller beta can buy sharper samples (lower FID) with a worse
likelihood (higher bits/dim), or the other way round; the front shows which runs no other run beats on
both, so a reader sees what each variant trades. Drawn only when a run has FID (eval.metrics: [fid]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from vaebench.report.columns import BPD_ELBO, NOT_COMPARABLE, metric
from vaebench.report.plots.registry import RESULTS, PlotContext, figure_legend, plot, save, style

FID = "fid"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, lower being better on both coordinates, by increasing x.

    A point is dominated when another is no worse on both coordinates and better on one; equal points
    are all on the front (none is better), and a point with a NaN is never on it.

    >>> pareto_front([(1.0, 3.0), (2.0, 2.0), (2.0, 2.5), (3.0, 2.0), (4.0, 0.5)])
    [0, 1, 4]
    """
    finite = [i for i, (x, y) in enumerate(points) if math.isfinite(x) and math.isfinite(y)]
    front: list[int] = []
    for i in sorted(finite, key=lambda i: points[i]):  # by x, then y: a point beats the later ones' x
        if not front or points[i][1] < points[front[-1]][1] or points[i] == points[front[-1]]:
            front.append(i)
    return front


def plane_runs(ctx: PlotContext) -> pd.DataFrame:
    """Finished runs with both bpd_elbo and FID: run, variant, seed, bpd_elbo, fid (floats)."""
    finished = ctx.runs.finished
    if FID not in finished or BPD_ELBO.key not in finished:
        return pd.DataFrame(columns=["run", "variant", "seed", BPD_ELBO.key, FID])
    runs = finished[["run", "variant", "seed"]].assign(
        **{k: pd.to_numeric(finished[k], errors="coerce") for k in (BPD_ELBO.key, FID)}
    )
    return runs.dropna(subset=[BPD_ELBO.key, FID]).reset_index(drop=True)


def _caption(ctx: PlotContext) -> str:
    text = (
        "Likelihood against sample quality: bits/dim (the report's bpd_elbo, −ELBO at β = 1) across, FID "
        "of prior samples up, one point per run coloured by variant. Ringed points joined by the dashed "
        "step are the Pareto front: no other run has both a lower bits/dim and a lower FID, and moving "
        "along it trades likelihood for sample sharpness."
    )
    finished = ctx.runs.finished.set_index("run")
    if "quality_protocol" in finished:
        ids = finished.loc[plane_runs(ctx)["run"], "quality_protocol"].dropna().unique()
        text += f" FID under protocol `{ids[0]}`." if len(ids) == 1 else ""
    if ctx.quality_not_comparable:
        text += f" FID {NOT_COMPARABLE}."
    return text


@plot(name="likelihood_quality", section=RESULTS, caption=_caption, order=110)
def plot_likelihood_quality(ctx: PlotContext, stem: Path) -> list[Path] | None:
    with style():  # saved inside the style too: the layout is computed when saving
        fig = likelihood_quality_figure(ctx)
        return save(fig, stem) if fig is not None else None


def likelihood_quality_figure(ctx: PlotContext) -> Figure | None:
    """The plane (None without a run that has FID): runs as dots, the Pareto front ringed and stepped."""
    runs = plane_runs(ctx)
    if runs.empty:
        return None
    points = list(zip(runs[BPD_ELBO.key], runs[FID], strict=True))
    front = pareto_front(points)
    variants = [v for v in ctx.order if v in set(runs["variant"])]
    variants += [v for v in dict.fromkeys(runs["variant"]) if v not in variants]
    fid_label = metric(FID).label
    with style():
        fig = Figure(figsize=(6.6, 4.8), layout="constrained")
        ax = fig.subplots()
        for variant in variants:
            mine = runs[runs["variant"] == variant]
            ax.scatter(
                mine[BPD_ELBO.key], mine[FID], s=60, color=ctx.palette[variant], edgecolor="white",
                linewidth=0.8, zorder=3,
            )  # fmt: skip
        fx, fy = [points[i][0] for i in front], [points[i][1] for i in front]
        ax.scatter(fx, fy, s=190, facecolors="none", edgecolors="black", linewidths=1.4, zorder=4)
        if len(front) > 1:
            ax.step(fx, fy, where="post", color="black", ls="--", lw=1.2, zorder=2)
        ax.margins(0.12)
        ax.set_xlabel("bits/dim (bpd_elbo: −ELBO at β = 1; lower is better)")
        comparable = f"\n{NOT_COMPARABLE}" if ctx.quality_not_comparable else ""
        ax.set_ylabel(f"{fid_label} (prior samples; lower is better){comparable}")
        title = "Likelihood vs sample quality (lower-left is better)"
        if ctx.quality_not_comparable:
            title += f"\nFID {NOT_COMPARABLE}"
        fig.suptitle(title)
        handles = [
            Line2D([], [], ls="none", marker="o", ms=8, color=ctx.palette[v], mec="white") for v in variants
        ]
        handles.append(Line2D([], [], ls="--", color="black", marker="o", ms=11, mfc="none", mec="black"))
        figure_legend(fig, handles, [*variants, "Pareto front"], "variant")
        return fig
