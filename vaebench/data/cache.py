"""A uint8 cache of decoded CelebA images: one memory-mappable .npy array per split.

Why: decoding, cropping and resizing ~200k JPEGs costs minutes of CPU per epoch; reading
12 KiB per 64x64 image from a memory map costs almost nothing. `vaebench data prepare`
decodes each image once (`prepare_cache`) and training reads `CachedImages`.

Files: <cache_dir>/celeba-<split>-crop<crop>-<image_size>px-<root>.npy, shape (N, 3, S, S) uint8,
in partition-file order (so item i of the cache is item i of `CelebAImages`), where <root> is 8 hex
digits of the resolved data.root: two CelebA copies sharing one data.cache_dir get caches of their
own. Beside it, a .json sidecar records what the cache holds: the format version, crop, image_size,
data.mixed_sizes, count, shape, the source folder, the partition file's SHA-256, and a fingerprint of
the split's file list (each image's name, size in bytes and mtime; `CelebAImages.fingerprint`), plus
the images skipped under data.mixed_sizes = skip.

Staleness: `cache_problem` compares all of that with the spec and, when the JPEG folder is there,
with the folder as it is now. A cache that differs (an image fixed or replaced since, another
partition file, other settings) is NOT used: the data pipeline decodes JPEGs instead (the same
pixels, only slower) and says in one line that `vaebench data prepare` rebuilds it. Without the
JPEG folder a cache whose sidecar matches the spec is used on its own.

Writing: `prepare_cache` takes a lock per cache file (fcntl.flock on .<name>.lock), checks again
whether another process has just written it, decodes into a temporary file with a unique name and
moves it into place with os.replace; a file that fails to decode is named, the temporary files
are removed, and no cache appears under the real name. Two concurrent `data prepare` therefore
give one correct cache: the second waits and finds it up to date.

Size: 3 * S * S bytes per image, about 2.0 GB for the 162,770 train images at 64 px.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
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

from vaebench.core.console import make_console
from vaebench.core.errors import UserError
from vaebench.data.celeba import CelebAImages, load_image
from vaebench.data.spec import CelebADataSpec
from vaebench.data.splits import SPLITS, Split, split_index

CACHE_FORMAT = "vaebench-celeba-cache"
CACHE_VERSION = 2  # 2: file names and sidecars key the cache by its source (root, partition, file list)
_BATCH = 256  # images decoded per DataLoader batch while preparing


def default_cache_dir(spec: CelebADataSpec) -> Path:
    """spec.cache_dir, or <root>/cache when it is not set."""
    folder = spec.cache_dir if spec.cache_dir is not None else Path(spec.root) / "cache"
    return Path(folder).expanduser()


def cache_path(spec: CelebADataSpec, split: Split) -> Path:
    """The .npy file of one split's cache for the spec's root, crop and image_size (.json beside it)."""
    split_index(split)
    root = hashlib.sha256(str(Path(spec.root).expanduser().resolve()).encode()).hexdigest()[:8]
    return default_cache_dir(spec) / f"celeba-{split}-crop{spec.crop}-{spec.image_size}px-{root}.npy"


def sidecar_path(array_path: Path) -> Path:
    """The JSON sidecar describing a cache array."""
    return array_path.with_suffix(".json")


def read_sidecar(spec: CelebADataSpec, split: Split) -> dict[str, Any]:
    """The split's sidecar as a dict ({} when missing or unreadable)."""
    try:
        meta = json.loads(sidecar_path(cache_path(spec, split)).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def cache_problem(spec: CelebADataSpec, split: Split, source: CelebAImages | None = None) -> str | None:
    """Why the split's cache cannot be used for this spec (one line), or None when it can.

    Args:
        source: the split's JPEG folder as it is now (validation not needed); when given, a cache
            made from another folder, another partition file or other files is refused too.
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
    wanted = {
        "split": split,
        "crop": spec.crop,
        "image_size": spec.image_size,
        "mixed_sizes": spec.mixed_sizes,
    }
    differ = [f"{k}={meta.get(k)!r} (this run wants {v!r})" for k, v in wanted.items() if meta.get(k) != v]
    if differ:
        return f"the cache {path} was made with {', '.join(differ)}"
    count = meta.get("count")
    if shape != (count, 3, spec.image_size, spec.image_size):
        return f"the cache {path} has shape {shape}, but its sidecar records {count} images"
    if source is None:
        return None
    if meta.get("source") != str(source.layout.image_dir):
        return f"the cache {path} was made from {meta.get('source')}, not {source.layout.image_dir}"
    if meta.get("partition_sha256") != source.partition_sha256():
        return f"the cache {path} was made with another {source.layout.partition_file.name}"
    if meta.get("fingerprint") != source.fingerprint():
        return (
            f"images of the {split} split in {source.layout.image_dir} were added, replaced or modified "
            f"since the cache {path} was made"
        )
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

    Splits whose cache is already usable (`cache_problem` is None) are skipped unless `force`; a
    stale one is rebuilt, saying why. Every image's header is checked before anything is decoded
    (`CelebAImages`), the cache folder must be writable and free disk space is checked.

    Args:
        spec: the CelebA data spec (root, crop, image_size, cache_dir, mixed_sizes, num_workers).
        splits: which splits to cache.
        progress: show a rich progress bar (on stderr) per split.
        num_workers: decoding processes (DataLoader workers); default spec.num_workers.
        force: rebuild caches that are already usable.

    Returns:
        The .npy path of each requested split.

    Raises:
        UserError: the CelebA folder is missing or malformed, an image is bad (named), the cache
            folder is not writable, or the disk is too full.
    """
    splits = tuple(splits)
    datasets = {split: CelebAImages(spec, split) for split in splits}  # validates before any decoding
    paths = {split: cache_path(spec, split) for split in splits}
    problems = {s: None if force else cache_problem(spec, s, source=datasets[s]) for s in splits}
    todo = [s for s in splits if force or problems[s] is not None]
    folder = default_cache_dir(spec)
    if todo:
        _make_writable_folder(folder)
        _check_free_space(folder, sum(len(datasets[s]) for s in todo) * 3 * spec.image_size**2)
    workers = spec.num_workers if num_workers is None else num_workers
    workers = min(workers, os.cpu_count() or 1)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    console = make_console(stderr=True)
    with Progress(*columns, console=console, disable=not progress) as bar:
        for split in splits:
            if split not in todo:
                if progress:
                    bar.console.print(f"{split}: cache already up to date at {paths[split]}")
                continue
            with _locked(paths[split], bar.console if progress else None):
                if not force and cache_problem(spec, split, source=datasets[split]) is None:
                    if progress:  # another process wrote it while we waited for the lock
                        bar.console.print(
                            f"{split}: cache written meanwhile by another process at {paths[split]}"
                        )
                    continue
                problem = problems[split]
                if progress and problem is not None and not problem.startswith("there is no cache"):
                    bar.console.print(f"{split}: rebuilding, {problem}")
                skipped = datasets[split].skipped
                if progress and skipped:
                    bar.console.print(
                        f"{split}: leaving out {len(skipped)} image(s) that are not 178x218 "
                        f"(data.mixed_sizes = skip; listed in {sidecar_path(paths[split]).name})"
                    )
                task = bar.add_task(f"CelebA {split} -> {paths[split].name}", total=len(datasets[split]))
                _write_cache(datasets[split], paths[split], workers, lambda n, t=task: bar.advance(t, n))
    return paths


def _make_writable_folder(folder: Path) -> None:
    """Create the cache folder, or say that data.cache_dir must point at a writable one."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}-{secrets.token_hex(4)}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise UserError(
            f"Cannot write the CelebA cache in {folder} ({error.strerror or error}); the data folder is "
            "probably read-only. Set data.cache_dir to a writable folder, e.g. "
            "`vaebench data prepare SPEC data.cache_dir=~/.cache/vaebench` (and the same override, or the "
            "same line in the spec, for `vaebench run`)."
        ) from None


class _locked:
    """An exclusive flock on .<cache>.lock for the duration of a `with` block (Linux and macOS).

    The lock file is hidden and left in place: deleting it while another process waits on it would
    let a third one lock a new file of the same name.
    """

    def __init__(self, path: Path, console: Console | None) -> None:
        self.lock_path = path.with_name(f".{path.name}.lock")
        self.console = console

    def __enter__(self) -> None:
        self.handle = open(self.lock_path, "a+")  # held until __exit__
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if self.console is not None:
                self.console.print(
                    f"waiting for another `vaebench data prepare` writing {self.lock_path.stem}"
                )
            fcntl.flock(self.handle, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


class _Decoded(Dataset[tuple[Tensor, str]]):
    """Items of a CelebAImages as (image, "") or (zeros, the error): decode errors come back as values.

    So that `prepare` can name every file that fails to decode (not only the first, and without
    a DataLoader worker's traceback), and write nothing for them.
    """

    def __init__(self, images: CelebAImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        d = self.images
        try:
            return load_image(d.layout.image_dir / d.names[index], d.crop, d.image_size, d.fit), ""
        except UserError as error:
            return torch.zeros(3, d.image_size, d.image_size, dtype=torch.uint8), str(error)


def _write_cache(dataset: CelebAImages, path: Path, workers: int, advance: Any) -> None:
    """Decode `dataset` in order into path and write its sidecar, via uniquely named temporary files."""
    size = dataset.image_size
    unique = f"{os.getpid()}-{secrets.token_hex(4)}"
    array_tmp = path.with_name(f".{path.name}.{unique}.partial")
    meta_tmp = path.with_name(f".{path.stem}.json.{unique}.partial")
    loader = DataLoader(_Decoded(dataset), batch_size=_BATCH, shuffle=False, num_workers=workers)
    errors: list[str] = []
    try:
        array = open_memmap(array_tmp, mode="w+", dtype=np.uint8, shape=(len(dataset), 3, size, size))
        start = 0
        for batch, batch_errors in loader:  # (B, 3, S, S) uint8, in partition order
            array[start : start + len(batch)] = batch.numpy()
            errors += [e for e in batch_errors if e]
            start += len(batch)
            advance(len(batch))
        array.flush()
        del array
        if errors:
            shown = "; ".join(errors[:3]) + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
            raise UserError(
                f"{len(errors)} CelebA {dataset.split} image(s) failed to decode, so no cache was written: "
                f"{shown}"
            )
        meta = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "split": dataset.split,
            "count": len(dataset),
            "crop": dataset.crop,
            "image_size": size,
            "mixed_sizes": dataset.mixed_sizes,
            "shape": [len(dataset), 3, size, size],
            "dtype": "uint8",
            "layout": dataset.layout.name,
            "root": str(dataset.root.resolve()),
            "source": str(dataset.layout.image_dir),
            "partition_file": str(dataset.layout.partition_file),
            "partition_sha256": dataset.partition_sha256(),
            "fingerprint": dataset.fingerprint(),
            "skipped": {name: f"{w}x{h}" for name, (w, h) in dataset.skipped.items()},
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
