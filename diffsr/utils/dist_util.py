"""Process-group set-up for ``--launcher pytorch`` (torchrun) and ``--launcher slurm``."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "barrier",
    "first_slurm_host",
    "get_dist_info",
    "init_dist",
    "master_only",
    "reduce_mean",
]


def init_dist(launcher: str, backend: str | None = None, port: int = 29500) -> tuple[int, int]:
    """Join the process group; returns (rank, world_size).

    pytorch: torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT.
    slurm: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID and the first host of SLURM_NODELIST.
    The backend defaults to nccl with CUDA and gloo without.
    """
    if launcher == "slurm":
        _env_from_slurm(port)
    elif launcher != "pytorch":
        raise ValueError(f"--launcher {launcher!r}: expected none, pytorch or slurm.")
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise RuntimeError(
                f"--launcher {launcher}: environment variable {key} is not set; start the run "
                f"with torchrun (pytorch) or srun (slurm)."
            )
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    elif backend == "nccl" and not torch.cuda.is_available():
        raise ValueError(
            "dist_params.backend is nccl, which needs CUDA, and this machine has none: set "
            "dist_params.backend: gloo (or leave it out: gloo is the default without CUDA)."
        )
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def _env_from_slurm(port: int) -> None:
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    if "MASTER_ADDR" not in os.environ:
        os.environ["MASTER_ADDR"] = first_slurm_host(os.environ["SLURM_NODELIST"])
    os.environ.setdefault("MASTER_PORT", str(port))


def first_slurm_host(nodelist: str) -> str:
    """First host of a Slurm node list: ``scontrol`` when present, else the list's own syntax
    (``gpu[03-05,07],cpu1`` -> ``gpu03``)."""
    if shutil.which("scontrol"):
        result = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=False
        )
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.split()[0]
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if match is None:
        raise RuntimeError(f"SLURM_NODELIST {nodelist!r} cannot be parsed; set MASTER_ADDR.")
    prefix, ranges = match.groups()
    if ranges is None:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def get_dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    if get_dist_info()[1] > 1:
        dist.barrier()


def reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all processes (identity when not distributed)."""
    if get_dist_info()[1] == 1:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / get_dist_info()[1]


def master_only(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``func`` on rank 0 only (returns None elsewhere)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if get_dist_info()[0] == 0:
            return func(*args, **kwargs)
        return None

    return wrapper
