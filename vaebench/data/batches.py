"""The order in which a run sees its data (training batches and flips; validation and evaluation in
dataset order) and the uint8 -> float conversion.

Resumption is exact because the order is a pure function of (seed, step): the permutation of an epoch
depends on (seed, epoch) only, the flips of a step on (seed, step) only, and neither on an iterator's
state. A run resumed at step s asks for the batches from s on and gets those an uninterrupted run got.
The plain path (`vaebench.train.steps`) and the fast path (`vaebench.train.fastpath`) use the same functions,
so
they train on the same images in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    """Full batches per pass over the train split (the last partial batch is dropped)."""
    if train_size < batch_size:
        raise ValueError(f"the train split has {train_size} images, fewer than one batch of {batch_size}")
    return train_size // batch_size


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The permutation of the train split used in `epoch`: a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def batch_indices(n: int, batch_size: int, seed: int, start_step: int) -> Iterator[Tensor]:
    """Index batches from `start_step` on, forever; drop_last within each epoch."""
    per_epoch = steps_per_epoch(n, batch_size)
    step = start_step
    while True:
        epoch, offset = divmod(step, per_epoch)
        order = epoch_order(n, seed, epoch)
        for i in range(offset, per_epoch):
            yield order[i * batch_size : (i + 1) * batch_size]
        step = (epoch + 1) * per_epoch


class _Batches(torch.utils.data.Sampler):
    def __init__(self, indices: Iterator[Tensor]) -> None:
        self.indices = indices

    def __iter__(self) -> Iterator[list[int]]:
        for idx in self.indices:
            yield idx.tolist()


def train_batches(
    dataset: Dataset, batch_size: int, seed: int, start_step: int, workers: int
) -> Iterator[Tensor]:
    """uint8 batches (B, 3, H, W) in the deterministic order; in-memory datasets skip the DataLoader."""
    indices = batch_indices(len(dataset), batch_size, seed, start_step)
    images = getattr(dataset, "images", None)
    if isinstance(images, Tensor):
        return (images[idx] for idx in indices)
    loader = DataLoader(
        dataset, batch_sampler=_Batches(indices), num_workers=workers, persistent_workers=workers > 0
    )
    return iter(loader)


def eval_batches(dataset: Dataset, batch_size: int, limit: int | None = None) -> Iterator[Tensor]:
    """uint8 batches in dataset order (validation, evaluation, figures)."""
    n = len(dataset)
    images = getattr(dataset, "images", None)
    for b, start in enumerate(range(0, n, batch_size)):
        if limit is not None and b >= limit:
            return
        idx = range(start, min(n, start + batch_size))
        yield (
            images[start : idx.stop] if isinstance(images, Tensor) else torch.stack([dataset[i] for i in idx])
        )


def flip_mask(batch_size: int, seed: int, step: int) -> Tensor:
    """Which images of the step's batch are flipped: (B,) bool on the CPU, a pure function of (seed, step)."""
    g = torch.Generator().manual_seed(seed * 7_919 + step)
    return torch.rand(batch_size, generator=g) < 0.5


def flip_batch(x: Tensor, seed: int, step: int) -> Tensor:
    """Random horizontal flips, a pure function of (seed, step) so resumption replays them."""
    flip = flip_mask(len(x), seed, step).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def to_float(x: Tensor, device: torch.device) -> Tensor:
    """uint8 (B, 3, H, W) -> float32 in [0, 1] on `device`: the k/255 grid the likelihoods assume."""
    return x.to(device, non_blocking=True).float().div_(255.0)
