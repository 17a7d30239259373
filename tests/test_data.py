"""The data pipeline: synthetic faces, CelebA in both on-disk layouts, the uint8 cache, and its errors."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaebench.core.errors import UserError
from vaebench.data import (
    FACTOR_NAMES,
    CachedImages,
    CelebAImages,
    SyntheticFaces,
    build_dataset,
    cache_path,
    cache_problem,
    check_data,
    num_dims,
    prepare,
    prepare_cache,
    render,
)
from vaebench.data.spec import CelebADataSpec, SyntheticDataSpec

# ----------------------------------------------------------------------------- synthetic


def test_synthetic_splits_are_uint8_images_of_the_spec_sizes() -> None:
    spec = SyntheticDataSpec(train_size=20, val_size=7, test_size=5, image_size=32)
    sizes = {split: len(build_dataset(spec, split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 20, "val": 7, "test": 5}
    image = build_dataset(spec, "val")[3]
    assert image.shape == (3, 32, 32)
    assert image.dtype == torch.uint8
    assert num_dims(spec) == 3 * 32 * 32


def test_synthetic_data_is_deterministic_by_seed() -> None:
    first, second = SyntheticFaces(16, 64, seed=3), SyntheticFaces(16, 64, seed=3)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.factors, second.factors)


def test_synthetic_splits_and_seeds_differ_and_split_i_uses_seed_plus_i() -> None:
    spec = SyntheticDataSpec(train_size=8, val_size=8, test_size=8, seed=0)
    train, val, test = (build_dataset(spec, s).images for s in ("train", "val", "test"))
    assert not torch.equal(train, val) and not torch.equal(val, test) and not torch.equal(train, test)
    other_seed = build_dataset(spec.model_copy(update={"seed": 1}), "train").images
    assert not torch.equal(train, other_seed)
    assert torch.equal(other_seed, val)  # seed 1's train split is seed 0's val split: seed + split index


def test_synthetic_factors_are_in_unit_interval_and_determine_the_image() -> None:
    data = SyntheticFaces(10, 64, seed=0)
    assert data.factors.shape == (10, len(FACTOR_NAMES))
    assert 0 <= data.factors.min() and data.factors.max() <= 1
    assert torch.equal(render(data.factors, 64), data.images)


def test_skin_tone_factor_sets_the_colour_at_the_face_centre() -> None:
    factors = torch.full((2, len(FACTOR_NAMES)), 0.5)  # face centred at (0, 0)
    tone = FACTOR_NAMES.index("skin_tone")
    factors[0, tone], factors[1, tone] = 0.0, 1.0
    centre = render(factors, 64)[:, :, 32, 32].int()  # (2, 3): pixel centre at (1/64, 1/64), inside the face
    light = torch.tensor([0.96, 0.80, 0.69]) * 255  # (245, 204, 176)
    dark = torch.tensor([0.38, 0.24, 0.16]) * 255  # (97, 61, 41)
    assert (centre[0] - light).abs().max() <= 1
    assert (centre[1] - dark).abs().max() <= 1


def test_synthetic_images_use_the_value_range() -> None:
    images = SyntheticFaces(32, 64, seed=0).images.float()
    assert images.amax() - images.amin() > 150
    per_image_std = images.flatten(1).std(dim=1)
    assert per_image_std.min() > 15  # every image has structure, none is flat


def test_5000_synthetic_images_render_in_a_few_seconds() -> None:
    start = time.perf_counter()
    data = SyntheticFaces(5000, 64, seed=0)
    assert len(data) == 5000
    assert time.perf_counter() - start < 5.0


# ----------------------------------------------------------------------------- a tiny CelebA on disk

SPLIT_CODES = [0] * 6 + [1] * 3 + [2] * 3  # 6 train, 3 valid, 3 test


def write_celeba(root: Path, layout: str) -> tuple[Path, Path]:
    """Write 12 structured 178x218 JPEGs and a partition file in `layout`; return (image_dir, partition)."""
    if layout == "torchvision":
        image_dir = root / "celeba" / "img_align_celeba"
        partition = root / "celeba" / "list_eval_partition.txt"
        lines = [f"{i + 1:06d}.jpg {code}" for i, code in enumerate(SPLIT_CODES)]
    else:
        image_dir = root / "img_align_celeba" / "img_align_celeba"
        partition = root / "list_eval_partition.csv"
        lines = ["image_id,partition"] + [f"{i + 1:06d}.jpg,{code}" for i, code in enumerate(SPLIT_CODES)]
    image_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:218, 0:178]
    for i in range(len(SPLIT_CODES)):
        pixels = np.stack([rows * 255 // 217, cols * 255 // 177, np.full_like(rows, 20 * i)], axis=-1)
        top, left = rng.integers(0, 180), rng.integers(0, 140)
        pixels[top : top + 30, left : left + 30] = rng.integers(0, 256, 3)  # an off-centre block
        Image.fromarray(pixels.astype(np.uint8)).save(image_dir / f"{i + 1:06d}.jpg", quality=90)
    partition.write_text("\n".join(lines) + "\n")
    return image_dir, partition


@pytest.fixture
def celeba(tmp_path: Path) -> CelebADataSpec:
    write_celeba(tmp_path, "torchvision")
    return CelebADataSpec(root=tmp_path, num_workers=0)


@pytest.mark.parametrize(
    ("layout", "root_below"), [("torchvision", ""), ("torchvision", "celeba"), ("kaggle", "")]
)
def test_each_layout_loads_the_official_splits(tmp_path: Path, layout: str, root_below: str) -> None:
    write_celeba(tmp_path, layout)
    spec = CelebADataSpec(root=tmp_path / root_below, num_workers=0)
    datasets = {split: build_dataset(spec, split) for split in ("train", "val", "test")}
    assert {split: len(d) for split, d in datasets.items()} == {"train": 6, "val": 3, "test": 3}
    assert isinstance(datasets["val"], CelebAImages)
    assert datasets["val"].layout.name == layout
    assert datasets["val"].names == ["000007.jpg", "000008.jpg", "000009.jpg"]
    image = datasets["test"][2]
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8


def test_crop_and_resize_match_a_hand_computation_with_pil(celeba: CelebADataSpec) -> None:
    path = celeba.root / "celeba" / "img_align_celeba" / "000002.jpg"
    decoded = Image.open(path).convert("RGB")
    # 178x218 centre crop of 148: left = (178 - 148) / 2 = 15, top = (218 - 148) / 2 = 35.
    crop_only = build_dataset(celeba.model_copy(update={"image_size": 148}), "train")[1]
    assert torch.equal(crop_only, torch.from_numpy(np.array(decoded)[35:183, 15:163]).permute(2, 0, 1))
    expected = decoded.crop((15, 35, 163, 183)).resize((32, 32), Image.Resampling.BILINEAR)
    resized = build_dataset(celeba.model_copy(update={"image_size": 32}), "train")[1]
    assert torch.equal(resized, torch.from_numpy(np.array(expected)).permute(2, 0, 1))


# ----------------------------------------------------------------------------- the cache


def test_cache_matches_direct_decoding_and_is_used(celeba: CelebADataSpec) -> None:
    paths = prepare_cache(celeba, progress=False, num_workers=0)
    for split, path in paths.items():
        cached = build_dataset(celeba, split)
        assert isinstance(cached, CachedImages) and cached.path == path
        direct = CelebAImages(celeba, split)
        assert len(cached) == len(direct)
        assert torch.equal(
            torch.stack([cached[i] for i in range(len(cached))]),
            torch.stack([direct[i] for i in range(len(direct))]),
        )
    meta = json.loads(paths["val"].with_suffix(".json").read_text())
    assert (meta["count"], meta["crop"], meta["image_size"], meta["layout"]) == (3, 148, 64, "torchvision")
    assert sorted(p.name for p in (celeba.root / "cache").iterdir() if not p.name.startswith(".")) == sorted(
        paths[s].with_suffix(ext).name for s in ("train", "val", "test") for ext in (".npy", ".json")
    )  # nothing half-written left behind
    assert not [p for p in (celeba.root / "cache").iterdir() if p.name.endswith(".partial")]
    assert paths["val"].name.startswith("celeba-val-crop148-64px-")


def test_a_cache_made_with_other_settings_is_not_used(
    celeba: CelebADataSpec, caplog: pytest.LogCaptureFixture
) -> None:
    prepare(celeba, splits=["train"], progress=False, num_workers=0)
    smaller = celeba.model_copy(update={"image_size": 32})
    assert "no cache" in cache_problem(smaller, "train")
    assert build_dataset(smaller, "train")[0].shape == (3, 32, 32)

    sidecar = cache_path(celeba, "train").with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "crop": 128}))  # as if renamed from a crop-128 cache
    assert "crop=128" in cache_problem(celeba, "train")
    with caplog.at_level(logging.WARNING, logger="vaebench.data"):
        fallback = build_dataset(celeba, "train")
    assert isinstance(fallback, CelebAImages)
    assert "vaebench data prepare" in caplog.text

    sidecar.write_text(json.dumps(meta))
    assert cache_problem(celeba, "train", source=CelebAImages(celeba, "train")) is None


def test_a_prepared_cache_is_enough_without_the_jpegs(celeba: CelebADataSpec) -> None:
    prepare(celeba, progress=False, num_workers=0)
    expected = build_dataset(celeba, "test")[1]
    shutil.rmtree(celeba.root / "celeba")
    check_data(celeba)
    assert torch.equal(build_dataset(celeba, "test")[1], expected)


def test_cached_images_pickle_without_their_array(celeba: CelebADataSpec) -> None:
    dataset = CachedImages(prepare(celeba, splits=["train"], progress=False, num_workers=0)["train"])
    first = dataset[0]  # opens the memory map
    copy = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 1000 < first.numel()
    assert torch.equal(copy[0], first)


def test_prepare_has_nothing_to_do_for_synthetic_data() -> None:
    assert prepare(SyntheticDataSpec(), progress=False) == {}
    check_data(SyntheticDataSpec())  # no files needed


# ----------------------------------------------------------------------------- errors for people


def assert_explains(error: UserError, *fragments: str) -> None:
    message = str(error)
    assert "\n" not in message  # one paragraph
    layouts = ("list_eval_partition.txt", "list_eval_partition.csv", "img_align_celeba/img_align_celeba")
    for fragment in (*layouts, "jessicali9530/celeba-dataset", *fragments):
        assert fragment in message, f"{fragment!r} missing from: {message}"


def test_a_missing_partition_file_names_the_path_and_both_layouts(celeba: CelebADataSpec) -> None:
    (celeba.root / "celeba" / "list_eval_partition.txt").unlink()
    with pytest.raises(UserError) as caught:
        check_data(celeba)
    assert_explains(caught.value, str(celeba.root), "img_align_celeba/")  # found: the image folder


def test_a_missing_image_folder_names_the_path_and_both_layouts(celeba: CelebADataSpec) -> None:
    shutil.rmtree(celeba.root / "celeba" / "img_align_celeba")
    with pytest.raises(UserError) as caught:
        build_dataset(celeba, "train")
    assert_explains(caught.value, str(celeba.root), "no image folder")


def test_an_empty_root_says_what_it_found(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        check_data(CelebADataSpec(root=tmp_path / "nowhere"))
    assert_explains(caught.value, str(tmp_path / "nowhere"), "does not exist")


def test_a_partition_listing_a_missing_image_names_it(celeba: CelebADataSpec) -> None:
    (celeba.root / "celeba" / "img_align_celeba" / "000008.jpg").unlink()
    build_dataset(celeba, "train")  # the train split is complete
    with pytest.raises(UserError) as caught:
        check_data(celeba)
    assert_explains(caught.value, "000008.jpg", str(celeba.root / "celeba" / "img_align_celeba"))


def test_a_malformed_partition_line_is_reported_with_its_number(celeba: CelebADataSpec) -> None:
    partition = celeba.root / "celeba" / "list_eval_partition.txt"
    lines = partition.read_text().splitlines()
    lines[4] = "000005.jpg train"
    partition.write_text("\n".join(lines))
    with pytest.raises(UserError) as caught:
        build_dataset(celeba, "val")
    assert_explains(caught.value, f"line 5 of {partition}", "000005.jpg train")


def test_a_crop_larger_than_the_images_is_refused(celeba: CelebADataSpec) -> None:
    with pytest.raises(UserError, match=r"data.crop = 200 .* at most 178"):
        check_data(celeba.model_copy(update={"crop": 200}))
