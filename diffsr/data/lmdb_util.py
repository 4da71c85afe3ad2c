"""LMDB image databases in BasicSR's format: reading the index and writing new databases.

Format (compatible with BasicSR's ``make_lmdb_from_imgs`` and its LMDB backend):

* ``<name>.lmdb/data.mdb``: key = image name without its final extension (utf-8), value = the
  image encoded as PNG (``cv2.imencode('.png', img, [IMWRITE_PNG_COMPRESSION, level])``) from
  the pixels decoded unchanged (gray, 16-bit and alpha are kept).
* ``<name>.lmdb/meta_info.txt``: one line per image, ``<key>.png (h,w,c) <level>`` with ``c = 1``
  for grayscale. Lines are parsed from the right, so names with dots or spaces survive.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import lmdb
import numpy as np
from tqdm import tqdm

__all__ = [
    "META_INFO_NAME",
    "META_LINE_PATTERN",
    "MetaEntry",
    "encode_png",
    "format_meta_line",
    "lmdb_key",
    "parse_meta_line",
    "read_meta_info",
    "write_lmdb",
]

logger = logging.getLogger("diffsr")

META_INFO_NAME = "meta_info.txt"
MAX_KEY_BYTES = 511  # LMDB's default key size limit
META_LINE_PATTERN = re.compile(
    r"^(?P<name>.+) \((?P<h>\d+),(?P<w>\d+),(?P<c>\d+)\) (?P<level>\d+)$"
)


@dataclass(frozen=True)
class MetaEntry:
    """One ``meta_info.txt`` line: the image name (``key.png``), its shape and PNG level."""

    name: str
    shape: tuple[int, int, int]
    compress_level: int

    @property
    def key(self) -> str:
        return lmdb_key(self.name)


def lmdb_key(name: str) -> str:
    """Database key of an image name: the name without its final extension ('a.b.png' -> 'a.b')."""
    path = PurePosixPath(name)
    return str(path.with_suffix("")) if path.suffix else name


def format_meta_line(key: str, shape: Sequence[int], compress_level: int) -> str:
    """``'<key>.png (h,w,c) <level>'`` for an image of shape (h, w) or (h, w, c)."""
    h, w = shape[:2]
    c = shape[2] if len(shape) == 3 else 1
    return f"{key}.png ({h},{w},{c}) {compress_level}"


def parse_meta_line(line: str, where: str = "meta_info.txt") -> MetaEntry:
    """Parse ``'<name> (h,w,c) <level>'`` from the right; ``where`` names the line in errors."""
    match = META_LINE_PATTERN.match(line.rstrip("\r\n"))
    if match is None:
        raise ValueError(
            f"{where}: expected a line like 'name.png (h,w,c) compress_level', got {line!r}."
        )
    shape = (int(match["h"]), int(match["w"]), int(match["c"]))
    return MetaEntry(match["name"], shape, int(match["level"]))


def read_meta_info(lmdb_path: str | os.PathLike) -> list[MetaEntry]:
    """Entries of ``<lmdb_path>/meta_info.txt`` in file order; checks that keys are unique."""
    meta_path = Path(lmdb_path) / META_INFO_NAME
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path}: missing. Every LMDB folder needs the meta_info.txt written by "
            f"scripts/create_lmdb.py (or BasicSR) listing its images."
        )
    entries: list[MetaEntry] = []
    seen: dict[str, str] = {}
    for number, line in enumerate(meta_path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        entry = parse_meta_line(line, f"{meta_path}:{number}")
        if entry.key in seen:
            raise ValueError(
                f"{meta_path}:{number}: {entry.name!r} has the same key {entry.key!r} as "
                f"{seen[entry.key]!r}; keys must be unique."
            )
        seen[entry.key] = entry.name
        entries.append(entry)
    return entries


def encode_png(path: str | os.PathLike, compress_level: int) -> tuple[bytes, tuple[int, ...]]:
    """Decode an image file unchanged and re-encode it as PNG; returns (bytes, shape)."""
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise ValueError(f"{path}: cannot decode the image (empty, corrupt or unknown format).")
    ok, encoded = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed for a {img.shape} {img.dtype} image.")
    return encoded.tobytes(), img.shape


def write_lmdb(
    out_path: str | os.PathLike,
    items: Sequence[tuple[str, str | os.PathLike]],
    compress_level: int = 1,
    n_thread: int = 2,
    overwrite: bool = False,
    chunk_size: int = 64,
    progress: bool = True,
) -> Path:
    """Write ``(key, image_path)`` items to a new LMDB at ``out_path`` (BasicSR's format).

    Images are re-encoded as PNG by ``n_thread`` threads. The database is built in a temporary
    sibling folder and renamed onto ``out_path`` at the end, so an interrupted run leaves no
    half-written database. The map size is estimated from the first encoded chunk and grown
    when it turns out too small. An existing ``out_path`` is replaced only with ``overwrite``.
    """
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path}: already exists; pass --overwrite to replace it.")
    if not items:
        raise ValueError(f"{out_path}: no images to write.")
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be in 0..9, got {compress_level}.")
    check_keys(items)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = out_path.parent / f".{out_path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp_path, ignore_errors=True)
    try:
        meta_lines = _fill_lmdb(tmp_path, items, compress_level, n_thread, chunk_size, progress)
        (tmp_path / META_INFO_NAME).write_text("\n".join(meta_lines) + "\n", encoding="utf-8")
        _replace_dir(tmp_path, out_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
    logger.info("Wrote %d images to %s", len(items), out_path)
    return out_path


def check_keys(items: Iterable[tuple[str, str | os.PathLike]]) -> None:
    """Raise ValueError for duplicate, empty or over-long keys, naming the source files."""
    owners: dict[str, str] = {}
    for key, source in items:
        if not key or len(key.encode("utf-8")) > MAX_KEY_BYTES:
            raise ValueError(
                f"{source}: key {key!r} is empty or longer than {MAX_KEY_BYTES} bytes."
            )
        if key in owners:
            raise ValueError(
                f"Images {owners[key]} and {source} would both get the LMDB key {key!r} "
                f"(keys drop the extension); rename one of them."
            )
        owners[key] = str(source)


def _fill_lmdb(
    path: Path,
    items: Sequence[tuple[str, str | os.PathLike]],
    compress_level: int,
    n_thread: int,
    chunk_size: int,
    progress: bool,
) -> list[str]:
    meta_lines: list[str] = []
    env = None
    bar = tqdm(total=len(items), unit="img", desc=path.name.lstrip("."), disable=not progress)
    try:
        with ThreadPoolExecutor(max_workers=max(1, n_thread)) as pool:
            for start in range(0, len(items), chunk_size):
                chunk = items[start : start + chunk_size]
                encoded = list(pool.map(lambda it: encode_png(it[1], compress_level), chunk))
                if env is None:
                    mean_bytes = sum(len(data) for data, _ in encoded) / len(encoded)
                    env = lmdb.open(str(path), map_size=_map_size(mean_bytes, len(items)))
                _put_chunk(env, [(key, data) for (key, _), (data, _) in zip(chunk, encoded)])
                meta_lines += [
                    format_meta_line(key, shape, compress_level)
                    for (key, _), (_, shape) in zip(chunk, encoded)
                ]
                bar.update(len(chunk))
    finally:
        bar.close()
        if env is not None:
            env.close()
    return meta_lines


def _map_size(mean_bytes: float, count: int) -> int:
    # Room for B-tree pages and size variation between images; grown later if needed.
    return int(mean_bytes * count * 1.5) + 64 * 1024 * 1024


def _put_chunk(env: lmdb.Environment, records: list[tuple[str, bytes]]) -> None:
    while True:
        try:
            with env.begin(write=True) as txn:
                for key, data in records:
                    txn.put(key.encode("utf-8"), data)
            return
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst``; an existing ``dst`` is removed only after the move worked."""
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.parent / f".{dst.name}.old-{os.getpid()}"
    os.replace(dst, old)
    try:
        os.replace(src, dst)
    except OSError:
        os.replace(old, dst)
        raise
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()
