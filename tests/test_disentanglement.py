"""Disentanglement scores: disentanglement_lib's known answers, and the registry entries end to end.

The score tests port the lib's evaluation/metrics/*_test.py: its IdentityObservationsData (10 factors, each
uniform on 10 values, observed as they are) under the identity representation, the all-zero one, a
duplicated latent space and a random permutation of the factors; DCI's importance-matrix cases; the
utils' discretiser, entropy and mutual information. Sample counts are smaller than the lib's, and DCI's
boosted trees run on 4 factors of 5 values, so that the file runs in seconds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from vaebench.config.spec import EvalSpec, RunSpec
from vaebench.evaluation import disentanglement as d
from vaebench.evaluation.metrics import METRICS, EvalContext, compute_metrics
from vaebench.evaluation.metrics import disentanglement as entries
from vaebench.launch.sweep_check import summary_metrics

LN2 = math.log(2)


def identity_data(n: int, seed: int, factors: int = 10, values: int = 10) -> np.ndarray:
    """(n, factors) codes in 1..values, as the lib's IdentityObservationsData samples them."""
    return np.random.default_rng(seed).integers(1, values + 1, size=(n, factors))


def duplicated(codes: np.ndarray) -> np.ndarray:
    return np.hstack([codes, codes]).astype(np.float64)


def permuted(codes: np.ndarray, seed: int) -> np.ndarray:
    """Each sample's factors in a random order: every latent is every factor some of the time."""
    rng = np.random.default_rng(seed)
    return np.array([rng.permutation(row) for row in codes], dtype=np.float64)


def fixed_factor_batches(
    representation: Any, votes: int, batch: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(representations (V, B, L), fixed (V,)): the lib's FactorVAE votes on IdentityObservationsData."""
    rng = np.random.default_rng(seed)
    fixed = rng.integers(0, 10, size=votes)
    codes = rng.integers(1, 11, size=(votes, batch, 10))
    codes[np.arange(votes), :, fixed] = codes[np.arange(votes), 0, fixed][:, None]
    return representation(codes.reshape(votes * batch, 10)).reshape(votes, batch, -1), fixed


def factor_vae_of(representation: Any) -> d.FactorVAEScores:
    """The lib's test setting: batch 5, 3000 train and 2000 eval votes, 2500 images of variance."""
    variance = representation(identity_data(2500, 0))
    return d.factor_vae_score(
        variance,
        *fixed_factor_batches(representation, 3000, 5, 1),
        *fixed_factor_batches(representation, 2000, 5, 2),
        10,
    )


# ----------------------------------------------------------------------------- the lib's utils tests


def test_histogram_discretiser_entropy_and_mutual_information_match_the_libs_tests() -> None:
    target = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]]).T
    expected = np.array([[1, 1, 2, 2, 3, 3], [3, 3, 2, 2, 1, 1]]).T
    np.testing.assert_array_equal(d.histogram_discretize(target, num_bins=3), expected)
    np.testing.assert_allclose(d.discrete_entropy(expected), [math.log(3), math.log(3)])
    xs, ys = np.array([[1, 2, 1, 2], [1, 1, 2, 2]]).T, np.array([[1, 2, 1, 2], [2, 2, 1, 1]]).T
    np.testing.assert_allclose(d.discrete_mutual_info(xs, ys), [[LN2, 0.0], [0.0, LN2]], atol=1e-12)


# ----------------------------------------------------------------------------- MIG


def test_mig_by_hand_on_eight_images() -> None:
    # factors v1, v2 binary and independent (H = ln 2 each); z1 = v1; z2 = 1 unless v1 = v2 = 0
    v1 = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    v2 = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    z2 = np.array([0, 0, 1, 1, 1, 1, 1, 1])
    # I(z2; v1) = H(z2) - H(z2 | v1) = H(1/4, 3/4) - (1/2) ln 2, and the same for v2; I(z1; v2) = 0
    h_quarter = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    i_z2 = h_quarter - 0.5 * LN2
    expected = ((LN2 - i_z2) / LN2 + (i_z2 - 0.0) / LN2) / 2  # v1: z1 then z2; v2: z2 then z1
    score = d.mig(np.stack([v1, z2], axis=1).astype(float), np.stack([v1, v2], axis=1))
    assert score == pytest.approx(expected, abs=1e-12) and expected == pytest.approx(0.5)


def test_mig_identity_scores_high_zero_and_duplicated_latents_low() -> None:
    codes = identity_data(2000, 0)
    assert 0.9 <= d.mig(codes.astype(float), codes) <= 1.0
    assert 0.0 <= d.mig(np.zeros(codes.shape), codes) <= 0.2
    assert 0.0 <= d.mig(duplicated(codes), codes) <= 0.1  # the gap between two equal latents is 0


# ----------------------------------------------------------------------------- DCI

DIAGONAL = np.diag(5.0 * np.ones(5))
LIB_MATRIX_CASES = {  # name: (importance (L, K), disentanglement, completeness), dci_test.py's cases
    "diagonal": (DIAGONAL, 1.0, 1.0),
    "diagonal, empty codes": (np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), 1.0, 1.0),
    "zero": (np.zeros((10, 10)), 0.0, 0.0),
    "redundant codes": (np.vstack([DIAGONAL, DIAGONAL]), 1.0, 1.0 - LN2 / math.log(10)),
    "missed factors": (DIAGONAL[:2, :], 1.0, 1.0),
    "one code, two factors": (np.hstack([DIAGONAL, DIAGONAL]), 1.0 - LN2 / math.log(10), 1.0),
}


@pytest.mark.parametrize("case", LIB_MATRIX_CASES)
def test_dci_disentanglement_and_completeness_of_the_libs_importance_matrices(case: str) -> None:
    importance, expected_d, expected_c = LIB_MATRIX_CASES[case]
    assert d.disentanglement(importance) == pytest.approx(expected_d, abs=1e-7)
    assert d.completeness(importance) == pytest.approx(expected_c, abs=1e-7)


def test_dci_of_identity_zero_duplicated_and_permuted_representations() -> None:
    train, test = identity_data(400, 0, factors=4, values=5), identity_data(200, 1, factors=4, values=5)
    same = d.dci(train.astype(float), train, test.astype(float), test)
    assert 0.9 <= same.disentanglement <= 1.0 and 0.9 <= same.completeness <= 1.0
    assert same.informativeness_test > 0.95 and same.importance.shape == (4, 4)
    zero = d.dci(np.zeros(train.shape), train, np.zeros(test.shape), test)
    assert zero.disentanglement == pytest.approx(0.0, abs=1e-7) and zero.completeness == pytest.approx(
        0.0, abs=1e-7
    )
    assert zero.informativeness_test < 0.4  # the majority class of 5: about 1/5
    twice = d.dci(duplicated(train), train, duplicated(test), test)
    assert 0.9 <= twice.disentanglement <= 1.0
    assert twice.completeness == pytest.approx(1.0 - LN2 / math.log(8), abs=0.1)  # two of 8 latents each
    mixed = d.dci(permuted(train, 2), train, permuted(test, 3), test)
    assert mixed.disentanglement <= 0.2 and mixed.completeness <= 0.2


# ----------------------------------------------------------------------------- SAP


def test_sap_identity_scores_high_zero_and_duplicated_latents_low() -> None:
    train, test = identity_data(1000, 0), identity_data(1000, 1)
    assert 0.9 <= d.sap(train.astype(float), train, test.astype(float), test, continuous_factors=True) <= 1.0
    for mus_train, mus_test in (
        (np.zeros(train.shape), np.zeros(test.shape)),
        (duplicated(train), duplicated(test)),
    ):
        for continuous in (True, False):
            assert 0.0 <= d.sap(mus_train, train, mus_test, test, continuous) <= 0.2


def test_discrete_sap_of_a_perfect_binary_representation_is_one_minus_chance() -> None:
    # discrete factors: the best latent classifies perfectly, the others at chance (balanced: 1/2)
    train, test = identity_data(1000, 0, factors=3, values=2), identity_data(1000, 1, factors=3, values=2)
    matrix = d.sap_score_matrix(train.astype(float), train, test.astype(float), test)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    assert d.sap(train.astype(float), train, test.astype(float), test) == pytest.approx(0.5, abs=0.06)


# ----------------------------------------------------------------------------- FactorVAE


def test_factor_vae_identity_scores_high_and_zero_scores_zero() -> None:
    same = factor_vae_of(lambda codes: codes.astype(np.float64))
    assert 0.9 <= same.train_accuracy <= 1.0 and 0.9 <= same.eval_accuracy <= 1.0
    assert same.num_active_dims == 10
    zero = factor_vae_of(lambda codes: np.zeros(codes.shape))
    assert (zero.train_accuracy, zero.eval_accuracy, zero.num_active_dims) == (0.0, 0.0, 0)


def test_factor_vae_prunes_latents_below_the_threshold_which_would_otherwise_win_every_vote() -> None:
    # a constant latent's variance ratio is 0/0 = NaN, and argmin picks the NaN: unpruned (the lib's
    # prune_dims default, threshold 0) it takes every vote; at the studies' 0.05 it is ignored
    def with_constant_latent(codes: np.ndarray) -> np.ndarray:
        return np.hstack([np.zeros((len(codes), 1)), codes])

    variance = with_constant_latent(identity_data(2500, 0))
    batches = (
        *fixed_factor_batches(with_constant_latent, 300, 5, 1),
        *fixed_factor_batches(with_constant_latent, 200, 5, 2),
    )
    with np.errstate(invalid="ignore"):
        unpruned = d.factor_vae_score(variance, *batches, 10, prune_threshold=0.0)
    pruned = d.factor_vae_score(variance, *batches, 10)
    assert unpruned.num_active_dims == 11 and unpruned.eval_accuracy <= 0.2
    assert pruned.num_active_dims == 10 and pruned.eval_accuracy >= 0.9


# ----------------------------------------------------------------------------- the registry entries

KEYS = [
    "mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "dci_informativeness_train",
    "sap", "factor_vae", "factor_vae_train", "factor_vae_active_dims", "disentanglement_num_train",
    "disentanglement_num_test", "factor_vae_num_eval", "disentanglement_comparable",
]  # fmt: skip
SMALL = {  # counts far below the lib's: seconds on a CPU
    "eval.disentanglement.num_train": 60,
    "eval.disentanglement.num_test": 30,
    "eval.disentanglement.factor_vae.batch_size": 8,
    "eval.disentanglement.factor_vae.num_train": 20,
    "eval.disentanglement.factor_vae.num_eval": 10,
    "eval.disentanglement.factor_vae.num_variance_estimate": 40,
}


class Bars:
    """A fake factor dataset of 16x16 images: red level (3 values), a bar's column (4), green level (2)."""

    factor_names = ("red", "bar", "green")
    factor_sizes = (3, 4, 2)

    def __init__(self) -> None:
        self.rendered = 0

    def sample_codes(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.stack([torch.randint(s, (n,), generator=generator) for s in self.factor_sizes], dim=1)

    def render_codes(self, codes: Tensor) -> Tensor:
        images = torch.zeros(len(codes), 3, 16, 16, dtype=torch.uint8)
        images[:, 0] = (codes[:, 0] * 120).to(torch.uint8)[:, None, None]
        images[:, 1] = (codes[:, 2] * 250).to(torch.uint8)[:, None, None]
        for i, column in enumerate(codes[:, 1].tolist()):
            images[i, 2, :, 4 * column : 4 * column + 4] = 255
        self.rendered += len(codes)
        return images


def test_disentanglement_keys_exist_only_for_data_with_factors(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = RunSpec.model_validate({"eval": {"split": "val"}})
    zeros = torch.zeros(3, 2)
    ctx = EvalContext("val", {"kl": torch.zeros(3)}, zeros, zeros, torch.zeros(2), 12, 1, 0.01, 2,
                      torch.Generator(), eval_spec=spec.eval, data_spec=spec.data)  # fmt: skip
    assert [k for k in KEYS if METRICS[k].applies_to is not None] == KEYS
    cheap = {k: m for k, m in METRICS.items() if k in ("kl", "num_images", *KEYS)}
    monkeypatch.setattr("vaebench.evaluation.metrics.METRICS", cheap)
    assert set(compute_metrics(ctx)) == {"val/kl", "val/num_images"}  # no factors: nothing computed
    assert not {f"val/{k}" for k in KEYS} & set(summary_metrics(spec))
    monkeypatch.setattr(entries, "factor_source", lambda data: Bars())
    assert {f"val/{k}" for k in KEYS if METRICS[k].fmt} <= set(summary_metrics(spec))


@pytest.mark.slow
def test_a_run_on_factor_data_records_every_score_its_counts_and_wall_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tiny
    from vaebench.evaluation.evaluate import evaluate_run
    from vaebench.launch.runner import run_one
    from vaebench.runs.io import read_json

    source = Bars()
    monkeypatch.setattr(entries, "factor_source", lambda data: source)
    variant = tiny.tiny_variant(
        eval__at_end=True, eval__iw_samples=2, **{k.replace(".", "__"): v for k, v in SMALL.items()}
    )
    run_dir = tmp_path / "seed0"
    assert run_one(variant, 0, run_dir, device="cpu").status == "finished"
    summary = read_json(run_dir / "summary.json")
    assert set(summary_metrics(variant.spec)) <= set(summary)  # what a sweep may select on is written
    for key in ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap", "factor_vae"):
        assert 0.0 <= summary[f"test/{key}"] <= 1.0, key
    assert summary["test/factor_vae_active_dims"] <= 4  # tiny.py's latent_dim
    assert (summary["test/disentanglement_num_train"], summary["test/disentanglement_num_test"]) == (60, 30)
    assert summary["test/disentanglement_comparable"] is False
    assert source.rendered == 60 + 30 + 40 + (20 + 10) * 8  # every image drawn once, none for other splits

    record = read_json(run_dir / "eval" / "test.json")
    assert record["latest"].endswith(",factors=60/30/20/0,fvae=8x20/10/40")
    protocol = record["results"][record["latest"]]["settings"]["disentanglement"]
    assert protocol["factors"] == {"red": 3, "bar": 4, "green": 2} and protocol["prune_threshold"] == 0.05
    assert set(protocol["wall_s"]) == {"encode", "mig", "dci", "sap", "factor_vae"}

    # the same seed draws the same images: evaluating again gives the same scores
    again = evaluate_run(run_dir, checkpoint="best", device="cpu")
    assert all(again[f"test/{k}"] == summary[f"test/{k}"] for k in KEYS)


def test_comparable_needs_the_libs_counts_and_its_batch_of_64() -> None:
    assert entries.comparable(EvalSpec().disentanglement)
    for field, value in (("num_train", 9_999), ("num_bins", 10), ("factor_vae.batch_size", 128)):
        spec = EvalSpec.model_validate({"disentanglement": _nested(field, value)}).disentanglement
        assert not entries.comparable(spec), field
    more = EvalSpec.model_validate({"disentanglement": {"num_train": 20_000}}).disentanglement
    assert entries.comparable(more)


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    head, _, rest = dotted.partition(".")
    return {head: _nested(rest, value) if rest else value}
