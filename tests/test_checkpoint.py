"""Checkpoints: exact roundtrip, atomic replacement, clear errors for bad files, exact RNG resume."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

import vaebench.runs.checkpoint as checkpoint
from vaebench.core.errors import UserError
from vaebench.runs.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state


def _state(seed: int) -> dict:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {
        "step": 100 + seed,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "spec": {"model": {"latent_dim": 8, "channels": [16, 32]}, "data": {"root": "data"}},
        "best_val": float("inf"),
        "rng": rng_state(),
    }


def test_save_load_roundtrip_is_exact(tmp_path: Path) -> None:
    state = _state(0)
    save_checkpoint(tmp_path / "checkpoints" / "last.pt", state)
    loaded = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert loaded["step"] == 100 and loaded["spec"] == state["spec"] and loaded["best_val"] == float("inf")
    for k, v in state["model"].items():
        assert torch.equal(loaded["model"][k], v)
    assert torch.equal(loaded["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]


def test_crash_while_saving_keeps_previous_checkpoint_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(0))

    def dying_save(obj: object, f) -> None:  # writes part of a checkpoint, then the process "dies"
        f.write(b"PK\x03\x04 half a zip archive")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", dying_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, _state(1))
    assert load_checkpoint(path)["step"] == 100  # the old one, intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_missing_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no checkpoint at .*last\.pt"):
        load_checkpoint(tmp_path / "last.pt")


def test_truncated_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy cut short, or a non-atomic writer killed
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_non_plain_values_are_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"spec\.data\.root .*Path.*str\(path\)"):
        save_checkpoint(tmp_path / "x.pt", {"spec": {"data": {"root": Path("data")}}})
    assert not (tmp_path / "x.pt").exists()


def test_restored_rng_state_repeats_the_next_draws(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    torch.rand(5)  # advance every generator away from its seed
    random.random()
    np.random.randn()  # numpy now holds a cached second gaussian, which must be restored too
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = (torch.rand(4), random.random(), np.random.rand(3), np.random.randn(), torch.randn(2))

    torch.manual_seed(99)  # a new process would start anywhere
    random.seed(99)
    np.random.seed(99)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    got = (torch.rand(4), random.random(), np.random.rand(3), np.random.randn(), torch.randn(2))

    assert torch.equal(got[0], expected[0]) and torch.equal(got[4], expected[4])
    assert got[1] == expected[1]
    assert np.array_equal(got[2], expected[2]) and got[3] == expected[3]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_restored_cuda_rng_state_repeats_the_next_draws(tmp_path: Path) -> None:
    torch.cuda.manual_seed_all(5)
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = torch.rand(8, device="cuda")
    torch.cuda.manual_seed_all(6)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt", map_location="cuda")["rng"])
    assert torch.equal(torch.rand(8, device="cuda"), expected)
