"""One evaluation's quality scores: prior samples and reconstructions, their features, the scores.

`quality_scores(ctx)` runs once per evaluation (cached in `ctx.extra`) and computes what eval.metrics
asks for, every score from images quantised to uint8 exactly as a saved PNG would be:

    fid, kid_mean, kid_std   eval.quality.num_samples prior samples (the decoder's mean at z ~ N(0, T^2 I))
                             against the first eval.quality.reference_images images of eval.split (all
                             of it by default), Inception-v3 pool features
    recon_fid                posterior-mean reconstructions of the evaluated images against those images
    precision, recall        the same prior samples against the reference images, VGG16 fc2 features, k = 3
    lpips, ssim              posterior-mean reconstructions against their inputs, mean over images

Samples are drawn from a CPU generator seeded by eval.seed (their own stream), so they do not depend
on the device or on the other metrics asked for. Features are extracted in batches of
eval.quality.batch_size on the evaluation's device.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from torch import Tensor

from vaebench.config.spec import QualityMetric
from vaebench.data.batches import eval_batches
from vaebench.evaluation.quality import PATH_FIELDS, extractors, statistics
from vaebench.evaluation.quality.protocol import cached_features, default_cache_dir, protocol

QUALITY_METRICS: tuple[str, ...] = get_args(QualityMetric)
INCEPTION_METRICS = ("fid", "kid", "recon_fid")
VGG_METRICS = ("precision_recall", "lpips")
_SAMPLE_STREAM = 2  # evaluate.py's streams 0 and 1 are the ELBO/IW noise and mutual information


def quality_scores(ctx: Any) -> dict[str, Any]:
    """The quality scores eval.metrics asks for, and the protocol's summary keys (computed once)."""
    if "quality" not in ctx.extra:
        ctx.extra["quality"] = _compute(ctx)
    return ctx.extra["quality"]


def _quantised(images: Tensor) -> Tensor:
    """[0, 1] float images -> uint8 on the CPU, rounded as a PNG writer would."""
    return images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()


@torch.no_grad()
def prior_samples(model: Any, num: int, temperature: float, seed: int, batch: int, device: Any) -> Tensor:
    """(num, 3, S, S) uint8: the decoder's mean at z ~ N(0, T^2 I), z drawn on the CPU from `seed`."""
    state = np.random.SeedSequence([seed % 2**64, _SAMPLE_STREAM, 0]).generate_state(1, np.uint64)[0]
    generator = torch.Generator().manual_seed(int(state) >> 1)
    out = []
    for start in range(0, num, batch):
        z = torch.randn(min(batch, num - start), model.latent_dim, generator=generator) * temperature
        out.append(_quantised(model.decode(z.to(device))[0]))
    return torch.cat(out)


@torch.no_grad()
def reconstructions(model: Any, mu: Tensor, batch: int, device: Any) -> Tensor:
    """(N, 3, S, S) uint8: the decoder's mean at the posterior means `mu` (N, L)."""
    return torch.cat([_quantised(model.decode(m.to(device))[0]) for m in mu.split(batch)])


class _Features:
    """The features of one evaluation, extracted once per (extractor, image set), with wall times."""

    def __init__(self, ctx: Any, protocol_fields: dict[str, Any], batch: int, cache_dir: Path) -> None:
        self.ctx, self.fields, self.batch, self.cache_dir = ctx, protocol_fields, batch, cache_dir
        self.quality = ctx.eval_spec.quality
        self.networks: dict[str, Any] = {}
        self.paths: dict[str, Path] = {}
        self.seconds: dict[str, float] = {}
        self.reference_cached: dict[str, bool] = {}
        self._images: Tensor | None = None  # the longest prefix of the split read so far

    def path(self, name: str) -> Path:
        if name not in self.paths:
            spec_path = getattr(self.quality, PATH_FIELDS[name])
            self.paths[name] = extractors.weights_file(name, self.quality.weights, spec_path, self.cache_dir)
        return self.paths[name]

    def network(self, name: str) -> Any:
        if name not in self.networks:
            self.networks[name] = extractors.build_extractor(name, self.path(name), self.ctx.device)  # type: ignore[arg-type]
        return self.networks[name]

    def of(self, name: str, images: Tensor, what: str) -> Tensor:
        """Features of `images` (uint8), with a progress bar named for `what` they are."""
        network = self.network(name)
        started = time.perf_counter()
        progress = self.ctx.progress
        if progress is not None:
            progress.start(
                f"{name} features of {len(images):,} {what}", math.ceil(len(images) / self.batch), 0
            )
        try:
            update = None if progress is None else (lambda done: progress.update(done, {}))
            features = extractors.extract(network, images.split(self.batch), self.ctx.device, update)
        finally:
            if progress is not None:
                progress.finish()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        return features

    def images(self, count: int) -> Tensor:
        """The split's first `count` images (uint8), read once for every extractor and for LPIPS/SSIM."""
        if self._images is None or len(self._images) < count:
            batches = eval_batches(self.ctx.dataset, self.batch, limit=math.ceil(count / self.batch))
            self._images = torch.cat(list(batches))[:count]
        return self._images[:count]

    def reference(self, name: str, count: int) -> Tensor:
        """Features of the split's first `count` images, from the on-disk cache when it has them."""
        key_fields = {
            **self.fields[name],
            "sha256": extractors.weights_record(name, self.quality.weights, self.path(name))["sha256"],
            "packages": self.fields["packages"],
            "resize": self.fields["resize"],
            "data": self.fields["data"],
        }

        def compute() -> Tensor:
            return self.of(name, self.images(count), f"{self.ctx.split} images")

        features, cached = cached_features(key_fields, self.cache_dir, compute, count)
        self.reference_cached[name] = cached
        return features


def _compute(ctx: Any) -> dict[str, Any]:
    if ctx.data_spec is None:
        raise ValueError(
            "quality metrics record the data in their protocol: pass evaluate_model(data_spec=...)"
        )
    requested = set(ctx.requested)
    quality = ctx.eval_spec.quality
    batch = quality.batch_size or (500 if ctx.device.type == "cuda" else 50)
    cache_dir = Path(quality.cache_dir).expanduser() if quality.cache_dir else default_cache_dir()
    num_reference = min(quality.reference_images or len(ctx.dataset), len(ctx.dataset))
    num_recon = ctx.num_images
    kid_size = min(quality.kid_subset_size, quality.num_samples, num_reference)
    record = protocol(ctx.eval_spec, ctx.data_spec, num_reference, num_recon, kid_size)
    features = _Features(ctx, record, batch, cache_dir)
    scores: dict[str, Any] = {}
    model, device = ctx.model, ctx.device

    samples = None
    if requested & {"fid", "kid", "precision_recall"}:
        samples = prior_samples(
            model, quality.num_samples, quality.temperature, ctx.eval_spec.seed, batch, device
        )
    recon = inputs = None
    if requested & {"recon_fid", "lpips", "ssim"}:
        recon = reconstructions(model, ctx.mu, batch, device)
        inputs = features.images(num_recon)

    if requested & set(INCEPTION_METRICS):
        count = max(num_reference, num_recon if "recon_fid" in requested else 0)
        reference = features.reference("inception", count).double()
        if requested & {"fid", "kid"}:
            assert samples is not None
            fake = features.of("inception", samples, "prior samples").double()
            real = reference[:num_reference]
            if "fid" in requested:
                scores["fid"] = statistics.frechet_distance(
                    *statistics.feature_statistics(real), *statistics.feature_statistics(fake)
                )
            if "kid" in requested:
                scores["kid_mean"], scores["kid_std"] = statistics.kid(
                    real, fake, kid_size, quality.kid_subsets, ctx.eval_spec.seed
                )
        if "recon_fid" in requested:
            assert recon is not None
            scores["recon_fid"] = statistics.frechet_distance(
                *statistics.feature_statistics(reference[:num_recon]),
                *statistics.feature_statistics(features.of("inception", recon, "reconstructions").double()),
            )
    if "precision_recall" in requested:
        assert samples is not None
        real = features.reference("vgg16", num_reference)
        scores["precision"], scores["recall"] = statistics.precision_recall(  # distances on the device
            real.to(device), features.of("vgg16", samples, "prior samples").to(device), k=3
        )
    if "lpips" in requested:
        assert recon is not None and inputs is not None
        started = time.perf_counter()
        lpips = extractors.LPIPS(features.path("vgg16")).to(device)
        distances = torch.cat(
            [
                lpips(a.to(device), b.to(device)).cpu()
                for a, b in zip(recon.split(batch), inputs.split(batch), strict=True)
            ]
        )
        scores["lpips"] = float(distances.double().mean())
        features.seconds["lpips"] = time.perf_counter() - started
        record["lpips_heads_sha256"] = extractors.LPIPS.heads_sha256()
    if "ssim" in requested:
        assert recon is not None and inputs is not None
        scores["ssim"] = float(statistics.ssim(recon.double() / 255, inputs.double() / 255).double().mean())

    for name, path in features.paths.items():
        record[name] = {**record[name], **extractors.weights_record(name, quality.weights, path)}
    record["wall_s"] = {k: round(v, 3) for k, v in features.seconds.items()}
    record["reference_from_cache"] = features.reference_cached
    ctx.extra["quality_protocol"] = record
    return {
        **scores,
        "quality_protocol": record["id"],
        "quality_comparable": record["comparable"],
        "quality_samples": quality.num_samples,
        "quality_reference_images": num_reference,
    }
