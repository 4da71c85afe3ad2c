"""Dehazing networks (FSDGN, MSBDN, GridDehazeNet, AODNet, FFANet), their helpers and FSDGNLoss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffsr.archs import ARCH_REGISTRY, build_network
from diffsr.archs.arch_util import DenseFeatureFusion, count_parameters, crop_back, pad_to_multiple
from diffsr.archs.fsdgn_arch import SpatialFrequencyBlock
from diffsr.losses import LOSS_REGISTRY, build_loss

# Parameter counts of the official models (baselines.md).
REFERENCE_PARAMS = {
    "FSDGN": 2_731_283,
    "MSBDN": 31_353_061,
    "GridDehazeNet": 958_051,
    "AODNet": 1_761,
    "FFANet": 4_455_913,
}

SMALL_CONFIGS = {
    "FSDGN": {"widths": [4, 6, 8]},
    "MSBDN": {
        "widths": [4, 8, 16],
        "blocks_per_level": 1,
        "bottleneck_blocks": 1,
        "input_kernel_size": 5,
    },
    "GridDehazeNet": {
        "base_channels": 4,
        "rows": 2,
        "columns": 4,
        "dense_layers": 2,
        "growth_rate": 4,
    },
    "AODNet": {},
    "FFANet": {"channels": 8, "num_groups": 2, "blocks_per_group": 1, "fusion_reduction": 4},
}
NAMES = sorted(REFERENCE_PARAMS)


def build_small(name: str) -> torch.nn.Module:
    return build_network({"type": name, **SMALL_CONFIGS[name]})


def final_output(out: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    return out[-1] if isinstance(out, list) else out


@pytest.mark.parametrize("name", NAMES)
def test_default_parameter_count_within_two_percent(name):
    with torch.device("meta"):
        net = ARCH_REGISTRY.get(name)()
    count = count_parameters(net)
    assert abs(count - REFERENCE_PARAMS[name]) <= 0.02 * REFERENCE_PARAMS[name], count


@pytest.mark.parametrize("name", NAMES)
def test_forward_odd_size_keeps_shape_and_batch_items_independent(name):
    # float64, so that batched and single results agree to rounding (float32 FFTs do not)
    net = build_small(name).double().eval()
    x = torch.rand(2, 3, 37, 45, dtype=torch.float64)
    with torch.no_grad():
        out = net(x)
        single = net(x[1:])
    outputs = out if isinstance(out, list) else [out]
    singles = single if isinstance(single, list) else [single]
    for batched, alone in zip(outputs, singles):
        assert batched.shape == x.shape
        assert torch.isfinite(batched).all()
        torch.testing.assert_close(batched[1:], alone)


def test_fsdgn_returns_both_stages_final_last():
    net = build_small("FSDGN")
    out = net(torch.rand(2, 3, 20, 28))
    assert isinstance(out, list) and len(out) == 2
    assert all(o.shape == (2, 3, 20, 28) for o in out)
    assert all(o.min() >= 0 and o.max() <= 1 for o in out)  # clamp_output=True by default
    out[-1].mean().backward()
    # the final output must depend on stage 2 (its tail) and on stage 1 (cross-stage links)
    assert net.stage2_tail.weight.grad.abs().sum() > 0
    assert net.stage1.encoder_blocks[0][1].amplitude.weight.grad is not None


def test_fsdgn_pads_inputs_smaller_than_the_pad_multiple():
    net = build_network({"type": "FSDGN", "widths": [2, 2, 2, 2, 2]})  # multiple of 16
    out = net(torch.rand(1, 3, 5, 7))
    assert [o.shape for o in out] == [(1, 3, 5, 7)] * 2


@pytest.mark.parametrize("name", NAMES)
def test_three_adam_steps_reduce_loss_with_finite_grads(name):
    net = build_small(name)
    if name == "FSDGN":
        net.clamp_output = False  # a random net is mostly out of range; keep all gradients
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    hazy, clean = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        out = net(hazy)
        outputs = out if isinstance(out, list) else [out]
        loss = sum(F.l1_loss(o, clean) for o in outputs)
        loss.backward()
        for param_name, param in net.named_parameters():
            if param.requires_grad:
                assert param.grad is not None, f"{name}: no gradient for {param_name}"
                assert torch.isfinite(param.grad).all(), f"{name}: non-finite grad in {param_name}"
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        out = net(hazy)
    outputs = out if isinstance(out, list) else [out]
    assert sum(F.l1_loss(o, clean) for o in outputs).item() < losses[0]


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_forward(name):
    net = build_small(name).eval()
    x = torch.rand(2, 3, 19, 23)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = final_output(net(x))
    assert out.shape == x.shape
    assert torch.isfinite(out.float()).all()


def test_registry_rejects_unknown_option():
    with pytest.raises(Exception, match="widht"):
        build_network({"type": "FSDGN", "widht": [4, 6]})


def test_grid_attention_false_freezes_junction_weights():
    net = build_network(
        {**{"type": "GridDehazeNet"}, **SMALL_CONFIGS["GridDehazeNet"], "attention": False}
    )
    assert all(not p.requires_grad for p in net.junction_weights.parameters())
    assert len(net.junction_weights) > 0


def test_aodnet_with_unit_k_is_identity():
    # K == 1 everywhere gives J = ReLU(I - 1 + 1) = I.
    net = build_network({"type": "AODNet"})
    with torch.no_grad():
        net.conv5.weight.zero_()
        net.conv5.bias.fill_(1.0)
    x = torch.rand(2, 3, 11, 13)
    torch.testing.assert_close(net(x), x)


def test_frequency_block_with_identity_spectrum_maps_is_x_plus_conv():
    # amplitude conv = identity and zero phase update: the Fourier branch must return x itself.
    block = SpatialFrequencyBlock(4).double()
    with torch.no_grad():
        block.amplitude.weight.copy_(torch.eye(4, dtype=torch.float64)[:, :, None, None])
        block.amplitude.bias.zero_()
        block.phase[2].weight.zero_()
        block.phase[2].bias.zero_()
    x = torch.randn(2, 4, 9, 10, dtype=torch.float64)
    expected = F.conv2d(x, block.spatial.weight, block.spatial.bias, padding=1) + x
    torch.testing.assert_close(block(x), expected)


def test_pad_to_multiple_matches_numpy_and_crops_back():
    x = torch.rand(2, 3, 10, 13)
    padded, size = pad_to_multiple(x, 8)
    assert padded.shape == (2, 3, 16, 16) and size == (10, 13)
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (0, 6), (0, 3)), mode="reflect")
    np.testing.assert_allclose(padded.numpy(), expected)
    torch.testing.assert_close(crop_back(padded, size), x)
    tiny, _ = pad_to_multiple(torch.rand(1, 1, 3, 3), 16)  # too small for reflect
    expected = np.pad(tiny[..., :3, :3].numpy(), ((0, 0), (0, 0), (0, 13), (0, 13)), mode="edge")
    np.testing.assert_allclose(tiny.numpy(), expected)
    same, _ = pad_to_multiple(x, 1)
    assert same is x


def test_dense_feature_fusion_checks_number_of_scales():
    fusion = DenseFeatureFusion([8, 4, 2], towards="finer")
    x = torch.rand(1, 8, 4, 4)
    others = [torch.rand(1, 2, 16, 16), torch.rand(1, 4, 8, 8)]
    assert fusion(x, others).shape == x.shape
    with pytest.raises(ValueError, match="2 other scales"):
        fusion(x, others[:1])


# ---------------------------------------------------------------- FSDGNLoss


def numpy_fsdgn_loss(preds, target, weights, output_weights, eps, norm_scale, per_sample=False):
    """Direct float64 computation with numpy's FFT; weights = (charbonnier, amplitude, phase)."""
    axes = (-2, -1)
    reduce = (lambda a: a.reshape(a.shape[0], -1).mean(1)) if per_sample else np.mean
    t_spec = np.fft.rfft2(target, axes=axes) * norm_scale
    total = 0.0
    for pred, w_out in zip(preds, output_weights):
        p_spec = np.fft.rfft2(pred, axes=axes) * norm_scale
        charb = reduce(np.sqrt((pred - target) ** 2 + eps))
        amp = reduce(np.abs(np.abs(p_spec) - np.abs(t_spec)))
        pha = reduce(np.abs(np.angle(p_spec) - np.angle(t_spec)))
        total = total + w_out * (weights[0] * charb + weights[1] * amp + weights[2] * pha)
    return total


@pytest.mark.parametrize(
    ("fft_norm", "reduction"), [("backward", "mean"), ("ortho", "mean"), ("backward", "none")]
)
def test_fsdgn_loss_matches_direct_numpy_computation(fft_norm, reduction):
    # odd sizes: only the DC bin is real-valued, so the phase (angle) is unambiguous
    preds = [torch.rand(2, 3, 9, 11, dtype=torch.float64) for _ in range(2)]
    target = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    loss_fn = build_loss(
        {
            "type": "FSDGNLoss",
            "loss_weight": 2.0,
            "reduction": reduction,
            "charbonnier_weight": 1.0,
            "amplitude_weight": 0.5,
            "phase_weight": 2.0,
            "eps": 1e-6,
            "fft_norm": fft_norm,
            "output_weights": [0.3, 1.0],
        }
    )
    norm_scale = 1.0 if fft_norm == "backward" else 1.0 / np.sqrt(9 * 11)
    expected = 2.0 * numpy_fsdgn_loss(
        [p.numpy() for p in preds],
        target.numpy(),
        (1.0, 0.5, 2.0),
        (0.3, 1.0),
        1e-6,
        norm_scale,
        per_sample=reduction == "none",
    )
    value = loss_fn(preds, target)
    assert value.shape == (() if reduction == "mean" else (2,))
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-10)


def test_fsdgn_loss_defaults_sum_and_gradients():
    loss_fn = LOSS_REGISTRY.build({"type": "FSDGNLoss", "reduction": "sum"})
    assert loss_fn.multi_output is True
    preds = [torch.rand(1, 3, 7, 9, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    target = torch.rand(1, 3, 7, 9, dtype=torch.float64)
    value = loss_fn(preds, target)
    p, t = [x.detach().numpy() for x in preds], target.numpy()
    spec_t = np.fft.rfft2(t)
    expected = sum(
        np.sqrt((q - t) ** 2 + 1e-12).sum()
        + np.abs(np.abs(np.fft.rfft2(q)) - np.abs(spec_t)).sum()
        + np.abs(np.angle(np.fft.rfft2(q)) - np.angle(spec_t)).sum()
        for q in p
    )
    np.testing.assert_allclose(value.item(), expected, rtol=1e-10)
    value.backward()
    assert all(torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0 for x in preds)


def test_fsdgn_loss_bad_input_and_autocast():
    loss_fn = build_loss({"type": "FSDGNLoss", "output_weights": [1.0, 1.0]})
    target = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="output_weights has 2 entries"):
        loss_fn([target], target)
    with pytest.raises(ValueError, match="shapes differ"):
        loss_fn([target, torch.rand(1, 3, 8, 9)], target)
    with pytest.raises(ValueError, match="fft_norm"):
        build_loss({"type": "FSDGNLoss", "fft_norm": "unitary"})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = build_loss({"type": "FSDGNLoss"})(target.bfloat16(), target)
    assert value.dtype == torch.float32 and torch.isfinite(value)
