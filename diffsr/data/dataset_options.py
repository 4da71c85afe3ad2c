"""Typed, validated dataset options parsed from a BasicSR-style phase dict.

A dataset receives the whole phase block of the option file (``datasets.train`` etc.). It
declares the keys it reads as a dataclass derived from :class:`DatasetOptions`;
:func:`parse_dataset_options` rejects unknown keys (with a suggestion), reports missing ones and
prefixes value errors with the dataset's name. The DataLoader keys in :data:`LOADER_KEYS` are
allowed everywhere and read by ``build_dataloader``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from diffsr.utils.registry import suggestion

__all__ = [
    "LOADER_KEYS",
    "PHASES",
    "DatasetOptions",
    "check_bool",
    "check_int",
    "parse_dataset_options",
]

LOADER_KEYS = frozenset(
    {
        "batch_size_per_gpu",
        "num_worker_per_gpu",
        "use_shuffle",
        "dataset_enlarge_ratio",
        "pin_memory",
        "persistent_workers",
        "prefetch_factor",
        "prefetch_mode",
    }
)
PHASES = ("train", "val", "test")
OptionsT = TypeVar("OptionsT", bound="DatasetOptions")


def check_int(key: str, value: Any, minimum: int = 1, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"option {key!r} must be an integer >= {minimum}, got {value!r}.")


def check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"option {key!r} must be true or false, got {value!r}.")


@dataclass(kw_only=True)
class DatasetOptions:
    """Keys shared by every dataset. ``phase`` (train/val/test) turns augmentation on or off;
    BasicSR-style option parsers set it from the key under ``datasets``."""

    phase: str
    name: str = ""

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"option 'phase' must be one of {PHASES}, got {self.phase!r}.")

    @property
    def is_train(self) -> bool:
        return self.phase == "train"


def parse_dataset_options(opt: Mapping[str, Any], options_cls: type[OptionsT]) -> OptionsT:
    """Validate the phase dict ``opt`` against ``options_cls`` and build it."""
    if not isinstance(opt, Mapping):
        raise TypeError(f"dataset options must be a mapping, got {type(opt).__name__}.")
    where = f"dataset {opt.get('name', '')!r} (type {opt.get('type', '?')})"
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    accepted = sorted(set(fields) | LOADER_KEYS | {"type"})
    for key in opt:
        if key not in accepted:
            raise ValueError(
                f"{where}: unknown option {key!r}.{suggestion(str(key), accepted)} "
                f"Accepted: {', '.join(accepted)}."
            )
    missing = [
        name
        for name, f in fields.items()
        if name not in opt
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        hint = " ('phase' is one of train/val/test)" if "phase" in missing else ""
        raise ValueError(f"{where}: missing option(s) {', '.join(missing)}{hint}.")
    try:
        return options_cls(**{key: opt[key] for key in fields if key in opt})
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
