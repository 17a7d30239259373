"""Stand-ins for the pretrained weights files (`vaebench.core.weights.WEIGHTS`) whose pins they pass.

Every load of VGG16 or the FID Inception checks the file's SHA-256 against the prefix its name pins, so a
test cannot simply write a random state dict under `vgg16-397923af.pth`: that is refused as a wrong file,
which is the point. `plant_weights` instead registers, for the test's duration, an entry whose file name
pins the stand-in's own hash (`vgg16-<its hash>.pth`, same URL otherwise) and writes the stand-in into a
temporary torch hub cache, where `verified_weights`, `fetch_weights` and the loaders find it as the real
file. Test modules import it as `pinned_weights` (pytest's default import mode puts tests/ on sys.path).

    path = plant_weights("vgg16", state_dict, tmp_path, monkeypatch)
    VGGPerceptual(["relu1_2"], weights="imagenet")  # loads state_dict, hash checked
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
import torch

from vaebench.core.weights import WEIGHTS, WeightsFile


def weights_bytes(content: dict[str, Any] | bytes) -> bytes:
    """The bytes of a weights file: `content` itself, or a state dict as torch.save writes it."""
    if isinstance(content, bytes):
        return content
    buffer = io.BytesIO()
    torch.save(content, buffer)
    return buffer.getvalue()


def pin_weights(name: str, content: dict[str, Any] | bytes, monkeypatch: pytest.MonkeyPatch) -> WeightsFile:
    """Register WEIGHTS[name] (a new name, or in place of the real entry) as a file whose name pins the
    SHA-256 of `content`'s bytes; nothing is written. The URL keeps the real entry's address (a stub
    download or a --mirror serves the bytes), and aliases are dropped (they pin the real hash)."""
    digest = hashlib.sha256(weights_bytes(content)).hexdigest()
    real = WEIGHTS.get(name)
    url = real.url if real is not None else f"https://example.invalid/weights/{name}-00000000.pth"
    stem, _, suffix = url.rpartition("/")[2].partition(".")
    filename = f"{stem.rsplit('-', 1)[0]}-{digest[:8]}.{suffix}"
    entry = WeightsFile(name, f"{url.rpartition('/')[0]}/{filename}", f"test weights {name}")
    if real is not None:
        entry = dataclasses.replace(real, url=entry.url, aliases=())
    monkeypatch.setitem(WEIGHTS, name, entry)
    return entry


def plant_weights(
    name: str, content: dict[str, Any] | bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Pin WEIGHTS[name] to `content` (`pin_weights`) and write it into a temporary torch hub cache,
    TORCH_HOME = tmp_path/torch_home (the same for every file a test plants); returns the file's path,
    <TORCH_HOME>/hub/checkpoints/<file name with the content's hash prefix>."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    entry = pin_weights(name, content, monkeypatch)
    path = entry.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(weights_bytes(content))
    return path
