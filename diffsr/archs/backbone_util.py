"""Loading published backbone weights by path, with errors that say which file is needed.

diffsr never downloads anything: every metric or loss backbone (LPIPS, FID Inception, VGG16,
the CUB classifiers) reads a published weight file that the user puts under
``experiments/pretrained_models/``. A :class:`WeightFile` describes such a file (its name and
where it is published); :func:`load_backbone_state` reads it and loads it into a module after
checking keys and shapes, naming the file and the offending keys when they do not fit.

A missing file raises :class:`MissingWeightsError` (a ``FileNotFoundError``). Validation code
catches it to log once and skip the metric, rather than reporting a value from random weights.

Plain module (not ``*_arch.py``): nothing here is registered.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRETRAINED_DIR",
    "MissingWeightsError",
    "WeightFile",
    "check_layer_names",
    "check_num_classes",
    "default_device",
    "load_backbone_state",
    "load_checked_state",
    "load_classifier_backbone",
    "read_state_dict",
    "register_imagenet_stats",
    "require_weight_files",
]

PRETRAINED_DIR = "experiments/pretrained_models"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Checkpoints written by diffsr / BasicSR wrap the state dict as {'params': ...}; others as
# {'state_dict': ...}. Published torchvision files are bare state dicts.
WRAPPER_KEYS = ("params", "state_dict")
DDP_PREFIX = "module."


@dataclass(frozen=True)
class WeightFile:
    """A published weight file: its name, where it is published, and what it holds.

    ``default_path`` is where diffsr looks when the options give no path:
    ``experiments/pretrained_models/[subdir/]file_name``, relative to the working directory.
    """

    file_name: str
    url: str
    description: str
    subdir: str = ""

    @property
    def default_path(self) -> str:
        return "/".join(part for part in (PRETRAINED_DIR, self.subdir, self.file_name) if part)


class MissingWeightsError(FileNotFoundError):
    """One or more backbone weight files do not exist; the message says how to get each.

    ``missing`` holds ``(path looked at, WeightFile)`` pairs. Validation catches this error,
    logs the message once and skips the metric that needs the files.
    """

    def __init__(self, missing: Sequence[tuple[str, WeightFile]]) -> None:
        self.missing = tuple(missing)
        lines = [
            f"- {weights.description}: {weights.file_name} not found at {path!r}. It is published "
            f"at {weights.url}; download it and put it at {weights.default_path} (relative to the "
            f"directory you run from) or set the option to where it is."
            for path, weights in self.missing
        ]
        super().__init__(
            "Missing pretrained weight file(s); diffsr never downloads weights:\n"
            + "\n".join(lines)
        )

    def __str__(self) -> str:
        return str(self.args[0])


def require_weight_files(files: Iterable[tuple[str | Path, WeightFile]]) -> None:
    """Raise one :class:`MissingWeightsError` naming every ``(path, WeightFile)`` that is absent."""
    missing = [(str(path), weights) for path, weights in files if not Path(path).is_file()]
    if missing:
        raise MissingWeightsError(missing)


def unwrap_state_dict(obj: Any, path: Path, weights: WeightFile) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded file: bare, or under 'params' / 'state_dict'."""
    if isinstance(obj, Mapping):
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if wrapper is not None:
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in obj.values()
    ):
        shown = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"{path}: expected a state dict of tensors ({weights.description}, {weights.file_name} "
            f"from {weights.url}), found {shown}."
        )
    state = dict(obj)
    if state and all(key.startswith(DDP_PREFIX) for key in state):
        state = {key.removeprefix(DDP_PREFIX): value for key, value in state.items()}
    return state


def read_state_dict(path: str | Path, weights: WeightFile) -> dict[str, torch.Tensor]:
    """Load the state dict stored at ``path`` (on the CPU); ``weights`` names the expected file."""
    path = Path(path)
    require_weight_files([(path, weights)])
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"Cannot read {path} with torch.load (weights_only=True): {err}. Expected "
            f"{weights.file_name} ({weights.description}) from {weights.url}."
        ) from err
    return unwrap_state_dict(obj, path, weights)


def _listed(keys: Sequence[str], limit: int = 5) -> str:
    return ", ".join(keys[:limit]) + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_checked_state(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str | Path,
    weights: WeightFile,
    ignore_prefixes: Sequence[str] = (),
    skip_mismatched_prefixes: Sequence[str] = (),
    mismatch_hint: str = "",
) -> list[str]:
    """Load ``state`` into ``module`` after checking that every key and shape fits.

    Keys starting with ``ignore_prefixes`` may be in the file without being in the module (e.g. a
    classifier the module does not have). A ``num_batches_tracked`` buffer missing from the file
    (older torchvision files) keeps the module's value. Keys starting with
    ``skip_mismatched_prefixes`` whose shapes differ are skipped, keeping the module's own
    initialisation; they are returned. Anything else that does not fit raises a ValueError that
    names ``source``, the keys, and the expected file (``mismatch_hint`` is appended to the
    shape-mismatch message).
    """
    expected = module.state_dict()
    ignore, skippable = tuple(ignore_prefixes), tuple(skip_mismatched_prefixes)
    what = f"{weights.file_name} ({weights.description}, {weights.url})"
    missing = [
        key for key in expected if key not in state and not key.endswith("num_batches_tracked")
    ]
    if missing:
        raise ValueError(f"{source} lacks the keys {_listed(missing)}; expected {what}.")
    unexpected = [key for key in state if key not in expected and not key.startswith(ignore)]
    if unexpected:
        raise ValueError(
            f"{source} has keys this network does not have: {_listed(unexpected)}; expected {what}."
        )
    mismatched = [
        key
        for key, value in expected.items()
        if key in state and tuple(state[key].shape) != tuple(value.shape)
    ]
    skipped = [key for key in mismatched if key.startswith(skippable)]
    wrong = [
        f"{key}: file {tuple(state[key].shape)} vs network {tuple(expected[key].shape)}"
        for key in mismatched
        if key not in skipped
    ]
    if wrong:
        raise ValueError(
            f"{source}: shapes do not fit ({'; '.join(wrong[:5])}); expected {what}. {mismatch_hint}"
        )
    module.load_state_dict(
        {key: state[key] for key in expected if key in state and key not in skipped}, strict=False
    )
    return skipped


def load_backbone_state(
    module: nn.Module,
    path: str | Path,
    weights: WeightFile,
    ignore_prefixes: Sequence[str] = (),
    skip_mismatched_prefixes: Sequence[str] = (),
    mismatch_hint: str = "",
) -> list[str]:
    """Read ``path`` and load it into ``module`` (see :func:`load_checked_state`).

    Raises :class:`MissingWeightsError` when the file does not exist. Returns the skipped keys.
    """
    state = read_state_dict(path, weights)
    return load_checked_state(
        module, state, path, weights, ignore_prefixes, skip_mismatched_prefixes, mismatch_hint
    )


def check_num_classes(network: str, num_classes: Any) -> None:
    """Raise ValueError unless ``num_classes`` is a positive int (a bool is not)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{network}: num_classes must be a positive int, got {num_classes!r}.")


def load_classifier_backbone(
    module: nn.Module,
    path: str | Path,
    weights: WeightFile,
    head: str,
    new_head: str,
    skip_fc_mismatch: bool,
) -> list[str]:
    """Load a published ImageNet classifier file into ``module`` (see :func:`load_backbone_state`).

    ``head`` is the last layer's name (``fc``, ``classifier.6``); with ``skip_fc_mismatch`` its
    weights are skipped when their shapes differ (another number of classes), and the error for
    a mismatch names it and the option (``new_head``: what to call the layer trained instead).
    Returns the skipped keys.
    """
    return load_backbone_state(
        module,
        path,
        weights,
        skip_mismatched_prefixes=(f"{head}.",) if skip_fc_mismatch else (),
        mismatch_hint=(
            f"If only {head} differs (another number of classes), set skip_fc_mismatch: true "
            f"to load the rest and train a new {new_head}."
        ),
    )


def register_imagenet_stats(module: nn.Module) -> None:
    """Give ``module`` buffers ``mean`` and ``std`` (1 x 3 x 1 x 1, ImageNet RGB statistics).

    Not persistent, so the state dict keys stay exactly those of the published files.
    """
    module.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
    module.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)


def default_device() -> str:
    """Where a metric backbone runs when no device is given: CUDA when available, else CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_layer_names(
    layer_names: Sequence[str], valid_names: Sequence[str], network: str
) -> list[str]:
    """Validate a list of layer names against ``valid_names``, suggesting close matches."""
    if isinstance(layer_names, str) or not layer_names:
        raise ValueError(
            f"{network}: layer_names must be a non-empty list of names, got {layer_names!r}."
        )
    for name in layer_names:
        if name not in valid_names:
            close = difflib.get_close_matches(str(name), valid_names, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"{network}: unknown layer {name!r}.{hint} Valid names: {', '.join(valid_names)}."
            )
    return list(layer_names)
