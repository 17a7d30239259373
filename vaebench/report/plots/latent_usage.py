"""Latent usage: KL per latent dimension of each variant, and the posterior-mean variance per dimension."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from vaebench.report.load import RunSet
from vaebench.report.plots.grouping import group_style
from vaebench.report.plots.registry import LATENT, PlotContext, figure_legend, plot, save, style


def sorted_profiles(rs: RunSet, key: str) -> dict[str, np.ndarray]:
    """Per variant, the mean over its finished runs of the per-dim statistic `key` sorted descending."""
    finished = set(rs.finished["run"])
    out: dict[str, np.ndarray] = {}
    for variant in rs.variants:
        arrays = [
            np.sort(np.asarray(r.per_dim[key], dtype=float))[::-1]
            for r in rs.records
            if r.run in finished and r.variant == variant and r.per_dim.get(key)
        ]
        if arrays and len({len(a) for a in arrays}) == 1:
            out[variant] = np.mean(arrays, axis=0)
    return out


@plot(
    name="latent_usage",
    section=LATENT,
    caption="Top: KL per latent dimension, dimensions sorted by KL; the red bar marks the number of "
    "active units. Bottom: posterior-mean variance per dimension against the active-unit threshold.",
    missing="No per-dimension statistics: evaluate the runs (`vaebench evaluate`).",
    order=10,
)
def plot_latent_usage(ctx: PlotContext, stem: Path) -> list[Path] | None:
    with style():
        fig = latent_usage_figure(ctx)
        return save(fig, stem) if fig is not None else None


def latent_usage_figure(ctx: PlotContext) -> Figure | None:
    """KL per latent dimension (heatmap, dims sorted by KL) with each variant's active units marked,
    and the sorted posterior-mean variance Var_x E_q[z_d|x] against the active-unit threshold, its
    lines coloured and dashed by axis levels like the training curves."""
    rs = ctx.runs
    kl = sorted_profiles(rs, "kl_per_dim")
    if not kl:
        return None
    var = sorted_profiles(rs, "posterior_mean_var")
    finished = rs.finished
    threshold = next(
        (r.eval_settings["active_threshold"] for r in rs.records if "active_threshold" in r.eval_settings),
        None,
    )
    variants = list(kl)
    width = max(len(a) for a in kl.values())
    matrix = np.full((len(variants), width), np.nan)
    for i, v in enumerate(variants):
        matrix[i, : len(kl[v])] = kl[v]
    positive = matrix[np.isfinite(matrix) & (matrix > 0)]
    vmax = float(positive.max()) if positive.size else 1.0
    vmin = max(float(positive.min()) if positive.size else 1e-3, vmax * 1e-4, 1e-4)
    with style():
        heat_h = 0.4 * len(variants) + 1.4
        fig = Figure(figsize=(12, heat_h + (4.0 if var else 0) + 0.6), layout="constrained")
        axes = fig.subplots(2 if var else 1, 1, squeeze=False, height_ratios=[heat_h, 3.6] if var else None)
        ax = axes[0, 0]
        image = ax.imshow(
            np.clip(matrix, vmin, None),
            aspect="auto",
            cmap="viridis",
            norm=LogNorm(vmin, vmax),
            interpolation="nearest",
        )
        fig.colorbar(image, ax=ax, label="KL (nats, log scale)", pad=0.01)
        ax.set_yticks(range(len(variants)), variants)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(width, 16)))
        ax.xaxis.set_major_formatter(lambda x, _: f"{round(x) + 1}")  # 1-based ranks
        ax.set_xlabel("latent dimension, sorted by KL (mean over seeds of each run's sorted KL)")
        ax.grid(False)
        for i, v in enumerate(variants):
            units = finished.loc[finished["variant"] == v].get("active_units")  # None: not evaluated
            active = pd.to_numeric(units, errors="coerce").mean() if units is not None else math.nan
            if math.isfinite(active):
                ax.plot([active - 0.5] * 2, [i - 0.5, i + 0.5], color="#ff3355", lw=3, solid_capstyle="butt")
                ax.annotate(
                    f"{active:g} active",
                    (active - 0.5, i),
                    xytext=(-6, 0),
                    textcoords="offset points",
                    ha="right",
                    va="center",
                    color="white",
                    fontsize="small",
                    fontweight="bold",
                )
        ax.set_title("KL per latent dimension (red bar: number of active units, mean over seeds)")
        if var:
            ax2 = axes[1, 0]
            looks = group_style(ctx)  # the training curves' colours and dashes: levels, not 16 names
            for v, values in var.items():
                ranks = np.arange(1, len(values) + 1)
                ax2.plot(ranks, np.clip(values, 1e-12, None), lw=2, alpha=0.85, **looks.of_variant(rs, v))
            handles, labels, title = looks.legend()
            ax2.set_yscale("log")
            ax2.set_xlim(0.5, width + 0.5)
            ax2.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(width, 16)))
            if threshold is not None:
                threshold_line = {"color": "black", "ls": (0, (1, 1)), "lw": 1.5}  # unlike any level's dashes
                ax2.axhline(threshold, **threshold_line)
                handles.append(Line2D([], [], **threshold_line))
                labels.append(f"active threshold {threshold:g}")
            ax2.set(xlabel="latent dimension, sorted by Var_x E_q[z|x]", ylabel="Var_x E_q[z|x]")
            ax2.set_title("Posterior-mean variance: a dimension is active above the threshold")
            figure_legend(fig, handles, labels, title)
        return fig
