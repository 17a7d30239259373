"""The JPEG path against the prepared uint8 cache: images/s of random batches of 32.

    python benchmarks/data.py                        # 2,000 generated CelebA-size JPEGs
    python benchmarks/data.py --images 500 --json data.json

On a folder of generated 178 x 218 JPEGs in CelebA's layout (benchmarks/jpeg_folder.py), each way of
getting a random batch of 32 uint8 (3, 64, 64) images that vaebench has, timed for --seconds each:

- jpeg:                  `CelebAImages[i]` per image (decode, centre crop 148, resize to 64), one process:
                         what training reads without a cache, per DataLoader worker
- jpeg, N workers:       the same behind a DataLoader with N worker processes (the trainer's JPEG path)
- cache, per item:       `CachedImages[i]` per image from the memory map (a DataLoader over the cache)
- cache, batch gather:   one fancy index of the memory map per batch (DeviceBatches' host path)
- resident:              index_select from the split held in memory (DeviceBatches' device path, on the CPU)

and the one-off cost of `vaebench data prepare` (prepare_cache). Files are freshly written, so they are
in the page cache: this measures decoding and copying, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jpeg_folder import make_celeba_folder
from machine import describe

from vaebench.data import CachedImages, CelebAImages, prepare_cache
from vaebench.data.batches import batch_indices
from vaebench.data.spec import CelebADataSpec

BATCH = 32
console = Console(width=150)


def rate(get_batch: Callable[[Tensor], Tensor], indices: list[Tensor], seconds: float) -> dict[str, float]:
    """Images/s of get_batch over the index batches, cycled until `seconds` have passed (at least 3)."""
    get_batch(indices[0])  # first-call costs (imports, page faults) are not what we measure
    start, done = time.perf_counter(), 0
    while done < 3 or time.perf_counter() - start < seconds:
        batch = get_batch(indices[done % len(indices)])
        assert batch.shape[0] == BATCH and batch.dtype == torch.uint8
        done += 1
    elapsed = time.perf_counter() - start
    return {"images_per_s": done * BATCH / elapsed, "batches": done, "us_per_batch": 1e6 * elapsed / done}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="generated JPEGs (all in the train split)")
    parser.add_argument("--seconds", type=float, default=5.0, help="timing window of each method")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers")
    parser.add_argument("--json", type=Path, default=Path("data.json"), help="where results go")
    args = parser.parse_args(argv)

    result: dict[str, Any] = {
        "machine": describe(torch.device("cpu")),
        "settings": {**vars(args), "json": str(args.json)},
    }
    with tempfile.TemporaryDirectory(prefix="vaebench-data-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        make_celeba_folder(root, train=args.images)
        result["generate_s"] = time.perf_counter() - start
        spec = CelebADataSpec(root=root, num_workers=args.workers)
        jpegs = CelebAImages(spec, "train")
        start = time.perf_counter()
        cache = CachedImages(prepare_cache(spec, splits=("train",), progress=False)["train"])
        prepare_s = time.perf_counter() - start
        result["prepare"] = {
            "seconds": prepare_s,
            "images_per_s": args.images / prepare_s,
            "workers": args.workers,
        }
        assert torch.equal(cache[7], jpegs[7])  # the cache holds exactly what the JPEG path decodes

        # Random batches as the trainer draws them: an epoch's permutation of the split, 32 at a time.
        indices = [idx for idx, _ in zip(batch_indices(args.images, BATCH, 0, 0), range(4096), strict=False)]
        resident = torch.from_numpy(np.array(cache.array))
        loader = DataLoader(jpegs, batch_size=BATCH, shuffle=True, num_workers=args.workers, drop_last=True,
                            persistent_workers=True)  # fmt: skip
        stream = iter(())

        def from_loader(_: Tensor) -> Tensor:
            nonlocal stream
            batch = next(stream, None)
            if batch is None:
                stream = iter(loader)
                batch = next(stream)
            return batch

        methods: dict[str, Callable[[Tensor], Tensor]] = {
            "jpeg": lambda idx: torch.stack([jpegs[int(i)] for i in idx]),
            f"jpeg, {args.workers} workers": from_loader,
            "cache, per item": lambda idx: torch.stack([cache[int(i)] for i in idx]),
            "cache, batch gather": lambda idx: torch.from_numpy(cache.array[idx.numpy()]),
            "resident": lambda idx: resident.index_select(0, idx),
        }
        result["methods"] = {}
        for name, get_batch in methods.items():
            result["methods"][name] = rate(get_batch, indices, args.seconds)
            console.print(name, result["methods"][name])
    base = result["methods"]["jpeg"]["images_per_s"]
    for measured in result["methods"].values():
        measured["ratio_vs_jpeg"] = measured["images_per_s"] / base
    args.json.write_text(json.dumps(result, indent=2) + "\n")

    cpu = result["machine"]["cpu"]
    table = Table(title=f"Random batches of {BATCH} at 64x64 from {args.images:,} CelebA-size JPEGs ({cpu})")
    for column in ("method", "images/s", "us per batch", "x jpeg"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, m in result["methods"].items():
        table.add_row(
            name, f"{m['images_per_s']:,.0f}", f"{m['us_per_batch']:,.1f}", f"{m['ratio_vs_jpeg']:,.1f}"
        )
    console.print(table)
    prepare = result["prepare"]["images_per_s"]
    console.print(
        f"vaebench data prepare: {prepare:,.0f} images/s with {args.workers} workers "
        f"(CelebA's 202,599 images: {202_599 / prepare / 60:,.1f} min, once)"
    )
    console.print(f"results: {args.json}")


if __name__ == "__main__":
    main()
