"""The three dataset splits and their order (the order gives split indices and synthetic seeds)."""

from __future__ import annotations

from typing import Literal, get_args

Split = Literal["train", "val", "test"]

SPLITS: tuple[Split, ...] = get_args(Split)


def split_index(split: str) -> int:
    """0 for train, 1 for val, 2 for test: CelebA's partition codes and the synthetic seed offsets."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return SPLITS.index(split)
