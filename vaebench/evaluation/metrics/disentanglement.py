"""Disentanglement (MIG, DCI, SAP, FactorVAE) with disentanglement_lib's definitions and sample counts.

Computed only for data with discrete factors (`vaebench.data.factors.factor_source` is not None: the
entries' `applies_to`), from one pass of their own per evaluation, cached in the context: factor codes
drawn uniformly (eval.disentanglement.num_train + num_test, and the FactorVAE score's batches with one
factor held fixed), rendered, and encoded by the evaluated model to posterior means, in fp32 on the
evaluation's device, in batches of eval.batch_size. The codes come from CPU generators seeded by
eval.disentanglement.seed, one stream per image set, so they depend neither on the device nor on the
other counts. MIG, DCI and SAP share the train and test images, as the lib's metrics do with its seed.
The pure scores are `vaebench.evaluation.disentanglement`. `ctx.extra["disentanglement_protocol"]` holds
the counts, the factors and the wall seconds of each score (eval/<split>.json's settings).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaebench.data.batches import to_float
from vaebench.data.factors import FactorSource, factor_source
from vaebench.evaluation import disentanglement as scores
from vaebench.evaluation.metrics import EvalContext, Metric, register

_TRAIN, _TEST, _VARIANCE, _VOTES_TRAIN, _VOTES_EVAL = range(5)  # the generator streams of the image sets


def has_factors(data_spec: Any) -> bool:
    """Whether the data of a run's data section has discrete factors (the metrics' `applies_to`)."""
    return data_spec is not None and factor_source(data_spec) is not None


def disentanglement_scores(ctx: EvalContext) -> dict[str, Any]:
    """Every disentanglement key of this evaluation (computed once)."""
    if "disentanglement" not in ctx.extra:
        ctx.extra["disentanglement"] = _compute(ctx)
    return ctx.extra["disentanglement"]


def _generator(seed: int, stream: int) -> torch.Generator:
    state = np.random.SeedSequence([seed % 2**64, stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def fixed_factor_codes(
    source: FactorSource, num_votes: int, batch_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(codes (V, B, K) int64, fixed (V,) int64): V batches of B uniform codes, batch v with factor
    fixed[v] (uniform over the K factors) set to its value in the batch's first code, as the lib's
    `_generate_training_sample`."""
    fixed = torch.randint(len(source.factor_sizes), (num_votes,), generator=generator)
    codes = source.sample_codes(num_votes * batch_size, generator).reshape(num_votes, batch_size, -1)
    votes = torch.arange(num_votes)
    codes[votes, :, fixed] = codes[votes, 0, fixed].unsqueeze(1)
    return codes, fixed


class _Encoder:
    """Renders codes and encodes them to posterior means, with one progress bar over the whole pass."""

    def __init__(self, ctx: EvalContext, source: FactorSource, image_sets: list[int]) -> None:
        self.model, self.device, self.source = ctx.model, ctx.device, source
        self.batch = ctx.eval_spec.batch_size
        self.progress, self.done = ctx.progress, 0
        if self.progress is not None:
            calls = sum(math.ceil(n / self.batch) for n in image_sets)
            self.progress.start(f"disentanglement: {sum(image_sets):,} factor images", calls, 0)

    @torch.no_grad()
    def __call__(self, codes: Tensor) -> np.ndarray:
        """codes (N, K) int64 -> posterior means (N, L) float32 numpy."""
        out = []
        for chunk in codes.split(self.batch):
            images = self.source.render_codes(chunk)  # (b, 3, S, S) uint8
            out.append(self.model.encode(to_float(images, self.device))[0].float().cpu())
            self.done += 1
            if self.progress is not None:
                self.progress.update(self.done, {})
        return torch.cat(out).numpy()

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.finish()


def comparable(spec: Any) -> bool:
    """Whether eval.disentanglement's counts are at least disentanglement_lib's (and its batch and bins
    equal them): only then do the scores compare with published ones."""
    lib, fvae = scores.LIB_DEFAULTS, spec.factor_vae
    return (
        spec.num_train >= lib["num_train"]
        and spec.num_test >= lib["num_test"]
        and spec.num_bins == lib["num_bins"]
        and fvae.batch_size == lib["factor_vae_batch_size"]  # larger batches make the votes easier
        and fvae.num_train >= lib["factor_vae_num_train"]
        and fvae.num_eval >= lib["factor_vae_num_eval"]
        and fvae.num_variance_estimate >= lib["factor_vae_num_variance_estimate"]
    )


def _compute(ctx: EvalContext) -> dict[str, Any]:
    spec, source = ctx.eval_spec.disentanglement, factor_source(ctx.data_spec)
    assert source is not None  # applies_to
    fvae = spec.factor_vae
    image_sets = [spec.num_train, spec.num_test, fvae.num_variance_estimate]
    image_sets += [fvae.num_train * fvae.batch_size, fvae.num_eval * fvae.batch_size]
    seconds: dict[str, float] = {}
    was_training = ctx.model.training
    ctx.model.eval()
    encode = _Encoder(ctx, source, image_sets)
    try:
        started = time.perf_counter()
        codes_train = source.sample_codes(spec.num_train, _generator(spec.seed, _TRAIN))  # (N, K)
        codes_test = source.sample_codes(spec.num_test, _generator(spec.seed, _TEST))
        mus_train, mus_test = encode(codes_train), encode(codes_test)  # (N, L)
        y_train, y_test = codes_train.numpy(), codes_test.numpy()
        seconds["encode"] = time.perf_counter() - started

        started = time.perf_counter()
        mig = scores.mig(mus_train, y_train, spec.num_bins)
        seconds["mig"] = time.perf_counter() - started
        started = time.perf_counter()
        dci = scores.dci(mus_train, y_train, mus_test, y_test)
        seconds["dci"] = time.perf_counter() - started
        started = time.perf_counter()
        sap = scores.sap(mus_train, y_train, mus_test, y_test, continuous_factors=False)
        seconds["sap"] = time.perf_counter() - started

        started = time.perf_counter()
        variance = encode(source.sample_codes(fvae.num_variance_estimate, _generator(spec.seed, _VARIANCE)))
        batches = {}
        for name, stream, votes in (
            ("train", _VOTES_TRAIN, fvae.num_train),
            ("eval", _VOTES_EVAL, fvae.num_eval),
        ):
            codes, fixed = fixed_factor_codes(source, votes, fvae.batch_size, _generator(spec.seed, stream))
            mus = encode(codes.flatten(0, 1)).reshape(votes, fvae.batch_size, -1)  # (V, B, L)
            batches[name] = (mus, fixed.numpy())
        factor_vae = scores.factor_vae_score(
            variance, *batches["train"], *batches["eval"], num_factors=len(source.factor_sizes)
        )
        seconds["factor_vae"] = time.perf_counter() - started  # with its own images' encoding
    finally:
        encode.finish()
        ctx.model.train(was_training)

    is_comparable = comparable(spec)
    ctx.extra["disentanglement_protocol"] = {
        "factors": dict(zip(source.factor_names, source.factor_sizes, strict=True)),
        **spec.model_dump(),
        "prune_threshold": scores.PRUNE_THRESHOLD,
        "sap_continuous_factors": False,
        "comparable": is_comparable,
        "wall_s": {k: round(v, 3) for k, v in seconds.items()},
    }
    return {
        "mig": mig,
        "dci_disentanglement": dci.disentanglement,
        "dci_completeness": dci.completeness,
        "dci_informativeness": dci.informativeness_test,
        "dci_informativeness_train": dci.informativeness_train,
        "sap": sap,
        "factor_vae": factor_vae.eval_accuracy,
        "factor_vae_train": factor_vae.train_accuracy,
        "factor_vae_active_dims": factor_vae.num_active_dims,
        "disentanglement_num_train": spec.num_train,
        "disentanglement_num_test": spec.num_test,
        "factor_vae_num_eval": fvae.num_eval,
        "disentanglement_comparable": is_comparable,
    }


def _score(key: str) -> Any:
    return lambda ctx: disentanglement_scores(ctx)[key]


_LIB = "disentanglement_lib's definition (vaebench.evaluation.disentanglement)"
for _key, _label, _fmt, _better, _report, _description in (
    ("mig", "MIG", ".3f", True, True, "mutual information gap (Chen et al. 2018)"),
    ("dci_disentanglement", "DCI disentanglement", ".3f", True, True,
     "DCI disentanglement (Eastwood & Williams 2018): each latent serves one factor"),
    ("dci_completeness", "DCI completeness", ".3f", True, True,
     "DCI completeness: each factor lives in one latent"),
    ("dci_informativeness", "DCI informativeness", ".3f", True, True,
     "DCI informativeness: test accuracy of the boosted trees predicting each factor, mean over factors"),
    ("dci_informativeness_train", "DCI train accuracy", ".3f", None, False,
     "train accuracy of DCI's boosted trees, mean over factors"),
    ("sap", "SAP", ".3f", True, True, "separated attribute predictability (Kumar et al. 2018), discrete"),
    ("factor_vae", "FactorVAE score", ".3f", True, True,
     "FactorVAE score (Kim & Mnih 2018): eval accuracy of the majority-vote classifier"),
    ("factor_vae_train", "FactorVAE train accuracy", ".3f", None, False,
     "train accuracy of the FactorVAE score's majority-vote classifier"),
    ("factor_vae_active_dims", "FactorVAE active dims", "d", None, False,
     "latents the FactorVAE score uses: global standard deviation >= 0.05"),
    ("disentanglement_num_train", "disentanglement train images", "d", None, False,
     "images MIG, DCI and SAP are fitted on (lib: 10,000)"),
    ("disentanglement_num_test", "disentanglement test images", "d", None, False,
     "images DCI and SAP are tested on (lib: 5,000)"),
    ("factor_vae_num_eval", "FactorVAE eval votes", "d", None, False,
     "votes the FactorVAE score is computed on (lib: 5,000 of 64 images)"),
    ("disentanglement_comparable", "disentanglement lib counts", "", None, False,
     "whether every count is at least disentanglement_lib's: only then compare with published scores"),
):  # fmt: skip
    register(Metric(
        _key, _label, _fmt, _better, _score(_key), f"{_description}; {_LIB}", order=40,
        report=_report, applies_to=lambda data, _: has_factors(data),
    ))  # fmt: skip
