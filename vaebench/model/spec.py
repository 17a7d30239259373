"""The `model` section: the reference ResNet-style conv VAE and its decoder head (`model.decoder`)."""

from __future__ import annotations

from pydantic import Field

from vaebench.core.sections import Float, Int, Positive, Section, tagged_union
from vaebench.model.decoders import DECODER_HEADS
from vaebench.model.decoders.isotropic import IsotropicDecoderSpec

DECODER_KINDS: tuple[str, list[type[Section]]] = ("isotropic", [h.spec for h in DECODER_HEADS.values()])
"""(default kind, the section of each registered decoder head): `model.decoder` without `kind` is
isotropic."""

DecoderSpec = tagged_union(*DECODER_KINDS)
"""`model.decoder`: the tagged union of the registered decoder heads' sections (`vaebench.model.decoders`)."""


class ModelSpec(Section):
    """The reference ResNet-style conv VAE; widths and depths shrink it for CPU runs."""

    stem_channels: Int = Field(64, ge=1, description="Channels of the initial conv at full resolution.")
    channels: list[Positive] = Field(
        [128, 256, 512], min_length=1, description="Channels of each level; each level halves the resolution."
    )
    blocks_per_level: Int = Field(1, ge=0, description="Residual bottleneck blocks per level.")
    latent_dim: Int = Field(256, ge=1, description="Size of the latent z.")
    se_ratio: Int = Field(4, ge=1, description="Squeeze-and-excitation channel reduction.")
    bottleneck_ratio: Int = Field(4, ge=1, description="Channel reduction inside residual bottlenecks.")
    layerscale_init: Float = Field(1e-6, description="Initial LayerScale gamma of residual branches.")
    max_groups: Int = Field(
        32, ge=1, description="GroupNorm groups (the largest divisor of the width up to this)."
    )
    decoder: DecoderSpec = Field(  # type: ignore[valid-type]
        default_factory=IsotropicDecoderSpec
    )
