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

Every listed image is checked before anything is decoded (`survey_images`: the JPEG header gives
the size without decoding, the last bytes show whether the file was truncated). A file that is
not an image, is truncated, or (unless data.mixed_sizes says otherwise) is not 178x218 stops
`data prepare` and `run` before the first step, with the files named: PIL's crop would otherwise
pad a smaller image with black and crop a larger one to another part of the face, silently.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from vaebench.core.errors import UserError
from vaebench.data.spec import CelebADataSpec
from vaebench.data.splits import Split, split_index

IMAGE_FOLDER = "img_align_celeba"
PARTITION_TXT = "list_eval_partition.txt"
PARTITION_CSV = "list_eval_partition.csv"
CSV_HEADER = "image_id,partition"
OFFICIAL_SITE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
KAGGLE_DATASET = "jessicali9530/celeba-dataset"
ALIGNED_SIZE = (178, 218)  # (width, height) of every CelebA aligned-and-cropped image, in pixels
JPEG_END = (
    b"\xff\xd9"  # the EOI marker; entropy-coded data never holds it, so a file lacking it was cut short
)
_EXAMPLES = 5  # bad files named in one error message


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
        f"To get the data, run `vaebench data fetch --root {root}` (it downloads, checks and unzips it "
        "there; --source kaggle or --source url --url URL when Google Drive refuses), or by hand either "
        f"download img_align_celeba.zip ('Align&Cropped Images') and "
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
    """Find the image folder and the partition file under `root` (either layout), or raise UserError.

    When neither layout is under root but one is under a subfolder of it (a download unzipped one
    level too deep), the error suggests that subfolder as data.root.
    """
    root = Path(root).expanduser()
    try:
        return _locate(root)
    except UserError as error:
        suggestion = _layout_in_subfolder(root)
        if suggestion is None:
            raise
        raise UserError(
            f"{error} CelebA's layout is in {suggestion}: set data.root = {suggestion}."
        ) from None


def _layout_in_subfolder(root: Path, limit: int = 50) -> Path | None:
    """The first subfolder of root (up to `limit` looked at) that holds a complete layout, if any."""
    try:
        children = sorted(c for c in root.iterdir() if c.is_dir())[:limit]
    except OSError:
        return None
    for child in children:
        try:
            _locate(child)
        except UserError:
            continue
        return child
    return None


def _locate(root: Path) -> CelebALayout:
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
    lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()  # -sig: a BOM is dropped
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


def check_crop(crop: int) -> None:
    """Raise UserError if data.crop exceeds CelebA's aligned size, 178x218 (others are refused or resized)."""
    width, height = ALIGNED_SIZE
    if crop > min(width, height):
        raise UserError(
            f"data.crop = {crop} is larger than the CelebA images ({width}x{height}); "
            f"set data.crop to at most {min(width, height)} (148 is the usual choice)."
        )


def image_problem(path: Path) -> tuple[str | None, tuple[int, int] | None]:
    """(what is wrong with the file or None, its (width, height) or None), from its header and last bytes.

    Cheap: PIL parses the header without decoding pixels, and a JPEG is only read at its end
    (about 30 microseconds per file in the page cache). It catches empty files, non-images and
    truncated JPEGs; a file damaged in the middle is caught by the decoder, which names it too.
    """
    try:
        with Image.open(path) as image:
            size, kind = image.size, image.format
        if kind == "JPEG":
            with open(path, "rb") as handle:
                handle.seek(max(0, os.path.getsize(path) - 32))
                if JPEG_END not in handle.read():
                    return "truncated: the JPEG has no end marker", size
    except UnidentifiedImageError:
        return f"not an image ({os.path.getsize(path)} bytes)", None
    except OSError as error:
        return f"unreadable ({error})", None
    return None, size


@dataclass(frozen=True)
class Survey:
    """What `survey_images` found: every listed image's size, and the files that are not images."""

    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # name -> why

    def off_size(self) -> dict[str, tuple[int, int]]:
        """Readable images that are not 178x218, name -> (width, height)."""
        return {n: wh for n, wh in self.sizes.items() if wh != ALIGNED_SIZE}


_SURVEYS: dict[tuple[str, str], Survey] = {}  # (image folder, fingerprint) -> survey, within one process


def survey_images(image_dir: Path, names: list[str], fingerprint: str) -> Survey:
    """Check every listed image's header (see `image_problem`); remembered per fingerprint in this process.

    The fingerprint (names, sizes in bytes, mtimes) changes whenever a file does, so a file fixed
    or broken after a survey is surveyed again; `run` checks in preflight and again in the trainer
    without reading 200k headers twice.
    """
    key = (str(image_dir), fingerprint)
    if key not in _SURVEYS:
        sizes, broken = {}, {}
        for name in names:
            problem, size = image_problem(image_dir / name)
            if problem is not None:
                broken[name] = problem
            elif size is not None:
                sizes[name] = size
        _SURVEYS[key] = Survey(sizes, broken)
    return _SURVEYS[key]


def _examples(items: dict[str, str]) -> str:
    shown = [f"{n} ({why})" for n, why in list(items.items())[:_EXAMPLES]]
    return ", ".join(shown) + (f" and {len(items) - _EXAMPLES} more" if len(items) > _EXAMPLES else "")


def survey_error(
    image_dir: Path, split: str, total: int, survey: Survey, refuse_sizes: bool
) -> UserError | None:
    """The one-paragraph UserError for a survey's broken (and, when refused, off-size) files, or None."""
    off = {n: f"{w}x{h}" for n, (w, h) in survey.off_size().items()} if refuse_sizes else {}
    if not survey.broken and not off:
        return None
    width, height = ALIGNED_SIZE
    parts = [f"Checked the {total} images of the CelebA {split} split in {image_dir}."]
    if survey.broken:
        parts.append(
            f"{len(survey.broken)} cannot be used: {_examples(survey.broken)}; replace them from the archive "
            "(unzip img_align_celeba.zip again, or download it again if the zip itself is damaged)."
        )
    if off:
        parts.append(
            f"{len(off)} are not CelebA's aligned {width}x{height}: {_examples(off)}; cropping them would "
            "pad them with black or crop another part of the face. Replace them, or set "
            "data.mixed_sizes = resize (scale each to cover 178x218 before the crop) or "
            "data.mixed_sizes = skip (leave them out, listed in the run folder)."
        )
    return UserError(" ".join(parts))


def centre_crop_box(
    width: int, height: int, crop: int, crop_height: int | None = None
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centred crop x crop_height box (default: square), as torchvision."""
    crop_height = crop if crop_height is None else crop_height
    left = round((width - crop) / 2.0)
    top = round((height - crop_height) / 2.0)
    return left, top, left + crop, top + crop_height


def fit_aligned(image: Image.Image) -> Image.Image:
    """Scale `image`, keeping its aspect ratio, to cover 178x218, then centre-crop it to exactly 178x218."""
    width, height = ALIGNED_SIZE
    if image.size == ALIGNED_SIZE:
        return image
    scale = max(width / image.width, height / image.height)
    covered = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(covered, Image.Resampling.BILINEAR)
    return image.crop(centre_crop_box(image.width, image.height, width, height))


def load_image(path: Path, crop: int, image_size: int, fit: bool = False) -> Tensor:
    """Decode one JPEG, centre-crop it to crop x crop and resize it to image_size: (3, S, S) uint8.

    Resizing uses PIL's bilinear filter, which is antialiased (its support widens with the
    downscaling factor), so 148 -> 64 averages pixels instead of aliasing. fit: first bring an
    image of another size to 178x218 (`fit_aligned`). A file that cannot be decoded raises a
    UserError naming it.
    """
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if fit:
                image = fit_aligned(image)
            image = image.crop(centre_crop_box(image.width, image.height, crop))
            if image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)  # (S, S, 3)
    except (OSError, ValueError, SyntaxError) as error:  # PIL's decoders raise all three
        raise UserError(
            f"Cannot decode the CelebA image {path} ({error}); replace it from the archive "
            "(unzip img_align_celeba.zip again) and rerun."
        ) from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()  # (3, S, S)


class CelebAImages(Dataset[Tensor]):
    """One official split of CelebA, decoded from JPEG at each access: uint8 (3, S, S), no labels.

    Construction checks the folder (layout, partition file, every listed image present, the crop
    fits) and, with validate (the default), every image's header (`survey_images`), applying
    data.mixed_sizes; it raises UserError naming the bad files before any training starts.
    validate=False is for comparing a cache's fingerprint cheaply; do not decode from such a dataset.
    """

    def __init__(self, spec: CelebADataSpec, split: Split, validate: bool = True) -> None:
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
        check_crop(spec.crop)
        self.split = split
        self.listed = names  # every image the partition file gives this split
        self.names = names  # the images this dataset yields (listed minus skipped)
        self.skipped: dict[str, tuple[int, int]] = {}
        self.crop = spec.crop
        self.image_size = spec.image_size
        self.mixed_sizes = spec.mixed_sizes
        self.fit = spec.mixed_sizes == "resize"
        self._fingerprint: str | None = None
        if validate:
            self.validate()

    def validate(self) -> None:
        """Survey every listed image; raise UserError for broken ones (and off-size ones under refuse)."""
        survey = survey_images(self.layout.image_dir, self.listed, self.fingerprint())
        error = survey_error(
            self.layout.image_dir, self.split, len(self.listed), survey, self.mixed_sizes == "refuse"
        )
        if error is not None:
            raise error
        if self.mixed_sizes == "skip":
            self.skipped = survey.off_size()
            self.names = [n for n in self.listed if n not in self.skipped]
            if not self.names:
                raise UserError(
                    f"data.mixed_sizes = skip leaves no image of the CelebA {self.split} split in "
                    f"{self.layout.image_dir}: none is {ALIGNED_SIZE[0]}x{ALIGNED_SIZE[1]}."
                )

    def partition_sha256(self) -> str:
        """SHA-256 of the partition file's bytes."""
        return hashlib.sha256(self.layout.partition_file.read_bytes()).hexdigest()

    def fingerprint(self) -> str:
        """SHA-256 of the partition file's hash and each listed image's name, size in bytes and mtime (ns).

        Editing, replacing or touching any image of the split, or the partition file, changes it;
        it costs one stat per image (about 1 s for CelebA's 162,770 train images on a local disk).
        """
        if self._fingerprint is None:
            digest = hashlib.sha256(self.partition_sha256().encode())
            for name in self.listed:
                info = os.stat(self.layout.image_dir / name)
                digest.update(f"{name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Tensor:
        return load_image(self.layout.image_dir / self.names[index], self.crop, self.image_size, self.fit)
