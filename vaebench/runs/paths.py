"""The run folder's layout: where every result of a run lives (`RunPaths`), and where a run's folder goes.

Layout of one run (``runs/<experiment>/<variant>/seed<k>/``, see `RunPaths`)::

    spec.yaml            resolved spec
    metrics.jsonl        one JSON object per logged step (`MetricsLog`)
    summary.json         final metrics, one flat object with W&B-style keys ("test/bpd_elbo")
    env.json             git commit, package versions, device, command line (`environment_info`)
    wandb_id             the W&B run id, reused when the run resumes
    DONE                 written last: the run finished (a folder without it is resumable)
    checkpoints/         last.pt, best.pt
    figures/             *.png, temperature.json (how much the temperature grid's samples vary)
    eval/                evaluation outputs
    wandb/               W&B's own files (offline runs, logs)
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from vaebench.core.errors import UserError

# ----------------------------------------------------------------------------- layout


class RunPaths(NamedTuple):
    """Paths of one run folder; nothing is created until `make_dirs` is called."""

    root: Path

    @property
    def spec(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def env(self) -> Path:
        return self.root / "env.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def wandb_id(self) -> Path:
        return self.root / "wandb_id"

    @property
    def wandb_dir(self) -> Path:
        """W&B's own folder (created by wandb.init(dir=root))."""
        return self.root / "wandb"

    @property
    def done(self) -> Path:
        """Marker written last: its presence means the run completed (training and final evaluation)."""
        return self.root / "DONE"

    def make_dirs(self) -> RunPaths:
        """Create the run folder and its checkpoints/, figures/ and eval/ subfolders."""
        for d in (self.root, self.checkpoints, self.figures, self.eval):
            d.mkdir(parents=True, exist_ok=True)
        return self


def run_dir(runs_dir: Path, experiment: str, variant: str, seed: int) -> Path:
    """The folder of one run: ``runs_dir / experiment / variant / f"seed{seed}"``.

    Names become single folder names, so they may not be empty, ``.``/``..``, or contain a path separator.
    """
    for what, name in (("experiment", experiment), ("variant", variant)):
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
            raise UserError(
                f"{what} name {name!r} cannot be used as a folder name under {runs_dir}: "
                "use a non-empty name without '/' or '\\' (e.g. 'beta_sweep', 'beta4')."
            )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return Path(runs_dir) / experiment / variant / f"seed{seed}"
