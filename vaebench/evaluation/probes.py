"""Linear probes of CelebA's attributes on posterior means, beside a random-projection baseline.

For each attribute (40 in CelebA, `vaebench.data.attributes`) a logistic regression (scikit-learn, L2
penalty with C = eval.probes.c, lbfgs for at most eval.probes.max_iter iterations, no class weights) is
fitted on the posterior means E_q[z|x] of eval.probes.max_train train-split images (a sample without
replacement seeded by eval.probes.seed, or the whole split when it is smaller) and scored on the first
eval.probes.max_test evaluated images of eval.split by balanced accuracy: the mean of the two classes'
recalls, so 0.5 is chance whatever the attribute's frequency (CelebA's are far from even). Features
are standardised with the train sample's mean and standard deviation before the fit. Both sets of
posterior means come from a pass of the probes' own (the model in eval mode, fp32, no autocast), which
also reads the pixels the baseline projects.

The baseline is the same probe on a fixed Gaussian random projection of the image's [0, 1] pixels to as
many dimensions as the latent code (W ~ N(0, 1/D), D = 3 H W, seeded by eval.probes.seed): what a linear
probe reads from that many dimensions without any learning. A code whose probe beats it encodes the
attributes more linearly than the pixels do; one below it has discarded them.

An attribute present in all or none of the test images has no balanced accuracy (None) and is left out of
the means; one constant over the train sample is predicted as that constant. With eval.split = train the
test images may be among the fitted ones; the numbers then read high.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from vaebench import data as datasets
from vaebench.data.attributes import split_attributes
from vaebench.data.batches import eval_batches, to_float
from vaebench.data.spec import CelebADataSpec

_STREAM = 3  # evaluate.py's streams 0-1 and the quality samples' 2 are other numbers' noise
_SAMPLE, _PROJECTION = 0, 1


@dataclass(frozen=True)
class ProbeScores:
    """Balanced accuracy of each attribute's probe (None: one class only in the test labels)."""

    per_attribute: list[float | None]
    not_converged: int  # fits that stopped at max_iter

    @property
    def mean(self) -> float | None:
        """The mean over the attributes that have a balanced accuracy (None when none has)."""
        scored = [a for a in self.per_attribute if a is not None]
        return float(np.mean(scored)) if scored else None


def balanced_accuracy(truth: np.ndarray, predicted: np.ndarray) -> float | None:
    """Mean recall of the classes 0 and 1 of `truth` (n,); None when `truth` has one class only.

    >>> balanced_accuracy(np.array([1, 0, 0, 0]), np.array([1, 1, 0, 0]))
    0.8333333333333333
    """
    recalls = [float(np.mean(predicted[truth == k] == k)) for k in (0, 1) if np.any(truth == k)]
    return float(np.mean(recalls)) if len(recalls) == 2 else None


def fit_probes(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, c: float, max_iter: int
) -> ProbeScores:
    """One logistic regression per label column: fit on (train_x (n, F), train_y (n, A) 0/1), scored on
    (test_x (m, F), test_y (m, A)) by balanced accuracy. Features are standardised by train_x's statistics.
    """
    from sklearn.exceptions import ConvergenceWarning  # here: every command imports the metric registry
    from sklearn.linear_model import LogisticRegression

    mean, std = train_x.mean(axis=0), train_x.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)  # a constant feature stays 0 instead of dividing by zero
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    scores: list[float | None] = []
    not_converged = 0
    for k in range(train_y.shape[1]):
        labels = train_y[:, k]
        if labels.min() == labels.max():  # one class in the train sample: predict it
            predicted = np.full(len(test_x), labels[0])
        else:
            probe = LogisticRegression(C=c, max_iter=max_iter, class_weight=None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # counted below instead
                probe.fit(train_x, labels)
            not_converged += int(probe.n_iter_.max() >= max_iter)
            predicted = probe.predict(test_x)
        scores.append(balanced_accuracy(test_y[:, k], predicted))
    return ProbeScores(scores, not_converged)


def _generator(seed: int, index: int) -> torch.Generator:
    state = np.random.SeedSequence([seed % 2**64, _STREAM, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def random_projection(num_dims: int, width: int, seed: int) -> Tensor:
    """(D, width) float32, entries N(0, 1/D): the baseline's fixed map from flattened pixels to features."""
    return torch.randn(num_dims, width, generator=_generator(seed, _PROJECTION)) / math.sqrt(num_dims)


@torch.no_grad()
def features(
    model: Any, dataset: Dataset, projection: Tensor, batch: int, device: Any, progress: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """(posterior means (n, L), projections (n, W)) of every item of `dataset`, float64, from one pass
    over its images; the encoder runs in fp32 (no autocast), so train and test features are alike."""
    mus, projected = [], []
    weights = projection.to(device)
    for b, xb in enumerate(eval_batches(dataset, batch)):
        x = to_float(xb, device)  # (B, 3, H, W) in [0, 1]
        mus.append(model.encode(x)[0].double().cpu())  # (B, L)
        projected.append((x.flatten(1) @ weights).double().cpu())  # (B, W)
        if progress is not None:
            progress.update(b + 1, {})
    return torch.cat(mus).numpy(), torch.cat(projected).numpy()


def probes_apply(data_spec: Any, eval_spec: Any) -> bool:
    """Whether a run's evaluation probes: eval.probes.enabled and CelebA data."""
    return eval_spec is not None and eval_spec.probes.enabled and isinstance(data_spec, CelebADataSpec)


def probe_scores(ctx: Any) -> dict[str, Any]:
    """The probes' and the baseline's scores for an `EvalContext`, and their settings (computed once)."""
    if "probes" not in ctx.extra:
        ctx.extra["probes"] = _compute(ctx)
    return ctx.extra["probes"]


def _pass(ctx: Any, what: str, dataset: Dataset, projection: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """`features` of `dataset` with a progress bar named for `what` they are."""
    progress, batch, count = ctx.progress, ctx.eval_spec.batch_size, len(dataset)  # type: ignore[arg-type]
    if progress is not None:
        progress.start(f"probe features of {count:,} {what}", math.ceil(count / batch), 0)
    try:
        return features(ctx.model, dataset, projection, batch, ctx.device, progress)
    finally:
        if progress is not None:
            progress.finish()


def _compute(ctx: Any) -> dict[str, Any]:
    spec, data_spec, model = ctx.eval_spec.probes, ctx.data_spec, ctx.model
    num_test = ctx.num_images if spec.max_test is None else min(spec.max_test, ctx.num_images)
    names, test_y = split_attributes(data_spec, ctx.split, ctx.dataset, num_test)
    train_set = datasets.build_dataset(data_spec, "train")
    _, all_train_y = split_attributes(data_spec, "train", train_set)
    train_size = len(train_set)  # type: ignore[arg-type]
    num_train = min(spec.max_train, train_size)
    chosen = torch.randperm(train_size, generator=_generator(spec.seed, _SAMPLE))[:num_train]
    chosen = chosen.sort().values  # read in file order (a memory map or JPEGs: faster in order)
    projection = random_projection(ctx.num_dims, ctx.mu.shape[1], spec.seed)

    was_training = model.training
    model.eval()
    try:
        train_images, test_images = Subset(train_set, chosen.tolist()), Subset(ctx.dataset, range(num_test))
        train_mu, train_proj = _pass(ctx, "train images", train_images, projection)
        test_mu, test_proj = _pass(ctx, f"{ctx.split} images", test_images, projection)
    finally:
        model.train(was_training)
    train_y = all_train_y[chosen.numpy()]
    probe = fit_probes(train_mu, train_y, test_mu, test_y, spec.c, spec.max_iter)
    baseline = fit_probes(train_proj, train_y, test_proj, test_y, spec.c, spec.max_iter)
    settings = {
        "probe": "logistic regression (scikit-learn, L2, lbfgs), standardised features",
        "c": spec.c,
        "max_iter": spec.max_iter,
        "class_weight": None,
        "seed": spec.seed,
        "train_split": "train",
        "train_images": num_train,
        "test_split": ctx.split,
        "test_images": num_test,
        "attributes": len(names),
        "attributes_scored": sum(a is not None for a in probe.per_attribute),
        "not_converged": probe.not_converged,
        "baseline": f"Gaussian random projection of the [0, 1] pixels to {ctx.mu.shape[1]} dims",
        "baseline_not_converged": baseline.not_converged,
    }
    return {
        "probe_balanced_accuracy": probe.mean,
        "probe_baseline_balanced_accuracy": baseline.mean,
        "probe_attribute_accuracy": dict(zip(names, probe.per_attribute, strict=True)),
        "probe_baseline_attribute_accuracy": dict(zip(names, baseline.per_attribute, strict=True)),
        "probe_train_images": num_train,
        "probe_test_images": num_test,
        "settings": settings,
    }
