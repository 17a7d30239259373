"""Sweep files in W&B's format, and the command line a W&B agent builds from one.

A sweep file (``sweeps/*.yaml``) is what ``wandb sweep`` reads: a search ``method`` (grid, random,
bayes), a ``metric`` to optimise, ``parameters`` named by dotted spec keys (``loss.beta``) and a
``command``. The same file drives `vaebench sweep` (the local controller, no server), so both build
the same command line for the same parameters: `agent_command` repeats what ``wandb agent`` does
(wandb/wandb_agent.py, ``Agent._command_run``, and wandb/sdk/launch/sweeps/utils.py,
``create_sweep_command_args``):

    ${env}                  /usr/bin/env (nothing on Windows)
    ${interpreter}          python
    ${program}              the sweep's `program`
    ${args}                 --key=value per parameter, values written with Python's str()
    ${args_no_hyphens}      key=value
    ${args_no_boolean_flags} --key=value, with booleans as --key (true) or left out (false)
    ${args_no_equals}       --key value
    ${args_json}            one JSON object of all parameters
    ${args_json_file}       the path of a file holding that JSON object
    ${args_append_hydra}    +key=value        ${args_override_hydra}   ++key=value
    ${envvar:NAME}          the environment variable NAME (NAME itself when unset)

`vaebench run` reads every one of these `--key=value` forms as an override of the nested spec
(W&B's own config merge would leave the dotted keys flat).
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vaebench.errors import UserError
from vaebench.yamlfile import SafeLoader, read_yaml_file

# How the local controller tells a `vaebench run` process which sweep run it is and where runs go.
SWEEP_RUN_ENV = "VAEBENCH_SWEEP_RUN"
RUNS_DIR_ENV = "VAEBENCH_RUNS_DIR"
# What `wandb agent` sets in the environment of each run it starts.
WANDB_SWEEP_ID_ENV = "WANDB_SWEEP_ID"
WANDB_RUN_ID_ENV = "WANDB_RUN_ID"

DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]  # W&B's default
METHODS = ("grid", "random", "bayes")
_ENVVAR_MACRO = re.compile(r"\$\{envvar\:([A-Z0-9_]*)\}")  # W&B's SWEEP_COMMAND_ENV_VAR_REGEX
_NAME_SAFE = re.compile(r"[^\w.-]+")


def plain(value: Any) -> Any:
    """A numpy scalar or array (what the sweep engine proposes) as plain Python: int, float, str, bool, list.

    Written into state.json and onto command lines, where `np.float64(0.5)` must read as `0.5`.
    """
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and type(value).__module__.split(".")[0] == "numpy":
        return plain(value.tolist())
    return value


def sweep_run_suffix(env: Mapping[str, str] | None = None) -> str | None:
    """The name a sweep run's folder carries (`<variant>+<suffix>`), read from the environment.

    The local controller sets VAEBENCH_SWEEP_RUN; `wandb agent` sets WANDB_SWEEP_ID and WANDB_RUN_ID,
    giving `<sweep id>-<run id>`. None outside a sweep.
    """
    env = os.environ if env is None else env
    if env.get(SWEEP_RUN_ENV):
        return env[SWEEP_RUN_ENV]
    if env.get(WANDB_SWEEP_ID_ENV) and env.get(WANDB_RUN_ID_ENV):
        return f"{env[WANDB_SWEEP_ID_ENV]}-{env[WANDB_RUN_ID_ENV]}"
    return None


# ----------------------------------------------------------------------------- the file


def load_sweep(path: Path, sets: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a sweep file, check what the controller relies on, and add `sets` as constant parameters.

    `--set key=value` of `vaebench sweep` becomes the W&B constant parameter `key: {value: value}`,
    so it reaches every run through ${args} like the searched parameters, and it is recorded in the
    sweep's state (a rerun with other --set values is another sweep). Setting a searched parameter
    is refused: the sweep would no longer search it.
    The file is read with yaml.safe_load's rules, as `wandb sweep` reads it, so both see the same values
    (but a key written twice is refused, where yaml.safe_load keeps the last).
    """
    path = Path(path)
    config = read_yaml_file(
        path, "Sweep file", "sweeps/beta.yaml (sweep files live under sweeps/)", SafeLoader
    )
    if not isinstance(config, dict):
        raise UserError(f"{path} must hold a mapping with `method`, `metric`, `parameters` and `command`.")
    method = config.get("method")
    if method not in METHODS:
        raise UserError(f"{path}: `method` must be one of {', '.join(METHODS)} (given: {method!r}).")
    params = config.get("parameters")
    if not isinstance(params, dict) or not params:
        raise UserError(f"{path}: `parameters` must map dotted spec keys (e.g. loss.beta) to their values.")
    for key, spec in params.items():
        if not isinstance(spec, dict):
            raise UserError(f"{path}: parameter {key!r} must be a mapping such as {{values: [1, 2]}}.")
        if "parameters" in spec:
            raise UserError(
                f"{path}: parameter {key!r} nests `parameters`; write each one as a dotted key instead "
                f"(e.g. `{key}.beta: {{values: [1, 2]}}`), which `vaebench run` applies to the nested spec."
            )
    metric = config.get("metric")
    if (method == "bayes" or "early_terminate" in config) and not (
        isinstance(metric, dict) and "name" in metric
    ):
        raise UserError(f"{path}: a {method} sweep needs `metric: {{name: test/bpd_elbo, goal: minimize}}`.")
    command = config.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not command:
        raise UserError(
            f"{path}: `command` must be a list, e.g. [${{env}}, vaebench, run, EXPERIMENT, ${{args}}]."
        )
    for key, value in (sets or {}).items():
        current = params.get(key)
        if current is not None and set(current) != {"value"}:
            raise UserError(
                f"--set {key}=... would fix a parameter that {path} searches ({current}); "
                "remove it from --set, or edit the sweep file."
            )
        params[key] = {"value": value}
    return config


def sweep_name(config: Mapping[str, Any], path: Path) -> str:
    """The sweep's `name` (a folder-safe form of it), else the file's stem."""
    name = _NAME_SAFE.sub("-", str(config.get("name") or "")).strip("-.")
    return name or Path(path).stem


# ----------------------------------------------------------------------------- the command line


def agent_args(params: Mapping[str, Any]) -> dict[str, list[str]]:
    """The argument lists of W&B's macros for one run's parameters (create_sweep_command_args)."""
    flags, no_hyphens, no_booleans, no_equals, append_hydra, override_hydra = [], [], [], [], [], []
    for key, value in params.items():
        flag = f"{key}={value}"
        flags.append("--" + flag)
        no_hyphens.append(flag)
        no_equals += [f"--{key}", str(value)]
        append_hydra.append("+" + flag)
        override_hydra.append("++" + flag)
        if isinstance(value, bool):
            if value:
                no_booleans.append("--" + key)
        else:
            no_booleans.append("--" + flag)
    return {
        "args": flags,
        "args_no_equals": no_equals,
        "args_no_hyphens": no_hyphens,
        "args_no_boolean_flags": no_booleans,
        "args_json": [json.dumps(dict(params))],
        "args_append_hydra": append_hydra,
        "args_override_hydra": override_hydra,
    }


def agent_command(
    command: Sequence[Any],
    params: Mapping[str, Any],
    program: str | None = None,
    args_json_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """The argv `wandb agent` runs for `params`: every macro expanded exactly as the agent does.

    A macro must be a whole list element (`${args}`); an unknown one expands to nothing, as in the
    agent. When `${args_json_file}` is used, the JSON is written to `args_json_file`.
    """
    env = os.environ if env is None else env
    chunks = []
    for chunk in command:  # create_sweep_command: ${envvar:NAME} anywhere inside an element
        text = str(chunk)
        for m in list(_ENVVAR_MACRO.finditer(text))[::-1]:
            text = f"{text[: m.start()]}{env.get(m.group(1), m.group(1))}{text[m.end() :]}"
        chunks.append(text)
    macros: dict[str, list[str]] = {**agent_args(params), "interpreter": ["python"]}
    if "${program}" in chunks:
        if not program:
            raise UserError("The sweep's command uses ${program}, but the sweep file has no `program`.")
        macros["program"] = [program]
    if "${args_json_file}" in chunks:
        if args_json_file is None:
            raise UserError("The sweep's command uses ${args_json_file}, which needs a file to write.")
        args_json_file.parent.mkdir(parents=True, exist_ok=True)
        args_json_file.write_text(macros["args_json"][0])
        macros["args_json_file"] = [str(args_json_file)]
    if platform.system() != "Windows":
        macros["env"] = ["/usr/bin/env"]
    argv: list[str] = []
    for chunk in chunks:
        if chunk.startswith("${") and chunk.endswith("}"):
            argv += macros.get(chunk[2:-1]) or []
        else:
            argv.append(chunk)
    return argv


def project_folder(sweep_file: Path) -> Path:
    """The folder a W&B agent would be started in for this sweep file: the one holding `sweeps/`."""
    folder = Path(sweep_file).resolve().parent
    return folder.parent if folder.name == "sweeps" else folder


def localize(argv: Sequence[str], project: Path | None = None) -> list[str]:
    """The agent's argv made runnable from here: this interpreter, and the project's files.

    `vaebench` (first, or after /usr/bin/env) becomes `<this python> -m vaebench`, and `python`
    becomes this python: the controller runs the vaebench it is itself part of, from any venv, with
    no PATH needed. A relative path argument (`experiments/baseline.yaml`) that does not exist from
    the current folder but does from `project` (see `project_folder`) is made absolute, so that a
    sweep can be run from any folder; a W&B agent, by contrast, must be started in the project.
    """
    argv = list(argv)
    i = 1 if argv and argv[0] == "/usr/bin/env" and len(argv) > 1 else 0
    if project is not None:
        for j in range(i + 1, len(argv)):
            arg = argv[j]
            if arg.startswith("-") or "=" in arg or Path(arg).is_absolute() or Path(arg).exists():
                continue
            if (Path(project) / arg).exists():
                argv[j] = str(Path(project) / arg)
    if argv and Path(argv[i]).name == "vaebench":
        return [*argv[:i], sys.executable, "-m", "vaebench", *argv[i + 1 :]]
    if argv and argv[i] in ("python", "python3"):
        return [*argv[:i], sys.executable, *argv[i + 1 :]]
    return argv
