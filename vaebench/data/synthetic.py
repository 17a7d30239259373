"""Synthetic "faces": procedurally drawn colour images whose generative factors are known.

Why: a dataset that needs no download, renders in a fraction of a second, and has the
structure a VAE must learn on CelebA (a coloured background, a face of varying position,
size and skin tone, eyes, a mouth) -- with ground-truth factors for disentanglement and
latent-traversal analyses.

Each image is a deterministic function of its factor vector (`render`): there is no pixel
noise, so two images with the same factors are identical. Factors are drawn i.i.d. uniform
in [0, 1] (`sample_factors`) and mapped linearly to the physical ranges of `FACTORS`.
Shapes are drawn with soft (about one-pixel) edges so that images have no aliasing.

Discrete mode (`data.factor_levels: n`, what the disentanglement metrics need): each factor takes one
of n values of a grid in [0, 1] (`factor_grid`), and a split's images are rendered from integer codes
drawn uniformly and independently per factor (`sample_codes`, seeded like the continuous mode). An
ordinary factor's grid is k / (n - 1), k = 0..n-1, so both ends of its range are levels. The circular
factors (bg_hue and bg_angle, `Factor.circular`) use k / n instead: 0 and 1 are the same hue and the
same angle, and k / (n - 1) would spend two levels on one image. `DiscreteFaces` is the factor process
(`vaebench.data.factors.FactorSource`) of that mode.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from vaebench.data.spec import SyntheticDataSpec
from vaebench.data.splits import Split, split_index


class Factor(NamedTuple):
    """One generative factor: its name, the physical range [low, high] that [0, 1] maps to, its meaning."""

    name: str
    low: float
    high: float
    meaning: str
    circular: bool = False  # low and high are the same physical value (a hue, an angle)


# Lengths are in units of half the image side (the image spans [-1, 1] on both axes, y pointing down);
# face-part sizes are relative to the face's half-width so that they scale with the face.
FACTORS: tuple[Factor, ...] = (
    Factor("bg_hue", 0.0, 1.0, "hue of the background (HSV hue, a full turn)", circular=True),
    Factor(
        "bg_angle",
        0.0,
        2 * math.pi,
        "direction of the background's light-to-dark gradient (radians)",
        circular=True,
    ),
    Factor("face_x", -0.2, 0.2, "horizontal position of the face centre (half image sides)"),
    Factor("face_y", -0.15, 0.15, "vertical position of the face centre (half image sides, down is +)"),
    Factor("face_size", 0.32, 0.5, "half-width of the face ellipse (half image sides)"),
    Factor("face_aspect", 1.05, 1.35, "height / width of the face ellipse"),
    Factor("skin_tone", 0.0, 1.0, "face colour, from light (0) to dark (1) skin"),
    Factor("eye_size", 0.09, 0.16, "eye radius (face half-widths)"),
    Factor("eye_spacing", 0.3, 0.5, "horizontal offset of each eye from the face centre (face half-widths)"),
    Factor("mouth_width", 0.25, 0.55, "half-width of the mouth (face half-widths)"),
    Factor("smile", -1.0, 1.0, "mouth curvature: -1 frown, 0 straight, +1 smile"),
)
FACTOR_NAMES: tuple[str, ...] = tuple(f.name for f in FACTORS)
NUM_FACTORS = len(FACTORS)

_LIGHT_SKIN = (0.96, 0.80, 0.69)
_DARK_SKIN = (0.38, 0.24, 0.16)
_SCLERA = (0.97, 0.97, 0.95)
_PUPIL = (0.08, 0.06, 0.05)
_LIPS = (0.55, 0.12, 0.15)
_CHUNK = 512  # images rendered at once: small enough to stay in cache, large enough to vectorise


def sample_factors(n: int, generator: torch.Generator) -> Tensor:
    """(n, NUM_FACTORS) float32 factors, i.i.d. uniform in [0, 1]."""
    return torch.rand(n, NUM_FACTORS, generator=generator)


def factor_grid(levels: int) -> Tensor:
    """(NUM_FACTORS, levels) float32: the [0, 1] value of each level of each factor in discrete mode.

    Row j is k / (levels - 1) for an ordinary factor (both ends of its range are levels) and k / levels
    for a circular one (bg_hue, bg_angle), whose 0 and 1 are the same image: evenly spaced around the
    circle, no level twice.

    >>> factor_grid(4)[0].tolist(), factor_grid(3)[2].tolist()  # bg_hue (circular), face_x
    ([0.0, 0.25, 0.5, 0.75], [0.0, 0.5, 1.0])
    """
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    k = torch.arange(levels, dtype=torch.float32)
    return torch.stack([k / levels if f.circular else k / (levels - 1) for f in FACTORS])


def sample_codes(n: int, levels: int, generator: torch.Generator) -> Tensor:
    """(n, NUM_FACTORS) int64 codes, each factor uniform over its `levels` values, independently."""
    return torch.randint(levels, (n, NUM_FACTORS), generator=generator)


def codes_to_factors(codes: Tensor, levels: int) -> Tensor:
    """(n, NUM_FACTORS) int64 codes in [0, levels) -> their [0, 1] factor values on `factor_grid`."""
    if codes.ndim != 2 or codes.shape[1] != NUM_FACTORS:
        raise ValueError(f"codes must have shape (N, {NUM_FACTORS}), got {tuple(codes.shape)}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= levels):
        raise ValueError(f"codes must lie in [0, {levels}), got [{int(codes.min())}, {int(codes.max())}]")
    return factor_grid(levels).gather(1, codes.long().T).T  # (N, NUM_FACTORS)


def physical_factors(factors: Tensor) -> Tensor:
    """Map [0, 1] factors (..., NUM_FACTORS) linearly to the physical ranges of `FACTORS`."""
    low = torch.tensor([f.low for f in FACTORS], dtype=factors.dtype)
    high = torch.tensor([f.high for f in FACTORS], dtype=factors.dtype)
    return low + factors * (high - low)


def hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """HSV in [0, 1] (any equal shapes, hue wraps around) to RGB in [0, 1], with a trailing axis of 3."""
    n = torch.tensor([5.0, 3.0, 1.0])
    k = (n + h[..., None] * 6) % 6
    ramp = torch.minimum(k, 4 - k).clamp(0, 1)
    return v[..., None] * (1 - s[..., None] * ramp)


def render(factors: Tensor, image_size: int = 64) -> Tensor:
    """Draw the images of a batch of factors.

    Args:
        factors: (N, NUM_FACTORS) values in [0, 1] (see `FACTORS` for their meaning).
        image_size: side of the square images, in pixels.

    Returns:
        (N, 3, image_size, image_size) uint8 images.
    """
    if factors.ndim != 2 or factors.shape[1] != NUM_FACTORS:
        raise ValueError(f"factors must have shape (N, {NUM_FACTORS}), got {tuple(factors.shape)}")
    chunks = [_render_float(c.float(), image_size) for c in factors.split(_CHUNK)]
    images = torch.cat(chunks) if chunks else torch.empty(0, 3, image_size, image_size)
    return (images * 255).round_().clamp_(0, 255).to(torch.uint8)


def _render_float(factors: Tensor, size: int) -> Tensor:
    """(N, NUM_FACTORS) in [0, 1] -> (N, 3, size, size) float RGB in [0, 1]."""
    columns = physical_factors(factors).unbind(1)
    p = {f.name: col.view(-1, 1, 1) for f, col in zip(FACTORS, columns, strict=True)}  # each (N, 1, 1)
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1  # pixel centres in (-1, 1)
    y, x = centres.view(1, size, 1), centres.view(1, 1, size)  # (1, H, 1), (1, 1, W)
    pixel = 2 / size  # one pixel, in half image sides

    def coverage(signed_distance: Tensor) -> Tensor:
        """Soft inside-ness of a shape from a signed distance (> 0 inside), with a ~1 pixel edge."""
        return signed_distance.mul_(2.5 / pixel).sigmoid_()

    def paint(canvas: Tensor, alpha: Tensor, colour: Tensor) -> Tensor:
        """Alpha-blend `colour` (N, 3) or (3,) over `canvas` (N, 3, H, W) where alpha (N, H, W) is 1."""
        return canvas.lerp_(colour.view(-1, 3, 1, 1).expand_as(canvas), alpha.unsqueeze(1))

    # Background: a two-colour linear gradient along bg_angle.
    hue = p["bg_hue"].flatten()
    light = hsv_to_rgb(hue, torch.full_like(hue, 0.45), torch.full_like(hue, 0.95))  # (N, 3)
    dark = hsv_to_rgb(hue + 0.12, torch.full_like(hue, 0.7), torch.full_like(hue, 0.45))
    t = 0.5 + 0.35 * (x * torch.cos(p["bg_angle"]) + y * torch.sin(p["bg_angle"]))  # (N, H, W) in [0, 1]
    canvas = light.view(-1, 3, 1, 1).expand(-1, -1, size, size).clone()  # (N, 3, H, W)
    canvas = paint(canvas, t, dark)

    # Face: an upright ellipse; the signed distance is approximated by (1 - normalised radius) * radius.
    a = p["face_size"]
    b = a * p["face_aspect"]
    cx, cy = p["face_x"], p["face_y"]
    radius = (((x - cx) / a) ** 2 + ((y - cy) / b) ** 2).sqrt_()  # (N, H, W)
    tone = p["skin_tone"].view(-1, 1)
    skin = torch.tensor(_LIGHT_SKIN) + tone * (torch.tensor(_DARK_SKIN) - torch.tensor(_LIGHT_SKIN))
    canvas = paint(canvas, coverage(radius.neg_().add_(1).mul_(torch.sqrt(a * b))), skin)

    # Eyes: a white disc with a dark pupil on each side, a fifth of the face height above its centre.
    # The face is symmetric, so |x - cx| gives the distance to the nearer eye for both at once.
    eye_r = p["eye_size"] * a
    dist = (((x - cx).abs() - p["eye_spacing"] * a) ** 2 + (y - (cy - 0.22 * b)) ** 2).sqrt_()
    canvas = paint(canvas, coverage(eye_r - dist), torch.tensor(_SCLERA))
    canvas = paint(canvas, coverage(dist.neg_().add_(0.5 * eye_r)), torch.tensor(_PUPIL))

    # Mouth: a thick parabolic arc; smile > 0 lifts the corners (y points down).
    half_width = p["mouth_width"] * a
    du = x - cx  # (N, 1, W)
    arc_y = cy + 0.45 * b + p["smile"] * 0.15 * b * (0.5 - (du / half_width) ** 2)  # (N, 1, W)
    across = coverage(half_width - du.abs())  # (N, 1, W)
    mouth = coverage((y - arc_y).abs_().neg_().add_(0.09 * a)).mul_(across)
    canvas = paint(canvas, mouth, torch.tensor(_LIPS))
    return canvas.clamp_(0, 1)


class SyntheticFaces(Dataset[Tensor]):
    """A fixed set of synthetic face images, rendered once at construction (vectorised).

    Items are uint8 tensors (3, image_size, image_size), no labels, like every vaebench dataset.

    Attributes:
        images: (N, 3, H, W) uint8, the whole split.
        factors: (N, NUM_FACTORS) float32 in [0, 1]; column j is factor `FACTOR_NAMES[j]`, mapped
            linearly to the physical range of `FACTORS[j]` (`physical_factors` does the mapping).
            Images are a deterministic function of these factors (`render`), without noise.
        codes: (N, NUM_FACTORS) int64 level of each factor in discrete mode (factor_levels set; the
            factors are then `codes_to_factors(codes, factor_levels)`), None in continuous mode.
    """

    factor_names: tuple[str, ...] = FACTOR_NAMES

    def __init__(
        self, size: int, image_size: int = 64, seed: int = 0, factor_levels: int | None = None
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        generator = torch.Generator().manual_seed(seed)
        self.seed = seed
        self.factor_levels = factor_levels
        self.codes: Tensor | None = None
        if factor_levels is None:
            self.factors: Tensor = sample_factors(size, generator)
        else:
            self.codes = sample_codes(size, factor_levels, generator)
            self.factors = codes_to_factors(self.codes, factor_levels)
        self.images: Tensor = render(self.factors, image_size)

    @classmethod
    def from_spec(cls, spec: SyntheticDataSpec, split: Split) -> SyntheticFaces:
        """The `split` of a synthetic spec: its size from the spec, seeded with spec.seed + split index."""
        size = {"train": spec.train_size, "val": spec.val_size, "test": spec.test_size}[split]
        return cls(
            size, spec.image_size, seed=spec.seed + split_index(split), factor_levels=spec.factor_levels
        )

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


class DiscreteFaces:
    """The factor process of the synthetic faces in discrete mode: a `vaebench.data.factors.FactorSource`.

    Every factor of `FACTORS` has `levels` values (`grid[j]`, its [0, 1] values; `factor_grid`); codes
    are drawn uniformly and independently per factor and rendered at `image_size`, exactly as a split
    of `SyntheticFaces` with factor_levels = levels is (the same codes give the same images).

    Circular factors (bg_hue, bg_angle) need no special encoding for the metrics: disentanglement_lib's
    scores treat every discrete factor as unordered classes (MIG and SAP discretise the latents and
    compare them with the factor's labels; DCI's trees and FactorVAE's majority vote classify the
    levels), so the wrap-around from the last level to the first costs nothing. What a circular factor
    can do is take two latents (a cosine and a sine of it), which MIG and SAP score as split.
    """

    factor_names: tuple[str, ...] = FACTOR_NAMES

    def __init__(self, levels: int, image_size: int = 64) -> None:
        self.levels = levels
        self.image_size = image_size
        self.factor_sizes: tuple[int, ...] = (levels,) * NUM_FACTORS
        self.grid: Tensor = factor_grid(levels)  # (NUM_FACTORS, levels), [0, 1] values

    def sample_codes(self, n: int, generator: torch.Generator) -> Tensor:
        """(n, NUM_FACTORS) int64: each factor uniform over its levels, independently."""
        return sample_codes(n, self.levels, generator)

    def render_codes(self, codes: Tensor) -> Tensor:
        """(n, 3, S, S) uint8 images of the codes (n, NUM_FACTORS) int64."""
        return render(codes_to_factors(codes, self.levels), self.image_size)
