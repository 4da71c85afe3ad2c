"""logger.wandb: losses and metrics go to Weights & Biases (offline here, no network)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import wandb  # in the test extra (setup.py); the optional diffsr[wandb] for users

from diffsr.train import main as train_main
from diffsr.utils.logger import with_wandb
from diffsr.utils.options import OptionError, validate_options
from tests.helpers.fixtures import train_options, write_options


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", "/tmp/diffsr_wandb_config")


def test_offline_run_writes_losses_and_metrics(tmp_path: Path, offline):
    opt = train_options(tmp_path, total_iter=2)
    opt["val"]["val_freq"] = 2
    opt["logger"]["wandb"] = {"project": "diffsr-test", "resume_id": "h6run0001"}
    path = write_options(tmp_path / "opt.yml", opt)
    assert train_main(["-opt", str(path)]) == 0
    wandb.teardown()  # waits for the wandb service to flush (a process exit does the same)
    root = Path(opt["path"]["experiments_root"])
    (run_dir,) = (root / "wandb").glob("offline-run-*")
    assert run_dir.name.endswith("-h6run0001")  # resume_id is the run id
    (records,) = run_dir.glob("run-*.wandb")
    data = records.read_bytes()
    for key in (
        b"losses/l_pixel",
        b"losses/l_total",
        b"lr",
        b"metrics/tiny_val/psnr",
        b"diffsr-test",
    ):
        assert key in data, key


def test_no_project_no_run(tmp_path: Path, offline):
    opt = train_options(tmp_path, total_iter=1)
    opt["logger"]["wandb"] = {"project": None, "resume_id": None}
    path = write_options(tmp_path / "opt.yml", opt)
    assert train_main(["-opt", str(path)]) == 0
    assert not (Path(opt["path"]["experiments_root"]) / "wandb").exists()
    checked = validate_options(opt, "x.yml")
    sentinel = object()
    assert with_wandb(sentinel, checked, tmp_path) is sentinel


def test_project_without_wandb_installed_stops_at_start(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # importlib finds no wandb
    opt = train_options(tmp_path)
    opt["logger"]["wandb"] = {"project": "diffsr-test"}
    with pytest.raises(OptionError, match=r"logger\.wandb\.project is set but the wandb package"):
        validate_options(opt, "x.yml")
    opt["logger"]["wandb"] = {"project": None}
    validate_options(opt, "x.yml")  # null project: wandb not needed
