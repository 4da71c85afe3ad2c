"""Released checkpoint layouts as test fixtures: ``tests/data/official_layouts/<net>.tsv``.

Each line is ``key<TAB>d0,d1,...``: a tensor of the authors' network, dumped from their own
code. :func:`random_state` fills such a layout with random weights (a synthetic released file).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

LAYOUTS = Path(__file__).resolve().parents[1] / "data" / "official_layouts"


def read_layout(name: str) -> dict[str, tuple[int, ...]]:
    """``key -> shape`` of the fixture ``name`` (e.g. ``"ffanet.tsv"``)."""
    shapes = {}
    for line in (LAYOUTS / name).read_text().splitlines():
        key, shape = line.split("\t")
        shapes[key] = tuple(int(d) for d in shape.split(",") if d)
    return shapes


def random_state(
    shapes: dict[str, tuple[int, ...]], seed: int = 0, scale: float = 0.05
) -> OrderedDict[str, torch.Tensor]:
    """Random float32 tensors in a layout (normal, std ``scale``; BN statistics kept sane)."""
    gen = torch.Generator().manual_seed(seed)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=gen)
        else:
            state[key] = scale * torch.randn(shape, generator=gen)
    return state
