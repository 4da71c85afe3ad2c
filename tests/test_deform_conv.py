"""Pure-PyTorch deformable convolution against a direct float64 loop (torchvision semantics)."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffsr.archs.deform_conv import DeformConv2d, deform_conv2d


def bilinear_zero_padded(image: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Value of ``image`` (C x H x W) at real position (y, x); each corner outside reads 0.

    ``y`` and ``x`` are 0-d tensors so that autograd reaches the offsets.
    """
    height, width = image.shape[-2:]
    y0, x0 = math.floor(y.item()), math.floor(x.item())
    value = image.new_zeros(image.shape[0])
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                value = value + wy * wx * image[:, yy, xx]
    return value


def direct_deform_conv(x, offset, weight, bias, stride, padding, dilation):
    """Explicit loop over output pixels and kernel points (DCNv1 definition)."""
    batch, in_ch, _, _ = x.shape
    out_ch, in_per_group, kh, kw = weight.shape
    groups = in_ch // in_per_group
    out_per_group = out_ch // groups
    offset_groups = offset.shape[1] // (2 * kh * kw)
    ch_per_offset_group = in_ch // offset_groups
    out_h, out_w = offset.shape[-2:]
    out = [[[0.0] * out_w for _ in range(out_h)] for _ in range(batch * out_ch)]
    for b in range(batch):
        for i in range(out_h):
            for j in range(out_w):
                for ky in range(kh):
                    for kx in range(kw):
                        tap = ky * kw + kx
                        samples = []
                        for og in range(offset_groups):
                            dy = offset[b, og * 2 * kh * kw + 2 * tap, i, j]
                            dx = offset[b, og * 2 * kh * kw + 2 * tap + 1, i, j]
                            y = i * stride - padding + ky * dilation + dy
                            xx = j * stride - padding + kx * dilation + dx
                            chans = slice(og * ch_per_offset_group, (og + 1) * ch_per_offset_group)
                            samples.append(bilinear_zero_padded(x[b, chans], y, xx))
                        sample = torch.cat(samples)
                        for o in range(out_ch):
                            g = o // out_per_group
                            inputs = sample[g * in_per_group : (g + 1) * in_per_group]
                            out[b * out_ch + o][i][j] += (weight[o, :, ky, kx] * inputs).sum()
    # Nested lists of 0-d tensors keep the graph differentiable without in-place writes.
    out = torch.stack([torch.stack([torch.stack(row) for row in plane]) for plane in out])
    out = out.view(batch, out_ch, out_h, out_w)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


CASES = [
    # in_ch, out_ch, groups, offset_groups, kernel, stride, padding, dilation
    pytest.param(4, 4, 4, 1, 3, 1, 1, 1, id="depthwise"),
    pytest.param(4, 6, 2, 2, 3, 1, 1, 1, id="groups2-offsetgroups2"),
    pytest.param(3, 5, 1, 1, 3, 2, 2, 2, id="dense-stride2-dilation2"),
    pytest.param(2, 4, 1, 2, (2, 3), 1, 0, 1, id="rect-kernel"),
]


@pytest.mark.parametrize(("in_ch", "out_ch", "groups", "off_groups", "k", "s", "p", "d"), CASES)
def test_matches_direct_float64_loop(in_ch, out_ch, groups, off_groups, k, s, p, d):
    gen = torch.Generator().manual_seed(1)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(2, in_ch, 5, 6, generator=gen, dtype=torch.float64)
    weight = torch.randn(out_ch, in_ch // groups, kh, kw, generator=gen, dtype=torch.float64)
    bias = torch.randn(out_ch, generator=gen, dtype=torch.float64)
    out_h = (5 + 2 * p - d * (kh - 1) - 1) // s + 1
    out_w = (6 + 2 * p - d * (kw - 1) - 1) // s + 1
    # Fractional offsets up to +-3 px, plus some far outside the image and some exactly integer.
    offset = (torch.rand(2, 2 * off_groups * kh * kw, out_h, out_w, generator=gen) * 6 - 3).double()
    offset[:, ::5] = 8.5
    offset[:, 1::7] = -7.25
    offset[:, 2::9] = offset[:, 2::9].round()

    got = deform_conv2d(x, offset, weight, bias, stride=s, padding=p, dilation=d)
    want = direct_deform_conv(x, offset, weight, bias, s, p, d)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_zero_offsets_equal_conv2d():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 7, 9, generator=gen, dtype=torch.float64)
    for groups in (1, 3, 6):
        weight = torch.randn(6, 6 // groups, 3, 3, generator=gen, dtype=torch.float64)
        offset = torch.zeros(2, 18, 7, 9, dtype=torch.float64)
        got = deform_conv2d(x, offset, weight, padding=1)
        torch.testing.assert_close(got, F.conv2d(x, weight, padding=1, groups=groups))


def test_integer_offsets_shift_the_input():
    """An offset of (+1, -2) for every tap of a 1x1 kernel reads x[i + 1, j - 2] (zeros outside)."""
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    offset = torch.tensor([1.0, -2.0], dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, 6, 7)
    got = deform_conv2d(x, offset, torch.ones(2, 1, 1, 1, dtype=torch.float64))
    want = torch.zeros_like(x)
    want[:, :, :-1, 2:] = x[:, :, 1:, :-2]
    torch.testing.assert_close(got, want)


def test_gradients_match_direct_loop():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 1, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    offset = (torch.rand(1, 18, 4, 4, generator=gen, dtype=torch.float64) * 4 - 2).requires_grad_()
    upstream = torch.randn(1, 2, 4, 4, generator=gen, dtype=torch.float64)

    inputs = (x, offset, weight)
    ours = deform_conv2d(x, offset, weight, padding=1)
    ref = direct_deform_conv(x, offset, weight, None, stride=1, padding=1, dilation=1)
    ours_grads = torch.autograd.grad((ours * upstream).sum(), inputs)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), inputs)
    for ours, ref in zip(ours_grads, ref_grads):
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


def test_module_float32_autocast_and_errors():
    layer = DeformConv2d(4, 4, 3, padding=1, groups=4, bias=True)
    x, offset = torch.randn(2, 4, 5, 7), torch.randn(2, 18, 5, 7)
    out = layer(x, offset)
    assert out.shape == (2, 4, 5, 7) and out.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = layer(x.bfloat16(), offset.bfloat16())
    assert low.dtype == torch.bfloat16  # like F.conv2d under autocast
    torch.testing.assert_close(
        low.float(), layer(x, offset.bfloat16().float()), atol=0.1, rtol=0.05
    )
    with pytest.raises(ValueError, match="offset must be"):
        layer(x, offset[:, :17])
    with pytest.raises(ValueError, match="divisible by groups"):
        DeformConv2d(4, 6, 3, groups=4)
