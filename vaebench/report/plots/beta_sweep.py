"""Active units, KL and mutual information against beta, drawn when loss.beta varies between runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from vaebench.report.columns import ACTIVE_UNITS, KL, MUTUAL_INFO
from vaebench.report.plots.registry import LATENT, PlotContext, plot, save, style, variant_legend


@plot(
    name="beta_sweep",
    section=LATENT,
    caption="Active units, KL and MI against β; grey lines join the means.",
    order=20,
)
def plot_beta_sweep(ctx: PlotContext, stem: Path) -> list[Path] | None:
    """Dots are runs (variant colours); a grey line joins the mean at each beta within each combination
    of the axes that do not set beta."""
    rs, palette = ctx.runs, ctx.palette
    finished = rs.finished.assign(beta=pd.to_numeric(rs.finished["loss.beta"], errors="coerce"))
    finished = finished[finished["beta"].notna()]
    if finished["beta"].nunique() < 2:
        return None
    metrics = [
        m for m in (ACTIVE_UNITS, KL, MUTUAL_INFO) if m.key in finished and finished[m.key].notna().any()
    ]
    if not metrics:
        return None
    beta_axes = [
        a for a in rs.axes if finished[a].nunique() > 1 and finished.groupby(a)["beta"].nunique().max() == 1
    ]
    groups = [a for a in rs.axes if a not in beta_axes and a != "variant"]
    key = finished[groups].astype(str).agg(", ".join, axis=1) if groups else pd.Series("all", finished.index)
    finished = finished.assign(group=key)
    variants = [v for v in rs.variants if v in set(finished["variant"])]
    with style():
        fig = Figure(figsize=(4.6 * len(metrics) + 1, 4.4), layout="constrained")
        axes = fig.subplots(1, len(metrics), squeeze=False).ravel()
        for ax, m in zip(axes, metrics, strict=True):
            d = finished.assign(value=pd.to_numeric(finished[m.key], errors="coerce"))
            for _, g in d.groupby("group"):
                means = g.groupby("beta")["value"].mean()
                ax.plot(means.index, means.to_numpy(), color="0.55", lw=1.5, zorder=1)
            for v in variants:
                g = d[d["variant"] == v]
                ax.scatter(g["beta"], g["value"], color=palette[v], s=40, zorder=2, edgecolor="white")
            ax.set_xscale("symlog" if (d["beta"] <= 0).any() else "log")
            ax.set(xlabel="β (loss.beta)", ylabel=m.label)
        fig.suptitle("β sweep: latent usage against the KL weight")
        variant_legend(fig, variants, palette)
        return save(fig, stem)
