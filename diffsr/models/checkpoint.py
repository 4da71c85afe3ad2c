"""Reading and writing network files and training states (atomic, keep-last-N, CPU tensors)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from diffsr.archs.official import find_layouts
from diffsr.models.official_loading import (
    bare_state_dict,
    convert_official,
    fits,
    official_layout_of,
)
from diffsr.models.safe_load import read_checkpoint, read_training_state
from diffsr.utils.file_util import atomic_torch_save

__all__ = [
    "latest_training_state",
    "load_network",
    "load_training_state",
    "prune_old_files",
    "save_network",
    "unwrap",
]

logger = logging.getLogger("diffsr")


def unwrap(net: nn.Module) -> nn.Module:
    """The bare module inside DistributedDataParallel / DataParallel wrappers."""
    return (
        net.module
        if isinstance(net, (nn.DataParallel, nn.parallel.DistributedDataParallel))
        else net
    )


def _cpu_state_dict(net: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k.removeprefix("module."): v.detach().cpu() for k, v in unwrap(net).state_dict().items()
    }


def save_network(path: str | Path, params: dict[str, nn.Module]) -> None:
    """Write ``{'params': state_dict, 'params_ema': ...}`` (BasicSR's layout), atomically."""
    atomic_torch_save({key: _cpu_state_dict(net) for key, net in params.items()}, path)


def load_network(
    net: nn.Module, path: str | Path, strict: bool = True, param_key: str = "params"
) -> None:
    """Load a network file into ``net``: diffsr's and BasicSR's files, and the paper networks'
    checkpoints as their authors release them (converted on the fly; docs/pretrained.md).

    The file is opened without running code from it (:mod:`diffsr.models.safe_load`).
    ``param_key`` picks ``params`` or ``params_ema`` where the file has both; ``auto`` takes
    ``params_ema`` when the file has it (validation uses the EMA weights when there are any).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Network file {path} does not exist; check path.pretrain_network_* in the options."
        )
    content = read_checkpoint(path)
    state = bare_state_dict(content, param_key, path)
    target = unwrap(net)
    origin = ""
    if fits(target, state):
        target.load_state_dict(state, strict=True)
        layout = None if _is_diffsr_container(content) else official_layout_of(target, state)
        if layout is not None:
            origin = f" (converted from the official {layout.name} layout)"
    elif strict or find_layouts(state):
        state, layout = convert_official(target, state, path)
        target.load_state_dict(state, strict=True)
        origin = f" (converted from the official {layout.name} layout)"
    else:
        result = target.load_state_dict(state, strict=False)
        logger.warning(
            "Loaded %s non-strictly: missing %s, unexpected %s",
            path,
            result.missing_keys[:10],
            result.unexpected_keys[:10],
        )
    logger.info("Loaded %s [%s] into %s%s.", path, param_key, type(target).__name__, origin)


def _is_diffsr_container(content: Any) -> bool:
    return isinstance(content, dict) and ("params" in content or "params_ema" in content)


def _iteration_of(path: Path) -> int | None:
    match = re.search(r"(\d+)\.(?:state|pth)$", path.name)
    return int(match.group(1)) if match else None


def latest_training_state(folder: str | Path) -> Path | None:
    """The ``<iter>.state`` file with the highest iteration in ``folder`` (None if none)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    states = [p for p in folder.glob("*.state") if _iteration_of(p) is not None]
    return max(states, key=_iteration_of) if states else None


def prune_old_files(folder: str | Path, pattern: str, keep_last: int) -> None:
    """Delete all but the ``keep_last`` newest numbered files matching ``pattern``."""
    if keep_last <= 0:
        return
    files = [p for p in Path(folder).glob(pattern) if _iteration_of(p) is not None]
    for old in sorted(files, key=_iteration_of)[:-keep_last]:
        old.unlink(missing_ok=True)


def load_training_state(path: str | Path) -> dict[str, Any]:
    """A training state written by ``save_training_state`` (read with ``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Training state {path} does not exist (path.resume_state).")
    return read_training_state(path)
