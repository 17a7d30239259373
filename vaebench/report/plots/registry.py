"""The plot registry: a report plot is a function registered with `@plot(name=, section=, caption=)`.

`build_report` draws every registered plot into plots/<name>.png and .pdf and shows it in its section
of report.md and report.html, with its caption, in registration `order`. The report never names a
plot itself, so adding one is one new file in this package (every module here is imported by
`discover`); see the README's "Adding a plot".

A plot function takes a `PlotContext` (the loaded runs and what the report computed from them) and
the file stem to save to, and returns the saved paths, or None when it has nothing to show (then the
section shows the plot's `missing` text, if it has one).

Figures are built on `matplotlib.figure.Figure` objects, not pyplot: no global backend or state is
touched (the Agg canvas renders them), so the report can run inside a notebook or a test without
switching a user's backend. Every plot takes its colours from `PlotContext.palette`, so a variant has
the same colour in every figure. PDFs carry no creation date, so regenerating a report gives
identical files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D

from vaebench.report.columns import BPD_ELBO, Metric
from vaebench.report.load import RunSet

Colour = tuple[float, float, float]
DPI = 150

# The report's sections that plots go into, in reading order. A plot may name another section: it
# gets a heading of its own after these.
RESULTS = "Results by variant"
EFFECTS = "Effect of each ablation axis"
CURVES = "Training curves"
LATENT = "Latent usage"
REPRESENTATION = "Representation"  # disentanglement scores: shown only when it has something to show
SECTIONS = (RESULTS, EFFECTS, CURVES, LATENT, REPRESENTATION)


@dataclass
class PlotContext:
    """What a plot may draw from: the runs and what the report computed from them."""

    runs: RunSet
    palette: dict[str, Colour]  # variant -> colour, the same in every figure
    order: list[str] = field(default_factory=list)  # finished variants in the variants table's order
    ranks: dict[str, int] = field(default_factory=dict)  # variant -> rank (1 = best); unranked ones absent
    rank_by: Metric = BPD_ELBO
    effects: pd.DataFrame = field(default_factory=pd.DataFrame)  # `tables.axis_effects`
    metrics: Sequence[Metric] = ()  # the report metrics that are not degenerate (see tables.py)
    group_by: str | None = None  # the axis that colours the training curves (None: the default)
    quality_not_comparable: bool = False  # the quality scores used random extractor weights: say so


PlotFunction = Callable[[PlotContext, Path], "list[Path] | None"]


@dataclass(frozen=True)
class Plot:
    name: str  # file stem: plots/<name>.png and .pdf
    draw: PlotFunction
    section: str  # the report section the plot appears in (one of SECTIONS, or a new one)
    caption: str | Callable[[PlotContext], str]  # under the image; a function when it depends on the runs
    missing: str = ""  # shown in the section instead when `draw` returns None ("" shows nothing)
    order: int = 100  # position within the section, then registration order

    def caption_for(self, ctx: PlotContext) -> str:
        return self.caption(ctx) if callable(self.caption) else self.caption


PLOTS: dict[str, Plot] = {}


def plot(
    *,
    name: str,
    section: str,
    caption: str | Callable[[PlotContext], str],
    missing: str = "",
    order: int = 100,
) -> Callable[[PlotFunction], PlotFunction]:
    """Register the decorated function as the report plot `name` (re-registering a name replaces it)."""

    def register(draw: PlotFunction) -> PlotFunction:
        PLOTS[name] = Plot(name, draw, section, caption, missing, order)
        return draw

    return register


def registered(section: str | None = None) -> list[Plot]:
    """The registered plots (of one section), in their order within a section."""
    names = list(PLOTS)
    plots = sorted(PLOTS.values(), key=lambda p: (p.order, names.index(p.name)))
    return [p for p in plots if section is None or p.section == section]


# ----------------------------------------------------------------------------- shared drawing helpers


@contextmanager
def style() -> Iterator[None]:
    """Readable defaults for every report figure: white grid, notebook-sized fonts."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.95):
        yield


def variant_palette(variants: Sequence[str]) -> dict[str, Colour]:
    """One colour per variant, in variant order: colour-blind safe up to 10 variants, husl beyond."""
    return level_palette(variants)


def level_palette(levels: Sequence[str]) -> dict[str, Colour]:
    """One colour per level (or variant), colour-blind safe up to 10, husl beyond."""
    name = "colorblind" if len(levels) <= 10 else "husl"
    return dict(zip(levels, sns.color_palette(name, len(levels)), strict=True))


def save(fig: Figure, stem: Path) -> list[Path]:
    """<stem>.png and <stem>.pdf; the PDF without a creation date so that reruns give the same bytes."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    fig.savefig(png, dpi=DPI, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "Creator": None, "Producer": None})
    return [png, pdf]


def legend_columns(labels: Sequence[str], width_in: float, fontsize_pt: float = 11.0) -> int:
    """How many legend columns of these labels fit side by side in `width_in` inches.

    A label takes about 0.6 em per character plus the handle and the gap (about 4 em), so a legend of
    16 long variant names wraps into rows instead of running off the figure.
    """
    longest = max((len(str(label)) for label in labels), default=1)
    per_column = (0.6 * longest + 4.0) * fontsize_pt / 72.0
    return max(1, min(len(labels), math.floor(width_in / per_column)))


def figure_legend(
    fig: Figure,
    handles: Sequence[Line2D],
    labels: Sequence[str],
    title: str,
    loc: str = "outside lower center",
) -> Legend:
    """A legend under the plots (outside the axes), wrapped into as many rows as its labels need."""
    width = fig.get_figwidth()
    return fig.legend(
        handles,
        labels,
        title=title,
        loc=loc,
        ncols=legend_columns(labels, width),  # the title spans the columns: it does not set their width
        frameon=False,
    )


def variant_legend(
    fig: Figure, variants: Sequence[str], palette: dict[str, Colour], title: str = "variant"
) -> Legend:
    handles = [Line2D([], [], color=palette[v], lw=3) for v in variants]
    return figure_legend(fig, handles, list(variants), title)
