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

`vaebench run` reads the `--key=value` of ${args} and the `key=value` of ${args_no_hyphens} as overrides
of the nested spec (W&B's own config merge would leave the dotted keys flat). A command that runs
`vaebench run` without one of them would train the experiment's own values while the sweep records
(and W&B shows) its parameters: `load_sweep` refuses it, and `vaebench run` under a sweep checks what it
resolved against the parameters the sweep recorded for it (`sweep_run_params`).
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

import yaml

from vaebench.config.yamlfile import SafeLoader, read_yaml_file
from vaebench.core.errors import UserError

# How the local controller tells a `vaebench run` process which sweep run it is and where runs go.
SWEEP_RUN_ENV = "VAEBENCH_SWEEP_RUN"
RUNS_DIR_ENV = "VAEBENCH_RUNS_DIR"
SWEEP_PARAMS_ENV = "VAEBENCH_SWEEP_PARAMS"  # the parameters the controller recorded for the run, as JSON
# What `wandb agent` sets in the environment of each run it starts; the param file is YAML,
# `{wandb_version: 1, <key>: {value: <value>}, ...}` (wandb/sdk/lib/config_util.py).
WANDB_SWEEP_ID_ENV = "WANDB_SWEEP_ID"
WANDB_RUN_ID_ENV = "WANDB_RUN_ID"
WANDB_SWEEP_PARAM_PATH_ENV = "WANDB_SWEEP_PARAM_PATH"

DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]  # W&B's default
METHODS = ("grid", "random", "bayes")
# The macros that hand a run its parameters, and the two whose form `vaebench run` reads.
PARAM_MACROS = (
    "${args}",
    "${args_no_hyphens}",
    "${args_no_boolean_flags}",
    "${args_no_equals}",
    "${args_json}",
    "${args_json_file}",
    "${args_append_hydra}",
    "${args_override_hydra}",
)
RUN_MACROS = ("${args}", "${args_no_hyphens}")
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


def sweep_run_params(env: Mapping[str, str] | None = None) -> tuple[dict[str, Any], str] | None:
    """The parameters the sweep recorded for this run, and where they were read; None outside a sweep.

    The local controller passes them as JSON in VAEBENCH_SWEEP_PARAMS (they are also in its state.json);
    `wandb agent` writes them to the YAML file named by WANDB_SWEEP_PARAM_PATH, the file wandb.init reads
    them from into the W&B run's config. In a sweep (see `sweep_run_suffix`) without them, nothing could
    check that the run trains what the sweep records: a UserError.
    """
    env = os.environ if env is None else env
    if sweep_run_suffix(env) is None:
        return None
    if env.get(SWEEP_RUN_ENV):
        raw = env.get(SWEEP_PARAMS_ENV)
        where = f"the {SWEEP_PARAMS_ENV} that `vaebench sweep` set (state.json holds the same)"
        try:
            params = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            params = None
    else:
        path = env.get(WANDB_SWEEP_PARAM_PATH_ENV)
        where = f"{path}, the parameter file of `wandb agent` ({WANDB_SWEEP_PARAM_PATH_ENV})"
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) if path else None
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            data = None
        params = None
        if isinstance(data, dict):
            data.pop("wandb_version", None)
            if all(isinstance(v, dict) and "value" in v for v in data.values()):
                params = {str(k): v["value"] for k, v in data.items()}
    if not isinstance(params, dict):
        raise UserError(
            f"This is run {sweep_run_suffix(env)} of a sweep, but the parameters the sweep recorded for it "
            f"cannot be read from {where}, so nothing can check that it trains them. Start sweep runs "
            "with `vaebench sweep` or `wandb agent`; outside a sweep, unset VAEBENCH_SWEEP_RUN, "
            "WANDB_SWEEP_ID and WANDB_RUN_ID."
        )
    return params, where


def run_arguments(argv: Sequence[Any]) -> list[str] | None:
    """The arguments after `run` when `argv` runs `vaebench run` (`vaebench run ...`, `/usr/bin/env
    vaebench run ...`, `python -m vaebench run ...`, `${env} vaebench run ...`), else None."""
    argv = [str(a) for a in argv]
    for i in range(len(argv) - 1):
        if Path(argv[i]).name == "vaebench" and argv[i + 1] == "run":
            return argv[i + 2 :]
    return None


def check_command(path: Path, command: Sequence[Any], params: Mapping[str, Any]) -> None:
    """Refuse a command that cannot hand each run the parameters the sweep records for it.

    Any command needs a macro that passes them (`PARAM_MACROS`); one that runs `vaebench run` needs
    ${args} or ${args_no_hyphens} (the forms it reads), and may not set a parameter itself after them
    (`--loss.beta=1`, `--set loss.beta=1`, `--seed 0` for `seeds`): the later value would win.
    """
    chunks = [str(c) for c in command]
    keys = ", ".join(params)
    example = "[${env}, vaebench, run, EXPERIMENT, ${args}]"
    args = run_arguments(chunks)
    if args is None:
        if not any(c in PARAM_MACROS for c in chunks):
            raise UserError(
                f"{path}: `command` ({chunks}) has no macro that passes the run's parameters ({keys}), so "
                "every run would train the same while the sweep records (and W&B shows) other values. "
                f"Add ${{args}}, e.g. `command: {example}`."
            )
        return
    if not any(c in RUN_MACROS for c in args):
        given = [c for c in args if c in PARAM_MACROS]
        why = (
            f"{', '.join(given)} writes them in a form `vaebench run` does not read (it reads --key=value "
            "from ${args} or key=value from ${args_no_hyphens})"
            if given
            else "it has no ${args} after `vaebench run`"
        )
        raise UserError(
            f"{path}: `command` ({chunks}) does not pass the run's parameters ({keys}) to `vaebench run`: "
            f"{why}, so every run would train the experiment's own values while the sweep records (and "
            f"W&B shows) the sweep's. Add ${{args}} at the end, e.g. `command: {example}`."
        )
    for i, arg in enumerate(args):
        following = args[i + 1] if i + 1 < len(args) else ""
        if arg in ("--set", "-s"):
            key, shown = following.partition("=")[0], f"{arg} {following}"
        elif arg.startswith("--set="):
            key, shown = arg.removeprefix("--set=").partition("=")[0], arg
        elif arg == "--seed" or arg.startswith("--seed="):  # selects the seed that `seeds` would give
            key, shown = "seeds", (arg if "=" in arg else f"{arg} {following}")
        elif "=" in arg and not arg.startswith("${"):
            key, shown = arg.lstrip("-").partition("=")[0], arg
        else:
            continue
        if key.strip() in params:
            raise UserError(
                f"{path}: `command` sets the swept parameter {key.strip()} itself ({shown!r}), which would "
                "replace the value ${args} passes, so runs would not train what the sweep records. Remove "
                f"{shown!r} from the command (a fixed value is a parameter `{key.strip()}: {{value: ...}}`)."
            )


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
    check_command(path, command, params)
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
