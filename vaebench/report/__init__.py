"""`vaebench report`: tables, plots, write-up figures and a report of an experiment's runs.

Modules: `load` (run folders -> tables), `wandb_api` (the same from the W&B public API), `stats`
(t intervals), `metrics` (what is tabulated), `tables` (aggregation, axis effects, Markdown/CSV/LaTeX),
`plots` (one module per plot, each registered with `@plot`; see the README's "Adding a plot"), `figures`
(grids from checkpoints), `render` (report.md, report.html) and `build` (`build_report`, which ties
them together).
"""

from vaebench.report.build import build_report

__all__ = ["build_report"]
