"""Bits/dim of each variant in rank order: one marker shape per seed, the mean ± sd as a diamond and bar.

Rank order (best on top, as in the variants table) makes the ranking readable at 16 variants; a marker
per seed shows whether a seed is consistently better or worse across variants, which colour alone
(one per variant) cannot.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from vaebench.report.columns import BPD_ELBO, BPD_IW
from vaebench.report.plots.registry import RESULTS, PlotContext, figure_legend, plot, save, style

SEED_MARKERS = ("o", "s", "^", "v", "P", "X", "<", ">", "p", "h")


def rank_order(ctx: PlotContext) -> list[str]:
    """Finished variants best first (the variants table's order), any unranked ones after."""
    present = set(ctx.runs.finished["variant"])
    ordered = [v for v in ctx.order if v in present]
    return ordered + [v for v in ctx.runs.variants if v in present and v not in ordered]


@plot(
    name="bits_per_dim",
    section=RESULTS,
    caption="Bits/dim by variant, best on top (the table's order): one marker per seed, diamond and "
    "bar mean ± 1 sd.",
)
def plot_bits_per_dim(ctx: PlotContext, stem: Path) -> list[Path] | None:
    with style():  # saved inside the style too: the layout is computed when saving
        fig = bits_per_dim_figure(ctx)
        return save(fig, stem) if fig is not None else None


def bits_per_dim_figure(ctx: PlotContext) -> Figure | None:
    """Each variant's bits/dim (−ELBO and IW bound), seeds as markers, mean ± sd as a diamond with a bar."""
    finished = ctx.runs.finished
    metrics = [m for m in (BPD_ELBO, BPD_IW) if m.key in finished and finished[m.key].notna().any()]
    if not metrics:
        return None
    variants = rank_order(ctx)
    seeds = sorted(int(s) for s in finished["seed"].dropna().unique())
    marker = {s: SEED_MARKERS[i % len(SEED_MARKERS)] for i, s in enumerate(seeds)}
    labels = [f"{ctx.ranks[v]}. {v}" if v in ctx.ranks else f"{v} (unranked)" for v in variants]
    with style():
        fig = Figure(figsize=(5.0 * len(metrics) + 3.0, 0.42 * len(variants) + 2.2), layout="constrained")
        axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False).ravel()
        for ax, m in zip(axes, metrics, strict=True):
            values = pd.to_numeric(finished[m.key], errors="coerce")
            for y, variant in enumerate(variants):
                mask = (finished["variant"] == variant) & values.notna()
                runs, vals = finished[mask], values[mask]
                if vals.empty:
                    continue
                colour = ctx.palette[variant]
                if len(vals) > 1:
                    ax.errorbar(
                        vals.mean(), y, xerr=vals.std(ddof=1), fmt="D", ms=9, color=colour,
                        mfc="white", mew=2, capsize=5, lw=1.5, zorder=3,
                    )  # fmt: skip
                for seed, value in zip(runs["seed"], vals, strict=True):
                    ax.scatter(
                        value, y, marker=marker[int(seed)], s=46, color=colour, edgecolor="black",
                        linewidth=0.6, zorder=4,
                    )  # fmt: skip
            ax.set_yticks(range(len(variants)), labels)
            ax.set_ylim(len(variants) - 0.5, -0.5)
            ax.set(xlabel=m.label, ylabel="")
            ax.margins(x=0.12)
        fig.suptitle("Bits per dimension by variant, best first (lower is better; bar: ±1 sd over seeds)")
        handles = [Line2D([], [], ls="none", marker=marker[s], ms=8, mfc="0.6", mec="black") for s in seeds]
        handles.append(Line2D([], [], ls="none", marker="D", ms=8, mfc="white", mec="0.3", mew=2))
        figure_legend(fig, handles, [f"seed {s}" for s in seeds] + ["mean ± 1 sd"], "")
        return fig
