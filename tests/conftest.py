"""Shared test configuration: deterministic, thread-limited torch on the 2-core machine."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _torch_defaults():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    yield
