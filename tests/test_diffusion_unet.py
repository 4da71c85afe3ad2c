"""The ADM UNet: checkpoint layout and function equal to OpenAI guided-diffusion's.

The reference is the PyPI package guided-diffusion-sdk (test-only dependency).
"""

import math
import warnings
from pathlib import Path

import pytest
import torch

from diffsr.diffusion import PRESETS, UNetConfig, create_unet, reinit_zero_layers
from diffsr.diffusion.unet_blocks import GroupNorm32, timestep_embedding
from diffsr.diffusion.weights import preset_layout, state_dict_layout

with warnings.catch_warnings():  # the reference's nn.py uses deprecated torch.cuda.amp decorators
    warnings.simplefilter("ignore", FutureWarning)
    script_util = pytest.importorskip("guided_diffusion.script_util")

TABLE = Path(__file__).parent / "data" / "adm_256_uncond_state_dict.tsv"
TINY = dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2")


def read_table(path: Path) -> dict[str, tuple[int, ...]]:
    layout = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            layout[key] = tuple(int(s) for s in shape.split("x"))
    return layout


def reference_model(**kw):
    return script_util.create_model(**kw)


def test_256_uncond_layout_equals_the_released_checkpoint_table():
    expected = read_table(TABLE)
    with torch.device("meta"):
        model = create_unet(preset="adm_256_uncond")
    layout = state_dict_layout(model)
    assert list(layout.items()) == list(expected.items())  # same keys, shapes and order
    assert len(layout) == 566
    assert sum(math.prod(s) for s in layout.values()) == 552_814_086


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_layout_equals_guided_diffusion_create_model(name):
    with torch.device("meta"):
        reference = reference_model(**{"channel_mult": "", **PRESETS[name].unet})
    assert list(preset_layout(name).items()) == list(state_dict_layout(reference).items())


def test_h_space_and_output_shapes_of_the_256_model_on_meta():
    with torch.device("meta"):
        model = create_unet(preset="adm_256_uncond")
        x, t = torch.empty(2, 3, 256, 256), torch.zeros(2, dtype=torch.long)
        out, h = model(x, t, return_h=True)
        h_only = model(x, t, h_only=True)
    assert out.shape == (2, 6, 256, 256)
    assert h.shape == h_only.shape == (2, 1024, 8, 8)
    assert model.downsample_factor == 32


VARIANTS = {
    "legacy_order_heads": dict(attention_resolutions="16,8", num_heads=2),
    "new_order_head_channels": dict(
        attention_resolutions="16", use_new_attention_order=True, num_head_channels=16
    ),
    "scale_shift_updown": dict(
        attention_resolutions="16", use_scale_shift_norm=True, resblock_updown=True, num_heads=4
    ),
    "plain_norm_no_updown": dict(attention_resolutions="32,16", use_scale_shift_norm=False),
    "class_cond_sigma": dict(
        attention_resolutions="16",
        class_cond=True,
        learn_sigma=True,
        num_heads=4,
        num_heads_upsample=2,
    ),
    "three_levels_new_order": dict(
        channel_mult="1,1,2",
        attention_resolutions="8",
        resblock_updown=True,
        use_new_attention_order=True,
        num_heads=2,
    ),
}


def twin_models(options):
    """Our UNet and the reference with identical, fully random weights."""
    ours = reinit_zero_layers(create_unet(**options)).eval()
    reference = reference_model(**options).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    return ours, reference


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("attention", ["legacy", "sdpa"])
def test_function_equals_guided_diffusion(name, attention):
    options = {**TINY, **VARIANTS[name]}
    ours, reference = twin_models(options)
    ours.set_attention_backend(attention)
    captured = {}
    reference.middle_block.register_forward_hook(lambda m, i, o: captured.setdefault("h", o))
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([0.0, 917.0])
    y = torch.tensor([3, 999]) if options.get("class_cond") else None
    with torch.no_grad():
        expected = reference(x, t, y=y)
        out, h = ours(x, t, y=y, return_h=True)
        h_only = ours(x, t, y=y, h_only=True)
    assert out.shape == expected.shape == (2, 6 if options.get("learn_sigma") else 3, 32, 32)
    assert (out - expected).norm() <= 1e-5 * expected.norm()
    assert (h - captured["h"]).norm() <= 1e-5 * captured["h"].norm()
    assert torch.equal(h_only, h)


def test_attention_orders_differ_so_the_equivalence_test_can_fail():
    options = {**TINY, "attention_resolutions": "16", "num_heads": 4}
    legacy, _ = twin_models(options)
    new = create_unet(**options, use_new_attention_order=True)
    new.load_state_dict(legacy.state_dict())
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([10])
    with torch.no_grad():
        assert not torch.allclose(legacy(x, t), new(x, t), rtol=1e-3)


def test_input_gradient_matches_reference_with_frozen_weights():
    ours, reference = twin_models({**TINY, "attention_resolutions": "16", "num_heads": 2})
    ours.requires_grad_(False)
    reference.requires_grad_(False)
    x = torch.randn(1, 3, 32, 32)
    grads = []
    for model in (ours, reference):
        xi = x.clone().requires_grad_()
        model(xi, torch.tensor([500])).square().sum().backward()
        grads.append(xi.grad)
    assert (grads[0] - grads[1]).norm() <= 1e-5 * grads[1].norm()


def test_use_checkpoint_gives_same_input_gradient_with_frozen_weights():
    options = {**TINY, "attention_resolutions": "16"}
    plain, _ = twin_models(options)
    checkpointed = create_unet(**options, use_checkpoint=True)
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.checkpoint_levels == 2
    grads = []
    for model in (plain, checkpointed):
        model.requires_grad_(False)
        xi = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)).requires_grad_()
        model(xi, torch.tensor([5])).square().sum().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_use_fp16_torso_matches_reference_fp16_torso():
    options = {**TINY, "attention_resolutions": "16", "num_heads": 2, "use_fp16": True}
    ours, reference = twin_models(options)
    ours.convert_to_fp16()
    reference.convert_to_fp16()
    assert ours.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([1, 500])
    with torch.no_grad():
        out, expected = ours(x, t), reference(x, t)
    assert out.dtype == torch.float32
    assert (out - expected).norm() <= 1e-5 * expected.norm()


def test_timestep_embedding_formula_in_float64():
    t = torch.tensor([0, 1, 37, 999])
    dim = 10
    emb = timestep_embedding(t, dim)
    half = dim // 2
    for row, step in enumerate(t.tolist()):
        for i in range(half):
            angle = step * math.exp(-math.log(10000) * i / half)
            assert emb[row, i].item() == pytest.approx(math.cos(angle), abs=2e-4)
            assert emb[row, half + i].item() == pytest.approx(math.sin(angle), abs=2e-4)
    assert timestep_embedding(t, 7)[:, -1].abs().max() == 0  # odd width: zero pad column


def test_group_norm_runs_in_float32_under_bfloat16_autocast():
    norm = GroupNorm32(64)
    x = (torch.randn(2, 64, 4, 4) * 30 + 5).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x)
    expected = torch.nn.functional.group_norm(x.float(), 32, norm.weight, norm.bias).bfloat16()
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, expected)


def test_channel_mult_and_attention_resolution_strings():
    assert UNetConfig(64, 32, 1).resolved_channel_mult == (1, 2, 3, 4)
    assert UNetConfig(256, 32, 1).resolved_channel_mult == (1, 1, 2, 2, 4, 4)
    assert UNetConfig(64, 32, 1, channel_mult="1,2,2,2").resolved_channel_mult == (1, 2, 2, 2)
    assert UNetConfig(256, 32, 1, attention_resolutions="32,16,8").attention_downsample_rates == (
        8,
        16,
        32,
    )
    with pytest.raises(ValueError, match="image_size 96"):
        _ = UNetConfig(96, 32, 1).resolved_channel_mult


def test_bad_options_and_inputs_give_clear_errors():
    with pytest.raises(ValueError, match=r"'num_channel'.*Did you mean 'num_channels'"):
        create_unet(image_size=32, num_channel=32, num_res_blocks=1)
    with pytest.raises(ValueError, match="missing required key"):
        create_unet(image_size=32)
    with pytest.raises(ValueError, match="Unknown diffusion prior preset 'adm_999'"):
        create_unet(preset="adm_999")
    model = create_unet(**TINY, class_cond=True)
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([1])
    with pytest.raises(ValueError, match="needs class labels"):
        model(x, t)
    with pytest.raises(ValueError, match="divisible by 2"):
        model(torch.randn(1, 3, 33, 32), t, y=torch.tensor([0]))


def test_attention_resolutions_accepts_a_single_number():
    """YAML reads ``attention_resolutions: 8`` as an int; it means the same as "8"."""
    from diffsr.diffusion import create_unet

    kwargs = {"image_size": 16, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2"}
    as_int = create_unet(attention_resolutions=8, **kwargs)
    as_str = create_unet(attention_resolutions="8", **kwargs)
    assert [k for k in as_int.state_dict()] == [k for k in as_str.state_dict()]
    assert any("attn" in k or "qkv" in k for k in as_int.state_dict())
