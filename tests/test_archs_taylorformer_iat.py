"""MB-TaylorFormer (B/L) and IAT: parameter counts, shapes, gradients, autocast, maths."""

import pytest
import torch
import torch.nn.functional as F

from diffsr.archs import build_network
from diffsr.archs.iat_arch import IAT
from diffsr.archs.taylorformer_arch import (
    MBTaylorFormer,
    gate_kernel_sizes,
    taylor_linear_attention,
)
from diffsr.utils.registry import RegistryError

# Counted on the official implementations (shared/docs/baselines.md).
REFERENCE_PARAMS = [
    pytest.param({"type": "MBTaylorFormer", "variant": "B"}, 2_676_520, id="MBTaylorFormer-B"),
    pytest.param({"type": "MBTaylorFormer", "variant": "L"}, 7_432_472, id="MBTaylorFormer-L"),
    pytest.param({"type": "IAT"}, 91_154, id="IAT"),
]

SMALL_TAYLORFORMER = {
    "widths": (8, 16, 24, 32),
    "heads": (1, 2, 4, 8),
    "num_blocks": (1, 1, 1, 1),
    "num_refinement_blocks": 1,
    "num_paths": (2, 1, 1, 2),
}
SMALL_IAT = {"local_width": 8, "num_local_blocks": 2, "global_width": 16, "global_heads": 2}
SMALL_NETS = [
    pytest.param(lambda: MBTaylorFormer(**SMALL_TAYLORFORMER), id="MBTaylorFormer"),
    pytest.param(lambda: IAT(**SMALL_IAT), id="IAT"),
]


@pytest.mark.parametrize(("opt", "reference"), REFERENCE_PARAMS)
def test_default_parameter_count_matches_paper(opt, reference):
    with torch.device("meta"):
        net = build_network(opt)
    count = sum(p.numel() for p in net.parameters())
    assert abs(count - reference) <= 0.02 * reference, f"{count:,} vs {reference:,}"


def test_gate_kernel_sizes_follow_paper():
    assert gate_kernel_sizes(1) == [3]
    assert gate_kernel_sizes(2) == [3, 3]
    assert gate_kernel_sizes(4) == [3, 3, 5, 5]
    assert gate_kernel_sizes(8) == [3, 3, 5, 5, 5, 7, 7, 7]


def test_taylor_attention_matches_quadratic_formula():
    gen = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(2, 3, 4, 10, generator=gen, dtype=torch.float64), dim=2) * 0.5
    k = F.normalize(torch.randn(2, 3, 4, 10, generator=gen, dtype=torch.float64), dim=2) * 0.5
    v = torch.randn(2, 3, 5, 10, generator=gen, dtype=torch.float64)
    weights = 1 + torch.einsum("bhdi,bhdj->bhij", q, k)  # exp(q.k) to first order, N x N
    want = torch.einsum("bhij,bhej->bhei", weights / weights.sum(-1, keepdim=True), v)
    torch.testing.assert_close(taylor_linear_attention(q, k, v), want)


@pytest.mark.parametrize("make_net", SMALL_NETS)
def test_odd_size_batch_forward_keeps_shape(make_net):
    net = make_net().eval()
    x = torch.rand(2, 3, 37, 45)
    with torch.no_grad():
        out = net(x)
        single = net(x[1:])
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out[1:], single, rtol=1e-4, atol=1e-5)  # samples independent


@pytest.mark.parametrize("make_net", SMALL_NETS)
def test_forward_backward_create_nothing_off_the_input_device(make_net):
    """On the meta device any tensor made on the CPU inside forward raises (CUDA stand-in)."""
    with torch.device("meta"):
        net, x = make_net(), torch.rand(2, 3, 37, 45)
    out = net(x)
    out.sum().backward()
    assert out.device.type == "meta" and out.shape == x.shape


def test_taylorformer_pads_by_reflection_and_crops():
    net = MBTaylorFormer(**SMALL_TAYLORFORMER).eval()
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        out = net(x)
        padded = net(F.pad(x, (0, 2, 0, 3), mode="reflect"))  # 24 x 32: no internal padding
    torch.testing.assert_close(out, padded[..., :21, :30])


@pytest.mark.parametrize("make_net", SMALL_NETS)
def test_adam_steps_give_finite_gradients_everywhere(make_net):
    torch.manual_seed(0)
    net = make_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    grad_seen = {name: 0.0 for name, _ in net.named_parameters()}
    for _ in range(3):
        optimizer.zero_grad()
        loss = F.l1_loss(net(x), target)
        loss.backward()
        for name, param in net.named_parameters():
            assert param.grad is not None, f"{name} gets no gradient"
            assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
            grad_seen[name] += param.grad.abs().sum().item()
        optimizer.step()
    assert torch.isfinite(loss)
    dead = [name for name, total in grad_seen.items() if total == 0]
    assert not dead, f"parameters never updated: {dead}"


@pytest.mark.parametrize("make_net", SMALL_NETS)
def test_cpu_bf16_autocast_forward(make_net):
    net = make_net().eval()
    x = torch.rand(2, 3, 24, 20)
    with torch.no_grad():
        full = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x)
    assert low.shape == x.shape and torch.isfinite(low).all()
    assert (low.float() - full).abs().mean() < 0.05


def test_iat_output_is_gamma_corrected_colour_transform_of_local_result():
    net = IAT(**SMALL_IAT).eval()
    x = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    net.double()
    with torch.no_grad():
        # Make the global branch non-trivial (its value map starts at zero).
        net.global_branch.attn.value.weight.normal_(0, 0.5)
        mul, add = net.local_branch(x)
        gamma, color = net.global_branch(x)
        out = net(x)
    for b in range(2):
        pixels = (x[b] * mul[b] + add[b]).reshape(3, -1)  # 3 x HW
        want = (color[b] @ pixels).clamp(1e-8, 1) ** gamma[b]
        torch.testing.assert_close(out[b].reshape(3, -1), want)
    assert out.min() > 0 and out.max() <= 1


def test_bad_options_are_reported():
    with pytest.raises(ValueError, match="unknown variant 'X'"):
        MBTaylorFormer(variant="X")
    with pytest.raises(ValueError, match="num_blocks needs 4 values"):
        MBTaylorFormer(num_blocks=(1, 1, 1))
    with pytest.raises(ValueError, match="not divisible by its 8 heads"):
        MBTaylorFormer(widths=(8, 16, 24, 36))
    with pytest.raises(RegistryError, match="num_heads"):
        build_network({"type": "IAT", "num_heads": 4})
