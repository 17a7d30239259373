"""Evaluation of a trained VAE on one split: likelihood bounds, reconstructions and latent usage.

`evaluate_model` computes the numbers for a model in memory; `evaluate_run` does it for a run folder
(rebuilding the model from spec.yaml and a checkpoint) and records them. Metric keys are W&B-style,
"<split>/<name>"; every quantity is averaged over the split's images (the first `eval.max_images`):

    bpd_elbo       -ELBO in bits/dim at beta = 1, whatever beta the run trained with: one posterior sample
                   per image for E_q log p(x|z), the KL in closed form (lower variance than a sampled KL)
    bpd_iw         -L_K in bits/dim, the importance-weighted bound with K = iw_samples (Burda et al. 2015);
                   its first sample is the ELBO's sample (common random numbers), so bpd_elbo - bpd_iw
                   is not blurred by independent noise
    recon_bpd      -E_q log p(x|z) in bits/dim (the same sample as bpd_elbo): recon_bpd + kl / (D ln 2)
                   = bpd_elbo exactly
    kl, kl_per_dim KL(q(z|x) || N(0, I)) in nats per image, and per latent dim (a list; sums to kl)
    recon_mse      mean squared error of the posterior-mean reconstruction decode(mu)'s mean, on [0, 1]
                   pixels: per image mean over the D values, then the mean over images
    psnr           10 log10(1 / recon_mse) dB: the PSNR of the split's mean MSE (torchmetrics' default
                   reduction). The mean of per-image PSNRs, which some papers quote, is >= this (Jensen)
    active_units   dims whose posterior mean varies over the split by more than eval.active_threshold
                   (and active_units_frac = active_units / latent_dim)
    mutual_info    minibatch estimate of I(x; z) in nats with minibatches of mutual_info_batch images:
                   eval.mi_batch_size, or the whole split when it is smaller (bounded by log of it)
    collapsed_dims dims whose mean KL is below 0.01 nats; kl_top5_frac: KL share of the 5 largest dims
    iw_samples, num_images, checkpoint_step: the settings the numbers depend on most

D = 3 * H * W (12288 at 64x64); bits/dim = nats / (D ln 2) for 8-bit data on the k/255 grid. Run
folders are evaluated with the exact discretized Gaussian likelihood whatever `loss.likelihood` the
run trained with: the continuous density on undequantised 8-bit data is not a bound on anything (see
`vaebench.model.likelihoods.continuous_gaussian_log_prob`), and the same decoder defines both.

Determinism: the noise of batch b is drawn from a CPU generator seeded from (eval.seed, b), so the
numbers depend on (seed, batch_size) but not on K for bpd_elbo, nor on the device for the draws; the
first K' samples of the IW bound with K > K' are the K' samples. Mutual information has its own
stream, so it does not change with K either.

Speed: on CUDA several batches go through the model together and the IW bound decodes many samples per
call (`forward_images`, EVAL_FORWARD_IMAGES_CUDA images per call), each batch still with its own noise:
the numbers are those of one batch at a time, up to float rounding.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydantic
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vaebench import data as datasets
from vaebench.config.spec import EvalSpec
from vaebench.core.device import Device, autocast_dtype, resolve_device
from vaebench.core.errors import UserError
from vaebench.core.progress import Reporter
from vaebench.data.attributes import check_attributes
from vaebench.data.batches import eval_batches, to_float
from vaebench.evaluation.estimators import RowBlockGenerators, elbo, iw_log_likelihood
from vaebench.evaluation.metrics import EvalContext, compute_metrics
from vaebench.evaluation.metrics.latent import COLLAPSE_THRESHOLD_NATS
from vaebench.evaluation.quality import check_required_weights
from vaebench.model.vae import VAE
from vaebench.runs.checkpoint import load_checkpoint
from vaebench.runs.document import read_run_document, training_summary, update_summary
from vaebench.runs.io import atomic_write_json, moved_aside, read_json
from vaebench.runs.metrics_log import read_metrics
from vaebench.runs.paths import RunPaths
from vaebench.runs.tracking import Tracker
from vaebench.runs.trained import Checkpoint, checkpoint_path, load_run_spec, load_trained_model

Likelihood = Literal["discretized", "continuous"]

IW_CHUNK_SAMPLES = 16  # IW samples decoded per call: the decoder sees 16 x batch_size images at once
EVAL_FORWARD_IMAGES_CUDA = 4096  # images per encoder/decoder call on CUDA (10-15 GB of bf16 activations)
_SAMPLE_STREAM, _MI_STREAM = 0, 1


@dataclass
class EvalResult:
    """The numbers of one evaluation (see the module docstring for what each key means)."""

    metrics: dict[str, Any]  # flat "<split>/<name>" keys: what summary.json and W&B get
    per_dim: dict[str, list[Any]]  # kl_per_dim (nats), posterior_mean_var, posterior_var_mean, active
    settings: dict[str, Any]  # what the numbers depend on: K, batch sizes, seed, images, ...
    standard_errors: dict[str, float]  # of the split means over images, bits/dim
    per_image: dict[str, Tensor]  # (N,) float64: elbo, recon_log_prob, kl, iw (nats), mse

    def record(self) -> dict[str, Any]:
        """What eval/<split>.json keeps for one setting (everything but the per-image tensors)."""
        return {
            "settings": self.settings,
            "metrics": self.metrics,
            "standard_errors": self.standard_errors,
            "per_dim": self.per_dim,
        }


# ----------------------------------------------------------------------------- one model, one split


def _generator(seed: int, stream: int, index: int) -> torch.Generator:
    """A CPU generator for (seed, stream, index), with statistically independent streams (SeedSequence)."""
    state = np.random.SeedSequence([seed % 2**64, stream, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def _image_batches(dataset: Dataset, num: int, batch_size: int) -> Iterator[Tensor]:
    """The first `num` images of `dataset` as uint8 batches, in order."""
    seen = 0
    for xb in eval_batches(dataset, batch_size, limit=math.ceil(num / batch_size)):
        xb = xb[: num - seen]
        seen += len(xb)
        yield xb


def _groups(batches: Iterator[Tensor], size: int) -> Iterator[tuple[int, list[Tensor]]]:
    """Consecutive runs of `size` batches (the last may be shorter), with the index of each first batch."""
    group: list[Tensor] = []
    first = 0
    for b, xb in enumerate(batches):
        group.append(xb)
        if len(group) == size:
            yield first, group
            group, first = [], b + 1
    if group:
        yield first, group


def forward_plan(forward_images: int, batch_size: int, num_samples: int) -> tuple[int, int]:
    """(batches per forward pass, IW samples per decoder call) for about `forward_images` images per call.

    Batches are grouped only when one batch's K samples take less than a call (small K); the samples
    are then split into equal chunks, so that the calls have few distinct shapes.

    >>> forward_plan(4096, 64, 100), forward_plan(4096, 64, 1000), forward_plan(4096, 64, 1)
    ((1, 50), (1, 63), (64, 1))
    """
    group = max(1, forward_images // (batch_size * num_samples))
    largest = max(1, forward_images // (group * batch_size))
    calls = math.ceil(num_samples / largest)
    return group, math.ceil(num_samples / calls)


@dataclass
class _Collected:
    """What the pass over the split keeps of each batch, on the CPU, in image order."""

    per_image: dict[str, list[Tensor]] = field(
        default_factory=lambda: {k: [] for k in ("elbo", "recon_log_prob", "kl", "iw", "mse")}
    )  # (B,) float64 each: nats, mse on [0, 1] pixels
    kl_dims: list[Tensor] = field(default_factory=list)  # (B, L) float64, nats
    mus: list[Tensor] = field(default_factory=list)  # (B, L) fp32 posterior means
    logvars: list[Tensor] = field(default_factory=list)  # (B, L) fp32 posterior log-variances
    num_dims: int = 0  # D = 3 * H * W


@torch.no_grad()
def evaluate_model(
    model: VAE,
    dataset: Dataset,
    eval_spec: EvalSpec,
    likelihood: Likelihood,
    device: torch.device,
    progress: Reporter | None = None,
    *,
    autocast: torch.dtype | None = None,
    iw_chunk_size: int = IW_CHUNK_SAMPLES,
    forward_images: int | None = None,
    data_spec: Any = None,
) -> EvalResult:
    """Evaluate `model` on the first eval_spec.max_images images of `dataset` (its eval_spec.split).

    The model runs in eval mode (restored afterwards) under no_grad, with `autocast` (e.g. bf16) for
    the encoder and decoder bodies if given; posteriors are used in fp32, likelihoods in fp32 (the
    decoder head is fp32), and everything summed over images or IW samples in float64. The IW bound
    decodes `iw_chunk_size` x batch_size images per call; its value does not depend on the chunk size.
    `forward_images`, when given, overrides that: batches are grouped and chunks sized (`forward_plan`)
    for about that many images per call, each batch keeping its own noise, so the numbers are those
    of one batch at a time up to float rounding. `progress` gets start/update/finish calls, one update
    per forward pass. `data_spec`, the run's data section, is needed only by eval.metrics (the quality
    protocol records the data's crop and fingerprint) and eval.probes (the attributes and train split).
    """
    num = _num_images(dataset, eval_spec)
    batch_size, K = eval_spec.batch_size, eval_spec.iw_samples
    group, iw_chunk_size = (
        (1, iw_chunk_size) if forward_images is None else forward_plan(forward_images, batch_size, K)
    )
    collected = _Collected()
    was_training = model.training
    model.eval()
    if progress is not None:
        progress.start(f"evaluate {eval_spec.split} (K={K})", math.ceil(num / batch_size), 0)
    try:
        for b, batches in _groups(_image_batches(dataset, num, batch_size), group):
            _evaluate_batches(
                model, batches, b, collected, eval_spec, likelihood, device, autocast, iw_chunk_size
            )
            if progress is not None:
                progress.update(b + len(batches), {})
    finally:
        model.train(was_training)
        if progress is not None:
            progress.finish()

    ctx = _context(collected, eval_spec, model, dataset, device)
    ctx.data_spec, ctx.progress = data_spec, progress
    metrics = compute_metrics(ctx)  # every registered metric (`vaebench.evaluation.metrics`)
    per_dim = _per_dim(ctx, eval_spec.active_threshold)
    settings = {
        "split": eval_spec.split,
        "iw_samples": K,
        "batch_size": batch_size,
        "iw_chunk_size": iw_chunk_size,
        "batches_per_forward": group,
        "mi_batch_size": ctx.mutual_information.batch_size,
        "mi_batch_size_requested": eval_spec.mi_batch_size,
        "mi_num_batches": ctx.mutual_information.num_batches,
        "active_threshold": eval_spec.active_threshold,
        "collapse_threshold_nats": COLLAPSE_THRESHOLD_NATS,
        "seed": eval_spec.seed,
        "num_images": num,
        "max_images": eval_spec.max_images,
        "likelihood": likelihood,
        "num_dims": ctx.num_dims,
        "latent_dim": ctx.mu.shape[1],
        "device": str(device),
        "autocast": None if autocast is None else str(autocast).removeprefix("torch."),
    }
    if "quality_protocol" in ctx.extra:  # eval.metrics: everything the quality scores depend on
        settings["metrics"] = list(eval_spec.metrics)
        settings["quality"] = ctx.extra["quality_protocol"]
    if "disentanglement_protocol" in ctx.extra:  # data with factors: the counts, factors and wall seconds
        settings["disentanglement"] = ctx.extra["disentanglement_protocol"]
    if "probes" in ctx.extra:  # eval.probes: what the attribute probes' scores depend on
        settings["probes"] = ctx.extra["probes"]["settings"]
    return EvalResult(metrics, per_dim, settings, _standard_errors(ctx), ctx.per_image)


def _num_images(dataset: Dataset, eval_spec: EvalSpec) -> int:
    """How many images of `dataset` are evaluated: the first eval.max_images, at least 2."""
    num = len(dataset) if eval_spec.max_images is None else min(len(dataset), eval_spec.max_images)
    if num < 2:
        raise UserError(
            f"evaluation needs at least 2 images (for active units and mutual information); the "
            f"{eval_spec.split} split has {len(dataset)} and eval.max_images is {eval_spec.max_images}."
        )
    return num


def _evaluate_batches(
    model: VAE,
    batches: list[Tensor],
    first: int,
    collected: _Collected,
    eval_spec: EvalSpec,
    likelihood: Likelihood,
    device: torch.device,
    autocast: torch.dtype | None,
    iw_chunk_size: int,
) -> None:
    """One forward pass over `batches` (batch indices first, first + 1, ...; uint8): the ELBO's terms, the
    IW bound, the reconstruction at the posterior mean and the posteriors, added to `collected`."""

    def amp() -> AbstractContextManager[Any]:
        if autocast is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=autocast)

    def log_px_given_z(x: Tensor, z: Tensor) -> Tensor:  # (B, 3, H, W), (B, L) -> (B,) nats
        with amp():
            mean, log_scale = model.decode(z)
        return model.log_prob(x, mean.float(), log_scale.float(), likelihood)  # the head's own likelihood

    # (G*B, 3, H, W) in [0, 1]: the batches in one forward pass, each with its own noise below
    x = to_float(batches[0] if len(batches) == 1 else torch.cat(batches), device)
    with amp():
        mu, logvar = model.encode(x)
    posterior = (mu.float(), logvar.float())  # (B, L) each; q is this fp32 Gaussian

    def encode(_: Tensor) -> tuple[Tensor, Tensor]:
        return posterior  # encoded once per batch, shared by the ELBO and the IW bound

    gens = [_generator(eval_spec.seed, _SAMPLE_STREAM, first + i) for i in range(len(batches))]
    gen = gens[0] if len(gens) == 1 else RowBlockGenerators(gens, [len(xb) for xb in batches])
    start = gen.get_state()
    terms = elbo(x, encode, log_px_given_z, gen, n_samples=1)
    gen.set_state(start)  # type: ignore[arg-type]  # the IW bound's first sample is the ELBO's sample
    log_iw = iw_log_likelihood(
        x, encode, log_px_given_z, eval_spec.iw_samples, iw_chunk_size, gen
    )  # (B,) f64
    with amp():
        recon = model.decode(posterior[0])[0]  # (B, 3, H, W) mean at the posterior mean
    kl_dim = terms.kl_per_dim.double()  # (B, L)
    kl = kl_dim.sum(dim=1)  # (B,): summed in float64, so that kl_per_dim sums to kl exactly
    recon_lp = terms.recon_log_prob.double()
    per_image = collected.per_image
    per_image["recon_log_prob"].append(recon_lp.cpu())
    per_image["kl"].append(kl.cpu())
    per_image["elbo"].append((recon_lp - kl).cpu())
    per_image["iw"].append(log_iw.cpu())
    per_image["mse"].append((recon.double() - x.double()).square().flatten(1).mean(dim=1).cpu())
    collected.kl_dims.append(kl_dim.cpu())
    collected.mus.append(posterior[0].cpu())
    collected.logvars.append(posterior[1].cpu())
    collected.num_dims = x[0].numel()


def _context(
    collected: _Collected, eval_spec: EvalSpec, model: VAE, dataset: Dataset, device: torch.device
) -> EvalContext:
    """The whole split's collected values, as the metrics read them (`vaebench.evaluation.metrics`)."""
    return EvalContext(
        split=eval_spec.split,
        per_image={k: torch.cat(v) for k, v in collected.per_image.items()},  # (N,) float64 each
        mu=torch.cat(collected.mus),  # (N, L)
        logvar=torch.cat(collected.logvars),  # (N, L)
        kl_per_dim=torch.cat(collected.kl_dims).mean(dim=0),  # (L,) nats
        num_dims=collected.num_dims,
        iw_samples=eval_spec.iw_samples,
        active_threshold=eval_spec.active_threshold,
        mi_batch_size=eval_spec.mi_batch_size,
        mi_generator=_generator(eval_spec.seed, _MI_STREAM, 0),
        model=model,
        dataset=dataset,
        device=device,
        eval_spec=eval_spec,
    )


def _per_dim(ctx: EvalContext, active_threshold: float) -> dict[str, list[Any]]:
    """Per latent dimension: mean KL (nats), the two variances, and whether it is active."""
    _, mean_var = ctx.active
    return {
        "kl_per_dim": ctx.kl_per_dim.tolist(),
        "posterior_mean_var": mean_var.tolist(),  # Var_x E_q[z_d | x], unbiased, squared latent units
        "posterior_var_mean": ctx.logvar.double().exp().mean(dim=0).tolist(),  # E_x Var_q[z_d | x]
        "active": (mean_var > active_threshold).tolist(),
    }


def _standard_errors(ctx: EvalContext) -> dict[str, float]:
    """Standard errors of the split means over images, bits/dim."""
    img, num = ctx.per_image, len(ctx.per_image["elbo"])
    to_bpd = 1.0 / (ctx.num_dims * math.log(2.0))

    def sem(values: Tensor) -> float:
        return float(values.std(correction=1)) / math.sqrt(num) * to_bpd

    return {
        "bpd_elbo": sem(img["elbo"]),
        "bpd_iw": sem(img["iw"]),
        "bpd_elbo_minus_bpd_iw": sem(img["iw"] - img["elbo"]),  # paired: same images, same first sample
    }


def settings_key(settings: dict[str, Any]) -> str:
    """The key of one evaluation's settings in eval/<split>.json, e.g. "checkpoint=best,K=100,...".

    It holds every setting that changes the numbers, so evaluations with other settings never
    replace each other; re-evaluating with the same settings (e.g. after more training) replaces.
    """
    s = settings
    key = (
        f"checkpoint={s['checkpoint']},K={s['iw_samples']},images={s['num_images']},"
        f"batch={s['batch_size']},mi_batch={s['mi_batch_size']},seed={s['seed']},"
        f"threshold={s['active_threshold']:g},likelihood={s['likelihood']},autocast={s['autocast'] or 'off'}"
    )
    if "quality" in s:
        key += f",quality={s['quality']['id']}:{'+'.join(s['metrics'])}"
    if "disentanglement" in s:
        key += _disentanglement_key(s["disentanglement"])
    if "probes" in s:
        key += _probes_key(s["probes"])
    return key


def _disentanglement_key(d: dict[str, Any]) -> str:
    """The disentanglement counts in a settings key: ",factors=train/test/bins/seed,fvae=BxT/E/V"."""
    f = d["factor_vae"]
    return (
        f",factors={d['num_train']}/{d['num_test']}/{d['num_bins']}/{d['seed']},"
        f"fvae={f['batch_size']}x{f['num_train']}/{f['num_eval']}/{f['num_variance_estimate']}"
    )


def _probes_key(p: dict[str, Any]) -> str:
    """The attribute probes' part of `settings_key`: what their scores depend on besides the model."""
    return f",probes=C{p['c']:g}:train{p['train_images']}:test{p['test_images']}:seed{p['seed']}"


def evaluate_run(
    run_dir: Path,
    *,
    split: Literal["train", "val", "test"] | None = None,
    iw_samples: int | None = None,
    batch_size: int | None = None,
    checkpoint: Checkpoint = "best",
    device: Device | torch.device = "auto",
    progress: Reporter | None = None,
    tracker: Tracker | None = None,
    tracker_step: int | None = None,
    likelihood: Likelihood = "discretized",
    metrics: list[str] | None = None,
) -> dict[str, Any]:
    """Evaluate checkpoints/<checkpoint>.pt of a run folder, record the result and return its flat keys.

    Settings are the run's `eval` section, with split / iw_samples / batch_size / metrics (eval.metrics:
    the quality metrics, [] for none) replaced when given.
    bf16 autocast is used only on CUDA and only if the run's train.precision asks for it (as in
    training). Records:
    - eval/<split>.json: {"latest": key, "results": {key: record}} with one record per distinct
      settings (`settings_key`): flat metrics, per-dim statistics, standard errors, settings
      (including the checkpoint, its step, the time and wall seconds). Earlier settings are kept.
    - summary.json: the flat "<split>/..." keys, merged; the latest evaluation's keys win, so
      summary.json always shows the most recent evaluation of each split (eval/ keeps them all).
    - the tracker, if given: scalar keys logged at `tracker_step` (default: the checkpoint's step)
      and all keys in the W&B summary.
    """
    paths = RunPaths(Path(run_dir))
    spec = load_run_spec(paths.root)
    ckpt_file = checkpoint_path(paths.root, checkpoint)
    check_summary(paths)  # before the work, so that a damaged summary.json cannot fail it at the end
    overrides = {"split": split, "iw_samples": iw_samples, "batch_size": batch_size, "metrics": metrics}
    try:
        eval_spec = EvalSpec.model_validate(
            {**spec.eval.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
        )
    except pydantic.ValidationError as e:
        raise UserError(f"invalid evaluation settings for {paths.root}:\n{e}") from None
    check_required_weights(eval_spec)  # the quality metrics' weights, before the model and data load
    if eval_spec.probes.enabled:
        check_attributes(spec.data)  # CelebA's attribute file, before the model and data load
    dev = device if isinstance(device, torch.device) else resolve_device(device)

    model, step = load_trained_model(ckpt_file, spec, dev)
    dataset = datasets.build_dataset(spec.data, eval_spec.split)
    amp = autocast_dtype(spec.train.precision, dev) if dev.type == "cuda" else None

    started = time.perf_counter()
    forward_images = EVAL_FORWARD_IMAGES_CUDA if dev.type == "cuda" else None
    result = evaluate_model(
        model,
        dataset,
        eval_spec,
        likelihood,
        dev,
        progress,
        autocast=amp,
        forward_images=forward_images,
        data_spec=spec.data,
    )
    result.metrics[f"{eval_spec.split}/checkpoint_step"] = step
    result.settings |= {
        "checkpoint": checkpoint,
        "checkpoint_step": step,
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - started, 3),
    }
    _record(paths.eval / f"{eval_spec.split}.json", result)
    update_summary(paths.summary, result.metrics)
    if tracker is not None:
        scalars = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
        tracker.log(scalars, tracker_step if tracker_step is not None else (step or 0))
        tracker.summary_update(result.metrics)
    return result.metrics


def check_summary(paths: RunPaths) -> None:
    """Rebuild a damaged summary.json (unparsable, or not a JSON object) from what it was made of.

    Training keys come from checkpoints/last.pt, spec.yaml and metrics.jsonl (finished runs only, as
    training writes them at the end), evaluation keys from the latest record of each eval/<split>.json;
    the damaged file is kept as summary.json.damaged, and one SummaryWarning says so.
    """
    if not paths.summary.exists():
        return
    try:
        if isinstance(read_json(paths.summary), dict):
            return
    except UserError:
        pass
    summary: dict[str, Any] = {}
    if paths.done.exists() and paths.last.exists():
        try:
            loop = load_checkpoint(paths.last)["loop"]
            summary |= training_summary(read_run_document(paths.spec), loop, read_metrics(paths.metrics))
        except (UserError, KeyError):
            pass  # the evaluation keys below still come back
    for split_file in sorted(paths.eval.glob("*.json")) if paths.eval.is_dir() else []:
        try:
            document = read_json(split_file)
            summary |= dict(document["results"][document["latest"]]["metrics"])
        except (UserError, KeyError, TypeError):
            continue
    kept = moved_aside(paths.summary, "damaged")
    update_summary(paths.summary, summary)
    warnings.warn(
        f"{paths.summary} was damaged: rebuilt with {len(summary)} keys from the run's checkpoint, "
        f"metrics.jsonl and eval/ files; the damaged file is kept as {kept.name}.",
        SummaryWarning,
        stacklevel=3,
    )


class SummaryWarning(UserWarning):
    """summary.json was damaged and has been rebuilt."""


def _record(path: Path, result: EvalResult) -> None:
    """Add (or replace) this evaluation's record in eval/<split>.json, keeping other settings' records."""
    document: Any = read_json(path) if path.exists() else {"split": result.settings["split"], "results": {}}
    if not isinstance(document, dict) or not isinstance(document.get("results"), dict):
        raise UserError(
            f"{path} is not an evaluation file written by vaebench (no 'results' object); move it aside "
            "and evaluate again."
        )
    key = settings_key(result.settings)
    document["results"][key] = result.record()
    document["latest"] = key
    atomic_write_json(path, document)
