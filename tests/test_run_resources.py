"""One owner per resource: the metrics log and the W&B tracker of a run are opened once and closed by the
one who opened them, on every path (finished, stopped, failed, interrupted, skipped); and the loop state
goes into checkpoints as the plain dict it always was."""

from __future__ import annotations

import gc
import math
import shutil
import signal
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import vaebench.launch.runner as runner
from tiny import nan_loss, on_training_calls, tiny_variant
from vaebench.launch.runner import run_one
from vaebench.runs.checkpoint import load_checkpoint, upgrade
from vaebench.runs.tracking import Tracker
from vaebench.train.loop import NumericalFault, train
from vaebench.train.state import LoopState

FIXTURE = Path(__file__).parent / "fixtures" / "run-v0.1" / "stopped"


def test_a_stopped_run_leaves_no_file_open(tmp_path: Path) -> None:
    """The metrics log was left to the garbage collector on the stop path ("unclosed file metrics.jsonl")."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = run_one(tiny_variant(), 0, tmp_path / "run", device="cpu", stop_after=4)
        gc.collect()  # a file kept alive only by a reference cycle is closed (and warned about) here
    assert result.status == "stopped"
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == []


# ----------------------------------------------------------------------------- the W&B tracker


class FakeWandbRun:
    """What a Tracker calls on a W&B run, recorded."""

    def __init__(self) -> None:
        self.logged: list[int] = []
        self.summary: dict[str, Any] = {}
        self.finished: list[int | None] = []

    def log(self, values: dict[str, Any], step: int) -> None:
        self.logged.append(step)

    def finish(self, exit_code: int | None = None) -> None:
        self.finished.append(exit_code)


@pytest.fixture
def wandb_runs(monkeypatch: pytest.MonkeyPatch) -> list[FakeWandbRun]:
    """Every W&B run a Tracker starts (`Tracker.open` with a tracking spec), fake ones, in order."""
    started: list[FakeWandbRun] = []

    def fake_open(self: Tracker) -> Tracker:
        if not self._opened and self._tracking is not None:
            self._opened = True
            self._run, self._wandb = FakeWandbRun(), SimpleNamespace(Image=str)
            started.append(self._run)
        return self

    monkeypatch.setattr(Tracker, "open", fake_open)
    return started


def _ctrl_c(terms: Any, model: Any) -> Any:
    signal.raise_signal(signal.SIGINT)  # held until the step is complete, then KeyboardInterrupt
    return terms


def _broken_figures(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("simulated failure of the run's end")


@pytest.mark.parametrize(
    ("path", "raises", "exit_code"),
    [
        ("finished", None, None),
        ("stopped", None, None),
        ("failed", NumericalFault, 1),
        ("interrupted", KeyboardInterrupt, None),  # rerunning resumes it: not a failed W&B run
        ("end failed", RuntimeError, 1),
    ],
)
def test_the_runner_finishes_the_wandb_run_once_on_every_path(
    path: str,
    raises: type[BaseException] | None,
    exit_code: int | None,
    wandb_runs: list[FakeWandbRun],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if path == "failed":
        on_training_calls(monkeypatch, {7}, nan_loss)
    elif path == "interrupted":
        on_training_calls(monkeypatch, {7}, _ctrl_c)
    elif path == "end failed":
        monkeypatch.setattr(runner, "standard_figures", _broken_figures)
    variant = tiny_variant(tracking__mode="offline")
    stop_after = 4 if path == "stopped" else None
    if raises is None:
        assert run_one(variant, 0, tmp_path / "run", device="cpu", stop_after=stop_after).status == path
    else:
        with pytest.raises(raises):
            run_one(variant, 0, tmp_path / "run", device="cpu")
    (wandb,) = wandb_runs  # started once, for training and the final evaluation together
    assert wandb.finished == [exit_code]
    assert wandb.logged[:2] == [2, 4]


def test_a_skipped_run_starts_no_wandb_run(wandb_runs: list[FakeWandbRun], tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert run_one(tiny_variant(tracking__mode="offline"), 0, run, device="cpu").status == "finished"
    assert len(wandb_runs) == 1
    assert run_one(tiny_variant(tracking__mode="offline"), 0, run, device="cpu").status == "skipped"
    assert len(wandb_runs) == 1


def test_train_called_without_a_tracker_uses_none(wandb_runs: list[FakeWandbRun], tmp_path: Path) -> None:
    spec = tiny_variant(tracking__mode="offline").spec
    assert train(spec, 0, tmp_path / "run", device="cpu").status == "trained"
    assert wandb_runs == [] and not (tmp_path / "run" / "wandb_id").exists()


def test_a_tracker_is_started_at_most_once_and_finished_at_most_once(wandb_runs: list[FakeWandbRun]) -> None:
    from vaebench.config.spec import TrackingSpec

    with Tracker(Path("unused"), TrackingSpec(mode="offline")) as tracker:
        tracker.open()
        tracker.open()
        tracker.finish()
    assert len(wandb_runs) == 1 and wandb_runs[0].finished == [None]


# ----------------------------------------------------------------------------- the loop state in checkpoints


def test_the_loop_state_reads_and_writes_a_checkpoints_loop_dict_unchanged() -> None:
    """Checkpoints of vaebench 0.1 and new ones: the same keys, in the same order, with the same values."""
    for name in ("last.pt", "best.pt"):
        loop = load_checkpoint(FIXTURE / "checkpoints" / name)["loop"]
        again = LoopState.from_dict(loop).to_dict()
        assert list(again.items()) == list(loop.items())
    fresh = LoopState.fresh(("loss", "recon", "kl")).to_dict()
    assert fresh == {
        "step": 0, "best_val": math.inf, "acc": {"n": 0, "loss": 0.0, "recon": 0.0, "kl": 0.0},
        "skipped_batches": 0, "val_loss": "objective",
    }  # fmt: skip


@pytest.mark.parametrize("free_bits", [2.0, 0.0])
def test_upgrade_restarts_the_best_val_of_a_checkpoint_from_before_objectives(free_bits: float) -> None:
    spec = tiny_variant(anneal__free_bits=free_bits).spec
    ckpt = {"loop": {"step": 8, "best_val": 12.5, "acc": {"n": 0}, "skipped_batches": 0, "best_step": 4}}
    said: list[str] = []
    loop = upgrade(ckpt, spec, said.append)["loop"]
    assert loop["val_loss"] == "objective"
    assert loop["best_val"] == (math.inf if free_bits else 12.5) and len(said) == (1 if free_bits else 0)
    today = {"loop": dict(loop, best_val=3.0)}
    assert upgrade(today, spec, said.append) == {"loop": dict(loop, best_val=3.0)}  # already today's format


def test_a_v0_1_run_folder_resumes_through_the_loop_state(tmp_path: Path) -> None:
    """The fixture's last.pt (step 8) resumes; the new last.pt's loop dict has the old keys, in order."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    before = load_checkpoint(run / "checkpoints" / "last.pt")["loop"]
    spec = tiny_variant().spec
    assert train(spec, 0, run, device="cpu", stop_after=10).status == "stopped"
    after = load_checkpoint(run / "checkpoints" / "last.pt")["loop"]
    assert list(after) == list(before) and after["step"] == 10
    assert isinstance(after["acc"]["n"], int) and isinstance(after["best_val"], float)
