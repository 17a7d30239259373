"""KL-weight schedules at hand-computed steps, and free bits."""

from __future__ import annotations

import math

import pytest
import torch

from vaebench.objectives.annealing import AnnealSpec, free_bits_kl, kl_weight


def test_constant_schedule_is_end_at_every_step() -> None:
    anneal = AnnealSpec(schedule="constant", start=0.0, end=0.7)
    assert [kl_weight(s, anneal, 1000) for s in (0, 1, 10**6)] == [0.7, 0.7, 0.7]


def test_linear_schedule_ramps_from_start_to_end_then_holds() -> None:
    anneal = AnnealSpec(schedule="linear", start=0.1, end=1.0, warmup_steps=100)
    got = [kl_weight(s, anneal, 1000) for s in (0, 25, 50, 100, 5000)]
    assert got == pytest.approx([0.1, 0.325, 0.55, 1.0, 1.0])


def test_linear_schedule_without_warmup_is_end_from_the_start() -> None:
    assert kl_weight(0, AnnealSpec(schedule="linear", start=0.0, end=0.5, warmup_steps=0), 100) == 0.5


def test_cosine_schedule_follows_a_half_cosine() -> None:
    anneal = AnnealSpec(schedule="cosine", start=0.1, end=1.0, warmup_steps=100)
    quarter = 0.1 + 0.9 * (1 - math.cos(math.pi / 4)) / 2  # 0.2318
    got = [kl_weight(s, anneal, 1000) for s in (0, 25, 50, 100, 200)]
    assert got == pytest.approx([0.1, quarter, 0.55, 1.0, 1.0])
    assert quarter < 0.325  # slower than linear early on


def test_cyclical_schedule_ramps_then_holds_and_resets_every_cycle() -> None:
    # 1000 steps in 4 cycles of 250; each ramps over its first half (125 steps), then holds.
    anneal = AnnealSpec(schedule="cyclical", start=0.0, end=1.0, cycles=4, ramp_fraction=0.5, warmup_steps=7)
    got = {s: kl_weight(s, anneal, 1000) for s in (0, 50, 125, 200, 249, 250, 300, 750, 999, 1000)}
    assert got == pytest.approx(
        {0: 0.0, 50: 0.4, 125: 1.0, 200: 1.0, 249: 1.0, 250: 0.0, 300: 0.4, 750: 0.0, 999: 1.0, 1000: 1.0}
    )


def test_cyclical_schedule_handles_cycles_that_are_not_a_whole_number_of_steps() -> None:
    # 10 steps in 3 cycles of 3.33 steps, ramping over 1.67 steps: step 4 is 0.67 steps into cycle 2.
    anneal = AnnealSpec(schedule="cyclical", start=0.2, end=1.0, cycles=3, ramp_fraction=0.5)
    assert kl_weight(3, anneal, 10) == pytest.approx(1.0)
    assert kl_weight(4, anneal, 10) == pytest.approx(0.2 + 0.8 * 0.4)
    assert kl_weight(7, anneal, 10) == pytest.approx(0.2 + 0.8 * (1 / 3) / (5 / 3))


def test_negative_steps_are_rejected() -> None:
    with pytest.raises(ValueError, match="step must be >= 0"):
        kl_weight(-1, AnnealSpec(), 100)


def test_free_bits_zero_is_the_plain_kl_sum() -> None:
    kl = torch.rand(5, 7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(free_bits_kl(kl, 0.0), kl.sum(dim=1))


def test_free_bits_charge_at_least_the_threshold_per_dimension_of_the_batch_mean() -> None:
    # Batch means per dim: 0.4 < 0.5, so dim 0 is charged 0.5 per image (even image 1's 0.7) and gets no
    # gradient; dims 1 and 2 (means 3 and 0.6) are charged their KL (even image 0's 0.2 in dim 2).
    kl = torch.tensor([[0.1, 2.0, 0.2], [0.7, 4.0, 1.0]], requires_grad=True)
    charged = free_bits_kl(kl, 0.5)
    assert torch.allclose(charged, torch.tensor([0.5 + 2.0 + 0.2, 0.5 + 4.0 + 1.0]))
    assert charged.mean().item() == pytest.approx(max(0.5, 0.4) + max(0.5, 3.0) + max(0.5, 0.6))
    charged.sum().backward()
    assert torch.equal(kl.grad, torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]))
