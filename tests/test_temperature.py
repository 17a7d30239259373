"""The temperature grid's measurement: how much prior samples vary at each tau, and what the report says.

A decoder linear in z has a known answer (the spread scales exactly with tau), and one that normalises
z away has another (the spread is the same at every tau > 0): the measurement must give both.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from vaebench.evaluation.figures import (
    TEMPERATURES,
    measure_temperature,
    spread_ratio,
    temperature_spread,
)
from vaebench.model.spec import ModelSpec
from vaebench.model.vae import VAE, build_model
from vaebench.report.render import Table, Text
from vaebench.report.tables import MISSING
from vaebench.report.writeup import temperature_note

TAUS = (0.0, 0.25, 0.5, 1.0, 2.0)


def tiny_model() -> VAE:
    torch.manual_seed(0)
    return build_model(ModelSpec(stem_channels=8, channels=[16, 32], latent_dim=8), 32)


def noise(n: int = 64, latent: int = 6, seed: int = 0) -> Tensor:
    return torch.randn(n, latent, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_spread_scales_exactly_with_tau_for_a_decoder_linear_in_z() -> None:
    weight = torch.randn(6, 3 * 4 * 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def decode(z: Tensor) -> Tensor:
        return (z @ weight).view(-1, 3, 4, 4)  # (N, 3, 4, 4), x(tau) = tau * x(1)

    eps = noise()
    record = temperature_spread(decode, eps, TAUS)
    at_one = record["spread"][TAUS.index(1.0)]
    assert at_one > 0
    for tau, spread in zip(TAUS, record["spread"], strict=True):
        assert spread == pytest.approx(tau * at_one, rel=1e-12, abs=1e-15)
    # the change between rows is |delta tau| times the mean absolute pixel value at tau = 1
    mean_abs = float(decode(eps).abs().mean())
    assert record["change"][0] is None
    for i in range(1, len(TAUS)):
        assert record["change"][i] == pytest.approx((TAUS[i] - TAUS[i - 1]) * mean_abs, rel=1e-12)
    assert spread_ratio(record) == pytest.approx(0.5, rel=1e-12)


def test_spread_is_the_same_at_every_tau_when_a_group_norm_removes_the_scale_of_z() -> None:
    torch.manual_seed(2)
    linear = nn.Linear(6, 8 * 4 * 4, bias=False).double()
    norm = nn.GroupNorm(2, 8, eps=1e-12).double()
    to_pixels = nn.Conv2d(8, 3, 1).double()

    def decode(z: Tensor) -> Tensor:
        return torch.sigmoid(to_pixels(norm(linear(z).view(-1, 8, 4, 4))))  # (N, 3, 4, 4)

    with torch.no_grad():
        record = temperature_spread(decode, noise(), TAUS)
    spread, change = record["spread"], record["change"]
    assert spread[0] == 0  # tau = 0: every sample decodes z = 0, the same image
    assert spread[1] > 0.01
    for value in spread[2:]:
        assert value == pytest.approx(spread[1], rel=1e-6)  # the scale of z is normalised away
    assert change[1] > 0.01  # from z = 0 to tau = 0.25: the images change
    assert all(c == pytest.approx(0, abs=1e-6) for c in change[2:])  # then they do not
    assert spread_ratio(record) == pytest.approx(1.0, rel=1e-6)


def test_spread_ratio_is_none_when_either_temperature_was_not_measured() -> None:
    assert spread_ratio({"temperatures": [0.5, 1.0], "spread": [0.1, 0.2]}) == pytest.approx(0.5)
    assert spread_ratio({"temperatures": [0.7, 1.0], "spread": [0.1, 0.2]}) is None
    assert spread_ratio({"temperatures": [0.5, 1.0], "spread": [0.1, 0.0]}) is None
    assert spread_ratio({}) is None


def test_measure_temperature_of_a_real_model_matches_its_own_samples() -> None:
    model = tiny_model().eval()
    record = measure_temperature(model, samples=16, seed=3)
    assert record["temperatures"] == list(TEMPERATURES) and record["samples"] == 16
    assert 0.5 in TEMPERATURES and 1.0 in TEMPERATURES  # the ratio the report reads
    assert record["spread"][TEMPERATURES.index(0.0)] == pytest.approx(0, abs=1e-7)
    with torch.no_grad():
        eps = torch.randn(16, model.latent_dim, generator=torch.Generator().manual_seed(3))
        at_one = model.decode(eps)[0].double().std(dim=0).mean()
        at_half = model.decode(0.5 * eps)[0].double().std(dim=0).mean()
    assert record["spread"][TEMPERATURES.index(1.0)] == pytest.approx(float(at_one), rel=1e-6)
    assert record["spread_ratio_0.5_1"] == pytest.approx(float(at_half / at_one), rel=1e-6)


def _record(ratio: float, step: int = 500) -> dict:
    return {
        "temperatures": [0.0, 0.5, 1.0],
        "spread": [0.0, ratio * 0.1, 0.1],
        "change": [None, 0.05, 0.01],
        "samples": 64,
        "step": step,
    }


def _text(blocks: list) -> str:
    return " ".join(b.text for b in blocks if isinstance(b, Text))


def test_note_says_plainly_when_temperature_barely_changes_the_samples() -> None:
    blocks = temperature_note(_record(0.91), _record(0.9))
    flat = _text(blocks)
    assert "spread(0.5)/spread(1) = 0.91" in flat and "0.90 at the end of training (step 500" in flat
    assert "Temperature barely changes this model's samples" in flat and "GroupNorm" in flat
    (table,) = [b.frame for b in blocks if isinstance(b, Table)]
    assert list(table.columns) == ["τ", "0", "0.5", "1"]
    assert table.iloc[0].tolist() == ["spread", "0.000", "0.091", "0.100"]
    assert table.iloc[1].tolist() == ["change from the row above", MISSING, "0.050", "0.010"]
    linear = _text(temperature_note(_record(0.5), _record(0.5)))
    assert "spread(0.5)/spread(1) = 0.50" in linear and "barely" not in linear


def test_note_says_not_measured_for_a_run_folder_made_before_the_measurement() -> None:
    text = _text(temperature_note(_record(0.6), None))
    assert "not measured in the run folder" in text
    text = _text(temperature_note(None, None))
    assert "no measurement of this figure" in text and "not measured" in text
