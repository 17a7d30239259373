"""Decoder heads as a registry: one module per observation model p(x|z), picked by `model.decoder.kind`.

A head is an `nn.Module` built from its spec section. It turns the decoder's last conv output
(3 + `extra_channels` channels at full resolution) into (mean, log_scale), and it owns the
log-likelihood of 8-bit images under those parameters (`log_prob`), which training, validation and
evaluation all call through `VAE.log_prob`. Gaussian heads share `gaussian_log_prob`; a head with
another observation model (a logistic mixture, a Bernoulli) defines its own `log_prob` and may use
log_scale for whatever parameters it needs beside the mean.

Every module here is imported with the package, so a new head is one new file calling `register`.
Import rule for entries: `vaebench.core.sections`, `vaebench.model.likelihoods`, this package and torch, not
`vaebench.config.spec` (which is assembled from the entries).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from vaebench.core.sections import Section, import_entries, register_entry
from vaebench.model.likelihoods import image_log_prob


def gaussian_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor, likelihood: str) -> Tensor:
    """log N(x; mean, exp(log_scale)^2) of 8-bit images, nats per image (B,): discretized (exact) or
    continuous (density times bin width), see `vaebench.model.likelihoods`."""
    return image_log_prob(x, mean, log_scale, likelihood)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DecoderHead:
    kind: str  # the `model.decoder.kind` that selects it
    spec: type[Section]  # its section, with `kind: Literal["<kind>"]`
    build: Callable[[Section], nn.Module]  # spec -> head module (with .extra_channels and .log_prob)
    summary: str = ""


DECODER_HEADS: dict[str, DecoderHead] = {}


def register(head: DecoderHead) -> DecoderHead:
    """Add a decoder head to the registry (called by its module at import time)."""
    return register_entry(DECODER_HEADS, head.kind, head, "model.decoder.kind", head.spec)


def build_head(spec: Section) -> nn.Module:
    return DECODER_HEADS[spec.kind].build(spec)  # type: ignore[attr-defined]


import_entries(__name__, __path__)
