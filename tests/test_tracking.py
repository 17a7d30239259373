"""W&B tracking: offline runs stay in the run folder, ids survive resumes, failures never stop training."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from vaebench.config.spec import TrackingSpec
from vaebench.core.errors import UserError
from vaebench.runs import tracking
from vaebench.runs.tracking import Tracker, TrackingWarning, has_wandb_credentials, resolve_mode

CONFIG = {"model": {"latent_dim": 8, "decoder": {"kind": "isotropic", "sigma": 0.1}}, "loss": {"beta": 4.0}}


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fake HOME and W&B folders under tmp_path, no credentials, no WANDB_MODE; a fresh W&B service."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_env" / var.lower()))
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    _wandb_teardown()  # W&B's service and settings are per process: start them under this environment
    yield tmp_path
    _wandb_teardown()


def _wandb_teardown() -> None:
    teardown = getattr(sys.modules.get("wandb"), "teardown", None)  # None: a test hid the package
    if teardown is not None:
        teardown()


def _start(run_dir: Path, mode: str = "offline", **kwargs) -> tuple[Tracker, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = Tracker.start(
            TrackingSpec(mode=mode, tags=["spec-tag"]),
            run_dir,
            CONFIG,
            group="beta_sweep",
            name="beta4/seed0",
            tags=["beta4"],
            **kwargs,
        )
    return tracker, [w for w in caught if issubclass(w.category, TrackingWarning)]


def _offline_runs(root: Path, run_id: str) -> list[Path]:
    return sorted(p for p in root.rglob(f"offline-run-*-{run_id}*") if p.is_dir())


# ----------------------------------------------------------------------------- mode resolution (no W&B)


@pytest.mark.parametrize(
    ("env", "spec_mode", "expected"),
    [
        ({}, "offline", "offline"),
        ({"WANDB_MODE": "offline"}, "online", "offline"),
        ({"WANDB_MODE": "disabled"}, "offline", "disabled"),
        ({"WANDB_MODE": "dryrun"}, "online", "offline"),
        ({"WANDB_MODE": "online"}, "disabled", "online"),
        ({"WANDB_MODE": ""}, "disabled", "disabled"),
        ({}, "auto", "offline"),
        ({"WANDB_API_KEY": "x" * 40}, "auto", "online"),
    ],
)
def test_wandb_mode_env_wins_over_the_spec(env: dict, spec_mode: str, expected: str, tmp_path: Path) -> None:
    env = {"NETRC": str(tmp_path / "none"), **env}
    assert resolve_mode(spec_mode, env) == expected


def test_invalid_wandb_mode_is_a_user_error() -> None:
    with pytest.raises(UserError, match="WANDB_MODE environment variable is 'onlin'"):
        resolve_mode("auto", {"WANDB_MODE": "onlin"})


def test_auto_is_online_only_with_a_netrc_entry_for_the_wandb_host(tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    env = {"NETRC": str(netrc)}
    netrc.write_text("machine github.com login me password abc\n")
    assert not has_wandb_credentials(env) and resolve_mode("auto", env) == "offline"
    netrc.write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    assert has_wandb_credentials(env) and resolve_mode("auto", env) == "online"
    assert not has_wandb_credentials({**env, "WANDB_BASE_URL": "https://wandb.mycorp.com"})


# ----------------------------------------------------------------------------- real offline runs


def test_offline_run_stays_in_the_run_folder_and_keeps_nested_config(isolated: Path) -> None:
    run_dir = isolated / "runs" / "beta_sweep" / "beta4" / "seed0"
    png = isolated / "samples.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(png)

    tracker, warned = _start(run_dir)
    assert warned == [] and tracker.mode_used == "offline"
    assert tracker._run.config["model"]["decoder"]["sigma"] == 0.1  # nested, not flattened
    assert set(tracker._run.tags) == {"spec-tag", "beta4"}
    tracker.log({"train/loss": 3.0, "train/kl": float("nan")}, step=10)
    tracker.log_images({"samples": png}, step=10)
    tracker.summary_update({"test/bpd_elbo": 4.5})
    tracker.finish()

    assert (run_dir / "wandb_id").read_text().strip() == tracker.run_id
    runs = _offline_runs(run_dir / "wandb", tracker.run_id)
    assert len(runs) == 1 and (runs[0] / f"run-{tracker.run_id}.wandb").stat().st_size > 0
    assert _offline_runs(isolated / "wandb_env", tracker.run_id) == []  # WANDB_DIR not used
    assert [p for p in (isolated / "home").rglob("*")] == []  # nothing in ~/.config, ~/.cache, ~/.netrc


def test_run_id_is_stored_and_reused_when_the_run_resumes(isolated: Path) -> None:
    run_dir = isolated / "run"
    first, _ = _start(run_dir)
    first.log({"train/loss": 1.0}, step=1)
    first.finish()
    second, warned = _start(run_dir)  # e.g. `vaebench run` again after a crash
    second.finish()
    assert warned == [] and second.run_id == first.run_id
    assert len(_offline_runs(run_dir / "wandb", first.run_id)) == 2

    third, _ = _start(run_dir, resume_id="abc123xy")
    third.finish()
    assert third.run_id == "abc123xy" and (run_dir / "wandb_id").read_text().strip() == "abc123xy"


def test_disabled_mode_does_nothing(isolated: Path) -> None:
    run_dir = isolated / "run"
    tracker, warned = _start(run_dir, mode="disabled")
    tracker.log({"train/loss": 1.0}, step=1)
    tracker.summary_update({"a": 1.0})
    tracker.finish()
    assert warned == [] and tracker.mode_used == "disabled" and tracker.run_id is None
    assert not run_dir.exists()


def test_wandb_mode_env_disables_a_spec_that_asks_for_offline(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracker, _ = _start(isolated / "run", mode="offline")
    assert tracker.mode_used == "disabled" and not (isolated / "run").exists()


# ----------------------------------------------------------------------------- failures never stop training


def test_init_failures_degrade_to_local_only_with_one_warning(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    calls: list[str] = []

    def broken_init(**kwargs):
        calls.append(kwargs["mode"])
        raise ConnectionError("no route to host")

    monkeypatch.setattr(wandb, "init", broken_init)
    monkeypatch.setattr(tracking, "probe_server", lambda *args, **kwargs: None)  # the server answers
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    run_dir = isolated / "run"
    tracker, warned = _start(run_dir, mode="auto")

    assert calls == ["online", "offline"] and tracker.mode_used == "local-only" and tracker.run_id is None
    assert len(warned) == 1 and "online wandb.init failed" in str(warned[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any further warning would fail here
        tracker.log({"train/loss": 1.0}, step=1)
        tracker.log_images({"x": isolated / "missing.png"}, step=1)
        tracker.summary_update({"a": 1.0})
        tracker.finish()
    assert (run_dir / "wandb_id").is_file()  # a later resume still gets the same id


def test_online_init_failure_falls_back_to_offline_with_the_same_id(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real failed online init: a key, but the server refuses connections (like a network outage)."""
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setattr(tracking, "ONLINE_INIT_TIMEOUT_S", 2.0)
    tracker, warned = _start(isolated / "run", mode="online")
    tracker.log({"train/loss": 1.0}, step=1)
    tracker.finish()
    assert tracker.mode_used == "offline" and len(warned) == 1
    message = str(warned[0].message)
    # the start-up probe finds the server refusing connections, so W&B's online init is not even tried
    assert "not reachable" in message and "Connection refused" in message and "logging offline" in message
    assert (isolated / "run" / "wandb_id").read_text().strip() == tracker.run_id
    assert len(_offline_runs(isolated / "run" / "wandb", tracker.run_id)) == 1
    assert [p for p in (isolated / "home").rglob("*")] == []  # the key was not saved to ~/.netrc


def test_missing_wandb_package_means_local_only(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    tracker, warned = _start(isolated / "run")
    tracker.log({"train/loss": 1.0}, step=1)
    assert tracker.mode_used == "local-only" and tracker.run_id is None
    assert len(warned) == 1 and "cannot be imported" in str(warned[0].message)


def test_exception_inside_wandb_log_degrades_with_one_warning(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker, _ = _start(isolated / "run")
    run = tracker._run

    def crashed_service(*args, **kwargs):
        raise BrokenPipeError("wandb-core exited")

    monkeypatch.setattr(run, "log", crashed_service)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            tracker.log({"train/loss": 1.0}, step=step)
        tracker.summary_update({"a": 1.0})
        tracker.finish()
    warned = [w for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(warned) == 1 and "W&B log failed in offline mode" in str(warned[0].message)
    assert tracker.mode_used == "local-only"
    run.finish()  # the test, not the tracker, releases the abandoned run


def test_resumed_online_run_skips_steps_wandb_already_has(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash after logging step 50, resume from the step-30 checkpoint: W&B keeps its rows up to 50."""
    import wandb

    class ResumedRun:  # what wandb.init(resume="allow") returns for a run whose last row is step 50
        step = 51
        disabled = False

        def __init__(self) -> None:
            self.logged: list[int] = []

        def log(self, row: dict, step: int) -> None:
            self.logged.append(step)

    run = ResumedRun()
    monkeypatch.setattr(wandb, "init", lambda **kwargs: run)
    tracker, warned = _start(isolated / "run", mode="offline")
    for step in range(40, 80, 10):
        tracker.log({"train/loss": 1.0}, step=step)
    assert warned == [] and run.logged == [60, 70]  # 40 and 50 would be refused by W&B with a warning each
