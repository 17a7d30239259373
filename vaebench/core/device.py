"""Which device a run uses and in what precision: small pure helpers shared by training and evaluation.

Kept apart from the trainer so that evaluation, the fast path and the report can use them without
importing the training loop.
"""

from __future__ import annotations

from typing import Literal

import torch

from vaebench.core.errors import UserError

Device = str
"""auto, cpu, cuda or cuda:N (`vaebench.cli.parse_device` checks what a person types)."""


def resolve_device(device: Device) -> torch.device:
    """auto, cpu, cuda or cuda:N as a torch.device; a CUDA device torch cannot see is a UserError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"--device {device} was asked for, but torch sees no CUDA device (torch.cuda.is_available() "
            "is False). Use --device cpu, or install a CUDA build of torch."
        )
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise UserError(
            f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s), numbered from 0 "
            "(CUDA_VISIBLE_DEVICES renumbers them). Give one of those, or --device cuda."
        )
    return resolved


def autocast_dtype(precision: Literal["auto", "fp32", "bf16"], device: torch.device) -> torch.dtype | None:
    """train.precision as an autocast dtype: bf16 on CUDA by default; fp32 (None) on CPU, where bf16 is
    slow and would break bit-exact resumption."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None
