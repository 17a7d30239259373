"""The representation section's latent traversals: the run with the highest MIG, one row per active unit,
labelled with the factor that unit captures ("z7 ~ face_x").

Made from the run's checkpoint like the write-up figures (`vaebench.report.writeup`): a sample of images
is drawn from the data's factor process (`vaebench.data.factors.factor_source`, so only runs on data with
discrete factors get one), encoded, and each active unit is matched with the factor its posterior mean
tells most about (`vaebench.evaluation.traversal.unit_factor_information`). Rows are ordered by that
factor, in the factor process's order, then by how much the unit tells about it. Each row decodes the
first test image's posterior mean with that one unit moved from -2.5 to +2.5 standard deviations of its
posterior mean over the data (the recorded Var_x E_q[z|x]) around its mean over the factor sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from vaebench.core.device import resolve_device
from vaebench.core.errors import UserError
from vaebench.data.factors import factor_source
from vaebench.evaluation.traversal import posterior_means, traversal_grid, unit_factor_information
from vaebench.report import render
from vaebench.report.load import RunRecord, RunSet
from vaebench.report.writeup import finish_grid, first_test_images, load_model, save_grid
from vaebench.runs.trained import load_run_spec

SPAN_SD = 2.5  # each row runs from -SPAN_SD to +SPAN_SD standard deviations of the unit
FACTOR_IMAGES = 1000  # factor-coded images encoded to match units with factors
MIG = "mig"


@dataclass(frozen=True)
class UnitRow:
    """One row of the traversal: a latent unit and the factor it captures most."""

    unit: int
    factor: str
    information: float  # normalised mutual information with that factor, in [0, 1]
    variance: float  # Var_x E_q[z|x] recorded by the evaluation (squared latent units)

    @property
    def label(self) -> str:
        return f"z{self.unit} ~ {self.factor}"


def highest_mig_run(rs: RunSet) -> RunRecord | None:
    """The finished run folder with the highest finite MIG (the first in run order on a tie), or None."""
    finished = rs.finished
    if MIG not in finished:
        return None
    mig = pd.to_numeric(finished[MIG], errors="coerce")
    best, highest = None, -math.inf
    for run, value in zip(finished["run"], mig, strict=True):
        rec = rs.record(str(run))
        if rec.local_dir is not None and math.isfinite(value) and value > highest:
            best, highest = rec, float(value)
    return best


def active_units(rec: RunRecord) -> list[int]:
    """The units the run's evaluation marked active (Var_x E_q[z|x] above eval.active_threshold)."""
    active = rec.per_dim.get("active")
    if active is None:
        threshold = rec.eval_settings.get("active_threshold")
        variances = rec.per_dim.get("posterior_mean_var") or []
        active = [threshold is not None and v > threshold for v in variances]
    return [u for u, on in enumerate(active) if on]


@torch.no_grad()
def traversal_figure(
    rec: RunRecord,
    png: Path,
    *,
    steps: int = 9,
    scale: int = 2,
    images: int = FACTOR_IMAGES,
    device: str = "cpu",
    seed: int = 0,
) -> tuple[list[Path], list[UnitRow]]:
    """The traversal grid of a run folder's model (best.pt, else last.pt) as `png` and its PDF, and its rows.

    steps: columns (values of the unit); images: factor-coded images encoded to match units with
    factors (drawn with a generator seeded by `seed`). Returns no paths (and no rows) when no unit is
    active. Raises UserError when the run has no checkpoint, its data no discrete factors, or it was
    not evaluated.
    """
    if rec.local_dir is None:
        raise UserError("a W&B run has no checkpoint here: run the report on the run folders")
    spec = load_run_spec(rec.local_dir)
    source = factor_source(spec.data)
    if source is None:
        raise UserError("its data has no discrete factors (set data.factor_levels on synthetic data)")
    variances = rec.per_dim.get("posterior_mean_var")
    if not variances:
        raise UserError("it has no per-dimension statistics: evaluate it (`vaebench evaluate`)")
    units = active_units(rec)
    if not units:
        return [], []
    dev = resolve_device(device)  # type: ignore[arg-type]
    model, _ = load_model(rec.local_dir, dev)
    codes = source.sample_codes(images, torch.Generator().manual_seed(seed))  # (N, K)
    mu = posterior_means(model, source.render_codes(codes))  # (N, L)
    information = unit_factor_information(mu, codes)  # (L, K)
    rows = []
    for u in units:
        k = int(information[u].argmax())
        rows.append(UnitRow(u, source.factor_names[k], float(information[u, k]), float(variances[u])))
    order = {name: i for i, name in enumerate(source.factor_names)}
    rows.sort(key=lambda r: (order[r.factor], -r.information, r.unit))

    span = torch.linspace(-SPAN_SD, SPAN_SD, steps, dtype=torch.float64)  # (C,)
    values = torch.stack([mu[:, r.unit].double().mean() + span * math.sqrt(r.variance) for r in rows])
    z_ref = model.encode(first_test_images(rec.local_dir, 2, dev)[:1])[0][0]  # (L,)
    grid = traversal_grid(model, z_ref, [r.unit for r in rows], values)
    save_grid(grid, png, nrow=steps)
    return finish_grid(png, scale, [r.label for r in rows], grid.shape[-1]), rows


def unit_table(rows: list[UnitRow]) -> pd.DataFrame:
    """The traversal's rows as a table of strings: unit, the factor it captures, how much, its variance."""
    return pd.DataFrame(
        {
            "unit": [f"z{r.unit}" for r in rows],
            "captures": [r.factor for r in rows],
            "normalised MI": [f"{r.information:.2f}" for r in rows],
            "Var_x E_q[z|x]": [f"{r.variance:.3g}" for r in rows],
        }
    )


def traversal_blocks(rs: RunSet, out: Path, *, scale: int = 2, device: str = "cpu") -> list[render.Block]:
    """The representation section's traversal of the highest-MIG run (figures/latent_traversal.png), its
    caption and the table of its rows; nothing when no run has MIG, a sentence when it cannot be drawn."""
    rec = highest_mig_run(rs)
    if rec is None:
        return []
    mig = float(pd.to_numeric(rs.finished.set_index("run").loc[rec.run, MIG]))
    heading = render.Heading(
        f"Latent traversals of the highest-MIG run: `{rec.label}` (MIG {mig:.3f})", level=3
    )
    try:
        paths, rows = traversal_figure(
            rec, out / "figures" / "latent_traversal.png", scale=scale, device=device
        )
    except UserError as err:
        return [heading, render.Text(f"No traversal: {err}.")]
    if not rows:
        return [heading, render.Text("No traversal: no latent unit of this run is active.")]
    png = paths[0]
    caption = (
        f"One row per active unit (Var_x E_q[z|x] above eval.active_threshold), labelled with the factor "
        f"its posterior mean tells most about and ordered by that factor; columns move that unit alone from "
        f"−{SPAN_SD:g} to +{SPAN_SD:g} standard deviations of its posterior mean over the data, the other "
        "units held at the first test image's posterior mean; decoder means."
    )
    note = (
        f"Which factor a unit captures: the mutual information between its posterior mean (binned into "
        f"20 equal-width bins, as disentanglement_lib's MIG does) and each factor's level, over the factor's "
        f"entropy (0: nothing, 1: determines it), on {FACTOR_IMAGES} images drawn from the data's factors. A "
        "factor captured by two units (a circular hue or angle is often encoded as its cosine and sine) "
        "has two rows; a factor in no row is captured by no active unit."
    )
    return [
        heading,
        render.Image(png, png.relative_to(out).as_posix(), caption, pixelated=True),
        render.Text(note),
        render.Table(unit_table(rows)),
    ]
