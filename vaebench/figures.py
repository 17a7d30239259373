"""The standard VAE figures, made from a model and images so they can be regenerated from any checkpoint.

All functions return the path of the PNG they wrote. Images are decoder means (not samples from
p(x|z)): pixel noise from the likelihood would only blur what the latent space encodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torchvision.utils import save_image

from vaebench.vae import VAE

TEMPERATURES = (0.5, 0.7, 0.85, 1.0, 1.2)


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


def standard_figures(model: VAE, images: Tensor, folder: Path, seed: int = 0) -> dict[str, Path]:
    """The four figures every run folder gets, from at least 8 float images in [0, 1]."""
    n = min(8, len(images))
    pairs = images[: 2 * (n // 2)].reshape(n // 2, 2, *images.shape[1:])
    return {
        "reconstructions": reconstruction_grid(model, images[:n], folder / "reconstructions.png"),
        "samples": sample_grid(model, 16, folder / "samples.png", seed),
        "interpolation": interpolation_grid(model, pairs, 8, folder / "interpolation.png"),
        "temperature": temperature_grid(model, 8, folder / "temperature.png", seed=seed),
    }
