"""VGG16 perceptual distance: shape, units, frozen network, and the weights file.

The weights are downloaded when absent; every download here is stubbed at torch.hub's boundary. Stand-in
weights pass the hash check through `pinned_weights` (their file name pins their own hash).
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import VGG16_Weights
from torchvision.models.vgg import cfgs, make_layers

from pinned_weights import pin_weights, plant_weights, weights_bytes
from vaebench.core.errors import UserError
from vaebench.core.weights import WEIGHTS
from vaebench.objectives.perceptual import (
    VGGPerceptual,
    check_vgg_weights_available,
    load_vgg16_state,
    vgg16_weights_path,
)


@pytest.fixture(scope="module")
def vgg() -> VGGPerceptual:
    torch.manual_seed(0)
    return VGGPerceptual(["relu1_2", "relu2_2"], weights="random")


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_distance_is_per_image_zero_for_identical_and_positive_otherwise(vgg: VGGPerceptual) -> None:
    x, y = images(3, 0), images(3, 1)
    d = vgg(x, y)
    assert d.shape == (3,)
    assert torch.all(d > 0)
    assert torch.equal(vgg(x, x), torch.zeros(3))
    # Per image: image 0 compared with itself is 0 whatever the other images in the batch are.
    assert vgg(x, torch.cat([x[:1], y[1:]]))[0] == 0


def test_distance_is_the_sum_over_layers_of_mean_squared_normalised_features(vgg: VGGPerceptual) -> None:
    x, y = images(2, 0), images(2, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        fx1, fy1 = vgg.features[:4]((x - mean) / std), vgg.features[:4]((y - mean) / std)  # relu1_2
        fx2, fy2 = vgg.features[:9]((x - mean) / std), vgg.features[:9]((y - mean) / std)  # relu2_2
        expected = ((fx1 - fy1) ** 2).mean((1, 2, 3)) + ((fx2 - fy2) ** 2).mean((1, 2, 3))
        assert torch.allclose(vgg(x, y), expected, rtol=1e-5)


def test_network_is_cut_after_the_deepest_requested_layer() -> None:
    assert len(VGGPerceptual(["relu1_2"], weights="random").features) == 4
    assert len(VGGPerceptual(["relu3_3", "relu1_2"], weights="random").features) == 16
    with pytest.raises(ValueError, match="relu5_3"):
        VGGPerceptual(["relu5_3"], weights="random")  # type: ignore[list-item]


def test_gradients_reach_the_images_but_not_the_frozen_vgg(vgg: VGGPerceptual) -> None:
    x = images(2, 0).requires_grad_(True)
    vgg(x, images(2, 1)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in vgg.parameters())
    vgg.train()
    assert not vgg.training  # stays a fixed function in the trainer's train mode


def _vgg_state(seed: int = 1) -> tuple[nn.Sequential, dict[str, torch.Tensor]]:
    """A stand-in for vgg16-397923af.pth holding torchvision's key names (only the layers relu1_2 needs)."""
    torch.manual_seed(seed)
    source = make_layers(cfgs["D"])[:4]
    state = {f"features.{k}": v for k, v in source.state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)
    return source, state


def test_the_registered_vgg16_file_is_torchvisions_imagenet_checkpoint() -> None:
    assert WEIGHTS["vgg16"].url == VGG16_Weights.IMAGENET1K_V1.url
    assert WEIGHTS["vgg16"].hash_prefix == "397923af"


def test_missing_weights_that_cannot_be_downloaded_fail_fast_naming_the_file_url_and_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def no_network(url: str, dst: str, *args: object, **kwargs: object) -> None:
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    expected = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    assert vgg16_weights_path() == expected
    for attempt in (check_vgg_weights_available, lambda: VGGPerceptual(["relu1_2"], weights="imagenet")):
        with pytest.raises(UserError) as error:
            attempt()
        assert str(expected) in str(error.value)
        assert VGG16_Weights.IMAGENET1K_V1.url in str(error.value)
        assert "name resolution" in str(error.value)  # why the download failed
        assert "`vaebench weights fetch vgg16`" in str(error.value)
    assert calls == [VGG16_Weights.IMAGENET1K_V1.url] * 2
    assert not expected.exists()
    with pytest.raises(UserError, match="vaebench weights fetch vgg16") as error:
        check_vgg_weights_available(download=False)
    assert f"looked for at {expected} and is not there" in str(error.value)
    assert len(calls) == 2


def test_missing_weights_are_downloaded_into_the_torch_cache_with_a_progress_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, state = _vgg_state()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    entry = pin_weights("vgg16", state, monkeypatch)  # the file name pins the stand-in's hash
    seen: dict[str, object] = {}

    def fake_download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        seen.update(url=url, dst=dst, hash_prefix=hash_prefix, progress=progress)
        Path(dst).write_bytes(weights_bytes(state))

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path = check_vgg_weights_available()
    assert path == vgg16_weights_path() == tmp_path / "hub" / "checkpoints" / entry.filename
    assert seen == {
        "url": entry.url,
        "dst": str(path),
        "hash_prefix": entry.hash_prefix,  # torch.hub checks the file's SHA-256 against it
        "progress": True,
    }
    seen.clear()
    vgg = VGGPerceptual(["relu1_2"], weights="imagenet")  # the file is there now: no second download
    assert seen == {}
    assert torch.equal(vgg.features[0].weight, source[0].weight)


def test_imagenet_weights_are_loaded_from_the_torch_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, state = _vgg_state()
    path = plant_weights("vgg16", state, tmp_path, monkeypatch)
    assert check_vgg_weights_available() == path == vgg16_weights_path()
    vgg = VGGPerceptual(["relu1_2"], weights="imagenet")
    assert torch.equal(vgg.features[0].weight, source[0].weight)
    assert torch.equal(vgg.features[2].bias, source[2].bias)
    # ... at torchvision's vgg16 module indices (relu1_2 = index 3), so real files load.
    assert [type(m) for m in vgg.features] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU]


def test_the_full_state_dict_loader_returns_torchvisions_keys_from_a_verified_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, state = _vgg_state()
    path = plant_weights("vgg16", state, tmp_path, monkeypatch)
    loaded = load_vgg16_state(path)
    assert loaded.keys() == state.keys()  # classifier.* too: the evaluation's fc2 features need them
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    other = tmp_path / "copy.pth"
    other.write_bytes(path.read_bytes()[:-1])  # a truncated copy at a path a spec names
    with pytest.raises(UserError, match="is not that file"):
        load_vgg16_state(other, "eval.quality.vgg_path")


def test_a_wrong_file_under_the_pinned_name_is_refused_not_loaded_nor_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another state dict (another release, a truncated copy) under vgg16-397923af.pth: loading it would
    silently change every perceptual loss, so it is an error that says what to do."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = vgg16_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(_vgg_state()[1], path)
    planted = path.read_bytes()
    with pytest.raises(UserError) as error:
        VGGPerceptual(["relu1_2"], weights="imagenet")
    message = str(error.value)
    assert f"{path} is not that file" in message and "pins 397923af" in message
    assert "Delete it and run `vaebench weights fetch vgg16`" in message
    assert path.read_bytes() == planted  # conftest refuses downloads: none was tried either


def test_unreadable_weights_file_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that passes its pin but is no state dict (only possible with a planted pin) is refused too."""
    plant_weights("vgg16", b"<html>404</html>", tmp_path, monkeypatch)
    with pytest.raises(UserError, match="Delete the file and run `vaebench weights fetch vgg16`"):
        VGGPerceptual(["relu1_2"], weights="imagenet")
