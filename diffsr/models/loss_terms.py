"""Loss blocks of the ``train`` section (``<name>_opt``) and how they are applied to outputs."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from diffsr.losses import LOSS_REGISTRY

__all__ = ["LossTerm", "as_output_list", "build_loss_terms"]


def as_output_list(output: torch.Tensor | list | tuple) -> list[torch.Tensor]:
    """Network output as a list whose last element is the final restored image."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, list) and output and all(torch.is_tensor(o) for o in output):
        return output  # kept as is: a list subclass may carry extra outputs (RCDNet's rain)
    if isinstance(output, tuple) and output and all(torch.is_tensor(o) for o in output):
        return list(output)
    raise TypeError(
        "A network must return a tensor or a non-empty list/tuple of tensors (final image last); "
        f"got {type(output).__name__}."
    )


@dataclass
class LossTerm:
    """One weighted loss; ``output`` picks what it sees of a multi-output network.

    output: ``final`` (default, the last output), ``all`` (the loss summed over every output) or
    an integer index. Losses with ``multi_output = True`` always receive the whole list, and
    losses with ``uses_input = True`` also receive the degraded input as ``lq``.
    """

    name: str
    module: nn.Module
    output: str | int = "final"

    def __call__(
        self, outputs: list[torch.Tensor], gt: torch.Tensor, lq: torch.Tensor
    ) -> torch.Tensor:
        extra = {"lq": lq} if getattr(self.module, "uses_input", False) else {}
        if getattr(self.module, "multi_output", False):
            return self.module(outputs, gt, **extra)
        if self.output == "all":
            return sum(self.module(o, gt, **extra) for o in outputs)
        index = -1 if self.output == "final" else int(self.output)
        return self.module(outputs[index], gt, **extra)

    def logged_terms(self) -> dict[str, float]:
        """Sub-terms a loss exposes after its call (e.g. DiffLoss's nat and sem parts)."""
        terms = getattr(self.module, "logged_terms", None) or {}
        return {f"l_{self.name}_{k}": float(v) for k, v in terms.items()}


def takes_device(loss_class: Any) -> bool:
    """Whether a loss's constructor has a ``device`` argument."""
    try:
        return "device" in inspect.signature(loss_class).parameters
    except (TypeError, ValueError):
        return False


def build_loss_terms(train_opt: dict[str, Any], device: torch.device) -> list[LossTerm]:
    """Every ``<name>_opt`` block except adversarial ones (those belong to the GAN model)."""
    terms = []
    for key, block in train_opt.items():
        if not key.endswith("_opt") or not isinstance(block, dict) or "type" not in block:
            continue
        if getattr(LOSS_REGISTRY.get(block["type"]), "gan_loss", False):
            continue
        output = block.get("output", "final")
        if output not in ("final", "all") and not isinstance(output, int):
            raise ValueError(f"train.{key}.output is {output!r}; use final, all or an index.")
        kwargs = {k: v for k, v in block.items() if k != "output"}
        if "device" not in kwargs and takes_device(LOSS_REGISTRY.get(block["type"])):
            # Losses that hold tensors outside their module tree (DiffLoss's shared prior)
            # build them on the training device at once: .to() below cannot move them.
            kwargs["device"] = str(device)
        module = LOSS_REGISTRY.build(kwargs).to(device)
        terms.append(LossTerm(key.removesuffix("_opt"), module, output))
    return terms
