"""Write a trained prior's weights as a standalone checkpoint that DiffLoss loads.

    python scripts/export_prior.py experiments/demo_prior/models/net_g_latest.pth \\
        experiments/pretrained_models/demo_prior_64.pth [--param-key params_ema] [--half]

Keeps one state dict (the EMA weights by default), optionally in float16 to halve the file;
the prior loader casts weights back to float32.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from diffsr.utils.file_util import atomic_torch_save


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="a net_g_*.pth written by scripts/train_prior.py")
    parser.add_argument("target", type=Path, help="the checkpoint to write")
    parser.add_argument("--param-key", default="params_ema", help="params_ema (default) or params")
    parser.add_argument("--half", action="store_true", help="store float16 tensors")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        parser.error(f"{args.source} does not exist")
    content = torch.load(args.source, map_location="cpu", weights_only=True)
    if args.param_key not in content:
        parser.error(f"{args.source} has no {args.param_key!r}; it holds {sorted(content)}")
    state = content[args.param_key]
    if args.half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    atomic_torch_save(state, args.target)
    size = sum(v.numel() for v in state.values())
    print(f"Wrote {args.target}: {len(state)} tensors, {size:,} parameters ({args.param_key}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
