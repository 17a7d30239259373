"""Checkpoints that survive crashes, load safely, and resume with the exact same random numbers.

A checkpoint is a dict of plain data: tensors, numbers, strings, None, and lists/tuples/dicts of
them (model and optimizer state_dicts, the step, `spec.model_dump(mode="json")`, `rng_state()`).
Keeping to plain data lets `load_checkpoint` use `torch.load(weights_only=True)`, which cannot run
code hidden in a file, so a checkpoint downloaded from someone else is as safe to open as our own.
`save_checkpoint` checks this up front and names the offending key, instead of a resume failing later.

Writes are atomic (temp file in the same folder, fsync, os.replace, fsync of the folder; see
`vaebench.runfolder.atomic_writer`): a run killed while saving keeps its previous checkpoint.
"""

from __future__ import annotations

import pickle
import random
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vaebench.errors import UserError
from vaebench.runfolder import atomic_writer

_PLAIN_SCALARS = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size)


def _check_plain(obj: Any, where: str) -> None:
    """Raise TypeError at the first value that weights_only loading would refuse."""
    if isinstance(obj, (torch.Tensor, *_PLAIN_SCALARS)):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint key {k!r} at {where or '<root>'} must be a str or int")
            _check_plain(v, f"{where}.{k}" if where else str(k))
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    hint = " (use spec.model_dump(mode='json'))" if hasattr(obj, "model_dump") else ""
    hint = hint or (" (store str(path))" if isinstance(obj, Path) else "")
    raise TypeError(
        f"checkpoint value at {where or '<root>'} is a {type(obj).__module__}.{type(obj).__qualname__}; "
        f"checkpoints hold only tensors, numbers, strings and lists/dicts of them{hint}"
    )


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Atomically write `state` to `path` with torch.save (the previous file survives a crash mid-write).

    Raises TypeError (before touching the disk) if `state` holds anything but plain data.
    """
    _check_plain(state, "")
    with atomic_writer(Path(path)) as f:
        torch.save(dict(state), f)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`; tensors go to `map_location` (default CPU).

    A missing, truncated or corrupt file raises UserError saying which file and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"no checkpoint at {path}: train the run first (vaebench run), or check the run folder path."
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise UserError(
            f"checkpoint {path} cannot be read (truncated or corrupt): {type(e).__name__}: {e}. "
            "Delete it and resume from the other checkpoint in that folder, or restart the run."
        ) from None
    if not isinstance(state, dict):
        raise UserError(
            f"checkpoint {path} holds a {type(state).__name__}, not a dict: it was not "
            "written by vaebench.checkpoint.save_checkpoint."
        )
    return state


# ----------------------------------------------------------------------------- random number generators


def rng_state() -> dict[str, Any]:
    """Every global RNG state a training step may draw from, as plain checkpointable data.

    Keys: "python" (random module), "numpy" (legacy np.random global state, only if numpy is
    already imported), "torch" (CPU generator), "cuda" (one state per visible GPU, only if CUDA is
    available). DataLoader generators and torch.Generator objects are the caller's business.
    """
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    np = sys.modules.get("numpy")
    if np is not None:
        name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
        state["numpy"] = {
            "bit_generator": str(name),
            "keys": torch.from_numpy(keys.astype("int64")),  # uint32 (624,) held losslessly in int64
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the states captured by `rng_state`, so the next draws repeat exactly.

    Entries absent from `state` are left alone. CUDA states are restored for the GPUs present
    (resuming a GPU run on CPU skips them; extra GPUs keep their current state).
    """
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        import numpy as np

        s = state["numpy"]
        keys = s["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state((s["bit_generator"], keys, s["pos"], s["has_gauss"], s["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), device=i)
