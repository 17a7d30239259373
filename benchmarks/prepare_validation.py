"""What checking every image costs `vaebench data prepare`: seconds per image with validation and without.

    python benchmarks/prepare_validation.py                 # 3,000 generated CelebA-size JPEGs
    python benchmarks/prepare_validation.py --images 500 --repeats 1

On a folder of generated 178 x 218 JPEGs (benchmarks/jpeg_folder.py), three timings, each the median of
--repeats, alternating so that load on a shared machine hits both alike:

- survey:              `survey_images` alone, every header and the JPEG end marker (what `run` adds
                       before the first step when there is no cache);
- prepare:             `prepare_cache(force=True)` as `vaebench data prepare --force` runs it (validation,
                       fingerprint, decoding, writing);
- prepare, no checks:  the same with `CelebAImages.validate` replaced by a no-op (the old behaviour).

Files are freshly written, so they are in the page cache: this measures the CPU cost, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jpeg_folder import make_celeba_folder

from vaebench.data import celeba, prepare_cache
from vaebench.data.spec import CelebADataSpec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3000, help="generated JPEGs (all in the train split)")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each kind; the median is reported")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    validate = celeba.CelebAImages.validate
    times: dict[str, list[float]] = {"survey": [], "prepare": [], "prepare, no checks": []}
    with tempfile.TemporaryDirectory(prefix="vaebench-validation-") as tmp:
        make_celeba_folder(Path(tmp), train=args.images)
        spec = CelebADataSpec(root=Path(tmp), num_workers=args.workers)
        for _ in range(args.repeats):
            celeba._SURVEYS.clear()  # as in a fresh process
            images = celeba.CelebAImages(spec, "train", validate=False)
            start = time.perf_counter()
            celeba.survey_images(images.layout.image_dir, images.listed, images.fingerprint())
            times["survey"].append(time.perf_counter() - start)
            for name, check in (("prepare", validate), ("prepare, no checks", lambda self: None)):
                celeba._SURVEYS.clear()
                celeba.CelebAImages.validate = check  # type: ignore[method-assign]
                try:
                    start = time.perf_counter()
                    prepare_cache(spec, splits=("train",), progress=False, force=True)
                    times[name].append(time.perf_counter() - start)
                finally:
                    celeba.CelebAImages.validate = validate  # type: ignore[method-assign]
    result = {k: 1e3 * statistics.median(v) / args.images for k, v in times.items()}  # ms per image
    extra = result["prepare"] - result["prepare, no checks"]
    for name, ms in result.items():
        print(f"{name:20s} {ms:8.4f} ms/image")
    share = 100 * extra / result["prepare, no checks"]
    print(
        f"validation adds {extra:.4f} ms/image ({share:+.1f}%) to prepare "
        f"with {args.workers} workers, {args.images} images, median of {args.repeats}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    if args.json is not None:
        settings = vars(args) | {"json": str(args.json)}
        args.json.write_text(json.dumps({"ms_per_image": result, "settings": settings}) + "\n")


if __name__ == "__main__":
    main()
