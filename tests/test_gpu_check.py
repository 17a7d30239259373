"""benchmarks/gpu_check.py, the GPU check's stage runner: limits, what it writes, and the rerun command.

The stages themselves are rehearsed by `gpu_check.sh --dry-run` in CI (.ci/gpu_check_dry_run.sh); here
stand-in stages check the runner's own behaviour in a second.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """benchmarks/gpu_check.py as a module (registered, as dataclasses need, until the test ends)."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def gpu_check(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load(monkeypatch)
    py = sys.executable
    write = "import json, sys; json.dump({'rows': [1]}, open(sys.argv[1], 'w'))"
    # a stage that starts a grandchild and then hangs: the limit must end both (its process group)
    sleep = "import time; time.sleep(60)"
    hang = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {sleep!r}]); {sleep}"
    fail = "raise SystemExit(3)"
    stages = [
        module.Stage("env", 20, 20, "passes", [py, "-c", write, "{json}"], [py, "-c", write, "{json}"]),
        module.Stage("train", 20, 20, "fails", [py, "-c", fail], [py, "-c", fail]),
        module.Stage("eval", 1, 1, "hangs", [py, "-c", hang], [py, "-c", hang]),
    ]  # fmt: skip
    monkeypatch.setattr(module, "STAGES", stages)
    monkeypatch.setattr(module, "BY_NAME", {s.name: s for s in stages})
    return module


def test_each_stage_gets_its_status_and_the_rerun_names_only_the_failed_ones(
    gpu_check: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gpu_check.main([str(tmp_path)]) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    stages = summary["stages"]
    assert [stages[s]["status"] for s in ("env", "train", "eval")] == ["ok", "failed", "timeout"]
    assert stages["env"]["result"] == {"rows": [1]}
    assert stages["train"]["exit_code"] == 3
    assert stages["eval"]["seconds"] < 10  # ended at its 1 s limit, grandchild included
    assert sorted(p.name for p in tmp_path.iterdir()) == ["check.log", "summary.json"]  # no stage files left
    out = capsys.readouterr().out
    assert f"bash benchmarks/gpu_check.sh {tmp_path} --only train eval --limit eval=2" in out


def test_a_rerun_of_some_stages_keeps_the_other_stages_results(gpu_check: ModuleType, tmp_path: Path) -> None:
    gpu_check.main([str(tmp_path)])
    gpu_check.main([str(tmp_path), "--only", "env", "--limit", "env=30"])
    stages = json.loads((tmp_path / "summary.json").read_text())["stages"]
    assert stages["env"]["limit_s"] == 30
    assert stages["train"]["status"] == "failed" and stages["eval"]["status"] == "timeout"


def test_the_first_full_pass_on_a_gpu_fits_in_about_five_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    module = load(monkeypatch)
    assert module.TOTAL_LIMIT_S <= 340  # of the README's 420 s call: the rest installs wheels, with a margin
    assert [s.name for s in module.STAGES] == [
        "env",
        "tests",
        "objectives",
        "train",
        "eval",
        "packing",
        "features",
        "data",
    ]
