"""Where CelebA comes from: the three sources of `vaebench data fetch`, and what each failure tells people.

- official: img_align_celeba.zip and list_eval_partition.txt from the official Google Drive files,
  through torchvision's own helper (`download_file_from_google_drive`, which uses gdown), checked
  against the MD5s torchvision records for them (`torchvision.datasets.CelebA.file_list`);
- kaggle: the Kaggle mirror (jessicali9530/celeba-dataset) through the optional `kaggle` package and
  the user's API token; the mirror publishes no checksum, so `vaebench.data.fetch` checks the copy by
  its image count and partition file only;
- url: the two official files from any mirror, <URL>/img_align_celeba.zip and
  <URL>/list_eval_partition.txt, resumable (`vaebench.data.download`) and MD5-checked.

Each source downloads into the fetch's work folder, never where vaebench reads, and turns every
expected failure into a one-paragraph `UserError` that names the next source to try (`next_sources`).
The files and counts expected are a `CelebAManifest`, which the tests replace with a tiny one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from vaebench.core.errors import UserError
from vaebench.data.celeba import KAGGLE_DATASET, PARTITION_TXT, _describe_entries
from vaebench.data.download import (
    ChecksumMismatch,
    DiskFull,
    DownloadFailed,
    HTTPStatusFailed,
    Interrupted,
    download,
    ensure_free_space,
    is_disk_full,
    md5_file,
)
from vaebench.data.splits import Split

Source = Literal["official", "kaggle", "url"]
SOURCES: tuple[Source, ...] = ("official", "kaggle", "url")
CELEBA_IMAGES = 202_599
"""Images in CelebA's aligned-and-cropped set (img_align_celeba)."""
CELEBA_SPLITS: Mapping[Split, int] = MappingProxyType({"train": 162_770, "val": 19_867, "test": 19_962})
"""Images per official split (list_eval_partition: 0 = train, 1 = valid, 2 = test)."""
Say = Callable[[str], None]
Progress = Callable[[str, int, int | None], None]  # (file name, bytes so far, whole size or None)


@dataclass(frozen=True)
class RemoteFile:
    """One file of a source: its name, MD5 (None: the source publishes none), Google Drive id, size."""

    name: str
    md5: str | None
    gdrive_id: str | None = None
    approx_bytes: int = 0  # for the free-space check where the server does not say the size


@dataclass(frozen=True)
class CelebAManifest:
    """What a fetch downloads and what the copy must hold; the tests replace it with a tiny one."""

    archive: RemoteFile  # img_align_celeba.zip (official, url)
    partition: RemoteFile  # list_eval_partition.txt (official, url)
    kaggle_archive: RemoteFile = RemoteFile("celeba-dataset.zip", None, approx_bytes=1_400_000_000)
    kaggle_dataset: str = KAGGLE_DATASET
    images: int = CELEBA_IMAGES
    splits: Mapping[Split, int] = field(default_factory=lambda: dict(CELEBA_SPLITS))


def official_manifest() -> CelebAManifest:
    """The official files with the Google Drive ids and MD5s torchvision records (CelebA.file_list)."""
    from torchvision.datasets import CelebA

    recorded = {name: (file_id, md5) for file_id, md5, name in CelebA.file_list}
    archive, partition = recorded["img_align_celeba.zip"], recorded[PARTITION_TXT]
    return CelebAManifest(
        archive=RemoteFile("img_align_celeba.zip", archive[1], archive[0], approx_bytes=1_443_490_838),
        partition=RemoteFile(PARTITION_TXT, partition[1], partition[0], approx_bytes=2_836_386),
    )


def next_sources(root: Path, source: Source) -> str:
    """The sentence naming the other sources to try after `source` failed."""
    commands = {
        "official": f"`vaebench data fetch --root {root} --source official` (Google Drive)",
        "kaggle": f"`vaebench data fetch --root {root} --source kaggle` (needs a Kaggle API token)",
        "url": f"`vaebench data fetch --root {root} --source url --url URL` (a copy of the official files, "
        "your lab's say)",
    }
    others = [commands[s] for s in SOURCES if s != source]
    return f"Next, try {others[0]} or {others[1]}."


def url_download(
    root: Path,
    url: str,
    remote: RemoteFile,
    work: Path,
    say: Say,
    progress: Progress | None,
    tries: int,
) -> Path:
    """<url>/<name> into the work folder, resumable and MD5-checked; failures become UserErrors."""
    address = f"{mirror_folder(url)}/{remote.name}"
    say(f"downloading {address}")
    report = None if progress is None else (lambda done, total: progress(remote.name, done, total))
    try:
        return download(
            address,
            work / remote.name,
            remote.md5,
            size_hint=remote.approx_bytes,
            tries=tries,
            progress=report,
        )
    except DownloadFailed as failed:
        raise UserError(_url_failure(root, url, remote, failed)) from None


def mirror_folder(url: str) -> str:
    """The mirror's folder: `url` without a trailing slash, or without the official file name it ends in."""
    folder, _, last = url.rstrip("/").rpartition("/")
    return folder if last in ("img_align_celeba.zip", PARTITION_TXT) else url.rstrip("/")


def _url_failure(root: Path, url: str, remote: RemoteFile, failed: DownloadFailed) -> str:
    if isinstance(failed, HTTPStatusFailed) and failed.status in (401, 403, 404, 410):
        why = {404: "it has no such file", 410: "it has no such file"}.get(
            failed.status, "it refuses the download (a login needed, or an expired link?)"
        )
        return (
            f"The mirror answered HTTP {failed.status} ({failed.reason}) for {failed.url}: {why}. --url must "
            f"be the address of the folder holding img_align_celeba.zip and {PARTITION_TXT} (each is "
            f"fetched as <URL>/<file name>), here {url}. Check the address. {next_sources(root, 'url')}"
        )
    if isinstance(failed, Interrupted):
        return (
            f"The download of {failed.url} stopped short {failed.tries} time(s): {failed.received} of "
            f"{failed.expected} bytes arrived, and they are kept in {failed.partial}. Run the same command "
            f"again to resume from there (the rest is asked for with an HTTP Range request). "
            f"{next_sources(root, 'url')}"
        )
    if isinstance(failed, ChecksumMismatch):
        return (
            f"{failed.url} is not the official {remote.name}: its MD5 is {failed.actual} ({failed.size} "
            f"bytes), and torchvision records {failed.expected} for it (a truncated or damaged copy on the "
            f"mirror, an HTML error page, or another release). The download was deleted; run the command "
            f"again to download it anew, or fix the mirror's copy. {next_sources(root, 'url')}"
        )
    return (
        f"Could not download {failed.url}: {failed.why}. Check the address and the network, and run the "
        f"command again (a partial download resumes). {next_sources(root, 'url')}"
    )


def gdrive_download(root: Path, remote: RemoteFile, work: Path, say: Say) -> Path:
    """One official file through torchvision's Google Drive helper (gdown), MD5-checked by the helper."""
    from torchvision.datasets.utils import download_file_from_google_drive

    target = work / remote.name
    if not target.is_file() or remote.md5 is None or md5_file(target) != remote.md5:
        ensure_free_space(work, remote.approx_bytes)
        say(f"downloading {remote.name} from Google Drive (id {remote.gdrive_id})")
    assert remote.gdrive_id is not None
    try:
        download_file_from_google_drive(remote.gdrive_id, str(work), filename=remote.name, md5=remote.md5)
    except OSError as error:  # requests' errors are OSErrors too
        if is_disk_full(error):
            raise DiskFull(work, None, shutil.disk_usage(work).free) from None
        raise UserError(_gdrive_failure(root, remote, target, error)) from None
    except Exception as error:  # gdown's FileURLRetrievalError, torchvision's RuntimeError
        raise UserError(_gdrive_failure(root, remote, target, error)) from None
    return target


QUOTA_SIGNS = ("too many users", "quota", "cannot retrieve the public link", "virus", "access denied")


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(1024).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _gdrive_failure(root: Path, remote: RemoteFile, target: Path, error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".replace("\n", " ").replace("\t", " ")
    text = " ".join(text.split())
    if "gdown" in text and "required" in text:
        return (
            "The official source downloads through torchvision's Google Drive helper, which needs the gdown "
            "package: `pip install gdown` (or `pip install -e '.[fetch]'`), then run the command again. "
            f"{next_sources(root, 'official')}"
        )
    page = target.is_file() and _looks_like_html(target)
    gave_nothing = "not found or corrupted" in text.lower() and not target.is_file()
    if page or gave_nothing or any(sign in text.lower() for sign in QUOTA_SIGNS):
        if target.is_file():
            target.unlink()
        sent = "a web page instead of the file" if page else "no file"
        return (
            f"Google Drive sent {sent} for {remote.name} (id {remote.gdrive_id}): its download quota for "
            "CelebA's files is used up ('Too many users have viewed or downloaded this file recently', "
            "common for CelebA, and it lasts up to a day), or its virus-scan page for large files stood in "
            f"the way ({text}). Try --source official again later, or fetch from elsewhere now. "
            f"{next_sources(root, 'official')}"
        )
    if "corrupted" in text.lower() and target.is_file():
        actual, size = md5_file(target), target.stat().st_size
        target.unlink()
        return (
            f"The {remote.name} that Google Drive sent is not the official file: its MD5 is {actual} "
            f"({size} bytes), and torchvision records {remote.md5} for it (an interrupted or altered "
            "download). It was deleted; run the command again to download it anew. "
            f"{next_sources(root, 'official')}"
        )
    return (
        f"Downloading {remote.name} from Google Drive (id {remote.gdrive_id}) failed ({text}). Check the "
        f"network and run the command again. {next_sources(root, 'official')}"
    )


def kaggle_credentials() -> str | None:
    """Where the Kaggle API token is (KAGGLE_USERNAME/KAGGLE_KEY, or kaggle.json in KAGGLE_CONFIG_DIR
    or ~/.kaggle), or None when there is none."""
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME and KAGGLE_KEY"
    folder = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    token = folder / "kaggle.json"
    return str(token) if token.is_file() else None


def kaggle_api() -> Any:
    """Kaggle's API client, authenticated (the optional `kaggle` package); the tests replace this."""
    from kaggle.api.kaggle_api_extended import KaggleApi  # ImportError without it; authenticates too

    api = KaggleApi()
    api.authenticate()
    return api


def kaggle_download(root: Path, manifest: CelebAManifest, work: Path, say: Say, verbose: bool) -> Path:
    """The Kaggle mirror's zip into the work folder: into a temporary folder, moved once the API returned."""
    remote = manifest.kaggle_archive
    target = work / remote.name
    if target.is_file():  # a whole download of an earlier run (it is moved here only once complete)
        return target
    if kaggle_credentials() is None:
        token = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle") / "kaggle.json"
        raise UserError(
            f"The kaggle source needs a Kaggle API token, and there is none: no {token} and no "
            "KAGGLE_USERNAME/KAGGLE_KEY in the environment. Create one on kaggle.com (Settings, "
            f"API, Create New Token), save it as {token} (chmod 600) or set both "
            f"variables, then run the command again. {next_sources(root, 'kaggle')}"
        )
    try:
        api = kaggle_api()
    except ImportError:
        raise UserError(
            "The kaggle source needs the kaggle package, which is not installed: `pip install kaggle` (or "
            f"`pip install -e '.[fetch]'`), then run the command again. {next_sources(root, 'kaggle')}"
        ) from None
    except Exception as error:  # a token Kaggle's package refuses
        raise UserError(_kaggle_failure(root, manifest, error)) from None
    incoming = work / "kaggle.partial"
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir()
    ensure_free_space(work, remote.approx_bytes)
    say(f"downloading the Kaggle dataset {manifest.kaggle_dataset}")
    try:
        api.dataset_download_files(
            manifest.kaggle_dataset, path=str(incoming), unzip=False, quiet=not verbose, force=True
        )
    except OSError as error:
        if is_disk_full(error):
            raise DiskFull(work, None, shutil.disk_usage(work).free) from None
        raise UserError(_kaggle_failure(root, manifest, error)) from None
    except Exception as error:  # 401 (a bad token), 403, 404, the network
        raise UserError(_kaggle_failure(root, manifest, error)) from None
    zips = sorted(incoming.glob("*.zip"))
    if len(zips) != 1:
        raise UserError(
            _kaggle_failure(root, manifest, RuntimeError(f"it wrote {_describe_entries(incoming)}"))
        )
    os.replace(zips[0], target)
    shutil.rmtree(incoming)
    return target


def _kaggle_failure(root: Path, manifest: CelebAManifest, error: BaseException) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return (
        f"Downloading the Kaggle dataset {manifest.kaggle_dataset} failed ({text}). A 401 means the API "
        "token is wrong or revoked (create a new one on kaggle.com, Settings, API); a 403 that the account "
        f"must accept the dataset's terms on its page first. {next_sources(root, 'kaggle')}"
    )
