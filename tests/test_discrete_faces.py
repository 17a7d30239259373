"""The synthetic faces' discrete factor mode (data.factor_levels) and its FactorSource, which the
disentanglement metrics draw their images from."""

from __future__ import annotations

import hashlib

import pytest
import torch

from vaebench.data import FACTOR_NAMES, build_dataset, render
from vaebench.data.factors import factor_source
from vaebench.data.spec import CelebADataSpec, SyntheticDataSpec
from vaebench.data.synthetic import DiscreteFaces, codes_to_factors, factor_grid, physical_factors

# sha256 of the default spec's test split (256 images, 64x64) before discrete mode existed, rendered with
# torch 2.14.1 on CPU capabilities AVX2 and AVX512 (which agree); the scalar DEFAULT kernels round a few
# pixels differently, so elsewhere only the factors' hash and the rendering path are checked.
CONTINUOUS_TEST_IMAGES = "897476407db444ad847ae5fdcbd6602edca377a844cd7854b675d604c8dbb953"
CONTINUOUS_TEST_FACTORS = "13b6ccba212851737a599fdb4e343ab205755b73a5abf91c3bba635c40078407"


def sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def test_continuous_mode_renders_the_same_bytes_as_before() -> None:
    spec = SyntheticDataSpec()
    assert spec.factor_levels is None
    test = build_dataset(spec, "test")
    assert test.codes is None
    assert sha256(test.factors) == CONTINUOUS_TEST_FACTORS  # torch.rand from seed 0 + 2, as before
    before = render(torch.rand(256, len(FACTOR_NAMES), generator=torch.Generator().manual_seed(2)), 64)
    assert torch.equal(test.images, before)
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert sha256(test.images) == CONTINUOUS_TEST_IMAGES


def test_grid_is_evenly_spaced_and_circular_factors_do_not_repeat_an_end() -> None:
    grid = factor_grid(6)  # (11, 6)
    circular = [FACTOR_NAMES.index("bg_hue"), FACTOR_NAMES.index("bg_angle")]
    for j in range(len(FACTOR_NAMES)):
        expected = torch.arange(6) / (6 if j in circular else 5)
        assert torch.allclose(grid[j], expected)
    # hue 0 and hue 1 are the same colour: the circular grid stops one step short of 1
    assert grid[circular, -1].tolist() == pytest.approx([5 / 6, 5 / 6])
    same = torch.zeros(2, len(FACTOR_NAMES))
    same[1, circular] = 1.0
    assert torch.equal(render(same, 32)[0], render(same, 32)[1])  # why k/(n-1) would waste a level


def test_codes_are_in_range_and_uniform_per_factor() -> None:
    source = DiscreteFaces(levels=6, image_size=16)
    assert source.factor_names == FACTOR_NAMES and source.factor_sizes == (6,) * 11
    codes = source.sample_codes(6000, torch.Generator().manual_seed(0))
    assert codes.shape == (6000, 11) and codes.dtype == torch.int64
    assert int(codes.min()) == 0 and int(codes.max()) == 5
    counts = torch.stack([torch.bincount(codes[:, j], minlength=6) for j in range(11)])  # (11, 6)
    assert counts.min() > 850 and counts.max() < 1150  # 1000 expected; binomial sd about 29
    # factors are drawn independently: two columns' joint counts are near 6000 / 36 each
    joint = torch.bincount(codes[:, 2] * 6 + codes[:, 3], minlength=36)
    assert joint.min() > 110 and joint.max() < 230


def test_split_images_are_the_rendering_of_the_split_codes() -> None:
    spec = SyntheticDataSpec(train_size=40, val_size=8, test_size=24, image_size=32, factor_levels=6)
    test = build_dataset(spec, "test")
    source = factor_source(spec)
    assert isinstance(source, DiscreteFaces)
    assert test.codes is not None and test.codes.shape == (24, 11)
    assert torch.equal(test.factors, codes_to_factors(test.codes, 6))
    assert torch.equal(source.render_codes(test.codes), test.images)
    assert torch.equal(source.render_codes(test.codes), source.render_codes(test.codes.clone()))
    # the split's codes are drawn like the continuous mode's factors: seed + split index
    again = source.sample_codes(24, torch.Generator().manual_seed(spec.seed + 2))
    assert torch.equal(again, test.codes)


def test_holding_skin_tone_fixed_gives_faces_of_one_colour() -> None:
    source = DiscreteFaces(levels=6, image_size=64)
    codes = source.sample_codes(32, torch.Generator().manual_seed(1))
    tone = FACTOR_NAMES.index("skin_tone")

    def face_centre_colours(codes: torch.Tensor) -> torch.Tensor:
        """(N, 3) colour of the pixel under each face's centre (skin: the eyes and mouth are off it)."""
        images = source.render_codes(codes).int()
        phys = physical_factors(codes_to_factors(codes, 6))
        x = ((phys[:, FACTOR_NAMES.index("face_x")] + 1) / 2 * 64).long()
        y = ((phys[:, FACTOR_NAMES.index("face_y")] + 1) / 2 * 64).long()
        return images[torch.arange(len(codes)), :, y, x]

    free = face_centre_colours(codes)
    assert (free.amax(0) - free.amin(0)).max() > 60  # skin tone varies when it is free
    fixed = codes.clone()
    fixed[:, tone] = 3
    held = face_centre_colours(fixed)
    assert (held.amax(0) - held.amin(0)).max() <= 2  # the same skin in every image
    assert not torch.equal(source.render_codes(fixed), source.render_codes(codes))


def test_discrete_split_differs_from_continuous_and_lies_on_the_grid() -> None:
    continuous = SyntheticDataSpec(train_size=8, val_size=8, test_size=16, image_size=32)
    discrete = continuous.model_copy(update={"factor_levels": 4})
    a, b = build_dataset(continuous, "test"), build_dataset(discrete, "test")
    assert not torch.equal(a.images, b.images)
    grid = factor_grid(4)
    on_grid = (b.factors.T[:, :, None] == grid[:, None, :]).any(-1)  # (11, N): each value is a level
    assert bool(on_grid.all())
    assert b.factors.unique().numel() <= 8  # {0, 1/3, 2/3, 1} and the circular {0, 1/4, 1/2, 3/4}


def test_factor_source_only_for_discrete_synthetic_data() -> None:
    assert factor_source(SyntheticDataSpec()) is None
    assert factor_source(CelebADataSpec()) is None
    source = factor_source(SyntheticDataSpec(factor_levels=3, image_size=16))
    assert source is not None
    images = source.render_codes(torch.zeros(2, 11, dtype=torch.long))
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8
    with pytest.raises(ValueError, match="lie in"):
        source.render_codes(torch.full((1, 11), 3))
