"""Faults in a run's own state: corrupt checkpoints, full disks, damaged files, and advice that works.

Each fault is made for real on a tiny CPU run (tests/tiny.py) and each piece of advice an error gives is
followed here, checking that it works and loses nothing: the resumed run must end bit-identical to one
that never met the fault.
"""

from __future__ import annotations

import errno
import json
import shutil
import socket
import struct
import threading
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from test_train import LOGGED, Recorder, assert_same_final_state, assert_same_metrics, run_cli, steps
from tiny import QUICKSTART, TINY, set_args, tiny_variant
from vaebench.cli import app
from vaebench.core.errors import UserError
from vaebench.evaluation.evaluate import SummaryWarning, evaluate_run
from vaebench.launch.runner import run_one
from vaebench.runs import checkpoint as checkpoint_module
from vaebench.runs.checkpoint import CheckpointWarning, CorruptCheckpoint, load_checkpoint, save_checkpoint
from vaebench.runs.io import read_json
from vaebench.runs.tracking import probe_server

runner = CliRunner()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run trained to the end without any fault."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert run_one(tiny_variant(), 0, run, device="cpu").status == "finished"
    return run


def stopped_at_8(tmp_path: Path) -> Path:
    """A run stopped at step 8: last.pt and best.pt hold step 8, checkpoints/previous/ the one of step 4."""
    run = tmp_path / "run"
    assert run_one(tiny_variant(), 0, run, device="cpu", stop_after=8).status == "stopped"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["loop"]["step"] == 8
    return run


def flip_a_bit_in_tensor_data(path: Path) -> None:
    """Flip one bit inside the largest tensor's bytes of a torch.save zip file (not in any header)."""
    with zipfile.ZipFile(path) as archive:
        entry = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[entry.header_offset + 26 : entry.header_offset + 30])
    start = entry.header_offset + 30 + name_len + extra_len
    data[start + entry.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_last_pt_is_caught_and_the_run_resumes_from_the_previous_checkpoint(
    reference: Path, tmp_path: Path
) -> None:
    run = stopped_at_8(tmp_path)
    last = run / "checkpoints" / "last.pt"
    flip_a_bit_in_tensor_data(last)
    with pytest.raises(CorruptCheckpoint, match="corrupt"):
        load_checkpoint(last)
    recorder = Recorder()
    with pytest.warns(CheckpointWarning, match="SHA-256"):
        result = run_one(tiny_variant(), 0, run, device="cpu", reporter=recorder)
    assert result.status == "finished"
    # the newest intact one: best.pt of step 8 here (validated at 8), else previous/step4.pt
    assert any("Resuming from" in m and "(step 8)" in m for m in recorder.messages)
    assert list((run / "checkpoints").glob("last.pt.corrupt*"))  # the damaged file is kept, not deleted
    assert steps(run) == LOGGED  # rows 6 and 8 were trained again, once
    assert_same_final_state(run, reference)
    assert_same_metrics(run, reference)


def test_with_best_pt_damaged_too_the_kept_previous_checkpoint_is_used(
    reference: Path, tmp_path: Path
) -> None:
    """train.keep_checkpoints (2) keeps the last.pt before the newest in checkpoints/previous/."""
    run = stopped_at_8(tmp_path)
    assert [p.name for p in (run / "checkpoints" / "previous").iterdir()] == ["step4.pt"]
    flip_a_bit_in_tensor_data(run / "checkpoints" / "last.pt")
    (run / "checkpoints" / "best.pt").write_bytes(b"garbage")
    recorder = Recorder()
    with pytest.warns(CheckpointWarning):
        assert run_one(tiny_variant(), 0, run, device="cpu", reporter=recorder).status == "finished"
    assert any("Resuming from" in m and "(step 4)" in m for m in recorder.messages)
    assert steps(run) == LOGGED
    assert_same_final_state(run, reference)
    assert_same_metrics(run, reference)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x80\x02]q\x00.", b"PK\x03\x04" + bytes(200), bytes(range(256)) * 8, b"not a checkpoint\n"],
    ids=["empty", "pickle-stub", "zip-header", "binary", "text"],
)
def test_garbage_is_a_corrupt_checkpoint_error_not_an_unpickler_traceback(
    garbage: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(garbage)
    with pytest.raises(CorruptCheckpoint) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "Rerunning `vaebench run`" in str(error.value)


def test_a_deleted_last_pt_resumes_from_the_previous_checkpoint_and_says_so(
    reference: Path, tmp_path: Path
) -> None:
    run = stopped_at_8(tmp_path)
    (run / "checkpoints" / "last.pt").unlink()
    recorder = Recorder()
    with pytest.warns(CheckpointWarning, match="missing"):
        assert run_one(tiny_variant(), 0, run, device="cpu", reporter=recorder).status == "finished"
    assert any("Resuming from" in m and "(step 8)" in m for m in recorder.messages)  # not silently from 0
    assert_same_final_state(run, reference)
    assert_same_metrics(run, reference)


def test_no_intact_checkpoint_gives_advice_that_works(tmp_path: Path) -> None:
    """Every checkpoint is garbage: the error says to rerun with --force, and doing so trains again,
    keeping the old folder."""
    runs = tmp_path / "runs"
    args = [QUICKSTART, *set_args(TINY), "--variant", "isotropic", "--runs-dir", runs]
    assert run_cli(*args, "--set", "train.steps=8").exit_code == 0
    run = runs / "quickstart" / "isotropic" / "seed0"
    (run / "DONE").unlink()
    for ckpt in (run / "checkpoints").rglob("*.pt"):
        ckpt.write_bytes(b"garbage")
    result = run_cli(*args, "--set", "train.steps=8")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no intact checkpoint" in result.output and "--force" in result.output
    result = run_cli(*args, "--set", "train.steps=8", "--force")
    assert result.exit_code == 0, result.output
    assert (run / "DONE").exists() and load_checkpoint(run / "checkpoints" / "last.pt")["loop"]["step"] == 8
    assert list(run.parent.glob("seed0.replaced-*"))  # the old folder, kept


def test_a_damaged_metrics_line_is_rebuilt_from_the_checkpoints_record(
    reference: Path, tmp_path: Path
) -> None:
    run = stopped_at_8(tmp_path)
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]  # the row of step 4, cut in half
    metrics.write_text("\n".join(lines) + "\n")
    with pytest.warns(CheckpointWarning):
        assert run_one(tiny_variant(), 0, run, device="cpu").status == "finished"
    assert steps(run) == LOGGED  # step 4's row is back, no step is missing
    assert_same_metrics(run, reference)


def test_a_removed_middle_row_of_an_unfinished_run_is_rebuilt_from_the_checkpoints_record(
    reference: Path, tmp_path: Path
) -> None:
    """Not torn (a crash tears only the last line): the row of step 4 deleted from the middle comes back."""
    run = stopped_at_8(tmp_path)
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4, 6, 8]
    metrics.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    recorder = Recorder()
    with pytest.warns(CheckpointWarning, match=r"lacked the rows of step\(s\) 4\b"):
        assert run_one(tiny_variant(), 0, run, device="cpu", reporter=recorder).status == "finished"
    assert any("lacked the rows of step(s) 4" in m for m in recorder.messages)
    assert steps(run) == LOGGED
    assert_same_metrics(run, reference)
    assert (run / "metrics.jsonl.incomplete").read_text() == "\n".join(lines[:1] + lines[2:]) + "\n"


def test_a_finished_runs_deleted_metrics_jsonl_is_rebuilt_by_a_rerun(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "metrics.jsonl").unlink()
    recorder = Recorder()
    with pytest.warns(CheckpointWarning, match="was missing"):
        assert run_one(tiny_variant(), 0, run, device="cpu", reporter=recorder).status == "skipped"
    assert any("metrics.jsonl was missing: rebuilt rows up to step 12" in m for m in recorder.messages)
    assert_same_metrics(run, reference)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing more to say the next time
        assert run_one(tiny_variant(), 0, run, device="cpu").status == "skipped"


def test_a_finished_run_with_a_truncated_last_pt_says_so_and_force_brings_the_final_model_back(
    reference: Path, tmp_path: Path
) -> None:
    """A rerun skips a finished run; it must say that last.pt is damaged and suggest --force, and never
    put best.pt (the best validation's model, in general from an earlier step) in last.pt's place."""
    runs = tmp_path / "runs"
    run = runs / "quickstart" / "isotropic" / "seed0"
    shutil.copytree(reference, run)
    last = run / "checkpoints" / "last.pt"
    truncated = last.read_bytes()[: last.stat().st_size // 2]
    last.write_bytes(truncated)
    recorder = Recorder()
    with pytest.warns(CheckpointWarning, match="--force"):
        assert run_one(tiny_variant(), 0, run, device="cpu", reporter=recorder).status == "skipped"
    (message,) = [m for m in recorder.messages if "last.pt" in m]
    assert str(last) in message and "cannot be read" in message and "finished" in message
    assert "best.pt is not put in last.pt's place" in message and "--force" in message
    assert last.read_bytes() == truncated  # left as it is: not replaced by best.pt, not moved
    assert steps(run) == LOGGED  # the metrics are intact: nothing rebuilt

    # --devices skips finished runs in the controller: the same words, on the run's line
    args = [QUICKSTART, *set_args(TINY), "--variant", "isotropic", "--runs-dir", runs, "--device", "cpu"]
    with pytest.warns(CheckpointWarning):
        result = run_cli(*args, "--devices", "cpu")
    assert result.exit_code == 0 and "best.pt is not put in last.pt's place" in result.output
    assert last.read_bytes() == truncated

    # the advice works: --force trains the run again and keeps the damaged folder
    result = run_cli(*args, "--force")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(last)["loop"]["step"] == 12
    assert_same_final_state(run, reference)
    (kept,) = run.parent.glob("seed0.replaced-*")
    assert (kept / "checkpoints" / "last.pt").read_bytes() == truncated


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1728 vs 1620"),
    ],
    ids=["ENOSPC", "torch-unexpected-pos"],
)
def test_a_full_disk_is_one_clear_error_and_leaves_no_temp_file(
    failure: Exception, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    path.parent.mkdir()
    save_checkpoint(path, {"model": {"w": torch.ones(4)}})
    before = path.read_bytes()

    def full_disk(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"partial")
        raise failure

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))  # full
    with pytest.raises(UserError) as error:
        save_checkpoint(path, {"model": {"w": torch.ones(1000)}})
    message = str(error.value)
    assert str(path.parent) in message and "disk is full" in message
    assert "Traceback" not in message
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp file left
    assert path.read_bytes() == before  # the previous checkpoint is intact


def test_a_full_disk_mid_run_stops_the_run_with_the_error_and_the_rerun_resumes(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = stopped_at_8(tmp_path)
    real_save = torch.save
    monkeypatch.setattr(
        checkpoint_module.torch, "save", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
    )
    with pytest.raises(UserError, match="disk"):
        run_one(tiny_variant(), 0, run, device="cpu")
    assert not [p for p in run.rglob("*.tmp")]
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)  # space freed
    assert run_one(tiny_variant(), 0, run, device="cpu").status == "finished"
    assert_same_final_state(run, reference)


def test_stale_temp_files_of_killed_writes_are_removed_at_the_next_start(tmp_path: Path) -> None:
    run = stopped_at_8(tmp_path)
    stale = [run / "checkpoints" / ".last.pt.x1y2.tmp", run / ".summary.json.abcd.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    assert run_one(tiny_variant(), 0, run, device="cpu").status == "finished"
    assert not any(path.exists() for path in stale)


def test_a_garbage_summary_json_is_rebuilt_before_evaluating(reference: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "summary.json").write_text("{not json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = evaluate_run(run, device="cpu")
    assert any(issubclass(w.category, SummaryWarning) for w in caught)
    summary = read_json(run / "summary.json")
    assert summary["step"] == 12 and summary["test/bpd_elbo"] == metrics["test/bpd_elbo"]
    assert (run / "summary.json.damaged").read_text() == "{not json"


def test_a_lost_spec_yaml_comes_back_by_following_the_reports_advice(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = [QUICKSTART, *set_args(TINY), "--variant", "isotropic", "--runs-dir", runs]
    assert run_cli(*args).exit_code == 0
    run = runs / "quickstart" / "isotropic" / "seed0"
    spec_text = (run / "spec.yaml").read_text()
    (run / "spec.yaml").unlink()
    report = runner.invoke(app, ["report", str(runs), "--no-figures", "--out", str(tmp_path / "r1")])
    assert "Traceback" not in report.output
    assert "Rerun" in (tmp_path / "r1" / "report.md").read_text()
    rerun = run_cli(*args)  # the advice: rerun `vaebench run`
    assert rerun.exit_code == 0 and "skipped" in rerun.output  # not retrained
    assert (run / "spec.yaml").read_text() == spec_text
    report = runner.invoke(app, ["report", str(runs), "--no-figures", "--out", str(tmp_path / "r2")])
    assert report.exit_code == 0 and "isotropic" in report.output


def test_report_with_no_finished_run_writes_its_report_and_says_so(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    unfinished = runs / "quickstart" / "isotropic" / "seed0"
    assert run_one(tiny_variant(), 0, unfinished, device="cpu", stop_after=4).status == "stopped"
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(runs), "--no-figures", "--out", str(out)])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "no finished run" in result.output
    assert (out / "report.html").is_file() and "seed0" in (out / "report.md").read_text()

    broken = tmp_path / "broken" / "quickstart" / "isotropic" / "seed0"
    broken.mkdir(parents=True)
    (broken / "spec.yaml").write_text(": not yaml [")
    result = runner.invoke(
        app, ["report", str(tmp_path / "broken"), "--no-figures", "--out", str(tmp_path / "r2")]
    )
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "no finished run" in result.output and "1 broken" in result.output
    assert "quickstart/isotropic/seed0" in (tmp_path / "r2" / "report.md").read_text()

    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["report", str(empty), "--no-figures", "--out", str(tmp_path / "r3")])
    assert result.exit_code == 1 and "Traceback" not in result.output and str(empty) in result.output


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_a_server_that_never_answers_costs_at_most_the_probe_timeout(silent_server: str) -> None:
    started = time.monotonic()
    why = probe_server(silent_server, timeout=1.0)
    elapsed = time.monotonic() - started
    assert why is not None and elapsed < 2.0
    assert probe_server("http://127.0.0.1:9", timeout=1.0) is not None  # refused: at once


def test_an_online_run_against_a_silent_server_logs_offline_within_seconds(
    silent_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vaebench.config.spec import TrackingSpec
    from vaebench.runs.tracking import Tracker, TrackingWarning

    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", silent_server)
    timings = {}
    for mode in ("offline", "online"):
        started = time.monotonic()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tracker = Tracker.start(TrackingSpec(mode=mode), tmp_path / mode, {}, group="g", name="n")
            tracker.finish()
        timings[mode] = time.monotonic() - started
        assert tracker.mode_used == "offline"
    messages = [str(w.message) for w in caught if issubclass(w.category, TrackingWarning)]
    assert any("not reachable" in m for m in messages)
    assert timings["online"] - timings["offline"] < 6.0, timings  # the 3 s probe, not W&B's 30 s
