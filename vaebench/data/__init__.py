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

from vaebench.core.errors import UserError
from vaebench.data.cache import (
    CachedImages,
    cache_path,
    cache_problem,
    default_cache_dir,
    prepare_cache,
    read_sidecar,
)
from vaebench.data.celeba import CelebAImages, load_image, locate_celeba, read_partition
from vaebench.data.spec import CelebADataSpec, DataSpec, SyntheticDataSpec
from vaebench.data.splits import SPLITS, Split, split_index
from vaebench.data.synthetic import FACTOR_NAMES, FACTORS, SyntheticFaces, render

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

    CelebA uses the prepared cache when `cache_problem` finds nothing wrong with it (compared with
    the JPEG folder as it is now, when there is one); otherwise it checks every image's header and
    decodes JPEGs, logging one line (warning level) that `vaebench data prepare` would cache them.

    Raises:
        UserError: CelebA is missing or malformed (bad images named) and no usable cache exists.
    """
    split_index(split)
    if isinstance(spec, SyntheticDataSpec):
        return SyntheticFaces.from_spec(spec, split)
    if not isinstance(spec, CelebADataSpec):
        raise TypeError(f"unknown data spec {type(spec).__name__}")
    try:
        jpegs: CelebAImages | None = CelebAImages(spec, split, validate=False)
        folder_error: UserError | None = None
    except UserError as error:  # a complete cache is enough on its own
        jpegs, folder_error = None, error
    problem = cache_problem(spec, split, source=jpegs)
    if problem is None:
        return CachedImages(cache_path(spec, split))
    if jpegs is None:
        assert folder_error is not None
        raise folder_error
    jpegs.validate()  # every header, before the first batch
    if cache_path(spec, split).exists():
        log.warning(
            "Not using the CelebA %s cache: %s; decoding JPEGs instead (slower). "
            "Run `vaebench data prepare` to rebuild it (--force rebuilds even caches that look current).",
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


SKIPPED_FILE = "skipped-images.txt"


def check_data(spec: DataSpec, splits: Iterable[Split] = SPLITS, run_dir: Path | None = None) -> None:
    """Raise UserError before training if a split's data is unavailable (no-op for synthetic data).

    A CelebA split is available when its cache is usable or the JPEG folder passes every check
    (layout, partition file, all listed images present, the crop fits, and every image's header:
    readable, not truncated, 178x218 unless data.mixed_sizes says otherwise). With run_dir and
    data.mixed_sizes = skip, the images left out are listed in <run_dir>/skipped-images.txt, one
    "<split> <file> <width>x<height>" line each.
    """
    if isinstance(spec, SyntheticDataSpec):
        return
    skipped: list[str] = []
    for split in splits:
        try:
            jpegs: CelebAImages | None = CelebAImages(spec, split, validate=False)
        except UserError:
            jpegs = None
        if cache_problem(spec, split, source=jpegs) is None:
            skipped += [
                f"{split} {name} {size}"
                for name, size in read_sidecar(spec, split).get("skipped", {}).items()
            ]
            continue
        if jpegs is None:
            CelebAImages(spec, split, validate=False)  # raises the folder's UserError again
        assert jpegs is not None
        jpegs.validate()  # raises UserError naming the bad files
        skipped += [f"{split} {name} {w}x{h}" for name, (w, h) in jpegs.skipped.items()]
    if run_dir is not None and spec.mixed_sizes == "skip":
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / SKIPPED_FILE).write_text("".join(line + "\n" for line in skipped))
        if skipped:
            log.warning(
                "Skipping %d CelebA images that are not 178x218 (listed in %s)",
                len(skipped),
                run_dir / SKIPPED_FILE,
            )


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
