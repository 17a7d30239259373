"""The report's plots (seaborn on matplotlib), one module per plot, each registered with `@plot`.

`registry` holds the registry and the drawing helpers every plot shares; `discover` imports every
other module of this package, so a plot module dropped in here is in the next report without any
other file changing (see the README's "Adding a plot").
"""

from __future__ import annotations

import importlib
import pkgutil

from vaebench.report.plots.registry import (
    PLOTS,
    SECTIONS,
    Plot,
    PlotContext,
    plot,
    registered,
    save,
    style,
    variant_palette,
)


def discover() -> list[str]:
    """Import every plot module of this package (those not starting with "_"); returns their names.

    Importing is what registers a module's plots; a module already imported is not imported again.
    """
    names = []
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("_") or module.name == "registry":
            continue
        importlib.import_module(f"{__name__}.{module.name}")
        names.append(module.name)
    return names


discover()

__all__ = [
    "PLOTS",
    "SECTIONS",
    "Plot",
    "PlotContext",
    "discover",
    "plot",
    "registered",
    "save",
    "style",
    "variant_palette",
]
