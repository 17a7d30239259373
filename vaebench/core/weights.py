"""Pretrained weight files (VGG16, the FID Inception): where they are, whether they are the right bytes.

Every file vaebench loads pretrained weights from is an entry of `WEIGHTS`, named by its download URL.
Its file name pins the first hex digits of its SHA-256, torch.hub's convention (vgg16-397923af.pth):
`verified_weights` checks a file against that prefix *every time it is used* (not only when it is
downloaded), so a truncated copy, another file put in its place or another release of the weights is an
error that says so, never a silently different metric. Files live in the torch hub cache
(<torch.hub.get_dir()>/checkpoints, i.e. $TORCH_HOME/hub/checkpoints, default ~/.cache/torch/hub) or
at a path the spec names. `vaebench weights fetch` downloads them there (`fetch_weights`).
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch

from vaebench.core.errors import UserError

DOWNLOAD_TIMEOUT_S = 30.0
"""Socket timeout of a download: a firewall that drops packets fails in seconds, not hours."""


@dataclass(frozen=True)
class WeightsFile:
    """One pretrained weights file: its download URL, whose last path part is the file's name."""

    name: str  # what `vaebench weights fetch NAME` and error messages call it
    url: str
    description: str  # what the weights are and what uses them
    aliases: tuple[str, ...] = ()  # other names of the same bytes in a hub cache (another package's)

    @property
    def filename(self) -> str:
        return os.path.basename(urlparse(self.url).path)

    @property
    def hash_prefix(self) -> str:
        """The SHA-256 prefix torch.hub pins in the file name: vgg16-397923af.pth -> 397923af."""
        return Path(self.filename).stem.rsplit("-", 1)[-1]

    def cache_path(self) -> Path:
        """<torch.hub.get_dir()>/checkpoints/<filename>, where torch.hub and torchvision cache it too."""
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename

    def candidates(self) -> list[Path]:
        """Where the file is looked for in the hub cache: its own name, then its aliases."""
        folder = self.cache_path().parent
        return [folder / name for name in (self.filename, *self.aliases)]


WEIGHTS: dict[str, WeightsFile] = {
    "vgg16": WeightsFile(
        "vgg16",
        "https://download.pytorch.org/models/vgg16-397923af.pth",  # torchvision's VGG16_Weights.IMAGENET1K_V1
        "torchvision's ImageNet VGG16 (528 MB): the perceptual loss, LPIPS's backbone, and the fc2 "
        "features of precision/recall",
    ),
    "inception": WeightsFile(
        "inception",
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        "weights-inception-2015-12-05-6726825d.pth",
        "the FID Inception-v3 (TensorFlow's 2015-12-05 graph, converted; 92 MB): FID, KID, recon FID",
        aliases=("pt_inception-2015-12-05-6726825d.pth",),  # pytorch-fid's name for the same weights
    ),
}

_SHA256: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> digest, within one process


def sha256_file(path: Path) -> str:
    """The file's SHA-256 (hex), remembered per (path, size, mtime) within the process (~2 s for VGG16)."""
    info = path.stat()
    key = (str(path.resolve()), info.st_size, info.st_mtime_ns)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


def fetch_command(name: str) -> str:
    return f"vaebench weights fetch {name}"


def locate_weights(name: str, path: Path | None = None) -> Path | None:
    """The file of weights `name`: `path` when given (it must exist), else the first hub-cache candidate
    that exists, else None."""
    if path is not None:
        return Path(path).expanduser()
    return next((p for p in WEIGHTS[name].candidates() if p.is_file()), None)


WeightsState = Literal["verified", "missing", "wrong hash"]


@dataclass(frozen=True)
class WeightsStatus:
    """What `weights_status` found for one weights file: the answer of `vaebench weights list`."""

    name: str
    state: WeightsState
    looked: tuple[Path, ...]  # where it was looked for: the spec's path, or the hub-cache candidates
    found: Path | None  # the file looked at (None when missing)
    digest: str | None  # its SHA-256 (hex; None when missing)


def weights_status(name: str, path: Path | None = None) -> WeightsStatus:
    """Whether weights `name` (at `path`, else in the hub cache) are there with the pinned hash.

    Reads the whole file once per process (`sha256_file`); downloads nothing.
    """
    entry = WEIGHTS[name]
    found = locate_weights(name, path)
    looked = tuple(entry.candidates()) if path is None else (Path(path).expanduser(),)
    if found is None or not found.is_file():
        return WeightsStatus(name, "missing", looked, None, None)
    digest = sha256_file(found)
    state: WeightsState = "verified" if digest.startswith(entry.hash_prefix) else "wrong hash"
    return WeightsStatus(name, state, looked, found, digest)


def verified_weights(name: str, path: Path | None = None, purpose: str = "") -> Path:
    """The path of weights `name`, checked against the hash pinned in its file name; UserError otherwise.

    `path`: a file the spec names instead of the hub cache (checked against the same hash). `purpose`
    says what needs the file (a spec field), for the error message. Nothing is downloaded here.
    """
    entry = WEIGHTS[name]
    status = weights_status(name, path)
    needed = f"{purpose} needs" if purpose else "vaebench needs"
    what = f"{needed} the {name} weights, file {entry.filename} ({entry.description})"
    fetch = f"`{fetch_command(name)}`"
    if status.state == "missing":
        looked = " and ".join(str(p) for p in status.looked)
        if path is not None:
            how = (
                f"Copy {entry.filename} there, or leave that path unset to use the torch hub cache, "
                f"where {fetch} puts it ({entry.cache_path()})."
            )
        else:
            how = (
                f"Run {fetch} on a machine with internet access (it downloads {entry.url} into the torch "
                f"hub cache and checks its hash), or copy the file there from another machine's cache "
                f"(TORCH_HOME sets the cache folder)."
            )
        raise UserError(f"{what}; it was looked for at {looked} and is not there. {how}")
    if status.state == "wrong hash":
        assert status.found is not None and status.digest is not None
        fix = (
            f"Delete it and run {fetch}."
            if path is None
            else f"Replace it with {entry.filename} ({fetch} downloads it into the torch hub cache)."
        )
        raise UserError(
            f"{what}, but {status.found} is not that file: its SHA-256 starts {status.digest[:12]}, and "
            f"{entry.filename} pins {entry.hash_prefix} (a truncated download, or other weights under its "
            f"name). {fix}"
        )
    assert status.found is not None
    return status.found


def fetch_weights(name: str, mirror: str | None = None, progress: bool = True) -> Path:
    """Download weights `name` into the torch hub cache (from `mirror`/<filename> when given) and return
    the path; a file already there with the right hash is kept and nothing is downloaded, while one with
    another hash under the file's name is replaced once the download has passed the hash check.

    torch.hub writes to a temporary file beside the target and checks the SHA-256 prefix before moving
    it into place, so an interrupted, truncated or corrupted download leaves nothing behind.
    """
    entry = WEIGHTS[name]
    path = entry.cache_path()
    status = weights_status(name)
    if status.state == "verified" and status.found is not None:
        return status.found
    url = entry.url if mirror is None else f"{mirror.rstrip('/')}/{entry.filename}"
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=entry.hash_prefix, progress=progress)
    except Exception as error:  # no network, DNS, timeout, HTTP error, truncated body, hash mismatch
        why = f"{type(error).__name__}: {error}"
        if isinstance(error, RuntimeError) and "invalid hash value" in str(error):
            why = (
                f"the bytes received are not {entry.filename}, whose name pins SHA-256 {entry.hash_prefix}: "
                f"a truncated download or another file at that address; {why}"
            )
        raise UserError(
            f"Downloading the {name} weights from {url} failed ({why}); nothing was written to {path}. "
            f"Check the network (or --mirror) and run `{fetch_command(name)}` again, or copy "
            f"{entry.filename} there from another machine."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    return path
