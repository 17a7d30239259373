"""The typed run specification: one pydantic model per section.

A `RunSpec` fully describes one training run (minus its seed, which the experiment
enumerates). Every section forbids unknown keys, so a typo in a YAML file or a
`--set` override is an error that names the key, never a silently ignored setting.

Units used throughout: images are 8-bit (uint8 on disk and in the data pipeline);
the model sees them as floats in [0, 1] (x / 255); likelihoods are in nats per image
unless a name says `bpd` (bits per dimension, D = C * H * W).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from vaebench.core.sections import Float, Int, Positive, Section, tagged_union
from vaebench.model.decoders import DECODER_HEADS
from vaebench.model.decoders.isotropic import IsotropicDecoderSpec
from vaebench.model.decoders.sigma_vae import SigmaVAEDecoderSpec
from vaebench.model.decoders.variance import VarianceDecoderSpec
from vaebench.objectives import OBJECTIVES, ObjectiveSpec
from vaebench.objectives.elbo import ElboSpec

__all__ = [  # the decoder and objective sections live beside their code; importable from here too
    "ElboSpec",
    "IsotropicDecoderSpec",
    "ObjectiveSpec",
    "SigmaVAEDecoderSpec",
    "VarianceDecoderSpec",
]


# ----------------------------------------------------------------------------- data


class SyntheticDataSpec(Section):
    """Procedurally generated images with known generative factors (runs anywhere, no download)."""

    kind: Literal["synthetic"] = "synthetic"
    train_size: Int = Field(4096, ge=1, description="Images in the train split.")
    val_size: Int = Field(
        256, ge=2, description="Images in the validation split (2 at least: variances over images)."
    )
    test_size: Int = Field(
        256, ge=2, description="Images in the test split (2 at least: variances over images)."
    )
    image_size: Int = Field(64, ge=8, le=1024, description="Side of the square images, in pixels.")
    seed: Int = Field(0, description="Seed of the generator; split i uses seed + i, so splits differ.")
    flip: bool = Field(False, description="Random horizontal flips of training images.")
    num_workers: Int = Field(0, ge=0, description="DataLoader worker processes.")


class CelebADataSpec(Section):
    """CelebA from a local folder (torchvision's or the Kaggle mirror's layout)."""

    kind: Literal["celeba"] = "celeba"
    root: Path = Field(
        Path("data"), description="Folder holding `celeba/` (torchvision layout) or the Kaggle mirror."
    )
    crop: Int = Field(
        148, ge=1, description="Centre crop (pixels) of the 178x218 aligned images before resizing."
    )
    image_size: Int = Field(
        64, ge=8, le=1024, description="Side of the square images after resizing, in pixels."
    )
    cache_dir: Path | None = Field(
        None,
        description="Folder of the uint8 cache written by `vaebench data prepare` (default: <root>/cache).",
    )
    flip: bool = Field(False, description="Random horizontal flips of training images.")
    num_workers: Int = Field(
        2, ge=0, description="DataLoader worker processes (JPEG decoding without a cache)."
    )
    mixed_sizes: Literal["refuse", "resize", "skip"] = Field(
        "refuse",
        description=(
            "What to do with images that are not CelebA's aligned 178x218: refuse (stop before preparing "
            "or training and list them), resize (scale each, keeping its aspect ratio, to cover 178x218 "
            "and centre-crop it to 178x218 before data.crop), or skip (leave them out; the list is "
            "written to skipped-images.txt in the run folder and recorded in the cache's sidecar)."
        ),
    )


TAGGED_SECTIONS: dict[str, tuple[str, list[type[Section]]]] = {
    "data": ("synthetic", [SyntheticDataSpec, CelebADataSpec]),
    "model.decoder": ("isotropic", [h.spec for h in DECODER_HEADS.values()]),
    "loss": ("elbo", [o.spec for o in OBJECTIVES.values()]),
}
"""The spec's tagged sections by dotted path: (default kind, the section model of each kind). Their
unions below, and `vaebench.config.experiments.apply_overrides`' kind changes, are built from it."""

DataSpec = tagged_union(*TAGGED_SECTIONS["data"])


# ----------------------------------------------------------------------------- model


DecoderSpec = tagged_union(*TAGGED_SECTIONS["model.decoder"])
"""`model.decoder`: the tagged union of the registered decoder heads' sections (`vaebench.model.decoders`)."""


class ModelSpec(Section):
    """The reference ResNet-style conv VAE; widths and depths shrink it for CPU runs."""

    stem_channels: Int = Field(64, ge=1, description="Channels of the initial conv at full resolution.")
    channels: list[Positive] = Field(
        [128, 256, 512], min_length=1, description="Channels of each level; each level halves the resolution."
    )
    blocks_per_level: Int = Field(1, ge=0, description="Residual bottleneck blocks per level.")
    latent_dim: Int = Field(256, ge=1, description="Size of the latent z.")
    se_ratio: Int = Field(4, ge=1, description="Squeeze-and-excitation channel reduction.")
    bottleneck_ratio: Int = Field(4, ge=1, description="Channel reduction inside residual bottlenecks.")
    layerscale_init: Float = Field(1e-6, description="Initial LayerScale gamma of residual branches.")
    max_groups: Int = Field(
        32, ge=1, description="GroupNorm groups (the largest divisor of the width up to this)."
    )
    decoder: DecoderSpec = Field(  # type: ignore[valid-type]
        default_factory=IsotropicDecoderSpec
    )


# ----------------------------------------------------------------------------- loss and annealing


LossSpec = tagged_union(*TAGGED_SECTIONS["loss"])
"""`loss`: the tagged union (on `loss.kind`) of the registered objectives' sections (`vaebench.objectives`).

Every objective has the shared fields of `ObjectiveSpec` (likelihood, perceptual_weight, ...); a `loss`
section without `kind` is the ELBO (`ElboSpec`: beta and the shared fields), as before objectives existed.
"""


class AnnealSpec(Section):
    """KL weight as a pure function of the training step (see `vaebench.objectives.annealing`)."""

    schedule: Literal["constant", "linear", "cosine", "cyclical"] = "linear"
    start: Float = Field(0.0, ge=0, description="Weight (fraction of loss.beta) at step 0.")
    end: Float = Field(1.0, ge=0, description="Weight (fraction of loss.beta) after warm-up.")
    warmup_steps: Int = Field(
        1000, ge=0, description="Steps to go from start to end (linear, cosine; cyclical uses ramp_fraction)."
    )
    cycles: Int = Field(4, ge=1, description="cyclical only: number of cycles over train.steps.")
    ramp_fraction: Float = Field(
        0.5, gt=0, le=1, description="cyclical only: fraction of each cycle spent ramping (Fu et al. 2019)."
    )
    free_bits: Float = Field(
        0.0, ge=0, description="Free bits: KL per latent dim below this (nats) is not penalised."
    )


# ----------------------------------------------------------------------------- optimisation and training


class OptimSpec(Section):
    name: Literal["adam", "adamw"] = "adam"
    lr: Float = Field(1e-4, gt=0, description="Peak learning rate.")
    betas: tuple[Annotated[Float, Field(ge=0, lt=1)], Annotated[Float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.999), description="Adam's (beta1, beta2), each in [0, 1)."
    )
    weight_decay: Float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine"] = Field("constant", description="Learning rate after warm-up.")
    warmup_steps: Int = Field(0, ge=0, description="Linear learning-rate warm-up.")


class TrainSpec(Section):
    steps: Int | None = Field(None, ge=1, description="Optimizer steps (give steps or epochs).")
    epochs: Float | None = Field(
        None, gt=0, description="Passes over the train split (give steps or epochs)."
    )
    batch_size: Int = Field(32, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 on CPU."
    )
    grad_clip: Float | None = Field(
        1.0, gt=0, description="Max global gradient norm; null disables clipping."
    )
    log_every: Int = Field(50, ge=1, description="Steps between lines of metrics.jsonl.")
    val_every: Int = Field(500, ge=1, description="Steps between validations (and best-checkpoint updates).")
    val_batches: Int | None = Field(
        None, ge=1, description="Limit validation to this many batches (null: all)."
    )
    checkpoint_every: Int = Field(500, ge=1, description="Steps between writes of checkpoints/last.pt.")
    skip_bad_batches: Int = Field(0, ge=0, description="Non-finite batches skipped before the run stops.")
    keep_checkpoints: Int = Field(
        2,
        ge=1,
        description="last.pt files kept (the newest and the ones before it, in checkpoints/previous/): a "
        "corrupt last.pt falls back to the one before it. Each costs one checkpoint of disk.",
    )
    compile: Literal["auto", "on", "off"] = Field(
        "auto",
        description="torch.compile the fast path's train step: auto on CUDA only (with CUDA graphs), on "
        "also on CPU (takes the fast path there; inductor compiles for minutes), off never. A compile "
        "failure falls back to eager with one warning.",
    )

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainSpec:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of train.steps and train.epochs")
        return self


class EvalSpec(Section):
    split: Literal["train", "val", "test"] = "test"
    iw_samples: Int = Field(
        100, ge=1, description="K of the importance-weighted bound (1000 for final numbers)."
    )
    batch_size: Int = Field(64, ge=1, description="Images per forward pass during evaluation.")
    mi_batch_size: Int = Field(
        256, ge=2, description="Minibatch of the mutual-information estimator; MI is bounded by its log."
    )
    active_threshold: Float = Field(0.01, gt=0, description="Var_x E_q[z_d|x] above this makes dim d active.")
    max_images: Int | None = Field(
        None, ge=2, description="Evaluate on at most this many images, 2 at least (null: all)."
    )
    at_end: bool = Field(True, description="Evaluate automatically when training finishes.")
    seed: Int = 0


class TrackingSpec(Section):
    project: str = "vaebench"
    entity: str | None = None
    mode: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto", description="auto: online when logged in, offline otherwise (WANDB_MODE wins when set)."
    )
    tags: list[str] = Field(default_factory=list)


class SlurmSpec(Section):
    """Resources of the SLURM job of each run, for `vaebench run --executor slurm` (flags override these).

    Not part of what a run trains: changing them never blocks resuming a run folder.
    """

    partition: str | None = Field(None, description="SLURM partition (null: the cluster's default).")
    account: str | None = Field(None, description="SLURM account to charge (null: the user's default).")
    time_min: Int = Field(1440, ge=1, description="Time limit of each job, in minutes.")
    gpus_per_job: Int = Field(1, ge=0, description="GPUs of each job (one run uses one).")
    cpus_per_job: Int = Field(8, ge=1, description="CPU cores of each job (data loading workers).")
    mem_gb: Int | None = Field(None, ge=1, description="Memory of each job in GB (null: the default).")


class RunSpec(Section):
    """Everything one training run needs, apart from its seed."""

    data: DataSpec = Field(default_factory=SyntheticDataSpec)  # type: ignore[valid-type]
    model: ModelSpec = Field(default_factory=ModelSpec)
    loss: LossSpec = Field(default_factory=ElboSpec)  # type: ignore[valid-type]
    anneal: AnnealSpec = Field(default_factory=AnnealSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    train: TrainSpec = Field(default_factory=lambda: TrainSpec(steps=10_000))
    eval: EvalSpec = Field(default_factory=EvalSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    slurm: SlurmSpec = Field(default_factory=SlurmSpec)
    seeds: list[Annotated[Int, Field(ge=0)]] = Field(
        [0], min_length=1, description="One run per seed (folder seed<k>), each once; 0 or more."
    )

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            raise ValueError(
                f"each seed may appear once (two runs of one seed share a folder); repeated: {repeated}"
            )
        return seeds

    @model_validator(mode="after")
    def _trainable(self) -> RunSpec:
        """Cross-section checks that would otherwise fail as a torch error after the run folder exists."""
        factor = 2 ** len(self.model.channels)
        if self.data.image_size % factor != 0:
            raise ValueError(
                f"data.image_size ({self.data.image_size}) must be a multiple of {factor}: model.channels "
                f"has {len(self.model.channels)} levels, each halving the resolution. Change data.image_size "
                "or the number of entries in model.channels."
            )
        if isinstance(self.data, SyntheticDataSpec) and self.train.batch_size > self.data.train_size:
            raise ValueError(
                f"train.batch_size ({self.train.batch_size}) is larger than the train split "
                f"(data.train_size = {self.data.train_size}); lower the batch size or enlarge the split."
            )
        return self


def shared_fields(path: str) -> set[str]:
    """The fields every kind of the tagged section at `path` has (besides `kind`): kept across a kind change.

    For `loss` these are `ObjectiveSpec`'s (likelihood, perceptual_weight, ...): switching an experiment
    from the ELBO to IWAE keeps its likelihood and perceptual settings and drops the ELBO's beta.
    """
    _, members = TAGGED_SECTIONS.get(path, ("", []))
    if not members:
        return set()
    common = set.intersection(*(set(m.model_fields) for m in members))
    return common - {"kind"}
