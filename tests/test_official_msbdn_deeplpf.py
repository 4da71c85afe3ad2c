"""Released checkpoints of MSBDN-DFF and DeepLPF: layouts, the released function, containers.

The fixtures ``tests/data/official_layouts/{msbdn,deeplpf}.tsv`` hold the keys and shapes of
the authors' networks (``Net()`` of BookerDeWitt/MSBDN-DFF ``networks/MSBDN-DFF-v1-1.py``,
``DeepLPFNet()`` of sjmoran/DeepLPF), dumped from their own code. ``msbdn_deeplpf_reference.json``
holds statistics of the outputs of the authors' own code (run on the CPU in float64) for the
weights that :func:`release_weights` generates and the inputs named there: diffsr, given the
converted weights, must reproduce them to 1e-9 relative error. The authors' containers are
written as their save code writes them: MSBDN-DFF a whole pickled module (``torch.save(model)``)
whose classes exist only while the test saves it, DeepLPF ``torch.save(net.state_dict())``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from diffsr.archs import build_network
from diffsr.archs.arch_util import count_parameters
from diffsr.archs.deeplpf_official import convert_deeplpf, matches_deeplpf
from diffsr.archs.msbdn_official import convert_msbdn, matches_msbdn
from diffsr.archs.official import find_layouts
from diffsr.models.checkpoint import load_network, save_network
from diffsr.models.official_loading import CheckpointMismatchError
from tests.helpers.official_layouts import LAYOUTS, read_layout

REFERENCE = json.loads((LAYOUTS / "msbdn_deeplpf_reference.json").read_text())
# baselines.md: the released models' parameter counts
RELEASED_PARAMS = {"MSBDN-DFF": 31_353_061, "DeepLPF": 1_769_347}
# MSBDN-DFF with one bottleneck block (the authors' Net(res_blocks=1)) keeps the tests small.
SMALL_MSBDN = {"type": "MSBDN-DFF", "res_blocks": 1}


def msbdn_layout(res_blocks: int = 18) -> dict[str, tuple[int, ...]]:
    """The release's keys and shapes for ``Net(res_blocks)``."""
    return {
        key: shape
        for key, shape in read_layout("msbdn.tsv").items()
        if not key.startswith("dehaze.res") or int(key.split(".")[1][3:]) < res_blocks
    }


def release_weights(
    shapes: dict[str, tuple[int, ...]], seed: int = 0, dtype: torch.dtype = torch.float64
) -> dict[str, torch.Tensor]:
    """The random weights of the reference run: N(0, 1 / fan_in) for convs and linears,
    0.25 + N(0, 0.05^2) for PReLU slopes, N(0, 0.02^2) for biases; drawn in layout order."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if len(shape) >= 2:
            value = torch.randn(shape, generator=gen, dtype=torch.float64)
            value = value / math.sqrt(math.prod(shape[1:]))
        elif key.endswith(("relu.weight", "act.weight")):
            value = 0.25 + 0.05 * torch.randn(shape, generator=gen, dtype=torch.float64)
        else:
            value = 0.02 * torch.randn(shape, generator=gen, dtype=torch.float64)
        state[key] = value.to(dtype)
    return state


def released_network(network_g: dict, state: dict[str, torch.Tensor]) -> nn.Module:
    """``network_g``'s network holding exactly ``state`` (strict; no initialisation run)."""
    with torch.device("meta"):
        net = build_network(network_g)
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval()


def meta_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}


def assert_matches_reference(output: torch.Tensor, reference: dict) -> None:
    """``output`` (one sample) against the statistics of the authors' output."""
    y = output.flatten()
    weights = torch.cos(torch.arange(y.numel(), dtype=torch.float64))
    samples = torch.linspace(0, y.numel() - 1, 7).long()
    actual = {
        "sum": y.sum().item(),
        "sum_sq": (y * y).sum().item(),
        "cos_weighted_sum": (weights * y).sum().item(),
    }
    for name, value in actual.items():
        assert value == pytest.approx(reference[name], rel=1e-9), name
    torch.testing.assert_close(
        y[samples], torch.tensor(reference["samples"], dtype=y.dtype), rtol=1e-9, atol=1e-12
    )


# ------------------------------------------------------------------ layouts
def test_fixtures_hold_the_released_parameter_counts():
    for fixture, name in (("msbdn.tsv", "MSBDN-DFF"), ("deeplpf.tsv", "DeepLPF")):
        total = sum(math.prod(shape) for shape in read_layout(fixture).values())
        assert total == RELEASED_PARAMS[name]
    with torch.device("meta"):
        msbdn, deeplpf = build_network({"type": "MSBDN"}), build_network({"type": "DeepLPF"})
    assert count_parameters(msbdn) == RELEASED_PARAMS["MSBDN-DFF"]
    # diffsr's DeepLPF has no copy of the 53,568 parameters the release never uses
    assert count_parameters(deeplpf) == RELEASED_PARAMS["DeepLPF"] - 53_568


@pytest.mark.parametrize(
    "shapes, name",
    [
        (msbdn_layout(), "MSBDN-DFF"),
        (msbdn_layout(1), "MSBDN-DFF"),
        (read_layout("deeplpf.tsv"), "DeepLPF"),
    ],
    ids=["msbdn", "msbdn-res_blocks-1", "deeplpf"],
)
def test_fixture_matches_its_layout_only(shapes, name):
    assert [layout.name for layout in find_layouts(meta_state(shapes))] == [name]


def test_no_other_networks_fixture_matches_these_layouts():
    others = sorted(set(LAYOUTS.glob("*.tsv")) - {LAYOUTS / "msbdn.tsv", LAYOUTS / "deeplpf.tsv"})
    for path in others:
        state = meta_state(read_layout(path.name))
        assert not matches_msbdn(state) and not matches_deeplpf(state), path.name


@pytest.mark.parametrize(
    "network_g, shapes, convert",
    [
        ({"type": "MSBDN"}, msbdn_layout(), convert_msbdn),
        ({"type": "DeepLPF"}, read_layout("deeplpf.tsv"), convert_deeplpf),
    ],
    ids=["msbdn", "deeplpf"],
)
def test_converted_release_has_exactly_the_keys_and_shapes_of_the_default_network(
    network_g, shapes, convert
):
    with torch.device("meta"):
        net = build_network(network_g)
    converted = convert(meta_state(shapes))
    expected = net.state_dict()
    assert set(converted) == set(expected)
    assert all(converted[key].shape == expected[key].shape for key in expected)


def test_unknown_key_is_refused_by_the_converters():
    # each names the first key of the other network's file
    with pytest.raises(KeyError, match=r"backbonenet\.unet\.conv1\.weight.* not a key"):
        convert_msbdn(meta_state(read_layout("deeplpf.tsv")))
    with pytest.raises(KeyError, match=r"conv_input\.conv2d\.weight.* not a key"):
        convert_deeplpf(meta_state(msbdn_layout(1)))


# ------------------------------------------------------------ the released function
def test_msbdn_computes_the_released_function():
    reference = REFERENCE["MSBDN-DFF"]
    net = released_network(SMALL_MSBDN, convert_msbdn(release_weights(msbdn_layout(1))))
    x = torch.rand((2, 3, 32, 48), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        out = net(x)
    for i in range(2):
        assert_matches_reference(out[i], reference["output"][i])


def test_deeplpf_computes_the_released_function_for_each_sample_of_a_batch():
    # The release filters every sample with sample 0's parameters: the reference is the
    # release run on each sample alone, which diffsr must give for the batch.
    reference = REFERENCE["DeepLPF"]
    weights = convert_deeplpf(release_weights(read_layout("deeplpf.tsv")))
    net = released_network({"type": "DeepLPFNet"}, weights)
    x = torch.rand((2, 3, 35, 50), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        out = net(0.5 * x)
    for i in range(2):
        assert_matches_reference(out[i], reference["output"][i])


# ------------------------------------------------------------ the authors' containers
def _authors_class(module: types.ModuleType, name: str) -> type[nn.Module]:
    cls = type(name, (nn.Module,), {"__module__": module.__name__, "__qualname__": name})
    setattr(module, name, cls)
    return cls


def _msbdn_module_tree(state: dict[str, torch.Tensor], modules: dict[str, types.ModuleType]):
    """An ``nn.Module`` tree with the release's classes and attribute names holding ``state``.

    The classes (``Net``, ``ConvLayer``, ``ResidualBlock``, ``UpsampleConvLayer`` of
    ``networks.MSBDN-DFF-v1-1``; ``Encoder_MDCBlock1``, ``Decoder_MDCBlock1``, ``ConvBlock``,
    ``DeconvBlock`` of ``networks.base_networks``) are empty stand-ins made here.
    """
    net_module, base_module = modules["networks.MSBDN-DFF-v1-1"], modules["networks.base_networks"]
    classes = {
        name: _authors_class(net_module, name)
        for name in ("Net", "ConvLayer", "ResidualBlock", "UpsampleConvLayer")
    }
    classes |= {
        name: _authors_class(base_module, name)
        for name in ("Encoder_MDCBlock1", "Decoder_MDCBlock1", "ConvBlock", "DeconvBlock")
    }

    def module_for(path: list[str]) -> nn.Module:
        name, parent = path[-1], path[:-1]
        if not parent:  # a child of Net
            if name.startswith("fusion"):
                return classes["Decoder_MDCBlock1" if "_" in name else "Encoder_MDCBlock1"]()
            if name.startswith(("dense", "dehaze")):
                return nn.Sequential()
            return classes["UpsampleConvLayer" if name.startswith("convd") else "ConvLayer"]()
        if name in ("up_convs", "down_convs"):
            return nn.ModuleList()
        if parent[-1] in ("up_convs", "down_convs"):
            return classes["DeconvBlock" if parent[-1] == "up_convs" else "ConvBlock"]()
        if parent[0].startswith(("dense", "dehaze")) and len(path) == 2:
            return classes["ResidualBlock"]()
        if name in ("conv1", "conv2"):
            return classes["ConvLayer"]()
        if name in ("relu", "act"):
            return nn.PReLU()
        if name == "deconv" or (name == "conv2d" and path[0].startswith("convd")):
            return nn.ConvTranspose2d(1, 1, 3, stride=2)
        return nn.Conv2d(1, 1, 3)

    root = classes["Net"]()
    for key, value in state.items():
        *path, tensor_name = key.split(".")
        node = root
        for depth in range(len(path)):
            child = node._modules.get(path[depth])
            if child is None:
                child = module_for(path[: depth + 1])
                if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d, nn.PReLU)):
                    child._parameters = {}  # filled from the state below
                node.add_module(path[depth], child)
            node = child
        node._parameters[tensor_name] = nn.Parameter(value.clone())
    return root


def write_msbdn_release(
    state: dict[str, torch.Tensor], path: Path, legacy: bool, data_parallel: bool
) -> None:
    """``torch.save(model)`` of a module tree whose classes exist only while saving."""
    names = ("networks", "networks.base_networks", "networks.MSBDN-DFF-v1-1")
    assert not any(name in sys.modules for name in names)
    modules = {name: types.ModuleType(name) for name in names}
    sys.modules.update(modules)
    try:
        model = _msbdn_module_tree(state, modules)
        with warnings.catch_warnings():  # the legacy writer cannot find these classes' source
            warnings.simplefilter("ignore", UserWarning)
            torch.save(
                nn.DataParallel(model) if data_parallel else model,
                path,
                _use_new_zipfile_serialization=not legacy,
            )
    finally:
        for name in names:
            del sys.modules[name]


@pytest.fixture(scope="module")
def released_files(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    folder = tmp_path_factory.mktemp("released")
    files = {}
    state = release_weights(msbdn_layout(1), seed=3, dtype=torch.float32)
    for legacy, data_parallel in ((False, False), (True, True)):
        path = folder / f"msbdn_legacy{legacy}_dp{data_parallel}.pkl"
        write_msbdn_release(state, path, legacy, data_parallel)
        files[path.stem] = (path, state)
    state = release_weights(read_layout("deeplpf.tsv"), seed=3, dtype=torch.float32)
    path = folder / "deeplpf_epoch_424_model.pt"
    torch.save(state, path)  # DeepLPF's main.py: torch.save(net.state_dict(), path)
    files["deeplpf"] = (path, state)
    return files


CASES = {
    "msbdn_legacyFalse_dpFalse": (SMALL_MSBDN, convert_msbdn, (32, 32)),
    "msbdn_legacyTrue_dpTrue": (SMALL_MSBDN, convert_msbdn, (32, 32)),
    "deeplpf": ({"type": "DeepLPFNet"}, convert_deeplpf, (32, 36)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_released_file_loads_and_computes_as_the_converted_file(
    name, released_files, tmp_path, caplog
):
    path, state = released_files[name]
    network_g, convert, size = CASES[name]
    loaded = build_network(network_g).eval()
    with caplog.at_level(logging.INFO, logger="diffsr"):
        load_network(loaded, path)
    layout = "MSBDN-DFF" if name.startswith("msbdn") else "DeepLPF"
    assert f"converted from the official {layout} layout" in caplog.text
    assert not {"networks", "networks.MSBDN-DFF-v1-1"} & set(sys.modules)  # nothing imported
    converted = released_network(network_g, convert(state))
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(loaded(x), converted(x))
    # round trip: diffsr's file of the converted network loads back to the same weights
    save_network(tmp_path / "diffsr.pth", {"params": loaded})
    again = build_network(network_g)
    load_network(again, tmp_path / "diffsr.pth")
    expected = loaded.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in again.state_dict().items())


@pytest.mark.parametrize(
    "name, network_g, looks_like",
    [
        ("deeplpf", SMALL_MSBDN, "DeepLPF"),
        ("msbdn_legacyFalse_dpFalse", {"type": "DeepLPF"}, "MSBDN-DFF"),
    ],
)
def test_file_of_the_other_network_is_refused_with_both_names(
    name, network_g, looks_like, released_files
):
    path, _ = released_files[name]
    net = build_network(network_g)
    with pytest.raises(CheckpointMismatchError) as error:
        load_network(net, path)
    message = str(error.value)
    assert str(path) in message and looks_like in message and type(net).__name__ in message


def test_msbdn_file_with_another_bottleneck_depth_is_refused(released_files):
    path, _ = released_files["msbdn_legacyFalse_dpFalse"]
    with pytest.raises(CheckpointMismatchError, match="MSBDN-DFF") as error:
        load_network(build_network({"type": "MSBDN-DFF", "res_blocks": 2}), path)
    assert "res_blocks: 1" in str(error.value)  # the depth the file needs, read from the file


# ------------------------------------------------------------ the authors' names
def test_authors_names_build_the_networks():
    with torch.device("meta"):
        for alias in ("MSBDN-DFF", "MSBDN-DFF-v1-1"):
            assert type(build_network({"type": alias})).__name__ == "MSBDN"
        net = build_network({"type": "MSBDN", "res_blocks": 4})
        assert len(net.bottleneck) == 4
        assert type(build_network({"type": "DeepLPFNet"})).__name__ == "DeepLPF"
    with pytest.raises(ValueError, match="res_blocks"):
        build_network({"type": "MSBDN", "res_blocks": 4, "bottleneck_blocks": 5})
