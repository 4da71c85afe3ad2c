"""Train an ADM diffusion prior on clean images: ``python scripts/train_prior.py -opt options/prior/<file>.yml``.

The option file uses ``model_type: DiffusionPriorModel``, ``network_g: {type: ADMUNet, ...}``
(guided-diffusion ``create_model`` keywords) and a ``diffusion`` section; all trainer flags
(``--auto_resume``, ``--set``, ``--launcher``) work. Checkpoints land in
``experiments/<name>/models/net_g_*.pth`` and load as a DiffLoss prior (``checkpoint:`` path;
the EMA weights ``params_ema`` are used when present).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffsr.train import main

if __name__ == "__main__":
    sys.exit(main())
