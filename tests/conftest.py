"""Fixtures for every test: nothing may write to the real home folder or pick up a real W&B login."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def single_threaded_torch() -> Iterator[None]:
    """One intra-op thread for torch here and in subprocesses (OMP_NUM_THREADS).

    Test models are tiny and gain nothing from threads, while OpenMP threads spin-waiting for a core
    that another process holds made a 12-step run 30-100x slower on a busy 2-core machine.
    Results stay deterministic either way; this only keeps the suite's time predictable.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """HOME and W&B's folders point into temp folders; no W&B key, mode or server is inherited.

    Session-scoped so that it is in place before module-scoped fixtures train anything; a test that
    needs an empty home of its own sets HOME again with its `monkeypatch`. The folders are not under
    any test's tmp_path, so tests that list tmp_path see only their own files. W&B reads these
    variables when its service starts; a test that starts W&B should tear the service down first
    (see test_tracking.py) so that it starts under the test's environment.
    """
    home = tmp_path_factory.mktemp("home")
    wandb_env = tmp_path_factory.mktemp("wandb_env")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
            mp.setenv(var, str(wandb_env / var.lower()))
        mp.setenv("NETRC", str(home / ".netrc"))
        for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE"):
            mp.delenv(var, raising=False)
        yield


@pytest.fixture(autouse=True)
def no_weight_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the network: a VGG16 download that a test did not stub itself fails at once."""

    def refuse(url: str, *args: object, **kwargs: object) -> None:
        raise OSError(f"tests do not download ({url}); stub torch.hub.download_url_to_file")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture(autouse=True)
def narrow_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs as in a 40-column CI log: output that is not a terminal is never wrapped
    (vaebench.core.console), so no test may depend on the console's width or on its tmp_path's length."""
    monkeypatch.setenv("COLUMNS", "40")
