"""Weights & Biases behind one small class, so that W&B can never stop a training run.

Everything a report needs is also written to the run folder (metrics.jsonl, summary.json, figures);
W&B is a view on it. Hence the rule here: any W&B failure (not installed, no network, bad key, an
exception inside log/finish, a crash of its service process) is caught, reported by one warning,
and training goes on in a degraded mode:

    online  --init fails-->  offline  --init fails-->  local-only (no W&B)
    any mode --log/summary/finish raises-->  local-only

Warnings are `TrackingWarning`s issued with `warnings.warn` (shown once per distinct message by
Python's default filter; messages name the run folder, so each run's warning is shown). A Tracker
issues at most one warning for its start (however many fallbacks it took) and one if W&B fails
later, never one per call.

Mode: WANDB_MODE wins when set (online, offline, disabled; W&B's aliases run/dryrun accepted), else
`TrackingSpec.mode`; "auto" is online when a W&B API key is configured (`has_wandb_credentials`)
and offline otherwise. W&B writes under ``run_dir/wandb``; its run id is kept in ``run_dir/wandb_id``
and reused with resume="allow", so a resumed training run continues the same W&B run.

Start-up is bounded: before an online init, `probe_server` checks within PROBE_TIMEOUT_S (3 s, name
lookup included) that the W&B server (or the HTTPS proxy in the way) answers at all. A server that is
down, unknown to DNS or accepts connections but never answers costs those seconds, then the run logs
offline; without the probe W&B waits its init timeout (30 s here) before giving up. (W&B's
service also writes a small per-process debug log to $WANDB_CACHE_DIR/wandb/logs, default
~/.cache/wandb/logs; no wandb.Settings field moves it, only that environment variable.)
"""

from __future__ import annotations

import netrc
import os
import secrets
import socket
import ssl
import string
import threading
import urllib.request
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal
from urllib.parse import urlsplit

from vaebench.config.spec import TrackingSpec
from vaebench.core.errors import UserError
from vaebench.runs.io import atomic_write_text

Mode = Literal["online", "offline", "disabled"]
ModeUsed = Literal["online", "offline", "disabled", "local-only"]

# Hosts of the W&B cloud API (the default host changed in wandb 0.31; both may hold the key).
WANDB_CLOUD_HOSTS = ("api.wandb.ai", "api.forge.coreweave.com")
ONLINE_INIT_TIMEOUT_S = 30.0  # then fall back to offline rather than wait W&B's default 90 s
PROBE_TIMEOUT_S = 3.0  # the W&B server must answer within this (DNS, connect, first bytes) to go online
ONLINE_FINISH_TIMEOUT_S = 300.0  # bounded upload at the end; the offline copy under wandb/ can be synced
_WANDB_MODE_ALIASES: dict[str, Mode] = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
}


class TrackingWarning(UserWarning):
    """W&B failed; the run goes on with less (or no) W&B tracking. Everything is still in the run folder."""


# ----------------------------------------------------------------------------- mode resolution


def _netrc_path(env: Mapping[str, str]) -> Path:
    if env.get("NETRC"):
        return Path(env["NETRC"]).expanduser()
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    unix = home / ".netrc"
    return unix if unix.exists() or os.name != "nt" else home / "_netrc"


def has_wandb_credentials(env: Mapping[str, str] | None = None) -> bool:
    """Whether a W&B API key is configured, without importing wandb or touching the network.

    True if WANDB_API_KEY or WANDB_IDENTITY_TOKEN_FILE is set, or the netrc file ($NETRC, else
    ~/.netrc) has a password for the W&B host (WANDB_BASE_URL's host if set, else the W&B cloud).
    wandb's own check lives in a private module whose API changes between versions, hence this one.
    """
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    hosts = (urlsplit(env["WANDB_BASE_URL"]).netloc,) if env.get("WANDB_BASE_URL") else WANDB_CLOUD_HOSTS
    try:
        entries = netrc.netrc(_netrc_path(env))
    except (OSError, netrc.NetrcParseError):
        return False
    return any((auth := entries.authenticators(h)) is not None and bool(auth[2]) for h in hosts)


def resolve_mode(spec_mode: str, env: Mapping[str, str] | None = None) -> Mode:
    """The W&B mode to try first: WANDB_MODE if set, else the spec's; "auto" -> online iff logged in."""
    env = os.environ if env is None else env
    requested = env.get("WANDB_MODE", "").strip().lower()
    source = "the WANDB_MODE environment variable"
    if not requested:
        requested, source = spec_mode, "tracking.mode"
    if requested == "auto":
        return "online" if has_wandb_credentials(env) else "offline"
    if requested not in _WANDB_MODE_ALIASES:
        raise UserError(
            f"{source} is {requested!r}; use one of online, offline, disabled"
            + (" or auto." if source == "tracking.mode" else " (or unset it to use tracking.mode).")
        )
    return _WANDB_MODE_ALIASES[requested]


def _probe(host: str, port: int, tls: bool, connect_to: tuple[str, int] | None, timeout: float) -> None:
    """Raise unless a connection to the server (through the proxy `connect_to`) gets any answer."""
    with socket.create_connection(connect_to or (host, port), timeout=timeout) as sock:
        if connect_to is not None:  # an HTTP(S) proxy: ask it for a tunnel and wait for its reply
            sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            if not sock.recv(1):
                raise ConnectionError(f"proxy {connect_to[0]}:{connect_to[1]} closed the connection")
        elif tls:  # the TLS handshake needs the server's answer; certificates are W&B's business
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            context.wrap_socket(sock, server_hostname=host).close()
        else:
            sock.sendall(f"HEAD / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            if not sock.recv(1):
                raise ConnectionError("the server closed the connection without an answer")


def probe_server(base_url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if the W&B server at `base_url` answers within `timeout` seconds, else why not (one line).

    Checks name lookup, connection and the server's first bytes (TLS handshake or an HTTP reply), via
    the proxy of HTTPS_PROXY/HTTP_PROXY when one applies. Runs in a daemon thread so that a stalled
    name lookup (which socket timeouts do not cover) is bounded too.
    """
    parts = urlsplit(base_url)
    host, tls = parts.hostname or "", parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        return f"{base_url!r} has an invalid port"
    connect_to = None
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        connect_to = (p.hostname or "", p.port or 80)
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            _probe(host, port, tls, connect_to, timeout)
            outcome.append(None)
        except Exception as e:  # DNS failure, refused, reset, timeout, TLS error
            outcome.append(f"{type(e).__name__}: {_first_line(e)}")

    thread = threading.Thread(target=attempt, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        via = f" (via proxy {connect_to[0]}:{connect_to[1]})" if connect_to else ""
        return f"no answer from {host}:{port}{via} within {timeout:g} s"
    return outcome[0]


def sweep_agent_run_id(env: Mapping[str, str] | None = None) -> str | None:
    """The run id a `wandb agent` gave this process (WANDB_RUN_ID, with WANDB_SWEEP_ID set), else None.

    In a sweep, wandb.init ignores the id it is given and adopts WANDB_RUN_ID, the run the sweep
    server is waiting for; storing that id (not one of ours) keeps run_dir/wandb_id true. Outside a
    sweep WANDB_RUN_ID is left to wandb: a queue of runs must not all share one id.
    """
    env = os.environ if env is None else env
    if env.get("WANDB_SWEEP_ID") and env.get("WANDB_RUN_ID"):
        return env["WANDB_RUN_ID"].strip() or None
    return None


def _new_run_id() -> str:
    """An id in W&B's own format (8 lowercase letters and digits)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _settings(wandb: ModuleType, mode: Mode) -> Any:
    """wandb.Settings that keep W&B fast, quiet and inside the run folder; unknown fields are skipped.

    console="off": the run folder and the terminal keep the program's own output, W&B does not wrap
    stdout. Online: bounded init (falls back to offline), login never waits on a prompt forever,
    bounded final upload. Offline: silent. Only fields the installed wandb knows are passed.
    """
    wanted: dict[str, Any] = {"console": "off", "reinit": "create_new"}
    if mode == "online":
        wanted |= {
            "quiet": True,
            "init_timeout": ONLINE_INIT_TIMEOUT_S,
            "login_timeout": 30.0,
            "finish_timeout": ONLINE_FINISH_TIMEOUT_S,
        }
    else:
        wanted |= {"silent": True}
    known = getattr(wandb.Settings, "model_fields", None)
    if known is not None:
        wanted = {k: v for k, v in wanted.items() if k in known}
    return wandb.Settings(**wanted)


# ----------------------------------------------------------------------------- tracker


class Tracker:
    """One W&B run (or none), with calls that never raise because of W&B.

    One owner: whoever runs one run makes the tracker and holds it open as a context manager
    (`with Tracker(run_dir, spec.tracking, ...) as tracker:`, see `vaebench.launch.runner.run_one`),
    hands it to training and to the final evaluation, and the `with` finishes it on every path: exit
    code 0 when the block ends or is interrupted (KeyboardInterrupt: rerunning resumes the run), 1 when
    it raises anything else. W&B itself starts lazily, at `open()` (training calls it once it trains), so
    a run skipped as finished, or refused before training, starts no W&B run. A tracker made without
    `tracking` (`Tracker(run_dir)`) never starts one: what `train()` uses when called without a tracker.

    Attributes:
        run_id: the W&B run id; None when no W&B run was started (disabled, or every init failed).
        mode_used: "online", "offline", "disabled" (asked for) or "local-only" (W&B failed).
    """

    def __init__(
        self,
        run_dir: Path,
        tracking: TrackingSpec | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        group: str = "",
        name: str = "",
        tags: Sequence[str] = (),
        resume_id: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_id: str | None = None
        self.mode_used: ModeUsed = "disabled"
        self._run: Any = None
        self._wandb: ModuleType | None = None
        self._first_step = 0  # W&B drops steps below a resumed run's last step; skip them quietly
        self._tracking, self._config, self._resume_id = tracking, dict(config or {}), resume_id
        self._group, self._name, self._tags = group, name, list(tags)
        self._opened = False

    @classmethod
    def start(
        cls,
        tracking: TrackingSpec,
        run_dir: Path,
        config: Mapping[str, Any],
        group: str,
        name: str,
        tags: Sequence[str] = (),
        resume_id: str | None = None,
    ) -> Tracker:
        """A tracker of the run folder `run_dir` whose W&B run is started (`open`) at once."""
        tracker = cls(
            run_dir, tracking, config=config, group=group, name=name, tags=tags, resume_id=resume_id
        )
        return tracker.open()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        failed = exc_type is not None and not issubclass(exc_type, KeyboardInterrupt)
        self.finish(exit_code=1 if failed else None)

    def open(self) -> Tracker:
        """Start (or resume) the W&B run of the run folder; only the first call does anything.

        The run id is `resume_id` if given, else the run a W&B sweep agent started this process for
        (`sweep_agent_run_id`), else the one stored in run_dir/wandb_id, else new; it is
        stored in run_dir/wandb_id before W&B starts, so a crash at any point resumes the same W&B run.
        `config` is the nested resolved spec; `tags` are added to `tracking.tags`.
        W&B failures never raise (see the module docstring); an invalid WANDB_MODE is a UserError,
        and an unwritable run folder raises OSError as it would anywhere else.
        """
        if self._opened or self._tracking is None:
            return self
        self._opened = True
        tracking, resume_id = self._tracking, self._resume_id
        mode = resolve_mode(tracking.mode)
        if mode == "disabled":
            return self

        id_file = self.run_dir / "wandb_id"
        stored = id_file.read_text().strip() if id_file.is_file() else ""
        run_id = resume_id or sweep_agent_run_id() or stored or _new_run_id()
        atomic_write_text(id_file, run_id + "\n")

        failures: list[str] = []
        mode_order: list[Mode] = ["online", "offline"] if mode == "online" else ["offline"]
        try:
            import wandb
        except Exception as e:
            failures.append(f"wandb cannot be imported ({type(e).__name__}: {_first_line(e)})")
            mode_order = []
        else:
            self._wandb = wandb
        if mode_order and mode_order[0] == "online":
            base_url = os.environ.get("WANDB_BASE_URL") or _default_base_url(wandb)
            unreachable = probe_server(base_url)
            if unreachable is not None:
                failures.append(f"W&B server {base_url} not reachable ({unreachable})")
                mode_order = ["offline"]
        all_tags = list(dict.fromkeys([*tracking.tags, *self._tags]))
        for attempt in mode_order:
            try:
                run = wandb.init(
                    project=tracking.project,
                    entity=tracking.entity,
                    dir=str(self.run_dir),
                    id=run_id,
                    resume="allow",
                    mode=attempt,
                    config=dict(self._config),
                    group=self._group,
                    name=self._name,
                    tags=all_tags,
                    settings=_settings(wandb, attempt),
                )
                if run is None or getattr(run, "disabled", False):
                    raise RuntimeError("wandb.init returned a disabled run (login timed out?)")
            except Exception as e:
                failures.append(f"{attempt} wandb.init failed ({type(e).__name__}: {_first_line(e)})")
                if attempt == "online":
                    _reset_wandb_service(wandb)
                continue
            self._run, self.run_id, self.mode_used = run, run_id, attempt
            self._first_step = _next_wandb_step(run)
            break
        else:
            self.mode_used = "local-only"

        if failures:
            now = "continuing without W&B"
            if self._run is not None:
                sync = f"`wandb sync {self.run_dir / 'wandb'}` uploads it later"
                now = f"logging {self.mode_used} (run id {run_id}; {sync})"
            self._warn(f"{'; '.join(failures)}: {now}. Everything is still written to {self.run_dir}.")
        return self

    # -- calls made during training: none of them raises because of W&B

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log scalars at training step `step` (steps below a resumed W&B run's last step are skipped)."""
        if self._run is None or step < self._first_step:
            return
        try:
            self._run.log(dict(metrics), step=step)
        except Exception as e:
            self._fail("log", e)

    def log_images(self, images: Mapping[str, Path], step: int) -> None:
        """Log image files (e.g. figures/*.png) under the given names at `step`."""
        if self._run is None or step < self._first_step:
            return
        try:
            wb = self._wandb
            self._run.log({k: wb.Image(str(p)) for k, p in images.items()}, step=step)  # type: ignore[union-attr]
        except Exception as e:
            self._fail("log_images", e)

    def summary_update(self, values: Mapping[str, Any]) -> None:
        """Set keys of the W&B run summary (final metrics, as in summary.json)."""
        if self._run is None:
            return
        try:
            self._run.summary.update(dict(values))
        except Exception as e:
            self._fail("summary_update", e)

    def finish(self, exit_code: int | None = None) -> None:
        """End the W&B run (exit_code != 0 marks it failed). Safe to call twice."""
        run, self._run = self._run, None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
        except Exception as e:
            self._run = run  # so that _fail reports it, then drop it for good
            self._fail("finish", e)

    def _fail(self, what: str, error: Exception) -> None:
        """A W&B call raised: stop using W&B for this run (one warning), training goes on."""
        self._run = None
        previous, self.mode_used = self.mode_used, "local-only"
        self._warn(
            f"W&B {what} failed in {previous} mode ({type(error).__name__}: {_first_line(error)}); "
            f"W&B logging stops for this run. Everything is still written to {self.run_dir}.",
            stacklevel=4,  # the trainer's line that called log/summary_update/finish
        )

    @staticmethod
    def _warn(message: str, stacklevel: int = 3) -> None:
        warnings.warn(message, TrackingWarning, stacklevel=stacklevel)


def _reset_wandb_service(wandb: ModuleType) -> None:
    """Shut down this process's W&B service after a failed online init.

    The failed run stays registered in the service (wandb 0.31), and an offline init with the same
    id is then refused ("run ID ... is in use"); a fresh service accepts it. This also ends any
    other W&B run of this process, which a vaebench training process does not have.
    """
    try:
        wandb.teardown()
    except Exception:
        pass


def _default_base_url(wandb: ModuleType) -> str:
    """The W&B server the installed wandb talks to by default (the cloud API)."""
    try:
        return str(wandb.Settings().base_url)
    except Exception:
        return f"https://{WANDB_CLOUD_HOSTS[-1]}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"


def _next_wandb_step(run: Any) -> int:
    """The step a resumed W&B run expects next (0 for a new or offline run; 0 if W&B cannot say)."""
    try:
        return int(run.step)
    except Exception:
        return 0
