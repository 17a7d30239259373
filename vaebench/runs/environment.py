"""env.json: the git commit, package versions, device and command line a run was made with."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------- environment


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def source_git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding the vaebench source; (None, None) if not from one.

    The checkout must track vaebench's own files: a pip-installed copy inside some other repository
    (a venv in a project folder) reports None, not that repository's commit. Dirty means tracked
    files differ from the commit (untracked files such as runs/ do not count).
    """
    package = Path(__file__).resolve().parent
    if _git(["ls-files", "--error-unmatch", "__init__.py"], cwd=package) is None:
        return None, None
    commit = _git(["rev-parse", "HEAD"], cwd=package)
    if commit is None:
        return None, None
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd=package)
    return commit, (None if status is None else bool(status))


def _version(dist: str) -> str | None:
    """The version of an installed package; an imported module's own __version__ is preferred
    because it keeps build tags that the metadata may drop (torch "2.4.1+cu121")."""
    version = getattr(sys.modules.get(dist), "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_info(device: Any) -> dict[str, Any]:
    """What env.json records: code version, package versions, machine, device and command line.

    `device` is the torch.device (or its string) the run uses; for CUDA the GPU's name is recorded.
    Never raises for a missing git or package: those entries are None.
    """
    import torch

    device = torch.device(device)
    commit, dirty = source_git_state()
    device_name: str | None
    try:
        if device.type == "cuda":
            device_name = torch.cuda.get_device_name(device)
        elif device.type == "cpu":
            device_name = platform.processor() or platform.machine() or "cpu"
        else:
            device_name = device.type
    except Exception:  # no driver, bad index: record what we can
        device_name = None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "packages": {
            name: _version(name)
            for name in ("vaebench", "torch", "torchvision", "numpy", "pydantic", "wandb")
        },
        "torch_cuda": torch.version.cuda,
        "cudnn": cudnn,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device": str(device),
        "device_name": device_name,
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
