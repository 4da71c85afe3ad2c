"""load_network / load_training_state: containers, safe unpickling, errors, the one-line log.

The network used is AOD-Net (1,761 parameters), whose released keys are diffsr's own, and a
two-layer network defined here that no released layout matches.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import types
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from diffsr.archs.aodnet_arch import AODNet
from diffsr.models.checkpoint import load_network, load_training_state, save_network
from diffsr.models.official_loading import CheckpointMismatchError
from diffsr.models.safe_load import UnsafeCheckpointError, read_checkpoint
from diffsr.utils.misc import get_rng_state

FORMATS = {"zip": True, "legacy": False}  # torch.save(_use_new_zipfile_serialization=...)


def aod_state(seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return OrderedDict((k, torch.randn_like(v)) for k, v in AODNet().state_dict().items())


def assert_loaded(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = net.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


CONTAINERS = {
    "bare": lambda s: dict(s),
    "params": lambda s: {"params": s},
    "module-prefixes": lambda s: {f"module.{k}": v for k, v in s.items()},
    "state_dict": lambda s: {"epoch": 3, "state_dict": s, "optimizer": {"state": {}}},
    "model+numpy": lambda s: {
        "step": 5,
        "max_psnr": np.float64(30.5),
        "psnrs": [np.float64(29.0), np.float32(30.5)],
        "losses": [0.25],
        "model": {f"module.{k}": v for k, v in s.items()},
    },
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("container", CONTAINERS)
def test_each_container_loads_in_both_file_formats(container, fmt, tmp_path):
    state = aod_state()
    path = tmp_path / "file.pth"
    torch.save(CONTAINERS[container](state), path, _use_new_zipfile_serialization=FORMATS[fmt])
    net = AODNet()
    load_network(net, path)
    assert_loaded(net, state)


def test_numpy_metrics_come_back_as_numbers(tmp_path):
    path = tmp_path / "ffa_like.pk"
    torch.save(CONTAINERS["model+numpy"](aod_state()), path)
    content = read_checkpoint(path)
    assert content["max_psnr"] == 30.5 and content["step"] == 5


def test_diffsr_file_with_params_and_params_ema(tmp_path, caplog):
    net, ema = AODNet(), AODNet()
    ema.load_state_dict(aod_state(1))
    path = tmp_path / "net_g_10.pth"
    save_network(path, {"params": net, "params_ema": ema})
    target = AODNet()
    with caplog.at_level(logging.INFO, logger="diffsr"):
        load_network(target, path, param_key="params_ema")
    assert_loaded(target, ema.state_dict())
    assert not any("official" in r.getMessage() for r in caplog.records)
    load_network(target, path, param_key="params")
    assert_loaded(target, net.state_dict())


def test_basicsr_file_without_params_ema_falls_back_with_a_warning(tmp_path, caplog):
    state = aod_state()
    path = tmp_path / "basicsr.pth"
    torch.save({"params": state}, path)
    target = AODNet()
    with caplog.at_level(logging.WARNING, logger="diffsr"):
        load_network(target, path, param_key="params_ema")
    assert_loaded(target, state)
    assert any("has no 'params_ema'" in r.getMessage() for r in caplog.records)


def test_authors_container_logs_one_conversion_line(tmp_path, caplog):
    path = tmp_path / "AOD_9.pkl"
    torch.save({"epoch": 9, "state_dict": aod_state()}, path, _use_new_zipfile_serialization=False)
    with caplog.at_level(logging.INFO, logger="diffsr"):
        load_network(AODNet(), path)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("converted from the official AOD-Net layout" in line for line in lines) == 1


# ------------------------------------------------------------- whole pickled modules
AUTHORS_SOURCE = '''
import torch.nn as nn

CALLS = []


class AODnet(nn.Module):
    """Stands for an authors' class: it must never be imported or run when loading."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.conv3 = nn.Conv2d(6, 3, 5, padding=2)
        self.conv4 = nn.Conv2d(6, 3, 7, padding=3)
        self.conv5 = nn.Conv2d(12, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.register_buffer("scratch", nn.Parameter(nn.init.zeros_(self.conv1.bias.new_empty(2))).data, persistent=False)

    def __setstate__(self, state):
        CALLS.append("__setstate__")
        super().__setstate__(state)
'''


@pytest.fixture
def pickled_module_file(tmp_path, request):
    """A ``torch.save(model)`` file whose class exists only while saving."""
    legacy, wrap = request.param
    module = types.ModuleType("authors_model_only_at_save_time")
    sys.modules[module.__name__] = module
    try:
        exec(AUTHORS_SOURCE, module.__dict__)
        model = module.AODnet()
        state = model.state_dict()
        path = tmp_path / "model.pth"
        with warnings.catch_warnings():  # the legacy writer cannot find this class's source
            warnings.simplefilter("ignore", UserWarning)
            torch.save(
                nn.DataParallel(model) if wrap else model,
                path,
                _use_new_zipfile_serialization=not legacy,
            )
    finally:
        del sys.modules[module.__name__]
    return path, state, module


@pytest.mark.parametrize(
    "pickled_module_file",
    [(False, False), (False, True), (True, False), (True, True)],
    ids=["zip", "zip-dataparallel", "legacy", "legacy-dataparallel"],
    indirect=True,
)
def test_whole_pickled_module_loads_without_its_class(pickled_module_file):
    path, state, module = pickled_module_file
    net = AODNet()
    load_network(net, path)
    assert_loaded(net, state)  # the non-persistent buffer is not part of it
    assert module.CALLS == []
    assert module.__name__ not in sys.modules


def evil_file(path: Path, legacy: bool, target: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.remove, (str(target),))

    torch.save(
        {"params": {"w": torch.zeros(1)}, "x": Evil()},
        path,
        _use_new_zipfile_serialization=not legacy,
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_file_that_would_run_code_is_refused_and_nothing_runs(fmt, tmp_path):
    marker = tmp_path / "still_here.txt"
    marker.write_text("x")
    path = tmp_path / "evil.pth"
    evil_file(path, legacy=not FORMATS[fmt], target=marker)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_network(AODNet(), path)
    assert str(path) in str(err.value) and f"{os.remove.__module__}.remove" in str(err.value)
    assert marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_file_with_another_class_is_refused_naming_it(fmt, tmp_path):
    import datetime

    path = tmp_path / "odd.pth"
    content = {"state_dict": aod_state(), "when": datetime.timedelta(days=1)}
    torch.save(content, path, _use_new_zipfile_serialization=FORMATS[fmt])
    with pytest.raises(UnsafeCheckpointError, match=r"datetime\.timedelta"):
        load_network(AODNet(), path)


# --------------------------------------------------------------------------- errors
class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 8, 3)
        self.second = nn.Conv2d(8, 3, 3)


def test_file_of_no_known_layout_names_keys_and_points_to_the_docs(tmp_path):
    path = tmp_path / "unknown.pth"
    torch.save(
        {"params": {"first.weight": torch.zeros(8, 3, 3, 3), "other.bias": torch.zeros(3)}}, path
    )
    with pytest.raises(CheckpointMismatchError) as err:
        load_network(TwoLayers(), path)
    message = str(err.value)
    assert str(path) in message and "TwoLayers" in message
    assert "second.weight" in message and "other.bias" in message
    assert "docs/pretrained.md" in message


def test_released_file_of_another_network_names_both(tmp_path):
    path = tmp_path / "AOD_1.pkl"
    torch.save({"epoch": 1, "state_dict": aod_state()}, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_network(TwoLayers(), path)
    message = str(err.value)
    assert str(path) in message and "official AOD-Net checkpoint" in message
    assert "network_g builds TwoLayers" in message and "{type: AODNet}" in message


def test_non_strict_load_of_a_partial_file_still_works(tmp_path):
    net = TwoLayers()
    path = tmp_path / "partial.pth"
    torch.save({"params": {"first.weight": torch.ones(8, 3, 3, 3)}}, path)
    load_network(net, path, strict=False)
    assert torch.equal(net.first.weight, torch.ones(8, 3, 3, 3))
    with pytest.raises(CheckpointMismatchError):
        load_network(net, path, strict=True)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.pth"):
        load_network(AODNet(), tmp_path / "nothing.pth")


# ------------------------------------------------------------------ training states
def test_training_state_loads_with_weights_only(tmp_path):
    net = AODNet()
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.rand(1, 3, 8, 8)).sum().backward()
    optimizer.step()
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    generator = torch.Generator().manual_seed(3)
    state = {
        "epoch": 1,
        "iter": 10,
        "optimizers": [optimizer.state_dict()],
        "schedulers": [{"last_epoch": 10, "base_lrs": [1e-4]}],
        "best": {"val": {"psnr": 30.5, "iter": 10.0}},
        "rng": [{**get_rng_state(), "losses": {"prior": generator.get_state()}}],
        "scaler": scaler.state_dict(),
    }
    path = tmp_path / "10.state"
    torch.save(state, path)
    loaded = load_training_state(path)
    assert loaded["best"] == state["best"] and loaded["iter"] == 10
    assert torch.equal(loaded["rng"][0]["losses"]["prior"], generator.get_state())
    assert np.array_equal(loaded["rng"][0]["numpy"][1], state["rng"][0]["numpy"][1])
    assert loaded["rng"][0]["python"] == state["rng"][0]["python"]
    assert loaded["scaler"] == scaler.state_dict()
    assert torch.equal(
        loaded["optimizers"][0]["state"][0]["exp_avg"],
        state["optimizers"][0]["state"][0]["exp_avg"],
    )


def test_training_state_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "still_here.txt"
    marker.write_text("x")
    path = tmp_path / "5.state"
    evil_file(path, legacy=False, target=marker)
    with pytest.raises(UnsafeCheckpointError, match=re.escape(str(path))):
        load_training_state(path)
    assert marker.exists()
