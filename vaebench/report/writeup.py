"""Write-up figures made from a run's checkpoint, so they can be remade at any count and size.

For one run: reconstructions (inputs over reconstructions), a latent interpolation between pairs of
test images (each row between the two real images it starts and ends at), and a temperature grid (one
row per tau in `vaebench.evaluation.figures.TEMPERATURES`, the same noise in every row) with its measurement
(temperature.json, and `temperature_note` says what it means). Across variants: one
reconstruction grid of the same test images, one row per variant under the inputs, so that variants
are compared image by image. The grids come from `vaebench.evaluation.figures` (or are laid out the same way
here); they are enlarged with
nearest-neighbour scaling (pixels stay pixels: a 16x16 image is not smoothed into a blur), given
row labels, and saved as PNG and PDF. Everything is deterministic: the first test images, fixed seeds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import save_image

from vaebench import data as datasets
from vaebench.core.device import resolve_device
from vaebench.core.errors import UserError
from vaebench.data.batches import eval_batches, to_float
from vaebench.evaluation.figures import (
    FLAT_RATIO,
    TEMPERATURES,
    reconstruction_grid,
    spread_ratio,
    temperature_grid,
    temperature_record,
)
from vaebench.model.vae import VAE
from vaebench.report.render import Table, Text
from vaebench.report.tables import MISSING
from vaebench.runs.trained import checkpoint_path, load_run_spec, load_trained_model

PADDING = 2  # pixels between images in vaebench.evaluation.figures grids (torchvision's save_image padding)
_EPOCH = time.gmtime(0)  # PDF creation date: fixed, so reruns give the same bytes


def load_model(run_dir: Path, device: torch.device) -> tuple[VAE, int]:
    """The model of checkpoints/best.pt (else last.pt), in eval mode, and the checkpoint's step."""
    try:
        path = checkpoint_path(run_dir, "best")
    except UserError:
        path = checkpoint_path(run_dir, "last")
    model, step = load_trained_model(path, load_run_spec(run_dir), device)
    return model.eval(), step or 0


def first_test_images(run_dir: Path, count: int, device: torch.device) -> torch.Tensor:
    """The first `count` test images of the run's data, float in [0, 1], (count, 3, H, W)."""
    spec = load_run_spec(run_dir)
    dataset = datasets.build_dataset(spec.data, "test")
    if len(dataset) < 2:
        raise UserError(f"the test split of {run_dir} has {len(dataset)} image(s); figures need 2.")
    return to_float(next(eval_batches(dataset, min(count, len(dataset)))), device)


def label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans, which matplotlib ships (PIL's default font has no Greek, and the labels say τ)."""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default(size=size)


def finish_grid(png: Path, scale: int, row_labels: Sequence[str], tile: int) -> list[Path]:
    """Enlarge a grid PNG by `scale` (nearest neighbour), add row labels on the left, save PNG and PDF."""
    grid = Image.open(png).convert("RGB")
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    if row_labels:
        font = label_font(max(12, min(22, tile * scale // 3)))
        margin = 24 + max(int(font.getlength(text)) for text in row_labels)  # 18 px clear on the left
        canvas = Image.new("RGB", (grid.width + margin, grid.height), "white")
        canvas.paste(grid, (margin, 0))
        draw = ImageDraw.Draw(canvas)
        row = (tile + PADDING) * scale
        for i, text in enumerate(row_labels):
            y = PADDING * scale + i * row + tile * scale // 2
            draw.text((margin - 6, y), text, fill="black", font=font, anchor="rm")
        grid = canvas
    grid.save(png)
    pdf = png.with_suffix(".pdf")
    grid.save(pdf, "PDF", resolution=72.0 * scale, creationDate=_EPOCH, modDate=_EPOCH)
    return [png, pdf]


def save_grid(images: Tensor, path: Path, nrow: int) -> Path:
    """Images (N, 3, H, W) in [0, 1] as a grid of `nrow` columns, padded like
    `vaebench.evaluation.figures`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.float().clamp(0, 1).cpu(), path, nrow=nrow, padding=PADDING, pad_value=1.0)
    return path


@torch.no_grad()
def interpolation_with_ends(model: VAE, pairs: Tensor, steps: int, path: Path) -> Path:
    """One row per pair (P, 2, 3, H, W): the real x1, the decoded line between the posterior means of
    x1 and x2 in `steps` steps, the real x2. Beside the real images, the ends of the line show what the
    reconstruction loses, and the middle what the latent space fills in."""
    rows = [torch.cat([a[None], model.interpolate(a[None], b[None], steps), b[None]]) for a, b in pairs]
    return save_grid(torch.cat(rows), path, nrow=steps + 2)


@torch.no_grad()
def reconstruction_comparison(
    runs: dict[str, Path], png: Path, *, images: int = 8, scale: int = 2, device: str = "cpu"
) -> tuple[list[Path], dict[str, str]]:
    """The first `images` test images (top row) and, one row per run, their reconstructions by that
    run's model (best.pt), rows labelled with the keys of `runs`; as `png` (and its PDF).

    The inputs are those of the first run; a run whose test images differ (another dataset or image
    size) is left out. Returns the paths and, per left-out run, why (a checkpoint or data error too).
    """
    dev = resolve_device(device)  # type: ignore[arg-type]
    x: Tensor | None = None
    rows, labels, skipped = [], [], {}
    for label, run_dir in runs.items():
        try:
            own = first_test_images(run_dir, max(images, 2), dev)
            if x is None:
                x = own
            elif own.shape != x.shape or not torch.equal(own, x):
                skipped[label] = "its test images differ from the first variant's"
                continue
            model, _ = load_model(run_dir, dev)
            rows.append(model.reconstruct(x))
            labels.append(label)
        except UserError as err:
            skipped[label] = str(err)
    if x is None or not rows:
        return [], skipped
    save_grid(torch.cat([x, *rows]), png, nrow=len(x))
    return finish_grid(png, scale, ["input", *labels], x.shape[-1]), skipped


@torch.no_grad()
def writeup_figures(
    run_dir: Path, folder: Path, *, images: int = 8, scale: int = 2, device: str = "cpu"
) -> dict[str, list[Path]]:
    """Reconstruction, interpolation and temperature grids of one run, in `folder`, and temperature.json:
    the spread of this model's prior samples at each of the grid's temperatures (not in the result).

    images: columns of every grid (reconstructions of `images` test images, interpolations in `images`
    steps between min(4, images // 2) pairs, plus the two real images; `images` samples per
    temperature); scale: enlargement.
    Raises UserError when the checkpoint or the data cannot be read.
    """
    dev = resolve_device(device)  # type: ignore[arg-type]
    model, step = load_model(run_dir, dev)
    x = first_test_images(run_dir, max(images, 2), dev)
    temperature_record(model, folder / "temperature.json", TEMPERATURES, seed=0, step=step)
    n = len(x)
    pairs = min(4, n // 2)
    tile = x.shape[-1]
    made = {
        "reconstructions": (
            reconstruction_grid(model, x[:n], folder / "reconstructions.png"),
            ["input", "recon"],
        ),
        "interpolation": (
            interpolation_with_ends(
                model, x[: 2 * pairs].reshape(pairs, 2, *x.shape[1:]), n, folder / "interpolation.png"
            ),
            [],
        ),
        "temperature": (
            temperature_grid(model, n, folder / "temperature.png", TEMPERATURES, seed=0),
            [f"τ={t:g}" for t in TEMPERATURES],
        ),
    }
    return {name: finish_grid(png, scale, labels, tile) for name, (png, labels) in made.items()}


def temperature_table(record: dict[str, Any]) -> pd.DataFrame:
    """A `temperature_spread` record as a table of strings: one column per tau, rows spread and change."""

    def cells(values: Sequence[float | None]) -> list[str]:
        return [MISSING if v is None else f"{v:.3f}" for v in values]

    columns = ["τ", *(f"{t:g}" for t in record["temperatures"])]
    rows = [["spread", *cells(record["spread"])], ["change from the row above", *cells(record["change"])]]
    return pd.DataFrame(rows, columns=columns)


def temperature_note(drawn: dict[str, Any] | None, run_folder: dict[str, Any] | None) -> list[Text | Table]:
    """What the temperature grid shows, in numbers: the spread of the drawn model's prior samples at
    each tau and the change between rows (`drawn`: its temperature.json), and spread(0.5) / spread(1)
    here and at the end of training (`run_folder`: the run folder's figures/temperature.json, None for
    a run made before vaebench measured it). Above `FLAT_RATIO` it says plainly that temperature
    barely changes this model's samples, and why."""
    final = spread_ratio(run_folder) if run_folder else None
    if run_folder is None:
        at_end = "not measured in the run folder (it predates figures/temperature.json)"
    elif final is None:
        at_end = "not measured in the run folder (no spread at τ = 0.5 and 1 in figures/temperature.json)"
    else:
        step = run_folder.get("step")
        at_end = f"{final:.2f} at the end of training (step {step}, the run folder's record)"
    if drawn is None:
        return [Text(f"Temperature: no measurement of this figure; spread(0.5)/spread(1) {at_end}.")]
    ratio = spread_ratio(drawn)
    shown = "not measured" if ratio is None else f"{ratio:.2f}"
    notes: list[Text | Table] = [
        Text(
            f"Temperature grid, measured on {drawn.get('samples')} prior samples: spread is the per-pixel "
            "standard deviation of the decoder means over the samples, averaged over pixels, on [0, 1] "
            "intensities; change is the mean absolute difference per pixel value from the row above (same "
            f"noise). spread(0.5)/spread(1) = {shown} for this checkpoint (step {drawn.get('step')}); "
            f"{at_end}."
        ),
        Table(temperature_table(drawn)),
    ]
    if ratio is not None and ratio > FLAT_RATIO:
        notes.append(
            Text(
                f"Temperature barely changes this model's samples: at τ = 0.5 they vary {ratio:.0%} as much "
                "as at τ = 1, where a decoder linear in z would give 50%. The decoder's GroupNorm layers "
                "rescale its features, so its output depends on the direction of z much more than on its "
                "length; only near τ = 0, where the bias of its first layer outweighs τ·z, do the samples "
                "move towards the τ = 0 row (the decoder at the prior mean z = 0). Read the rows from "
                "τ = 0.5 up as nearly the same samples, not as a trade of diversity for quality."
            )
        )
    return notes
