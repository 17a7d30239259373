"""Pretrained weights are trustworthy offline: downloaded whole and hash-checked, or not at all.

Downloads go to a real HTTP server on 127.0.0.1 (`server`) serving each registered test file three ways:
whole (/good/), cut short with a Content-Length that promises the whole (/truncated/), and the right
length of the wrong bytes (/corrupt/). Test entries pin their file's own hash (`pinned_weights`); every
test has an empty torch hub cache of its own (TORCH_HOME under tmp_path).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from local_http import serve_in_thread
from pinned_weights import pin_weights
from tiny import QUICKSTART, TINY, set_args, tiny_variant
from vaebench.cli import app
from vaebench.config.spec import EvalSpec
from vaebench.core.errors import UserError
from vaebench.core.weights import WEIGHTS, WeightsFile, fetch_weights, verified_weights, weights_status
from vaebench.evaluation.quality import check_required_weights
from vaebench.launch.runner import plan_runs, preflight

REAL_DOWNLOAD = torch.hub.download_url_to_file  # conftest refuses downloads; these go to 127.0.0.1 only
GOOD = hashlib.sha256(b"weights").digest() * 4096  # 128 KiB: several of torch.hub's 8 KiB reads
OTHER = hashlib.sha256(b"other weights").digest() * 1024
runner = CliRunner()


class WeightsServer:
    """An HTTP server in a thread: GET /<how>/<file name> serves files[file name] as `how` says."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):  # HTTP/1.0: the connection closes after each response
            def do_GET(self) -> None:
                server.requests.append(self.path)
                how, _, name = self.path.strip("/").partition("/")
                data = server.files.get(name)
                if data is None or how not in ("good", "truncated", "corrupt"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))  # the whole file's, whatever is sent
                self.end_headers()
                if how == "truncated":
                    data = data[: len(data) // 3]  # then the connection closes
                elif how == "corrupt":
                    data = data[:-1] + bytes([data[-1] ^ 1])
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@pytest.fixture(scope="module")
def server() -> Iterator[WeightsServer]:
    yield from serve_in_thread(WeightsServer())


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: WeightsServer) -> Path:
    """An empty torch hub cache (its checkpoints folder, not created), real downloads, a fresh server."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", REAL_DOWNLOAD)
    server.files.clear()
    server.requests.clear()
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def serve(server: WeightsServer, name: str, data: bytes, monkeypatch: pytest.MonkeyPatch) -> WeightsFile:
    """Register weights `name` pinning `data`'s hash and serve `data` under its file name."""
    entry = pin_weights(name, data, monkeypatch)
    server.files[entry.filename] = data
    return entry


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- downloads


def test_a_good_download_lands_in_the_hub_cache_hash_checked_and_is_not_downloaded_again(
    hub: Path, server: WeightsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = serve(server, "tiny", GOOD, monkeypatch)
    path = fetch_weights("tiny", mirror=f"{server.url}/good/", progress=False)
    assert path == hub / entry.filename and path.read_bytes() == GOOD
    assert sha256(path).startswith(entry.hash_prefix)
    assert sorted(p.name for p in hub.iterdir()) == [entry.filename]  # no temp file beside it
    assert server.requests == [f"/good/{entry.filename}"]
    assert fetch_weights("tiny", mirror=f"{server.url}/good") == path
    assert len(server.requests) == 1  # the file with its pinned hash is kept: nothing downloaded
    assert verified_weights("tiny") == path


@pytest.mark.parametrize("how", ["truncated", "corrupt"])
def test_a_truncated_or_corrupt_download_is_an_error_naming_the_file_and_leaves_nothing(
    hub: Path, server: WeightsServer, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    entry = serve(server, "tiny", GOOD, monkeypatch)
    with pytest.raises(UserError) as error:
        fetch_weights("tiny", mirror=f"{server.url}/{how}", progress=False)
    message = str(error.value)
    assert server.requests == [f"/{how}/{entry.filename}"]  # it was downloaded, then refused
    assert f"nothing was written to {hub / entry.filename}" in message
    assert f"pins SHA-256 {entry.hash_prefix}" in message and "`vaebench weights fetch tiny`" in message
    assert list(hub.iterdir()) == []  # no partial or temporary file
    assert weights_status("tiny").state == "missing"


def test_a_wrong_file_under_the_pinned_name_is_refused_with_advice_and_fetch_replaces_it(
    hub: Path, server: WeightsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = serve(server, "tiny", GOOD, monkeypatch)
    hub.mkdir(parents=True)
    (hub / entry.filename).write_bytes(GOOD[:-1])  # one byte short: another file under its name
    with pytest.raises(UserError) as error:
        verified_weights("tiny", purpose="eval.metrics = [fid]")
    message = str(error.value)
    assert message.startswith(f"eval.metrics = [fid] needs the tiny weights, file {entry.filename}")
    assert f"{hub / entry.filename} is not that file" in message and f"pins {entry.hash_prefix}" in message
    assert message.endswith("Delete it and run `vaebench weights fetch tiny`.")
    assert weights_status("tiny").state == "wrong hash"
    fetch_weights("tiny", mirror=f"{server.url}/good", progress=False)
    assert verified_weights("tiny").read_bytes() == GOOD


def test_a_spec_path_is_checked_against_the_same_pin_and_the_hub_cache_is_not_consulted(
    hub: Path, server: WeightsServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    entry = serve(server, "inception", GOOD, monkeypatch)
    fetch_weights("inception", mirror=f"{server.url}/good", progress=False)  # a good copy in the cache
    spec_file = tmp_path / "elsewhere" / "inception.pth"

    def check(path: Path) -> None:
        check_required_weights(EvalSpec(metrics=["fid", "kid"], quality={"inception_path": str(path)}))

    with pytest.raises(UserError) as error:
        check(spec_file)
    message = str(error.value)
    assert message.startswith(
        f"eval.metrics = [fid, kid] with eval.quality.inception_path = {spec_file} needs"
    )
    assert f"looked for at {spec_file} and is not there" in message and entry.filename in message
    assert "`vaebench weights fetch inception`" in message

    spec_file.parent.mkdir()
    spec_file.write_bytes(OTHER)
    with pytest.raises(UserError, match=f"{spec_file} is not that file: its SHA-256 starts"):
        check(spec_file)
    spec_file.write_bytes(GOOD)
    check(spec_file)  # the same bytes under any name pass
    assert verified_weights("inception", spec_file) == spec_file


def test_the_quality_metrics_need_the_inception_and_vgg16_weights_only_when_pretrained() -> None:
    from vaebench.evaluation.quality import required_weights

    spec = EvalSpec(metrics=["ssim", "lpips", "fid", "precision_recall"])
    assert required_weights(spec) == [
        ("vgg16", None, "eval.metrics = [lpips, precision_recall]"),
        ("inception", None, "eval.metrics = [fid]"),
    ]
    random = EvalSpec(metrics=spec.metrics, quality={"weights": "random"})
    assert required_weights(random) == []
    assert required_weights(EvalSpec(metrics=["ssim"])) == []


def test_every_missing_quality_weights_file_is_named_in_one_message_with_one_fetch_command(hub: Path) -> None:
    from vaebench.evaluation.quality import check_required_weights

    with pytest.raises(UserError) as error:
        check_required_weights(EvalSpec(metrics=["fid", "lpips"]))
    message = str(error.value)
    assert WEIGHTS["inception"].filename in message  # the first file, in full
    assert "The vgg16 weights are missing or wrong too" in message
    assert "`vaebench weights fetch inception vgg16`" in message
    assert "\n" not in message  # one paragraph


# ----------------------------------------------------------------------------- the CLI


def lines(output: str) -> list[str]:
    return output.splitlines()


def test_cli_fetch_downloads_every_registered_file_and_says_where_each_is(
    hub: Path, server: WeightsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    vgg, inception = serve(server, "vgg16", OTHER, monkeypatch), serve(server, "inception", GOOD, monkeypatch)
    assert list(WEIGHTS) == ["vgg16", "inception"]
    result = runner.invoke(app, ["weights", "fetch", "--mirror", f"{server.url}/good"])
    assert result.exit_code == 0, result.output
    assert f"vgg16: downloading {server.url}/good/{vgg.filename}" in lines(result.output)
    assert f"vgg16: downloaded, SHA-256 verified: {hub / vgg.filename}" in lines(result.output)
    assert f"inception: downloaded, SHA-256 verified: {hub / inception.filename}" in lines(result.output)
    assert (hub / vgg.filename).read_bytes() == OTHER and (hub / inception.filename).read_bytes() == GOOD

    again = runner.invoke(app, ["weights", "fetch", "inception", "--mirror", f"{server.url}/good"])
    assert again.exit_code == 0, again.output
    assert lines(again.output) == [f"inception: already there, SHA-256 verified: {hub / inception.filename}"]
    assert len(server.requests) == 2


def test_cli_fetch_of_a_bad_download_exits_1_with_one_paragraph_and_still_fetches_the_others(
    hub: Path, server: WeightsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad, good = serve(server, "vgg16", OTHER, monkeypatch), serve(server, "inception", GOOD, monkeypatch)
    server.files.pop(bad.filename)  # vgg16: 404
    result = runner.invoke(app, ["weights", "fetch", "vgg16", "inception", "--mirror", f"{server.url}/good"])
    assert result.exit_code == 1
    error = [line for line in lines(result.output) if line.startswith("error:")]
    assert len(error) == 1 and "HTTP Error 404" in error[0] and bad.filename in error[0]
    assert "`vaebench weights fetch vgg16`" in error[0] and "Traceback" not in result.output
    assert sorted(p.name for p in hub.iterdir()) == [good.filename]

    truncated = runner.invoke(app, ["weights", "fetch", "inception", "--mirror", f"{server.url}/truncated"])
    assert truncated.exit_code == 0  # inception is already there: nothing to download
    server.files[bad.filename] = OTHER
    corrupt = runner.invoke(app, ["weights", "fetch", "vgg16", "--mirror", f"{server.url}/corrupt"])
    assert corrupt.exit_code == 1 and f"the bytes received are not {bad.filename}" in corrupt.output
    assert sorted(p.name for p in hub.iterdir()) == [good.filename]


def test_cli_fetch_of_an_unregistered_name_names_the_registered_ones(hub: Path) -> None:
    result = runner.invoke(app, ["weights", "fetch", "vgg19"])
    assert result.exit_code == 1
    assert "error: Unknown weights vgg19: the registered ones are vgg16, inception." in lines(result.output)


def test_cli_list_shows_each_file_what_uses_it_where_it_was_looked_for_and_its_state(
    hub: Path, server: WeightsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    vgg, inception = serve(server, "vgg16", OTHER, monkeypatch), serve(server, "inception", GOOD, monkeypatch)
    tiny = serve(server, "tiny", GOOD[:999], monkeypatch)
    fetch_weights("vgg16", mirror=f"{server.url}/good", progress=False)
    (hub / tiny.filename).write_bytes(OTHER)  # inception: missing; tiny: wrong hash
    result = runner.invoke(app, ["weights", "list"])
    assert result.exit_code == 0, result.output
    out = lines(result.output)  # whole lines whatever COLUMNS (40 here, conftest)
    assert f"vgg16: verified ({hub / vgg.filename})" in out
    assert f"  file: {vgg.filename} ({vgg.url})" in out
    assert f"  used by: {vgg.description}" in out
    assert "inception: missing: run `vaebench weights fetch inception`" in out
    assert f"  looked for at: {hub / inception.filename}" in out
    digest = sha256(hub / tiny.filename)[:12]
    assert (
        f"tiny: wrong hash: {hub / tiny.filename} has SHA-256 {digest}..., the name pins {tiny.hash_prefix}; "
        "delete it and run `vaebench weights fetch tiny`"
    ) in out
    assert server.requests == [f"/good/{vgg.filename}"]  # listing downloads nothing


# ----------------------------------------------------------------------------- before a run or an evaluation


def test_a_run_asking_for_fid_without_the_weights_stops_before_training(hub: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    overrides = {**TINY, "eval.at_end": True, "eval.metrics": ["fid"]}
    result = runner.invoke(
        app,
        ["run", str(QUICKSTART), *set_args(overrides), "--variant", "isotropic", "--seed", "0",
         "--runs-dir", str(runs), "--device", "cpu", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    error = next(line for line in lines(result.output) if line.startswith("error:"))
    assert error.startswith("error: eval.metrics = [fid] needs the inception weights")
    assert f"looked for at {hub / WEIGHTS['inception'].filename} and" in error
    assert "`vaebench weights fetch inception`" in error
    assert not (runs / "quickstart").exists()  # no run folder: no checkpoint, no training step


def test_preflight_checks_the_quality_weights_only_when_pretrained_and_evaluated_at_the_end(
    hub: Path, tmp_path: Path
) -> None:
    def plan(**overrides: object) -> list:
        return plan_runs([tiny_variant(eval__metrics=["lpips"], **overrides)], tmp_path / "runs")

    with pytest.raises(UserError, match="`vaebench weights fetch vgg16`"):
        preflight(plan(eval__at_end=True))
    preflight(plan(eval__at_end=True, eval__quality__weights="random"))  # no weights needed
    preflight(plan(eval__at_end=False))  # checked by `vaebench evaluate` instead
