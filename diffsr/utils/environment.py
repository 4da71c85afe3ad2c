"""What a CPU training result depends on beyond the options: threads, versions, CPU and ISA.

Recorded with every training run (``environment.json``), the demo comparison and sweeps, so
that two sets of numbers can be checked for being comparable before they are compared.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

import torch

__all__ = ["ENV_VARIABLES", "PACKAGES", "cpu_model", "describe_environment"]

PACKAGES = ("torch", "numpy", "opencv-python-headless", "opencv-python", "scikit-image", "scipy")
ENV_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "ATEN_CPU_CAPABILITY",
    "KMP_AFFINITY",
    "CUBLAS_WORKSPACE_CONFIG",
)


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_environment() -> dict[str, Any]:
    """Threads, versions, CPU, the ISA torch dispatches to, and the relevant variables."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "env": {k: os.environ[k] for k in ENV_VARIABLES if k in os.environ},
    }
