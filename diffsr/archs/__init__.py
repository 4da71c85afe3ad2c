"""Restoration networks. Every ``*_arch.py`` here is imported, registering its classes."""

from typing import Any

import torch.nn as nn

from diffsr.utils.registry import ARCH_REGISTRY, import_modules_with_suffix

__all__ = ["ARCH_REGISTRY", "build_network"]

import_modules_with_suffix(__name__, "_arch")


def build_network(opt: dict[str, Any]) -> nn.Module:
    """Build a network from an option block ``{type: Name, **kwargs}``."""
    return ARCH_REGISTRY.build(opt)
