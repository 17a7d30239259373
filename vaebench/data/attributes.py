"""CelebA's 40 binary attributes per image, for the linear probes (eval.probes; `vaebench.evaluation.probes`).

The attribute file sits beside the partition file, in the layout's own format (`vaebench.data.celeba`):

- torchvision's: <root>/celeba/list_attr_celeba.txt: the image count on line 1, the 40 attribute names
  on line 2, then "000001.jpg -1  1  1 -1 ..." (values separated by spaces);
- the Kaggle mirror's: <root>/list_attr_celeba.csv: the header "image_id,5_o_Clock_Shadow,...", then
  "000001.jpg,-1,1,1,-1,...".

Values are 1 (has the attribute) or -1 (has not); we return them as 1 / 0. The file must list exactly
the images of the partition file (both come with every copy of CelebA): anything missing or malformed
raises a one-paragraph `UserError` naming the file, the line and what to do. Only runs with
eval.probes.enabled read it, so a broken attribute file never stops a run that does not probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from vaebench.core.errors import UserError
from vaebench.data.cache import cache_path, read_sidecar
from vaebench.data.celeba import (
    KAGGLE_DATASET,
    OFFICIAL_SITE,
    CelebALayout,
    _describe_entries,
    locate_celeba,
    read_partition,
)
from vaebench.data.spec import CelebADataSpec, DataSpec
from vaebench.data.splits import SPLITS, Split

ATTRIBUTES_TXT = "list_attr_celeba.txt"
ATTRIBUTES_CSV = "list_attr_celeba.csv"
_EXAMPLES = 3  # image names shown in one error message


@dataclass(frozen=True)
class CelebAAttributes:
    """One attribute file: the attribute names and a (N, A) uint8 table of 1 / 0, one row per image."""

    path: Path
    names: tuple[str, ...]  # the attributes, in the file's column order (40 in CelebA)
    images: tuple[str, ...]  # the image of each row, in file order
    table: np.ndarray  # (N, A) uint8: 1 where the image has the attribute

    def of(self, images: list[str]) -> np.ndarray:
        """(n, A) uint8 rows of `images`, in their order (every name must be in the file)."""
        index = {name: i for i, name in enumerate(self.images)}
        return self.table[[index[name] for name in images]]


def attributes_error(path: Path, problem: str) -> UserError:
    """One paragraph: what is wrong with the attribute file, that probes need it, and the three ways out."""
    folder = path.parent
    return UserError(
        f"Cannot read CelebA's attributes from {path}: {problem}. eval.probes.enabled needs them, one "
        "row per image of the partition file: "
        f"{ATTRIBUTES_TXT} (torchvision's layout: the image count, the 40 names, then lines of 40 values "
        f"1 or -1) or {ATTRIBUTES_CSV} (the Kaggle mirror's: the header 'image_id,5_o_Clock_Shadow,...'). "
        f"To fix it, download Anno/{ATTRIBUTES_TXT} from the official CelebA site ({OFFICIAL_SITE}) into "
        f"{folder}, or take {ATTRIBUTES_CSV} from the Kaggle dataset {KAGGLE_DATASET} (the copy the images "
        "and partition file came from); or set eval.probes.enabled = false to evaluate without probes."
    )


def attribute_file(partition_file: Path) -> Path:
    """The attribute file beside a partition file (the layout's own format first), or raise UserError."""
    folder = partition_file.parent
    own, other = (
        (ATTRIBUTES_CSV, ATTRIBUTES_TXT)
        if partition_file.suffix == ".csv"
        else (ATTRIBUTES_TXT, ATTRIBUTES_CSV)
    )
    for name in (own, other):
        if (folder / name).is_file():
            return folder / name
    raise attributes_error(
        folder / own,
        f"there is no {ATTRIBUTES_TXT} or {ATTRIBUTES_CSV} beside {partition_file.name} "
        f"(found in {folder}: {_describe_entries(folder)})",
    )


_READ: dict[tuple[str, int, int], CelebAAttributes] = {}  # (path, size, mtime_ns) -> parsed, per process


def read_attributes(path: Path, partition: dict[Split, list[str]]) -> CelebAAttributes:
    """Parse and check an attribute file (either format) against the partition's images.

    Raises UserError, naming the file and line, when the header is missing, a line has the wrong number
    of values or a value other than 1 / -1, an image is listed twice, or the images differ from the
    partition file's. Parsed once per process while the file is unchanged (a few seconds for CelebA).
    """
    info = path.stat()
    key = (str(path), info.st_size, info.st_mtime_ns)
    if key not in _READ:
        _READ[key] = _parse(path)
    attributes = _READ[key]
    _check_images(attributes, partition)
    return attributes


def _parse(path: Path) -> CelebAAttributes:
    csv = path.suffix == ".csv"
    lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()  # -sig: a BOM is dropped
    count: int | None = None
    if csv:
        header_line = 1
        header = [f.strip() for f in lines[0].split(",")] if lines else []
        if not header or header[0].lower() != "image_id" or len(header) < 2:
            found = repr(lines[0][:80]) if lines else "an empty file"
            raise attributes_error(
                path, f"line 1 should be the header 'image_id,5_o_Clock_Shadow,...' but is {found}"
            )
        names = header[1:]
    else:
        header_line = 2
        first = lines[0].strip() if lines else ""
        if not first.isdigit():
            found = repr(first[:80]) if lines else "an empty file"
            raise attributes_error(path, f"line 1 should be the number of images but is {found}")
        count = int(first)
        names = lines[1].split() if len(lines) > 1 else []
        if not names:
            raise attributes_error(path, "line 2 should list the attribute names but is empty or missing")
    if len(set(names)) != len(names):
        raise attributes_error(path, f"line {header_line} names an attribute twice ({', '.join(names)})")
    images: list[str] = []
    rows: list[list[str]] = []
    numbers: list[int] = []  # the line number of each row
    seen: dict[str, int] = {}
    for number, line in enumerate(lines[header_line:], start=header_line + 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")] if csv else line.split()
        image, values = fields[0], fields[1:]
        if len(values) != len(names):
            raise attributes_error(
                path,
                f"line {number} is {line[:80]!r}: {len(values)} values after the image name, but line "
                f"{header_line} names {len(names)} attributes (a truncated or edited file? download it "
                "again)",
            )
        if image in seen:
            raise attributes_error(path, f"line {number} lists {image} again (first on line {seen[image]})")
        seen[image] = number
        images.append(image)
        rows.append(values)
        numbers.append(number)
    if count is not None and count != len(images):
        raise attributes_error(
            path, f"line 1 announces {count} images but the file lists {len(images)} (a truncated download?)"
        )
    values = np.array(rows, dtype=str).reshape(len(rows), len(names))  # (N, A), checked all at once
    positive = values == "1"
    wrong = ~(positive | (values == "-1"))
    if wrong.any():
        row, column = (int(i[0]) for i in np.nonzero(wrong))
        raise attributes_error(
            path,
            f"line {numbers[row]} gives {names[column]} (value {column + 1} of {images[row]}) as "
            f"{rows[row][column]!r}; every value should be 1 or -1",
        )
    table = positive.astype(np.uint8)
    return CelebAAttributes(path, tuple(names), tuple(images), table)


def _examples(names: list[str]) -> str:
    return ", ".join(names[:_EXAMPLES]) + (", ..." if len(names) > _EXAMPLES else "")


def _check_images(attributes: CelebAAttributes, partition: dict[Split, list[str]]) -> None:
    """Raise UserError unless the attribute file lists exactly the partition's images."""
    listed = [name for split in SPLITS for name in partition[split]]
    have = set(attributes.images)
    missing = [name for name in listed if name not in have]
    extra = sorted(have.difference(listed))
    if not missing and not extra:
        return
    parts = []
    if missing:
        parts.append(
            f"{len(missing)} image(s) of the partition file have no attributes ({_examples(missing)})"
        )
    if extra:
        parts.append(f"{len(extra)} row(s) name images the partition file does not list ({_examples(extra)})")
    raise attributes_error(
        attributes.path,
        f"it lists {len(attributes.images)} images and the partition file {len(listed)}: "
        f"{' and '.join(parts)}; the two files come from different copies of CelebA",
    )


# ----------------------------------------------------------------------------- a split's labels


def _source(spec: CelebADataSpec, split: Split) -> tuple[CelebALayout, set[str]]:
    """The layout the split's images come from, and the images its prepared cache skipped.

    The JPEG folder when it is there; otherwise the partition file recorded by the split's cache
    (a prepared cache is usable without the JPEGs).
    """
    root = Path(spec.root).expanduser()
    meta = read_sidecar(spec, split)
    skipped = set(meta.get("skipped", {}))
    try:
        return locate_celeba(root), skipped
    except UserError:
        recorded = meta.get("partition_file")
        if not recorded or not Path(recorded).is_file():
            raise
        layout = "kaggle" if Path(recorded).suffix == ".csv" else "torchvision"
        return CelebALayout(layout, Path(meta.get("source", "")), Path(recorded)), skipped


def split_image_names(spec: CelebADataSpec, split: Split, dataset: Dataset) -> list[str]:
    """The file name of each item of `dataset` (a CelebA split from `build_dataset`), in item order."""
    names = getattr(dataset, "names", None)
    if isinstance(names, list):  # CelebAImages: the partition's names minus any skipped
        return names
    layout, skipped = _source(spec, split)
    root = Path(spec.root).expanduser()
    names = [n for n in read_partition(root, layout)[split] if n not in skipped]
    held = len(dataset)  # type: ignore[arg-type]
    if len(names) != held:
        raise UserError(
            f"The CelebA {split} cache {cache_path(spec, split)} holds {held} images but "
            f"{layout.partition_file} gives {len(names)} for the split, so its images cannot be matched "
            "with their attributes; run `vaebench data prepare --force` to rebuild the cache."
        )
    return names


def split_attributes(
    spec: CelebADataSpec, split: Split, dataset: Dataset, count: int | None = None
) -> tuple[tuple[str, ...], np.ndarray]:
    """(attribute names, (n, A) uint8 labels) of the first `count` items of `dataset` (all by default)."""
    layout, _ = _source(spec, split)
    root = Path(spec.root).expanduser()
    attributes = read_attributes(attribute_file(layout.partition_file), read_partition(root, layout))
    names = split_image_names(spec, split, dataset)
    return attributes.names, attributes.of(names[:count] if count is not None else names)


def check_attributes(spec: DataSpec) -> None:
    """Raise UserError before training if CelebA's attribute file is missing or malformed (no-op otherwise).

    For runs with eval.probes.enabled, so that a broken file stops them before the first step instead of
    at the evaluation that ends them.
    """
    if not isinstance(spec, CelebADataSpec):
        return
    layout, _ = _source(spec, "train")
    read_attributes(
        attribute_file(layout.partition_file), read_partition(Path(spec.root).expanduser(), layout)
    )
