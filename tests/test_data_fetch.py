"""`vaebench data fetch`: CelebA arrives whole and checked, or a paragraph says what to do; never half.

No test reaches the internet. A real HTTP server on 127.0.0.1 (`Mirror`) serves a fake CelebA of 7
aligned-size JPEGs (splits 4 / 2 / 1) in both archive layouts, and stands in for all three sources:

- url: downloaded from it as from a lab's mirror, with Range (206) answers, cut-short bodies, a
  server that ignores Range, 403/404s and wrong bytes;
- official: torchvision's own Google Drive helper runs for real (its MD5 check included), with the
  `gdown` module it calls replaced by a stub that downloads from the server, or raises gdown's quota
  error, or saves the web page Google Drive sends instead of the file;
- kaggle: the `kaggle` package's API client replaced by a stub that downloads the mirror's layout.

The expected MD5s and counts are a tiny `CelebAManifest` made from the fake files.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import socket
import sys
import types
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

import vaebench.data.download as download_module
import vaebench.data.fetch as fetch_module
import vaebench.data.sources as sources_module
from local_http import serve_in_thread
from vaebench.cli import app
from vaebench.core.errors import UserError
from vaebench.data.celeba import CelebAImages, locate_celeba
from vaebench.data.download import Interrupted, download
from vaebench.data.fetch import fetch_celeba
from vaebench.data.sources import CELEBA_IMAGES, CELEBA_SPLITS, CelebAManifest, RemoteFile, official_manifest
from vaebench.data.spec import CelebADataSpec

runner = CliRunner()
NAMES = [f"{i:06d}.jpg" for i in range(1, 8)]
CODES = [0, 0, 0, 0, 1, 1, 2]  # 4 train, 2 valid, 1 test
SPLITS = {"train": 4, "val": 2, "test": 1}


def jpeg(index: int) -> bytes:
    """A 178x218 JPEG (CelebA's aligned size) of one colour per index: about 1.6 kB."""
    image = Image.new("RGB", (178, 218), (30 * index, 100, 200 - 20 * index))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


IMAGES = {name: jpeg(i) for i, name in enumerate(NAMES)}
PARTITION = "".join(
    f"{n} {c}\r\n" for n, c in zip(NAMES, CODES, strict=True)
).encode()  # as the official file
ARCHIVE = zipped({f"img_align_celeba/{n}": data for n, data in IMAGES.items()})


def kaggle_archive(images: list[str]) -> bytes:
    """The Kaggle mirror's zip: the image folder nested in itself, the partition CSV (listing all 7)."""
    rows = "".join(f"{n},{c}\n" for n, c in zip(NAMES, CODES, strict=True))
    return zipped(
        {
            **{f"img_align_celeba/img_align_celeba/{n}": IMAGES[n] for n in images},
            "list_eval_partition.csv": f"image_id,partition\n{rows}".encode(),
        }
    )


KAGGLE_ARCHIVE = kaggle_archive(NAMES)
MANIFEST = CelebAManifest(
    archive=RemoteFile("img_align_celeba.zip", hashlib.md5(ARCHIVE).hexdigest(), "archive-id", len(ARCHIVE)),
    partition=RemoteFile("list_eval_partition.txt", hashlib.md5(PARTITION).hexdigest(), "partition-id"),
    images=len(NAMES),
    splits=SPLITS,
)
QUOTA_PAGE = (
    b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body><p class="
    b'"uc-error-subcaption">Too many users have viewed or downloaded this file recently.</p></body></html>'
)


class Mirror:
    """An HTTP server in a thread: /mirror/<name> (Range honoured unless told not), /gdrive/<id>, /kaggle/."""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.reset()

    def reset(self) -> None:
        self.files = {"img_align_celeba.zip": ARCHIVE, "list_eval_partition.txt": PARTITION}
        self.gdrive = {"archive-id": ARCHIVE, "partition-id": PARTITION}
        self.kaggle = {"celeba-dataset.zip": KAGGLE_ARCHIVE}
        self.requests: list[tuple[str, str | None]] = []  # (path, its Range header)
        self.status: dict[str, int] = {}  # path -> the error status to answer with
        self.cut: int | None = None  # each body stops after this many bytes (the connection closes)
        self.honour_range = True

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        mirror = self

        class Handler(BaseHTTPRequestHandler):  # HTTP/1.0: the connection closes after each response
            def do_GET(self) -> None:
                mirror.requests.append((self.path, self.headers.get("Range")))
                folder, _, name = self.path.strip("/").partition("/")
                data = {"mirror": mirror.files, "gdrive": mirror.gdrive, "kaggle": mirror.kaggle}.get(
                    folder, {}
                ).get(name)
                if self.path in mirror.status or data is None:
                    self.send_error(mirror.status.get(self.path, 404))
                    return
                asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                start = int(asked[1]) if asked and mirror.honour_range else 0
                if start >= len(data) > 0:
                    self.send_error(416)
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))  # what the whole answer is
                self.end_headers()
                body = data[start:]
                self.wfile.write(body if mirror.cut is None else body[: mirror.cut])

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@pytest.fixture(scope="module")
def server() -> Iterator[Mirror]:
    yield from serve_in_thread(Mirror())


@pytest.fixture
def mirror(server: Mirror, monkeypatch: pytest.MonkeyPatch) -> Mirror:
    """The server as new, and the tiny manifest wherever the official one would be used."""
    server.reset()
    monkeypatch.setattr(fetch_module, "official_manifest", lambda: MANIFEST)
    return server


def fetched(root: Path) -> list[str]:
    """What is under root: the checked copy only, never the work folder or a half-written one."""
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def assert_usable_copy(root: Path, layout: str) -> None:
    """vaebench reads the fetched copy: its layout, every split, and the decoded images."""
    found = locate_celeba(root)
    assert found.name == layout and found.image_dir.parent.parent in (root, root / "celeba")
    spec = CelebADataSpec(root=root, image_size=16, num_workers=0)
    assert {s: len(CelebAImages(spec, s)) for s in SPLITS} == SPLITS
    assert CelebAImages(spec, "test")[0].shape == (3, 16, 16)


# ----------------------------------------------------------------------------- the manifest


def test_the_official_manifest_is_torchvisions_files_and_md5s_and_celebas_counts() -> None:
    manifest = official_manifest()
    assert manifest.archive.name == "img_align_celeba.zip"
    assert manifest.archive.md5 == "00d2c5bc6d35e252742224ab0c1e8fcb"
    assert manifest.partition.md5 == "d32c9cbf5e040fd4025c592c306e6668"
    assert manifest.archive.gdrive_id and manifest.partition.gdrive_id
    assert manifest.images == CELEBA_IMAGES == 202_599 == sum(CELEBA_SPLITS.values())
    assert dict(manifest.splits) == {"train": 162_770, "val": 19_867, "test": 19_962}
    assert manifest.kaggle_dataset == "jessicali9530/celeba-dataset"


# ----------------------------------------------------------------------------- url: the resumable download


def test_an_interrupted_download_resumes_with_range_and_ends_with_the_same_bytes(
    mirror: Mirror, tmp_path: Path
) -> None:
    url = f"{mirror.url}/mirror/img_align_celeba.zip"
    whole = download(url, tmp_path / "a" / "x.zip", MANIFEST.archive.md5)
    mirror.cut = 3000
    with pytest.raises(Interrupted) as stopped:
        download(url, tmp_path / "b" / "x.zip", MANIFEST.archive.md5, tries=1)
    assert (stopped.value.received, stopped.value.expected) == (3000, len(ARCHIVE))
    assert fetched(tmp_path / "b") == ["x.zip.partial"]  # the target itself only appears whole and checked
    assert (tmp_path / "b" / "x.zip.partial").read_bytes() == ARCHIVE[:3000]
    mirror.cut, mirror.requests = None, []
    resumed = download(url, tmp_path / "b" / "x.zip", MANIFEST.archive.md5)
    assert mirror.requests == [("/mirror/img_align_celeba.zip", "bytes=3000-")]
    assert resumed.read_bytes() == whole.read_bytes() == ARCHIVE
    assert fetched(tmp_path / "b") == ["x.zip"]


def test_a_download_cut_short_is_resumed_within_one_call_up_to_its_tries(
    mirror: Mirror, tmp_path: Path
) -> None:
    mirror.cut = 4000  # every answer stops after 4000 bytes: three tries fetch the whole archive
    assert len(ARCHIVE) <= 3 * 4000
    path = download(f"{mirror.url}/mirror/img_align_celeba.zip", tmp_path / "x.zip", MANIFEST.archive.md5)
    assert path.read_bytes() == ARCHIVE
    assert [r for _, r in mirror.requests] == [None, "bytes=4000-", "bytes=8000-"]


def test_a_server_that_ignores_range_is_downloaded_again_from_zero(mirror: Mirror, tmp_path: Path) -> None:
    url = f"{mirror.url}/mirror/img_align_celeba.zip"
    (tmp_path / "x.zip.partial").write_bytes(b"stale bytes of an earlier try")
    mirror.honour_range = False  # answers 200 with the whole file whatever Range says
    assert download(url, tmp_path / "x.zip", MANIFEST.archive.md5).read_bytes() == ARCHIVE
    assert mirror.requests == [("/mirror/img_align_celeba.zip", "bytes=29-")]
    assert fetched(tmp_path) == ["x.zip"]


def test_a_partial_that_is_already_whole_is_checked_and_moved_without_downloading_again(
    mirror: Mirror, tmp_path: Path
) -> None:
    (tmp_path / "x.zip.partial").write_bytes(ARCHIVE)  # killed between the last byte and the rename
    url = f"{mirror.url}/mirror/img_align_celeba.zip"
    assert download(url, tmp_path / "x.zip", MANIFEST.archive.md5).read_bytes() == ARCHIVE
    assert mirror.requests == [("/mirror/img_align_celeba.zip", f"bytes={len(ARCHIVE)}-")]  # answered 416


def test_an_unreachable_mirror_is_one_paragraph(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nobody listens on once this socket is closed
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(UserError) as refused:
        fetch_celeba(tmp_path, url=f"http://127.0.0.1:{port}/celeba", manifest=MANIFEST)
    message = str(refused.value)
    assert message.startswith(f"Could not download http://127.0.0.1:{port}/celeba/img_align_celeba.zip: ")
    assert "Connection refused" in message and "--source official" in message


# ----------------------------------------------------------------------------- url: fetch and its failures


def test_a_url_fetch_lands_a_checked_copy_where_vaebench_reads_it_and_nothing_else(
    mirror: Mirror, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    result = fetch_celeba(root, url=f"{mirror.url}/mirror/")
    assert not result.already_there and result.splits == SPLITS and result.images == 7
    assert fetched(root) == ["celeba"]  # the work folder with the downloads is gone
    assert sorted(os.listdir(root / "celeba")) == ["img_align_celeba", "list_eval_partition.txt"]
    assert (root / "celeba" / "list_eval_partition.txt").read_bytes() == PARTITION
    assert_usable_copy(root, "torchvision")

    mirror.requests.clear()
    again = fetch_celeba(root, "url", f"{mirror.url}/mirror/img_align_celeba.zip")  # a file's URL: its folder
    assert again.already_there and again.splits == SPLITS and mirror.requests == []


def test_an_interrupted_url_fetch_keeps_nothing_where_vaebench_reads_and_the_same_command_resumes(
    mirror: Mirror, tmp_path: Path
) -> None:
    root, url = tmp_path / "data", f"{mirror.url}/mirror"
    mirror.cut = 1000
    with pytest.raises(UserError) as stopped:
        fetch_celeba(root, "url", url, tries=2)
    message = str(stopped.value)
    partial = root / ".celeba-fetch" / "img_align_celeba.zip.partial"
    assert f"2000 of {len(ARCHIVE)} bytes arrived, and they are kept in {partial}" in message
    assert "Run the same command again to resume from there" in message
    assert "--source official" in message and "--source kaggle" in message  # the next sources to try
    assert fetched(root) == [".celeba-fetch"] and partial.stat().st_size == 2000
    with pytest.raises(UserError, match="CelebA is not usable"):
        locate_celeba(root)

    mirror.cut, mirror.requests = None, []
    assert fetch_celeba(root, "url", url).splits == SPLITS
    assert mirror.requests[0] == ("/mirror/img_align_celeba.zip", "bytes=2000-")
    assert fetched(root) == ["celeba"]
    assert_usable_copy(root, "torchvision")


def test_a_wrong_checksum_is_refused_deleted_and_names_the_next_source(
    mirror: Mirror, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    mirror.files["img_align_celeba.zip"] = ARCHIVE[:-1] + bytes([ARCHIVE[-1] ^ 1])  # same length, one bit
    with pytest.raises(UserError) as refused:
        fetch_celeba(root, url=f"{mirror.url}/mirror")
    message = str(refused.value)
    actual = hashlib.md5(mirror.files["img_align_celeba.zip"]).hexdigest()
    assert (
        f"/mirror/img_align_celeba.zip is not the official img_align_celeba.zip: its MD5 is {actual}"
        in message
    )
    assert f"torchvision records {MANIFEST.archive.md5} for it" in message
    assert "The download was deleted" in message and "--source kaggle" in message
    assert os.listdir(root / ".celeba-fetch") == [] and "celeba" not in fetched(root)


@pytest.mark.parametrize("status", [403, 404])
def test_a_403_or_404_says_what_url_must_be_and_the_next_source(
    mirror: Mirror, tmp_path: Path, status: int
) -> None:
    mirror.status["/mirror/img_align_celeba.zip"] = status
    with pytest.raises(UserError) as refused:
        fetch_celeba(tmp_path, url=f"{mirror.url}/mirror")
    message = str(refused.value)
    assert f"The mirror answered HTTP {status}" in message and "/mirror/img_align_celeba.zip" in message
    assert "--url must be the address of the folder holding img_align_celeba.zip" in message
    assert f"`vaebench data fetch --root {tmp_path} --source official`" in message
    assert "celeba" not in fetched(tmp_path)


def test_too_little_free_space_stops_before_downloading(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = types.SimpleNamespace(total=10**6, used=10**6 - 500, free=500)  # 500 bytes free
    monkeypatch.setattr(download_module.shutil, "disk_usage", lambda _: usage)
    with pytest.raises(UserError) as refused:
        fetch_celeba(tmp_path, url=f"{mirror.url}/mirror")
    message = str(refused.value)
    assert message.startswith(f"Not enough free disk space in {tmp_path / '.celeba-fetch'} for CelebA")
    assert "choose a --root on a larger disk" in message
    assert mirror.requests == [("/mirror/img_align_celeba.zip", None)]  # its size asked, no byte written
    assert os.listdir(tmp_path / ".celeba-fetch") == []


def test_a_disk_that_fills_up_while_writing_is_one_paragraph_and_keeps_what_arrived(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FullDisk:
        """A file open for writing on a disk with no space left: every write fails with ENOSPC."""

        def __init__(self, path: Path, mode: str) -> None:
            self.handle = open(path, mode)

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    def filling_open(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        return FullDisk(path, mode) if mode in ("wb", "ab") else open(path, mode, *args, **kwargs)

    monkeypatch.setattr(download_module, "open", filling_open, raising=False)
    with pytest.raises(UserError) as refused:
        fetch_celeba(tmp_path, url=f"{mirror.url}/mirror")
    message = str(refused.value)
    assert "filled up while CelebA was being written (no space left)" in message
    assert f"Nothing was written to {tmp_path / 'celeba'}" in message
    assert "celeba" not in fetched(tmp_path)


def test_a_copy_already_there_is_kept_and_a_partial_one_is_never_written_over(
    mirror: Mirror, tmp_path: Path
) -> None:
    partial = tmp_path / "celeba" / "img_align_celeba"
    partial.mkdir(parents=True)
    (partial / NAMES[0]).write_bytes(IMAGES[NAMES[0]])
    with pytest.raises(UserError) as refused:
        fetch_celeba(tmp_path, url=f"{mirror.url}/mirror")
    assert "holds no complete copy of CelebA, and `vaebench data fetch` never writes over files" in str(
        refused.value
    )
    assert mirror.requests == [] and os.listdir(partial) == [NAMES[0]]

    (tmp_path / "celeba" / "list_eval_partition.txt").write_bytes(PARTITION)  # 6 of the 7 listed images
    with pytest.raises(UserError) as incomplete:
        fetch_celeba(tmp_path, url=f"{mirror.url}/mirror")
    message = str(incomplete.value)
    assert f"A copy of CelebA is already under {tmp_path}" in message
    assert f"but {partial} holds 1 JPEG images, and CelebA has 7" in message
    assert "move that copy aside or delete it" in message and mirror.requests == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"splits": {"train": 5, "val": 1, "test": 1}}, "gives splits of 4 / 2 / 1 (train / val / test) "
         "images, and CelebA's are 5 / 1 / 1"),
        ({"images": 8}, "holds 7 JPEG images, and CelebA has 8"),
    ],
)  # fmt: skip
def test_a_copy_with_the_wrong_counts_is_not_moved_into_place(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict, problem: str
) -> None:
    monkeypatch.setattr(fetch_module, "official_manifest", lambda: replace(MANIFEST, **change))
    with pytest.raises(UserError) as refused:
        fetch_celeba(tmp_path, url=f"{mirror.url}/mirror")
    assert "is not complete: " in str(refused.value) and problem in str(refused.value)
    assert "celeba" not in fetched(tmp_path)


# ----------------------------------------------------------------------------- official (Google Drive)


def fake_gdown(mirror: Mirror, monkeypatch: pytest.MonkeyPatch, quota: bool = False) -> list[str]:
    """Stand in for gdown under torchvision's helper: download /gdrive/<id> from the mirror (saving what
    it answers, as gdown saves what Drive sends), or raise gdown's quota error. Returns the ids asked."""
    module, asked = types.ModuleType("gdown"), []

    class FileURLRetrievalError(Exception):
        pass

    def download(id: str, output: str, quiet: bool = False, user_agent: str | None = None) -> str:
        asked.append(id)
        if quota:
            raise FileURLRetrievalError(
                "Failed to retrieve file url:\n\n\tToo many users have viewed or downloaded this file "
                "recently. Please try accessing the file again later.\n\nYou may still be able to access "
                f"the file from the browser:\n\n\thttps://drive.google.com/uc?id={id}\n\nbut Gdown can't."
            )
        with urllib.request.urlopen(f"{mirror.url}/gdrive/{id}") as answer:
            Path(output).write_bytes(answer.read())
        return output

    module.download = download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gdown", module)
    return asked


def test_an_official_fetch_goes_through_torchvisions_google_drive_helper_and_its_md5_check(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = fake_gdown(mirror, monkeypatch)
    result = fetch_celeba(tmp_path, "official")
    assert asked == ["archive-id", "partition-id"] and result.splits == SPLITS
    assert fetched(tmp_path) == ["celeba"]
    assert_usable_copy(tmp_path, "torchvision")


@pytest.mark.parametrize("how", ["gdown raises", "Drive sends its page"])
def test_a_google_drive_quota_or_scan_page_is_one_paragraph_naming_kaggle_and_url(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    fake_gdown(mirror, monkeypatch, quota=how == "gdown raises")
    mirror.gdrive["archive-id"] = QUOTA_PAGE
    with pytest.raises(UserError) as refused:
        fetch_celeba(tmp_path, "official")
    message = str(refused.value)
    sent = "no file" if how == "gdown raises" else "a web page instead of the file"
    assert message.startswith(f"Google Drive sent {sent} for img_align_celeba.zip (id archive-id)")
    assert "download quota" in message and "Too many users" in message and "\n" not in message
    assert (
        f"`vaebench data fetch --root {tmp_path} --source kaggle`" in message
        and "--source url --url" in message
    )
    assert os.listdir(tmp_path / ".celeba-fetch") == []  # the page is not kept under the archive's name


def test_a_wrong_google_drive_download_and_a_missing_gdown_say_what_to_do(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_gdown(mirror, monkeypatch)
    mirror.gdrive["archive-id"] = ARCHIVE[:-10]
    with pytest.raises(UserError) as refused:
        fetch_celeba(tmp_path, "official")
    actual = hashlib.md5(ARCHIVE[:-10]).hexdigest()
    assert f"not the official file: its MD5 is {actual} ({len(ARCHIVE) - 10} bytes)" in str(refused.value)
    assert os.listdir(tmp_path / ".celeba-fetch") == []

    monkeypatch.setitem(sys.modules, "gdown", None)  # not installed: torchvision's helper says so
    with pytest.raises(UserError) as missing:
        fetch_celeba(tmp_path, "official")
    assert "needs the gdown package: `pip install gdown`" in str(missing.value)
    assert "--source kaggle" in str(missing.value)


# ----------------------------------------------------------------------------- kaggle


class KaggleStub:
    """Stands in for kaggle's authenticated KaggleApi: downloads the mirror's archive from the server."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror, self.calls = mirror, []

    def dataset_download_files(self, dataset: str, path: str, unzip: bool, quiet: bool, force: bool) -> None:
        self.calls.append((dataset, unzip))
        with urllib.request.urlopen(f"{self.mirror.url}/kaggle/celeba-dataset.zip") as answer:
            (Path(path) / "celeba-dataset.zip").write_bytes(answer.read())


@pytest.fixture
def kaggle_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home, no Kaggle variables: no credentials until a test adds them."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_a_kaggle_fetch_is_checked_by_image_count_and_partition_and_lands_in_the_mirrors_layout(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kaggle_home: Path
) -> None:
    (kaggle_home / ".kaggle").mkdir()
    (kaggle_home / ".kaggle" / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    stub = KaggleStub(mirror)
    monkeypatch.setattr(sources_module, "kaggle_api", lambda: stub)
    root = tmp_path / "data"
    assert fetch_celeba(root, "kaggle").splits == SPLITS
    assert stub.calls == [("jessicali9530/celeba-dataset", False)]
    assert fetched(root) == ["celeba"]
    assert_usable_copy(root, "kaggle")

    mirror.kaggle["celeba-dataset.zip"] = kaggle_archive(NAMES[:-1])  # an image lost: refused by the count
    with pytest.raises(UserError) as refused:
        fetch_celeba(tmp_path / "other", "kaggle")
    assert "holds 6 JPEG images, and CelebA has 7" in str(refused.value)
    assert "--source official" in str(refused.value) and "celeba" not in fetched(tmp_path / "other")


def test_kaggle_without_credentials_or_without_its_package_names_the_next_source(
    mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kaggle_home: Path
) -> None:
    with pytest.raises(UserError) as refused:
        fetch_celeba(tmp_path, "kaggle")
    message = str(refused.value)
    assert (
        f"needs a Kaggle API token, and there is none: no {kaggle_home / '.kaggle' / 'kaggle.json'}"
        in message
    )
    assert (
        f"`vaebench data fetch --root {tmp_path} --source official`" in message and "--source url" in message
    )

    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    monkeypatch.setitem(sys.modules, "kaggle", None)  # the optional package is not installed
    with pytest.raises(UserError) as missing:
        fetch_celeba(tmp_path, "kaggle")
    assert "needs the kaggle package, which is not installed: `pip install kaggle`" in str(missing.value)
    assert "--source official" in str(missing.value)
    assert mirror.requests == [] and "celeba" not in fetched(tmp_path)


# ----------------------------------------------------------------------------- the command


def test_cli_fetch_prints_each_step_the_checked_counts_and_the_next_command(
    mirror: Mirror, tmp_path: Path
) -> None:
    root = tmp_path / "a folder with a long name that a 40-column console would wrap"
    result = runner.invoke(app, ["data", "fetch", "--root", str(root), "--url", f"{mirror.url}/mirror"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"downloading {mirror.url}/mirror/img_align_celeba.zip" in lines
    assert "img_align_celeba.zip: 100% (0 of 0 MB)" in lines
    assert (
        f"CelebA: downloaded and checked: 7 images in {root / 'celeba' / 'img_align_celeba'} with "
        "list_eval_partition.txt (train 4, val 2, test 1)." in lines
    )
    assert lines[-1] == f"Next: vaebench data prepare experiments/baseline.yaml data.root={root}"

    again = runner.invoke(app, ["data", "fetch", "--root", str(root), "--source", "url", "--url", mirror.url])
    assert again.exit_code == 0 and "CelebA: already there, checked: 7 images" in again.output


def test_cli_fetch_failures_exit_1_with_one_paragraph(mirror: Mirror, tmp_path: Path) -> None:
    mirror.status["/mirror/img_align_celeba.zip"] = 404
    result = runner.invoke(app, ["data", "fetch", "--root", str(tmp_path), "--url", f"{mirror.url}/mirror"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HTTP 404" in errors[0] and "--source kaggle" in errors[0]

    no_url = runner.invoke(app, ["data", "fetch", "--root", str(tmp_path), "--source", "url"])
    assert no_url.exit_code == 1 and "error: --source url needs --url URL" in no_url.output


def test_a_missing_celeba_points_at_the_fetch_command_first(tmp_path: Path) -> None:
    with pytest.raises(UserError) as missing:
        locate_celeba(tmp_path / "data")
    advice = str(missing.value).split("To get the data, ", 1)[1]
    assert advice.startswith(f"run `vaebench data fetch --root {tmp_path / 'data'}`")
    assert "--source kaggle or --source url --url URL" in advice
