"""Convolutional building blocks shared by the encoder and the decoder.

All blocks keep the number of spatial positions explicit in their names (Downsample halves H and W,
Upsample doubles them, everything else keeps them) and use GroupNorm rather than BatchNorm, so that a
block's output never depends on the other images in the batch: VAE batches are small (16-64) and the
importance-weighted evaluation pushes K copies of one image through the encoder-decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def group_count(channels: int, max_groups: int) -> int:
    """The largest divisor of `channels` that is at most `max_groups` (GroupNorm needs an exact divisor).

    >>> group_count(64, 32), group_count(48, 32), group_count(8, 32), group_count(7, 4)
    (32, 24, 8, 1)
    """
    for groups in range(min(channels, max_groups), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


class ConvNormAct(nn.Sequential):
    """Conv (no bias: the norm's shift makes it redundant) -> GroupNorm -> SiLU; 'same' padding."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, max_groups: int = 32
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
            ),
            nn.GroupNorm(group_count(out_channels, max_groups), out_channels),
            nn.SiLU(),
        )


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al. 2018): x * sigmoid(W2 silu(W1 mean_hw(x))), W1 reducing by `ratio`."""

    def __init__(self, channels: int, ratio: int = 4) -> None:
        super().__init__()
        hidden = max(1, channels // ratio)
        self.reduce = nn.Linear(channels, hidden)
        self.expand = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3))  # (B, C)
        s = torch.sigmoid(self.expand(F.silu(self.reduce(s))))  # (B, C) gates in (0, 1)
        return x * s[:, :, None, None]  # (B, C, H, W)


class ResidualBottleneck(nn.Module):
    """x + gamma * SE(expand(conv3x3(reduce(x)))), with a learned per-channel LayerScale gamma.

    gamma starts tiny (spec.layerscale_init, 1e-6 by default), so every block starts as (almost) the
    identity and a deep stack trains as stably as a shallow one (Touvron et al. 2021, CaiT).
    The expand conv is followed by a GroupNorm but no activation: the residual branch may add
    negative values.
    """

    def __init__(
        self,
        channels: int,
        bottleneck_ratio: int = 4,
        se_ratio: int = 4,
        layerscale_init: float = 1e-6,
        max_groups: int = 32,
    ) -> None:
        super().__init__()
        hidden = max(1, channels // bottleneck_ratio)
        self.reduce = ConvNormAct(channels, hidden, kernel_size=1, max_groups=max_groups)
        self.conv = ConvNormAct(hidden, hidden, kernel_size=3, max_groups=max_groups)
        self.expand = nn.Sequential(
            nn.Conv2d(hidden, channels, 1, bias=False),
            nn.GroupNorm(group_count(channels, max_groups), channels),
        )
        self.se = SqueezeExcite(channels, se_ratio)
        self.gamma = nn.Parameter(torch.full((channels, 1, 1), float(layerscale_init)))

    def forward(self, x: Tensor) -> Tensor:
        branch = self.se(self.expand(self.conv(self.reduce(x))))  # (B, C, H, W)
        return x + self.gamma * branch


class Downsample(nn.Module):
    """Halve H and W: a learned strided 3x3 ConvNormAct plus a linear shortcut avg-pool(1x1 conv), summed.

    The shortcut is computed as 1x1-conv(avg-pool(x)), which equals avg-pool(1x1-conv(x)) (both are
    linear and act on different axes) at a quarter of the cost.
    """

    def __init__(self, in_channels: int, out_channels: int, max_groups: int = 32) -> None:
        super().__init__()
        self.main = ConvNormAct(in_channels, out_channels, kernel_size=3, stride=2, max_groups=max_groups)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C_in, H, W) -> (B, C_out, H/2, W/2)
        return self.main(x) + self.shortcut(F.avg_pool2d(x, 2))


class Upsample(nn.Module):
    """Double H and W: bilinear x2 (no checkerboard artefacts), then a 3x3 ConvNormAct plus a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, max_groups: int = 32) -> None:
        super().__init__()
        self.main = ConvNormAct(in_channels, out_channels, kernel_size=3, max_groups=max_groups)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C_in, H, W) -> (B, C_out, 2H, 2W)
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.main(x) + self.shortcut(x)
