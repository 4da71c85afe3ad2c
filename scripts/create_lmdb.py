"""Convert an image folder, or an LQ/GT folder pair, to LMDB in BasicSR's format.

Examples:
    # one folder (e.g. clean images for a diffusion prior)
    python scripts/create_lmdb.py --input datasets/CUB/images --recursive --out cub.lmdb
    # a paired set with identical names (Rain13K, LOL)
    python scripts/create_lmdb.py --lq train/input --gt train/target \\
        --out-lq datasets/rain13k_input.lmdb --out-gt datasets/rain13k_target.lmdb
    # Dense-Haze pairs 01-45 (01_hazy.png / 01_GT.png -> key 01 in both LMDBs)
    python scripts/create_lmdb.py --lq Dense-Haze/hazy --gt Dense-Haze/GT --name-mapping dense_haze \\
        --id-range 1 45 --out-lq dh_train_hazy.lmdb --out-gt dh_train_gt.lmdb

Each database is built in a temporary folder and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from diffsr.data.lmdb_convert import folder_to_lmdb, paired_folders_to_lmdb
from diffsr.data.pairing import NAME_MAPPING_PRESETS, Selection


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    single = parser.add_argument_group("single folder")
    single.add_argument("--input", help="image folder to convert")
    single.add_argument("--out", help="output .lmdb folder")
    paired = parser.add_argument_group("LQ/GT folder pair (both LMDBs keyed by pair id)")
    paired.add_argument("--lq", help="LQ (degraded) image folder")
    paired.add_argument("--gt", help="GT (clean) image folder")
    paired.add_argument("--out-lq", help="output .lmdb folder for LQ images")
    paired.add_argument("--out-gt", help="output .lmdb folder for GT images")
    paired.add_argument(
        "--name-mapping",
        choices=sorted(NAME_MAPPING_PRESETS),
        help="preset pairing LQ and GT names (default: identical names)",
    )
    paired.add_argument("--lq-pattern", help="regex with group (?P<id>...) for LQ names")
    paired.add_argument("--gt-pattern", help="regex with group (?P<id>...) for GT names")
    paired.add_argument("--filename-tmpl", help="BasicSR template: LQ stem = TMPL.format(GT stem)")
    subset = parser.add_argument_group("subset (ids are the pair ids, or names without extension)")
    subset.add_argument("--name-filter", help="keep ids fully matching this regex")
    subset.add_argument(
        "--id-range", nargs=2, type=int, metavar=("FIRST", "LAST"), help="keep integer ids"
    )
    parser.add_argument("--recursive", action="store_true", help="include sub-folders")
    parser.add_argument("--compress-level", type=int, default=1, help="PNG level 0-9 (default 1)")
    parser.add_argument(
        "--n-thread",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="encoding threads (default: cores, at most 4)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    is_single = args.input is not None or args.out is not None
    is_paired = any(v is not None for v in (args.lq, args.gt, args.out_lq, args.out_gt))
    if is_single == is_paired:
        parser.error("give either --input and --out, or --lq, --gt, --out-lq and --out-gt")
    if is_single and (args.input is None or args.out is None):
        parser.error("--input and --out go together")
    if is_paired and None in (args.lq, args.gt, args.out_lq, args.out_gt):
        parser.error("--lq, --gt, --out-lq and --out-gt go together")
    if (args.lq_pattern is None) != (args.gt_pattern is None):
        parser.error("--lq-pattern and --gt-pattern go together")
    mappings = [args.name_mapping, args.lq_pattern, args.filename_tmpl]
    if sum(m is not None for m in mappings) > 1:
        parser.error("use only one of --name-mapping, --lq/--gt-pattern, --filename-tmpl")
    if is_single and any(m is not None for m in mappings):
        parser.error("name mappings apply to LQ/GT pairs only")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    selection = Selection(args.name_filter, args.id_range)
    write_options = {
        "recursive": args.recursive,
        "compress_level": args.compress_level,
        "n_thread": args.n_thread,
        "overwrite": args.overwrite,
        "progress": not args.quiet,
    }
    try:
        if args.input is not None:
            folder_to_lmdb(args.input, args.out, selection=selection, **write_options)
        else:
            mapping = args.name_mapping
            if args.lq_pattern is not None:
                mapping = {"lq": args.lq_pattern, "gt": args.gt_pattern}
            paired_folders_to_lmdb(
                args.lq,
                args.gt,
                args.out_lq,
                args.out_gt,
                name_mapping=mapping,
                filename_tmpl=args.filename_tmpl,
                selection=selection,
                **write_options,
            )
    except (OSError, ValueError) as err:
        print(f"create_lmdb: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
