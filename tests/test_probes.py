"""CelebA attribute probes: reading the attribute file in both layouts and its errors, the probe on planted
features with a known answer, and an end-to-end evaluation with eval.probes on.

The CelebA folders are tests/test_data.py's `write_celeba` (12 images: 6 train, 3 valid, 3 test) with an
attribute file added beside the partition file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from test_data import SPLIT_CODES, write_celeba
from test_data_faults import images, resave
from vaebench.cli import app
from vaebench.config.spec import EvalSpec
from vaebench.core.errors import UserError
from vaebench.data import CachedImages, CelebAImages, build_dataset, prepare
from vaebench.data.attributes import check_attributes, split_attributes
from vaebench.data.spec import CelebADataSpec
from vaebench.evaluation.evaluate import evaluate_model
from vaebench.evaluation.probes import balanced_accuracy, fit_probes, random_projection
from vaebench.model.spec import ModelSpec
from vaebench.model.vae import build_model

runner = CliRunner()
NAMES = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Smiling", "Young"]  # 4 of CelebA's 40 keep lines short


def attribute_values() -> np.ndarray:
    """(12, 4) of 1/-1: attribute k of image i (1-based) is 1 when i + k is even, so that every split,
    even a 3-image one, has both classes of every attribute."""
    i, k = np.meshgrid(np.arange(1, len(SPLIT_CODES) + 1), np.arange(len(NAMES)), indexing="ij")
    return np.where((i + k) % 2 == 0, 1, -1)


def write_attributes(root: Path, layout: str, values: np.ndarray | None = None) -> Path:
    """The attribute file of `write_celeba`'s images, in `layout`'s format, beside its partition file."""
    values = attribute_values() if values is None else values
    images = [f"{i + 1:06d}.jpg" for i in range(len(values))]
    if layout == "torchvision":
        path = root / "celeba" / "list_attr_celeba.txt"
        rows = [f"{n} " + " ".join(f"{v:2d}" for v in row) for n, row in zip(images, values, strict=True)]
        lines = [str(len(values)), " ".join(NAMES), *rows]
    else:
        path = root / "list_attr_celeba.csv"
        rows = [",".join([n, *map(str, row)]) for n, row in zip(images, values, strict=True)]
        lines = ["image_id," + ",".join(NAMES), *rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def celeba(tmp_path: Path) -> CelebADataSpec:
    write_celeba(tmp_path, "torchvision")
    write_attributes(tmp_path, "torchvision")
    return CelebADataSpec(root=tmp_path, num_workers=0, image_size=16)


# ----------------------------------------------------------------------------- reading the attributes


@pytest.mark.parametrize("layout", ["torchvision", "kaggle"])
def test_each_layout_gives_each_splits_attributes_as_1_and_0(tmp_path: Path, layout: str) -> None:
    write_celeba(tmp_path, layout)
    write_attributes(tmp_path, layout)
    spec = CelebADataSpec(root=tmp_path, num_workers=0, image_size=16)
    want = (attribute_values() > 0).astype(np.uint8)
    for split, rows in (("train", slice(0, 6)), ("val", slice(6, 9)), ("test", slice(9, 12))):
        dataset = build_dataset(spec, split)
        names, labels = split_attributes(spec, split, dataset)
        assert names == tuple(NAMES)
        assert labels.dtype == np.uint8 and np.array_equal(labels, want[rows])
    assert np.array_equal(split_attributes(spec, "test", build_dataset(spec, "test"), 2)[1], want[9:11])


def test_a_prepared_cache_gets_the_attributes_of_its_images_even_with_one_skipped(
    celeba: CelebADataSpec,
) -> None:
    resave(images(celeba) / "000002.jpg", (89, 109))  # left out of the train split by mixed_sizes = skip
    spec = celeba.model_copy(update={"mixed_sizes": "skip"})
    prepare(spec, splits=["train"], progress=False)
    dataset = build_dataset(spec, "train")
    assert isinstance(dataset, CachedImages) and len(dataset) == 5
    _, labels = split_attributes(spec, "train", dataset)
    want = (attribute_values() > 0).astype(np.uint8)
    assert np.array_equal(labels, want[[0, 2, 3, 4, 5]])


def assert_one_paragraph(error: UserError, *fragments: str) -> None:
    message = str(error)
    assert "\n" not in message
    for fragment in (*fragments, "eval.probes.enabled = false", "list_attr_celeba.txt"):
        assert fragment in message, f"{fragment!r} missing from: {message}"


def break_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


ATTRIBUTE_TXT = "celeba/list_attr_celeba.txt"
FAULTS = {
    "missing": (lambda p: p.unlink(), ["there is no list_attr_celeba.txt or list_attr_celeba.csv beside"]),
    "too few values": (
        lambda p: break_line(p, 5, "000003.jpg  1 -1  1"),
        ["line 5 is '000003.jpg  1 -1  1': 3 values", "names 4 attributes"],
    ),
    "not 1 or -1": (
        lambda p: break_line(p, 6, "000004.jpg 1 0 1 1"),
        ["line 6 gives Arched_Eyebrows (value 2 of 000004.jpg) as '0'"],
    ),
    "another copy's images": (
        lambda p: break_line(p, 14, "000099.jpg 1 1 1 1"),
        ["1 image(s) of the partition file have no attributes (000012.jpg)", "000099.jpg", "different"],
    ),
    "truncated": (
        lambda p: p.write_text("\n".join(p.read_text().splitlines()[:10]) + "\n"),
        ["line 1 announces 12 images but the file lists 8"],
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_broken_attribute_file_is_one_paragraph_naming_the_file_and_line(
    celeba: CelebADataSpec, fault: str
) -> None:
    path = Path(celeba.root) / ATTRIBUTE_TXT
    damage, fragments = FAULTS[fault]
    damage(path)
    with pytest.raises(UserError) as caught:
        check_attributes(celeba)
    assert_one_paragraph(caught.value, str(path), *fragments)


def write_experiment(tmp_path: Path, spec: CelebADataSpec, at_end: bool = True) -> Path:
    """A one-variant CelebA experiment that trains in about a second and evaluates when it ends."""
    base = {
        "data": {"kind": "celeba", "root": str(spec.root), "image_size": 16, "num_workers": 0},
        "model": {"stem_channels": 4, "channels": [8], "latent_dim": 4},
        "train": {"steps": 2, "batch_size": 2, "log_every": 1, "val_every": 2, "checkpoint_every": 2},
        "eval": {"at_end": at_end, "iw_samples": 2, "batch_size": 4},
        "tracking": {"mode": "disabled"},
    }
    path = tmp_path / "probes.yaml"
    path.write_text(yaml.safe_dump({"name": "probes", "base": base, "variants": [{"name": "only"}]}))
    return path


@pytest.mark.parametrize("fault", ["missing", "too few values", "another copy's images"])
def test_cli_run_with_probes_stops_on_a_broken_attribute_file_before_training(
    tmp_path: Path, celeba: CelebADataSpec, fault: str
) -> None:
    path = Path(celeba.root) / ATTRIBUTE_TXT
    FAULTS[fault][0](path)
    runs = tmp_path / "runs"
    args = ["run", str(write_experiment(tmp_path, celeba)), "--runs-dir", str(runs), "--quiet"]
    result = runner.invoke(app, [*args, "eval.probes.enabled=true"])
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())  # the console wraps the paragraph
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert " ".join(FAULTS[fault][1][0].split()) in flat and "eval.probes.enabled = false" in flat
    assert not list(runs.rglob("*.pt"))  # no step was taken


def test_a_run_with_probes_off_never_reads_the_attribute_file(tmp_path: Path, celeba: CelebADataSpec) -> None:
    (Path(celeba.root) / ATTRIBUTE_TXT).write_text("not an attribute file\n")
    runs = tmp_path / "runs"
    result = runner.invoke(
        app, ["run", str(write_experiment(tmp_path, celeba)), "--runs-dir", str(runs), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    (summary,) = runs.rglob("summary.json")
    scores = json.loads(summary.read_text())
    assert "test/bpd_elbo" in scores and not any("probe" in key for key in scores)


# ----------------------------------------------------------------------------- the probe


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, 6) N(0, 1) and labels (n, 4): attributes 0 and 1 are features 0 and 1 plus a little
    noise, thresholded (1 at 1.0, about 16% positive); attributes 2 and 3 are coin flips (3: 16% positive)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6))
    noise = 0.2 * rng.standard_normal((n, 2))
    labels = np.stack(
        [x[:, 0] + noise[:, 0] > 0, x[:, 1] + noise[:, 1] > 1.0, rng.random(n) < 0.5, rng.random(n) < 0.16],
        axis=1,
    )
    return x, labels.astype(np.uint8)


def test_a_probe_reads_planted_attributes_and_not_unrelated_ones() -> None:
    train_x, train_y = planted(2000, 0)
    test_x, test_y = planted(2000, 1)
    scores = fit_probes(train_x, train_y, test_x, test_y, c=1.0, max_iter=1000).per_attribute
    assert scores[0] > 0.9 and scores[1] > 0.85  # linear in one feature: nearly perfect
    assert abs(scores[2] - 0.5) < 0.05  # chance, and for the rare one too: predicting "no" always
    assert abs(scores[3] - 0.5) < 0.05  # would be 84% accurate but is 0.5 balanced
    noise = np.random.default_rng(2).standard_normal((4000, 6))  # a baseline that carries no attribute
    baseline = fit_probes(noise[:2000], train_y, noise[2000:], test_y, c=1.0, max_iter=1000)
    assert baseline.mean is not None and abs(baseline.mean - 0.5) < 0.05
    assert fit_probes(train_x, train_y, test_x, test_y, 1.0, 1000).mean > baseline.mean + 0.15


def test_the_baselines_projection_is_fixed_by_its_seed_with_unit_scale_features() -> None:
    a, b, c = (
        random_projection(3 * 16 * 16, 8, 0),
        random_projection(3 * 16 * 16, 8, 0),
        random_projection(3 * 16 * 16, 8, 1),
    )
    assert a.shape == (768, 8) and torch.equal(a, b) and not torch.equal(a, c)
    assert abs(float(a.square().sum(dim=0).mean()) - 1.0) < 0.1  # each column has unit norm on average


def test_balanced_accuracy_is_undefined_for_one_class_and_left_out_of_the_mean() -> None:
    assert balanced_accuracy(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0])) == 0.75
    assert balanced_accuracy(np.array([1, 1, 1]), np.array([1, 1, 1])) is None
    train_x, train_y = planted(200, 0)
    test_x, test_y = planted(50, 2)
    test_y[:, 2] = 1  # every test image has attribute 2
    scores = fit_probes(train_x, train_y, test_x, test_y, 1.0, 1000)
    assert scores.per_attribute[2] is None and None not in scores.per_attribute[:2]
    assert scores.mean == pytest.approx(np.mean([scores.per_attribute[k] for k in (0, 1, 3)]))


# ----------------------------------------------------------------------------- end to end


def test_cli_run_with_probes_records_their_scores_beside_the_baseline(
    tmp_path: Path, celeba: CelebADataSpec
) -> None:
    runs = tmp_path / "runs"
    args = ["run", str(write_experiment(tmp_path, celeba)), "--runs-dir", str(runs), "--quiet"]
    result = runner.invoke(app, [*args, "eval.probes.enabled=true", "eval.probes.max_train=4"])
    assert result.exit_code == 0, result.output
    (summary,) = runs.rglob("summary.json")
    scores = json.loads(summary.read_text())
    for key in ("probe_balanced_accuracy", "probe_baseline_balanced_accuracy"):
        assert 0.0 <= scores[f"test/{key}"] <= 1.0
    per_attribute = scores["test/probe_attribute_accuracy"]
    assert list(per_attribute) == list(scores["test/probe_baseline_attribute_accuracy"]) == NAMES
    assert scores["test/probe_balanced_accuracy"] == pytest.approx(np.mean(list(per_attribute.values())))
    assert scores["test/probe_train_images"] == 4 and scores["test/probe_test_images"] == 3
    record = json.loads((summary.parent / "eval" / "test.json").read_text())
    settings = record["results"][record["latest"]]["settings"]["probes"]
    assert settings["c"] == 1.0 and settings["train_images"] == 4 and settings["class_weight"] is None
    assert record["latest"].endswith(",probes=C1:train4:test3:seed0")

    evaluated = runner.invoke(app, ["evaluate", str(summary.parent), "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "attribute probes, balanced accuracy" in evaluated.output
    assert "random-projection baseline" in evaluated.output


def test_probes_are_the_same_numbers_on_the_jpegs_and_on_the_cache(celeba: CelebADataSpec) -> None:
    model = build_model(ModelSpec(stem_channels=4, channels=[8], latent_dim=4), 16)
    eval_spec = EvalSpec(iw_samples=1, batch_size=4, probes={"enabled": True})
    device = torch.device("cpu")

    def probe() -> dict:
        dataset = build_dataset(celeba, "test")
        result = evaluate_model(model, dataset, eval_spec, "discretized", device, data_spec=celeba)
        return {k: v for k, v in result.metrics.items() if "probe" in k}

    jpegs = probe()
    assert isinstance(build_dataset(celeba, "test"), CelebAImages)
    prepare(celeba, progress=False)
    assert isinstance(build_dataset(celeba, "test"), CachedImages)
    assert probe() == jpegs
