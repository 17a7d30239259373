"""Training objectives as a registry: one module per objective, picked by `loss.kind`.

An objective is a spec section (a subclass of `ObjectiveSpec` with a `kind` literal) and a function
from one batch to named loss terms, registered with `register(...)` in its own module of this package.
Every module here is imported when the package is, so adding an objective is adding one file (see the
README's "Extending vaebench"); `vaebench.config.spec` builds `LossSpec`, the tagged union of all
registered specs, from `OBJECTIVES`.

The terms come back as a dict of scalar tensors (batch means, nats per image unless a term's doc says
otherwise): "loss" (what is minimised), "recon" (-log p(x|z), one posterior sample) and "kl" (the
closed-form KL(q(z|x) || p(z))) always, so that every run logs a comparable -ELBO (`bpd_elbo`); then
the objective's own terms, named in `Objective.terms`. The training paths and validation sum whatever
terms there are without knowing their names, and log each as `train/<term>` / `val/<term>`.

Import rule for entries: `vaebench.core.sections`, `vaebench.model.likelihoods`,
`vaebench.objectives.annealing` and this
package, not `vaebench.config.spec` (which is assembled from the entries) nor `vaebench.model.vae`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field
from torch import Tensor

from vaebench.core.sections import Float, Section, import_entries, register_entry

if TYPE_CHECKING:
    from vaebench.model.vae import VAE, VAEOutput
    from vaebench.objectives.perceptual import VGGPerceptual

REQUIRED_TERMS = ("loss", "recon", "kl")


class ObjectiveSpec(Section):
    """Settings every objective shares: how p(x|z) is scored, and the optional VGG perceptual term.

    loss = objective + perceptual_weight * perceptual, for every objective.
    """

    kind: str
    likelihood: Literal["discretized", "continuous"] = Field(
        "discretized",
        description="discretized: Gaussian integrated over each of the 256 bins (exact for 8-bit data); "
        "continuous: Gaussian density plus the log(1/255) bin-width correction.",
    )
    perceptual_weight: Float = Field(
        0.0, ge=0, description="Weight of the VGG16 perceptual loss; 0 disables it."
    )
    perceptual_layers: list[Literal["relu1_2", "relu2_2", "relu3_3", "relu4_3"]] = Field(
        ["relu1_2", "relu2_2", "relu3_3"], min_length=1, description="VGG16 activations compared."
    )
    vgg_weights: Literal["imagenet", "random"] = Field(
        "imagenet",
        description="imagenet: torchvision's VGG16_Weights.IMAGENET1K_V1 from the torch cache; "
        "random: untrained weights (tests only).",
    )


@dataclass(frozen=True)
class Batch:
    """What an objective sees of one training (or validation) step."""

    x: Tensor  # (B, 3, H, W) in [0, 1], on the k/255 grid
    out: VAEOutput  # model(x): posterior (mu, logvar), one sample z, decoder (mean, log_scale)
    model: VAE  # for objectives that need more than one sample (IWAE decodes k per image)
    weight: Tensor | float  # the annealing schedule's fraction at this step (anneal.*), 1 in validation
    dataset_size: int  # images in the train split (beta-TCVAE's minibatch-weighted sampling needs it)
    free_bits: float  # anneal.free_bits, nats per latent dim
    amp: Callable[[], AbstractContextManager] = nullcontext  # the forward pass's autocast (train.precision)

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The decoder's (mean, log_scale) for more latent samples z (N, L), under the run's autocast."""
        with self.amp():
            return self.model.decode(z)

    def recon(self, likelihood: str) -> Tensor:
        """-log p(x|z) of the batch's one posterior sample, nats per image, batch mean ()."""
        return -self.model.log_prob(self.x, self.out.mean, self.out.log_scale, likelihood).mean()


LossFn = Callable[[ObjectiveSpec, Batch], dict[str, Tensor]]


@dataclass(frozen=True)
class Objective:
    kind: str  # the `loss.kind` that selects it
    spec: type[ObjectiveSpec]  # its section; `kind: Literal["<kind>"]` is its tag
    loss: LossFn  # (spec, batch) -> {"loss", "recon", "kl", *terms}
    terms: tuple[str, ...] = ()  # its own terms besides REQUIRED_TERMS, logged as train/<term>
    summary: str = ""  # one line for docs and `vaebench spec show`


OBJECTIVES: dict[str, Objective] = {}


def register(objective: Objective) -> Objective:
    """Add an objective to the registry (called by its module at import time)."""
    return register_entry(OBJECTIVES, objective.kind, objective, "loss.kind", objective.spec)


def loss_terms(spec: ObjectiveSpec) -> tuple[str, ...]:
    """Every term a run of this `loss` section computes, in `TrainingLoss`'s fixed order: the required
    terms, the objective's own, then "perceptual" when loss.perceptual_weight > 0 (the trainer builds a
    VGG exactly then). What the run logs as train/<term> and val/<term>."""
    extra = ("perceptual",) if spec.perceptual_weight > 0 else ()
    return (*REQUIRED_TERMS, *OBJECTIVES[spec.kind].terms, *extra)


class TrainingLoss:
    """The run's objective plus the perceptual term: what both training paths and validation call.

    `terms` lists every key the call returns, in a fixed order, so that the fast path can keep their
    sums in one device tensor.
    """

    def __init__(
        self,
        spec: ObjectiveSpec,
        *,
        dataset_size: int,
        free_bits: float = 0.0,
        perceptual: VGGPerceptual | None = None,
        amp: Callable[[], AbstractContextManager] = nullcontext,
    ) -> None:
        if perceptual is None and spec.perceptual_weight > 0:
            raise ValueError(
                f"loss.perceptual_weight is {spec.perceptual_weight} but no VGGPerceptual was given; "
                "build one with VGGPerceptual(loss.perceptual_layers, loss.vgg_weights)"
            )
        self.spec, self.objective = spec, OBJECTIVES[spec.kind]
        self.dataset_size, self.free_bits, self.perceptual = dataset_size, free_bits, perceptual
        self.amp = amp  # autocast of the model's forward pass; the objective's arithmetic stays fp32
        # a VGG given with perceptual_weight 0 still computes (and logs) the term, unweighted
        extra = ("perceptual",) if perceptual is not None and spec.perceptual_weight == 0 else ()
        self.terms: tuple[str, ...] = (*loss_terms(spec), *extra)

    def __call__(self, model: VAE, x: Tensor, weight: Tensor | float) -> dict[str, Tensor]:
        """The terms for a batch x (B, 3, H, W) in [0, 1] at annealing fraction `weight`."""
        with self.amp():
            out = model(x)
        batch = Batch(x, out, model, weight, self.dataset_size, self.free_bits, self.amp)
        terms = self.objective.loss(self.spec, batch)
        missing = [t for t in self.terms if t not in terms and t != "perceptual"]
        if missing:
            raise KeyError(f"objective {self.spec.kind!r} returned no {missing} term(s)")
        if self.perceptual is not None:
            # computed whenever a VGG is given (so it is logged), weighted by perceptual_weight
            terms["perceptual"] = self.perceptual(out.mean, x).mean()
            terms["loss"] = terms["loss"] + self.spec.perceptual_weight * terms["perceptual"]
        return terms


import_entries(__name__, __path__)
