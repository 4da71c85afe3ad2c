"""Restormer (swz30/Restormer) and its fork MB-TaylorFormer: ImageCleanModel's training keys.

Data-side keys (``Dataset_PairedImage``, ``geometric_augs``, progressive ``mini_batch_sizes`` /
``iters`` / ``gt_sizes``) are read by diffsr.data; ``train.mixing_augs`` and ``val.window_size``
are diffsr keys with Restormer's meaning (RestorationModel).
"""

from __future__ import annotations

from diffsr.utils.dialects import DialectError, ModelType, Rule

CODEBASE = "Restormer / MB-TaylorFormer"

GRAD_CLIP_NORM = 0.01  # ImageCleanModel: clip_grad_norm_(net_g.parameters(), 0.01)

MODEL_TYPES = {"ImageCleanModel": ModelType("RestorationModel", losses_on_all_outputs=True)}

INERT = [
    Rule("val.max_minibatch", "no code of Restormer or MB-TaylorFormer reads it."),
    Rule(
        "val.rgb2bgr",
        "diffsr always converts the RGB output to BGR for metrics and saved images, as "
        "rgb2bgr: true does.",
        when=lambda value: value is True,
    ),
    Rule(
        "val.use_image",
        "diffsr computes metrics on 8-bit images, as use_image: true does.",
        when=lambda value: value is True,
    ),
]

UNSUPPORTED = [
    Rule(
        "val.rgb2bgr",
        "diffsr's metrics and saved images are always BGR (rgb2bgr: true); remove the key.",
        when=lambda value: value is not True,
    ),
    Rule(
        "val.use_image",
        "diffsr computes metrics on 8-bit images only (use_image: true); remove the key.",
        when=lambda value: value is not True,
    ),
    Rule(
        "train.scheduler.type",
        "Restormer names this schedule but does not define it; use CosineAnnealingRestartLR, "
        "CosineAnnealingRestartCyclicLR or TrueCosineAnnealingLR.",
        when=lambda value: (
            value in ("CosineAnnealingWarmupRestarts", "CosineAnnealingLRWithRestart")
        ),
    ),
]


def rewrite(opt: dict, notes: list[str]) -> None:
    """``train.use_grad_clip`` -> ``train.grad_clip: 0.01``; ``path.param_key`` -> ``param_key_g``."""
    train = opt.get("train")
    if isinstance(train, dict) and "use_grad_clip" in train:
        flag = train.pop("use_grad_clip")
        if not isinstance(flag, bool):
            raise DialectError(f"train.use_grad_clip must be true or false, got {flag!r}.")
        if flag:
            if train.get("grad_clip") is not None:
                raise DialectError(
                    "train.use_grad_clip (Restormer, clips at norm 0.01) and train.grad_clip "
                    "(diffsr) are both given; keep one."
                )
            train["grad_clip"] = GRAD_CLIP_NORM
        notes.append(
            f"train.use_grad_clip: {flag} ({CODEBASE}) runs as train.grad_clip: "
            f"{GRAD_CLIP_NORM if flag else None} (gradient-norm clipping of network_g)."
        )
    path = opt.get("path")
    if isinstance(path, dict) and "param_key" in path:
        if "param_key_g" in path:
            raise DialectError(
                "path.param_key (Restormer) and path.param_key_g are both given; keep one."
            )
        path["param_key_g"] = path.pop("param_key")
        notes.append(f"path.param_key ({CODEBASE}) runs as path.param_key_g.")
