"""How the latent code is used: KL, per-dim KL, active units, mutual information, collapse."""

from __future__ import annotations

from vaebench.evaluation.estimators import kl_statistics
from vaebench.evaluation.metrics import EvalContext, Metric, register

COLLAPSE_THRESHOLD_NATS = 0.01  # a dim with mean KL below this is counted as collapsed


def _kl_stat(key: str):  # type: ignore[no-untyped-def]
    return lambda c: kl_statistics(c.kl_per_dim, COLLAPSE_THRESHOLD_NATS)[key]


def _active(ctx: EvalContext) -> int:
    return ctx.active[0]


register(Metric(
    "kl", "KL (nats)", ".2f", None, lambda c: c.mean("kl"), "KL(q(z|x) || p(z)) in nats per image",
    "nats", row="KL (nats/image)", order=3, report=True,
))  # fmt: skip
register(Metric(
    "kl_per_dim", "KL per dim (nats)", "", None, lambda c: c.kl_per_dim.tolist(),
    "mean KL of each latent dim (a list; sums to kl)", "nats", order=11,
))  # fmt: skip
register(Metric(
    "active_units", "active units", ".1f", None, _active,
    "dims with Var_x E_q[z|x] > eval.active_threshold (.1f: a mean over seeds may be fractional)",
    order=4, report=True,
))  # fmt: skip
register(Metric(
    "active_units_frac", "active fraction", ".3f", None, lambda c: c.active[0] / c.mu.shape[1],
    "active_units / latent_dim", order=13,
))  # fmt: skip
register(Metric(
    "collapsed_dims", "collapsed dims", "d", None, _kl_stat("collapsed_dims"),
    f"dims whose mean KL is below {COLLAPSE_THRESHOLD_NATS} nats", row="collapsed dims (KL < 0.01)", order=14,
))  # fmt: skip
register(Metric(
    "kl_top5_frac", "KL share of top-5 dims", ".3f", None, _kl_stat("kl_top5_frac"),
    "share of the KL carried by the 5 largest dims", order=15,
))  # fmt: skip
register(Metric(
    "mutual_info", "MI (nats)", ".3f", None, lambda c: c.mutual_information.nats,
    "minibatch estimate of I(x; z) in nats, bounded by log of its minibatch", "nats",
    row="mutual information (nats)", order=5, report=True,
))  # fmt: skip
register(Metric(
    "mutual_info_batch", "MI minibatch", "d", None, lambda c: c.mutual_information.batch_size,
    "minibatch size of the MI estimate", row="MI minibatch (max log N)", order=16,
))  # fmt: skip
register(Metric(
    "num_images", "images", "d", None, lambda c: c.num_images, "images evaluated", order=20,
))  # fmt: skip
register(Metric(
    "checkpoint_step", "checkpoint step", "d", None, None, "training step of the evaluated checkpoint",
    order=21,
))  # fmt: skip
