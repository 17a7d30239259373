"""Training curves grouped by axis levels: colour per level of one axis, line style per level of another.

At 16 variants one line per variant in 16 colours is unreadable, so a line is one combination of the
colour axis's and the line-style axis's levels: the mean over every finished run at those levels (its
seeds and the levels of the remaining axes), with a ±1 sd band over those runs. `vaebench report
--group-by variant` draws one line per variant instead. Runs whose steps differ (say, batch sizes
trained for the same epochs) are averaged on epochs, each run interpolated onto the common grid.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vaebench.report.plots.grouping import curve_grouping, group_style
from vaebench.report.plots.registry import CURVES, PlotContext, figure_legend, plot, save, style

# (metrics.jsonl key, axis label) of the training-curve panels, in reading order
CURVE_PANELS: tuple[tuple[str, str], ...] = (
    ("train/loss", "training loss (nats/image)"),
    ("train/kl", "KL (nats/image)"),
    ("train/beta", "β, the KL weight"),
    ("val/bpd_elbo", "validation bits/dim (−ELBO)"),
)
SPARSE_POINTS = 12  # a curve with at most this many points gets markers and "(N points)"


def mean_curve(runs: list[pd.DataFrame], x: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, sd) over runs, each run (columns x, value) interpolated onto the union of their x values
    where they all have one; sd is NaN for a single run."""
    series = [r.dropna(subset=["value"]).sort_values(x) for r in runs]
    series = [s for s in series if len(s)]
    if not series:
        return np.array([]), np.array([]), np.array([])
    low = max(float(s[x].min()) for s in series)
    high = min(float(s[x].max()) for s in series)
    grid = np.unique(np.concatenate([s[x].to_numpy(dtype=float) for s in series]))
    grid = grid[(grid >= low) & (grid <= high)]
    values = np.stack([np.interp(grid, s[x].to_numpy(float), s["value"].to_numpy(float)) for s in series])
    sd = values.std(axis=0, ddof=1) if len(series) > 1 else np.full(len(grid), math.nan)
    return grid, values.mean(axis=0), sd


def _x_column(data: pd.DataFrame) -> str:
    """ "step", or "epoch" when the runs end at different steps and every run logged its epoch."""
    last = data.groupby("run")["step"].max()
    epochs = data[data["metric"] == "epoch"]
    if last.nunique() > 1 and set(epochs["run"]) == set(data["run"]):
        return "epoch"
    return "step"


def _with_x(data: pd.DataFrame, x: str) -> pd.DataFrame:
    if x == "step":
        return data.assign(x=data["step"].astype(float))
    epochs = data[data["metric"] == "epoch"].set_index(["run", "step"])["value"]
    keys = zip(data["run"], data["step"], strict=True)
    return data.assign(x=[epochs.get(key, math.nan) for key in keys])


def _caption(ctx: PlotContext) -> str:
    g = curve_grouping(ctx.runs, ctx.group_by)
    if g.colour == "variant":
        return "One colour per variant: mean over its seeds, band ±1 sd (none for a single seed)."
    rest = [a for a in ctx.runs.axes if a not in (g.colour, g.style, "variant")]
    style_text = f", line style: {g.style}" if g.style else ""
    over = f"its seeds and the levels of {', '.join(rest)}" if rest else "its seeds"
    return (
        f"Colour: {g.colour}{style_text} (`vaebench report --group-by AXIS` chooses the colour axis). "
        f"Each line is the mean over the runs at those levels ({over}); band ±1 sd over those runs."
    )


@plot(
    name="curves",
    section=CURVES,
    caption=_caption,
    missing="No finished run logged training metrics.",
)
def plot_training_curves(ctx: PlotContext, stem: Path) -> list[Path] | None:
    with style():  # saved inside the style too: the layout is computed when saving
        fig = training_curves_figure(ctx)
        return save(fig, stem) if fig is not None else None


def training_curves_figure(ctx: PlotContext) -> Figure | None:
    """Loss, KL, beta and validation bits/dim against step, one line per level combination."""
    rs = ctx.runs
    data = rs.curves[rs.curves["run"].isin(set(rs.finished["run"]))]
    panels = [(k, label) for k, label in CURVE_PANELS if data.loc[data["metric"] == k, "value"].notna().any()]
    if not panels:
        return None
    looks = group_style(ctx)
    g = looks.grouping
    x = _x_column(data)
    data = _with_x(data, x)
    runs = rs.finished.drop_duplicates("run").set_index("run")
    colour_levels = list(looks.colours)
    style_levels: list[str | None] = list(looks.dashes) if g.style else [None]
    with style():
        cols = 2 if len(panels) > 1 else 1
        rows = math.ceil(len(panels) / cols)
        fig = Figure(figsize=(6.4 * cols, 3.5 * rows + 1.2), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax, (key, label) in zip(axes, panels, strict=False):
            d = data[(data["metric"] == key) & data["value"].notna()]
            points = int(d.groupby("run")["x"].nunique().max())
            sparse = points <= SPARSE_POINTS
            for colour in colour_levels:
                for level in style_levels:
                    chosen = runs.index[(runs[g.colour].astype(str) == colour)]
                    if g.style is not None:
                        chosen = chosen[runs.loc[chosen, g.style].astype(str) == level]
                    grid, mean, sd = mean_curve(
                        [r[["x", "value"]] for _, r in d[d["run"].isin(set(chosen))].groupby("run")], "x"
                    )
                    if not len(grid):
                        continue
                    line = looks.line(colour, level)
                    ax.plot(grid, mean, marker="o" if sparse else None, ms=4, lw=2, **line)
                    if np.isfinite(sd).any():
                        ax.fill_between(grid, mean - sd, mean + sd, color=line["color"], alpha=0.15, lw=0)
            ax.set(xlabel=x, ylabel=label)
            if sparse:
                ax.set_title(f"{label.split(' (')[0]} ({points} point{'s' * (points != 1)} per run)")
            if x == "step":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if key == "train/loss":
                _maybe_log_y(ax, d["value"])
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        grouped = "variant" if g.colour == "variant" else g.colour + (f" × {g.style}" if g.style else "")
        fig.suptitle(f"Training curves by {grouped} (band: ±1 sd over runs)")
        handles, labels, title = looks.legend()
        figure_legend(fig, handles, labels, title)
        return fig


def _maybe_log_y(ax: Axes, values: pd.Series) -> None:
    """Log scale when positive values span more than a factor of 20 (early losses dwarf later ones)."""
    finite = values[np.isfinite(values)]
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 20:
        ax.set_yscale("log")
