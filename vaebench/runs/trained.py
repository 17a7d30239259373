"""A trained model from a run folder: its recorded spec, a checkpoint of it, and the model rebuilt from both.

Here, not in evaluation, because the runner's end of a run, evaluation and the report's write-up figures all
load a trained model, and none of them should depend on another to do it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
import torch

from vaebench.config.spec import RunSpec
from vaebench.core.errors import UserError
from vaebench.model.vae import VAE, build_model
from vaebench.runs.checkpoint import load_checkpoint
from vaebench.runs.document import read_run_document
from vaebench.runs.paths import RunPaths

Likelihood = Literal["discretized", "continuous"]

IW_CHUNK_SAMPLES = 16  # IW samples decoded per call: the decoder sees 16 x batch_size images at once
EVAL_FORWARD_IMAGES_CUDA = 4096  # images per encoder/decoder call on CUDA (10-15 GB of bf16 activations)
_SAMPLE_STREAM, _MI_STREAM = 0, 1

Checkpoint = Literal["best", "last"]
"""Which checkpoint of a run: best.pt (the best validation loss) or last.pt (the last step)."""


def load_run_spec(run_dir: Path) -> RunSpec:
    """The RunSpec recorded in a run folder's spec.yaml; UserError if this is not a run folder."""
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise UserError(
            f"{paths.root} is not a folder: pass a run folder such as runs/<experiment>/<variant>/seed0."
        )
    if not paths.spec.is_file():
        raise UserError(
            f"{paths.root} is not a run folder: it has no spec.yaml. Pass the folder of one run, "
            "e.g. runs/<experiment>/<variant>/seed0 (the one holding spec.yaml and checkpoints/)."
        )
    document = read_run_document(paths.spec)
    try:
        return RunSpec.model_validate(document["spec"])
    except pydantic.ValidationError as e:
        raise UserError(
            f"{paths.spec} holds a spec this version of vaebench cannot read (written by another "
            f"version?):\n{e}"
        ) from None


def checkpoint_path(run_dir: Path, checkpoint: Checkpoint) -> Path:
    """checkpoints/<checkpoint>.pt of a run folder; UserError naming what exists if it is missing."""
    paths = RunPaths(Path(run_dir))
    path = paths.best if checkpoint == "best" else paths.last
    if not path.is_file():
        have = sorted(p.stem for p in paths.checkpoints.glob("*.pt")) if paths.checkpoints.is_dir() else []
        hint = (
            f"it has {', '.join(have)}.pt: use --checkpoint {have[0]}"
            if have
            else "it has no checkpoints yet: train it first (vaebench run)"
        )
        raise UserError(f"{paths.root} has no checkpoints/{checkpoint}.pt; {hint}.")
    return path


def load_trained_model(
    ckpt_file: Path, spec: RunSpec, device: torch.device, state: dict[str, Any] | None = None
) -> tuple[VAE, int | None]:
    """The model described by `spec` with the weights of `ckpt_file`, on `device`, and the checkpoint's step.

    UserError when the checkpoint holds no weights of that model (spec.yaml edited after training). The
    model is left in whatever mode `build_model` gives; the step is None for a checkpoint without one.
    state: `ckpt_file` already loaded by the caller (`load_checkpoint`), so that it is not read twice.
    """
    state = load_checkpoint(ckpt_file) if state is None else state
    model = build_model(spec.model, spec.data.image_size)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as e:
        raise UserError(
            f"{ckpt_file} does not hold weights of the model its run's spec.yaml describes "
            f"({type(e).__name__}: {str(e)[:300]}). Was spec.yaml edited after training?"
        ) from None
    return model.to(device), state.get("loop", {}).get("step")


def check_run_folder(run_dir: Path, checkpoint: Checkpoint = "best") -> None:
    """Raise UserError unless `run_dir` holds a readable spec.yaml and the checkpoint (cheap: no loading)."""
    load_run_spec(run_dir)
    checkpoint_path(run_dir, checkpoint)
