"""BasicSR (XPixelGroup/BasicSR) option files: model names, perceptual-loss arguments, GPUs."""

from __future__ import annotations

from typing import Any

from diffsr.utils.dialects import DialectError, ModelType, Rule

CODEBASE = "BasicSR"

VIDEO_OR_FACE = (
    "diffsr trains single-image paired restoration (RestorationModel, RestorationGANModel); "
    "BasicSR's video, face and generation models have no counterpart here. Train them in BasicSR."
)


def _swinir_padding(opt: dict) -> None:
    """SwinIRModel pads the test input to a multiple of ``network_g.window_size``."""
    window = (opt.get("network_g") or {}).get("window_size")
    val = opt.setdefault("val", {}) if isinstance(opt.get("val", {}), dict) else {}
    if window and "window_size" not in val:
        val["window_size"] = window


MODEL_TYPES = {
    "SRModel": ModelType("RestorationModel"),
    "SwinIRModel": ModelType(
        "RestorationModel",
        "validation and test pad the input to a multiple of network_g.window_size "
        "(val.window_size), as SwinIRModel does",
        apply=_swinir_padding,
    ),
    "SRGANModel": ModelType("RestorationGANModel"),
    "ESRGANModel": ModelType(
        "RelativisticGANModel",
        "train.gan_opt is applied as ESRGAN's relativistic average GAN loss",
    ),
    **{
        name: ModelType(None, VIDEO_OR_FACE)
        for name in (
            "EDVRModel",
            "VideoBaseModel",
            "VideoGANModel",
            "VideoRecurrentModel",
            "VideoRecurrentGANModel",
            "StyleGAN2Model",
            "HiFaceGANModel",
            "RealESRGANModel",
            "RealESRNetModel",
        )
    },
}

INERT = [
    Rule(
        "num_gpu",
        "the launcher decides the processes (torchrun --nproc_per_node / srun) and `device` "
        "the device (auto: CUDA when present); num_gpu: 0 alone is read, as device: cpu.",
    ),
    Rule(
        "path.ignore_resume_networks",
        "null: diffsr resumes every network from the training state, as BasicSR does then.",
        when=lambda value: not value,
    ),
    Rule(
        "datasets.*.prefetch_mode",
        "diffsr's DataLoader prefetches with its workers (prefetch_factor, pin_memory); BasicSR's "
        "CPU/CUDA prefetchers are not used.",
    ),
]

UNSUPPORTED = [
    Rule(
        "train.*.gan_type",
        "diffsr's GANLoss has gan_type vanilla, lsgan, wgan and hinge; choose one of them.",
        when=lambda value: value == "wgan_softplus",
    ),
    Rule(
        "path.ignore_resume_networks",
        "diffsr resumes every network from the training state; remove the key (to start a "
        "network from other weights, use path.pretrain_network_<label> in a fresh run).",
        when=bool,
    ),
]

# PerceptualLoss arguments only BasicSR's class has (diffsr's: layer_weights, criterion, ...)
PERCEPTUAL_ONLY = ("vgg_type", "use_input_norm", "range_norm", "perceptual_weight", "style_weight")


def _perceptual(key: str, block: dict[str, Any]) -> None:
    """BasicSR's PerceptualLoss arguments -> diffsr's (VGG16 only, no style term)."""
    where = f"train.{key}"
    vgg_type = block.pop("vgg_type", "vgg19")
    if vgg_type != "vgg16":
        raise DialectError(
            f"{where}.vgg_type is {vgg_type!r} (BasicSR's PerceptualLoss; vgg19 is its "
            f"default): diffsr's PerceptualLoss has VGG16 features only (torchvision's "
            f"vgg16-397923af.pth, given by vgg_path). Set vgg_type: vgg16 and VGG16 layer names "
            f"(conv1_1 ... relu5_3) in layer_weights."
        )
    if block.pop("range_norm", False):
        raise DialectError(
            f"{where}.range_norm: true (BasicSR) maps [-1, 1] images to [0, 1]; diffsr's images "
            f"are already in [0, 1]. Set range_norm: false or remove it."
        )
    if block.pop("style_weight", 0):
        raise DialectError(
            f"{where}.style_weight > 0 (BasicSR): the Gram-matrix style term is not implemented "
            f"in diffsr. Set style_weight: 0 or remove it."
        )
    if block.get("criterion") == "fro":
        raise DialectError(
            f"{where}.criterion 'fro' (BasicSR) is not implemented in diffsr; use l1 or l2."
        )
    if "perceptual_weight" in block:
        if "loss_weight" in block:
            raise DialectError(
                f"{where} gives both perceptual_weight (BasicSR) and loss_weight; keep one."
            )
        block["loss_weight"] = block.pop("perceptual_weight")
    if "use_input_norm" in block:
        block["normalize_input"] = block.pop("use_input_norm")


def rewrite(opt: dict, notes: list[str]) -> None:
    """``num_gpu: 0`` -> ``device: cpu``; BasicSR's PerceptualLoss arguments -> diffsr's."""
    if opt.get("num_gpu") == 0 and not isinstance(opt.get("num_gpu"), bool):
        opt.pop("num_gpu")
        if opt.setdefault("device", "cpu") == "cpu":
            notes.append("num_gpu: 0 (BasicSR) runs as device: cpu.")
        else:
            notes.append(f"num_gpu: 0 (BasicSR) ignored: device {opt['device']!r} is set.")
    train = opt.get("train")
    for key, block in train.items() if isinstance(train, dict) else ():
        if (
            key.endswith("_opt")
            and isinstance(block, dict)
            and block.get("type") == "PerceptualLoss"
            and any(name in block for name in PERCEPTUAL_ONLY)
        ):
            _perceptual(key, block)
            notes.append(
                f"train.{key}: BasicSR's PerceptualLoss arguments mapped to diffsr's "
                f"(perceptual_weight -> loss_weight, use_input_norm -> normalize_input; VGG16)."
            )
