"""Axis effects: the mean paired difference per axis level with its 95% t interval over seeds."""

from __future__ import annotations

import math
from pathlib import Path

import seaborn as sns
from matplotlib.figure import Figure

from vaebench.report.plots.registry import EFFECTS, PlotContext, plot, save, style


@plot(
    name="effects",
    section=EFFECTS,
    caption="Axis effects: mean paired difference with its 95% interval.",
)
def plot_axis_effects(ctx: PlotContext, stem: Path) -> list[Path] | None:
    """One panel per (non-degenerate) metric, one row per axis level; 0 = no effect."""
    effects = ctx.effects
    if effects.empty:
        return None
    shown = [m for m in ctx.metrics if effects.loc[effects["metric"] == m.key, "mean_diff"].notna().any()]
    if not shown:
        return None
    rows = effects.drop_duplicates(["axis", "level"])[["axis", "level", "reference"]]
    labels = [f"{r.axis}: {r.level} − {r.reference}" for r in rows.itertuples()]
    axis_colour = dict(
        zip(rows["axis"].unique(), sns.color_palette("dark", rows["axis"].nunique()), strict=True)
    )
    with style():
        cols = min(len(shown), 3)
        nrows = math.ceil(len(shown) / cols)
        fig = Figure(figsize=(4.3 * cols + 2.5, (0.45 * len(labels) + 1.6) * nrows), layout="constrained")
        axes = fig.subplots(nrows, cols, squeeze=False).ravel()
        for ax, m in zip(axes, shown, strict=False):
            sub = effects[effects["metric"] == m.key].set_index(["axis", "level"])
            for y, r in enumerate(rows.itertuples()):
                e = sub.loc[(r.axis, r.level)]
                if not math.isfinite(e["mean_diff"]):
                    continue
                low, high = e["ci_low"], e["ci_high"]
                xerr = [[e["mean_diff"] - low], [high - e["mean_diff"]]] if math.isfinite(low) else None
                ax.errorbar(e["mean_diff"], y, xerr=xerr, fmt="o", color=axis_colour[r.axis], capsize=4)
            ax.axvline(0.0, color="0.4", lw=1, ls="--")
            ax.margins(x=0.12)
            ax.set_yticks(range(len(labels)), labels if ax.get_subplotspec().is_first_col() else [])
            ax.set_ylim(len(labels) - 0.5, -0.5)
            ax.set_xlabel(f"Δ {m.label}")
        for ax in axes[len(shown) :]:
            ax.set_visible(False)
        fig.suptitle("Effect of each axis: mean paired difference, 95% t interval over seeds (none from one)")
        return save(fig, stem)
