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


def verified_weights(name: str, path: Path | None = None, purpose: str = "") -> Path:
    """The path of weights `name`, checked against the hash pinned in its file name; UserError otherwise.

    `path`: a file the spec names instead of the hub cache (checked against the same hash). `purpose`
    says what needs the file (a spec field), for the error message. Nothing is downloaded here.
    """
    entry = WEIGHTS[name]
    found = locate_weights(name, path)
    needed = f"{purpose} needs" if purpose else "vaebench needs"
    if found is None or not found.is_file():
        looked = [str(found)] if path is not None else [str(p) for p in entry.candidates()]
        raise UserError(
            f"{needed} the {entry.description} weights, file {entry.filename}; it was looked for at "
            f"{' and '.join(looked)} and is not there. Run `{fetch_command(name)}` on a machine with "
            f"internet access (it downloads {entry.url} into the torch hub cache and checks its hash), "
            f"or copy the file there from another machine's cache (TORCH_HOME sets the cache folder)."
        )
    digest = sha256_file(found)
    if not digest.startswith(entry.hash_prefix):
        raise UserError(
            f"{needed} the {entry.description} weights, but {found} is not that file: its SHA-256 starts "
            f"{digest[:12]}, and {entry.filename} pins {entry.hash_prefix} (a truncated download, or "
            f"other weights under its name). Delete it and run `{fetch_command(name)}`."
        )
    return found


def fetch_weights(name: str, mirror: str | None = None, progress: bool = True) -> Path:
    """Download weights `name` into the torch hub cache (from `mirror`/<filename> when given) and return
    the path; a file already there with the right hash is kept and nothing is downloaded.

    torch.hub writes to a temporary file beside the target and checks the SHA-256 prefix before moving
    it into place, so an interrupted, truncated or corrupted download leaves nothing behind.
    """
    entry = WEIGHTS[name]
    path = entry.cache_path()
    existing = locate_weights(name)
    if existing is not None and sha256_file(existing).startswith(entry.hash_prefix):
        return existing
    url = entry.url if mirror is None else f"{mirror.rstrip('/')}/{entry.filename}"
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=entry.hash_prefix, progress=progress)
    except Exception as error:  # no network, DNS, timeout, HTTP error, truncated body, hash mismatch
        raise UserError(
            f"Downloading the {name} weights from {url} failed ({type(error).__name__}: {error}); "
            f"nothing was written to {path}. Check the network (or --mirror) and run "
            f"`{fetch_command(name)}` again, or copy {entry.filename} there from another machine."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    return path
