"""Sweeps: the local controller (grid, random, bayes, hyperband), resuming it, failures, parallel runs,
SLURM through submitit's local executor, and the command line a W&B agent builds from sweeps/*.yaml.

The controller's logic runs on `sweep_fake_run.py`, a stand-in for `vaebench run` with known metrics;
the agent's command line and `vaebench run --parallel` run the real trainer on tiny runs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import vaebench.launch.local_sweep as sweep_module
from slurm_cluster import fake_srun
from tiny import QUICKSTART, TINY, set_args
from vaebench.cli import app
from vaebench.core.errors import UserError
from vaebench.launch.local_sweep import engine_available
from vaebench.launch.sweep_file import agent_command, load_sweep, localize, plain
from vaebench.runs.checkpoint import load_checkpoint
from vaebench.runs.tracking import Tracker

# The controller needs W&B's sweep engine, an optional extra (README, Sweeps); the rest does not.
engine = pytest.mark.skipif(
    not engine_available(),
    reason="W&B's sweep engine is not installed: the README's install command installs it",
)
ROOT = Path(__file__).resolve().parents[1]
FAKE = Path(__file__).resolve().parent / "sweep_fake_run.py"
# The tiny real run of test_train.py (16x16 images, one level, 12 steps), as --set options.
TINY_SETS = set_args({**TINY, "train.log_every": 4})
runner = CliRunner()


def cli(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})


def fake_sweep(tmp_path: Path, method: str, parameters: dict, **extra: Any) -> Path:
    """A sweep file whose command runs the fake run through ${interpreter} ${program} ${args}."""
    config = {
        "name": "fake",
        "method": method,
        "metric": {"name": "val/loss", "goal": "minimize"},
        "parameters": parameters,
        "program": str(FAKE),
        "command": ["${env}", "${interpreter}", "${program}", "${args}"],
        **extra,
    }
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def state(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "state" / "state.json").read_text())


def sweep(tmp_path: Path, path: Path, *args: str) -> Any:
    return cli("sweep", path, "--state-dir", tmp_path / "state", *args)


def summary(run: dict) -> dict:
    return json.loads((Path(run["run_dirs"][0]) / "summary.json").read_text())


# ----------------------------------------------------------------------------- the local controller


@engine
def test_grid_sweep_runs_each_point_once_and_a_rerun_starts_no_new_run(tmp_path: Path) -> None:
    path = fake_sweep(tmp_path, "grid", {"x": {"values": [1, 2, 3]}, "y": {"values": ["a", "b"]}})
    result = sweep(tmp_path, path)
    assert result.exit_code == 0, result.output
    runs = state(tmp_path)["runs"]
    points = sorted((r["params"]["x"], r["params"]["y"]) for r in runs)
    assert points == [(x, y) for x in (1, 2, 3) for y in ("a", "b")]
    assert [r["name"] for r in runs] == [f"fake-{i:03d}" for i in range(1, 7)]
    for r in runs:  # read back from each run's own folder: metric (x - 2)^2
        assert r["status"] == "finished" and r["metric"] == (r["params"]["x"] - 2) ** 2
        assert r["run_dirs"] == [str(tmp_path / "state" / "runs" / "fake" / f"base+{r['name']}" / "seed0")]
        assert summary(r)["params"] == {"x": r["params"]["x"], "y": r["params"]["y"]}
    assert "(best)" in result.output and "fake-003" in result.output  # x = 2 first comes third

    again = sweep(tmp_path, path)
    assert again.exit_code == 0 and "no new run: every grid point has run" in again.output
    assert len(state(tmp_path)["runs"]) == 6


@engine
def test_random_sweep_stops_at_count_in_all_and_draws_the_same_values_again(tmp_path: Path) -> None:
    path = fake_sweep(tmp_path, "random", {"x": {"distribution": "uniform", "min": 0.0, "max": 4.0}})
    assert sweep(tmp_path, path, "--count", "2").exit_code == 0
    assert sweep(tmp_path, path, "--count", "2").exit_code == 0  # nothing new
    assert len(state(tmp_path)["runs"]) == 2
    assert sweep(tmp_path, path, "--count", "3").exit_code == 0  # one more
    xs = [r["params"]["x"] for r in state(tmp_path)["runs"]]
    assert len(xs) == 3 and len(set(xs)) == 3 and all(type(x) is float and 0 <= x <= 4 for x in xs)

    other = cli("sweep", path, "--state-dir", tmp_path / "other", "--count", "3")
    assert other.exit_code == 0
    again = [r["params"]["x"] for r in json.loads((tmp_path / "other" / "state.json").read_text())["runs"]]
    assert again == xs  # draws are seeded by the sweep's name and the run's index


@engine
def test_random_and_bayes_sweeps_need_a_count(tmp_path: Path) -> None:
    path = fake_sweep(tmp_path, "bayes", {"x": {"min": 0.0, "max": 4.0}})
    result = sweep(tmp_path, path)
    assert result.exit_code == 1 and "give --count N" in result.output


@engine
def test_bayes_sweep_learns_from_the_metrics_read_back_from_run_folders(tmp_path: Path) -> None:
    path = fake_sweep(tmp_path, "bayes", {"x": {"distribution": "uniform", "min": 0.0, "max": 10.0}})
    result = sweep(tmp_path, path, "--count", "6")
    assert result.exit_code == 0, result.output
    runs = state(tmp_path)["runs"]
    assert [r["status"] for r in runs] == ["finished"] * 6
    for r in runs:
        assert type(r["params"]["x"]) is float  # numpy scalars made plain before they reach the state
        assert r["metric"] == pytest.approx((r["params"]["x"] - 2) ** 2)
    # The first proposal is a draw over [0, 10]; once metrics come back the GP moves towards x = 2.
    best = min(abs(r["params"]["x"] - 2) for r in runs[3:])
    assert best < abs(runs[0]["params"]["x"] - 2) and best < 1.5


@engine
def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    path = fake_sweep(tmp_path, "grid", {"x": {"values": [1, 99, 3]}})
    result = sweep(tmp_path, path)
    assert result.exit_code == 1  # like `vaebench run`: failures make the command fail, after the rest
    runs = state(tmp_path)["runs"]
    assert [(r["params"]["x"], r["status"]) for r in runs] == [
        (1, "finished"),
        (99, "failed"),
        (3, "finished"),
    ]
    failed = runs[1]
    assert failed["returncode"] == 3 and failed["metric"] is None
    assert failed["error"].startswith("error: x = 99.0 is out of range")
    assert Path(failed["log"]).read_text().startswith("error: x = 99.0")

    retried = sweep(tmp_path, path, "--retry-failed")  # same parameters, same name: still failing
    assert retried.exit_code == 1 and len(state(tmp_path)["runs"]) == 3


@engine
def test_a_sweep_whose_first_runs_all_fail_starts_no_more(tmp_path: Path) -> None:
    path = fake_sweep(tmp_path, "grid", {"x": {"values": [99, 100, 101, 102, 1]}})
    result = sweep(tmp_path, path)
    assert result.exit_code == 1 and "the first 3 runs failed" in result.output
    assert [r["status"] for r in state(tmp_path)["runs"]] == ["failed"] * 3


CTRL_C_ENABLED_VAEBENCH = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'vaebench'; runpy.run_module('vaebench', run_name='__main__')"
)


@engine
def test_interrupted_sweep_resumes_its_run_where_it_stopped_then_continues(tmp_path: Path) -> None:
    """Ctrl-C on the controller: the running run stops (SIGINT) and is marked interrupted; the rerun starts
    it again under the same name and parameters, it continues from its last row, and the sweep goes on."""
    path = fake_sweep(
        tmp_path, "grid", {"x": {"values": [1, 3]}, "rows": {"value": 30}, "pause": {"value": 0.05}}
    )
    # Python ignores SIGINT for good when it starts with SIGINT ignored, as it is for pytest started in the
    # background by a shell without job control (some CI runners): make Ctrl-C reach the controller.
    command = [
        sys.executable,
        "-c",
        CTRL_C_ENABLED_VAEBENCH,
        "sweep",
        str(path),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    controller = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = tmp_path / "state" / "runs" / "fake" / "base+fake-001" / "seed0" / "metrics.jsonl"
    deadline = time.monotonic() + 30
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert time.monotonic() < deadline and controller.poll() is None, "the first run never started"
        time.sleep(0.05)
    controller.send_signal(signal.SIGINT)
    out, _ = controller.communicate(timeout=60)
    assert controller.returncode == 130, out
    first = state(tmp_path)["runs"][0]
    assert first["status"] == "interrupted" and len(state(tmp_path)["runs"]) == 1
    stopped_at = len(metrics.read_text().splitlines())
    assert 3 <= stopped_at < 30

    result = sweep(tmp_path, path)
    assert result.exit_code == 0, result.output
    runs = state(tmp_path)["runs"]
    assert [(r["name"], r["params"]["x"], r["status"]) for r in runs] == [
        ("fake-001", 1, "finished"),
        ("fake-002", 3, "finished"),
    ]
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, 31))  # resumed: nothing repeated, nothing missing
    log = Path(runs[0]["log"]).read_text()
    assert "start fake-001 at step 0" in log and f"start fake-001 at step {stopped_at}" in log


@engine
def test_hyperband_stops_a_run_that_falls_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sweep_module, "HYPERBAND_EVERY_S", 0.0)
    path = fake_sweep(
        tmp_path,
        "grid",
        {"x": {"values": [2, 10]}, "rows": {"value": 40}, "pause": {"value": 0.05}},
        early_terminate={"type": "hyperband", "min_iter": 2, "eta": 3},
    )
    result = sweep(tmp_path, path)
    assert result.exit_code == 0, result.output
    good, bad = state(tmp_path)["runs"]
    assert good["status"] == "finished" and good["metric"] == 0.0
    # x = 10 logs val/loss = 64 + 1/step, worse than x = 2's value at hyperband's band (step 2)
    assert bad["status"] == "stopped" and "stopped early by hyperband" in result.output
    rows = (Path(bad["run_dirs"][0]) / "metrics.jsonl").read_text().splitlines()
    assert 2 <= len(rows) < 40


@engine
def test_two_cpu_workers_run_two_sweep_runs_at_once(tmp_path: Path) -> None:
    path = fake_sweep(
        tmp_path, "grid", {"x": {"values": [1, 3]}, "rows": {"value": 10}, "pause": {"value": 0.1}}
    )
    result = sweep(tmp_path, path, "--parallel", "2", "--devices", "cpu")
    assert result.exit_code == 0, result.output
    a, b = (summary(r) for r in state(tmp_path)["runs"])
    assert a["started"] < b["ended"] and b["started"] < a["ended"]  # they overlapped in time


@engine
def test_set_values_become_constant_parameters_and_a_changed_set_is_another_sweep(tmp_path: Path) -> None:
    path = fake_sweep(tmp_path, "grid", {"x": {"values": [1]}})
    assert sweep(tmp_path, path, "--set", "rows=2").exit_code == 0
    run = state(tmp_path)["runs"][0]
    assert run["params"] == {"x": 1, "rows": 2} and summary(run)["params"]["rows"] == 2

    changed = sweep(tmp_path, path, "--set", "rows=5")
    assert changed.exit_code == 1 and "parameters.rows" in changed.output and "--state-dir" in changed.output
    searched = sweep(tmp_path, path, "--set", "x=4")
    assert searched.exit_code == 1 and "would fix a parameter that" in searched.output


@engine
def test_slurm_executor_submits_each_run_as_a_submitit_job(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    path = fake_sweep(tmp_path, "grid", {"x": {"values": [1, 3]}})
    result = sweep(tmp_path, path, "--executor", "slurm", "--slurm-cluster", "local", "--parallel", "2")
    assert result.exit_code == 0, result.output
    assert [r["status"] for r in state(tmp_path)["runs"]] == ["finished", "finished"]
    submitted = sorted((tmp_path / "state" / "submitit").glob("*_submitted.pkl"))
    assert len(submitted) == 2  # one job each, through submitit's files


def test_slurm_jobs_get_the_flags_resources_over_the_specs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sbatch header submitit writes: --slurm-* flags override the variant's `slurm` section."""
    pytest.importorskip("submitit")
    from vaebench.config.spec import SlurmSpec
    from vaebench.launch.slurm_state import job_name
    from vaebench.launch.workers import Job, SubmititExecutor

    fake_srun(tmp_path, monkeypatch)  # submitit only checks that `srun` exists
    variant_spec = SlurmSpec(partition="short", time_min=120, gpus_per_job=1, account="lab")
    flags = {"time_min": 30, "gpus_per_job": 2}  # --slurm-time 30 --slurm-gpus-per-job 2
    job = Job("beta-001", ["true"], tmp_path / "log", slurm=variant_spec.model_copy(update=flags))
    executor = SubmititExecutor(tmp_path / "jobs", SlurmSpec()).configured(job)
    header = executor._executor._make_submission_file_text("true", "uid")
    for line in (
        "--partition=short",
        "--time=30",
        "--gpus-per-node=2",
        "--account=lab",
        f"--job-name={job_name('beta-001')}",  # short, distinct in squeue's 8 characters
    ):
        assert f"#SBATCH {line}\n" in header


def test_run_hands_its_slurm_flags_and_the_shared_worker_command_line_to_the_launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vaebench run --executor slurm`: the --slurm-* flags given become SlurmSpec overrides of every job,
    and every worker gets `vaebench run SPEC` with the options and overrides the runs share (the launcher
    adds each run's --variant and --seed); the controller's own options stay with the controller."""
    pytest.importorskip("submitit")
    import vaebench.launch.runner as runner_module

    seen: dict[str, Any] = {}

    def launched(
        plan: list, worker_args: list[str], *, executor: Any, slurm_overrides: dict, **_: Any
    ) -> list:
        seen.update(plan=plan, argv=worker_args, overrides=slurm_overrides, executor=executor)
        return []

    monkeypatch.setattr(runner_module, "run_parallel", launched)
    runs = tmp_path / "runs"
    result = cli(
        "run", QUICKSTART, "--executor", "slurm", "--slurm-partition", "debug", "--slurm-gpus-per-job", "0",
        "--slurm-cluster", "local", "--parallel", "3", "--runs-dir", runs, "--force", "--suffix", "b2",
        "--seed", "1", "--set", "train.steps=2", "loss.beta=2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen["overrides"] == {"partition": "debug", "gpus_per_job": 0}
    assert seen["executor"].cluster == "local" and seen["executor"].defaults.partition == "debug"
    assert seen["argv"] == [
        sys.executable, "-m", "vaebench", "run", str(QUICKSTART), "--runs-dir", str(runs), "--quiet",
        "--device", "auto", "--force", "--suffix", "b2", "--set", "train.steps=2", "loss.beta=2",
    ]  # fmt: skip
    assert [(p.variant.name, p.seed) for p in seen["plan"]] == [("isotropic+b2", 1), ("variance+b2", 1)]


@engine
def test_sweep_hands_its_slurm_flags_to_the_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`vaebench sweep` has the same --slurm-* options as `vaebench run` (one definition); they set the
    resources of the sweep's jobs."""
    import vaebench.launch.workers as workers_module

    seen: dict[str, Any] = {}

    def make_executor(kind: str, **given: Any) -> Any:
        seen.update(given, kind=kind)
        raise UserError("stopped by the test")

    monkeypatch.setattr(workers_module, "make_executor", make_executor)
    path = fake_sweep(tmp_path, "grid", {"x": {"values": [1]}})
    result = sweep(tmp_path, path, "--executor", "slurm", "--slurm-time", "30", "--slurm-account", "lab")
    assert result.exit_code == 1 and "stopped by the test" in result.output
    assert seen["kind"] == "slurm" and seen["cluster"] == "slurm"
    assert seen["slurm"].time_min == 30 and seen["slurm"].account == "lab" and seen["slurm"].partition is None


def test_slurm_without_a_cluster_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    result = cli("run", QUICKSTART, "--executor", "slurm", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1 and "--slurm-cluster local" in result.output


def test_missing_sweep_engine_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sweeps", None)  # `import sweeps` raises ImportError
    result = sweep(tmp_path, fake_sweep(tmp_path, "grid", {"x": {"values": [1]}}))
    assert result.exit_code == 1 and "pip install --no-deps sweeps==0.3.0" in result.output
    assert ".[sweeps]" in result.output and "Traceback" not in result.output


def test_the_sweeps_folder_of_this_repository_is_not_taken_for_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the repository root, without the engine installed, `import sweeps` finds the folder of
    sweep files as a namespace package: that must read as "not installed", not as an AttributeError."""
    folder = tmp_path / "sweeps"
    folder.mkdir()
    monkeypatch.delitem(sys.modules, "sweeps", raising=False)
    monkeypatch.setattr(sys, "path", [str(tmp_path)])  # only the folder, no site-packages
    assert not engine_available()
    assert "sweeps" not in sys.modules
    result = sweep(tmp_path, fake_sweep(tmp_path, "grid", {"x": {"values": [1]}}))
    assert result.exit_code == 1 and ".[sweeps]" in result.output and str(folder) in result.output


# ----------------------------------------------------------------------------- what a W&B agent runs


def wandb_agent_argv(config: dict, params: dict) -> list[str]:
    """What wandb_agent.py's Agent._command_run runs for a server's `run` command, with W&B's own code."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    command = {"args": {k: {"value": v} for k, v in params.items()}, "program": config.get("program")}
    sweep_vars = sweep_utils.create_sweep_command_args(command)
    sweep_vars |= {"interpreter": ["python"], "program": [command["program"]], "env": ["/usr/bin/env"]}
    argv: list[str] = []
    for c in sweep_utils.create_sweep_command(list(config["command"])):
        c = str(c)
        argv += (sweep_vars.get(c[2:-1]) or []) if c.startswith("${") and c.endswith("}") else [c]
    return argv


@pytest.mark.parametrize(
    "params",
    [
        {"loss.beta": 0.35},
        {"loss.beta": 1e-05, "eval.at_end": False, "model.channels": [8, 16], "train.epochs": None},
        {"model.decoder.kind": "variance", "seeds": [2], "train.batch_size": 16},
    ],
)
def test_local_command_lines_are_the_wandb_agents(params: dict) -> None:
    config = {"command": ["${env}", "${interpreter}", "${program}", "${args}", "${args_no_hyphens}", "x"]}
    config["program"] = "train.py"
    for macro in ("${args_no_boolean_flags}", "${args_json}", "${args_no_equals}", "${args_override_hydra}"):
        config["command"].append(macro)
    assert agent_command(config["command"], params, "train.py") == wandb_agent_argv(config, params)


def test_wandb_agent_command_line_from_beta_yaml_trains_that_beta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_sweep(ROOT / "sweeps" / "beta.yaml")
    assert config["method"] == "bayes" and config["metric"] == {"name": "val/bpd_elbo", "goal": "minimize"}
    assert config["parameters"]["loss.beta"] == {"distribution": "log_uniform_values", "min": 0.1, "max": 8.0}
    argv = wandb_agent_argv(config, {"loss.beta": 0.35})
    assert argv == ["/usr/bin/env", "vaebench", "run", "experiments/baseline.yaml", "--loss.beta=0.35"]

    # The agent starts it in the project folder, with the sweep's and the run's ids in the environment
    # and the run's parameters in a file (written here with W&B's own code), which `vaebench run` checks.
    from wandb.sdk.lib import config_util

    param_file = tmp_path / "wandb" / "sweep-swp1234" / "config-run5678.yaml"
    config_util.save_config_file_from_dict(str(param_file), {"loss.beta": {"value": 0.35}})
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_SWEEP_ID", "swp1234")
    monkeypatch.setenv("WANDB_RUN_ID", "run5678")
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(param_file))
    small = [*TINY_SETS, "--set", "data.kind=synthetic", "--set", "train.epochs=null"]  # baseline -> tiny
    result = cli(*argv[2:], *small, "--runs-dir", tmp_path / "runs", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "baseline" / "base+swp1234-run5678" / "seed0"
    recorded = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert recorded["spec"]["loss"]["beta"] == 0.35  # the flat --loss.beta reached the nested spec
    assert recorded["variant"] == "base+swp1234-run5678" and (run_dir / "DONE").exists()

    many = cli("run", QUICKSTART, *small, "--runs-dir", tmp_path / "runs", "--device", "cpu")
    assert many.exit_code == 1 and "gives 2 (variants x seeds)" in many.output


def test_under_a_wandb_agent_the_tracker_adopts_the_agents_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    from vaebench.config.spec import TrackingSpec

    seen: dict[str, Any] = {}

    class FakeRun:
        step = 0

        def finish(self, exit_code: int | None = None) -> None: ...

    def fake_init(**kwargs: Any) -> FakeRun:
        seen.update(kwargs)
        return FakeRun()

    monkeypatch.setattr(wandb, "init", fake_init)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "wandb_id").write_text("oldid123\n")
    monkeypatch.setenv("WANDB_RUN_ID", "agentrun")
    solo = Tracker.start(TrackingSpec(mode="offline"), tmp_path / "run", {}, group="g", name="n")
    assert solo.run_id == seen["id"] == "oldid123"  # WANDB_RUN_ID alone (no sweep) is not ours to take
    monkeypatch.setenv("WANDB_SWEEP_ID", "swp1234")
    agent = Tracker.start(TrackingSpec(mode="offline"), tmp_path / "run", {}, group="g", name="n")
    assert agent.run_id == seen["id"] == "agentrun"
    assert (tmp_path / "run" / "wandb_id").read_text().strip() == "agentrun"


def test_command_lines_run_this_interpreter_and_find_the_projects_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # started outside the project: experiments/ is not here
    argv = localize(["/usr/bin/env", "vaebench", "run", "experiments/baseline.yaml", "--loss.beta=2"], ROOT)
    assert argv == [
        "/usr/bin/env",
        sys.executable,
        "-m",
        "vaebench",
        "run",
        str(ROOT / "experiments" / "baseline.yaml"),
        "--loss.beta=2",
    ]
    assert localize(["python", "train.py"]) == [sys.executable, "train.py"]
    import numpy as np

    assert plain({"a": np.float64(0.5), "b": [np.int64(3)], "c": np.bool_(True)}) == {
        "a": 0.5,
        "b": [3],
        "c": True,
    }
    assert type(plain(np.float64(0.5))) is float


def test_ablation_sweep_is_the_16_variant_grid_with_3_seeds() -> None:
    config = load_sweep(ROOT / "sweeps" / "ablation.yaml")
    assert config["method"] == "grid"
    sizes = {k: len(v["values"]) for k, v in config["parameters"].items()}
    assert sizes == {
        "model.decoder.kind": 2,
        "loss.perceptual_weight": 2,
        "anneal.schedule": 2,
        "train.batch_size": 2,
        "seeds": 3,
    }


# ----------------------------------------------------------------------------- vaebench run --parallel


def test_run_parallel_with_two_cpu_workers_matches_the_in_process_run_and_reports_failures(
    tmp_path: Path,
) -> None:
    reference = cli(
        "run",
        QUICKSTART,
        *TINY_SETS,
        "--variant",
        "isotropic",
        "--runs-dir",
        tmp_path / "ref",
        "--device",
        "cpu",
        "--quiet",
    )
    assert reference.exit_code == 0, reference.output
    broken = tmp_path / "par" / "quickstart" / "variance" / "seed0" / "checkpoints"
    broken.mkdir(parents=True)
    (broken / "last.pt").write_bytes(b"not a checkpoint")  # this run fails when it loads it

    result = cli(
        "run", QUICKSTART, *TINY_SETS, "--runs-dir", tmp_path / "par", "--parallel", "2", "--devices", "cpu"
    )
    assert result.exit_code == 1, result.output
    iso = tmp_path / "par" / "quickstart" / "isotropic" / "seed0"
    assert (iso / "DONE").exists() and (tmp_path / "par" / "quickstart" / "isotropic" / "seed0.log").exists()
    got = load_checkpoint(iso / "checkpoints" / "last.pt")["model"]
    want = load_checkpoint(
        tmp_path / "ref" / "quickstart" / "isotropic" / "seed0" / "checkpoints" / "last.pt"
    )["model"]
    assert all(bool((got[k] == want[k]).all()) for k in want)  # the subprocess trained the same run
    assert "failed" in result.output and "variance/seed0.log" in result.output

    again = cli(
        "run",
        QUICKSTART,
        *TINY_SETS,
        "--variant",
        "isotropic",
        "--runs-dir",
        tmp_path / "par",
        "--parallel",
        "2",
    )
    assert again.exit_code == 0 and "skipped" in again.output


# ----------------------------------------------------------------------------- runs train what sweeps record


def tiny_experiment(tmp_path: Path, **overrides: Any) -> Path:
    """An experiment file whose one run is the tiny quickstart run (evaluated at its end), as a sweep's
    command would name it: `vaebench run <this file> ${args}` trains in a few seconds."""
    from tiny import tiny_variant

    extra = {"eval__at_end": True, "eval__iw_samples": 2, "eval__mi_batch_size": 8, **overrides}
    spec = tiny_variant(**extra).spec.model_dump(mode="json")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "base": spec}))
    return path


def vaebench_sweep(tmp_path: Path, method: str, parameters: dict, command: list, **extra: Any) -> Path:
    """A sweep file whose command runs this vaebench (`localize`) on the tiny experiment."""
    config = {"name": "real", "method": method, "metric": {"name": "val/bpd_elbo", "goal": "minimize"}}
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump({**config, "parameters": parameters, "command": command, **extra}))
    return path


def refused(result: Any, *phrases: str) -> None:
    """An expected mistake: exit status 1, one `error:` paragraph holding `phrases`, no traceback."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output and result.output.startswith("error: "), result.output
    for phrase in phrases:
        assert phrase in result.output, result.output


@engine
@pytest.mark.parametrize(
    ("tail", "why"),
    [
        ([], "has no ${args} after `vaebench run`"),  # the command: both runs trained beta 1
        (["${args_json}"], "${args_json} writes them in a form `vaebench run` does not read"),
        (["${args}", "--loss.beta=1"], "sets the swept parameter loss.beta itself ('--loss.beta=1')"),
        (["${args}", "--set", "loss.beta=1"], "sets the swept parameter loss.beta itself"),
    ],
)
def test_a_sweep_whose_command_cannot_pass_its_parameters_is_refused_before_any_run(
    tmp_path: Path, tail: list, why: str
) -> None:
    experiment = tiny_experiment(tmp_path)
    command = ["${env}", "vaebench", "run", str(experiment), *tail]
    path = vaebench_sweep(tmp_path, "grid", {"loss.beta": {"values": [1, 2]}}, command)
    result = sweep(tmp_path, path, "--runs-dir", tmp_path / "runs")
    refused(result, str(path), "`command`", why, "${args}")
    assert not (tmp_path / "state").exists() and not (tmp_path / "runs").exists()  # nothing ran


@engine
def test_a_command_without_any_parameter_macro_is_refused_whatever_it_runs(tmp_path: Path) -> None:
    path = fake_sweep(tmp_path, "grid", {"x": {"values": [1, 3]}})
    config = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**config, "command": ["${env}", "${interpreter}", "${program}"]}))
    refused(sweep(tmp_path, path), "has no macro that passes the run's parameters (x)", "Add ${args}")
    assert not (tmp_path / "state").exists()


WRAPPER = """import subprocess, sys
# A command the sweep cannot see into: it drops the parameters it is given (sys.argv[1:]).
sys.exit(subprocess.call([sys.executable, "-m", "vaebench", "run", {experiment!r}, "--device", "cpu"]))
"""


@engine
def test_vaebench_run_in_a_local_sweep_refuses_to_train_other_values_than_the_sweep_records(
    tmp_path: Path,
) -> None:
    """The safety net behind the command check: a wrapper script passes ${args} to nobody. The run whose
    recorded beta is the experiment's own trains; the other stops before writing anything."""
    experiment = tiny_experiment(tmp_path)  # loss.beta 1.0
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(WRAPPER.format(experiment=str(experiment)))
    command = ["${env}", "${interpreter}", "${program}", "${args}"]
    path = vaebench_sweep(tmp_path, "grid", {"loss.beta": {"values": [1, 2]}}, command, program=str(wrapper))
    result = sweep(tmp_path, path)
    assert result.exit_code == 1, result.output
    first, second = state(tmp_path)["runs"]
    assert (first["params"], first["status"]) == ({"loss.beta": 1}, "finished")
    trained = yaml.safe_load((Path(first["run_dirs"][0]) / "spec.yaml").read_text())
    assert trained["spec"]["loss"]["beta"] == 1.0
    assert (second["params"], second["status"]) == ({"loss.beta": 2}, "failed")
    assert "loss.beta = 2 recorded, 1.0 resolved" in second["error"]
    assert second["run_dirs"] == [] and not list((tmp_path / "state" / "runs").glob("*/*+real-002"))


@pytest.mark.parametrize(
    ("recorded", "args", "wrong"),
    [
        ({"loss.beta": 2}, [], "loss.beta = 2 recorded, 1.0 resolved"),
        ({"loss.beta": 2, "seeds": [1]}, ["--loss.beta=2", "--seeds=[1]", "--seed", "0"], "seeds = [1]"),
    ],
)
def test_vaebench_run_under_a_wandb_agent_refuses_to_train_other_values_than_the_sweep_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: dict, args: list, wrong: str
) -> None:
    """The agent writes the run's parameters to WANDB_SWEEP_PARAM_PATH (with W&B's own code here), which
    wandb.init puts in the W&B run's config: a run that would train others stops before writing anything."""
    from wandb.sdk.lib import config_util

    param_file = tmp_path / "wandb" / "sweep-swp1234" / "config-run5678.yaml"
    config_util.save_config_file_from_dict(str(param_file), {k: {"value": v} for k, v in recorded.items()})
    monkeypatch.setenv("WANDB_SWEEP_ID", "swp1234")
    monkeypatch.setenv("WANDB_RUN_ID", "run5678")
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(param_file))
    result = cli("run", tiny_experiment(tmp_path), *args, "--runs-dir", tmp_path / "runs", "--device", "cpu")
    refused(result, "This is run swp1234-run5678 of a sweep", str(param_file), wrong, "${args}")
    assert not list((tmp_path / "runs").glob("*/*/seed*"))  # nothing trained, no run folder


def test_vaebench_run_in_a_sweep_without_the_recorded_parameters_says_it_cannot_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_SWEEP_ID", "swp1234")
    monkeypatch.setenv("WANDB_RUN_ID", "run5678")
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(tmp_path / "gone.yaml"))
    result = cli("run", tiny_experiment(tmp_path), "--runs-dir", tmp_path / "runs", "--device", "cpu")
    refused(result, "cannot be read from", "gone.yaml")
    assert not list((tmp_path / "runs").glob("*/*/seed*"))


# ----------------------------------------------------------------------------- the sweep's metric


def test_summary_metrics_are_the_keys_a_finished_run_writes(tmp_path: Path) -> None:
    """What the metric check offers is what summary.json holds: for an objective with terms of its own,
    a perceptual term and the final evaluation (every numeric key but the run's names and steps)."""
    from vaebench.launch.sweep_check import summary_metrics

    experiment = tiny_experiment(
        tmp_path, loss__kind="beta_tcvae", loss__perceptual_weight=0.5, loss__vgg_weights="random"
    )
    result = cli("run", experiment, "--runs-dir", tmp_path / "runs", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "runs" / "tiny" / "base" / "seed0" / "summary.json").read_text())
    numbers = {k for k, v in written.items() if isinstance(v, (int, float)) and "/" in k}
    from vaebench.config.experiments import load_experiment

    keys = summary_metrics(load_experiment(experiment)[0].spec)
    assert set(keys) == numbers and len(keys) == len(set(keys))
    assert {"train/tc", "val/mi", "val/perceptual", "test/bpd_iw", "best/val_loss"} <= numbers


def test_a_sweep_can_optimise_a_quality_score_exactly_when_eval_metrics_computes_it() -> None:
    from vaebench.config.spec import RunSpec
    from vaebench.launch.sweep_check import summary_metrics

    keys = summary_metrics(RunSpec.model_validate({"eval": {"split": "val", "metrics": ["fid", "kid"]}}))
    assert {"val/fid", "val/kid_mean", "val/kid_std"} <= set(keys)
    assert "val/recall" not in keys  # precision_recall was not asked for
    assert "val/quality_protocol" not in keys  # an id, not a number to optimise
    assert "val/fid" not in summary_metrics(RunSpec.model_validate({"eval": {"split": "val"}}))


@engine
def test_a_sweep_metric_its_runs_never_log_is_refused_with_the_names_they_do(tmp_path: Path) -> None:
    command = ["${env}", "vaebench", "run", str(tiny_experiment(tmp_path)), "${args}"]
    search = {"loss.beta": {"distribution": "log_uniform_values", "min": 0.5, "max": 2.0}}
    path = vaebench_sweep(tmp_path, "bayes", search, command, metric={"name": "test/fid", "goal": "minimize"})
    result = sweep(tmp_path, path, "--count", "1")
    refused(result, str(path), "`metric.name` is 'test/fid'", "never logs", "val/bpd_elbo, ", "test/bpd_iw")
    assert not (tmp_path / "state").exists()
    # loss.beta is no key of IWAE's section: every run would fail, so the sweep does not start
    refused(sweep(tmp_path, path, "--check", "--set", "loss.kind=iwae"), "would fail before training")

    # A term of one objective is a metric of runs of that objective only, --set constants included.
    search = {"optim.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}}
    path = vaebench_sweep(tmp_path, "bayes", search, command, metric={"name": "val/iw_bound"})
    refused(sweep(tmp_path, path, "--check"), "'val/iw_bound', which `vaebench run` never logs")
    assert cli("sweep", path, "--check", "--set", "loss.kind=iwae").exit_code == 0
    kinds = {"loss.kind": {"values": ["elbo", "iwae"]}}
    grid = vaebench_sweep(tmp_path, "grid", kinds, command, metric={"name": "val/iw_bound"})
    refused(sweep(tmp_path, grid, "--check"), "runs with the parameters {'loss.kind': 'elbo'} do not log")


@engine
def test_selecting_on_a_test_metric_is_refused_for_bayes_and_warned_for_random(tmp_path: Path) -> None:
    command = ["${env}", "vaebench", "run", str(tiny_experiment(tmp_path)), "${args}"]
    search = {"loss.beta": {"distribution": "log_uniform_values", "min": 0.5, "max": 2.0}}
    metric = {"name": "test/bpd_elbo", "goal": "minimize"}
    bayes = vaebench_sweep(tmp_path, "bayes", search, command, metric=metric)
    refused(sweep(tmp_path, bayes, "--count", "1"), "selects on the test split", "name: val/bpd_elbo")
    assert not (tmp_path / "state").exists()

    random_search = vaebench_sweep(tmp_path, "random", search, command, metric=metric)
    warned = cli("sweep", random_search, "--check")
    assert warned.exit_code == 0 and "warning:" in warned.output, warned.output
    assert "selects on the test split" in warned.output and "Rank by val/bpd_elbo" in warned.output


@pytest.mark.parametrize("name", ["ablation", "beta", "objectives"])
@engine
def test_the_shipped_sweep_files_pass_the_checks(name: str) -> None:
    result = cli("sweep", ROOT / "sweeps" / f"{name}.yaml", "--check")
    assert result.exit_code == 0 and "ok:" in result.output and "warning" not in result.output, result.output


# ----------------------------------------------------------------------------- grid


@engine
def test_a_grid_over_a_range_is_refused_naming_the_parameter(tmp_path: Path) -> None:
    """The engine would end the sweep in a traceback ("categorical parameters is disallowed in grid
    search"); int ranges it lists itself, and they still run."""
    path = fake_sweep(tmp_path, "grid", {"x": {"min": 0.5, "max": 3.0}, "y": {"values": [1]}})
    refused(sweep(tmp_path, path), str(path), "parameter 'x'", "give it `values`")
    assert not (tmp_path / "state").exists()

    ints = fake_sweep(tmp_path, "grid", {"x": {"min": 1, "max": 3}})
    checked = cli("sweep", ints, "--check")  # the fake run is no `vaebench run`: what it logs is unknown
    assert checked.exit_code == 0 and "val/loss is not checked" in checked.output, checked.output
    assert sweep(tmp_path, ints).exit_code == 0
    assert sorted(r["params"]["x"] for r in state(tmp_path)["runs"]) == [1, 2, 3]
