"""Datasets of uint8 (3, H, W) images, built from a `DataSpec`.

Every dataset yields uint8 tensors of shape (3, image_size, image_size) and no labels; the
trainer turns a batch into floats x = x_uint8.float() / 255 in [0, 1]. Random horizontal
flips (spec.flip) are NOT applied here: the trainer flips whole training batches on the
device, which is cheaper than per-item flips and keeps val/test/cache items deterministic.

- synthetic: `SyntheticFaces`, rendered in memory (no files), with known generative factors.
- celeba: the prepared uint8 cache (`CachedImages`) when it exists and matches the spec,
  else JPEGs decoded on the fly (`CelebAImages`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from vaebench.data.cache import CachedImages, cache_path, cache_problem, default_cache_dir, prepare_cache
from vaebench.data.celeba import CelebAImages, load_image, locate_celeba, read_partition
from vaebench.data.splits import SPLITS, Split, split_index
from vaebench.data.synthetic import FACTOR_NAMES, FACTORS, SyntheticFaces, render
from vaebench.errors import UserError
from vaebench.spec import CelebADataSpec, DataSpec, SyntheticDataSpec

__all__ = [
    "FACTORS",
    "FACTOR_NAMES",
    "SPLITS",
    "CachedImages",
    "CelebAImages",
    "Split",
    "SyntheticFaces",
    "build_dataset",
    "cache_path",
    "cache_problem",
    "check_data",
    "load_image",
    "locate_celeba",
    "num_dims",
    "prepare",
    "prepare_cache",
    "read_partition",
    "render",
    "split_index",
]

log = logging.getLogger(__name__)


def num_dims(spec: DataSpec) -> int:
    """D = 3 * image_size**2, the number of dimensions bits/dim divides by."""
    return 3 * spec.image_size**2


def build_dataset(spec: DataSpec, split: Split) -> Dataset[Tensor]:
    """The `split` of the data a spec describes; items are uint8 (3, S, S) tensors, unflipped.

    CelebA uses the prepared cache when `cache_problem` finds nothing wrong with it; otherwise
    it decodes JPEGs and logs one line (warning level) suggesting `vaebench data prepare`.

    Raises:
        UserError: CelebA is missing or malformed and no usable cache exists.
    """
    split_index(split)
    if isinstance(spec, SyntheticDataSpec):
        return SyntheticFaces.from_spec(spec, split)
    if not isinstance(spec, CelebADataSpec):
        raise TypeError(f"unknown data spec {type(spec).__name__}")
    try:
        jpegs: CelebAImages | None = CelebAImages(spec, split)
        folder_error: UserError | None = None
    except UserError as error:  # a complete cache is enough on its own
        jpegs, folder_error = None, error
    problem = cache_problem(spec, split, expected_count=None if jpegs is None else len(jpegs))
    if problem is None:
        return CachedImages(cache_path(spec, split))
    if jpegs is None:
        assert folder_error is not None
        raise folder_error
    if cache_path(spec, split).exists():
        log.warning(
            "Not using the CelebA %s cache: %s; decoding JPEGs instead (slower). "
            "Run `vaebench data prepare` to rebuild it.",
            split,
            problem,
        )
    else:
        log.warning(
            "Decoding CelebA %s JPEGs on the fly; `vaebench data prepare` would make training faster "
            "by caching them as uint8 arrays in %s.",
            split,
            default_cache_dir(spec),
        )
    return jpegs


def check_data(spec: DataSpec, splits: Iterable[Split] = SPLITS) -> None:
    """Raise UserError before training if a split's data is unavailable (no-op for synthetic data).

    A CelebA split is available when its cache is usable or the JPEG folder passes every check
    (layout, partition file, all listed images present, crop not larger than the images).
    """
    if isinstance(spec, SyntheticDataSpec):
        return
    for split in splits:
        if cache_problem(spec, split) is not None:
            CelebAImages(spec, split)  # raises UserError naming what is missing


def prepare(
    spec: DataSpec,
    *,
    splits: Iterable[Split] = SPLITS,
    progress: bool = True,
    num_workers: int | None = None,
    force: bool = False,
) -> dict[Split, Path]:
    """What `vaebench data prepare` does: cache CelebA splits as uint8 arrays (see `prepare_cache`).

    Returns the .npy path of each split; an empty dict for synthetic data, which has nothing to
    prepare (it is rendered in memory when a run starts).
    """
    if isinstance(spec, SyntheticDataSpec):
        return {}
    return prepare_cache(spec, splits=splits, progress=progress, num_workers=num_workers, force=force)
