"""What a quality score depends on, recorded with it, and the on-disk cache of reference features.

FID and its relatives change with the feature extractor and its weights, the resize kernel, whether
images are quantised, the data's crop and resize, and the sample counts (FID is biased upward at small
N). `protocol()` writes all of that down; its `id` (12 hex digits of a SHA-256 of the fields that change
the numbers) travels with every score into summary.json, so the report never puts two protocols in one
column. Reference features of a split are cached on disk under a key of all the same fields, so a grid
of runs extracts them once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaebench.core.weights import WEIGHTS
from vaebench.data.cache import read_sidecar
from vaebench.data.celeba import CelebAImages
from vaebench.data.spec import CelebADataSpec
from vaebench.evaluation.quality.extractors import FEATURES, RANDOM_SEED, package_versions
from vaebench.runs.io import atomic_writer

RESIZE = "torch-fidelity's TF1-compatible bilinear resize of uint8 images (Inception 299 px, VGG16 224 px)"
QUANTISATION = "samples and reconstructions are the decoder's mean, rounded to uint8 (round(255 x)) first"
PUBLISHED_SAMPLES = 10_000  # the sample count of published CelebA-64 FIDs (against the whole test split)


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/vaebench/features (default ~/.cache/vaebench/features)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vaebench" / "features"


def data_record(data_spec: Any, split: str) -> dict[str, Any]:
    """The data's identity: kind, crop, size and a fingerprint of the split's files (or of its spec)."""
    spec = data_spec.model_dump(mode="json")
    record: dict[str, Any] = {"kind": spec["kind"], "split": split, "image_size": spec["image_size"]}
    if isinstance(data_spec, CelebADataSpec):
        record["crop"] = f"centre crop {data_spec.crop} px, bilinear resize to {data_spec.image_size} px"
        try:
            record["fingerprint"] = CelebAImages(data_spec, split, validate=False).fingerprint()  # type: ignore[arg-type]
        except Exception:  # only the prepared cache is there: the fingerprint it was made from
            record["fingerprint"] = read_sidecar(data_spec, split).get("fingerprint", "unknown")  # type: ignore[arg-type]
    else:  # a generated dataset is a function of its spec
        generated = {k: v for k, v in spec.items() if k not in ("num_workers", "flip")}
        record["fingerprint"] = hashlib.sha256(json.dumps(generated, sort_keys=True).encode()).hexdigest()
    return record


def extractor_record(name: str, mode: str) -> dict[str, Any]:
    """The extractor's identity: torch-fidelity's network and layer, and which weights (pinned file)."""
    weights = WEIGHTS[name].filename if mode == "pretrained" else f"random-seed{RANDOM_SEED}"
    return {"network": name, "features": FEATURES[name], "weights": weights}


def protocol(
    eval_spec: Any, data_spec: Any, num_reference: int, num_recon: int, kid_subset_size: int
) -> dict[str, Any]:
    """Everything the quality scores depend on, with its id. Counts are those actually used."""
    quality = eval_spec.quality
    fields: dict[str, Any] = {
        "inception": extractor_record("inception", quality.weights),
        "vgg16": extractor_record("vgg16", quality.weights),
        "lpips": "lpips LPIPS(net='vgg', version='0.1') heads over the vgg16 weights above",
        "packages": package_versions(),
        "resize": RESIZE,
        "quantisation": QUANTISATION,
        "data": data_record(data_spec, eval_spec.split),
        "num_samples": quality.num_samples,
        "num_reference": num_reference,
        "num_reconstructions": num_recon,
        "temperature": quality.temperature,
        "kid_subset_size": kid_subset_size,
        "kid_subsets": quality.kid_subsets,
        "precision_recall_k": 3,
        "statistics": "float64",
        "seed": eval_spec.seed,
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    reasons = []
    if quality.weights != "pretrained":
        reasons.append("random weights (tests only)")
    if quality.num_samples < PUBLISHED_SAMPLES:
        reasons.append(f"{quality.num_samples:,} samples, fewer than the published {PUBLISHED_SAMPLES:,}")
    return {
        "id": digest[:12],
        **fields,
        "comparable": quality.weights == "pretrained",
        "not_comparable_to_published": reasons,
    }


def cached_features(
    key_fields: dict[str, Any], cache_dir: Path, compute: Any, count: int
) -> tuple[Tensor, bool]:
    """(features (count, d) float32, whether they came from the cache) of a split's first `count` images.

    The cache file is keyed by `key_fields` (extractor, weights' SHA-256, packages, resize, data
    fingerprint, split) and the count; `compute()` makes the features when it is absent or unreadable.
    """
    key = hashlib.sha256(json.dumps({**key_fields, "count": count}, sort_keys=True).encode()).hexdigest()
    data = key_fields["data"]
    path = cache_dir / f"{data['kind']}-{data['split']}-{key_fields['network']}-{count}-{key[:16]}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("key") == key and saved["features"].shape[0] == count:
                return saved["features"], True
        except Exception:  # a damaged cache file is recomputed and replaced
            pass
    features = compute()
    with atomic_writer(path) as f:
        torch.save({"key": key, "fields": json.dumps(key_fields, sort_keys=True), "features": features}, f)
    return features, False
