"""How plots with many variants tell them apart: colour per level of one axis, line style per level
of another (not a plot: helpers for the curve and latent-usage plots).

At 16 variants, 16 colours are indistinguishable and a 16-entry legend names each variant in full.
An ablation grid has structure, so the lines are coloured by the levels of one axis (`vaebench report
--group-by AXIS`; default the axis with the most levels, the first on a tie) and dashed by the levels
of the axis with the most levels among the others; the legend then lists levels, not names.
`--group-by variant` gives every variant its own colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from matplotlib.lines import Line2D

from vaebench.core.errors import UserError
from vaebench.report.load import RunSet
from vaebench.report.plots.registry import Colour, PlotContext, level_palette

LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 3)), (0, (8, 3)), (0, (3, 1, 1, 1, 1, 1)))


@dataclass(frozen=True)
class Grouping:
    """Which axis colours the lines and which sets their style (None: one style)."""

    colour: str
    style: str | None


def finished_levels(rs: RunSet, axis: str) -> list[str]:
    """The levels of `axis` that finished runs have, in the experiment's order."""
    present = set(rs.finished[axis].dropna().astype(str))
    order = rs.variants if axis == "variant" else rs.levels.get(axis, [])
    return [level for level in order if level in present]


def curve_grouping(rs: RunSet, group_by: str | None = None) -> Grouping:
    """The colour axis (`group_by`, default the axis with the most levels, the first on a tie) and the
    line-style axis (of the others, the one with the most levels, if it has two)."""
    axes = [a for a in rs.axes if a != "variant"]
    if group_by is not None:
        names = {a.removesuffix(" (axis)"): a for a in axes} | {a: a for a in axes}
        if group_by == "variant":
            return Grouping("variant", None)
        if group_by not in names:
            choices = ", ".join([*dict.fromkeys(a.removesuffix(" (axis)") for a in axes), "variant"])
            raise UserError(
                f"--group-by {group_by!r} is not an axis of {rs.experiment}; choose one of {choices}."
            )
        colour = names[group_by]
    elif axes:
        colour = max(axes, key=lambda a: (len(finished_levels(rs, a)), -axes.index(a)))
    else:
        return Grouping("variant", None)
    others = [a for a in axes if a != colour and len(finished_levels(rs, a)) > 1]
    style_axis = max(others, key=lambda a: (len(finished_levels(rs, a)), -others.index(a)), default=None)
    return Grouping(colour, style_axis)


@dataclass(frozen=True)
class GroupStyle:
    """The colour of each colour-axis level and the dash pattern of each style-axis level."""

    grouping: Grouping
    colours: dict[str, Colour]
    dashes: dict[str | None, Any]

    def line(self, colour_level: str, style_level: str | None) -> dict[str, Any]:
        """matplotlib keyword arguments of the line for these levels."""
        return {"color": self.colours[colour_level], "ls": self.dashes.get(style_level, "-")}

    def of_variant(self, rs: RunSet, variant: str) -> dict[str, Any]:
        """The line of a variant, from its levels."""
        g = self.grouping
        row = rs.finished[rs.finished["variant"] == variant].iloc[0]
        return self.line(str(row[g.colour]), str(row[g.style]) if g.style else None)

    def legend(self) -> tuple[list[Line2D], list[str], str]:
        """(handles, labels, title): the colour levels, then the style levels."""
        g = self.grouping
        handles = [Line2D([], [], color=c, lw=3) for c in self.colours.values()]
        if g.colour == "variant":
            labels = list(self.colours)
        else:
            labels = [f"{g.colour} = {c}" for c in self.colours]
        if g.style is not None:
            handles += [Line2D([], [], color="0.3", lw=2, ls=d) for d in self.dashes.values()]
            labels += [f"{g.style} = {s}" for s in self.dashes]
        title = f"colour: {g.colour}" + (f", line style: {g.style}" if g.style else "")
        return handles, labels, title


def group_style(ctx: PlotContext) -> GroupStyle:
    """The colours and dashes of `ctx.group_by` (or the default grouping): a variant keeps its report
    colour when the colour axis is "variant"."""
    rs = ctx.runs
    g = curve_grouping(rs, ctx.group_by)
    levels = finished_levels(rs, g.colour)
    colours = {v: ctx.palette[v] for v in levels} if g.colour == "variant" else level_palette(levels)
    style_levels = finished_levels(rs, g.style) if g.style else []
    dashes: dict[str | None, Any] = {s: LINE_STYLES[i % len(LINE_STYLES)] for i, s in enumerate(style_levels)}
    return GroupStyle(g, colours, dashes)
