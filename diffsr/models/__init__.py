"""Models: a network plus its losses, optimizers and checkpoints. ``*_model.py`` auto-imported."""

from typing import Any

from diffsr.utils.registry import MODEL_REGISTRY, import_modules_with_suffix

__all__ = ["MODEL_REGISTRY", "build_model"]

import_modules_with_suffix(__name__, "_model")


def build_model(opt: dict[str, Any]) -> Any:
    """Build ``opt['model_type']`` (default RestorationModel) from validated options."""
    return MODEL_REGISTRY.get(opt["model_type"])(opt)
