"""VGG16 perceptual loss (Johnson et al. 2016): squared distances between frozen VGG16 activations.

The ImageNet weights are torchvision's vgg16-397923af.pth, `vaebench.core.weights.WEIGHTS["vgg16"]`,
read from the torch hub cache and checked against the SHA-256 its name pins each time they are loaded.
When the file is absent it is downloaded there (`fetch_weights`, torch.hub's download with its progress
bar and hash check) before training starts; where that fails (cluster nodes often have no internet)
`check_vgg_weights_available()` fails fast with instructions, before a run has used its queue slot on
data loading. `load_vgg16_state` is the one loader of the file, for the evaluation's VGG16 too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models.vgg import cfgs, make_layers

from vaebench.core.errors import UserError
from vaebench.core.weights import WEIGHTS, fetch_command, fetch_weights, locate_weights, verified_weights

VGG_LAYER_INDEX: dict[str, int] = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
"""Index, in torchvision's `vgg16().features`, of the ReLU whose output each layer name denotes."""

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

PERCEPTUAL_PURPOSE = "The perceptual loss (loss.perceptual_weight > 0 with loss.vgg_weights = imagenet)"


def vgg16_weights_path() -> Path:
    """Where the ImageNet VGG16 weights are cached: <torch.hub.get_dir()>/checkpoints/vgg16-397923af.pth,
    where torch.hub.get_dir() is $TORCH_HOME/hub (default ~/.cache/torch/hub); torchvision's place too."""
    return WEIGHTS["vgg16"].cache_path()


def check_vgg_weights_available(download: bool = True) -> Path:
    """The path of the ImageNet VGG16 weights, checked against their pinned hash; downloaded first when
    absent and `download`. A UserError says how to get them when they are absent and cannot be downloaded
    (no internet on a cluster node, say), or when the file there is not the pinned one (never replaced
    here: a wrong file is for a person to look at)."""
    if download and locate_weights("vgg16") is None:
        try:
            fetch_weights("vgg16", progress=True)
        except UserError as error:
            raise UserError(
                f"{PERCEPTUAL_PURPOSE} needs the VGG16 ImageNet weights, and they are not in the torch hub "
                f"cache. {error} Or set loss.perceptual_weight to 0."
            ) from None
    return verified_weights("vgg16", purpose=PERCEPTUAL_PURPOSE)


def load_vgg16_state(path: Path, purpose: str = "") -> dict[str, Tensor]:
    """torchvision's VGG16 state dict (features.* and classifier.* keys, on the CPU) from `path`.

    The file is checked against the hash `WEIGHTS["vgg16"]` pins first (free after an earlier check in
    the same process, `sha256_file`), so nothing but the pinned weights is ever loaded; `purpose` names
    what needs them for the error message. A file that cannot be read as a state dict is a UserError.
    """
    path = verified_weights("vgg16", path, purpose)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a file of another format under a planted or edited pin
        state, why = None, f"{type(error).__name__}: {error}"
    else:
        why = f"it holds a {type(state).__name__}, not a state dict of tensors"
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(
            f"Could not read the VGG16 weights at {path} ({why}). Delete the file and run "
            f"`{fetch_command('vgg16')}`."
        )
    return state


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
        state = load_vgg16_state(path, PERCEPTUAL_PURPOSE)
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
