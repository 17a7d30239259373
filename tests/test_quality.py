"""Sample and reconstruction quality through the real extractors: peers agree, runs record the protocol.

torch-fidelity and lpips are the peers: under the same (seeded random) weights, vaebench's FID, KID,
precision/recall and LPIPS equal theirs. The estimators' own known answers are in
test_quality_statistics.py. Random weights only: the real ones cannot be downloaded here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from vaebench.config.experiments import Variant
from vaebench.config.spec import RunSpec
from vaebench.evaluation.evaluate import evaluate_run
from vaebench.evaluation.quality import extractors, statistics
from vaebench.launch.runner import run_one
from vaebench.runs.io import read_json

torch_fidelity = pytest.importorskip("torch_fidelity")
lpips = pytest.importorskip("lpips")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Seeded random Inception and VGG16 weight files, made once for the module."""
    folder = tmp_path_factory.mktemp("weights")
    return {name: extractors.random_weights_file(name, folder) for name in ("inception", "vgg16")}


class Images(Dataset):
    """uint8 (3, 64, 64) images, smooth enough that random networks give them distinct features."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        coarse = torch.rand(n, 3, 8, 8, generator=g)
        self.images = (torch.nn.functional.interpolate(coarse, size=64, mode="bilinear") * 255).to(
            torch.uint8
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_fid_and_kid_equal_torch_fidelitys_under_the_same_weights(weights: dict[str, Path]) -> None:
    real, fake = Images(5, 0), Images(5, 1)
    fake.images = 255 - fake.images // 2  # brighter: a distance well above float rounding
    inception = extractors.build_extractor("inception", weights["inception"], CPU)
    f_real = extractors.extract(inception, [real.images], CPU).double()
    f_fake = extractors.extract(inception, [fake.images], CPU).double()
    fid = statistics.frechet_distance(
        *statistics.feature_statistics(f_real), *statistics.feature_statistics(f_fake)
    )
    kid_mean, kid_std = statistics.kid(f_real, f_fake, 5, 2, seed=0)  # subset = everything: no sampling
    peer = torch_fidelity.calculate_metrics(
        input1=fake, input2=real, fid=True, kid=True, kid_subset_size=5, kid_subsets=2, cuda=False,
        feature_extractor_weights_path=str(weights["inception"]), verbose=False, cache=False, batch_size=5,
    )  # fmt: skip
    assert fid > 1 and kid_mean > 1e-3
    assert fid == pytest.approx(peer["frechet_inception_distance"], rel=1e-5)
    # torch-fidelity's kernel sums are float32, vaebench's float64: agreement to float32 rounding
    assert kid_mean == pytest.approx(peer["kernel_inception_distance_mean"], rel=1e-4)
    assert kid_std == pytest.approx(peer["kernel_inception_distance_std"], abs=1e-9)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_precision_and_recall_equal_torch_fidelitys_on_vgg16_fc2(weights: dict[str, Path]) -> None:
    real, fake = Images(6, 0), Images(6, 2)
    vgg = extractors.build_extractor("vgg16", weights["vgg16"], CPU)
    precision, recall = statistics.precision_recall(
        extractors.extract(vgg, [real.images], CPU), extractors.extract(vgg, [fake.images], CPU), k=3
    )
    peer = torch_fidelity.calculate_metrics(
        input1=fake, input2=real, prc=True, feature_extractor="vgg16", cuda=False,
        feature_extractor_weights_path=str(weights["vgg16"]), verbose=False, cache=False, batch_size=6,
    )  # fmt: skip
    # torch-fidelity averages in float32
    assert (precision, recall) == pytest.approx((peer["precision"], peer["recall"]), abs=1e-6)


@pytest.mark.filterwarnings("ignore::UserWarning:torchvision")
def test_lpips_equals_the_lpips_package_with_the_same_backbone(
    weights: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lpips.LPIPS(net="vgg") loads torchvision's vgg16 from the hub cache: put the same weights there.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    cached.parent.mkdir(parents=True)
    shutil.copy(weights["vgg16"], cached)
    x, y = Images(4, 0).images, Images(4, 3).images
    ours = extractors.LPIPS(weights["vgg16"])(x, y)
    peer = lpips.LPIPS(net="vgg", verbose=False)(x.float() / 127.5 - 1, y.float() / 127.5 - 1).flatten()
    assert ours.shape == (4,) and torch.all(ours > 0)
    torch.testing.assert_close(ours, peer, rtol=1e-5, atol=1e-7)
    assert torch.equal(extractors.LPIPS(weights["vgg16"])(x, x), torch.zeros(4))


def quality_spec(cache: Path, weights_folder: Path) -> RunSpec:
    return RunSpec.model_validate(
        {
            "data": {"kind": "synthetic", "image_size": 16, "train_size": 32, "val_size": 8, "test_size": 8},
            "model": {"stem_channels": 4, "channels": [8], "latent_dim": 4},
            "train": {"steps": 4, "batch_size": 8, "val_every": 4, "log_every": 2, "checkpoint_every": 4},
            "eval": {
                "at_end": True,
                "iw_samples": 2,
                "metrics": ["fid", "kid", "recon_fid", "precision_recall", "lpips", "ssim"],
                "quality": {
                    "weights": "random",
                    "num_samples": 8,
                    "kid_subset_size": 4,
                    "kid_subsets": 3,
                    "batch_size": 8,
                    "cache_dir": str(cache),
                },
            },
            "tracking": {"mode": "disabled"},
        }
    )


def test_a_run_asking_for_every_quality_metric_records_scores_and_their_protocol(
    tmp_path: Path, weights: dict[str, Path]
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for path in weights.values():  # the random weights, as the first run would have written them
        shutil.copy(path, cache / path.name)
    run_dir = tmp_path / "runs" / "seed0"
    result = run_one(Variant("quality", "tiny", quality_spec(cache, tmp_path)), 0, run_dir, device="cpu")
    assert result.status == "finished"
    summary = read_json(run_dir / "summary.json")
    for key in ("fid", "kid_mean", "kid_std", "recon_fid", "precision", "recall", "lpips", "ssim"):
        assert isinstance(summary[f"test/{key}"], float), key
    assert summary["test/fid"] > 0 and summary["test/recon_fid"] > 0
    assert 0 <= summary["test/precision"] <= 1 and 0 <= summary["test/recall"] <= 1
    assert -1 <= summary["test/ssim"] <= 1 and summary["test/lpips"] > 0
    assert summary["test/quality_comparable"] is False  # random weights
    assert summary["test/quality_samples"] == 8 and summary["test/quality_reference_images"] == 8

    record = read_json(run_dir / "eval" / "test.json")
    protocol = record["results"][record["latest"]]["settings"]["quality"]
    assert protocol["id"] == summary["test/quality_protocol"]
    assert protocol["kid_subset_size"] == 4 and protocol["num_samples"] == 8
    assert protocol["inception"]["weights"].startswith("random")
    assert "random weights (tests only)" in protocol["not_comparable_to_published"]
    assert protocol["reference_from_cache"] == {"inception": False, "vgg16": False}
    assert len(list(cache.glob("synthetic-test-*.pt"))) == 2  # Inception and VGG16 reference features

    # Evaluating again reads the reference features from the cache and gives the same scores.
    again = evaluate_run(run_dir, checkpoint="best", device="cpu", metrics=["fid"])
    assert again["test/fid"] == summary["test/fid"] and "test/recall" not in again
    record = read_json(run_dir / "eval" / "test.json")
    assert record["results"][record["latest"]]["settings"]["quality"]["reference_from_cache"] == {
        "inception": True
    }
    assert len(record["results"]) == 2  # the same protocol id, other metrics: kept apart, not replaced


def test_the_protocol_id_changes_with_what_changes_the_numbers(tmp_path: Path) -> None:
    from vaebench.evaluation.quality.protocol import protocol

    spec = quality_spec(tmp_path, tmp_path)

    def pid(**quality: object) -> str:
        eval_spec = spec.eval.model_copy(update={"quality": spec.eval.quality.model_copy(update=quality)})
        return protocol(eval_spec, spec.data, 8, 8, 4)["id"]

    base = pid()
    assert pid() == base
    assert pid(num_samples=16) != base
    assert pid(temperature=0.8) != base
    assert pid(weights="pretrained") != base
    assert pid(batch_size=4) == base  # batching does not change the numbers
    other_data = spec.data.model_copy(update={"seed": 1})
    assert protocol(spec.eval, other_data, 8, 8, 4)["id"] != base
