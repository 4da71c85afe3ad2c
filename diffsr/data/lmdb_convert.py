"""Image folders -> LMDBs (the engine of ``scripts/create_lmdb.py`` and the demo-data script).

A single folder keeps its names: ``a/b.jpg`` gets the key ``a/b``. A paired LQ/GT set is matched
with the dataset's name mapping and both LMDBs store each pair under its pair id, so the two
databases have identical keys (BasicSR's requirement for paired LMDBs) and need no name mapping
when loaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from diffsr.data.file_client import list_image_files
from diffsr.data.lmdb_util import lmdb_key, write_lmdb
from diffsr.data.pairing import NameMapping, Selection, find_pairs

__all__ = ["folder_to_lmdb", "paired_folders_to_lmdb"]


def folder_to_lmdb(
    folder: str | os.PathLike,
    out_path: str | os.PathLike,
    recursive: bool = False,
    selection: Selection | None = None,
    compress_level: int = 1,
    n_thread: int = 2,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the images of ``folder`` to the LMDB ``out_path`` (keys: names without extension).

    ``selection`` (name_filter/id_range) is applied to the keys.
    """
    names = list_image_files(folder, recursive)
    if not names:
        raise ValueError(f"{folder}: contains no images.")
    if selection is not None:
        names = [name for name in names if selection.keep_id(lmdb_key(name))]
        if not names:
            raise ValueError(f"{folder}: name_filter/id_range removed every image.")
    items = [(lmdb_key(name), Path(folder) / name) for name in names]
    return write_lmdb(
        out_path,
        items,
        compress_level=compress_level,
        n_thread=n_thread,
        overwrite=overwrite,
        progress=progress,
    )


def paired_folders_to_lmdb(
    lq_folder: str | os.PathLike,
    gt_folder: str | os.PathLike,
    out_lq: str | os.PathLike,
    out_gt: str | os.PathLike,
    name_mapping: str | Mapping[str, str] | None = None,
    filename_tmpl: str | None = None,
    selection: Selection | None = None,
    recursive: bool = False,
    compress_level: int = 1,
    n_thread: int = 2,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[Path, Path]:
    """Write matched LQ/GT pairs to two LMDBs whose keys are the pair ids."""
    if Path(out_lq).resolve() == Path(out_gt).resolve():
        raise ValueError(f"The LQ and GT outputs must differ, both are {out_lq}.")
    for out in (out_lq, out_gt):
        if Path(out).exists() and not overwrite:
            raise FileExistsError(f"{out}: already exists; pass --overwrite to replace it.")
    pairs = find_pairs(
        list_image_files(lq_folder, recursive),
        list_image_files(gt_folder, recursive),
        NameMapping.from_options(name_mapping, filename_tmpl),
        selection,
        str(lq_folder),
        str(gt_folder),
    )
    common = {"compress_level": compress_level, "n_thread": n_thread, "overwrite": overwrite}
    lq_items = [(p.pair_id, Path(lq_folder) / p.lq_name) for p in pairs]
    gt_items = [(p.pair_id, Path(gt_folder) / p.gt_name) for p in pairs]
    return (
        write_lmdb(out_lq, lq_items, progress=progress, **common),
        write_lmdb(out_gt, gt_items, progress=progress, **common),
    )
