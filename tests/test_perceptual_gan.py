"""VGG16 feature extractor, perceptual loss, GAN loss and PatchGAN discriminator."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffsr.archs import build_network
from diffsr.archs.vgg_arch import VGG16FeatureExtractor
from diffsr.losses import LOSS_REGISTRY, build_loss

# torchvision's vgg16().features: conv indices and channels, "M" = 2x2 max-pool.
TORCHVISION_VGG16 = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
]
RELU_OUTPUTS = {3: "relu1_2", 8: "relu2_2", 15: "relu3_3", 22: "relu4_3", 29: "relu5_3"}


def torchvision_layout_state_dict() -> dict[str, torch.Tensor]:
    """Random He-initialised weights under torchvision's VGG16 key names (plus a classifier)."""
    generator = torch.Generator().manual_seed(1)
    state, index, in_ch = {}, 0, 3
    for item in TORCHVISION_VGG16:
        if item == "M":
            index += 1
            continue
        std = (2.0 / (9 * in_ch)) ** 0.5
        state[f"features.{index}.weight"] = (
            torch.randn(item, in_ch, 3, 3, generator=generator) * std
        )
        state[f"features.{index}.bias"] = 0.1 * torch.randn(item, generator=generator)
        index, in_ch = index + 2, item
    # The real file holds a 4096-wide classifier; small stand-ins suffice since it is ignored.
    state["classifier.0.weight"] = torch.zeros(4, 8)
    state["classifier.0.bias"] = torch.zeros(4)
    return state


def reference_features(x: torch.Tensor, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Layer-by-layer VGG16 forward with F.conv2d on the file's weights, in float64."""
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=x.dtype).view(1, 3, 1, 1)
    x, index, outputs = (x - mean) / std, 0, {}
    for item in TORCHVISION_VGG16:
        if item == "M":
            x = F.max_pool2d(x, 2)
            index += 1
            continue
        weight = state[f"features.{index}.weight"].to(x.dtype)
        bias = state[f"features.{index}.bias"].to(x.dtype)
        x = F.relu(F.conv2d(x, weight, bias, padding=1))
        if index + 1 in RELU_OUTPUTS:
            outputs[RELU_OUTPUTS[index + 1]] = x
        index += 2
    return outputs


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> tuple[str, dict[str, torch.Tensor]]:
    state = torchvision_layout_state_dict()
    path = tmp_path_factory.mktemp("weights") / "vgg16-397923af.pth"
    torch.save(state, path)
    return str(path), state


def test_loads_torchvision_layout(vgg_file):
    path, state = vgg_file
    vgg = build_network(
        {"type": "VGG16FeatureExtractor", "layer_names": ["relu5_3"], "pretrained_path": path}
    )
    ours = {f"features.{k}": v for k, v in vgg.features.state_dict().items()}
    assert set(vgg.state_dict()) == set(ours)
    assert set(ours) == {k for k in state if k.startswith("features.")}
    for key, value in ours.items():
        assert torch.equal(value, state[key]), key


def test_features_equal_layer_by_layer_reference(vgg_file):
    path, state = vgg_file
    names = list(RELU_OUTPUTS.values())
    vgg = VGG16FeatureExtractor(layer_names=names, pretrained_path=path).double()
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    ours, expected = vgg(x), reference_features(x, state)
    assert list(ours) == names
    for name in names:
        assert ours[name].abs().max() > 0, name
        # atol covers the float32-rounded ImageNet mean / std constants inside the extractor.
        torch.testing.assert_close(ours[name], expected[name], rtol=1e-6, atol=1e-5)


def test_truncated_and_frozen(vgg_file):
    path, _ = vgg_file
    vgg = VGG16FeatureExtractor(layer_names=["relu2_2", "relu1_2"], pretrained_path=path)
    assert len(vgg.features) == 9  # relu2_2 is features[8]: nothing deeper is built or run
    assert set(vgg(torch.rand(1, 3, 16, 16))) == {"relu1_2", "relu2_2"}
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training


def test_vgg_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        VGG16FeatureExtractor(pretrained_path=str(tmp_path / "missing.pth"))
    for fragment in ("vgg16-397923af.pth", "download.pytorch.org", "experiments/pretrained_models"):
        assert fragment in str(err.value)
    with pytest.raises(ValueError, match="allow_random_init"):
        VGG16FeatureExtractor(pretrained_path=None)
    bad = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="unexpected keys"):
        VGG16FeatureExtractor(pretrained_path=str(bad))
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, bad)
    with pytest.raises(ValueError, match=r"features\.0\.bias"):
        VGG16FeatureExtractor(pretrained_path=str(bad))
    with pytest.raises(ValueError, match="relu3_3"):
        VGG16FeatureExtractor(layer_names=["relu3-3"], allow_random_init=True, pretrained_path=None)


@pytest.mark.parametrize("criterion", ["l1", "mse"])
def test_perceptual_loss(vgg_file, criterion):
    path, state = vgg_file
    layer_weights = {"relu1_2": 1.0, "relu2_2": 0.5, "relu3_3": 2.0}
    loss_fn = build_loss(
        {
            "type": "PerceptualLoss",
            "layer_weights": layer_weights,
            "vgg_path": path,
            "criterion": criterion,
            "loss_weight": 0.001,
        }
    )
    pred = torch.rand(2, 3, 16, 16, requires_grad=True)
    target = torch.rand(2, 3, 16, 16)
    loss = loss_fn(pred, target)

    ref_pred = reference_features(pred.detach().double(), state)
    ref_target = reference_features(target.double(), state)
    power = 1 if criterion == "l1" else 2
    expected = 0.001 * sum(
        w * ((ref_pred[n] - ref_target[n]).abs() ** power).mean() for n, w in layer_weights.items()
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)

    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.parameters())
    assert loss_fn(target, target.clone()).item() == 0.0


def test_perceptual_loss_options():
    loss_fn = build_loss({"type": "PerceptualLoss", "vgg_path": None, "allow_random_init": True})
    assert loss_fn.layer_weights == {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0}
    assert len(loss_fn.vgg.features) == 16
    with pytest.raises(ValueError, match="l1, l2, mse"):
        build_loss({"type": "PerceptualLoss", "criterion": "fro", "vgg_path": None})


def softplus(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(x))


def test_gan_loss_formulas():
    logits = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    x = logits.numpy()
    sigmoid = 1 / (1 + np.exp(-x))
    t = 0.9
    cases = {
        ("vanilla", True): softplus(-x).mean(),
        ("vanilla", False): softplus(x).mean(),
        ("lsgan", True): ((x - 1) ** 2).mean(),
        ("lsgan", False): (x**2).mean(),
        ("wgan", True): -x.mean(),
        ("wgan", False): x.mean(),
        ("hinge", True): np.maximum(0, 1 - x).mean(),
        ("hinge", False): np.maximum(0, 1 + x).mean(),
    }
    for (gan_type, real), expected in cases.items():
        loss = build_loss({"type": "GANLoss", "gan_type": gan_type, "loss_weight": 0.005})
        assert loss(logits, real, is_disc=True).item() == pytest.approx(expected, abs=1e-12)
        if gan_type != "hinge":  # the discriminator loss is unweighted, the generator's weighted
            assert loss(logits, real).item() == pytest.approx(0.005 * expected, abs=1e-12)
    hinge = build_loss({"type": "GANLoss", "gan_type": "hinge", "loss_weight": 0.005})
    for real in (True, False):
        assert hinge(logits, real).item() == pytest.approx(-0.005 * x.mean(), abs=1e-12)
    smooth = build_loss({"type": "GANLoss", "real_label_val": t})
    expected = -(t * np.log(sigmoid) + (1 - t) * np.log(1 - sigmoid)).mean()
    assert smooth(logits, True, is_disc=True).item() == pytest.approx(expected, abs=1e-12)


def test_gan_loss_registry_and_errors():
    assert LOSS_REGISTRY.get("GANLoss").gan_loss is True
    with pytest.raises(ValueError, match="vanilla, lsgan, wgan, hinge"):
        build_loss({"type": "GANLoss", "gan_type": "wgan-gp"})


@pytest.mark.parametrize(
    ("size", "num_layers", "expected"),
    [((64, 64), 3, (6, 6)), ((48, 80), 3, (4, 8)), ((32, 32), 2, (6, 6)), ((35, 33), 3, (2, 2))],
)
def test_discriminator_output_shape(size, num_layers, expected):
    net = build_network({"type": "PatchDiscriminator", "num_feat": 8, "num_layers": num_layers})
    # Expected sizes by hand: each stride-2 4x4 conv with padding 1 maps n -> floor(n / 2),
    # the two stride-1 4x4 convs with padding 1 each remove one pixel.
    assert net(torch.rand(2, 3, *size)).shape == (2, 1, *expected)


def test_discriminator_training_signal():
    net = build_network({"type": "PatchDiscriminator", "num_feat": 8})
    plain = build_network({"type": "PatchDiscriminator", "num_feat": 8, "spectral_norm": False})
    assert any("parametrizations" in k for k in net.state_dict())
    assert not any("parametrizations" in k for k in plain.state_dict())
    fake = torch.rand(1, 3, 32, 32, requires_grad=True)
    gan = build_loss({"type": "GANLoss"})
    gan(net(fake), True).backward()
    assert fake.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="too small"):
        net(torch.rand(1, 3, 16, 16))
