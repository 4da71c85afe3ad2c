"""Image I/O and tensor conversion (diffsr.utils.img_util)."""

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from diffsr.utils.img_util import (
    imfrombytes,
    img2tensor,
    imread,
    imwrite,
    pad_to_multiple,
    tensor2img,
)

RNG = np.random.default_rng(0)


def png_bytes_pil(array: np.ndarray, mode: str) -> bytes:
    """Encode with Pillow, independently of OpenCV."""
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG")
    return buffer.getvalue()


def test_rgb_8bit_is_bgr_over_255():
    rgb = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    img = imfrombytes(png_bytes_pil(rgb, "RGB"), "x.png")
    assert img.dtype == np.float32 and img.shape == (5, 7, 3)
    np.testing.assert_allclose(img, rgb[:, :, ::-1].astype(np.float64) / 255.0, atol=1e-7)


def test_gray_and_alpha_become_three_channels():
    gray = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    img = imfrombytes(png_bytes_pil(gray, "L"), "g.png")
    assert img.shape == (4, 6, 3)
    for c in range(3):
        np.testing.assert_allclose(img[:, :, c], gray / 255.0, atol=1e-7)

    rgba = RNG.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    img = imfrombytes(png_bytes_pil(rgba, "RGBA"), "a.png")
    np.testing.assert_allclose(img, rgba[:, :, 2::-1] / 255.0, atol=1e-7)

    gray_alpha = RNG.integers(0, 256, (4, 6, 2), dtype=np.uint8)
    img = imfrombytes(png_bytes_pil(gray_alpha, "LA"), "la.png")
    for c in range(3):
        np.testing.assert_allclose(img[:, :, c], gray_alpha[:, :, 0] / 255.0, atol=1e-7)


def test_16bit_png_is_scaled_by_65535():
    values = RNG.integers(0, 65536, (3, 5), dtype=np.uint16)
    values[0, 0], values[0, 1] = 65535, 1
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buffer, "PNG")  # 16-bit grayscale
    img = imfrombytes(buffer.getvalue(), "deep.png")
    expected = values.astype(np.float64) / 65535.0
    for c in range(3):
        np.testing.assert_allclose(img[:, :, c], expected, rtol=1e-6, atol=1e-9)
    assert img[0, 0, 0] == 1.0


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n trunc"])
def test_corrupt_bytes_raise_value_error_naming_file(content):
    with pytest.raises(ValueError, match=r"broken/file\.png"):
        imfrombytes(content, "broken/file.png")


def test_imread_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        imread(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match=r"bad\.png"):
        imread(bad)


def test_img2tensor_and_tensor2img_round_trip():
    bgr = RNG.integers(0, 256, (6, 4, 3), dtype=np.uint8)
    tensor = img2tensor(bgr.astype(np.float32) / 255.0)
    assert tensor.shape == (3, 6, 4) and tensor.dtype == torch.float32
    # channel 0 of the tensor is red = channel 2 of the BGR array
    np.testing.assert_allclose(tensor[0].numpy(), bgr[:, :, 2] / 255.0, atol=1e-7)
    back = tensor2img(tensor)
    np.testing.assert_array_equal(back, bgr)
    np.testing.assert_array_equal(tensor2img(tensor[None]), bgr)
    assert isinstance(img2tensor([bgr, bgr]), list)


def test_tensor2img_rounds_clamps_and_rescales():
    tensor = torch.tensor([[[0.5 / 255, 1.5 / 255, -0.2, 1.7]]])  # 1 x 1 x 4 (gray)
    out = tensor2img(tensor)
    assert out.shape == (1, 4) and out.dtype == np.uint8
    # 0.5 -> 0 and 1.5 -> 2 (round half to even, like numpy's round used by BasicSR)
    np.testing.assert_array_equal(out, [[np.round(0.5), np.round(1.5), 0, 255]])
    signed = torch.tensor([[[-1.0, 0.0, 1.0]]])
    np.testing.assert_allclose(
        tensor2img(signed, out_type=np.float32, min_max=(-1, 1)), [[0.0, 0.5, 1.0]]
    )
    original = torch.tensor([[[2.0]]])
    tensor2img(original)
    assert original.item() == 2.0  # input untouched
    with pytest.raises(ValueError, match="batch of one"):
        tensor2img(torch.zeros(2, 3, 4, 4))


def test_imwrite_atomic_keeps_codec_and_leaves_no_temp(tmp_path):
    bgr = RNG.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    path = tmp_path / "sub" / "out.png"
    imwrite(bgr, path)
    np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), bgr)
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.png"]
    jpg = tmp_path / "out.jpg"
    imwrite(bgr, jpg)
    assert jpg.read_bytes()[:2] == b"\xff\xd8"  # JPEG magic number


def test_pad_to_multiple():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    padded, (h, w) = pad_to_multiple(x, 4)
    assert padded.shape == (2, 3, 8, 8) and (h, w) == (5, 6)
    assert torch.equal(padded[..., :5, :6], x)
    assert torch.equal(padded[..., 5, :6], x[..., 3, :])  # reflection about row 4
    same, _ = pad_to_multiple(x[..., :4, :4], 4)
    assert same.shape == (2, 3, 4, 4)
    tiny, _ = pad_to_multiple(torch.ones(1, 1, 1, 1), 8)  # reflect impossible -> replicate
    assert tiny.shape == (1, 1, 8, 8) and torch.all(tiny == 1)
