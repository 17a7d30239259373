"""A uint8 cache of decoded CelebA images: one memory-mappable .npy array per split.

Why: decoding, cropping and resizing ~200k JPEGs costs minutes of CPU per epoch; reading
12 KiB per 64x64 image from a memory map costs almost nothing. `vaebench data prepare`
decodes each image once (`prepare_cache`) and training reads `CachedImages`.

Files: <cache_dir>/celeba-<split>-crop<crop>-<image_size>px.npy, shape (N, 3, S, S) uint8,
in partition-file order (so item i of the cache is item i of `CelebAImages`), and beside it
a .json sidecar recording the format version, crop, image_size, count, shape and the source
layout and folder. Both are written to temporary files first and moved into place with
os.replace, so an interrupted prepare never leaves a half-written cache under the real name.

Caches made with other settings: the settings are part of the file name, so caches for,
say, 64 px and 32 px coexist and a run only ever opens the one for its own settings. The
sidecar is checked as well (`cache_problem`): a cache whose sidecar disagrees with the spec
or with its array, or whose count differs from the partition file, is NOT used: the data
pipeline falls back to decoding JPEGs and says in one line that `vaebench data prepare`
would rebuild it. We ignore rather than fail because the JPEG path gives identical images,
only slower.

Size: 3 * S * S bytes per image, about 2.0 GB for the 162,770 train images at 64 px.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vaebench.data.celeba import CelebAImages
from vaebench.data.splits import SPLITS, Split, split_index
from vaebench.errors import UserError
from vaebench.spec import CelebADataSpec

CACHE_FORMAT = "vaebench-celeba-cache"
CACHE_VERSION = 1
_BATCH = 256  # images decoded per DataLoader batch while preparing


def default_cache_dir(spec: CelebADataSpec) -> Path:
    """spec.cache_dir, or <root>/cache when it is not set."""
    folder = spec.cache_dir if spec.cache_dir is not None else Path(spec.root) / "cache"
    return Path(folder).expanduser()


def cache_path(spec: CelebADataSpec, split: Split) -> Path:
    """The .npy file of one split's cache for the spec's crop and image_size (the .json sits beside it)."""
    split_index(split)
    return default_cache_dir(spec) / f"celeba-{split}-crop{spec.crop}-{spec.image_size}px.npy"


def sidecar_path(array_path: Path) -> Path:
    """The JSON sidecar describing a cache array."""
    return array_path.with_suffix(".json")


def cache_problem(spec: CelebADataSpec, split: Split, expected_count: int | None = None) -> str | None:
    """Why the split's cache cannot be used for this spec (one line), or None when it can.

    Args:
        expected_count: when given (the partition file's count for the split), a cache with
            another number of images is refused too.
    """
    path = cache_path(spec, split)
    if not path.is_file():
        return f"there is no cache at {path}"
    try:
        meta = json.loads(sidecar_path(path).read_text())
        shape = tuple(np.load(path, mmap_mode="r").shape)
    except (OSError, ValueError) as error:
        return f"the cache {path} or its sidecar {sidecar_path(path).name} is unreadable ({error})"
    if not isinstance(meta, dict):
        meta = {}
    if (meta.get("format"), meta.get("version")) != (CACHE_FORMAT, CACHE_VERSION):
        return f"{sidecar_path(path)} is not a version-{CACHE_VERSION} {CACHE_FORMAT} sidecar"
    wanted = {"split": split, "crop": spec.crop, "image_size": spec.image_size}
    differ = [f"{k}={meta.get(k)!r} (this run wants {v!r})" for k, v in wanted.items() if meta.get(k) != v]
    if differ:
        return f"the cache {path} was made with {', '.join(differ)}"
    count = meta.get("count")
    if shape != (count, 3, spec.image_size, spec.image_size):
        return f"the cache {path} has shape {shape}, but its sidecar records {count} images"
    if expected_count is not None and count != expected_count:
        return f"the cache {path} holds {count} images but the partition file lists {expected_count}"
    return None


class CachedImages(Dataset[Tensor]):
    """One split of a prepared cache, read through a memory map: items are uint8 (3, S, S) tensors.

    The memory map is opened lazily in each process, so that DataLoader workers started by
    spawn do not receive a pickled copy of the whole array.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._array: np.ndarray | None = None
        self._length = int(np.load(self.path, mmap_mode="r").shape[0])

    @property
    def array(self) -> np.ndarray:
        """The whole split as a read-only (N, 3, S, S) uint8 memory map."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Tensor:
        return torch.from_numpy(np.array(self.array[index]))  # a copy: the memory map is read-only


def prepare_cache(
    spec: CelebADataSpec,
    splits: Iterable[Split] = SPLITS,
    progress: bool = True,
    num_workers: int | None = None,
    force: bool = False,
) -> dict[Split, Path]:
    """Decode every image of the given splits once and write each split's uint8 cache.

    Splits whose cache is already usable (`cache_problem` is None) are skipped unless `force`.
    The whole folder is validated before anything is decoded, and free disk space is checked.

    Args:
        spec: the CelebA data spec (root, crop, image_size, cache_dir, num_workers).
        splits: which splits to cache.
        progress: show a rich progress bar (on stderr) per split.
        num_workers: decoding processes (DataLoader workers); default spec.num_workers.
        force: rebuild caches that are already usable.

    Returns:
        The .npy path of each requested split.

    Raises:
        UserError: the CelebA folder is missing or malformed, or the disk is too full.
    """
    splits = tuple(splits)
    datasets = {split: CelebAImages(spec, split) for split in splits}  # validates before any decoding
    paths = {split: cache_path(spec, split) for split in splits}
    todo = [s for s in splits if force or cache_problem(spec, s, expected_count=len(datasets[s])) is not None]
    folder = default_cache_dir(spec)
    folder.mkdir(parents=True, exist_ok=True)
    _check_free_space(folder, sum(len(datasets[s]) for s in todo) * 3 * spec.image_size**2)
    workers = spec.num_workers if num_workers is None else num_workers
    workers = min(workers, os.cpu_count() or 1)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
        for split in splits:
            if split not in todo:
                if progress:
                    bar.console.print(f"{split}: cache already up to date at {paths[split]}")
                continue
            task = bar.add_task(f"CelebA {split} -> {paths[split].name}", total=len(datasets[split]))
            _write_cache(datasets[split], paths[split], workers, lambda n, t=task: bar.advance(t, n))
    return paths


def _write_cache(dataset: CelebAImages, path: Path, workers: int, advance: Any) -> None:
    """Decode `dataset` in order into path (atomically, via temporary files) and write its sidecar."""
    size = dataset.image_size
    array_tmp = path.with_name(path.name + ".partial")
    meta_tmp = path.with_name(path.name + ".json.partial")
    loader = DataLoader(dataset, batch_size=_BATCH, shuffle=False, num_workers=workers)
    try:
        array = open_memmap(array_tmp, mode="w+", dtype=np.uint8, shape=(len(dataset), 3, size, size))
        start = 0
        for batch in loader:  # (B, 3, S, S) uint8, in partition order
            array[start : start + len(batch)] = batch.numpy()
            start += len(batch)
            advance(len(batch))
        array.flush()
        del array
        meta = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "split": dataset.split,
            "count": len(dataset),
            "crop": dataset.crop,
            "image_size": size,
            "shape": [len(dataset), 3, size, size],
            "dtype": "uint8",
            "layout": dataset.layout.name,
            "source": str(dataset.layout.image_dir),
            "partition_file": str(dataset.layout.partition_file),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        meta_tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(array_tmp, path)
        os.replace(meta_tmp, sidecar_path(path))
    finally:
        array_tmp.unlink(missing_ok=True)
        meta_tmp.unlink(missing_ok=True)


def _check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise UserError(
            f"The CelebA cache needs {needed / 1e9:.2f} GB in {folder} but only {free / 1e9:.2f} GB "
            "are free; free some space or set data.cache_dir to a folder on a larger disk."
        )
