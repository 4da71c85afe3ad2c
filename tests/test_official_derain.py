"""Released checkpoints of RCDNet, EfDeRain and PReNet: layouts, conversion, loading, range.

The fixtures ``tests/data/official_layouts/{rcdnet,efderain,prenet}.tsv`` hold the keys and
shapes of the authors' networks (``Mainnet`` with stage 17, ``KPN`` with kernel_size [3],
``PReNet`` with recurrent_iter 6), dumped from their own code. A synthetic file in that layout
(random weights, written as the authors' save code writes it) must load strictly and compute
exactly what the converted diffsr file computes. That diffsr computes the released function
(to 1e-14 or exactly in float64) was measured against the authors' code, see
docs/archs_derain_lowlight.md.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from diffsr.archs import build_network
from diffsr.archs.official import OFFICIAL_LAYOUTS, find_layouts
from diffsr.archs.rcdnet_official import convert_released_rcdnet
from diffsr.losses import build_loss
from diffsr.models.checkpoint import load_network, save_network
from diffsr.models.official_loading import CheckpointMismatchError
from tests.helpers.official_layouts import LAYOUTS, random_state, read_layout

# network -> (fixture, authors' network_g block, legacy (pre-zip) file as the authors' files)
RELEASES = {
    "RCDNet": ("rcdnet.tsv", {"type": "Mainnet", "stage": 17, "num_M": 32, "num_Z": 32}, True),
    "EfDeRain": ("efderain.tsv", {"type": "KPN", "kernel_size": [3], "upMode": "bilinear"}, False),
    "PReNet": ("prenet.tsv", {"type": "PReNet", "recurrent_iter": 6, "use_GPU": True}, True),
}
NAMES = list(RELEASES)


@pytest.fixture(scope="module")
def released_files(tmp_path_factory) -> dict[str, tuple[Path, OrderedDict]]:
    """A synthetic released file of each network as its authors save it: ``torch.save(sd)``."""
    folder = tmp_path_factory.mktemp("released")
    files = {}
    for name, (fixture, _, legacy) in RELEASES.items():
        state = random_state(read_layout(fixture))
        path = folder / f"{name.lower()}_released.pth"
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
        files[name] = path, state
    return files


def authors_network(name: str) -> torch.nn.Module:
    return build_network(dict(RELEASES[name][1])).eval()


def forward(net: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every output tensor (RCDNet: backgrounds and rain layers; PReNet: all stages)."""
    with torch.no_grad():
        out = net(x)
    if isinstance(out, torch.Tensor):
        return [out]
    return [*out, *getattr(out, "rain_layers", [])]


@pytest.mark.parametrize("name", NAMES)
def test_fixture_matches_its_layout_only(name):
    state = random_state(read_layout(RELEASES[name][0]))
    assert [layout.name for layout in find_layouts(state)] == [name]


def test_every_fixture_matches_exactly_one_layout():
    """All networks' layouts are mutually exclusive on all fixtures, and each has a fixture."""
    fixtures = sorted(LAYOUTS.glob("*.tsv"))
    assert len(fixtures) >= 3
    find_layouts({})  # imports every *_official module
    matched = set()
    for fixture in fixtures:
        state = {key: torch.zeros(shape) for key, shape in read_layout(fixture.name).items()}
        names = [layout.name for layout in OFFICIAL_LAYOUTS if layout.matches(state)]
        assert len(names) == 1, f"{fixture.name} matches {names}"
        matched.update(names)
    assert matched == {layout.name for layout in OFFICIAL_LAYOUTS}


@pytest.mark.parametrize("name", NAMES)
def test_released_file_loads_strictly_and_computes_as_the_converted_file(
    name, released_files, tmp_path, caplog
):
    path, state = released_files[name]
    released = authors_network(name)
    logger = logging.getLogger("diffsr")  # does not propagate to the root logger
    logger.addHandler(caplog.handler)
    try:
        load_network(released, path, strict=True)
    finally:
        logger.removeHandler(caplog.handler)
    assert f"converted from the official {name} layout" in caplog.text
    if name == "RCDNet":
        assert "dropped 191,169 parameters its forward never uses" in caplog.text
    # The converted tensors are the file's tensors, bit for bit (round trip through diffsr).
    (layout,) = find_layouts(state)
    converted = layout.convert(state)
    own = released.state_dict()
    assert set(own) == set(converted)
    assert all(torch.equal(own[k], converted[k]) for k in own)
    # The converted diffsr file loads into diffsr's own name of the network, same output.
    diffsr_file = tmp_path / "converted.pth"
    save_network(diffsr_file, {"params": released})
    ours = build_network({"type": name}).eval()
    load_network(ours, diffsr_file, strict=True)
    x = torch.rand(1, 3, 16, 16)
    for a, b in zip(forward(released, x), forward(ours, x), strict=True):
        assert torch.isfinite(a).all()
        assert torch.equal(a, b)


@pytest.mark.parametrize(("name", "other"), list(itertools.permutations(NAMES, 2)))
def test_file_of_another_network_is_refused_with_its_name(name, other, released_files):
    path, _ = released_files[other]
    with pytest.raises(CheckpointMismatchError) as err:
        load_network(authors_network(name), path, strict=True)
    assert str(path) in str(err.value) and other in str(err.value)


def rcdnet_shapes(num_stages: int) -> dict[str, tuple[int, ...]]:
    """The released RCDNet layout with ``stage = num_stages`` (from the 17-stage fixture)."""
    full = read_layout("rcdnet.tsv")
    shapes = {k: v for k, v in full.items() if not k.startswith(("x_stage.", "m_stage."))}
    for prefix in ("x_stage.", "m_stage."):
        first = {k[len(prefix) + 2 :]: v for k, v in full.items() if k.startswith(prefix + "0.")}
        for stage in range(num_stages):
            shapes |= {f"{prefix}{stage}.{k}": v for k, v in first.items()}
    shapes |= {"eta11": (num_stages - 1, 1), "eta12": (num_stages - 1, 1)}
    shapes["conv"] = (num_stages - 1, *full["conv"][1:])
    return shapes


def test_other_prenet_variants_and_rcdnet_sizes_are_refused(tmp_path):
    """PReNet_r (one shared residual block) and PReNet_x (no [O, x] input) are not PReNet;
    an RCDNet file of 3 stages does not load into the 17-stage network."""
    prenet = random_state(read_layout("prenet.tsv"))
    extra_blocks = tuple(f"res_conv{i}." for i in range(2, 6))
    prenet_r = {k: v for k, v in prenet.items() if not k.startswith(extra_blocks)}
    prenet_x = {**prenet, "conv0.0.weight": torch.zeros(32, 3, 3, 3)}
    rcdnet_3 = random_state(rcdnet_shapes(num_stages=3))
    assert [layout.name for layout in find_layouts(rcdnet_3)] == ["RCDNet"]
    for i, (name, state) in enumerate((("PReNet", prenet_r), ("PReNet", prenet_x))):
        assert not find_layouts(state)
        path = tmp_path / f"prenet_variant_{i}.pth"
        torch.save(state, path)
        with pytest.raises(CheckpointMismatchError, match="does not fit PReNet") as err:
            load_network(build_network({"type": name}), path, strict=True)
        assert str(path) in str(err.value)
    path = tmp_path / "rcdnet_3_stages.pth"
    torch.save(rcdnet_3, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointMismatchError, match="official RCDNet checkpoint") as err:
        load_network(build_network({"type": "RCDNet"}), path, strict=True)
    assert str(path) in str(err.value)
    assert "num_stages: 3" in str(err.value)  # the size the file needs, read from the file
    load_network(build_network({"type": "Mainnet", "stage": 3}), path, strict=True)


def test_rcdnet_converter_maps_the_tensors_the_release_reads():
    """Facts from the release's forward: kernels conv[1]; steps eta2, eta12 (B) and eta11 (M)."""
    state = random_state(read_layout("rcdnet.tsv"))
    out = convert_released_rcdnet(state)
    assert torch.equal(out["rain_kernels"], state["conv"][1])
    assert not torch.equal(out["rain_kernels"], state["conv"][0])
    assert torch.equal(out["first_rain_kernels"], state["weight0"])
    assert torch.equal(out["background_steps"][0], state["eta2"][0])
    assert torch.equal(out["background_steps"][1:], state["eta12"][:, 0])
    assert torch.equal(out["rain_map_steps"], state["eta11"][:, 0])
    assert torch.equal(out["rain_threshold"], state["tau"])
    assert torch.equal(out["rain_map_nets.3.threshold"], state["m_stage.3.tau"])
    assert torch.equal(
        out["background_nets.16.3.body.4.running_var"], state["x_stage.16.resx4.4.running_var"]
    )
    assert torch.equal(out["refine_net.0.body.0.weight"], state["fxnet.resx1.0.weight"])


def test_rcdnet_unused_released_parameters_are_exactly_the_known_ones():
    def parameters(state):
        return sum(
            v.numel() for k, v in state.items() if "running_" not in k and "batches" not in k
        )

    shapes = read_layout("rcdnet.tsv")
    state = random_state(shapes)
    # What the converter keeps loads strictly into RCDNet (test above): the rest is unused.
    dropped = parameters(state) - parameters(convert_released_rcdnet(state))
    assert dropped == 191_169  # 15 kernel copies, the M-net 'mnet', eta1
    for broken in (
        {k: v for k, v in state.items() if k != "eta1"},
        {k: v for k, v in state.items() if not k.startswith("mnet.resm4")},
        {**state, "mnet.extra": torch.zeros(1)},
    ):
        assert not find_layouts(broken)
        with pytest.raises(ValueError, match="not in the released RCDNet layout"):
            convert_released_rcdnet(broken)


def small_rcdnet(**kwargs) -> torch.nn.Module:
    sizes = dict(num_stages=3, num_rain_kernels=4, num_dual_channels=4, num_res_blocks=2)
    return build_network({"type": "RCDNet", **sizes, "kernel_size": 5, **kwargs})


def test_rcdnet_computes_the_release_on_0_255_values():
    """RCDNet(x) == released(255 x) / 255; ``rgb_range: 1`` is the released arithmetic itself."""
    ours = small_rcdnet().double().eval()
    released = small_rcdnet(rgb_range=1).double().eval()
    released.load_state_dict(ours.state_dict())
    x = torch.rand(2, 3, 13, 17, dtype=torch.float64)
    expected = [t / 255 for t in forward(released, 255 * x)]
    for a, b in zip(forward(ours, x), expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rgb_range", [255, 1])
def test_rcdnet_first_stage_threshold_and_kernels_get_gradient(rgb_range):
    net = small_rcdnet(rgb_range=rgb_range).train()
    gt = torch.rand(2, 3, 24, 24)
    lq = (gt + 0.4 * torch.rand_like(gt)).clamp(0, 1)
    loss = build_loss({"type": "RCDNetLoss"})(net(lq), gt, lq=lq)
    loss.backward()
    grads = [net.rain_threshold.grad.abs().sum(), net.first_rain_kernels.grad.abs().sum()]
    if rgb_range == 255:
        assert all(g > 0 for g in grads)
    else:  # relu(O - B0 - tau) = 0 for O <= 1 <= B0 + tau: no gradient on [0, 1] values
        assert all(g == 0 for g in grads)


def test_authors_constructor_arguments():
    net = build_network({"type": "Mainnet", "stage": 3, "num_M": 4, "num_Z": 5, "T": 2})
    assert net.num_stages == 3 and net.rain_kernels.shape[1] == 4
    assert net.dual_init.shape[0] == 5 and len(net.refine_net) == 2
    with pytest.raises(ValueError, match=r"stage=3 .* contradicts num_stages=5"):
        build_network({"type": "RCDNet", "num_stages": 5, "stage": 3})
    prenet = build_network({"type": "PReNet", "recurrent_iter": 4, "use_GPU": False})
    assert prenet.num_stages == 4
    with pytest.raises(ValueError, match=r"recurrent_iter=4 .* contradicts num_stages=3"):
        build_network({"type": "PReNet", "num_stages": 3, "recurrent_iter": 4})
    kpn = build_network({"type": "KPN", "kernel_size": [5], "widths": (8, 8, 16)})
    assert kpn.kernel_size == 5
    with pytest.raises(ValueError, match="channel_att=True is not implemented"):
        build_network({"type": "KPN", "channel_att": True})
    with pytest.raises(ValueError, match="several sizes"):
        build_network({"type": "KPN", "kernel_size": [3, 5]})
