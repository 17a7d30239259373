"""VGG16 perceptual loss (Johnson et al. 2016): squared distances between frozen VGG16 activations.

The ImageNet weights are read from the torch hub cache. When the file is absent they are downloaded there
with torchvision's own download (and its progress bar) before training starts; where that fails (cluster
nodes often have no internet) `check_vgg_weights_available()` fails fast with instructions, before a
run has used its queue slot on data loading.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import VGG16_Weights
from torchvision.models.vgg import cfgs, make_layers

from vaebench.core.errors import UserError

VGG_LAYER_INDEX: dict[str, int] = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
"""Index, in torchvision's `vgg16().features`, of the ReLU whose output each layer name denotes."""

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_weights_path() -> Path:
    """Where torchvision caches VGG16_Weights.IMAGENET1K_V1.

    That is <torch.hub.get_dir()>/checkpoints/vgg16-397923af.pth, where torch.hub.get_dir() is
    $TORCH_HOME/hub (default ~/.cache/torch/hub).
    """
    filename = os.path.basename(urlparse(VGG16_Weights.IMAGENET1K_V1.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


DOWNLOAD_TIMEOUT_S = 30.0
"""Socket timeout of the weights download: a firewall that drops packets fails in seconds, not hours."""


def download_vgg_weights(path: Path) -> None:
    """torchvision's own download of VGG16_Weights.IMAGENET1K_V1 into the torch cache, with a progress bar.

    torch.hub writes to a temporary file beside `path` and checks the SHA-256 prefix in the file name
    (397923af) before moving it into place, so an interrupted or corrupted download leaves no file.
    """
    url = VGG16_Weights.IMAGENET1K_V1.url
    hash_prefix = path.stem.rsplit("-", 1)[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=hash_prefix, progress=True)
    finally:
        socket.setdefaulttimeout(previous)


def check_vgg_weights_available(download: bool = True) -> Path:
    """The path of the ImageNet VGG16 weights, downloaded first if absent; a UserError saying how to get
    them when they are absent and cannot be downloaded (no internet on a cluster node, say)."""
    path = vgg16_weights_path()
    if path.is_file():
        return path
    url = VGG16_Weights.IMAGENET1K_V1.url
    why = "downloading is turned off"
    if download:
        try:
            download_vgg_weights(path)
            return path
        except Exception as error:  # no network, DNS, timeout, HTTP error, hash mismatch, full disk
            why = f"downloading it failed ({type(error).__name__}: {error})"
    raise UserError(
        f"The perceptual loss (loss.perceptual_weight > 0, loss.vgg_weights = 'imagenet') needs the "
        f"VGG16 ImageNet weights at {path}; that file does not exist and {why}. On a machine with "
        f"internet access run\n"
        f"    mkdir -p {path.parent} && curl -L -o {path} {url}\n"
        f"(or copy the file there from another machine's torch cache; set TORCH_HOME to use another "
        f"cache folder), or set loss.perceptual_weight to 0."
    )


class VGGPerceptual(nn.Module):
    """Frozen VGG16 features compared layer by layer; forward(x, y) -> (B,) distances.

    Units: for each requested layer, the mean over (channels, height, width) of the squared difference of
    the ReLU activations of x and y (VGG activation units squared; not nats, so `loss.perceptual_weight`
    sets the exchange rate), summed over layers. Inputs are images in [0, 1], normalised here with the
    ImageNet mean and std VGG was trained with. The network stays in eval mode and its parameters never
    require gradients; gradients flow to the inputs.
    """

    def __init__(
        self,
        layers: Sequence[Literal["relu1_2", "relu2_2", "relu3_3", "relu4_3"]] = (
            "relu1_2",
            "relu2_2",
            "relu3_3",
        ),
        weights: Literal["imagenet", "random"] = "imagenet",
    ) -> None:
        super().__init__()
        unknown = sorted(set(layers) - set(VGG_LAYER_INDEX))
        if not layers or unknown:
            raise ValueError(
                f"VGG layers must be a non-empty subset of {list(VGG_LAYER_INDEX)}, got {list(layers)}"
            )
        self.taps = sorted({VGG_LAYER_INDEX[name] for name in layers})
        # torchvision's vgg16().features (same module indices, so the state-dict keys match), cut after
        # the deepest requested ReLU; building only the features skips the 120M-parameter classifier.
        self.features = make_layers(cfgs["D"])[: self.taps[-1] + 1]
        if weights == "imagenet":
            self._load_imagenet(check_vgg_weights_available())
        elif weights != "random":
            raise ValueError(f"weights must be 'imagenet' or 'random', got {weights!r}")
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def _load_imagenet(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a truncated download, a file of another format
            raise UserError(
                f"Could not read the VGG16 weights at {path} ({error}). Delete the file and fetch it again "
                f"from {VGG16_Weights.IMAGENET1K_V1.url}."
            ) from error
        keep = {f"{i}.{p}" for i, module in enumerate(self.features) for p, _ in module.named_parameters()}
        features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        self.features.load_state_dict({k: v for k, v in features.items() if k in keep})

    def train(self, mode: bool = True) -> VGGPerceptual:
        """Always eval mode: the loss network is a fixed function, whatever mode the trainer sets."""
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        # x, y: (B, 3, H, W) in [0, 1]; one pass over both halves of a (2B, 3, H, W) batch
        h = (torch.cat([x, y]) - self.mean) / self.std
        distance = x.new_zeros(x.shape[0])
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                fx, fy = h.chunk(2)  # (B, C_l, H_l, W_l) each
                distance = distance + (fx - fy).square().mean(dim=(1, 2, 3))
        return distance  # (B,)
