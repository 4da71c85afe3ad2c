"""Image folders on disk or in an LMDB, behind one small interface.

``open_image_folder(root, io_backend)`` returns an object with

* ``names``: the image names, relative POSIX paths with extension (for an LMDB, the names of its
  ``meta_info.txt``, i.e. ``<key>.png``), sorted for disk folders, in file order for LMDBs;
* ``read(name)``: the image as H x W x 3 float32 BGR in [0, 1] (see ``imfrombytes``);
* ``path_of(name)``: a path string for logs and result file names (its stem is the image key).

``io_backend`` is BasicSR's option block: ``{type: disk}`` or ``{type: lmdb}``; with lmdb the
dataroot is the ``.lmdb`` folder itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import lmdb
import numpy as np

from diffsr.data.lmdb_util import lmdb_key, read_meta_info
from diffsr.utils.img_util import imfrombytes

__all__ = [
    "IMAGE_EXTENSIONS",
    "DiskImageFolder",
    "ImageFolder",
    "LmdbImageFolder",
    "list_image_files",
    "open_image_folder",
]

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"}
)
BACKEND_TYPES = ("disk", "lmdb")


class ImageFolder(Protocol):
    root: Path
    names: list[str]

    def read(self, name: str) -> np.ndarray: ...

    def path_of(self, name: str) -> str: ...


def list_image_files(folder: str | os.PathLike, recursive: bool = False) -> list[str]:
    """Sorted relative POSIX paths of the image files in ``folder`` (hidden entries skipped)."""
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"{root}: folder not found; check the dataroot option.")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: is not a folder; check the dataroot option.")
    pattern = "**/*" if recursive else "*"
    names = []
    for path in root.glob(pattern):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            names.append(relative.as_posix())
    return sorted(names)


class DiskImageFolder:
    """Images stored as files under ``root`` (optionally in sub-folders)."""

    def __init__(self, root: str | os.PathLike, recursive: bool = False) -> None:
        self.root = Path(root)
        self.names = list_image_files(self.root, recursive)

    def path_of(self, name: str) -> str:
        return str(self.root / name)

    def read_bytes(self, name: str) -> bytes:
        path = self.root / name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: image file disappeared after listing.") from None

    def read(self, name: str) -> np.ndarray:
        return imfrombytes(self.read_bytes(name), self.path_of(name))


_OPEN_LMDB: dict[tuple[int, Path], lmdb.Environment] = {}


def _open_lmdb(root: Path) -> lmdb.Environment:
    """One read-only environment per folder and process: LMDB refuses to open a path twice in
    one process, which two datasets on the same folder (train and val splits) would do."""
    key = (os.getpid(), root)
    if key not in _OPEN_LMDB:
        _OPEN_LMDB[key] = lmdb.open(
            str(root), readonly=True, lock=False, readahead=False, meminit=False
        )
    return _OPEN_LMDB[key]


class LmdbImageFolder:
    """Images in a BasicSR-format LMDB folder (``data.mdb`` + ``meta_info.txt``).

    The environment is opened lazily, read-only, without locking or read-ahead, once per
    process: it is dropped when pickled and reopened after a fork, so every DataLoader worker
    gets its own handle.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{self.root}: LMDB folder not found; with io_backend type lmdb the dataroot must "
                f"be a .lmdb folder made by scripts/create_lmdb.py."
            )
        if not (self.root / "data.mdb").is_file():
            raise FileNotFoundError(
                f"{self.root / 'data.mdb'}: missing; {self.root} is not an LMDB folder. Build one "
                f"with scripts/create_lmdb.py, or use io_backend type disk for image folders."
            )
        self.names = [entry.name for entry in read_meta_info(self.root)]
        self._env: lmdb.Environment | None = None
        self._env_pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_env"] = state["_env_pid"] = None
        return state

    def _environment(self) -> lmdb.Environment:
        if self._env is None or self._env_pid != os.getpid():
            self._env = _open_lmdb(self.root.resolve())
            self._env_pid = os.getpid()
        return self._env

    def path_of(self, name: str) -> str:
        return str(self.root / name)

    def read_bytes(self, name: str) -> bytes:
        key = lmdb_key(name)
        with self._environment().begin(write=False) as txn:
            value = txn.get(key.encode("utf-8"))
        if value is None:
            raise KeyError(
                f"{self.root}: key {key!r} is listed in meta_info.txt but missing from data.mdb; "
                f"rebuild the LMDB with scripts/create_lmdb.py."
            )
        return value

    def read(self, name: str) -> np.ndarray:
        return imfrombytes(
            self.read_bytes(name), f"{self.path_of(name)} (LMDB key {lmdb_key(name)!r})"
        )


def open_image_folder(
    root: str | os.PathLike, io_backend: Mapping[str, Any], recursive: bool = False
) -> DiskImageFolder | LmdbImageFolder:
    """Open ``root`` with the backend named by ``io_backend['type']`` (disk or lmdb)."""
    if not isinstance(io_backend, Mapping) or "type" not in io_backend:
        raise ValueError(f"io_backend must be a mapping like {{type: disk}}, got {io_backend!r}.")
    extra = sorted(set(io_backend) - {"type"})
    if extra:
        raise ValueError(f"io_backend: unknown key(s) {extra}; only 'type' is read.")
    backend = io_backend["type"]
    if backend == "disk":
        return DiskImageFolder(root, recursive)
    if backend == "lmdb":
        return LmdbImageFolder(root)
    raise ValueError(f"io_backend type {backend!r} is not supported; use one of {BACKEND_TYPES}.")
