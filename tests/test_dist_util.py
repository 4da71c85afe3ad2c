"""Launcher environment handling (no process group is started here)."""

import os

import pytest

from diffsr.utils import dist_util


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [
        ("node7", "node7"),
        ("gpu[03-05,07]", "gpu03"),
        ("gpu[12],cpu1", "gpu12"),
        ("a-b[1-2]", "a-b1"),
    ],
)
def test_first_slurm_host_without_scontrol(monkeypatch, nodelist, host):
    monkeypatch.setattr(dist_util.shutil, "which", lambda _name: None)
    assert dist_util.first_slurm_host(nodelist) == host


def test_slurm_variables_become_torch_variables(monkeypatch):
    monkeypatch.setattr(dist_util.shutil, "which", lambda _name: None)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NODELIST", "gpu[04-05]")
    dist_util._env_from_slurm(29777)
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == (
        "3",
        "8",
        "1",
    )
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("gpu04", "29777")


def test_missing_launcher_variables_are_named(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match="RANK is not set"):
        dist_util.init_dist("pytorch")


def test_nccl_without_cuda_is_refused_with_the_option_named(monkeypatch):
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_PORT", "29533")
    monkeypatch.setattr(dist_util.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"dist_params\.backend is nccl"):
        dist_util.init_dist("pytorch", backend="nccl")
