"""The run specification: `RunSpec` assembles every section, and holds those of the run's stages.

A `RunSpec` fully describes one training run (minus its seed, which the experiment enumerates). Every
section forbids unknown keys, so a typo in a YAML file or a `--set` override is an error that names the
key, never a silently ignored setting.

Where each section lives: a component's section sits beside the code it configures (`data` in
`vaebench.data.spec`, `model` in `vaebench.model.spec`, `model.decoder` beside each decoder head, `loss`
beside each objective, `anneal` in `vaebench.objectives.annealing`), and no component imports this
module. The sections of the stages that consume the whole assembled spec (`optim`/`train` for
`vaebench.train`, `eval` for `vaebench.evaluation`, `tracking` for `vaebench.runs.tracking`, `slurm` for
`vaebench.launch`) are defined here: those stages sit above the assembly, so their sections cannot sit
in their packages without an import cycle.

Units used throughout: images are 8-bit (uint8 on disk and in the data pipeline); the model sees them
as floats in [0, 1] (x / 255); likelihoods are in nats per image unless a name says `bpd` (bits per
dimension, D = C * H * W).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from vaebench.core.sections import Float, Int, Section, tagged_union
from vaebench.data.spec import DATA_KINDS, DataSpec, SyntheticDataSpec
from vaebench.model.spec import DECODER_KINDS, ModelSpec
from vaebench.objectives import OBJECTIVES
from vaebench.objectives.annealing import AnnealSpec
from vaebench.objectives.elbo import ElboSpec

TAGGED_SECTIONS: dict[str, tuple[str, list[type[Section]]]] = {
    "data": DATA_KINDS,
    "model.decoder": DECODER_KINDS,
    "loss": ("elbo", [o.spec for o in OBJECTIVES.values()]),
}
"""The spec's tagged sections by dotted path: (default kind, the section model of each kind).
`vaebench.config.experiments.apply_overrides`' kind changes are built from it."""

LossSpec = tagged_union(*TAGGED_SECTIONS["loss"])
"""`loss`: the tagged union (on `loss.kind`) of the registered objectives' sections (`vaebench.objectives`).

Every objective has the shared fields of `ObjectiveSpec` (likelihood, perceptual_weight, ...); a `loss`
section without `kind` is the ELBO (`ElboSpec`: beta and the shared fields), as before objectives existed.
"""


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


QualityMetric = Literal["fid", "kid", "recon_fid", "precision_recall", "lpips", "ssim"]
"""What `eval.metrics` can ask for besides the likelihood bounds (README "Sample and reconstruction
quality"): each name turns on metric-registry entries (`vaebench.evaluation.metrics.quality`)."""


class QualitySpec(Section):
    """The protocol of the sample- and reconstruction-quality metrics that `eval.metrics` turns on.

    Scores are comparable only under one protocol: every field here (and the weights' hashes, the data's
    crop and fingerprint) is recorded with each score, and the report never mixes two protocols.
    """

    num_samples: Int = Field(
        10_000,
        ge=2,
        description="Prior samples z ~ N(0, T^2 I), decoded to their mean, for FID, KID and precision/recall "
        "(10,000: the published protocol; FID is biased upward at fewer, so reduced counts are recorded).",
    )
    reference_images: Int | None = Field(
        None, ge=2, description="Images of eval.split the samples are compared with (null: the whole split)."
    )
    kid_subset_size: Int = Field(
        1000, ge=2, description="Images per KID subset (capped at the smaller sample count, recorded)."
    )
    kid_subsets: Int = Field(100, ge=1, description="KID subsets: the score is their mean (and std).")
    temperature: Float = Field(1.0, gt=0, description="T of the prior samples z ~ N(0, T^2 I).")
    weights: Literal["pretrained", "random"] = Field(
        "pretrained",
        description="random: seeded random Inception/VGG weights, for tests only; every score made with "
        "them is marked not comparable.",
    )
    inception_path: str | None = Field(
        None, description="The FID Inception weights file (null: the torch hub cache); its hash is checked."
    )
    vgg_path: str | None = Field(
        None, description="torchvision's VGG16 weights file (null: the torch hub cache); its hash is checked."
    )
    batch_size: Int | None = Field(
        None, ge=1, description="Images per feature-extractor call (null: 500 on CUDA, 50 on CPU)."
    )
    cache_dir: str | None = Field(
        None,
        description="Where reference features of a split are cached, keyed by the whole protocol "
        "(null: $XDG_CACHE_HOME/vaebench/features, default ~/.cache/vaebench/features).",
    )


class FactorVAEScoreSpec(Section):
    """Sample counts of the FactorVAE score: votes of batches with one factor held fixed (defaults:
    disentanglement_lib's)."""

    batch_size: Int = Field(64, ge=2, description="Images per vote, one factor held fixed across them.")
    num_train: Int = Field(10_000, ge=1, description="Votes the majority-vote classifier is fitted on.")
    num_eval: Int = Field(5_000, ge=1, description="Votes it is scored on (the FactorVAE score).")
    num_variance_estimate: Int = Field(
        10_000, ge=2, description="Images the global variance of each latent is estimated on."
    )


class DisentanglementSpec(Section):
    """Sample counts of the disentanglement metrics (MIG, DCI, SAP, FactorVAE), computed when the data has
    discrete factors (`vaebench.data.factors`). Counts below disentanglement_lib's (the defaults) are
    recorded and marked not comparable to published values (`vaebench.evaluation.disentanglement`)."""

    num_train: Int = Field(10_000, ge=10, description="Images the scores are fitted on (MIG, DCI, SAP).")
    num_test: Int = Field(5_000, ge=10, description="Images DCI and SAP are tested on.")
    num_bins: Int = Field(20, ge=2, description="MIG: equal-width histogram bins of each latent.")
    factor_vae: FactorVAEScoreSpec = Field(default_factory=FactorVAEScoreSpec)
    seed: Int = Field(0, description="Seed of the images drawn for the scores.")


class ProbeSpec(Section):
    """Linear probes of CelebA's 40 attributes on posterior means, beside a random-projection baseline
    (`vaebench.evaluation.probes`); every setting here is recorded with the scores."""

    enabled: bool = Field(
        False,
        description="Fit the attribute probes at evaluation (CelebA only; needs list_attr_celeba.txt or "
        ".csv beside the partition file).",
    )
    max_train: Int = Field(
        10_000,
        ge=2,
        description="Train-split images the probes are fitted on (a seeded sample of a larger split).",
    )
    max_test: Int | None = Field(
        None, ge=2, description="Evaluated images the probes are scored on, the first ones (null: all)."
    )
    c: Float = Field(1.0, gt=0, description="Inverse L2 strength C of each logistic regression.")
    max_iter: Int = Field(
        1000, ge=1, description="Iterations of each fit at most (lbfgs); unconverged ones are counted."
    )
    seed: Int = Field(0, description="Seed of the train sample and of the baseline's random projection.")


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
    metrics: list[QualityMetric] = Field(
        default_factory=list,
        description="Sample and reconstruction quality to compute as well: fid, kid, recon_fid, "
        "precision_recall, lpips, ssim (each costs a pass of its own; see eval.quality).",
    )
    quality: QualitySpec = Field(default_factory=QualitySpec)
    disentanglement: DisentanglementSpec = Field(default_factory=DisentanglementSpec)
    probes: ProbeSpec = Field(default_factory=ProbeSpec)

    @field_validator("metrics")
    @classmethod
    def _distinct_metrics(cls, metrics: list[str]) -> list[str]:
        return list(dict.fromkeys(metrics))  # [fid, fid] asks for fid once


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
    signal_delay_s: Int = Field(
        90,
        ge=10,
        description="Seconds before the time limit when SLURM sends SIGUSR2: the run checkpoints and the job "
        "is requeued. At most half of slurm.time_min; SLURM may signal up to 60 s early.",
    )
    max_requeues: Int = Field(
        10, ge=0, description="Requeues of a job at most (time limits and preemptions together); 0: never."
    )
    array_parallelism: Int | None = Field(
        None,
        ge=1,
        description="Runs queued together go as one job array per slurm section; at most this many of its "
        "jobs run at once (null: as many as SLURM allows).",
    )

    @model_validator(mode="after")
    def _signal_before_the_limit(self) -> SlurmSpec:
        problem = signal_delay_problem(self.time_min, self.signal_delay_s)
        if problem:
            raise ValueError(problem)
        return self


def signal_delay_problem(time_min: int, signal_delay_s: int) -> str | None:
    """Why SLURM's warning signal `signal_delay_s` before a `time_min` limit is unusable, or None.

    A job must train most of its time: a delay over half the limit would signal soon after the start
    (the job would checkpoint and be requeued, again and again, having trained little or nothing).
    """
    if 2 * signal_delay_s <= 60 * time_min:
        return None
    return (
        f"slurm.signal_delay_s = {signal_delay_s} s is not well below slurm.time_min = {time_min} min: "
        f"SLURM would signal the job {max(60 * time_min - signal_delay_s, 0)} s after it starts, to stop "
        "it and requeue it. Keep slurm.signal_delay_s at most half of the time limit: raise "
        f"slurm.time_min or lower slurm.signal_delay_s (at most {30 * time_min} s for this time limit)."
    )


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
