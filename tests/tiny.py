"""The tiny real run that the trainer tests share: experiments/quickstart.yaml shrunk to about a second.

Test modules import it as `tiny` (pytest's default import mode puts tests/ on sys.path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vaebench.experiments import Variant, load_experiment, select

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
# The quickstart experiment shrunk to 16x16 images, a one-level model and 12 steps (about a second).
TINY: dict[str, Any] = {
    "data.image_size": 16,
    "data.train_size": 64,  # 8 batches of 8: one epoch is 8 steps
    "data.val_size": 16,
    "data.test_size": 16,
    "model.stem_channels": 4,
    "model.channels": [8],
    "model.latent_dim": 4,
    "train.steps": 12,
    "train.batch_size": 8,
    "train.log_every": 2,
    "train.val_every": 4,
    "train.checkpoint_every": 4,
    "train.val_batches": 1,
    "eval.at_end": False,
    "tracking.mode": "disabled",
}


def tiny_variant(**overrides: Any) -> Variant:
    """The quickstart's isotropic variant with TINY and `overrides` (dotted keys, '__' for '.') applied."""
    extra = {k.replace("__", "."): v for k, v in overrides.items()}
    return select(load_experiment(QUICKSTART, {**TINY, **extra}), ["isotropic"])[0]


def set_args(overrides: dict[str, Any]) -> list[str]:
    """--set key=value for each override, values written as YAML literals ([8], false)."""
    args = []
    for key, value in overrides.items():
        text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
        args += ["--set", f"{key}={text}"]
    return args
