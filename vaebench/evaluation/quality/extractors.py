"""The feature extractors of the quality metrics, none re-implemented here.

- Inception-v3 pool features (2048-d) for FID, KID and reconstruction FID: torch-fidelity's
  `FeatureExtractorInceptionV3` ("inception-v3-compat"), which takes uint8 images and resizes them to
  299 px with its TensorFlow-1-compatible bilinear kernel, as the original FID code did.
- VGG16 fc2 features (4096-d, after the ReLU, torch-fidelity's default for precision/recall) for
  improved precision and recall: torch-fidelity's `FeatureExtractorVGG16` (uint8, same resize, to
  224 px), over torchvision's ImageNet VGG16, the file the perceptual loss loads.
- LPIPS (Zhang et al. 2018): the `lpips` package's LPIPS(net="vgg") with its shipped linear heads
  (v0.1), its backbone loaded from the same verified VGG16 file.

Weights come from `vaebench.core.weights` (hash-checked) or, under eval.quality.weights = random, from
`random_weights_file`: seeded random weights for tests, which make every score "not comparable".
"""

from __future__ import annotations

import hashlib
import inspect
import tempfile
import warnings
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from vaebench.core.errors import UserError
from vaebench.core.weights import WEIGHTS, sha256_file, verified_weights
from vaebench.runs.io import atomic_writer

Extractor = Literal["inception", "vgg16"]
FEATURES: dict[str, str] = {"inception": "2048", "vgg16": "fc2_relu"}
"""The torch-fidelity feature each extractor gives: Inception's pool3, VGG16's fc2 after its ReLU."""
RANDOM_SEED = 0
"""The seed of eval.quality.weights = random: the same random network on every machine and run."""


def _require(package: str) -> Any:
    """Import torch_fidelity or lpips, or say which extra installs them."""
    try:
        return __import__(package)
    except ImportError:
        raise UserError(
            f"eval.metrics needs the `{package}` package, which the `quality` extra installs: "
            "pip install -e '.[quality]' (or pip install torch-fidelity lpips); or remove the metrics "
            "from eval.metrics."
        ) from None


def package_versions() -> dict[str, str]:
    """The versions of the packages whose code computes the features (part of the protocol)."""
    return {name: metadata.version(name) for name in ("torch-fidelity", "lpips")}


# ----------------------------------------------------------------------------- weights files


def _random_state(name: str) -> dict[str, Tensor]:
    """The default initialisation of the extractor's architecture under RANDOM_SEED, as a state dict."""
    with torch.random.fork_rng():
        torch.manual_seed(RANDOM_SEED)
        if name == "vgg16":
            import torchvision

            return torchvision.models.vgg16().state_dict()
        inception = _require("torch_fidelity").FeatureExtractorInceptionV3

        class Unloaded(inception):  # type: ignore[misc,valid-type]
            def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
                return None  # torch-fidelity's constructor always loads a file: keep the initialisation

        with tempfile.TemporaryDirectory() as folder:
            empty = Path(folder) / "none.pth"
            torch.save(None, empty)  # what the constructor loads and Unloaded ignores
            network = Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
        for layer in network.modules():  # He init keeps activations O(1) through its 90+ layers: PyTorch's
            if isinstance(layer, nn.Conv2d):  # default init shrinks them to ~1e-8, features all alike
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        return network.state_dict()


def random_weights_file(name: str, folder: Path) -> Path:
    """A file of seeded random weights for extractor `name` in `folder` (written once, then reused)."""
    path = Path(folder) / f"random-{name}-seed{RANDOM_SEED}.pth"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(path) as f:
            torch.save(_random_state(name), f)
    return path


def weights_file(name: str, mode: str, spec_path: str | None, folder: Path) -> Path:
    """The weights file of extractor `name`: verified pretrained weights, or the random test weights."""
    if mode == "random":
        return random_weights_file(name, folder)
    return verified_weights(name, None if spec_path is None else Path(spec_path), "eval.metrics")


def weights_record(name: str, mode: str, path: Path) -> dict[str, str]:
    """What the protocol records of a weights file: its name, mode and full SHA-256."""
    label = WEIGHTS[name].filename if mode == "pretrained" else f"random (seed {RANDOM_SEED}, not comparable)"
    return {"file": label, "sha256": sha256_file(path)}


# ----------------------------------------------------------------------------- the networks


def build_extractor(name: Extractor, path: Path, device: torch.device) -> nn.Module:
    """torch-fidelity's extractor `name` with the weights at `path`, in eval mode on `device`."""
    fidelity = _require("torch_fidelity")
    cls = fidelity.FeatureExtractorInceptionV3 if name == "inception" else fidelity.FeatureExtractorVGG16
    registered = "inception-v3-compat" if name == "inception" else "vgg16"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation notes inside torch-fidelity
        module = cls(registered, [FEATURES[name]], feature_extractor_weights_path=str(path))
    return module.to(device).eval()


@torch.no_grad()
def extract(
    module: nn.Module,
    batches: Iterable[Tensor],
    device: torch.device,
    on_batch: Callable[[int], None] | None = None,
) -> Tensor:
    """Features (N, d) float32 on the CPU of uint8 image batches (B, 3, H, W), in order; `on_batch(i)`
    after batch i (progress)."""
    out = []
    for i, xb in enumerate(batches):
        out.append(module(xb.to(device))[0].float().cpu())
        if on_batch is not None:
            on_batch(i + 1)
    return torch.cat(out) if out else torch.empty(0)


class LPIPS(nn.Module):
    """LPIPS distance, VGG variant: lpips.LPIPS(net="vgg") with its v0.1 linear heads, backbone from `path`.

    forward(x, y): uint8 (B, 3, H, W) images -> (B,) distances (lpips's units: a weighted sum of
    squared differences of unit-normalised VGG activations; 0 for identical images).
    """

    def __init__(self, vgg_path: Path) -> None:
        super().__init__()
        lpips = _require("lpips")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's `pretrained` deprecation
            self.net = lpips.LPIPS(net="vgg", version="0.1", pnet_rand=True, verbose=False)
        self._load_backbone(torch.load(vgg_path, map_location="cpu", weights_only=True))
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def _load_backbone(self, state: dict[str, Tensor]) -> None:
        backbone = self.net.net  # slices 1-5 hold torchvision's vgg16().features[i] under their index i
        for slice_ in (backbone.slice1, backbone.slice2, backbone.slice3, backbone.slice4, backbone.slice5):
            for index, layer in slice_.named_children():
                if isinstance(layer, nn.Conv2d):
                    layer.weight.copy_(state[f"features.{index}.weight"])
                    layer.bias.copy_(state[f"features.{index}.bias"])

    @staticmethod
    def heads_sha256() -> str:
        """SHA-256 of the linear heads file the lpips package ships (recorded in the protocol)."""
        lpips = _require("lpips")
        heads = Path(inspect.getfile(lpips.LPIPS)).parent / "weights" / "v0.1" / "vgg.pth"
        return hashlib.sha256(heads.read_bytes()).hexdigest()

    @torch.no_grad()
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        a, b = x.float() / 255.0, y.float() / 255.0
        return self.net(a, b, normalize=True).flatten()  # normalize: [0, 1] -> lpips's [-1, 1]
