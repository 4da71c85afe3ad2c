"""Shared test configuration: deterministic, thread-limited torch on the 2-core machine."""

import os

# Idle OpenMP threads must sleep, not spin: on a loaded 2-core machine spinning threads made
# small forwards 100x slower. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch


@pytest.fixture(autouse=True)
def _torch_defaults():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    yield


@pytest.fixture
def fresh_prior_cache():
    """An empty process-wide prior cache before and after the test (priors are shared by key)."""
    from diffsr.diffusion import clear_shared_priors

    clear_shared_priors()
    yield
    clear_shared_priors()
