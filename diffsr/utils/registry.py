"""Name -> class registries in the style of BasicSR, with helpful errors.

Every pluggable component (network, loss, dataset, model, metric) is looked up by the ``type``
string of its option block. ``Registry.build`` validates the remaining keys against the
constructor signature, so a misspelled keyword is reported with the closest valid names.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ARCH_REGISTRY",
    "DATASET_REGISTRY",
    "LOSS_REGISTRY",
    "METRIC_REGISTRY",
    "MODEL_REGISTRY",
    "Registry",
    "RegistryError",
    "import_modules_with_suffix",
    "import_user_modules",
]


class RegistryError(LookupError):
    """Unknown or duplicate registry name, or bad keyword arguments for a registered object."""

    def __str__(self) -> str:  # LookupError would repr() the message
        return str(self.args[0]) if self.args else ""


def close_matches(word: str, candidates: list[str], n: int = 3) -> list[str]:
    """Closest candidates to ``word`` (case-insensitive), best first."""
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def suggestion(word: str, candidates: list[str]) -> str:
    hits = close_matches(word, candidates)
    return f" Did you mean {', '.join(repr(h) for h in hits)}?" if hits else ""


class Registry:
    """A mapping from names to classes or functions, filled by the ``register`` decorator.

    >>> ARCH_REGISTRY = Registry("arch")
    >>> @ARCH_REGISTRY.register()
    ... class MyNet(torch.nn.Module): ...
    >>> net = ARCH_REGISTRY.build({"type": "MyNet", "width": 32})
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._objects: dict[str, Callable[..., Any]] = {}

    def register(self, obj: Callable[..., Any] | None = None, *, name: str | None = None):
        """Register ``obj`` under ``name`` (default: its ``__name__``); usable as a decorator."""

        def add(item: Callable[..., Any]) -> Callable[..., Any]:
            key = name or item.__name__
            existing = self._objects.get(key)
            if existing is not None and existing is not item:
                raise RegistryError(
                    f"{self.name} registry: the name {key!r} is already registered by "
                    f"{existing.__module__}.{existing.__qualname__}; choose another name."
                )
            self._objects[key] = item
            return item

        return add(obj) if obj is not None else add

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._objects[name]
        except KeyError:
            known = sorted(self._objects)
            raise RegistryError(
                f"{self.name} registry has no {name!r}.{suggestion(name, known)} "
                f"Registered: {', '.join(known) or '(none)'}. A component defined outside "
                f"diffsr must be imported first, e.g. with 'imports: [my_package.my_module]' "
                f"in the options."
            ) from None

    def build(self, opt: Mapping[str, Any], **extra: Any) -> Any:
        """Instantiate ``opt['type']`` with the other keys of ``opt`` (plus ``extra``) as kwargs."""
        if "type" not in opt:
            raise RegistryError(f"{self.name} option block {dict(opt)} has no 'type' key.")
        kwargs = {k: v for k, v in opt.items() if k != "type"}
        kwargs.update(extra)
        cls = self.get(opt["type"])
        check_kwargs(cls, kwargs, f"{self.name} {opt['type']!r}")
        return cls(**kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._objects

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._objects))

    def __len__(self) -> int:
        return len(self._objects)

    def keys(self) -> list[str]:
        return sorted(self._objects)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {len(self)} entries)"


def check_kwargs(fn: Callable[..., Any], kwargs: Mapping[str, Any], what: str) -> None:
    """Raise RegistryError naming unknown or missing keyword arguments of ``fn``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in kwargs:
        if key not in accepted:
            raise RegistryError(
                f"{what} does not take the option {key!r}.{suggestion(key, accepted)} "
                f"Accepted: {', '.join(accepted)}."
            )
    missing = [
        n
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and n not in kwargs
    ]
    if missing:
        raise RegistryError(f"{what} needs the option(s) {', '.join(missing)}.")


def import_modules_with_suffix(package: str, suffix: str) -> list[str]:
    """Import every ``<package>/*<suffix>.py`` module (auto-discovery of registered parts)."""
    folder = Path(importlib.import_module(package).__file__).parent
    names = sorted(p.stem for p in folder.glob(f"*{suffix}.py"))
    for stem in names:
        importlib.import_module(f"{package}.{stem}")
    return names


def import_user_modules(entries: list[str], base_dir: str | Path | None = None) -> None:
    """Import modules named in an option file's ``imports:`` list (dotted names or .py paths).

    Importing runs their ``@XXX_REGISTRY.register()`` decorators, so a user's own architectures
    or losses become available without editing diffsr.
    """
    for entry in entries:
        if entry.endswith(".py") or "/" in entry or "\\" in entry:
            path = Path(entry)
            if not path.is_absolute() and base_dir is not None and not path.exists():
                path = Path(base_dir) / path
            if not path.is_file():
                raise FileNotFoundError(
                    f"imports: the file {entry!r} does not exist (looked at {path.resolve()})."
                )
            module_name = f"diffsr_user_{path.stem}_{abs(hash(str(path.resolve()))):x}"
            if module_name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        else:
            try:
                importlib.import_module(entry)
            except ModuleNotFoundError as err:
                raise ModuleNotFoundError(
                    f"imports: cannot import {entry!r} ({err}). Make sure it is installed or on "
                    f"PYTHONPATH, or give the path of a .py file instead."
                ) from err


ARCH_REGISTRY = Registry("arch")
LOSS_REGISTRY = Registry("loss")
DATASET_REGISTRY = Registry("dataset")
MODEL_REGISTRY = Registry("model")
METRIC_REGISTRY = Registry("metric")
