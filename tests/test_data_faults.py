"""A real, imperfect CelebA download: every bad image is named before training, caches never go stale.

Each test builds a small CelebA folder on disk (tests/test_data.py's `write_celeba`, 12 images of
178x218) and breaks it the way downloads break; the CLI tests check the exit code, that no
traceback is printed and that the message names the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from test_data import write_celeba
from vaebench.cli import app
from vaebench.core.errors import UserError
from vaebench.data import (
    CachedImages,
    CelebAImages,
    build_dataset,
    cache_path,
    cache_problem,
    check_data,
    prepare,
)
from vaebench.data.celeba import fit_aligned
from vaebench.data.spec import CelebADataSpec

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def spec(tmp_path: Path) -> CelebADataSpec:
    write_celeba(tmp_path, "torchvision")
    return CelebADataSpec(root=tmp_path, num_workers=0)


def images(spec: CelebADataSpec) -> Path:
    return Path(spec.root) / "celeba" / "img_align_celeba"


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def resave(path: Path, size: tuple[int, int], value: int = 200) -> np.ndarray:
    """Overwrite a JPEG with a (width, height) image of a bright gradient; returns its pixels (H, W, 3)."""
    rows, cols = np.mgrid[0 : size[1], 0 : size[0]]
    pixels = np.stack([rows * 255 // size[1], cols * 255 // size[0], np.full_like(rows, value)], -1)
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=95)
    return np.asarray(Image.open(path).convert("RGB"))


def write_experiment(tmp_path: Path, spec: CelebADataSpec) -> Path:
    """A one-variant CelebA experiment small enough to train on a CPU in a second."""
    base = {
        "data": {"kind": "celeba", "root": str(spec.root), "image_size": 16, "num_workers": 0},
        "model": {"stem_channels": 4, "channels": [8], "latent_dim": 4},
        "train": {"steps": 2, "batch_size": 2, "log_every": 1, "val_every": 2, "checkpoint_every": 2},
        "eval": {"at_end": False},
        "tracking": {"mode": "disabled"},
    }
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump({"name": "faults", "base": base, "variants": [{"name": "only"}]}))
    return path


def cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ----------------------------------------------------------------------------- broken files


def test_truncated_empty_and_non_image_files_are_all_named_and_no_cache_is_written(
    spec: CelebADataSpec,
) -> None:
    truncate(images(spec) / "000004.jpg")
    (images(spec) / "000005.jpg").write_bytes(b"")
    (images(spec) / "000006.jpg").write_text("<html>404 Not Found</html>")
    with pytest.raises(UserError) as caught:
        prepare(spec, progress=False, num_workers=0)
    message = str(caught.value)
    assert "\n" not in message
    assert "Checked the 6 images of the CelebA train split" in message and "3 cannot be used" in message
    assert "000004.jpg (truncated" in message
    assert "000005.jpg (not an image (0 bytes))" in message and "000006.jpg (not an image" in message
    assert "unzip img_align_celeba.zip again" in message
    assert cache_files(Path(spec.root) / "cache") == []  # checked before anything is written
    with pytest.raises(UserError, match=r"000004\.jpg"):
        check_data(spec)  # what `run` calls before the first step


def test_a_file_that_fails_to_decode_is_named_and_leaves_no_cache(spec: CelebADataSpec) -> None:
    path = images(spec) / "000003.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\xff\xda")] + b"\xff\xd9")  # headers and end marker, no pixels
    check_data(spec)  # the header is fine: only decoding can tell
    with pytest.raises(UserError, match=r"1 CelebA train image\(s\) failed to decode.*000003.jpg"):
        prepare(spec, splits=["train"], progress=False, num_workers=0)
    folder = Path(spec.root) / "cache"
    assert [n for n in cache_files(folder) if not n.startswith(".")] == []  # no half-written cache
    assert not [n for n in cache_files(folder) if "partial" in n]
    with pytest.raises(UserError, match=r"Cannot decode the CelebA image .*000003.jpg"):
        build_dataset(spec, "train")[2]


def test_cli_prepare_exits_1_naming_the_file_without_a_traceback(
    tmp_path: Path, spec: CelebADataSpec
) -> None:
    truncate(images(spec) / "000011.jpg")
    result = runner.invoke(app, ["data", "prepare", str(write_experiment(tmp_path, spec))])
    assert result.exit_code == 1, result.output
    assert "000011.jpg (truncated" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_cli_run_stops_on_a_bad_file_before_training(tmp_path: Path, spec: CelebADataSpec) -> None:
    (images(spec) / "000008.jpg").write_bytes(b"")  # a val image: the old code failed at the first validation
    runs = tmp_path / "runs"
    result = runner.invoke(
        app, ["run", str(write_experiment(tmp_path, spec)), "--runs-dir", str(runs), "--quiet"]
    )
    assert result.exit_code == 1, result.output
    assert "000008.jpg (not an image (0 bytes))" in result.output and "Traceback" not in result.output
    assert not list(runs.rglob("*.pt")) and not list(runs.rglob("metrics.jsonl"))  # no step was taken


def test_cli_run_with_mixed_sizes_skip_trains_and_lists_the_skipped_image(
    tmp_path: Path, spec: CelebADataSpec
) -> None:
    resave(images(spec) / "000005.jpg", (89, 109))
    runs = tmp_path / "runs"
    args = ["run", str(write_experiment(tmp_path, spec)), "--runs-dir", str(runs), "--quiet"]
    result = runner.invoke(app, [*args, "data.mixed_sizes=skip"])
    assert result.exit_code == 0, result.output
    (listing,) = runs.rglob("skipped-images.txt")
    assert listing.read_text() == "train 000005.jpg 89x109\n"
    assert (listing.parent / "metrics.jsonl").exists()  # it trained, on the 5 others


# ----------------------------------------------------------------------------- other sizes


def test_an_image_of_another_size_is_refused_by_default(spec: CelebADataSpec) -> None:
    resave(images(spec) / "000002.jpg", (89, 109))
    resave(images(spec) / "000010.jpg", (356, 436))
    for split, name, size in (("train", "000002.jpg", "89x109"), ("test", "000010.jpg", "356x436")):
        with pytest.raises(UserError) as caught:
            prepare(spec, splits=[split], progress=False, num_workers=0)
        assert f"{name} ({size})" in str(caught.value) and "data.mixed_sizes = resize" in str(caught.value)
        assert "1 are not CelebA's aligned 178x218" in str(caught.value)
    assert cache_files(Path(spec.root) / "cache") == []


def test_mixed_sizes_resize_brings_each_image_to_178x218_before_the_crop(spec: CelebADataSpec) -> None:
    small = resave(images(spec) / "000002.jpg", (89, 109))
    resize = spec.model_copy(update={"mixed_sizes": "resize"})
    cached = CachedImages(prepare(resize, splits=["train"], progress=False, num_workers=0)["train"])
    assert len(cached) == 6
    image = cached[1]  # (3, 64, 64)
    assert image.float().amax(dim=(0, 1)).min() > 100  # no black (zero-padded) column, unlike a plain crop
    fitted = fit_aligned(Image.fromarray(small))
    assert fitted.size == (178, 218)
    expected = fitted.crop((15, 35, 163, 183)).resize((64, 64), Image.Resampling.BILINEAR)
    assert torch.equal(image, torch.from_numpy(np.array(expected)).permute(2, 0, 1))
    untouched = CelebAImages(resize, "train")[0]  # 178x218 images are not resampled
    assert torch.equal(cached[0], untouched)


def test_mixed_sizes_skip_leaves_them_out_and_lists_them_in_the_run_folder(
    tmp_path: Path, spec: CelebADataSpec
) -> None:
    resave(images(spec) / "000003.jpg", (356, 436))
    skip = spec.model_copy(update={"mixed_sizes": "skip"})
    train = CelebAImages(skip, "train")
    assert len(train) == 5 and "000003.jpg" not in train.names
    run_dir = tmp_path / "run"
    check_data(skip, run_dir=run_dir)
    assert (run_dir / "skipped-images.txt").read_text() == "train 000003.jpg 356x436\n"
    path = prepare(skip, splits=["train"], progress=False, num_workers=0)["train"]
    assert json.loads(path.with_suffix(".json").read_text())["skipped"] == {"000003.jpg": "356x436"}
    assert len(build_dataset(skip, "train")) == 5
    check_data(skip, run_dir=tmp_path / "run2")  # from the cache's sidecar this time
    assert "train 000003.jpg 356x436" in (tmp_path / "run2" / "skipped-images.txt").read_text()


# ----------------------------------------------------------------------------- caches keyed by what they hold


def test_fixing_an_image_makes_the_cache_stale_and_prepare_rebuilds_it(spec: CelebADataSpec, capsys) -> None:
    path = prepare(spec, splits=["train"], progress=False, num_workers=0)["train"]
    old = np.load(path)[3].copy()
    resave(images(spec) / "000004.jpg", (178, 218), value=7)  # the "fixed" image: other pixels
    os.utime(images(spec) / "000004.jpg", ns=(1, 1))  # even with an old mtime: its size differs
    assert "added, replaced or modified" in cache_problem(spec, "train", source=CelebAImages(spec, "train"))
    fresh = build_dataset(spec, "train")
    assert isinstance(fresh, CelebAImages)  # the stale cache is not used
    assert not torch.equal(fresh[3], torch.from_numpy(old))
    prepare(spec, splits=["train"], progress=True, num_workers=0)
    assert "rebuilding" in capsys.readouterr().err
    assert torch.equal(torch.from_numpy(np.load(path)[3]), fresh[3])
    assert isinstance(build_dataset(spec, "train"), CachedImages)


def test_another_partition_file_makes_the_cache_stale(spec: CelebADataSpec) -> None:
    prepare(spec, splits=["val"], progress=False, num_workers=0)
    partition = Path(spec.root) / "celeba" / "list_eval_partition.txt"
    partition.write_text(partition.read_text().replace("000007.jpg 1", "000007.jpg 2"))
    assert "another list_eval_partition.txt" in cache_problem(spec, "val", source=CelebAImages(spec, "val"))
    assert len(build_dataset(spec, "val")) == 2


def test_two_roots_sharing_a_cache_dir_keep_caches_of_their_own(tmp_path: Path) -> None:
    shared = tmp_path / "shared-cache"
    a = CelebADataSpec(root=tmp_path / "a", cache_dir=shared, num_workers=0)
    b = CelebADataSpec(root=tmp_path / "b", cache_dir=shared, num_workers=0)
    write_celeba(tmp_path / "a", "torchvision")
    write_celeba(tmp_path / "b", "kaggle")
    resave(tmp_path / "b" / "img_align_celeba" / "img_align_celeba" / "000001.jpg", (178, 218), value=3)
    prepare(a, splits=["train"], progress=False, num_workers=0)
    assert "no cache" in cache_problem(b, "train")
    prepare(b, splits=["train"], progress=False, num_workers=0)
    assert cache_path(a, "train") != cache_path(b, "train")
    for s in (a, b):
        cached = build_dataset(s, "train")
        assert isinstance(cached, CachedImages) and torch.equal(cached[0], CelebAImages(s, "train")[0])
    assert not torch.equal(build_dataset(a, "train")[0], build_dataset(b, "train")[0])
    os.replace(cache_path(a, "train"), cache_path(b, "train"))  # a cache copied under the other's name
    os.replace(cache_path(a, "train").with_suffix(".json"), cache_path(b, "train").with_suffix(".json"))
    assert "was made from" in cache_problem(b, "train", source=CelebAImages(b, "train"))


def test_two_concurrent_prepares_give_one_correct_cache(spec: CelebADataSpec) -> None:
    code = (
        "import sys; from vaebench.data import prepare; from vaebench.data.spec import CelebADataSpec; "
        "prepare(CelebADataSpec(root=sys.argv[1], num_workers=0), progress=True, num_workers=0)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(spec.root)], env=env, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert "Traceback" not in "".join(errors)
    folder = Path(spec.root) / "cache"
    assert len([n for n in cache_files(folder) if n.endswith(".npy")]) == 3
    assert not [n for n in cache_files(folder) if "partial" in n]
    for split in ("train", "val", "test"):
        cached, direct = build_dataset(spec, split), CelebAImages(spec, split)
        assert isinstance(cached, CachedImages)
        assert torch.equal(torch.stack([cached[i] for i in range(len(cached))]), torch.stack(list(direct)))


def test_an_unwritable_cache_folder_asks_for_data_cache_dir(spec: CelebADataSpec) -> None:
    blocker = Path(spec.root) / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"Cannot write the CelebA cache in .*Set data.cache_dir"):
        prepare(spec.model_copy(update={"cache_dir": blocker / "cache"}), progress=False, num_workers=0)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_a_read_only_root_asks_for_data_cache_dir(spec: CelebADataSpec) -> None:
    Path(spec.root).chmod(0o555)
    try:
        with pytest.raises(UserError, match=r"data\.cache_dir"):
            prepare(spec, progress=False, num_workers=0)
        check_data(spec)  # training from JPEGs needs no write
    finally:
        Path(spec.root).chmod(0o755)


# ----------------------------------------------------------------------------- friendlier advice


def test_a_layout_one_folder_down_is_suggested_as_the_root(tmp_path: Path) -> None:
    write_celeba(tmp_path / "downloads", "kaggle")
    with pytest.raises(UserError, match=rf"set data.root = {tmp_path / 'downloads'}\."):
        check_data(CelebADataSpec(root=tmp_path, num_workers=0))


def test_a_partition_csv_with_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    _, partition = write_celeba(tmp_path, "kaggle")
    partition.write_bytes(b"\xef\xbb\xbf" + partition.read_bytes())
    assert len(build_dataset(CelebADataSpec(root=tmp_path, num_workers=0), "train")) == 6
