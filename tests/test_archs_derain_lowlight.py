"""RCDNet, EfDeRain, DeepLPF, PReNet and their losses (RCDNetLoss, L1SSIMLoss)."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from diffsr.archs import build_network
from diffsr.archs.arch_util import count_parameters
from diffsr.archs.deeplpf_arch import cubic_filter, elliptical_scale_map, graduated_scale_map
from diffsr.archs.efderain_arch import pixelwise_dilated_filter
from diffsr.archs.rcdnet_arch import RCDNetOutput
from diffsr.losses import build_loss

# Parameter counts of the released models, measured by the project (docs/baselines.md).
RELEASED_PARAMS = {
    "RCDNet": 3_166_355,
    "EfDeRain": 27_395_406,
    "DeepLPF": 1_769_347,
    "PReNet": 168_963,
}
# The released RCDNet allocates parameters that its forward pass never uses: 15 extra copies
# of the shared 3 x 32 x 9 x 9 rain kernels, an M-net (4 residual blocks of two 32-channel
# 3x3 convs + BN, plus 32 thresholds) and one step size. Compare with what it does use.
UNUSED_RCDNET = 15 * 3 * 32 * 9 * 9 + (4 * 2 * (32 * 32 * 9 + 32 + 2 * 32) + 32) + 1
# The released DeepLPF allocates three 1x1 convs (16/32/64 -> 64) and a 16 -> 64 double conv
# in its U-Net that its forward never uses; diffsr's converter drops them.
UNUSED_DEEPLPF = (16 + 32 + 64) * 64 + 3 * 64 + (16 * 64 * 9 + 64) + (64 * 64 * 9 + 64)
REFERENCE_PARAMS = {
    **RELEASED_PARAMS,
    "RCDNet": RELEASED_PARAMS["RCDNet"] - UNUSED_RCDNET,
    "DeepLPF": RELEASED_PARAMS["DeepLPF"] - UNUSED_DEEPLPF,
}

SMALL = {
    "RCDNet": dict(
        num_stages=2, num_rain_kernels=4, num_dual_channels=4, num_res_blocks=1, kernel_size=5
    ),
    "EfDeRain": dict(widths=(8, 8, 16, 16), convs_per_level=1),
    "DeepLPF": dict(
        widths=(4, 8),
        feature_channels=5,
        head_channels=8,
        head_size=64,
        num_graduated_filters=2,
        num_elliptical_filters=2,
    ),
    "PReNet": dict(num_stages=3, num_channels=8, num_res_blocks=2),
}
NAMES = list(SMALL)


def final_output(output):
    return output[-1] if isinstance(output, list) else output


@pytest.mark.parametrize("name", NAMES)
def test_default_parameter_count(name):
    with torch.device("meta"):
        net = build_network({"type": name})
    assert count_parameters(net) == pytest.approx(REFERENCE_PARAMS[name], rel=0.02)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(37, 45), (9, 14)])
def test_small_config_keeps_shape(name, size):
    net = build_network({"type": name, **SMALL[name]}).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = net(x)
    if name == "RCDNet":
        assert isinstance(out, RCDNetOutput)
        assert len(out) == 2 + 2  # B0, one per stage, refined
        assert len(out.rain_layers) == 2
        tensors = [*out, *out.rain_layers]
    elif name == "PReNet":
        assert isinstance(out, list) and len(out) == 3
        tensors = out
    else:
        assert isinstance(out, torch.Tensor)
        tensors = [out]
    for t in tensors:
        assert t.shape == x.shape
        assert torch.isfinite(t).all()
    if name == "DeepLPF":
        assert out.min() >= 0 and out.max() <= 1


def training_loss(name, out, gt, lq):
    if name == "RCDNet":
        return build_loss({"type": "RCDNetLoss"})(out, gt, lq=lq)
    if name == "EfDeRain":
        return build_loss({"type": "L1SSIMLoss"})(out, gt)
    return F.l1_loss(final_output(out), gt)


@pytest.mark.parametrize("name", NAMES)
def test_adam_steps_give_finite_gradients_to_every_parameter(name):
    net = build_network({"type": name, **SMALL[name]}).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    gt = torch.rand(2, 3, 32, 32)
    lq = (gt + 0.3 * torch.rand_like(gt)).clamp(0, 1)
    before = [p.detach().clone() for p in net.parameters()]
    for _ in range(3):
        optimizer.zero_grad()
        loss = training_loss(name, net(lq), gt, lq)
        assert torch.isfinite(loss)
        loss.backward()
        for pname, p in net.named_parameters():
            assert p.grad is not None, f"{name}.{pname} is not used in the forward pass"
            assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"
        optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


@pytest.mark.parametrize("name", NAMES)
def test_autocast_bfloat16_forward(name):
    net = build_network({"type": name, **SMALL[name]}).eval()
    x = torch.rand(1, 3, 20, 27)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = final_output(net(x))
    assert out.shape == x.shape
    assert torch.isfinite(out.float()).all()


def test_pixelwise_filter_with_constant_kernels_is_a_dilated_convolution():
    image = torch.rand(2, 3, 11, 13, dtype=torch.float64)
    weights = torch.randn(3, 1, 3, 3, dtype=torch.float64)
    kernels = weights.reshape(1, 3, 9, 1, 1).expand(2, 3, 9, 11, 13)
    for dilation in (1, 2, 4):
        expected = F.conv2d(image, weights, padding=dilation, dilation=dilation, groups=3)
        actual = pixelwise_dilated_filter(image, kernels, dilation)
        torch.testing.assert_close(actual, expected)


def unit_tanh(x: float) -> float:
    return 0.5 * (math.tanh(x) + 1)


# The release's cubic coefficients, in the order of its model.py: x^3, x^2 y, x^2 i, x^2, ...
RELEASE_CUBIC_ORDER = [
    (3, 0, 0), (2, 1, 0), (2, 0, 1), (2, 0, 0), (1, 2, 0), (1, 1, 1), (1, 1, 0), (1, 0, 2),
    (1, 0, 1), (1, 0, 0), (0, 3, 0), (0, 2, 1), (0, 2, 0), (0, 1, 2), (0, 1, 1), (0, 1, 0),
    (0, 0, 3), (0, 0, 2), (0, 0, 1), (0, 0, 0),
]  # fmt: skip


def test_cubic_filter_matches_the_monomial_expansion():
    image = torch.rand(2, 3, 5, 6, dtype=torch.float64) * 0.5
    coefficients = torch.randn(2, 3, 20, dtype=torch.float64) * 0.05
    rows = np.arange(5)[:, None] / 5
    cols = np.arange(6)[None, :] / 6
    img = image.numpy()
    expected = img.copy()
    for b, channel in itertools.product(range(2), range(3)):
        for k, (p, q, r) in enumerate(RELEASE_CUBIC_ORDER):
            term = coefficients[b, channel, k].item() * rows**p * cols**q * img[b, channel] ** r
            expected[b, channel] += term
    torch.testing.assert_close(
        cubic_filter(image, coefficients), torch.from_numpy(expected.clip(0, 1))
    )


def release_graduated_pixel(g: list[float], x: float, y: float, channel: int) -> float:
    """The release's graduated scale (3 filters, outputs ``g``) at row x, column y, by its
    formulas in plain Python (model.py, GraduatedFilter)."""
    product = 1.0
    for f in range(3):
        inverted = g[f] > 0
        slope = g[3 + f]
        top = min(max(unit_tanh(g[9 + f]), unit_tanh(g[6 + f]) + 1e-10), 1.0)
        bottom = min(max(unit_tanh(g[12 + f]), 0.0), top)
        s = 2 * unit_tanh(g[15 + 3 * f + channel])
        d1 = unit_tanh(top * math.cos(math.atan(slope)))
        d2 = unit_tanh(bottom * math.cos(math.atan(slope)))
        line = unit_tanh(y - (slope * x + top + d1))
        if s >= 1:
            diff = (s - 1) / 2 + 1
            if inverted:
                value = s + (diff - s) / d1 * line + (1 - diff) / d2 * line
            else:
                value = 1 + (diff - s) / d1 * line + (s - diff) / d2 * line
            value = min(max(value, 1.0), 2.0)
        else:
            diff = (1 - s) / 2 + s
            if inverted:
                value = s + (diff - s) / d1 * line + (1 - diff) / d2 * line
            else:
                value = 1 + (diff - 1) / d1 * line + (s - diff) / d2 * line
            value = min(max(value, 0.0), 1.0)
        product *= value
    return min(max(product, 0.0), 2.0)


def release_elliptical_pixel(g: list[float], x: float, y: float, channel: int) -> float:
    """The release's elliptical scale (3 filters, outputs ``g``) at row x, column y, by its
    formulas in plain Python (model.py, EllipticalFilter; the second ellipse's blue channel
    uses the third ellipse's b)."""
    product = 1.0
    for f in range(3):
        h, k = unit_tanh(g[f]) + 1e-10, unit_tanh(g[3 + f]) + 1e-10
        a, b = unit_tanh(g[6 + f]) + 1e-10, unit_tanh(g[9 + f]) + 1e-10
        b_channel = unit_tanh(g[11]) + 1e-10 if (f, channel) == (1, 2) else b
        rotation = unit_tanh(g[12 + f]) * math.pi + 1e-10
        s = unit_tanh(g[15 + 3 * f + channel]) * 2 + 1e-10
        dx, dy = x - h, y - k
        cosine = min(max(dy / math.sqrt(dx * dx + dy * dy + 1e-10), -1 + 1e-7), 1 - 1e-7)
        theta = math.acos(cosine) - rotation
        radius = (
            a * b / math.sqrt(a**2 * math.sin(theta) ** 2 + b**2 * math.cos(theta) ** 2 + 1e-10)
        )
        part1 = (dx * math.cos(theta) + dy * math.sin(theta)) ** 2 / a**2
        part2 = (dx * math.sin(theta) - dy * math.cos(theta)) ** 2 / b_channel**2
        value = 1.0
        if part1 + part2 < 1:
            value = math.sqrt(dx * dx + dy * dy + 1e-7) * (1 - s) / radius + s
        product *= min(max(value, 0.0), 2.0)
    return min(max(product, 0.0), 2.0)


def random_filter_outputs() -> torch.Tensor:
    """12 x 24 raw head outputs for 3 filters, half of the rows spread wider (std 3)."""
    gen = torch.Generator().manual_seed(0)
    spread = torch.tensor([1.0, 3.0], dtype=torch.float64).repeat(6)[:, None]
    return torch.randn(12, 24, generator=gen, dtype=torch.float64) * spread


@pytest.mark.parametrize(
    "scale_map, release_pixel",
    [
        (graduated_scale_map, release_graduated_pixel),
        (elliptical_scale_map, release_elliptical_pixel),
    ],
    ids=["graduated", "elliptical"],
)
def test_filter_scale_maps_match_the_release_formulas(scale_map, release_pixel):
    height, width = 7, 9
    params = random_filter_outputs()
    maps = scale_map(params, height, width, 3)
    assert maps.shape == (12, 3, height, width)
    expected = torch.tensor(
        [
            [
                [
                    [release_pixel(g, i / height, j / width, c) for j in range(width)]
                    for i in range(height)
                ]
                for c in range(3)
            ]
            for g in params.tolist()
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(maps, expected, rtol=1e-12, atol=1e-12)
    assert (expected != 1).float().mean() > 0.3  # the filters act on much of the image


def test_graduated_filter_branches_are_all_exercised_by_the_formula_test():
    params = random_filter_outputs()
    inverted = (params[:, :3] > 0)[:, :, None].expand(-1, -1, 3)
    above_one = params[:, 15:].reshape(12, 3, 3) >= 0  # s = 2 unit_tanh >= 1
    seen = {(bool(i), bool(a)) for i, a in zip(inverted.flatten(), above_one.flatten())}
    assert seen == {(False, False), (False, True), (True, False), (True, True)}


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a - b) ** 2))


def test_rcdnet_loss_matches_direct_computation():
    stages = 3
    gt = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    lq = gt + torch.rand_like(gt)
    backgrounds = [torch.rand_like(gt) for _ in range(stages + 2)]
    rain_layers = [torch.rand_like(gt) for _ in range(stages)]
    loss = build_loss({"type": "RCDNetLoss", "loss_weight": 2.0})
    actual = loss(RCDNetOutput(backgrounds, rain_layers), gt, lq=lq)

    g, r = gt.numpy(), (lq - gt).numpy()
    b = [t.numpy() for t in backgrounds]
    m = [t.numpy() for t in rain_layers]
    expected = (
        0.1 * sum(mse(x, g) for x in b[:-1])
        + mse(b[-1], g)
        + 0.1 * sum(mse(x, r) for x in m[:-1])
        + mse(m[-1], r)
    )
    assert actual.item() == pytest.approx(2.0 * expected, rel=1e-12)

    per_sample = build_loss({"type": "RCDNetLoss", "reduction": "none"})(
        RCDNetOutput(backgrounds, rain_layers), gt, lq=lq
    )
    assert per_sample.shape == (2,)
    assert per_sample.mean().item() == pytest.approx(expected, rel=1e-12)


def test_rcdnet_loss_needs_rain_layers_unless_rain_weights_are_zero():
    gt = torch.rand(1, 3, 8, 8)
    plain = [torch.rand_like(gt) for _ in range(4)]
    with pytest.raises(ValueError, match="rain_layers"):
        build_loss({"type": "RCDNetLoss"})(plain, gt, lq=gt)
    loss = build_loss({"type": "RCDNetLoss", "rain_stage_weight": 0.0, "rain_final_weight": 0.0})
    expected = 0.1 * sum(F.mse_loss(x, gt) for x in plain[:-1]) + F.mse_loss(plain[-1], gt)
    torch.testing.assert_close(loss(plain, gt), expected)


def test_l1_ssim_loss_matches_numpy_and_skimage():
    gt = torch.rand(2, 3, 24, 20, dtype=torch.float64)
    pred = (gt + 0.2 * torch.randn_like(gt)).clamp(0, 1)
    actual = build_loss({"type": "L1SSIMLoss", "loss_weight": 0.5})(pred, gt)
    p, g = pred.numpy(), gt.numpy()
    ssim = np.mean(
        [
            structural_similarity(
                p[i],
                g[i],
                data_range=1.0,
                channel_axis=0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
            for i in range(2)
        ]
    )
    expected = 0.5 * (np.abs(p - g).mean() + 0.2 * (1 - ssim))
    assert actual.item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_forward_creates_no_tensor_on_a_fixed_device(name):
    # Meta tensors stand in for CUDA: any tensor made on the CPU inside forward would clash.
    with torch.device("meta"):
        net = build_network({"type": name, **SMALL[name]})
    out = final_output(net(torch.empty(2, 3, 21, 19, device="meta")))
    assert out.device.type == "meta" and out.shape == (2, 3, 21, 19)


def test_deeplpf_processes_each_sample_of_a_batch_independently():
    net = build_network({"type": "DeepLPF", **SMALL["DeepLPF"]}).eval()
    x = torch.rand(3, 3, 24, 30)
    with torch.no_grad():
        batched = net(x)
        single = torch.cat([net(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single)
