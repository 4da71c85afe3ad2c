"""FSDGN (yuhuUSTC/FSDGN): DehazeModel and its Fourier losses.

DehazeModel trains FSDGN's two outputs with every loss block and sums them (diffsr's
``output: all``); its ``Phase_opt`` / ``Amplitude_opt`` blocks name FSDGN's ``PhaseLoss`` /
``AmplitudeLoss``, which are the phase and amplitude terms of diffsr's FSDGNLoss. Dataset keys
(``gt_sizeH``, ``gt_sizeW``, ``use_flip``, ``flag``) are read by diffsr.data.
"""

from __future__ import annotations

from diffsr.utils.dialects import ModelType, Rule

CODEBASE = "FSDGN"

MODEL_TYPES = {"DehazeModel": ModelType("RestorationModel", losses_on_all_outputs=True)}

INERT: list[Rule] = []
UNSUPPORTED: list[Rule] = []

# FSDGN's loss name -> the FSDGNLoss term weights that compute it (L1 of rfft2 phase / amplitude)
FOURIER_LOSSES = {
    "PhaseLoss": {"charbonnier_weight": 0.0, "amplitude_weight": 0.0, "phase_weight": 1.0},
    "AmplitudeLoss": {"charbonnier_weight": 0.0, "amplitude_weight": 1.0, "phase_weight": 0.0},
}


def rewrite(opt: dict, notes: list[str]) -> None:
    """``{type: PhaseLoss}`` / ``{type: AmplitudeLoss}`` -> FSDGNLoss with that term alone."""
    train = opt.get("train")
    for key, block in train.items() if isinstance(train, dict) else ():
        if isinstance(block, dict) and block.get("type") in FOURIER_LOSSES:
            name = block["type"]
            block.update(type="FSDGNLoss", **FOURIER_LOSSES[name])
            notes.append(
                f"train.{key}: {name} ({CODEBASE}) runs as FSDGNLoss with only its "
                f"{name.removesuffix('Loss').lower()} term, on every output."
            )
