"""Convert an authors' released checkpoint into a diffsr network file, once.

    python scripts/convert_official.py --arch FFA its_train_ffa_3_19.pk ffanet_its.pth
    python scripts/convert_official.py --arch GridDehazeNet indoor_haze_best_3_6 gdn_indoor.pth
    python scripts/convert_official.py --arch FFANet --set gps=3 --set blocks=19 IN OUT

``--arch`` is diffsr's network name or the authors' class name (``FFA``, ``GateHazeNet``,
``fusion_net``, ...); ``--set key=value`` passes constructor arguments (as in ``network_g``),
for example to pick a variant. The input is opened safely and converted exactly as
``path.pretrain_network_g`` would (docs/pretrained.md); the output is ``{'params': ...}``
(diffsr's and BasicSR's layout), written atomically. diffsr loads the released files directly
too: converting once only saves the conversion at every start.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from diffsr.archs import build_network
from diffsr.models.checkpoint import load_network, save_network
from diffsr.models.official_loading import CheckpointMismatchError
from diffsr.models.safe_load import UnsafeCheckpointError
from diffsr.utils.registry import RegistryError


def parse_settings(items: list[str]) -> dict[str, Any]:
    """``["gps=3", "variant=L"]`` -> ``{"gps": 3, "variant": "L"}`` (values read as YAML)."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", required=True, help="network name (diffsr's or the authors')")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a constructor argument of the network (repeatable)",
    )
    parser.add_argument("--param-key", default="params", help="params (default) or params_ema")
    parser.add_argument("source", type=Path, help="the authors' checkpoint")
    parser.add_argument("target", type=Path, help="the diffsr checkpoint to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        network_g = {"type": args.arch, **parse_settings(args.set)}
        net = build_network(network_g)
        load_network(net, args.source, strict=True, param_key=args.param_key)
    except (
        RegistryError,
        ValueError,
        FileNotFoundError,
        CheckpointMismatchError,
        UnsafeCheckpointError,
    ) as err:
        parser.error(str(err))
    save_network(args.target, {"params": net})
    count = sum(v.numel() for v in net.state_dict().values())
    print(f"Wrote {args.target}: {type(net).__name__}, {count:,} values in 'params'.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
