"""The run folder: layout, crash-safe writes, metrics.jsonl resume semantics, summary merges, env.json."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaebench.core.errors import UserError
from vaebench.runs.document import update_summary
from vaebench.runs.environment import environment_info
from vaebench.runs.io import atomic_write_json, atomic_write_text, atomic_writer, read_json
from vaebench.runs.metrics_log import MetricsLog, read_metrics
from vaebench.runs.paths import RunPaths, run_dir


def test_run_dir_layout_and_paths(tmp_path: Path) -> None:
    root = run_dir(tmp_path / "runs", "beta_sweep", "beta4", 2)
    assert root == tmp_path / "runs" / "beta_sweep" / "beta4" / "seed2"
    p = RunPaths(root).make_dirs()
    assert p.spec == root / "spec.yaml"
    assert p.metrics == root / "metrics.jsonl"
    assert p.summary == root / "summary.json"
    assert p.env == root / "env.json"
    assert p.last == root / "checkpoints" / "last.pt"
    assert p.best == root / "checkpoints" / "best.pt"
    assert p.wandb_id == root / "wandb_id"
    assert p.done == root / "DONE"
    assert p.checkpoints.is_dir() and p.figures.is_dir() and p.eval.is_dir()


@pytest.mark.parametrize("bad", ["", "..", "a/b", "a\\b"])
def test_run_dir_rejects_names_that_are_not_one_folder(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UserError, match="folder name"):
        run_dir(tmp_path, bad, "v", 0)


def test_atomic_write_replaces_content_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"  # parent folder created on demand
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [f.name for f in target.parent.iterdir()] == ["f.txt"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_failed_atomic_write_keeps_old_file_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(target) as f:
        f.write(b"half of the new")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [f.name for f in tmp_path.iterdir()] == ["f.bin"]


def test_json_writes_non_finite_floats_as_null_and_converts_numpy_and_torch(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    atomic_write_json(
        path,
        {
            "nan": float("nan"),
            "inf": math.inf,
            "ninf": -math.inf,
            "np_nan": np.float32("nan"),
            "np_int": np.int64(7),
            "t": torch.tensor(0.5),
            "nested": {"v": [1.0, float("inf")], "p": Path("a/b")},
        },
    )
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {
        "nan": None,
        "inf": None,
        "ninf": None,
        "np_nan": None,
        "np_int": 7,
        "t": 0.5,
        "nested": {"v": [1.0, None], "p": "a/b"},
    }


def test_json_refuses_unknown_types_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"nested\.obj"):
        atomic_write_json(tmp_path / "x.json", {"nested": {"obj": object()}})
    assert not (tmp_path / "x.json").exists()


def test_update_summary_merges_keys_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    update_summary(path, {"test/bpd_elbo": 4.5, "test/kl": 30.0})
    merged = update_summary(path, {"test/bpd_iw1000": 4.4, "test/kl": 31.0})
    assert merged == {"test/bpd_elbo": 4.5, "test/kl": 31.0, "test/bpd_iw1000": 4.4}
    assert read_json(path) == merged


def test_read_json_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        read_json(tmp_path / "summary.json")
    (tmp_path / "summary.json").write_text('{"a": ')
    with pytest.raises(UserError, match=r"summary\.json is not valid JSON"):
        read_json(tmp_path / "summary.json")


def test_metrics_log_appends_one_line_per_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path) as log:
        log.write({"step": 1, "train/loss": 2.5})
        log.write({"step": 2, "train/loss": float("nan")})
    lines = path.read_text().splitlines()
    assert lines == ['{"step": 1, "train/loss": 2.5}', '{"step": 2, "train/loss": null}']
    assert read_metrics(path) == [{"step": 1, "train/loss": 2.5}, {"step": 2, "train/loss": None}]


def test_metrics_log_refuses_repeated_or_missing_steps(tmp_path: Path) -> None:
    with MetricsLog(tmp_path / "m.jsonl") as log:
        log.write({"step": 5})
        with pytest.raises(ValueError, match="not after the last logged step 5"):
            log.write({"step": 5, "val/loss": 1.0})
        with pytest.raises(ValueError, match="int 'step'"):
            log.write({"train/loss": 1.0})


def test_read_metrics_drops_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a": 2.0}\n{"step": 3, "a": 3.')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_read_metrics_keeps_a_complete_last_row_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}')
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_read_metrics_reports_damage_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, oops\n{"step": 3}\n')
    with pytest.raises(UserError, match="line 2"):
        read_metrics(path)


def test_reopening_repairs_a_torn_line_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "a": 0.')
    with MetricsLog(path) as log:
        assert log.last_step == 1
        log.write({"step": 2, "a": 0.5})
    assert read_metrics(path) == [{"step": 1}, {"step": 2, "a": 0.5}]


def test_truncate_after_checkpoint_step_gives_no_duplicate_or_missing_steps(tmp_path: Path) -> None:
    """Log every 10 steps, checkpoint at 30, crash after logging 50 (mid-line at 60), resume."""
    path = tmp_path / "metrics.jsonl"
    with MetricsLog(path) as log:
        for step in range(10, 60, 10):
            log.write({"step": step, "train/loss": 100.0 / step})
    with open(path, "a") as f:
        f.write('{"step": 60, "train/lo')  # kill -9 mid-write
    log = MetricsLog(path)
    assert log.truncate_after(30) == 2  # steps 40 and 50 dropped (the torn 60 never counted)
    for step in range(40, 80, 10):  # the resumed run logs again from the checkpoint
        log.write({"step": step, "train/loss": 100.0 / step})
    log.close()
    steps = [r["step"] for r in read_metrics(path)]
    assert steps == [10, 20, 30, 40, 50, 60, 70]


def test_each_appended_row_is_on_disk_without_close(tmp_path: Path) -> None:
    """A second process reading mid-run sees every appended row (flush + fsync per row)."""
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    log.write({"step": 1, "x": 1.0})
    code = f"import json; print(len(open({str(path)!r}).read().splitlines()))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "1"
    log.close()


def test_environment_info_records_code_versions_and_command_line() -> None:
    info = environment_info("cpu")
    json.dumps(info, allow_nan=False)  # env.json-ready as it is
    assert info["packages"]["torch"] == torch.__version__
    assert info["packages"]["numpy"] == np.__version__
    assert info["device"] == "cpu"
    assert info["argv"] == sys.argv
    assert info["time_utc"].endswith("+00:00")
    repo = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # tests run from the source checkout
        assert info["git_commit"] == head.stdout.strip()
        assert isinstance(info["git_dirty"], bool)


def test_environment_info_without_git_does_not_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")  # no git executable to be found
    info = environment_info(torch.device("cpu"))
    assert info["git_commit"] is None and info["git_dirty"] is None
