"""The `data` section: which images a run trains on. A tagged union on `data.kind`.

Images are 8-bit (uint8 on disk and in the data pipeline); the model sees them as floats in [0, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from vaebench.core.sections import Int, Section, tagged_union


class SyntheticDataSpec(Section):
    """Procedurally generated images with known generative factors (runs anywhere, no download)."""

    kind: Literal["synthetic"] = "synthetic"
    train_size: Int = Field(4096, ge=1, description="Images in the train split.")
    val_size: Int = Field(
        256, ge=2, description="Images in the validation split (2 at least: variances over images)."
    )
    test_size: Int = Field(
        256, ge=2, description="Images in the test split (2 at least: variances over images)."
    )
    image_size: Int = Field(64, ge=8, le=1024, description="Side of the square images, in pixels.")
    seed: Int = Field(0, description="Seed of the generator; split i uses seed + i, so splits differ.")
    factor_levels: Int | None = Field(
        None,
        ge=2,
        description="Discrete mode: each factor on a grid of this many values (null: continuous, uniform); "
        "the disentanglement metrics need it.",
    )
    flip: bool = Field(False, description="Random horizontal flips of training images.")
    num_workers: Int = Field(0, ge=0, description="DataLoader worker processes.")


class CelebADataSpec(Section):
    """CelebA from a local folder (torchvision's or the Kaggle mirror's layout)."""

    kind: Literal["celeba"] = "celeba"
    root: Path = Field(
        Path("data"), description="Folder holding `celeba/` (torchvision layout) or the Kaggle mirror."
    )
    crop: Int = Field(
        148, ge=1, description="Centre crop (pixels) of the 178x218 aligned images before resizing."
    )
    image_size: Int = Field(
        64, ge=8, le=1024, description="Side of the square images after resizing, in pixels."
    )
    cache_dir: Path | None = Field(
        None,
        description="Folder of the uint8 cache written by `vaebench data prepare` (default: <root>/cache).",
    )
    flip: bool = Field(False, description="Random horizontal flips of training images.")
    num_workers: Int = Field(
        2, ge=0, description="DataLoader worker processes (JPEG decoding without a cache)."
    )
    mixed_sizes: Literal["refuse", "resize", "skip"] = Field(
        "refuse",
        description=(
            "What to do with images that are not CelebA's aligned 178x218: refuse (stop before preparing "
            "or training and list them), resize (scale each, keeping its aspect ratio, to cover 178x218 "
            "and centre-crop it to 178x218 before data.crop), or skip (leave them out; the list is "
            "written to skipped-images.txt in the run folder and recorded in the cache's sidecar)."
        ),
    )


DATA_KINDS: tuple[str, list[type[Section]]] = ("synthetic", [SyntheticDataSpec, CelebADataSpec])
"""(default kind, the section of each kind): `data` without `kind` is synthetic."""

DataSpec = tagged_union(*DATA_KINDS)
