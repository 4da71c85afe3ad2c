"""Released checkpoints of FSDGN, AOD-Net, FFA-Net and GridDehazeNet: layouts, loading, errors.

The fixtures ``tests/data/official_layouts/{fsdgn,aodnet,ffanet,griddehazenet}.tsv`` hold the
keys and shapes of the authors' networks (``FSDGN()``, ``AODnet()``, ``FFA(gps=3, blocks=19)``,
``GateHazeNet()``), dumped from their own code. A synthetic file in that layout (random weights,
in the container the authors' save code writes) must load strictly through ``load_network``
and compute exactly what the converted diffsr file computes. That diffsr computes the released
function was measured against the authors' code (float64, see docs/archs_dehaze.md).
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from diffsr.archs import build_network
from diffsr.archs.official import OFFICIAL_LAYOUTS, find_layouts
from diffsr.models.checkpoint import load_network
from diffsr.models.official_loading import CheckpointMismatchError
from tests.helpers.official_layouts import LAYOUTS, random_state, read_layout
from tests.helpers.scripts import load_script

# name -> (fixture, the authors' network_g block, diffsr's class, test input size)
RELEASES = {
    "FSDGN": (
        "fsdgn.tsv",
        {"type": "fusion_net", "num_in_ch": 3, "base_channel": 16, "up_mode": "upconv"},
        "FSDGN",
        (32, 32),
    ),
    "AOD-Net": ("aodnet.tsv", {"type": "AODNet"}, "AODNet", (17, 13)),
    "FFA-Net": ("ffanet.tsv", {"type": "FFA", "gps": 3, "blocks": 19}, "FFANet", (12, 10)),
    "GridDehazeNet": (
        "griddehazenet.tsv",
        {"type": "GateHazeNet", "depth_rate": 16, "height": 3, "width": 6, "num_dense_layer": 4},
        "GridDehazeNet",
        (15, 11),
    ),
}
NAMES = list(RELEASES)


def write_released(name: str, state: dict, path: Path) -> None:
    """``state`` in the container the authors' own code writes (see docs/pretrained.md)."""
    if name == "FSDGN":  # BasicSR: params and params_ema (their test loads params)
        ema = {k: v + 1.0 for k, v in state.items()}
        torch.save({"params": state, "params_ema": ema}, path)
    elif name == "AOD-Net":  # {'epoch', 'state_dict', 'optimizer'}, legacy format
        params = [torch.nn.Parameter(v.clone()) for v in state.values()]
        optimizer = torch.optim.Adam(params)
        sum(p.sum() for p in params).backward()
        optimizer.step()
        content = {"epoch": 9, "state_dict": state, "optimizer": optimizer.state_dict()}
        torch.save(content, path, _use_new_zipfile_serialization=False)
    elif name == "FFA-Net":  # metrics as numpy float64, DataParallel keys
        torch.save(
            {
                "step": 1000,
                "max_psnr": np.float64(36.4),
                "max_ssim": np.float64(0.98),
                "ssims": [np.float64(0.9), np.float64(0.98)],
                "psnrs": [np.float64(30.0), np.float64(36.4)],
                "losses": [0.1, 0.05],
                "model": {f"module.{k}": v for k, v in state.items()},
            },
            path,
        )
    else:  # GridDehazeNet: the DataParallel network's bare state dict, legacy format
        bare = {f"module.{k}": v for k, v in state.items()}
        torch.save(bare, path, _use_new_zipfile_serialization=False)


@pytest.fixture(scope="module")
def released_files(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    folder = tmp_path_factory.mktemp("released")
    files = {}
    for index, (name, (fixture, *_)) in enumerate(RELEASES.items()):
        scale = 0.02 if name == "FFA-Net" else 0.1  # 57 blocks: keep the features finite
        state = random_state(read_layout(fixture), seed=index, scale=scale)
        if name == "GridDehazeNet":  # junction weights around 1, as trained
            state["coefficient"] = 1.0 + 0.1 * torch.randn(state["coefficient"].shape)
        path = folder / f"{fixture.removesuffix('.tsv')}_released.pth"
        write_released(name, state, path)
        files[name] = path, state
    return files


def run(net: torch.nn.Module, name: str) -> torch.Tensor:
    x = torch.rand(2, 3, *RELEASES[name][3], generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        out = net.eval()(x)
    return torch.stack(out) if isinstance(out, list) else out


@pytest.mark.parametrize("name", NAMES)
def test_fixture_matches_its_layout_only(name):
    state = random_state(read_layout(RELEASES[name][0]))
    assert [layout.name for layout in find_layouts(state)] == [name]


def test_every_fixture_matches_at_most_one_of_these_layouts():
    """Also the other networks' fixtures: none of them is taken for one of these four."""
    find_layouts({})  # import every layout module
    ours = [layout for layout in OFFICIAL_LAYOUTS if layout.name in RELEASES]
    assert len(ours) == len(RELEASES)
    for fixture in sorted(LAYOUTS.glob("*.tsv")):
        state = random_state(read_layout(fixture.name))
        matched = [layout.name for layout in ours if layout.matches(state)]
        expected = [n for n, spec in RELEASES.items() if spec[0] == fixture.name]
        assert matched == expected, fixture.name


@pytest.mark.parametrize("name", NAMES)
def test_released_file_loads_and_computes_as_the_converted_file(
    name, released_files, tmp_path, caplog
):
    path, _ = released_files[name]
    net = build_network(dict(RELEASES[name][1]))
    assert type(net).__name__ == RELEASES[name][2]
    with caplog.at_level(logging.INFO, logger="diffsr"):
        load_network(net, path)
    lines = [
        r.getMessage() for r in caplog.records if "converted from the official" in r.getMessage()
    ]
    assert len(lines) == 1 and f"the official {name} layout" in lines[0]

    # round trip: scripts/convert_official.py writes a diffsr file that loads as diffsr's
    converted = tmp_path / "converted.pth"
    convert = load_script("convert_official")
    assert convert.main(["--arch", RELEASES[name][2], str(path), str(converted)]) == 0
    assert set(torch.load(converted, weights_only=True)) == {"params"}
    again = build_network({"type": RELEASES[name][2]})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="diffsr"):
        load_network(again, converted)
    assert not any("official" in r.getMessage() for r in caplog.records)
    assert torch.equal(run(net, name), run(again, name))
    loaded = net.state_dict()
    for key, value in again.state_dict().items():
        assert torch.equal(value, loaded[key]), key


def tensors_by_hand(name: str, net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Released key -> the diffsr tensor it must become, written from reading both codes."""
    if name == "FSDGN":
        s1, s2 = net.stage1, net.stage2
        return {
            "layer0.weight": net.stage1_head.weight,
            "layer2.block.0.weight": s1.down[1][0].weight,
            "layer_3.up.weight": s1.up[3].up.weight,
            "layer_1_.conv_block.0.bias": s2.up[1].merge[0].bias,
            "res4.conv_1x1.weight": s1.encoder_blocks[4][0].shortcut.weight,
            "res_2_.layers.2.weight": s2.decoder_blocks[2].body[2].weight,
            "fft_1.pha.2.weight": s1.decoder_blocks[1][1].phase[2].weight,
            "fft3.mag.bias": s1.encoder_blocks[3][1].amplitude.bias,
            "fusion3.up_convs.1.deconv.weight": s1.encoder_fusion[2].project[1][0].weight,
            "fusion4_.down_convs.0.act.weight": s2.encoder_fusion[3].project_back[0][1].weight,
            "fusion_1.down_convs.2.conv.weight": s1.decoder_fusion[1].project[2][0].weight,
            "fusion_0_.up_convs.3.act.weight": s2.decoder_fusion[0].project_back[3][1].weight,
            "csff_dec2.weight": net.cross_decoder[2].weight,
            "sam.conv2.weight": net.attention.to_image.weight,
            "concat.weight": net.stage2_merge.weight,
            "last.bias": net.stage2_tail.bias,
        }
    if name == "AOD-Net":
        return {f"conv{i}.weight": getattr(net, f"conv{i}").weight for i in range(1, 6)}
    if name == "FFA-Net":
        return {
            "module.pre.0.weight": net.head.weight,
            "module.g2.gp.5.calayer.ca.2.weight": net.groups[1][5].channel_attention.gate[2].weight,
            "module.g3.gp.19.bias": net.groups[2][19].bias,
            "module.g1.gp.0.palayer.pa.0.bias": net.groups[0][0].pixel_attention.gate[0].bias,
            "module.ca.3.weight": net.fusion_gate[2].weight,
            "module.palayer.pa.2.weight": net.fusion_pixel_attention.gate[2].weight,
            "module.post.1.bias": net.tail[1].bias,
        }
    return {
        "module.rdb_module.2_3.residual_dense_layers.1.conv.weight": net.lateral[2][3]
        .layers[1]
        .weight,
        "module.rdb_in.conv_1x1.bias": net.rdb_in.fuse.bias,
        "module.downsample_module.1_2.conv2.weight": net.down[1][2][2].weight,
        "module.upsample_module.0_4.deconv.weight": net.up[0][1].deconv.weight,
        "module.upsample_module.1_5.conv.bias": net.up[1][2].conv.bias,
    }


@pytest.mark.parametrize("name", NAMES)
def test_released_tensors_land_where_the_authors_code_uses_them(name, released_files):
    path, state = released_files[name]
    net = build_network(dict(RELEASES[name][1]))
    load_network(net, path)
    for key, tensor in tensors_by_hand(name, net).items():
        assert torch.equal(tensor, state[key.removeprefix("module.")]), key


def test_griddehazenet_junction_weights_come_from_coefficient(released_files):
    path, state = released_files["GridDehazeNet"]
    net = build_network({"type": "GridDehazeNet"})
    load_network(net, path)
    coefficient = state["coefficient"]  # rows x columns x 2 x 64
    # row 1, column 1 (downsampling half) and row 0, column 4 (upsampling half)
    assert torch.equal(net.junction_weights["1_1"], coefficient[1, 1, :, :32])
    assert torch.equal(net.junction_weights["0_4"], coefficient[0, 4, :, :16])
    assert "0_1" not in net.junction_weights and "2_4" not in net.junction_weights


def test_fsdgn_file_loads_params_not_params_ema(released_files):
    path, state = released_files["FSDGN"]
    net = build_network({"type": "FSDGN"})
    load_network(net, path)
    assert torch.equal(net.stage1_head.weight, state["layer0.weight"])
    load_network(net, path, param_key="params_ema")
    assert torch.equal(net.stage1_head.weight, state["layer0.weight"] + 1.0)


@pytest.mark.parametrize("name, other", list(itertools.permutations(NAMES, 2)))
def test_file_of_another_network_is_refused_with_its_name(name, other, released_files):
    path, _ = released_files[name]
    net = build_network({"type": RELEASES[other][2]})
    with pytest.raises(CheckpointMismatchError) as err:
        load_network(net, path)
    message = str(err.value)
    assert str(path) in message and f"official {name} checkpoint" in message
    assert f"network_g builds {RELEASES[other][2]}" in message


def test_other_variant_is_refused_with_the_variant_the_file_needs(released_files):
    path, _ = released_files["FFA-Net"]
    with pytest.raises(CheckpointMismatchError) as err:
        load_network(build_network({"type": "FFA", "gps": 3, "blocks": 2}), path)
    message = str(err.value)
    assert "official FFA-Net checkpoint" in message and "another variant" in message
    assert "{type: FFANet, gps: 3, blocks: 19}" in message


@pytest.mark.parametrize("name", NAMES)
def test_authors_constructor_arguments_build_the_default_network(name):
    theirs = build_network(dict(RELEASES[name][1])).state_dict()
    ours = build_network({"type": RELEASES[name][2]}).state_dict()
    assert {k: v.shape for k, v in theirs.items()} == {k: v.shape for k, v in ours.items()}


@pytest.mark.parametrize(
    "opt, message",
    [
        ({"type": "FFA", "gps": 2, "num_groups": 4}, "disagree"),
        ({"type": "GateHazeNet", "height": 4, "rows": 2}, "disagree"),
        ({"type": "GateHazeNet", "kernel_size": 5}, "kernel_size=3"),
        ({"type": "fusion_net", "up_mode": "upsample"}, "upconv"),
    ],
)
def test_inconsistent_authors_arguments_are_refused(opt, message):
    with pytest.raises(ValueError, match=message):
        build_network(opt)


def test_authors_arguments_change_the_network():
    net = build_network({"type": "FFA", "gps": 2, "blocks": 1, "channels": 16})
    assert len(net.groups) == 2 and len(net.groups[0]) == 2  # one block and the group conv
    grid = build_network({"type": "GateHazeNet", "height": 2, "width": 4, "depth_rate": 8})
    assert grid.rows == 2 and grid.columns == 4 and grid.conv_in.out_channels == 8
    fsdgn = build_network({"type": "fusion_net", "bias": True, "num_in_ch": 1})
    assert fsdgn.cross_encoder[0].bias is not None and fsdgn.stage1_head.in_channels == 1
