"""Opening checkpoint files without running any code stored in them.

A ``.pth`` file is a pickle, and unpickling can call anything the file names. Every file is
read here with PyTorch's ``weights_only`` unpickler (tensors, containers, numbers, strings),
in the zip or the legacy (pre-zip) format, with three narrow extensions:

- numpy's scalar and dtype types (FFA-Net stores its metrics as ``numpy.float64``), and for
  diffsr's own training states numpy arrays (the NumPy RNG state);
- a whole pickled ``nn.Module`` (``torch.save(model)``, as MSBDN-DFF distributes its weights,
  possibly inside ``DataParallel``): every class the file names is replaced by an inert
  :class:`_Stub` (no code of it is imported or run) and only the parameter and buffer tensors
  are kept, under their dotted names;
- anything else is refused with :class:`UnsafeCheckpointError` naming the file and the globals.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["UnsafeCheckpointError", "read_checkpoint", "read_training_state"]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint needs a global that diffsr does not load."""


def _numpy_scalar_globals() -> list[tuple[Any, str]]:
    """numpy's scalar constructor and numeric dtypes, under numpy 1 and numpy 2 names."""
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    allowed: list[tuple[Any, str]] = [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        (np.dtype, "numpy.dtype"),
    ]
    for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType"):
        dtype_class = getattr(np.dtypes, name, None)
        if dtype_class is not None:
            allowed.append((dtype_class, f"numpy.dtypes.{name}"))
    return allowed


def _numpy_array_globals() -> list[tuple[Any, str]]:
    """Plain numpy arrays (the NumPy RNG state of a training state)."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    allowed = [
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        (multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
        (np.ndarray, "numpy.ndarray"),
    ]
    dtype_class = getattr(np.dtypes, "UInt32DType", None)
    if dtype_class is not None:
        allowed.append((dtype_class, "numpy.dtypes.UInt32DType"))
    return _numpy_scalar_globals() + allowed


def _torch_load(path: Path, extra_globals: list[tuple[Any, str]]) -> Any:
    with torch.serialization.safe_globals(extra_globals):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_training_state(path: str | Path) -> Any:
    """A diffsr training state (optimizer, RNG and metric states), read with weights_only."""
    path = Path(path)
    try:
        return _torch_load(path, _numpy_array_globals())
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{path}: refusing to load this training state, it needs globals that a diffsr "
            f"training state never contains ({_first_line(err)}). Was it written by diffsr?"
        ) from None


def read_checkpoint(path: str | Path) -> Any:
    """The object stored in a network file, opened safely (see the module docstring).

    A whole pickled module comes back as a ``dict`` of its parameter and buffer tensors
    (dotted names, as ``state_dict()`` would give; ``module.`` where it was in DataParallel).
    Raises :class:`UnsafeCheckpointError` for a file that needs any other global.
    """
    path = Path(path)
    try:
        return _torch_load(path, _numpy_scalar_globals())
    except pickle.UnpicklingError as err:
        first_error = _first_line(err)
    unsafe = sorted(_globals_in_checkpoint(path) - _known_safe_globals())
    if not unsafe:  # refused for another reason (an opcode, a blocked module)
        raise UnsafeCheckpointError(f"{path}: refusing to unpickle this file: {first_error}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.serialization.SourceChangeWarning)
            warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
            content = _load_with_stubs(path, unsafe)
    except (pickle.UnpicklingError, RuntimeError, TypeError, AttributeError) as err:
        raise _refusal(path, unsafe, _first_line(err)) from None
    if not _is_module(content):
        raise _refusal(path, unsafe, "the file is not a pickled network")
    return dict(_module_tensors(content))


def _first_line(err: BaseException) -> str:
    """The informative line of an unpickling error (torch's own reason, not its preamble)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [
        line.strip()
        for line in text.strip().splitlines()
        if line.strip() and not line.strip().startswith(boilerplate)
    ]
    return lines[0] if lines else type(err).__name__


def _refusal(path: Path, unsafe: list[str], reason: str) -> UnsafeCheckpointError:
    shown = ", ".join(unsafe[:5]) + (", ..." if len(unsafe) > 5 else "")
    return UnsafeCheckpointError(
        f"{path}: refusing to load this file ({reason}); it needs the global(s) {shown}. "
        f"diffsr reads tensors, containers, numbers, numpy scalars and the tensors of a whole "
        f"pickled network, and never runs code from a checkpoint. If you trust the file, load "
        f"it yourself and save its state_dict(); see docs/pretrained.md."
    )


# ---------------------------------------------------------------- whole pickled modules
class _Stub:
    """Stands for any class a pickled network names: accepts any arguments, runs nothing.

    ``BUILD`` fills its ``__dict__`` (an ``nn.Module``'s ``_parameters``, ``_buffers``,
    ``_modules``, ...); nothing else of the original class exists.
    """

    dump_patches = False  # torch's legacy loader checks this before comparing sources

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __new__(cls, *args: Any, **kwargs: Any) -> _Stub:
        return object.__new__(cls)


def _stub_class(qualified_name: str) -> type[_Stub]:
    """A distinct inert stub subclass, named after the global it stands for."""
    return type(qualified_name.rsplit(".", 1)[-1], (_Stub,), {"__module__": __name__})


def _load_with_stubs(path: Path, unsafe: list[str]) -> Any:
    """Unpickle with every global in ``unsafe`` replaced by an inert stub class."""
    if zipfile.is_zipfile(path):
        stubs = [(_stub_class(name), name) for name in unsafe]
        return _torch_load(path, _numpy_scalar_globals() + stubs)
    # the legacy format keeps a pickled network's classes in persistent ids, which torch's
    # weights_only reader refuses: read it with torch's legacy reader and our own unpickler
    with open(path, "rb") as handle:
        return torch.serialization._legacy_load(
            handle, "cpu", _StubbingPickleModule, encoding="utf-8"
        )


def _canonical_global(module: str, name: str) -> str:
    """``module.name`` with Python 2 names (pickle protocol < 3) mapped to Python 3 ones."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


class _StubbingUnpickler(pickle.Unpickler):
    """Resolves only torch's ``weights_only`` globals; every other global becomes a stub."""

    def find_class(self, module: str, name: str) -> Any:
        from torch import _weights_only_unpickler as wou

        qualified = _canonical_global(module, name)
        allowed = wou._get_allowed_globals()
        return allowed[qualified] if qualified in allowed else _stub_class(qualified)


class _StubbingPickleModule:
    """The two names torch's legacy reader uses from a pickle module."""

    Unpickler = _StubbingUnpickler

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _StubbingUnpickler(file, **kwargs).load()


def _is_module(obj: Any) -> bool:
    return isinstance(obj, _Stub) and isinstance(obj.__dict__.get("_modules"), dict)


def _module_tensors(module: _Stub, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    state = module.__dict__
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, tensor in (state.get(group) or {}).items():
            if isinstance(tensor, torch.Tensor) and name not in skip:
                yield prefix + name, tensor.detach()
    for name, child in (state.get("_modules") or {}).items():
        if _is_module(child):
            yield from _module_tensors(child, f"{prefix}{name}.")


def _known_safe_globals() -> set[str]:
    from torch import _weights_only_unpickler as wou

    names = {name for _, name in _numpy_scalar_globals()}
    return names | set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())


def _globals_in_checkpoint(path: Path) -> set[str]:
    """Every ``module.name`` global the file's pickles name (read statically, nothing runs)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            records = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            pickles = [io.BytesIO(archive.read(name)) for name in records]
        return set().union(*(_pickle_globals(stream) for stream in pickles))
    found: set[str] = set()
    with open(path, "rb") as handle:  # legacy: magic, protocol, sys info, object, storage keys
        for _ in range(5):
            try:
                found |= _pickle_globals(handle)
            except (ValueError, EOFError, pickle.UnpicklingError):
                break
    return found


def _pickle_globals(stream: Any) -> set[str]:
    found: set[str] = set()
    recent: list[str] = []
    for opcode, arg, _ in pickletools.genops(stream):
        if opcode.name in ("GLOBAL", "INST"):
            found.add(_canonical_global(*arg.split(" ", 1)))
        elif opcode.name == "STACK_GLOBAL" and len(recent) >= 2:
            found.add(_canonical_global(recent[-2], recent[-1]))
        elif isinstance(arg, str) and ("UNICODE" in opcode.name or "STRING" in opcode.name):
            recent.append(str(arg))
        if opcode.name == "STOP":
            break
    return found
