"""One run's loss curves for the write-up figures (not a report plot: drawn per variant, not registered)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vaebench.report.load import RunSet
from vaebench.report.plots.registry import Colour, save, style


def plot_run_curves(rs: RunSet, run: str, palette: dict[str, Colour], stem: Path) -> list[Path] | None:
    """Training loss with its recon and KL terms, and validation bits/dim (markers: it is sparse)."""
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
        points = len(g)
        right.set(xlabel="step", ylabel="validation bits/dim (−ELBO)")
        right.set_title(f"validation ({points} point{'s' * (points != 1)})", fontsize="medium")
        for ax in (left, right):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle(rs.record(run).label)
        return save(fig, stem)
