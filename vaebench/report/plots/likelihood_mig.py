"""Likelihood against disentanglement: bits/dim (the report's bpd_elbo) against MIG, one point per run
coloured by variant, each variant's mean ± 1 sd over seeds as a cross.

A larger beta (on the KL, or on the total correlation in beta-TCVAE) pushes the posterior towards a
factorised prior, which tends to raise MIG and costs likelihood: the known trade-off, seen here as the
variants moving up and to the right. Drawn only when a run has MIG (data with discrete factors:
`data.factor_levels`, see `vaebench.data.factors`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from vaebench.report.columns import BPD_ELBO, metric
from vaebench.report.plots.registry import REPRESENTATION, PlotContext, figure_legend, plot, save, style

MIG = "mig"


def mig_runs(ctx: PlotContext) -> pd.DataFrame:
    """Finished runs with both bpd_elbo and MIG: run, variant, seed, bpd_elbo, mig (floats)."""
    finished = ctx.runs.finished
    if MIG not in finished or BPD_ELBO.key not in finished:
        return pd.DataFrame(columns=["run", "variant", "seed", BPD_ELBO.key, MIG])
    runs = finished[["run", "variant", "seed"]].assign(
        **{k: pd.to_numeric(finished[k], errors="coerce") for k in (BPD_ELBO.key, MIG)}
    )
    return runs.dropna(subset=[BPD_ELBO.key, MIG]).reset_index(drop=True)


@plot(
    name="likelihood_mig",
    section=REPRESENTATION,
    caption="Likelihood against disentanglement: bits/dim (the report's bpd_elbo, −ELBO at β = 1) across, "
    "MIG (mutual information gap of the posterior means, 0 to 1) up, one point per run coloured by "
    "variant; a cross is a variant's mean ± 1 sd over seeds. Up and to the left is better on both; a "
    "variant that gains MIG by paying bits/dim moves up and to the right.",
    order=10,
)
def plot_likelihood_mig(ctx: PlotContext, stem: Path) -> list[Path] | None:
    with style():  # saved inside the style too: the layout is computed when saving
        fig = likelihood_mig_figure(ctx)
        return save(fig, stem) if fig is not None else None


def likelihood_mig_figure(ctx: PlotContext) -> Figure | None:
    """The plane (None without a run that has MIG): runs as dots, each variant's mean ± sd as a cross."""
    runs = mig_runs(ctx)
    if runs.empty:
        return None
    variants = [v for v in ctx.order if v in set(runs["variant"])]
    variants += [v for v in dict.fromkeys(runs["variant"]) if v not in variants]
    with style():
        fig = Figure(figsize=(6.6, 4.8), layout="constrained")
        ax = fig.subplots()
        for variant in variants:
            mine = runs[runs["variant"] == variant]
            colour = ctx.palette[variant]
            ax.scatter(
                mine[BPD_ELBO.key], mine[MIG], s=60, color=colour, edgecolor="white", linewidth=0.8, zorder=3
            )
            if len(mine) > 1:
                ax.errorbar(
                    mine[BPD_ELBO.key].mean(), mine[MIG].mean(), xerr=mine[BPD_ELBO.key].std(ddof=1),
                    yerr=mine[MIG].std(ddof=1), fmt="none", ecolor=colour, elinewidth=1.6, capsize=4,
                    alpha=0.8, zorder=2,
                )  # fmt: skip
        ax.margins(0.12)
        ax.set_xlabel("bits/dim (bpd_elbo: −ELBO at β = 1; lower is better)")
        ax.set_ylabel(f"{metric(MIG).label} (higher is better)")
        fig.suptitle("Likelihood vs disentanglement (upper-left is better)")
        handles = [
            Line2D([], [], ls="none", marker="o", ms=8, color=ctx.palette[v], mec="white") for v in variants
        ]
        figure_legend(fig, handles, variants, "variant")
        return fig
