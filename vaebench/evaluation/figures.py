"""The standard VAE figures, made from a model and images so they can be regenerated from any checkpoint.

All figure functions return the path of the PNG they wrote. Images are decoder means (not samples
from p(x|z)): pixel noise from the likelihood would only blur what the latent space encodes.

Beside the temperature grid, `temperature_record` writes temperature.json: how much the samples vary at
each temperature (`temperature_spread`). A decoder whose GroupNorm layers normalise the scale of z away
gives nearly the same images at every tau > 0, and the grid alone cannot tell a reader that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision.utils import save_image

from vaebench.model.vae import VAE
from vaebench.runs.io import atomic_write_json

# Roughly geometric: a decoder that normalises the scale of z changes where tau * |Wz| meets the bias of
# its first layer (tau ~ 0.1-0.3 in the quickstart), not between 0.5 and 1.2; 0 is the decoder at the
# prior mean z = 0, the same image in every column. 0.5 and 1 give the ratio the report reads.
TEMPERATURES = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
SPREAD_SAMPLES = 64  # prior samples per temperature for the spread
FLAT_RATIO = 0.8  # spread(0.5) / spread(1) above this: temperature barely changes the samples


def _save(grid: Tensor, path: Path, nrow: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    save_image(grid.float().clamp(0, 1).cpu(), tmp, nrow=nrow, padding=2, pad_value=1.0)
    tmp.replace(path)
    return path


@torch.no_grad()
def reconstruction_grid(model: VAE, x: Tensor, path: Path) -> Path:
    """Inputs (top row) over their reconstructions (bottom row); x is float in [0, 1], (N, 3, H, W)."""
    recon = model.reconstruct(x)
    return _save(torch.cat([x, recon]), path, nrow=len(x))


@torch.no_grad()
def sample_grid(model: VAE, n: int, path: Path, seed: int = 0) -> Path:
    """Decoder means of n draws from the prior N(0, I)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return _save(model.sample(n, temperature=1.0, generator=g), path, nrow=int(n**0.5) or 1)


@torch.no_grad()
def interpolation_grid(model: VAE, pairs: Tensor, steps: int, path: Path) -> Path:
    """One row per pair of images: the decoded straight line between their posterior means.

    pairs: (P, 2, 3, H, W) float images in [0, 1].
    """
    rows = [model.interpolate(a[None], b[None], steps) for a, b in pairs]
    return _save(torch.cat(rows), path, nrow=steps)


@torch.no_grad()
def temperature_grid(
    model: VAE, n: int, path: Path, temperatures: Sequence[float] = TEMPERATURES, seed: int = 0
) -> Path:
    """Row t holds n prior samples at temperature T_t (z ~ N(0, T^2 I)), the same noise in every row."""
    rows = []
    for t in temperatures:
        g = torch.Generator(device="cpu").manual_seed(seed)
        rows.append(model.sample(n, temperature=t, generator=g))
    return _save(torch.cat(rows), path, nrow=n)


@torch.no_grad()
def temperature_spread(
    decode: Callable[[Tensor], Tensor], noise: Tensor, temperatures: Sequence[float]
) -> dict[str, Any]:
    """How much decoded prior samples vary at each temperature, on [0, 1] intensities.

    decode: z (N, L) -> images (N, C, H, W); noise: eps (N, L), N >= 2, decoded as z = tau * eps, the
    same eps at every tau. Returns, per temperature (lists in the order of `temperatures`):

    - spread: the standard deviation over the N samples of each pixel value (unbiased), averaged over
      pixels and channels. 0 when every sample is the same image; doubles with tau for a decoder
      that is linear in z.
    - change: the mean absolute difference per pixel value between the images of this tau and of the
      previous one (same eps); None for the first.

    >>> eps = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    >>> linear = temperature_spread(lambda z: z.view(8, 1, 2, 2), eps, [0.5, 1.0])
    >>> round(linear["spread"][0] / linear["spread"][1], 6)
    0.5
    """
    spread: list[float] = []
    change: list[float | None] = []
    previous: Tensor | None = None
    for tau in temperatures:
        x = decode(noise * tau).double()  # (N, C, H, W)
        spread.append(float(x.std(dim=0).mean()))
        change.append(None if previous is None else float((x - previous).abs().mean()))
        previous = x
    return {"temperatures": [float(t) for t in temperatures], "spread": spread, "change": change}


def spread_ratio(record: dict[str, Any], low: float = 0.5, high: float = 1.0) -> float | None:
    """spread(low) / spread(high) of a `temperature_spread` record; None when either was not measured
    or spread(high) is 0. Near 1: the samples at `low` vary as much as at `high`."""
    try:
        values = dict(zip(record["temperatures"], record["spread"], strict=True))
        if values[high] == 0:
            return None
        return float(values[low]) / float(values[high])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


@torch.no_grad()
def measure_temperature(
    model: VAE,
    temperatures: Sequence[float] = TEMPERATURES,
    samples: int = SPREAD_SAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """`temperature_spread` of the model's decoder means for `samples` prior draws (CPU generator
    seeded by `seed`), with the ratio spread(0.5) / spread(1) and what was measured: a JSON object."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    param = next(model.parameters())
    noise = torch.randn(samples, model.latent_dim, generator=g).to(param.device, param.dtype)
    record = temperature_spread(lambda z: model.decode(z)[0], noise, temperatures)
    return {
        **record,
        "spread_ratio_0.5_1": spread_ratio(record),
        "samples": samples,
        "seed": seed,
        "what": "spread: per-pixel standard deviation of the decoder means over the prior samples, averaged "
        "over pixels and channels, [0, 1] intensities; change: mean absolute difference per pixel value "
        "from the previous temperature, same noise",
    }


def temperature_record(
    model: VAE,
    path: Path,
    temperatures: Sequence[float] = TEMPERATURES,
    seed: int = 0,
    step: int | None = None,
) -> Path:
    """Write `measure_temperature` of the model to `path` (temperature.json beside the grid), with the
    checkpoint's step when given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {**measure_temperature(model, temperatures, seed=seed), "step": step})
    return path


def standard_figures(
    model: VAE, images: Tensor, folder: Path, seed: int = 0, step: int | None = None
) -> dict[str, Path]:
    """The four figures every run folder gets, from at least 8 float images in [0, 1], and the
    temperature grid's measurement (temperature.json; not among the returned figures)."""
    n = min(8, len(images))
    pairs = images[: 2 * (n // 2)].reshape(n // 2, 2, *images.shape[1:])
    temperature_record(model, folder / "temperature.json", seed=seed, step=step)
    return {
        "reconstructions": reconstruction_grid(model, images[:n], folder / "reconstructions.png"),
        "samples": sample_grid(model, 16, folder / "samples.png", seed),
        "interpolation": interpolation_grid(model, pairs, 8, folder / "interpolation.png"),
        "temperature": temperature_grid(model, 8, folder / "temperature.png", seed=seed),
    }
