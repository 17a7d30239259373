"""CelebA (aligned and cropped, 178x218 JPEGs) from a local folder, with the official splits.

We do not use torchvision's `CelebA` class: it insists on checking md5 sums of files that
the Kaggle mirror lays out differently. Two layouts are recognised, under `data.root`:

- torchvision's: <root>/celeba/img_align_celeba/*.jpg and <root>/celeba/list_eval_partition.txt
  (lines "000001.jpg 0"; 0 = train, 1 = valid, 2 = test);
- the Kaggle mirror's (jessicali9530/celeba-dataset): <root>/img_align_celeba/img_align_celeba/*.jpg
  and <root>/list_eval_partition.csv (header "image_id,partition").

`data.root` may also point at the `celeba` folder itself (or the Kaggle folder sit in
<root>/celeba or <root>/celeba-dataset). Anything missing or malformed raises a `UserError`
that says where we looked, what we expected, what we found and how to get the data.

Each image is centre-cropped to crop x crop pixels (148 by default, the usual choice for
64x64 CelebA VAEs) and resized with PIL's antialiased bilinear filter to image_size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from vaebench.data.splits import Split, split_index
from vaebench.errors import UserError
from vaebench.spec import CelebADataSpec

IMAGE_FOLDER = "img_align_celeba"
PARTITION_TXT = "list_eval_partition.txt"
PARTITION_CSV = "list_eval_partition.csv"
CSV_HEADER = "image_id,partition"
OFFICIAL_SITE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
KAGGLE_DATASET = "jessicali9530/celeba-dataset"


@dataclass(frozen=True)
class CelebALayout:
    """Where the images and the partition file of a CelebA copy are."""

    name: Literal["torchvision", "kaggle"]
    image_dir: Path
    partition_file: Path


def celeba_error(root: Path, problem: str, looked_in: Path | None = None) -> UserError:
    """One-paragraph UserError: what is wrong under `root`, the layouts expected, what is there, the fix."""
    looked_in = root if looked_in is None else looked_in
    return UserError(
        f"CelebA is not usable under data.root = {root}: {problem}. "
        f"Found in {looked_in}: {_describe_entries(looked_in)}. "
        "Expected one of two layouts: torchvision's, "
        f"{root / 'celeba' / IMAGE_FOLDER}/*.jpg with {root / 'celeba' / PARTITION_TXT} "
        "(data.root may also point at that celeba folder), or the Kaggle mirror's, "
        f"{root / IMAGE_FOLDER / IMAGE_FOLDER}/*.jpg with {root / PARTITION_CSV}. "
        f"To get the data, either download img_align_celeba.zip ('Align&Cropped Images') and "
        f"Eval/{PARTITION_TXT} from the official CelebA site ({OFFICIAL_SITE}) and unzip them into "
        f"{root / 'celeba'}, or download the Kaggle dataset {KAGGLE_DATASET} "
        f"(`kaggle datasets download -d {KAGGLE_DATASET}`) and unzip it into {root}; "
        "or set data.root to the folder that already holds CelebA."
    )


def _describe_entries(folder: Path, limit: int = 12) -> str:
    """The first entries of a folder, folders marked with '/', for error messages."""
    if not folder.exists():
        return "nothing, the folder does not exist"
    if not folder.is_dir():
        return "a file, not a folder"
    entries = sorted(folder.iterdir())
    if not entries:
        return "nothing, the folder is empty"
    names = [e.name + ("/" if e.is_dir() else "") for e in entries[:limit]]
    more = f" and {len(entries) - limit} more" if len(entries) > limit else ""
    return ", ".join(names) + more


def locate_celeba(root: Path) -> CelebALayout:
    """Find the image folder and the partition file under `root` (either layout), or raise UserError."""
    root = Path(root).expanduser()
    candidates = [root, root / "celeba", root / "celeba-dataset"]
    partial: tuple[Path, str] | None = None
    for base in candidates:
        image_dir = base / IMAGE_FOLDER
        if (image_dir / IMAGE_FOLDER).is_dir():  # the Kaggle archive nests the folder in itself
            image_dir = image_dir / IMAGE_FOLDER
        partition = next((base / n for n in (PARTITION_TXT, PARTITION_CSV) if (base / n).is_file()), None)
        has_images = image_dir.is_dir()
        if has_images and partition is not None:
            name: Literal["torchvision", "kaggle"] = "kaggle" if partition.suffix == ".csv" else "torchvision"
            return CelebALayout(name, image_dir, partition)
        if partial is None and has_images:
            partial = (base, f"found the image folder {image_dir} but neither partition file in {base}")
        elif partial is None and partition is not None:
            partial = (base, f"found {partition} but no image folder {base / IMAGE_FOLDER}")
    if partial is not None:
        raise celeba_error(root, partial[1], looked_in=partial[0])
    raise celeba_error(root, "neither layout is there")


def read_partition(root: Path, layout: CelebALayout) -> dict[Split, list[str]]:
    """Image file names of each official split, in file order, from either partition format."""
    splits: dict[Split, list[str]] = {"train": [], "val": [], "test": []}
    by_code: dict[str, Split] = {"0": "train", "1": "val", "2": "test"}
    path = layout.partition_file
    csv = path.suffix == ".csv"
    expected = f'"000001.jpg,0" after the header "{CSV_HEADER}"' if csv else '"000001.jpg 0"'
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if csv:
        if not lines or lines[0].strip().lower() != CSV_HEADER:
            found = repr(lines[0][:80]) if lines else "an empty file"
            raise celeba_error(
                root, f"{path} should start with the header {CSV_HEADER!r} but has {found}", path.parent
            )
        lines = lines[1:]
    for number, line in enumerate(lines, start=2 if csv else 1):
        if not line.strip():
            continue
        fields = line.split(",") if csv else line.split()
        fields = [f.strip() for f in fields]
        if len(fields) != 2 or fields[1] not in by_code or not fields[0] or "/" in fields[0]:
            raise celeba_error(
                root,
                f"line {number} of {path} is {line[:80]!r}; every line should look like {expected}, "
                "with 0 = train, 1 = valid, 2 = test (a truncated or edited file? download it again)",
                path.parent,
            )
        splits[by_code[fields[1]]].append(fields[0])
    if not any(splits.values()):
        raise celeba_error(root, f"{path} lists no images", path.parent)
    return splits


def check_images_exist(root: Path, layout: CelebALayout, names: list[str]) -> None:
    """Raise UserError unless every listed image is in the image folder (one folder listing, no decoding)."""
    present = set(os.listdir(layout.image_dir))
    missing = [n for n in names if n not in present]
    if missing:
        examples = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise celeba_error(
            root,
            f"{layout.partition_file.name} lists {len(missing)} image(s) that are not in {layout.image_dir} "
            f"({examples}); the download or unzip was probably interrupted, extract the archive again",
            layout.image_dir,
        )


def check_crop(root: Path, layout: CelebALayout, first_image: str, crop: int) -> None:
    """Raise UserError if data.crop exceeds the images' size (read from one JPEG header, not decoded)."""
    path = layout.image_dir / first_image
    try:
        with Image.open(path) as image:
            width, height = image.size
    except OSError as error:
        raise celeba_error(root, f"{path} is not a readable image ({error})", layout.image_dir) from error
    if crop > min(width, height):
        raise UserError(
            f"data.crop = {crop} is larger than the CelebA images ({width}x{height} in {layout.image_dir}); "
            f"set data.crop to at most {min(width, height)} (148 is the usual choice)."
        )


def centre_crop_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centred crop x crop square, offsets rounded as torchvision does."""
    left = round((width - crop) / 2.0)
    top = round((height - crop) / 2.0)
    return left, top, left + crop, top + crop


def load_image(path: Path, crop: int, image_size: int) -> Tensor:
    """Decode one JPEG, centre-crop it to crop x crop and resize it to image_size: (3, S, S) uint8.

    Resizing uses PIL's bilinear filter, which is antialiased (its support widens with the
    downscaling factor), so 148 -> 64 averages pixels instead of aliasing.
    """
    with Image.open(path) as image:
        image = image.convert("RGB")
        image = image.crop(centre_crop_box(image.width, image.height, crop))
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)  # (S, S, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()  # (3, S, S)


class CelebAImages(Dataset[Tensor]):
    """One official split of CelebA, decoded from JPEG at each access: uint8 (3, S, S), no labels.

    Construction validates the folder (layout, partition file, every listed image present,
    the crop fits) and raises UserError before any training starts if something is wrong.
    """

    def __init__(self, spec: CelebADataSpec, split: Split) -> None:
        split_index(split)  # rejects unknown split names
        self.root = Path(spec.root).expanduser()
        self.layout = locate_celeba(self.root)
        names = read_partition(self.root, self.layout)[split]
        if not names:
            raise celeba_error(
                self.root,
                f"{self.layout.partition_file} lists no image of the {split} split",
                self.layout.partition_file.parent,
            )
        check_images_exist(self.root, self.layout, names)
        check_crop(self.root, self.layout, names[0], spec.crop)
        self.split = split
        self.names = names
        self.crop = spec.crop
        self.image_size = spec.image_size

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Tensor:
        return load_image(self.layout.image_dir / self.names[index], self.crop, self.image_size)
