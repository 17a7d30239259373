"""The training loop's state: what a checkpoint needs, besides the model, optimizer and RNGs, to resume.

In a checkpoint it is a plain dict under "loop" (`LoopState.to_dict`), so that `torch.load(weights_only=True)`
reads it and run folders of every version stay readable; older layouts of that dict are brought up to
date by `vaebench.runs.checkpoint.upgrade` before `LoopState.from_dict` reads them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vaebench.runs.checkpoint import VAL_LOSS


def zero_sums(terms: tuple[str, ...]) -> dict[str, float]:
    """Empty metric sums: n (finite steps, an int) and one 0.0 per loss term."""
    return {"n": 0, **dict.fromkeys(terms, 0.0)}


@dataclass
class LoopState:
    """Where the loop stands after `step` steps (the keys of a checkpoint's "loop" dict).

    acc: "n" (finite steps since the last metrics row) and each loss term summed over them (nats per
    image), from which the next row's train/ values are means. best_val: the lowest val/loss so far
    (what best.pt holds) and best_step its step, None before the first finite validation.
    skipped_batches: non-finite steps in the whole run (their updates skipped). val_loss: what val/loss
    means (`VAL_LOSS`), so that a checkpoint from before objectives can be told apart.
    """

    step: int = 0
    best_val: float = math.inf
    acc: dict[str, float] = field(default_factory=dict)
    skipped_batches: int = 0
    val_loss: str = VAL_LOSS
    best_step: int | None = None

    @classmethod
    def fresh(cls, terms: tuple[str, ...]) -> LoopState:
        """The state at step 0 of a run whose objective has these `terms`."""
        return cls(acc=zero_sums(terms))

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's "loop" entry: plain data, keys in the order checkpoints have always had;
        "best_step" only once a validation set it."""
        out: dict[str, Any] = {
            "step": self.step,
            "best_val": self.best_val,
            "acc": dict(self.acc),
            "skipped_batches": self.skipped_batches,
            "val_loss": self.val_loss,
        }
        if self.best_step is not None:
            out["best_step"] = self.best_step
        return out

    @classmethod
    def from_dict(cls, loop: Mapping[str, Any]) -> LoopState:
        """Read a checkpoint's "loop" entry (upgraded first: `vaebench.runs.checkpoint.upgrade`)."""
        return cls(
            step=loop["step"],
            best_val=loop["best_val"],
            acc=dict(loop["acc"]),
            skipped_batches=loop["skipped_batches"],
            val_loss=loop["val_loss"],
            best_step=loop.get("best_step"),
        )
