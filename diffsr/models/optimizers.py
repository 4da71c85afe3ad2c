"""Optimizers by name: any ``torch.optim`` class, its arguments checked against its signature.

``train.optim_g: {type: SGD, lr: 0.1, momentum: 0.9}`` builds ``torch.optim.SGD(params, lr=0.1,
momentum=0.9)``. Adam and AdamW keep diffsr's default ``betas: [0.9, 0.99]`` (BasicSR's option
files write it); every other argument not given takes torch's default.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from diffsr.utils.registry import RegistryError, check_kwargs, suggestion

__all__ = ["build_optimizer", "check_optimizer_options", "optimizer_class"]

DEFAULTS: dict[str, dict[str, Any]] = {
    "Adam": {"betas": [0.9, 0.99]},
    "AdamW": {"betas": [0.9, 0.99]},
}


def optimizer_names() -> list[str]:
    """Every optimizer class ``torch.optim`` exports."""
    return sorted(
        name
        for name, obj in vars(torch.optim).items()
        if inspect.isclass(obj)
        and issubclass(obj, torch.optim.Optimizer)
        and obj is not torch.optim.Optimizer
    )


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """``torch.optim.<name>``; ValueError with the closest names when there is none."""
    names = optimizer_names()
    if name not in names:
        raise ValueError(
            f"optimizer type {name!r} is not a torch.optim class.{suggestion(str(name), names)} "
            f"Available: {', '.join(names)}."
        )
    return getattr(torch.optim, name)


def check_optimizer_options(opt: Mapping[str, Any], where: str = "train.optim_g") -> dict:
    """Validate an optimizer block (``type`` default Adam, ``lr`` required); defaults filled.

    Raises ValueError naming ``where`` and the argument that the class does not take.
    """
    if not isinstance(opt, Mapping):
        raise ValueError(f"{where} must be a mapping with type and lr, got {opt!r}.")
    kind = opt.get("type", "Adam")
    try:
        cls = optimizer_class(kind)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    kwargs = {**DEFAULTS.get(kind, {}), **{k: v for k, v in opt.items() if k != "type"}}
    if "lr" not in kwargs:
        raise ValueError(f"{where}.lr is required.")
    if isinstance(kwargs["lr"], bool) or not isinstance(kwargs["lr"], (int, float)):
        raise ValueError(f"{where}.lr must be a number, got {kwargs['lr']!r}.")
    try:
        check_kwargs(cls, {"params": None, **kwargs}, f"{where} (torch.optim.{kind})")
    except RegistryError as err:
        raise ValueError(str(err)) from None
    return {"type": kind, **kwargs}


def build_optimizer(
    params: Iterable[torch.nn.Parameter], opt: Mapping[str, Any], where: str = "train.optim_g"
) -> torch.optim.Optimizer:
    """``torch.optim.<type>(params, **arguments)``; list arguments (``betas``) become tuples."""
    checked = check_optimizer_options(opt, where)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in checked.items() if k != "type"}
    return optimizer_class(checked["type"])(params, **kwargs)
