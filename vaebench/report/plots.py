"""The report's plots (seaborn on matplotlib), each saved as PNG (for the HTML) and PDF (for a paper).

Figures are built on `matplotlib.figure.Figure` objects, not pyplot: no global backend or state is
touched (the Agg canvas renders them), so the report can run inside a notebook or a test without
switching a user's backend. Every plot takes the variant palette from `variant_palette`, so a
variant has the same colour in every figure. PDFs carry no creation date, so regenerating a report
gives identical files.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from vaebench.report.load import RunSet
from vaebench.report.metrics import ACTIVE_UNITS, BPD_ELBO, BPD_IW, KL, MUTUAL_INFO, Metric

Colour = tuple[float, float, float]

# (metrics.jsonl key, axis label) of the training-curve panels, in reading order
CURVE_PANELS: tuple[tuple[str, str], ...] = (
    ("train/loss", "training loss (nats/image)"),
    ("train/kl", "KL (nats/image)"),
    ("train/beta", "β, the KL weight"),
    ("val/bpd_elbo", "validation bits/dim (−ELBO)"),
)
DPI = 150


@contextmanager
def style() -> Iterator[None]:
    """Readable defaults for every report figure: white grid, notebook-sized fonts."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.95):
        yield


def variant_palette(variants: Sequence[str]) -> dict[str, Colour]:
    """One colour per variant, in variant order: colour-blind safe up to 10 variants, husl beyond."""
    name = "colorblind" if len(variants) <= 10 else "husl"
    return dict(zip(variants, sns.color_palette(name, len(variants)), strict=True))


def save(fig: Figure, stem: Path) -> list[Path]:
    """<stem>.png and <stem>.pdf; the PDF without a creation date so that reruns give the same bytes."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    fig.savefig(png, dpi=DPI, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "Creator": None, "Producer": None})
    return [png, pdf]


def _legend(fig: Figure, variants: Sequence[str], palette: dict[str, Colour], title: str = "variant") -> None:
    handles = [Line2D([], [], color=palette[v], lw=3) for v in variants]
    fig.legend(
        handles, variants, title=title, loc="outside lower center", ncols=min(len(variants), 4), frameon=False
    )


def _maybe_log_y(ax: Axes, values: pd.Series) -> None:
    """Log scale when positive values span more than a factor of 20 (early losses dwarf later ones)."""
    finite = values[np.isfinite(values)]
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 20:
        ax.set_yscale("log")


def plot_training_curves(rs: RunSet, palette: dict[str, Colour], stem: Path) -> list[Path] | None:
    """Loss, KL, beta and validation bits/dim against step; mean over seeds with a +-1 sd band."""
    finished = set(rs.finished["run"])
    data = rs.curves[rs.curves["run"].isin(finished)]
    panels = [(k, label) for k, label in CURVE_PANELS if data.loc[data["metric"] == k, "value"].notna().any()]
    if not panels:
        return None
    variants = [v for v in rs.variants if v in set(data["variant"])]
    with style():
        cols = 2 if len(panels) > 1 else 1
        rows = math.ceil(len(panels) / cols)
        fig = Figure(figsize=(6.2 * cols, 3.4 * rows + 0.9), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax, (key, label) in zip(axes, panels, strict=False):
            d = data[(data["metric"] == key) & data["value"].notna()]
            sns.lineplot(
                data=d,
                x="step",
                y="value",
                hue="variant",
                hue_order=[v for v in variants if v in set(d["variant"])],
                palette=palette,
                errorbar="sd",
                ax=ax,
                legend=False,
            )
            ax.set(xlabel="step", ylabel=label)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if key == "train/loss":
                _maybe_log_y(ax, d["value"])
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        fig.suptitle("Training curves (mean over seeds, band: ±1 sd)")
        _legend(fig, variants, palette)
        return save(fig, stem)


def plot_bits_per_dim(rs: RunSet, palette: dict[str, Colour], stem: Path) -> list[Path] | None:
    """Each variant's bits/dim (−ELBO and IW bound): seeds as dots, mean ± sd as a diamond with a bar."""
    finished = rs.finished
    metrics = [m for m in (BPD_ELBO, BPD_IW) if m.key in finished and finished[m.key].notna().any()]
    if not metrics:
        return None
    variants = [v for v in rs.variants if v in set(finished["variant"])]
    with style():
        fig = Figure(figsize=(5.2 * len(metrics) + 2.0, 0.5 * len(variants) + 2.0), layout="constrained")
        axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False).ravel()
        for ax, m in zip(axes, metrics, strict=True):
            d = finished[["variant", m.key]].assign(value=pd.to_numeric(finished[m.key], errors="coerce"))
            d = d[d["value"].notna()]
            common = {"data": d, "x": "value", "y": "variant", "hue": "variant", "order": variants}
            common |= {"hue_order": variants, "palette": palette, "ax": ax, "legend": False}
            sns.pointplot(
                **common,
                errorbar="sd",
                markers="D",
                markersize=9,
                linestyle="none",
                capsize=0.2,
                err_kws={"linewidth": 1.5},
            )
            # seaborn jitters with the global RNG, so no jitter: the same runs give the same picture
            sns.stripplot(**common, size=7, jitter=False, edgecolor="white", linewidth=1, zorder=4)
            ax.set(xlabel=m.label, ylabel="")
            ax.margins(x=0.12)
        fig.suptitle("Bits per dimension by variant (lower is better; bar: ±1 sd over seeds)")
        return save(fig, stem)


def plot_axis_effects(effects: pd.DataFrame, metrics: Sequence[Metric], stem: Path) -> list[Path] | None:
    """Mean paired difference per axis level with its 95% t interval, one panel per metric; 0 = no effect."""
    shown = [m for m in metrics if effects.loc[effects["metric"] == m.key, "mean_diff"].notna().any()]
    if effects.empty or not shown:
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
        fig.suptitle("Effect of each axis: mean paired difference, 95% t interval (none with one pair)")
        return save(fig, stem)


def _sorted_profiles(rs: RunSet, key: str) -> dict[str, np.ndarray]:
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


def plot_latent_usage(rs: RunSet, palette: dict[str, Colour], stem: Path) -> list[Path] | None:
    """KL per latent dimension (heatmap, dims sorted by KL) with each variant's active units marked,
    and the sorted posterior-mean variance Var_x E_q[z_d|x] against the active-unit threshold."""
    kl = _sorted_profiles(rs, "kl_per_dim")
    if not kl:
        return None
    var = _sorted_profiles(rs, "posterior_mean_var")
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
        heat_h = 0.45 * len(variants) + 1.4
        fig = Figure(figsize=(12, heat_h + (3.6 if var else 0) + 0.6), layout="constrained")
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
            active = pd.to_numeric(
                finished.loc[finished["variant"] == v, "active_units"], errors="coerce"
            ).mean()
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
            for v, values in var.items():
                ranks = np.arange(1, len(values) + 1)
                ax2.plot(ranks, np.clip(values, 1e-12, None), color=palette[v], lw=2, label=v)
            ax2.set_yscale("log")
            ax2.set_xlim(0.5, width + 0.5)
            ax2.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(width, 16)))
            if threshold is not None:
                ax2.axhline(threshold, color="0.2", ls="--", lw=1.2, label=f"active threshold {threshold:g}")
            ax2.set(xlabel="latent dimension, sorted by Var_x E_q[z|x]", ylabel="Var_x E_q[z|x]")
            ax2.legend(loc="upper right", fontsize="small", ncols=2 if len(var) > 6 else 1)
            ax2.set_title("Posterior-mean variance: a dimension is active above the threshold")
        return save(fig, stem)


def plot_beta_sweep(rs: RunSet, palette: dict[str, Colour], stem: Path) -> list[Path] | None:
    """Active units, KL and mutual information against beta, when loss.beta varies between runs.

    Dots are runs (variant colours); a grey line joins the mean at each beta within each combination
    of the axes that do not set beta.
    """
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
        _legend(fig, variants, palette)
        return save(fig, stem)


def plot_run_curves(rs: RunSet, run: str, palette: dict[str, Colour], stem: Path) -> list[Path] | None:
    """One run's loss curves for the write-up: training loss with its recon and KL terms, and val bits/dim."""
    d = rs.curves[(rs.curves["run"] == run) & rs.curves["value"].notna()]
    if d.empty:
        return None
    colour = palette.get(str(d["variant"].iloc[0]), (0.2, 0.2, 0.2))
    with style():
        fig = Figure(figsize=(7.5, 3.4), layout="constrained")  # shown at half width beside the grids
        left, right = fig.subplots(1, 2)
        styles = (
            ("train/loss", {"color": colour, "lw": 2.5}, "loss"),
            ("train/recon", {"color": "0.15", "lw": 1.5, "ls": ":"}, "recon term"),
            ("train/kl", {"color": colour, "lw": 2, "ls": "--"}, "KL term"),
        )
        for key, line, label in styles:
            g = d[d["metric"] == key]
            if not g.empty:
                left.plot(g["step"], g["value"], label=label, **line)
        terms = d.loc[d["metric"].isin(["train/loss", "train/recon", "train/kl"]), "value"]
        left.set(xlabel="step", ylabel="nats/image", yscale="log" if (terms > 0).all() else "symlog")
        left.legend(frameon=False)
        g = d[d["metric"] == "val/bpd_elbo"]
        right.plot(g["step"], g["value"], "o-", color=colour, lw=2)
        right.set(xlabel="step", ylabel="validation bits/dim (−ELBO)")
        for ax in (left, right):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle(rs.record(run).label)
        return save(fig, stem)
