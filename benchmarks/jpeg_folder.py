"""A CelebA-like folder of generated JPEGs, for benchmarks that must decode real JPEG files.

CelebA itself cannot be downloaded here, so the benchmarks write synthetic faces (vaebench.data.synthetic)
at CelebA's aligned size, 178 x 218 pixels, with mild pixel noise so that the files have photo-like
detail for the entropy decoder (about the size of CelebA's JPEGs), in torchvision's layout:

    <root>/celeba/img_align_celeba/000001.jpg ...
    <root>/celeba/list_eval_partition.txt        ("000001.jpg 0" lines; 0 = train, 1 = valid, 2 = test)

so that `vaebench.data` reads them exactly as it reads CelebA.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from vaebench.data import SyntheticFaces

WIDTH, HEIGHT = 178, 218  # CelebA's aligned-and-cropped images
NOISE_LEVELS = 6.0  # standard deviation of the added pixel noise, in 8-bit levels
QUALITY = 90


def make_celeba_folder(root: Path, train: int, val: int = 0, test: int = 0, seed: int = 0) -> Path:
    """Write train + val + test generated JPEGs and the partition file under root/celeba; returns root.

    Files are numbered like CelebA's (000001.jpg, ...), train first. Existing files are overwritten.
    """
    folder = Path(root) / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True, exist_ok=True)
    total = train + val + test
    rng = np.random.default_rng(seed)
    lines = []
    for start in range(0, total, 512):
        count = min(512, total - start)
        faces = SyntheticFaces(count, image_size=HEIGHT, seed=seed + start).images  # (n, 3, 218, 218)
        left = (HEIGHT - WIDTH) // 2
        pixels = faces[:, :, :, left : left + WIDTH].permute(0, 2, 3, 1).numpy().astype(np.float32)
        pixels += rng.normal(0.0, NOISE_LEVELS, size=pixels.shape).astype(np.float32)
        pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)  # (n, 218, 178, 3)
        for i, image in enumerate(pixels):
            number = start + i + 1
            name = f"{number:06d}.jpg"
            Image.fromarray(image).save(folder / name, quality=QUALITY)
            split = 0 if number <= train else 1 if number <= train + val else 2
            lines.append(f"{name} {split}")
    (Path(root) / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return Path(root)
