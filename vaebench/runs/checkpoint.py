"""Checkpoints that survive crashes, load safely, and resume with the exact same random numbers.

A checkpoint is a dict of plain data: tensors, numbers, strings, None, and lists/tuples/dicts of
them (model and optimizer state_dicts, the step, `spec.model_dump(mode="json")`, `rng_state()`).
Keeping to plain data lets `load_checkpoint` use `torch.load(weights_only=True)`, which cannot run
code hidden in a file, so a checkpoint downloaded from someone else is as safe to open as our own.
`save_checkpoint` checks this up front and names the offending key, instead of a resume failing later.

Writes are atomic (temp file in the same folder, fsync, os.replace, fsync of the folder; see
`vaebench.runs.io.atomic_writer`): a run killed while saving keeps its previous checkpoint.

Integrity: torch's zip reader checks no CRC, so one flipped bit in tensor data loads without a word.
Each checkpoint therefore stores, under "integrity", a SHA-256 of its own content (keys, plain values
and every tensor's dtype, shape and bytes, in order), and `load_checkpoint` recomputes it: a mismatch,
like any file torch cannot read, is a `CorruptCheckpoint`. Checkpoints written before this field
existed load unverified. Hashing costs about a second per GB (checkpoints are written every few
hundred steps).

Formats: a checkpoint's "loop" entry (the training loop's state, `vaebench.train.state.LoopState`) has
changed over versions; `upgrade` brings an older one up to today's before a run resumes from it.

A full disk or unwritable folder while saving is one `UserError` naming the folder, the free space
and the checkpoint's size (`vaebench.runs.io.write_error`), with the temp file removed.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from vaebench.config.spec import RunSpec
from vaebench.core.errors import UserError
from vaebench.runs.io import atomic_writer, moved_aside, write_error
from vaebench.runs.paths import RunPaths

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


INTEGRITY_KEY = "integrity"  # {"sha256": hex digest of the rest of the checkpoint (`content_digest`)}


class CorruptCheckpoint(UserError):
    """A checkpoint file that cannot be read, or whose content does not match its stored checksum."""


class CheckpointWarning(UserWarning):
    """A corrupt or missing checkpoint was replaced by an older one (the run resumes from that one)."""


def _digest_into(h: Any, obj: Any) -> None:
    """Feed `obj` to the hash `h` canonically: type tags, lengths, keys in order, tensors' bytes."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}".encode())
        for k, v in obj.items():
            h.update(f"K{k!r}".encode())
            _digest_into(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}".encode())
        for v in obj:
            _digest_into(h, v)
    elif isinstance(obj, bytes):
        h.update(f"B{len(obj)}".encode())
        h.update(obj)
    else:
        h.update(f"S{type(obj).__name__}:{obj!r}".encode())


def content_digest(state: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a checkpoint's content, its own INTEGRITY_KEY entry left out."""
    h = hashlib.sha256()
    _digest_into(h, {k: v for k, v in state.items() if k != INTEGRITY_KEY})
    return h.hexdigest()


def state_nbytes(state: Any) -> int:
    """Bytes of tensor data in `state`: what a checkpoint of it takes on disk, to within a few KB."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, Mapping):
        return sum(state_nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_nbytes(v) for v in state)
    return len(state) if isinstance(state, (str, bytes)) else 0


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Atomically write `state` (plus its checksum) to `path` with torch.save; the previous file
    survives a crash mid-write.

    Raises TypeError (before touching the disk) if `state` holds anything but plain data, and a
    UserError naming the folder, its free space and the checkpoint's size when the disk is full or
    the folder cannot be written (torch reports a failed write as "unexpected pos"); the temp file
    is removed either way.
    """
    path = Path(path)
    _check_plain(state, "")
    payload = {**state, INTEGRITY_KEY: {"sha256": content_digest(state)}}
    try:
        with atomic_writer(path) as f:
            torch.save(payload, f)
    except (OSError, RuntimeError) as e:
        err = write_error(e, path, state_nbytes(state), what="checkpoint")
        if err is None:
            raise
        raise err from None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`, verifying its checksum; tensors go to `map_location`.

    A missing file raises UserError; a truncated, unreadable or altered one (checksum mismatch) raises
    CorruptCheckpoint, whose message says what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"no checkpoint at {path}: train the run first (vaebench run), or check the run folder path."
        )
    advice = (
        "Rerunning `vaebench run` resumes the run from its newest intact checkpoint (it keeps "
        "train.keep_checkpoints of them, and best.pt) and keeps this file as *.corrupt; "
        "`vaebench evaluate --checkpoint best` (or last) evaluates the other file."
    )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # the unpickler fails in many ways on garbage (even IndexError)
        raise CorruptCheckpoint(
            f"checkpoint {path} cannot be read (truncated or corrupt): {type(e).__name__}: "
            f"{str(e)[:200]}. {advice}"
        ) from None
    if not isinstance(state, dict):
        raise CorruptCheckpoint(
            f"checkpoint {path} holds a {type(state).__name__}, not a dict: it was not "
            "written by vaebench.runs.checkpoint.save_checkpoint."
        )
    stored = state.pop(INTEGRITY_KEY, None)
    if stored is not None and (not isinstance(stored, dict) or stored.get("sha256") != content_digest(state)):
        raise CorruptCheckpoint(
            f"checkpoint {path} is corrupt: its content does not match the SHA-256 stored in it "
            f"(a changed bit on disk or in transfer). {advice}"
        )
    return state


# ----------------------------------------------------------------------------- older formats

VAL_LOSS = "objective"
"""What val/loss (and so the loop's best_val) means: the objective's own loss at annealing weight 1.
Checkpoints written before objectives existed have no "val_loss" key; their best_val left out free bits."""


def upgrade(ckpt: dict[str, Any], spec: RunSpec, say: Callable[[str], None]) -> dict[str, Any]:
    """Bring a checkpoint of an older vaebench up to today's format (in place), before a run resumes from it.

    One step per format change, oldest first; a checkpoint already in today's format is left as it is.
    - Before objectives (no loop["val_loss"]): best_val was compared without free bits. With free bits
      on, the comparison restarts (best_val = inf), so that best.pt keeps following today's val/loss:
      the next validation replaces it. `say` tells the user so.
    """
    loop = ckpt["loop"]
    if loop.get("val_loss") != VAL_LOSS:
        loop["val_loss"] = VAL_LOSS
        if spec.anneal.free_bits > 0 and math.isfinite(loop["best_val"]):
            say(
                f"val/loss now includes free bits (the objective's own loss); best.pt from step "
                f"{loop.get('best_step')} ({loop['best_val']:.6g} without them) is replaced at the next "
                "validation"
            )
            loop["best_val"] = math.inf
    return ckpt


# ----------------------------------------------------------------------------- the checkpoints of a run


def previous_dir(paths: RunPaths) -> Path:
    """checkpoints/previous/: the last.pt files before the newest, as step<k>.pt (hard links if possible)."""
    return paths.checkpoints / "previous"


def _previous_files(paths: RunPaths) -> list[tuple[int, Path]]:
    """(step, file) of the kept previous checkpoints, newest first."""
    found = []
    folder = previous_dir(paths)
    for p in folder.glob("step*.pt") if folder.is_dir() else []:
        digits = p.stem.removeprefix("step")
        if digits.isdigit():
            found.append((int(digits), p))
    return sorted(found, reverse=True)


class RunCheckpoints:
    """checkpoints/last.pt, best.pt and the `keep - 1` last.pt files before the newest one.

    Saving last.pt first keeps the current file as previous/step<k>.pt (a hard link, so no copy and no
    extra space until last.pt is replaced), then writes the new one, then drops the oldest kept ones.
    `resume` falls back to them when last.pt is corrupt or missing.
    """

    def __init__(self, paths: RunPaths, keep: int) -> None:
        self.paths = paths
        self.keep = keep
        self.last_step: int | None = None  # step held by last.pt, when this object knows it

    def save(self, path: Path, state: Mapping[str, Any]) -> None:
        """Write last.pt (rotating the kept ones) or best.pt."""
        if Path(path) != self.paths.last:
            save_checkpoint(path, state)
            return
        step = state["loop"]["step"]
        last = self.paths.last
        if self.keep > 1 and last.exists() and self.last_step is not None and self.last_step != step:
            _keep_copy(last, previous_dir(self.paths) / f"step{self.last_step}.pt")
        save_checkpoint(last, state)
        self.last_step = step
        for _, old in _previous_files(self.paths)[max(self.keep - 1, 0) :]:
            old.unlink(missing_ok=True)

    def resume(self, say: Callable[[str], None]) -> tuple[dict[str, Any], Path] | None:
        """The checkpoint to resume from and its file; None when the run has no checkpoint at all.

        last.pt when intact. Otherwise the newest intact one of previous/ and best.pt, with one
        CheckpointWarning (also passed to `say`) naming what was wrong; a corrupt last.pt is kept as
        last.pt.corrupt (or .corrupt-<time>) so that it is not tried again. Raises CorruptCheckpoint
        when there are checkpoints but none is intact.
        """
        last = self.paths.last
        problems: list[str] = []
        if last.exists():
            try:
                state = load_checkpoint(last)
                self.last_step = state["loop"]["step"]
                return state, last
            except CorruptCheckpoint as err:
                problems.append(str(err).split(". Rerunning")[0])
        candidates = [p for _, p in _previous_files(self.paths)]
        candidates += [self.paths.best] if self.paths.best.exists() else []
        if not candidates and not problems:
            return None
        chosen: tuple[dict[str, Any], Path] | None = None
        for path in candidates:
            try:
                state = load_checkpoint(path)
            except CorruptCheckpoint:
                problems.append(f"{path} is corrupt too")
                continue
            if chosen is None or state["loop"]["step"] > chosen[0]["loop"]["step"]:
                chosen = state, path
        if chosen is None:
            raise CorruptCheckpoint(
                f"no intact checkpoint in {self.paths.checkpoints}: {'; '.join(problems)}. To train this run "
                "again from step 0, rerun with --force (the old folder is kept as <seed>.replaced-<time>)."
            )
        state, path = chosen
        reason = problems[0] if problems else f"{last} is missing"
        kept = ""
        if last.exists():
            kept = f" {last} is kept as {moved_aside(last, 'corrupt').name}."
        message = (
            f"{reason}. Resuming from {path} (step {state['loop']['step']}) instead; metrics.jsonl rows "
            f"after that step are removed and trained again.{kept}"
        )
        warnings.warn(message, CheckpointWarning, stacklevel=3)
        say(message)
        return state, path


def _keep_copy(src: Path, dst: Path) -> None:
    """Make `dst` hold `src`'s content: a hard link, or an atomic copy where links are not supported."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


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
