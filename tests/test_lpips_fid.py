"""LPIPS against a step-by-step float64 computation, and FID against closed forms / eigenvalues.

All backbones use random weights saved in the published key layouts (nothing is downloaded).
"""

import importlib.util
import sys

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

import diffsr.metrics.fid_metric as fid_module
from diffsr.archs.backbone_util import MissingWeightsError
from diffsr.archs.inception_arch import InceptionV3FeatureExtractor
from diffsr.metrics import METRIC_REGISTRY, calculate_metric
from diffsr.metrics.fid_metric import FID, feature_statistics, frechet_distance
from diffsr.metrics.lpips_metric import (
    calculate_lpips,
    default_head_path,
    get_lpips_network,
    lpips_pt,
    wheel_head_path,
)

# LPIPS v0.1 ScalingLayer constants (from the LPIPS package) and the five layers per backbone.
SHIFT = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)
ALEX_CONVS = [
    (0, 64, 3, 11),
    (3, 192, 64, 5),
    (6, 384, 192, 3),
    (8, 256, 384, 3),
    (10, 256, 256, 3),
]
VGG_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
CHANNELS = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}


def he_weights(shape, generator) -> torch.Tensor:
    fan_in = torch.Size(shape[1:]).numel()
    return torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5


def alexnet_state(generator) -> dict:
    state = {}
    for index, out_ch, in_ch, k in ALEX_CONVS:
        state[f"features.{index}.weight"] = he_weights((out_ch, in_ch, k, k), generator)
        state[f"features.{index}.bias"] = 0.05 * torch.randn(out_ch, generator=generator)
    state["classifier.1.weight"] = torch.zeros(()).expand(4096, 9216)  # present in the real file
    return state


def vgg16_state(generator) -> dict:
    state, index, in_ch = {}, 0, 3
    for item in VGG_CFG:
        if item == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = he_weights((item, in_ch, 3, 3), generator)
        state[f"features.{index}.bias"] = 0.05 * torch.randn(item, generator=generator)
        index, in_ch = index + 2, item
    return state


def head_state(net: str, generator, factor: float = 1.0) -> dict:
    """LPIPS linear heads in the package's layout: lin<k>.model.1.weight, 1 x C x 1 x 1, >= 0."""
    return {
        f"lin{k}.model.1.weight": factor * torch.rand(1, c, 1, 1, generator=generator)
        for k, c in enumerate(CHANNELS[net])
    }


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory) -> dict:
    """{net: (backbone path, head path, backbone state, head state)} with random weights."""
    folder = tmp_path_factory.mktemp("lpips_weights")
    generator = torch.Generator().manual_seed(0)
    files = {}
    for net, backbone in (("alex", alexnet_state(generator)), ("vgg", vgg16_state(generator))):
        heads = head_state(net, generator)
        backbone_path, head_path = folder / f"{net}_backbone.pth", folder / f"{net}.pth"
        torch.save(backbone, backbone_path)
        torch.save(heads, head_path)
        files[net] = (str(backbone_path), str(head_path), backbone, heads)
    return files


def reference_features(x: torch.Tensor, net: str, state: dict) -> list[torch.Tensor]:
    """The five LPIPS layers of AlexNet (relu1..5) or VGG16 (relu1_2 ... relu5_3), float64."""

    def conv(t, index, **kwargs):
        weight = state[f"features.{index}.weight"].double()
        bias = state[f"features.{index}.bias"].double()
        return F.relu(F.conv2d(t, weight, bias, **kwargs))

    if net == "alex":
        relu1 = conv(x, 0, stride=4, padding=2)
        relu2 = conv(F.max_pool2d(relu1, 3, 2), 3, padding=2)
        relu3 = conv(F.max_pool2d(relu2, 3, 2), 6, padding=1)
        relu4 = conv(relu3, 8, padding=1)
        return [relu1, relu2, relu3, relu4, conv(relu4, 10, padding=1)]
    outputs, index = [], 0
    for position, item in enumerate(VGG_CFG):
        if item == "M":
            outputs.append(x)  # the last conv of each block, before the pool
            x, index = F.max_pool2d(x, 2), index + 1
            continue
        x, index = conv(x, index, padding=1), index + 2
        if position == len(VGG_CFG) - 1:
            outputs.append(x)
    return outputs


def reference_lpips(img: np.ndarray, img2: np.ndarray, net: str, backbone: dict, heads: dict):
    """LPIPS v0.1 written out step by step on BGR uint8 images, in float64."""

    def prepare(image):
        rgb = torch.from_numpy(image[..., ::-1].astype(np.float64) / 255.0).permute(2, 0, 1)
        return (2 * rgb[None] - 1 - SHIFT) / SCALE

    total = 0.0
    features = zip(
        reference_features(prepare(img), net, backbone),
        reference_features(prepare(img2), net, backbone),
    )
    for k, (a, b) in enumerate(features):
        a = a / (torch.sqrt((a**2).sum(dim=1, keepdim=True)) + 1e-10)
        b = b / (torch.sqrt((b**2).sum(dim=1, keepdim=True)) + 1e-10)
        weighted = F.conv2d((a - b) ** 2, heads[f"lin{k}.model.1.weight"].double())
        total += weighted.mean().item()
    return total


def image_pair(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([128 + 90 * np.sin(xx / 5 + c) * np.cos(yy / 4 - c) for c in range(3)], -1)
    noisy = base + rng.normal(0, 25, base.shape)
    as_uint8 = [np.clip(x, 0, 255).round().astype(np.uint8) for x in (base, noisy)]
    return as_uint8[0], as_uint8[1]


# --------------------------------------------------------------------------------------------
# LPIPS


@pytest.mark.parametrize(("net", "size"), [("alex", 64), ("vgg", 32)])
def test_lpips_matches_step_by_step_reference(lpips_files, net, size):
    backbone_path, head_path, backbone, heads = lpips_files[net]
    img, img2 = image_pair(size)
    value = calculate_lpips(img, img2, net=net, weights_path=backbone_path, lin_path=head_path)
    expected = reference_lpips(img, img2, net, backbone, heads)
    assert expected > 0
    assert value == pytest.approx(expected, rel=1e-5)


def test_lpips_identity_symmetry_and_linearity(lpips_files, tmp_path):
    backbone_path, head_path, _, heads = lpips_files["alex"]
    options = dict(net="alex", weights_path=backbone_path, lin_path=head_path)
    img, img2 = image_pair(48, seed=1)
    assert calculate_lpips(img, img.copy(), **options) == 0.0
    forward = calculate_lpips(img, img2, **options)
    assert forward > 0
    assert calculate_lpips(img2, img, **options) == pytest.approx(forward, rel=1e-6)
    # uint8 and float64 copies of the same image give the same value.
    as_float = calculate_lpips(img.astype(np.float64), img2.astype(np.float64), **options)
    assert as_float == pytest.approx(forward, rel=1e-6)
    # The distance is linear in the heads: doubling them doubles it.
    doubled = tmp_path / "alex_doubled.pth"
    torch.save({key: 2 * value for key, value in heads.items()}, doubled)
    twice = calculate_lpips(img, img2, **{**options, "lin_path": str(doubled)})
    assert twice == pytest.approx(2 * forward, rel=1e-6)


def test_lpips_pt_equals_numpy_version_and_is_differentiable(lpips_files):
    backbone_path, head_path, _, _ = lpips_files["alex"]
    options = dict(net="alex", weights_path=backbone_path, lin_path=head_path)
    pairs = [image_pair(40, seed) for seed in (2, 3)]
    expected = [calculate_lpips(a, b, **options) for a, b in pairs]

    def to_tensor(images):
        return torch.stack(
            [torch.from_numpy(im[..., ::-1] / 255.0).permute(2, 0, 1) for im in images]
        )

    x = to_tensor([a for a, _ in pairs]).float().requires_grad_(True)
    y = to_tensor([b for _, b in pairs]).float()
    values = lpips_pt(x, y, **options)
    assert values.shape == (2,)
    np.testing.assert_allclose(values.detach().numpy(), expected, rtol=1e-5)
    values.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_lpips_crop_border_network_cache_and_registry(lpips_files):
    backbone_path, head_path, _, _ = lpips_files["alex"]
    options = dict(net="alex", weights_path=backbone_path, lin_path=head_path)
    img, img2 = image_pair(48, seed=4)
    cropped = calculate_lpips(img, img2, crop_border=4, **options)
    assert cropped == pytest.approx(calculate_lpips(img[4:-4, 4:-4], img2[4:-4, 4:-4], **options))
    assert get_lpips_network(**options, device="cpu") is get_lpips_network(**options, device="cpu")
    block = {"type": "calculate_lpips", **options, "better": "lower"}
    via_registry = calculate_metric({"img": img, "img2": img2}, block)
    assert via_registry == pytest.approx(calculate_lpips(img, img2, **options))
    with pytest.raises(ValueError, match="at least 31 x 31"):
        calculate_lpips(img[:20, :20], img2[:20, :20], **options)


def test_lpips_missing_files_are_all_named(tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        calculate_lpips(
            *image_pair(40),
            weights_path=str(tmp_path / "a.pth"),
            lin_path=str(tmp_path / "lin.pth"),
        )
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError) and len(info.value.missing) == 2
    for expected in (
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "alex.pth",
        "PerceptualSimilarity",
        "experiments/pretrained_models/lpips_v0.1/alex.pth",
        str(tmp_path / "lin.pth"),
    ):
        assert expected in message


def test_lpips_rejects_bad_head_files(lpips_files, tmp_path):
    backbone_path, _, _, heads = lpips_files["alex"]
    negative = tmp_path / "negative.pth"
    torch.save({**heads, "lin2.model.1.weight": -heads["lin2.model.1.weight"]}, negative)
    with pytest.raises(ValueError, match="negative values"):
        calculate_lpips(*image_pair(40), weights_path=backbone_path, lin_path=str(negative))
    vgg_heads = tmp_path / "vgg_heads.pth"
    torch.save(head_state("vgg", torch.Generator().manual_seed(5)), vgg_heads)
    with pytest.raises(ValueError, match="shapes do not fit"):
        calculate_lpips(*image_pair(40), weights_path=backbone_path, lin_path=str(vgg_heads))
    with pytest.raises(ValueError, match="net must be 'alex' or 'vgg'"):
        calculate_lpips(*image_pair(40), net="squeeze")


def fake_lpips_package(root, heads: dict):
    """A stand-in 'lpips' package whose import fails (as the real one does without
    torchvision), with alex heads in its weights/v0.1 folder."""
    package = root / "lpips"
    (package / "weights" / "v0.1").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('lpips needs torchvision')\n")
    torch.save(heads, package / "weights" / "v0.1" / "alex.pth")
    return package


def test_lpips_heads_default_to_the_lpips_package_without_importing_it(
    lpips_files, tmp_path, monkeypatch
):
    backbone_path, _, backbone, heads = lpips_files["alex"]
    package = fake_lpips_package(tmp_path, heads)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lpips", raising=False)
    assert wheel_head_path("alex") == package / "weights" / "v0.1" / "alex.pth"
    assert wheel_head_path("vgg") is None  # not in this package: the standard path is used
    assert default_head_path("vgg") == "experiments/pretrained_models/lpips_v0.1/vgg.pth"
    img, img2 = image_pair(48)
    value = calculate_lpips(img, img2, weights_path=backbone_path)  # no lin_path
    assert "lpips" not in sys.modules
    assert value == pytest.approx(reference_lpips(img, img2, "alex", backbone, heads), rel=1e-4)


def test_lpips_heads_are_found_without_the_package(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert wheel_head_path("alex") is None
    assert default_head_path("alex") == "experiments/pretrained_models/lpips_v0.1/alex.pth"


@pytest.mark.skipif(
    importlib.util.find_spec("lpips") is None,
    reason="the lpips wheel is not installed (pip install --no-deps lpips==0.1.4)",
)
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_heads_load_from_the_installed_wheel(lpips_files, net):
    """The published heads of the real wheel: 5 non-negative 1 x C x 1 x 1 tensors, loaded."""
    path = wheel_head_path(net)
    assert path is not None and path.parts[-4:] == ("lpips", "weights", "v0.1", f"{net}.pth")
    published = torch.load(path, map_location="cpu", weights_only=True)
    network = get_lpips_network(net, weights_path=lpips_files[net][0], device="cpu")
    assert "lpips" not in sys.modules
    for k, head in enumerate(network.heads):
        expected = published[f"lin{k}.model.1.weight"]
        assert expected.shape == (1, CHANNELS[net][k], 1, 1) and (expected >= 0).all()
        assert torch.equal(head.weight, expected)


# --------------------------------------------------------------------------------------------
# Fréchet distance


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    var1, var2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    value = frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
    assert value == pytest.approx(expected, rel=1e-10)


def eigen_reference(mu1, sigma1, mu2, sigma2) -> float:
    """Tr((S1 S2)^(1/2)) as the sum of square roots of the (real, >= 0) eigenvalues of S1 S2."""
    eigenvalues = np.linalg.eigvals(sigma1 @ sigma2).real.clip(min=0)
    trace = np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(eigenvalues).sum()
    return float(np.sum((mu1 - mu2) ** 2) + trace)


@pytest.mark.parametrize("samples", [50, 6])  # full-rank, then singular covariances (6 < 12)
def test_frechet_distance_matches_eigenvalue_computation(samples):
    rng = np.random.default_rng(samples)
    a = rng.normal(size=(samples, 12)) @ rng.normal(size=(12, 12))
    b = rng.normal(size=(samples, 12)) @ rng.normal(size=(12, 12)) + 0.5
    mu1, sigma1 = feature_statistics(a)
    mu2, sigma2 = feature_statistics(b)
    np.testing.assert_allclose(sigma1, np.cov(a.T))
    value = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert value == pytest.approx(eigen_reference(mu1, sigma1, mu2, sigma2), rel=1e-6)
    assert abs(frechet_distance(mu1, sigma1, mu1, sigma1)) < 1e-6 * np.trace(sigma1)


def test_frechet_distance_retries_with_eps_and_drops_small_imaginary_parts(monkeypatch):
    rng = np.random.default_rng(1)
    mu, sigma1 = rng.normal(size=4), np.diag(rng.uniform(1, 2, 4))
    sigma2 = np.diag(rng.uniform(1, 2, 4))
    calls, real_sqrtm = [], scipy.linalg.sqrtm

    def failing_once(matrix):
        calls.append(matrix)
        if len(calls) == 1:
            return np.full_like(matrix, np.nan)
        return real_sqrtm(matrix) + 1e-5j  # rounding noise

    monkeypatch.setattr(fid_module.scipy.linalg, "sqrtm", failing_once)
    value = frechet_distance(mu, sigma1, mu, sigma2)
    offset = np.eye(4) * fid_module.SQRTM_EPS
    np.testing.assert_allclose(calls[1], (sigma1 + offset) @ (sigma2 + offset))
    expected = np.trace(sigma1 + sigma2) - 2 * np.sqrt(np.diag(sigma1 + offset) * np.diag(sigma2 + offset)).sum()  # fmt: skip
    assert value == pytest.approx(expected, rel=1e-9)
    monkeypatch.setattr(fid_module.scipy.linalg, "sqrtm", lambda m: np.eye(4) * (1 + 0.5j))
    with pytest.raises(ValueError, match="imaginary parts"):
        frechet_distance(mu, sigma1, mu, sigma2)


def test_frechet_distance_input_errors():
    with pytest.raises(ValueError, match="shapes do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="at least 2 feature vectors"):
        feature_statistics(np.zeros((1, 8)))


# --------------------------------------------------------------------------------------------
# FID metric with a random-init Inception in pytorch-fid's layout


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = InceptionV3FeatureExtractor(pretrained_path=None, allow_random_init=True)
    state = {k: v for k, v in model.state_dict().items() if "num_batches_tracked" not in k}
    state["fc.weight"], state["fc.bias"] = torch.zeros(()).expand(1008, 2048), torch.zeros(1008)
    path = tmp_path_factory.mktemp("fid_weights") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return str(path)


@pytest.fixture
def low_dimensional_fid(monkeypatch) -> list:
    """Compute FID on the first 32 of the 2048 feature dimensions (sqrtm of 2048 x 2048 takes
    tens of seconds on 2 cores); records the statistics compute() passes in."""
    received = []

    def marginal_distance(mu1, sigma1, mu2, sigma2):
        received.append((mu1, sigma1, mu2, sigma2))
        keep = slice(0, 32)
        return frechet_distance(mu1[keep], sigma1[keep, keep], mu2[keep], sigma2[keep, keep])

    monkeypatch.setattr(fid_module, "frechet_distance", marginal_distance)
    return received


def make_fid(path: str, **options) -> FID:
    return METRIC_REGISTRY.build({"type": "FID", "weights_path": path, "resize_to": 75, **options})


def test_fid_statistics_equal_direct_feature_computation(inception_file, low_dimensional_fid):
    metric = make_fid(inception_file, batch_size=2)
    pairs = [image_pair(40, seed) for seed in range(3)]
    for restored, reference in pairs:
        metric.update(restored, reference)
    assert metric.count == 3
    value = metric.compute()
    network = metric.network
    with torch.no_grad():
        features = [
            network(torch.from_numpy(im[..., ::-1] / 255.0).permute(2, 0, 1)[None].float())
            .double()
            .numpy()[0]
            for pair in pairs
            for im in pair
        ]
    restored_features, reference_features = np.stack(features[0::2]), np.stack(features[1::2])
    mu1, sigma1, mu2, sigma2 = low_dimensional_fid[0]
    np.testing.assert_allclose(mu1, restored_features.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sigma2, np.cov(reference_features.T), rtol=1e-4, atol=1e-7)
    keep = slice(0, 32)
    expected = eigen_reference(mu1[keep], sigma1[keep, keep], mu2[keep], sigma2[keep, keep])
    assert value == pytest.approx(expected, rel=1e-5) and value > 0


def test_fid_crops_are_seeded_and_a_set_with_itself_is_zero(inception_file, low_dimensional_fid):
    crops = {"size": 24, "per_image": 4}
    images = [image_pair(40, seed)[1] for seed in range(2)]
    metric = make_fid(inception_file, crops=crops, seed=3)
    for image in images:
        metric.update(image, image.copy())
    assert metric.count == 8
    assert abs(metric.compute()) < 1e-6
    first = np.concatenate(metric.restored_features)

    metric.reset()
    assert metric.count == 0
    for image in images:
        metric.update(image, image)
    np.testing.assert_array_equal(np.concatenate(metric.restored_features), first)
    other_seed = make_fid(inception_file, crops=crops, seed=4)
    for image in images:
        other_seed.update(image, image)
    assert not np.array_equal(np.concatenate(other_seed.restored_features), first)


def test_fid_option_and_input_errors(inception_file, tmp_path):
    assert METRIC_REGISTRY.get("FID").set_metric is True
    with pytest.raises(ValueError, match="crops must be null or a mapping"):
        make_fid(inception_file, crops={"size": 24})
    with pytest.raises(ValueError, match=r"crops\.per_image must be a positive int"):
        make_fid(inception_file, crops={"size": 24, "per_image": 0})
    metric = make_fid(inception_file, crops={"size": 64, "per_image": 2})
    with pytest.raises(ValueError, match="larger than the 40 x 40 image"):
        metric.update(*image_pair(40))
    with pytest.raises(ValueError, match="image shapes differ"):
        metric.update(image_pair(40)[0], image_pair(48)[0])
    with pytest.raises(ValueError, match="at least 2 images"):
        metric.compute()
    with pytest.raises(MissingWeightsError) as info:
        FID(weights_path=str(tmp_path / "nothing.pth"))
    assert "pt_inception-2015-12-05-6726825d.pth" in str(info.value)
    assert "github.com/mseitzer/pytorch-fid/releases" in str(info.value)
