"""`vaebench data fetch`: CelebA's aligned-and-cropped images and official splits, in one command.

The files come from one of three sources (`vaebench.data.sources`: official, kaggle, url), and the
fetch ends in the same checked copy at <root>/celeba (torchvision's layout, or the Kaggle mirror's for
`kaggle`), where `locate_celeba` finds it with data.root = <root>.

Nothing half-written is ever where vaebench reads: files are downloaded into <root>/.celeba-fetch/,
unzipped into <root>/.celeba-fetch/staging/celeba, checked there (202,599 images; splits 162,770 /
19,867 / 19,962; every listed image present), and only then moved to <root>/celeba in one rename;
the work folder is removed afterwards. A copy already under <root> is checked the same way and kept,
and a partial one is never written over. Every expected failure is a one-paragraph `UserError`.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vaebench.core.errors import UserError
from vaebench.data.celeba import (
    CelebALayout,
    _describe_entries,
    check_images_exist,
    locate_celeba,
    read_partition,
)
from vaebench.data.download import DiskFull, ensure_free_space, is_disk_full
from vaebench.data.sources import (
    CelebAManifest,
    Progress,
    Say,
    Source,
    gdrive_download,
    kaggle_download,
    next_sources,
    official_manifest,
    url_download,
)
from vaebench.data.splits import Split

WORK_FOLDER = ".celeba-fetch"  # under root: the downloads, and the unzipped copy before its checks


@dataclass(frozen=True)
class FetchResult:
    """A checked copy of CelebA: where it is, in which layout, its split sizes; whether it was there."""

    root: Path
    layout: CelebALayout
    images: int
    splits: dict[Split, int]
    already_there: bool


def fetch_celeba(
    root: Path,
    source: Source | None = None,
    url: str | None = None,
    *,
    manifest: CelebAManifest | None = None,
    say: Say | None = None,
    progress: Progress | None = None,
    tries: int = 3,
) -> FetchResult:
    """Put a checked copy of CelebA at <root>/celeba from `source` (default: url when `url` is given,
    else official), unless a complete copy is already under root; see the module doc.

    `tries`: connections per file of the url source before an interruption is an error (the partial
    download is kept, and the next call resumes it). Raises UserError (one paragraph) on every
    expected failure, with nothing left where vaebench reads.
    """
    root, say = Path(root).expanduser(), say or (lambda _: None)
    source = _resolve_source(source, url)
    manifest = manifest or official_manifest()
    existing = _existing_copy(root, manifest)
    if existing is not None:
        return existing
    work = root / WORK_FOLDER
    work.mkdir(parents=True, exist_ok=True)
    try:
        partition: Path | None = None  # the Kaggle archive holds its partition file
        if source == "kaggle":
            archive = kaggle_download(root, manifest, work, say, progress is not None)
        elif source == "official":
            archive = gdrive_download(root, manifest.archive, work, say)
            partition = gdrive_download(root, manifest.partition, work, say)
        else:
            assert url is not None
            archive = url_download(root, url, manifest.archive, work, say, progress, tries)
            partition = url_download(root, url, manifest.partition, work, say, progress, tries)
        staging = _unzip(root, source, archive, partition, work, say)
        say("checking the copy: image count, split sizes, every listed image present")
        splits = _checked_copy(root, source, staging, manifest)
    except DiskFull as full:
        raise UserError(_disk_full_message(root, source, full)) from None
    target = root / "celeba"
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    os.replace(staging, target)  # one rename: vaebench sees the whole checked copy or nothing
    shutil.rmtree(work, ignore_errors=True)
    moved = locate_celeba(root)
    say(f"moved the checked copy to {target} and removed {work}")
    return FetchResult(root, moved, manifest.images, splits, already_there=False)


def _resolve_source(source: Source | None, url: str | None) -> Source:
    if source is None:
        return "url" if url else "official"
    if source == "url" and not url:
        raise UserError(
            "--source url needs --url URL: the address of a folder holding a copy of the official files, "
            "fetched as <URL>/img_align_celeba.zip and <URL>/list_eval_partition.txt (a lab's own mirror, "
            "say). Without one, use --source official (Google Drive) or --source kaggle (a Kaggle API token)."
        )
    if source != "url" and url:
        raise UserError(f"--url is only read with --source url; drop it, or use --source url (not {source}).")
    return source


def _existing_copy(root: Path, manifest: CelebAManifest) -> FetchResult | None:
    """A complete copy already under root (either layout), or None when there is none and nothing in the
    way; a partial copy (or anything else at <root>/celeba) is a UserError: fetch never writes over it."""
    try:
        layout = locate_celeba(root)
    except UserError:
        target = root / "celeba"
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise UserError(
                f"{target} already exists ({_describe_entries(target)}) but holds no complete copy of "
                f"CelebA, and `vaebench data fetch` never writes over files: move it aside or delete it, "
                "then run the command again (or point data.root at a copy you already have)."
            ) from None
        return None
    problem = _copy_problem(root, layout, manifest)
    if problem is not None:
        raise UserError(
            f"A copy of CelebA is already under {root} ({layout.image_dir}, {layout.partition_file}) but "
            f"{problem}. `vaebench data fetch` never writes over files: move that copy aside or delete "
            "it, then run the command again to fetch a complete one."
        )
    splits = {s: len(names) for s, names in read_partition(root, layout).items()}
    return FetchResult(root, layout, manifest.images, splits, already_there=True)


def _copy_problem(root: Path, layout: CelebALayout, manifest: CelebAManifest) -> str | None:
    """What keeps the copy in `layout` from being CelebA as the manifest says, or None."""
    try:
        names = read_partition(root, layout)
        found = {s: len(v) for s, v in names.items()}
        if found != dict(manifest.splits):
            return (
                f"its partition file {layout.partition_file.name} gives splits of {_splits(found)} images, "
                f"and CelebA's are {_splits(manifest.splits)}"
            )
        images = sum(1 for n in os.listdir(layout.image_dir) if n.lower().endswith(".jpg"))
        if images != manifest.images:
            return f"{layout.image_dir} holds {images:,} JPEG images, and CelebA has {manifest.images:,}"
        check_images_exist(root, layout, [n for v in names.values() for n in v])
    except UserError as error:
        return f"it does not pass the checks ({error})"
    return None


def _splits(counts: Mapping[Split, int]) -> str:
    return " / ".join(f"{counts.get(s, 0):,}" for s in ("train", "val", "test")) + " (train / val / test)"


def _disk_full_message(root: Path, source: Source, full: DiskFull) -> str:
    gib = 1 << 30
    if full.needed is not None:
        what = (
            f"Not enough free disk space in {full.folder} for CelebA: the next step needs about "
            f"{full.needed / gib:.2f} GiB, and {full.free / gib:.2f} GiB are free."
        )
    else:
        what = f"The disk holding {full.folder} filled up while CelebA was being written (no space left)."
    return (
        f"{what} Free some space there, or choose a --root on a larger disk (CelebA needs about 3 GiB while "
        f"it is fetched, 1.4 GiB of archive and 1.4 GiB unzipped, then 1.4 GiB); what was downloaded is "
        f"kept in {root / WORK_FOLDER}, and the same command resumes from it. Nothing was written to "
        f"{root / 'celeba'}."
    )


def _unzip(root: Path, source: Source, archive: Path, partition: Path | None, work: Path, say: Say) -> Path:
    """Unzip the archive (and copy the partition file) into a fresh <work>/staging/celeba; return it."""
    staging = work / "staging" / "celeba"
    shutil.rmtree(staging.parent, ignore_errors=True)
    staging.mkdir(parents=True)
    say(f"unzipping {archive.name}")
    try:
        with zipfile.ZipFile(archive) as opened:
            ensure_free_space(staging, sum(info.file_size for info in opened.infolist()))
            opened.extractall(staging)  # checks each member's CRC; drops absolute and '..' parts
    except (zipfile.BadZipFile, EOFError) as error:
        archive.unlink()
        raise UserError(
            f"{archive.name} from the {source} source is not a readable zip archive ({error}); it was "
            f"deleted. Run the command again to download it anew. {next_sources(root, source)}"
        ) from None
    except OSError as error:
        if is_disk_full(error):
            raise DiskFull(staging, None, shutil.disk_usage(work).free) from None
        raise
    if partition is not None:
        shutil.copy2(partition, staging / partition.name)
    return staging


def _checked_copy(root: Path, source: Source, staging: Path, manifest: CelebAManifest) -> dict[Split, int]:
    """The staged copy's split sizes, or a UserError saying which check it failed."""
    say_where = f"The copy unzipped from the {source} source into {staging}"
    try:
        layout = locate_celeba(staging)
    except UserError:
        raise UserError(
            f"{say_where} is not in CelebA's layout: it holds {_describe_entries(staging)}, and "
            f"img_align_celeba/ with the partition file was expected. Nothing was moved to "
            f"{root / 'celeba'}. {next_sources(root, source)}"
        ) from None
    problem = _copy_problem(staging, layout, manifest)
    if problem is not None:
        raise UserError(
            f"{say_where} is not complete: {problem}. Nothing was moved to {root / 'celeba'}; the "
            f"downloads are in {root / WORK_FOLDER} (delete that folder to download them anew). "
            f"{next_sources(root, source)}"
        )
    return {s: len(names) for s, names in read_partition(staging, layout).items()}


def next_command(root: Path) -> str:
    """The command to run after a fetch: decode the cache for the baseline experiment."""
    extra = "" if Path(root) == Path("data") else f" data.root={root}"
    return f"vaebench data prepare experiments/baseline.yaml{extra}"
