"""Bad input never gets a traceback and is never silently accepted.

A table of malformed experiment files, overrides and command-line options, each run through the CLI
(CliRunner; a few as real subprocesses). For every case: a non-zero exit, no traceback, a message that
names the offending file or dotted path, and, for `vaebench run`, nothing written under --runs-dir.
The control case (the valid base file) must pass, so that a case cannot fail for an unrelated reason.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from vaebench.cli import app

runner = CliRunner()

# A valid experiment at the quickstart's shape, small enough that a mistake is the only reason to fail.
BASE: dict[str, Any] = {
    "name": "fuzz",
    "base": {
        "data": {"kind": "synthetic", "train_size": 64, "val_size": 16, "test_size": 16, "image_size": 16},
        "model": {
            "stem_channels": 4,
            "channels": [8],
            "latent_dim": 4,
            "decoder": {"kind": "isotropic", "sigma": 0.1},
        },
        "train": {"steps": 2, "batch_size": 8},
        "eval": {"at_end": False},
        "tracking": {"mode": "disabled"},
        "seeds": [0],
    },
    "variants": [{"name": "a", "set": {}}, {"name": "b", "set": {"loss.beta": 2}}],
}


def merged(tree: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """BASE with `changes` (dotted keys into the file, e.g. "base.optim.lr") set; None deletes the key."""
    out = copy.deepcopy(tree)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return out


@dataclass
class Case:
    id: str
    expect: list[str]  # substrings the message must hold: the file or the dotted path, the value
    file: dict[str, Any] | bytes | str | None = None  # the experiment file: a tree, raw bytes or text
    args: list[str] = field(default_factory=list)  # after `spec validate FILE`, or the whole argv
    command: str = "validate"  # validate: `spec validate FILE ARGS`; run: `run FILE ARGS`; cli: ARGS


def spec(id: str, changes: dict[str, Any], *expect: str) -> Case:
    return Case(id, list(expect), merged(BASE, changes))


def override(id: str, item: str, *expect: str) -> Case:
    return Case(id, list(expect) or [item.split("=")[0]], copy.deepcopy(BASE), ["--set", item])


def raw(id: str, data: bytes | str, *expect: str) -> Case:
    return Case(id, [*expect, "FILE"], data)


def run(id: str, args: list[str], *expect: str, file: dict[str, Any] | None = None) -> Case:
    return Case(id, list(expect), file or copy.deepcopy(BASE), args, "run")


NESTED_LIST = "name: x\nbase: " + "[" * 5000 + "]" * 5000 + "\n"
NESTED_MAP = "name: x\nbase:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 80)) + "  " * 80 + "v: 1\n"
BOMB = "name: x\na: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
    f"{c}: &{c} [{','.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)
)
BOMB += "base: {tracking: {tags: *h}}\n"

CASES: list[Case] = [
    # --- the file itself: encoding, YAML syntax and structure
    raw("latin1", "name: café\nbase: {}\n".encode("latin-1"), "UTF-8"),
    raw("utf16", "name: x\nbase: {}\n".encode("utf-16"), "UTF-16"),
    raw("binary", bytes(range(256)) * 4, "UTF-8"),
    raw("nul-bytes", b"name: x\x00\nbase: {}\n", "NUL"),
    raw("nested-lists", NESTED_LIST, "levels deep"),
    raw("nested-maps", NESTED_MAP, "levels deep"),
    raw("alias-bomb", BOMB, "aliases"),
    raw("duplicate-top-key", "name: x\nname: y\nbase: {}\n", "'name' appears twice", "lines 1 and 2"),
    raw(
        "duplicate-nested-key",
        "name: x\nbase:\n  train: {steps: 2}\n  train: {steps: 3}\n",
        "'train' appears twice",
    ),
    raw(
        "duplicate-set-key",
        "name: x\nvariants:\n - name: a\n   set: {loss.beta: 1, loss.beta: 2}\n",
        "'loss.beta'",
    ),
    raw(
        "duplicate-grid-axis",
        "name: x\ngrid:\n  loss.beta: [1, 2]\n  loss.beta: [3]\n",
        "'loss.beta' appears twice",
    ),
    raw("empty-file", "", "mapping"),
    raw("a-list", "- name: x\n", "mapping"),
    raw("a-scalar", "just text\n", "mapping"),
    raw("tab-indent", "name: x\nbase:\n\ttrain: {steps: 2}\n", "not valid YAML"),
    raw("unclosed-bracket", "name: x\nbase: {train: {steps: 2}\n", "not valid YAML"),
    raw("python-tag", "name: !!python/object:os.system x\n", "not valid YAML"),
    raw("bad-utf8-in-middle", b"name: x\ndescription: \xff\xfe broken\n", "byte 21"),
    # --- the experiment's own keys
    spec("no-name", {"name": None}, "name", "Field required"),
    spec("name-with-slash", {"name": "a/b"}, "name", "folder name"),
    spec("name-dotdot", {"name": ".."}, "name", "folder name"),
    spec("name-hidden", {"name": ".x"}, "name", "folder name"),
    spec("unknown-top-key", {"varients": []}, "varients", "unknown key"),
    spec("variants-and-grid", {"grid": {"loss.beta": [1]}}, "either `variants` or `grid`"),
    spec("empty-variants", {"variants": []}, "`variants` is empty"),
    spec("variant-dotdot", {"variants": [{"name": ".."}]}, "variants.0.name", "folder name"),
    spec("variant-path", {"variants": [{"name": "../escape"}]}, "variants.0.name", "folder name"),
    spec("variant-slash", {"variants": [{"name": "a/b"}]}, "variants.0.name", "folder name"),
    spec("variant-empty-name", {"variants": [{"name": ""}]}, "variants.0.name"),
    spec("variant-no-name", {"variants": [{"set": {}}]}, "variants.0.name", "Field required"),
    spec("variant-duplicate", {"variants": [{"name": "a"}, {"name": "a"}]}, "repeated", "'a'"),
    spec("variant-set-not-map", {"variants": [{"name": "a", "set": [1]}]}, "variants.0.set"),
    spec("variant-unknown-key", {"variants": [{"name": "a", "sets": {}}]}, "variants.0.sets", "unknown key"),
    spec(
        "variant-bad-value",
        {"variants": [{"name": "a", "set": {"loss.beta": -1}}]},
        "variant 'a'",
        "loss.beta",
    ),
    spec("variant-unknown-override", {"variants": [{"name": "a", "set": {"loss.betta": 1}}]}, "loss.betta"),
    spec("grid-empty", {"variants": None, "grid": {}}, "`grid` is empty"),
    spec("grid-empty-axis", {"variants": None, "grid": {"loss.beta": []}}, "'loss.beta' has no levels"),
    spec("grid-empty-named-axis", {"variants": None, "grid": {"decoder": {}}}, "'decoder' has no levels"),
    spec("grid-scalar-axis", {"variants": None, "grid": {"loss.beta": 4}}, "grid.loss.beta"),
    spec("grid-level-not-map", {"variants": None, "grid": {"decoder": {"iso": 3}}}, "grid.decoder.iso"),
    spec(
        "grid-clashing-levels",
        {"variants": None, "grid": {"data.seed": ["1", 1]}},
        "same variant name",
        "seed-1",
    ),
    spec("grid-hidden-name", {"variants": None, "grid": {".d": {"x": {}}}}, "'.d-x'", "Rename the level"),
    spec(
        "grid-bad-value", {"variants": None, "grid": {"optim.lr": [0.1, -1]}}, "variant 'lr--1'", "optim.lr"
    ),
    # --- tagged sections (discriminated unions)
    spec("data-no-kind-bad-size", {"base.data": {"image_size": 41}}, "data.image_size", "multiple of 2"),
    spec(
        "data-no-kind-celeba-key",
        {"base.data": {"root": "x"}},
        "data.root",
        "data.kind is not given",
        "'synthetic'",
    ),
    spec("decoder-no-kind-inf", {"base.model.decoder": {"sigma": ".inf"}}, "model.decoder.sigma"),
    spec(
        "decoder-no-kind-inf-float",
        {"base.model.decoder": {"sigma": float("inf")}},
        "model.decoder.sigma",
        "finite",
    ),
    spec("data-unknown-kind", {"base.data.kind": "imagenet"}, "data", "allowed kinds", "celeba"),
    spec("decoder-unknown-kind", {"base.model.decoder.kind": "laplace"}, "model.decoder", "allowed kinds"),
    spec("data-not-a-map", {"base.data": "celeba"}, "data"),
    spec("decoder-null", {"base.model.decoder": "none"}, "model.decoder"),
    spec(
        "decoder-other-kinds-field",
        {"base.model.decoder": {"kind": "variance", "sigma": 0.1}},
        "model.decoder.sigma",
        "unknown key",
    ),
    spec("data-kind-list", {"base.data.kind": ["celeba"]}, "data"),
    spec("unknown-section", {"base.optimizer": {"lr": 1}}, "optimizer", "unknown key"),
    spec("unknown-field", {"base.train.step": 5}, "train.step", "unknown key"),
    # --- numbers that validate in pydantic's lax mode but cannot train
    override("lr-inf", "optim.lr=inf", "optim.lr", "finite"),
    override("lr-nan", "optim.lr=nan", "optim.lr", "finite"),
    override("lr-yaml-inf", "optim.lr=.inf", "optim.lr"),
    override("lr-negative", "optim.lr=-1", "optim.lr"),
    override("lr-zero", "optim.lr=0", "optim.lr"),
    override("lr-text", "optim.lr=fast", "optim.lr"),
    override("lr-bool", "optim.lr=true", "optim.lr", "not true/false"),
    override("beta-inf", "loss.beta=inf", "loss.beta", "finite"),
    override("beta-nan", "loss.beta=nan", "loss.beta"),
    override("beta-negative", "loss.beta=-1", "loss.beta"),
    override("beta-bool", "loss.beta=false", "loss.beta", "not true/false"),
    override("perceptual-inf", "loss.perceptual_weight=inf", "loss.perceptual_weight"),
    override("sigma-zero", "model.decoder.sigma=0", "model.decoder.sigma"),
    override("sigma-negative", "model.decoder.sigma=-0.1", "model.decoder.sigma"),
    override("sigma-nan", "model.decoder.sigma=nan", "model.decoder.sigma"),
    override("betas-one", "optim.betas=[1.0, 0.999]", "optim.betas.0", "less than 1"),
    override("betas-negative", "optim.betas=[-0.1, 0.9]", "optim.betas.0"),
    override("betas-above-one", "optim.betas=[0.9, 1.5]", "optim.betas.1"),
    override("betas-one-value", "optim.betas=[0.9]", "optim.betas"),
    override("betas-nan", "optim.betas=[nan, 0.9]", "optim.betas"),
    override("channels-zero", "model.channels=[0]", "model.channels.0"),
    override("channels-negative", "model.channels=[-8]", "model.channels.0"),
    override("channels-empty", "model.channels=[]", "model.channels"),
    override("channels-bool", "model.channels=[true]", "model.channels.0", "not true/false"),
    override("stem-zero", "model.stem_channels=0", "model.stem_channels"),
    override("latent-bool", "model.latent_dim=true", "model.latent_dim", "not true/false"),
    override("latent-zero", "model.latent_dim=0", "model.latent_dim"),
    override("latent-fraction", "model.latent_dim=2.5", "model.latent_dim"),
    override("latent-text", "model.latent_dim=big", "model.latent_dim"),
    override("blocks-negative", "model.blocks_per_level=-1", "model.blocks_per_level"),
    override("layerscale-nan", "model.layerscale_init=nan", "model.layerscale_init"),
    override("se-ratio-bool", "model.se_ratio=true", "model.se_ratio"),
    override("batch-zero", "train.batch_size=0", "train.batch_size"),
    override("batch-bool", "train.batch_size=true", "train.batch_size", "not true/false"),
    override("batch-above-split", "train.batch_size=65", "train.batch_size", "data.train_size = 64"),
    override("steps-zero", "train.steps=0", "train.steps"),
    override("steps-bool", "train.steps=true", "train.steps"),
    override("steps-fraction", "train.steps=1.5", "train.steps"),
    override("epochs-inf", "train.epochs=inf", "train.epochs"),
    override("grad-clip-zero", "train.grad_clip=0", "train.grad_clip"),
    override("grad-clip-inf", "train.grad_clip=inf", "train.grad_clip"),
    override("log-every-zero", "train.log_every=0", "train.log_every"),
    override("val-batches-zero", "train.val_batches=0", "train.val_batches"),
    override("precision-fp16", "train.precision=fp16", "train.precision", "must be one of"),
    override("compile-yes", "train.compile=yes", "train.compile"),
    override("test-one-image", "data.test_size=1", "data.test_size"),
    override("val-one-image", "data.val_size=1", "data.val_size"),
    override("train-zero", "data.train_size=0", "data.train_size"),
    override("image-not-multiple", "data.image_size=21", "data.image_size", "multiple of 2"),
    override("image-too-small", "data.image_size=4", "data.image_size"),
    override("image-huge", "data.image_size=100000", "data.image_size"),
    override("image-bool", "data.image_size=true", "data.image_size"),
    override("data-seed-bool", "data.seed=true", "data.seed"),
    override("warmup-negative", "anneal.warmup_steps=-1", "anneal.warmup_steps"),
    override("ramp-zero", "anneal.ramp_fraction=0", "anneal.ramp_fraction"),
    override("ramp-above-one", "anneal.ramp_fraction=2", "anneal.ramp_fraction"),
    override("free-bits-inf", "anneal.free_bits=inf", "anneal.free_bits"),
    override("anneal-start-nan", "anneal.start=nan", "anneal.start"),
    override("schedule-unknown", "anneal.schedule=sigmoid", "anneal.schedule", "'cyclical'"),
    override("iw-zero", "eval.iw_samples=0", "eval.iw_samples"),
    override("iw-bool", "eval.iw_samples=true", "eval.iw_samples"),
    override("mi-batch-one", "eval.mi_batch_size=1", "eval.mi_batch_size"),
    override("threshold-zero", "eval.active_threshold=0", "eval.active_threshold"),
    override("threshold-inf", "eval.active_threshold=inf", "eval.active_threshold"),
    override("max-images-one", "eval.max_images=1", "eval.max_images"),
    override("logvar-nan", "model.decoder={kind: variance, logvar_min: nan}", "model.decoder.logvar_min"),
    override(
        "logvar-order", "model.decoder={kind: variance, logvar_min: 3, logvar_max: 1}", "logvar_min (3.0)"
    ),
    override(
        "init-sigma-inf", "model.decoder={kind: sigma_vae, init_sigma: inf}", "model.decoder.init_sigma"
    ),
    override("weight-decay-inf", "optim.weight_decay=inf", "optim.weight_decay"),
    override("optimizer-unknown", "optim.name=sgd", "optim.name"),
    override("tracking-mode", "tracking.mode=sometimes", "tracking.mode"),
    override("seeds-empty", "seeds=[]", "seeds"),
    override("seeds-repeated", "seeds=[0, 0]", "seeds", "repeated: [0]"),
    override("seeds-bool", "seeds=[true]", "seeds.0"),
    override("seeds-fraction", "seeds=[1.5]", "seeds.0"),
    override("seeds-text", "seeds=zero", "seeds"),
    override("seeds-negative", "seeds=[-1]", "seeds.0", "greater than or equal to 0", "-1"),
    override("override-bad-key", "loss..beta=1", "loss..beta", "dotted.key=value"),
    override("override-no-equals", "loss.beta", "loss.beta", "dotted.key=value"),
    override("override-unknown-key", "loss.betta=1", "loss.betta", "unknown key"),
    # --- what only `vaebench run` checks, before it writes anything
    run("device-gpu", ["--device", "gpu"], "--device", "'gpu'"),
    run("device-cuda-text", ["--device", "cuda:x"], "--device", "cuda:N"),
    run("device-negative", ["--device", "cuda:-1"], "--device"),
    run("device-empty", ["--device", ""], "--device"),
    run("devices-text", ["--devices", "a,b"], "--devices", "'a'"),
    run("devices-mixed", ["--devices", "0,cpu"], "--devices", "not both"),
    run("devices-empty", ["--devices", ","], "--devices is empty"),
    run("runs-dir-file", ["--runs-dir", "FILE"], "--runs-dir", "is a file"),
    run("runs-dir-under-file", ["--runs-dir", "FILE/runs"], "--runs-dir", "cannot be written"),
    run("runs-dir-proc", ["--runs-dir", "/proc/vaebench-runs"], "--runs-dir", "cannot be written"),
    run("seed-twice", ["--seed", "0", "--seed", "0"], "--seed 0 is given twice"),
    run("seed-negative", ["--seed", "-1"], "--seed -1", "0 or more"),
    run("unknown-variant", ["--variant", "zzz"], "zzz", "This experiment has"),
    run("stray-argument", ["extra"], "'extra'", "key.path=value"),
    run("huge-synthetic-split", ["--set", "data.train_size=1000000000000"], "data.train_size", "GiB"),
    run("missing-experiment", ["--set", "loss.beta=1"], "does not exist", file={"missing": True}),
    run("bad-set-in-run", ["--set", "optim.lr=nan"], "optim.lr", "finite"),
    Case("evaluate-not-a-run", ["FOLDER"], None, ["evaluate", "FOLDER"], "cli"),
    Case("report-no-folder", ["does-not-exist"], None, ["report", "does-not-exist", "--no-figures"], "cli"),
    Case("sweep-missing-file", ["nope.yaml", "does not exist"], None, ["sweep", "nope.yaml"], "cli"),
    Case(
        "sweep-duplicate-key",
        ["sweep.yaml", "'method' appears twice"],
        "method: grid\nmethod: bayes\n",
        ["sweep", "FILE"],
        "cli",
    ),
    Case(
        "sweep-latin1",
        ["sweep.yaml", "UTF-8"],
        "method: gr\xefd\n".encode("latin-1"),
        ["sweep", "FILE"],
        "cli",
    ),
    Case(
        "prepare-bad-spec", ["loss.beta"], None, ["data", "prepare", "FILE", "--set", "loss.beta=-2"], "cli"
    ),
]


def _flat(text: str) -> str:
    """Rich/Click boxes wrap long messages: drop the box characters and fold white space."""
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


def _materialise(case: Case, tmp_path: Path) -> tuple[list[str], Path, Path]:
    """The argv of the case, with FILE (the experiment or sweep file) and FOLDER filled in."""
    name = "sweep.yaml" if case.id.startswith("sweep") else "exp.yaml"
    path = tmp_path / name
    if isinstance(case.file, dict) and case.file.get("missing"):
        path = tmp_path / "no-such-experiment.yaml"
    elif isinstance(case.file, dict):
        path.write_text(yaml.safe_dump(case.file, sort_keys=False))
    elif isinstance(case.file, bytes):
        path.write_bytes(case.file)
    elif isinstance(case.file, str):
        path.write_text(case.file, encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(BASE, sort_keys=False))
    folder = tmp_path / "not-a-run"
    folder.mkdir()
    runs = tmp_path / "runs"
    plain = tmp_path / "plain-file"
    plain.write_text("x")

    def fill(arg: str) -> str:
        return arg.replace("FILE", str(plain) if case.command == "run" else str(path)).replace(
            "FOLDER", str(folder)
        )

    args = [fill(a) for a in case.args]
    if case.command == "validate":
        return ["spec", "validate", str(path), *args], path, runs
    if case.command == "run":
        has_runs_dir = "--runs-dir" in args
        return ["run", str(path), *args, *([] if has_runs_dir else ["--runs-dir", str(runs)])], path, runs
    return args, path, runs


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_clear_error_naming_what_to_fix(case: Case, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv, path, runs = _materialise(case, tmp_path)
    result = runner.invoke(app, argv)
    output = _flat(result.output)
    assert result.exit_code not in (0, None), f"accepted: {output[:500]}"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for expected in case.expect:
        expected = expected.replace("FILE", path.name).replace("FOLDER", "not-a-run")
        assert expected in output, f"{expected!r} not in: {output[:800]}"
    if case.command == "run":
        written = [p for p in runs.rglob("*")] if runs.exists() else []
        assert written == [], f"wrote {written[:5]}"


def test_the_control_case_is_valid_so_each_case_fails_for_its_own_reason(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(BASE, sort_keys=False))
    result = runner.invoke(app, ["spec", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "2 valid variant(s)" in result.output


def test_a_utf8_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(BASE, sort_keys=False).encode())
    assert runner.invoke(app, ["spec", "validate", str(path)]).exit_code == 0


def test_yaml_anchors_and_aliases_still_work(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    text = yaml.safe_dump(merged(BASE, {"variants": None}), sort_keys=False)
    text += "variants:\n  - {name: a, set: &s {loss.beta: 2}}\n  - {name: b, set: *s}\n"
    assert runner.invoke(app, ["spec", "validate", str(path.write_text(text) and path)]).exit_code == 0


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["spec", "validate", "FILE_LATIN1"], "UTF-8"),
        (["spec", "validate", "FILE_NESTED"], "levels deep"),
        (["run", "FILE_OK", "--device", "tpu"], "--device"),
        (["run", "FILE_OK", "--runs-dir", "FILE_OK"], "is a file"),
    ],
    ids=["latin1", "nested", "device", "runs-dir-file"],
)
def test_a_real_process_exits_non_zero_without_a_traceback(
    argv: list[str], expected: str, tmp_path: Path
) -> None:
    files = {
        "FILE_LATIN1": tmp_path / "latin1.yaml",
        "FILE_NESTED": tmp_path / "nested.yaml",
        "FILE_OK": tmp_path / "ok.yaml",
    }
    files["FILE_LATIN1"].write_bytes("name: café\n".encode("latin-1"))
    files["FILE_NESTED"].write_text(NESTED_LIST)
    files["FILE_OK"].write_text(yaml.safe_dump(BASE, sort_keys=False))
    argv = [str(files.get(a, a)) for a in argv]
    proc = subprocess.run(
        [sys.executable, "-m", "vaebench", *argv], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    output = _flat(proc.stdout + proc.stderr)
    assert proc.returncode != 0
    assert "Traceback" not in output
    assert expected in output
    assert not (tmp_path / "runs").exists()
