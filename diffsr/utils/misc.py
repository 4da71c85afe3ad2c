"""Small helpers: seeding, RNG state capture for exact resume, devices, time strings."""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import torch

__all__ = ["get_rng_state", "get_time_str", "resolve_device", "set_random_seed", "set_rng_state"]


def set_random_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    """Every global RNG that training consumes (Python, NumPy, torch CPU and CUDA)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def resolve_device(choice: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` are explicit."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device: {choice!r} was asked for but CUDA is not available.")
        if choice == "cuda":
            choice = f"cuda:{local_rank % torch.cuda.device_count()}"
    elif choice != "cpu":
        raise ValueError(f"device: {choice!r} is not one of auto, cpu, cuda, cuda:N.")
    return torch.device(choice)


def get_time_str() -> str:
    return time.strftime("%Y%m%d_%H%M%S", time.localtime())
