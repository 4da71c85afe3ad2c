"""AOD-Net's released checkpoint layout (Boyiliee/AOD-Net, PyTorch version, class ``AODnet``).

The authors' training script (``AOD-Net with PONO/pono_train.py``) saves
``{'epoch', 'state_dict', 'optimizer'}`` per epoch as ``AOD_<epoch>.pkl`` in the legacy
(pre-zip) file format; ``state_dict`` holds ``conv1`` ... ``conv5`` (weight and bias), which are
exactly the keys and shapes of diffsr's :class:`~diffsr.archs.aodnet_arch.AODNet`. The layout is
registered so that such a file is recognised (and a wrong-network error can name it); its
conversion is the identity. The original release is a Caffe model (``AOD_Net.caffemodel``),
which diffsr does not read.
"""

from __future__ import annotations

import torch

from diffsr.archs.aodnet_arch import AODNet
from diffsr.archs.official import OfficialLayout, StateDict, register_layout
from diffsr.archs.official_rename import matches_network

__all__ = ["AODNET_LAYOUT", "convert_released_aodnet"]


def convert_released_aodnet(state: StateDict) -> dict[str, torch.Tensor]:
    """The released AOD-Net state dict: already diffsr's keys (a copy of the mapping)."""
    return dict(state)


AODNET_LAYOUT = register_layout(
    OfficialLayout(
        name="AOD-Net",
        arch_types=("AODNet",),
        repository="Boyiliee/AOD-Net",
        matches=lambda state: matches_network(state, convert_released_aodnet, AODNet),
        convert=convert_released_aodnet,
    )
)
