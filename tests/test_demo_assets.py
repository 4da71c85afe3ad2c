"""The embedded demo: its option files and the committed demo prior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffsr.diffusion import DiffusionPrior
from diffsr.utils.options import parse_options
from diffsr.utils.yaml_util import load_yaml

REPO = Path(__file__).resolve().parents[1]


def test_demo_option_files_differ_only_by_diffloss():
    plain = load_yaml(REPO / "options/demo/dehaze_demo_l2.yml")
    with_diffloss = load_yaml(REPO / "options/demo/dehaze_demo_diffloss.yml")
    diffloss = with_diffloss["train"].pop("diffloss_opt")
    assert diffloss["type"] == "DiffLoss" and diffloss["loss_weight"] == 0.001
    assert {k: v for k, v in plain.items() if k != "name"} == {
        k: v for k, v in with_diffloss.items() if k != "name"
    }
    for name in ("dehaze_demo_l2.yml", "dehaze_demo_diffloss.yml"):
        parse_options(REPO / "options/demo" / name)  # validates every key


def test_committed_demo_prior_loads_and_denoises_natural_images():
    skimage_data = __import__("skimage.data", fromlist=["astronaut"])
    opt = load_yaml(REPO / "options/demo/dehaze_demo_diffloss.yml")["train"]["diffloss_opt"][
        "prior"
    ]
    prior = DiffusionPrior(
        unet=opt["unet"], checkpoint=str(REPO / opt["checkpoint"])
    )  # strict load
    image = skimage_data.astronaut()[100:228:2, 180:308:2].astype(np.float32) / 127.5 - 1.0
    x0 = torch.from_numpy(image).permute(2, 0, 1)[None].repeat(4, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.tensor([50, 200, 400, 700])
    with torch.no_grad():
        eps, _ = prior(prior.q_sample(x0, t, noise), t)
    error = ((eps - noise) ** 2).mean().item()
    trivial = (noise**2).mean().item()  # predicting zero noise
    assert error < 0.2 * trivial, (error, trivial)
