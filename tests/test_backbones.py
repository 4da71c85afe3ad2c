"""AlexNet / ResNet-50 / VGG16 classifier / Inception-v3 backbones: torchvision key layouts,
published parameter counts, loading by path, and forwards against step-by-step references."""

import pytest
import torch
import torch.nn.functional as F

from diffsr.archs import build_network
from diffsr.archs.alexnet_arch import AlexNetFeatureExtractor
from diffsr.archs.backbone_util import MissingWeightsError, WeightFile, read_state_dict
from diffsr.archs.inception_arch import InceptionA, InceptionE, InceptionV3FeatureExtractor
from diffsr.archs.resnet_arch import ResNet50
from diffsr.archs.vgg_classifier_arch import VGG16Classifier

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)


def bn_layout(prefix: str, channels: int) -> list:
    return [
        (f"{prefix}.weight", (channels,)),
        (f"{prefix}.bias", (channels,)),
        (f"{prefix}.running_mean", (channels,)),
        (f"{prefix}.running_var", (channels,)),
        (f"{prefix}.num_batches_tracked", ()),
    ]


def parameter_count(layout: list) -> int:
    """Learnable elements of a layout (BatchNorm running statistics are buffers)."""
    total = 0
    for key, shape in layout:
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        total += torch.Size(shape).numel()
    return total


def layout_of(module: torch.nn.Module) -> list:
    return [(key, tuple(value.shape)) for key, value in module.state_dict().items()]


def random_state(layout: list, seed: int = 0) -> dict:
    """Random tensors for a layout: He-scaled weights, small biases, positive running_var."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        elif len(shape) > 1:  # conv / linear weight
            fan_in = torch.Size(shape[1:]).numel()
            state[key] = torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5
        else:
            state[key] = 0.1 * torch.randn(shape, generator=generator)
    return state


def constant_state(layout: list) -> dict:
    """A distinct constant per key, stored as stride-0 views (the saved file stays tiny)."""
    return {
        key: torch.tensor(float(index + 1)).expand(shape) if shape else torch.tensor(index + 1)
        for index, (key, shape) in enumerate(layout)
    }


# --------------------------------------------------------------------------------------------
# Layouts written down from the architecture descriptions (torchvision's module names).


def torchvision_alexnet_layout(num_classes: int = 1000) -> tuple[list, list]:
    """(features, classifier) of torchvision's AlexNet: 5 convs, then 9216-4096-4096-classes."""
    convs = [(0, 64, 3, 11), (3, 192, 64, 5), (6, 384, 192, 3), (8, 256, 384, 3), (10, 256, 256, 3)]
    features = []
    for index, out_ch, in_ch, k in convs:
        features += [(f"features.{index}.weight", (out_ch, in_ch, k, k))]
        features += [(f"features.{index}.bias", (out_ch,))]
    classifier = []
    for index, out_f, in_f in [(1, 4096, 256 * 6 * 6), (4, 4096, 4096), (6, num_classes, 4096)]:
        classifier += [(f"classifier.{index}.weight", (out_f, in_f))]
        classifier += [(f"classifier.{index}.bias", (out_f,))]
    return features, classifier


def torchvision_resnet50_layout(num_classes: int = 1000) -> list:
    """conv1/bn1, Bottleneck stages [3, 4, 6, 3] of widths 64..512 (x4 outputs), fc."""
    layout = [("conv1.weight", (64, 3, 7, 7)), *bn_layout("bn1", 64)]
    in_ch = 64
    for stage, (blocks, width) in enumerate([(3, 64), (4, 128), (6, 256), (3, 512)], start=1):
        for block in range(blocks):
            p = f"layer{stage}.{block}"
            layout += [(f"{p}.conv1.weight", (width, in_ch, 1, 1)), *bn_layout(f"{p}.bn1", width)]
            layout += [(f"{p}.conv2.weight", (width, width, 3, 3)), *bn_layout(f"{p}.bn2", width)]
            layout += [(f"{p}.conv3.weight", (4 * width, width, 1, 1))]
            layout += bn_layout(f"{p}.bn3", 4 * width)
            if block == 0:
                layout += [(f"{p}.downsample.0.weight", (4 * width, in_ch, 1, 1))]
                layout += bn_layout(f"{p}.downsample.1", 4 * width)
            in_ch = 4 * width
    return [*layout, ("fc.weight", (num_classes, 2048)), ("fc.bias", (num_classes,))]


def torchvision_vgg16_layout(num_classes: int = 1000) -> list:
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layout, index, in_ch = [], 0, 3
    for item in cfg:
        if item != "M":
            layout += [(f"features.{index}.weight", (item, in_ch, 3, 3))]
            layout += [(f"features.{index}.bias", (item,))]
            in_ch, index = item, index + 1  # conv, then its ReLU below
        index += 1
    for index, out_f, in_f in [(0, 4096, 512 * 7 * 7), (3, 4096, 4096), (6, num_classes, 4096)]:
        layout += [(f"classifier.{index}.weight", (out_f, in_f))]
        layout += [(f"classifier.{index}.bias", (out_f,))]
    return layout


def basic_conv_layout(prefix: str, in_ch: int, out_ch: int, kh: int, kw: int) -> list:
    return [(f"{prefix}.conv.weight", (out_ch, in_ch, kh, kw)), *bn_layout(f"{prefix}.bn", out_ch)]


def inception_trunk_layout() -> list:
    """torchvision Inception3 up to Mixed_7c (no AuxLogits, no fc): (name, in, out, kh, kw)."""

    def block_a(cin, pool):
        return [("branch1x1", cin, 64, 1, 1), ("branch5x5_1", cin, 48, 1, 1),
                ("branch5x5_2", 48, 64, 5, 5), ("branch3x3dbl_1", cin, 64, 1, 1),
                ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3),
                ("branch_pool", cin, pool, 1, 1)]  # fmt: skip

    def block_b(cin):
        return [("branch3x3", cin, 384, 3, 3), ("branch3x3dbl_1", cin, 64, 1, 1),
                ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3)]  # fmt: skip

    def block_c(c7):
        return [("branch1x1", 768, 192, 1, 1), ("branch7x7_1", 768, c7, 1, 1),
                ("branch7x7_2", c7, c7, 1, 7), ("branch7x7_3", c7, 192, 7, 1),
                ("branch7x7dbl_1", 768, c7, 1, 1), ("branch7x7dbl_2", c7, c7, 7, 1),
                ("branch7x7dbl_3", c7, c7, 1, 7), ("branch7x7dbl_4", c7, c7, 7, 1),
                ("branch7x7dbl_5", c7, 192, 1, 7), ("branch_pool", 768, 192, 1, 1)]  # fmt: skip

    def block_d(cin):
        return [("branch3x3_1", cin, 192, 1, 1), ("branch3x3_2", 192, 320, 3, 3),
                ("branch7x7x3_1", cin, 192, 1, 1), ("branch7x7x3_2", 192, 192, 1, 7),
                ("branch7x7x3_3", 192, 192, 7, 1), ("branch7x7x3_4", 192, 192, 3, 3)]  # fmt: skip

    def block_e(cin):
        return [("branch1x1", cin, 320, 1, 1), ("branch3x3_1", cin, 384, 1, 1),
                ("branch3x3_2a", 384, 384, 1, 3), ("branch3x3_2b", 384, 384, 3, 1),
                ("branch3x3dbl_1", cin, 448, 1, 1), ("branch3x3dbl_2", 448, 384, 3, 3),
                ("branch3x3dbl_3a", 384, 384, 1, 3), ("branch3x3dbl_3b", 384, 384, 3, 1),
                ("branch_pool", cin, 192, 1, 1)]  # fmt: skip

    stem = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3),
            ("Conv2d_2b_3x3", 32, 64, 3, 3), ("Conv2d_3b_1x1", 64, 80, 1, 1),
            ("Conv2d_4a_3x3", 80, 192, 3, 3)]  # fmt: skip
    mixed = {
        "Mixed_5b": block_a(192, 32), "Mixed_5c": block_a(256, 64), "Mixed_5d": block_a(288, 64),
        "Mixed_6a": block_b(288), "Mixed_6b": block_c(128), "Mixed_6c": block_c(160),
        "Mixed_6d": block_c(160), "Mixed_6e": block_c(192), "Mixed_7a": block_d(768),
        "Mixed_7b": block_e(1280), "Mixed_7c": block_e(2048),
    }  # fmt: skip
    layout = [item for name, *dims in stem for item in basic_conv_layout(name, *dims)]
    for block, convs in mixed.items():
        for name, *dims in convs:
            layout += basic_conv_layout(f"{block}.{name}", *dims)
    return layout


def inception_aux_layout(num_classes: int) -> list:
    return [*basic_conv_layout("AuxLogits.conv0", 768, 128, 1, 1),
            *basic_conv_layout("AuxLogits.conv1", 128, 768, 5, 5),
            ("AuxLogits.fc.weight", (num_classes, 768)), ("AuxLogits.fc.bias", (num_classes,))]  # fmt: skip


def fc_layout(num_classes: int) -> list:
    return [("fc.weight", (num_classes, 2048)), ("fc.bias", (num_classes,))]


# --------------------------------------------------------------------------------------------
# Published totals (torchvision model docs): alexnet 61,100,840, resnet50 25,557,032,
# vgg16 138,357,544, inception_v3 27,161,264 (with AuxLogits and a 1000-class fc).


def test_layouts_reproduce_published_parameter_counts():
    features, classifier = torchvision_alexnet_layout()
    assert parameter_count(features + classifier) == 61_100_840
    assert parameter_count(torchvision_resnet50_layout()) == 25_557_032
    assert len(torchvision_resnet50_layout()) == 320
    assert parameter_count(torchvision_vgg16_layout()) == 138_357_544
    inception = inception_trunk_layout() + inception_aux_layout(1000) + fc_layout(1000)
    assert parameter_count(inception) == 27_161_264


def test_alexnet_layout_and_count():
    model = AlexNetFeatureExtractor(pretrained_path=None, allow_random_init=True)
    features, _ = torchvision_alexnet_layout()
    assert layout_of(model) == features
    assert sum(p.numel() for p in model.parameters()) == 2_469_696


def test_resnet50_layout_and_count():
    model = ResNet50()
    assert layout_of(model) == torchvision_resnet50_layout()
    assert sum(p.numel() for p in model.parameters()) == 25_557_032


def test_vgg16_classifier_layout_count_and_shapes():
    with torch.device("meta"):
        model = VGG16Classifier()
        assert layout_of(model) == torchvision_vgg16_layout()
        assert sum(p.numel() for p in model.parameters()) == 138_357_544
        cub = VGG16Classifier(num_classes=200)
        x = torch.empty(2, 3, 32, 32)
        assert cub(x).shape == (2, 200)
        assert cub.forward_features(x).shape == (2, 4096)


def test_inception_trunk_layout_and_count():
    model = InceptionV3FeatureExtractor(pretrained_path=None, allow_random_init=True)
    assert dict(layout_of(model)) == dict(inception_trunk_layout())
    # 27,161,264 minus AuxLogits (3,326,696) and the 1000-class fc (2,049,000).
    assert sum(p.numel() for p in model.parameters()) == 21_785_568


# --------------------------------------------------------------------------------------------
# AlexNet: loading torchvision's file and the forward.


def reference_alexnet(x: torch.Tensor, state: dict) -> dict:
    """torchvision AlexNet features step by step in float64 (ImageNet-normalised input)."""

    def conv(t, index, stride, padding):
        weight = state[f"features.{index}.weight"].double()
        bias = state[f"features.{index}.bias"].double()
        return F.relu(F.conv2d(t, weight, bias, stride=stride, padding=padding))

    x = (x.double() - IMAGENET_MEAN) / IMAGENET_STD
    relu1 = conv(x, 0, 4, 2)
    relu2 = conv(F.max_pool2d(relu1, 3, 2), 3, 1, 2)
    relu3 = conv(F.max_pool2d(relu2, 3, 2), 6, 1, 1)
    relu4 = conv(relu3, 8, 1, 1)
    relu5 = conv(relu4, 10, 1, 1)
    return {"relu1": relu1, "relu2": relu2, "relu3": relu3, "relu4": relu4, "relu5": relu5}


def test_alexnet_loads_torchvision_file_and_matches_reference(tmp_path):
    features, classifier = torchvision_alexnet_layout()
    state = {**random_state(features), **constant_state(classifier)}
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(state, path)
    model = build_network({"type": "AlexNetFeatureExtractor", "pretrained_path": str(path)})
    assert not any(p.requires_grad for p in model.parameters())
    x = torch.rand(2, 3, 64, 64)
    outputs = model(x)
    expected = reference_alexnet(x, state)
    assert list(outputs) == list(expected)
    for name, value in expected.items():
        torch.testing.assert_close(outputs[name].double(), value, rtol=1e-4, atol=1e-5)


def test_alexnet_rejects_a_resnet_file(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(ValueError, match=r"wrong\.pth lacks the keys features\.0\.weight"):
        AlexNetFeatureExtractor(pretrained_path=str(path))


# --------------------------------------------------------------------------------------------
# ResNet-50: loading, fc replacement, forward.


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory) -> tuple[str, dict]:
    layout = torchvision_resnet50_layout()
    # Older torchvision files (resnet50-19c8e357.pth) have no num_batches_tracked entries.
    state = {k: v for k, v in random_state(layout).items() if "num_batches_tracked" not in k}
    path = tmp_path_factory.mktemp("weights") / "resnet50-19c8e357.pth"
    torch.save(state, path)
    return str(path), state


def reference_resnet50(x: torch.Tensor, state: dict) -> torch.Tensor:
    """ResNet-50 v1.5 (stride on the 3x3 conv) step by step in float64 -> logits."""

    def bn(t, prefix):
        return F.batch_norm(
            t,
            state[f"{prefix}.running_mean"].double(),
            state[f"{prefix}.running_var"].double(),
            state[f"{prefix}.weight"].double(),
            state[f"{prefix}.bias"].double(),
            eps=1e-5,
        )

    def conv(t, key, stride=1, padding=0):
        return F.conv2d(t, state[key].double(), stride=stride, padding=padding)

    x = (x.double() - IMAGENET_MEAN) / IMAGENET_STD
    x = F.relu(bn(conv(x, "conv1.weight", 2, 3), "bn1"))
    x = F.max_pool2d(x, 3, 2, padding=1)
    for stage, blocks in enumerate([3, 4, 6, 3], start=1):
        for block in range(blocks):
            p = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            out = F.relu(bn(conv(x, f"{p}.conv1.weight"), f"{p}.bn1"))
            out = F.relu(bn(conv(out, f"{p}.conv2.weight", stride, 1), f"{p}.bn2"))
            out = bn(conv(out, f"{p}.conv3.weight"), f"{p}.bn3")
            if block == 0:
                x = bn(conv(x, f"{p}.downsample.0.weight", stride), f"{p}.downsample.1")
            x = F.relu(out + x)
    pooled = x.mean(dim=(2, 3))
    return pooled @ state["fc.weight"].double().T + state["fc.bias"].double()


def test_resnet50_loads_file_and_matches_reference(resnet50_file):
    path, state = resnet50_file
    model = build_network({"type": "ResNet50", "pretrained_path": path}).eval()
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, state[key]), key
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
    assert logits.shape == (2, 1000) and features.shape == (2, 2048)
    torch.testing.assert_close(logits.double(), reference_resnet50(x, state), rtol=1e-4, atol=1e-4)


def test_resnet50_fc_replacement(resnet50_file, tmp_path):
    path, state = resnet50_file
    with pytest.raises(ValueError, match="skip_fc_mismatch: true"):
        ResNet50(num_classes=200, pretrained_path=path)
    model = ResNet50(num_classes=200, pretrained_path=path, skip_fc_mismatch=True)
    loaded = model.state_dict()
    assert loaded["fc.weight"].shape == (200, 2048) and loaded["fc.bias"].shape == (200,)
    for key, value in loaded.items():
        if not key.startswith("fc.") and not key.endswith("num_batches_tracked"):
            assert torch.equal(value, state[key]), key
    # A fine-tuned CUB checkpoint written by diffsr ({'params': ...}) loads back exactly.
    checkpoint = tmp_path / "cub_resnet50.pth"
    torch.save({"params": loaded}, checkpoint)
    again = ResNet50(num_classes=200, pretrained_path=str(checkpoint))
    assert torch.equal(again.fc.weight, model.fc.weight)


def test_resnet50_missing_file_names_the_download():
    with pytest.raises(MissingWeightsError) as info:
        ResNet50(pretrained_path="nowhere/resnet50.pth")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "nowhere/resnet50.pth" in message and "resnet50-0676ba61.pth" in message
    assert "https://download.pytorch.org/models/" in message
    assert "experiments/pretrained_models/resnet50-0676ba61.pth" in message


def test_read_state_dict_rejects_non_state_dicts(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="expected a state dict of tensors"):
        read_state_dict(path, WeightFile("x.pth", "https://example.org/x.pth", "test file"))


# --------------------------------------------------------------------------------------------
# VGG16 classifier: loading with a replaced last layer.


def test_vgg16_classifier_loads_with_new_last_layer(tmp_path):
    state = constant_state(torchvision_vgg16_layout(num_classes=1000))
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(state, path)
    assert path.stat().st_size < 1_000_000  # stride-0 tensors: the test stays light
    with torch.device("meta"), pytest.raises(ValueError, match=r"classifier\.6\.weight"):
        VGG16Classifier(num_classes=200, pretrained_path=str(path))
    model = VGG16Classifier(num_classes=200, pretrained_path=str(path), skip_fc_mismatch=True)
    for key, value in model.state_dict().items():
        if key.startswith("classifier.6."):
            assert value.shape[0] == 200 and not torch.all(value == state[key].flatten()[0])
        else:
            assert torch.all(value == state[key].flatten()[0]), key
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 200)


# --------------------------------------------------------------------------------------------
# Inception-v3: the two published layouts, variant checks, blocks against references.


@pytest.mark.parametrize("variant", ["fid", "torchvision"])
def test_inception_loads_published_layouts(tmp_path, variant):
    trunk = inception_trunk_layout()
    if variant == "fid":  # pytorch-fid: 1008-class fc, no AuxLogits, no num_batches_tracked
        layout = [item for item in trunk if "num_batches_tracked" not in item[0]] + fc_layout(1008)
    else:
        layout = trunk + inception_aux_layout(1000) + fc_layout(1000)
    state = constant_state(layout)
    path = tmp_path / f"{variant}.pth"
    torch.save(state, path)
    model = InceptionV3FeatureExtractor(pretrained_path=str(path), variant=variant)
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.all(value == state[key].flatten()[0]), key
    other = "torchvision" if variant == "fid" else "fid"
    with pytest.raises(ValueError, match=f"set variant: {variant}"):
        InceptionV3FeatureExtractor(pretrained_path=str(path), variant=other)


def test_inception_variants_pool_like_their_graphs():
    with torch.device("meta"):
        fid = InceptionV3FeatureExtractor(pretrained_path=None, allow_random_init=True)
        torchvision = InceptionV3FeatureExtractor(
            pretrained_path=None, allow_random_init=True, variant="torchvision"
        )
    # TF graph: padding excluded from every average pool, max pool in Mixed_7c's pool branch.
    assert [fid.get_submodule(name).pool for name in POOLING_BLOCKS] == ["avg_valid"] * 8 + ["max"]
    assert [torchvision.get_submodule(name).pool for name in POOLING_BLOCKS] == ["avg"] * 9


def test_inception_features_shape_and_missing_file():
    model = InceptionV3FeatureExtractor(pretrained_path=None, allow_random_init=True, resize_to=75)
    with torch.no_grad():
        features = model(torch.rand(2, 3, 40, 40))
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    with pytest.raises(MissingWeightsError, match=r"pt_inception-2015-12-05-6726825d\.pth"):
        InceptionV3FeatureExtractor(pretrained_path="missing/pt_inception.pth")
    with pytest.raises(ValueError, match="allow_random_init"):
        InceptionV3FeatureExtractor(pretrained_path=None)


POOLING_BLOCKS = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                  "Mixed_6e", "Mixed_7b", "Mixed_7c"]  # fmt: skip


def randomize_batchnorm(module: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(3)
    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_mean.copy_(0.1 * torch.randn(bn.num_features, generator=generator))
            bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=generator))
            bn.weight.data.copy_(1 + 0.1 * torch.randn(bn.num_features, generator=generator))
            bn.bias.data.copy_(0.1 * torch.randn(bn.num_features, generator=generator))


def basic_conv(x: torch.Tensor, state: dict, prefix: str, stride: int = 1, padding=0):
    """Conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU, in float64."""
    y = F.conv2d(x, state[f"{prefix}.conv.weight"].double(), stride=stride, padding=padding)
    y = F.batch_norm(
        y,
        state[f"{prefix}.bn.running_mean"].double(),
        state[f"{prefix}.bn.running_var"].double(),
        state[f"{prefix}.bn.weight"].double(),
        state[f"{prefix}.bn.bias"].double(),
        eps=1e-3,
    )
    return F.relu(y)


@pytest.mark.parametrize("count_include_pad", [False, True])
def test_inception_a_matches_reference(count_include_pad):
    block = InceptionA(16, pool_features=8, pool="avg" if count_include_pad else "avg_valid")
    randomize_batchnorm(block)
    block.eval()
    state = block.state_dict()
    x = torch.randn(1, 16, 6, 6, dtype=torch.float64)
    b1 = basic_conv(x, state, "branch1x1")
    b5 = basic_conv(basic_conv(x, state, "branch5x5_1"), state, "branch5x5_2", padding=2)
    b3 = basic_conv(x, state, "branch3x3dbl_1")
    b3 = basic_conv(basic_conv(b3, state, "branch3x3dbl_2", padding=1), state, "branch3x3dbl_3", padding=1)  # fmt: skip
    pooled = F.avg_pool2d(x, 3, 1, 1, count_include_pad=count_include_pad)
    expected = torch.cat([b1, b5, b3, basic_conv(pooled, state, "branch_pool")], dim=1)
    with torch.no_grad():
        result = block.double()(x)
    assert result.shape == (1, 64 + 64 + 96 + 8, 6, 6)
    torch.testing.assert_close(result, expected)


@pytest.mark.parametrize("pool", ["max", "avg_valid"])
def test_inception_e_matches_reference(pool):
    block = InceptionE(16, pool=pool)
    randomize_batchnorm(block)
    block.eval()
    state = block.state_dict()
    x = torch.randn(1, 16, 4, 4, dtype=torch.float64)
    b1 = basic_conv(x, state, "branch1x1")
    t = basic_conv(x, state, "branch3x3_1")
    b3 = torch.cat(
        [
            basic_conv(t, state, "branch3x3_2a", padding=(0, 1)),
            basic_conv(t, state, "branch3x3_2b", padding=(1, 0)),
        ],
        dim=1,
    )
    t = basic_conv(basic_conv(x, state, "branch3x3dbl_1"), state, "branch3x3dbl_2", padding=1)
    bd = torch.cat(
        [
            basic_conv(t, state, "branch3x3dbl_3a", padding=(0, 1)),
            basic_conv(t, state, "branch3x3dbl_3b", padding=(1, 0)),
        ],
        dim=1,
    )
    if pool == "max":  # the TF FID graph's Mixed_7c
        pooled = F.max_pool2d(x, 3, 1, 1)
    else:
        pooled = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    expected = torch.cat([b1, b3, bd, basic_conv(pooled, state, "branch_pool")], dim=1)
    with torch.no_grad():
        result = block.double()(x)
    assert result.shape == (1, 2048, 4, 4)
    torch.testing.assert_close(result, expected)
