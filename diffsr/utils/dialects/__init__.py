"""Option files written for BasicSR and its forks (Restormer / MB-TaylorFormer, FSDGN).

One module per codebase describes how its keys reach diffsr:

- ``MODEL_TYPES``: its ``model_type`` names and the diffsr model each runs as;
- ``rewrite(opt, notes)``: keys renamed or translated into diffsr's (e.g. Restormer's
  ``use_grad_clip: true`` becomes ``grad_clip: 0.01``);
- ``INERT``: keys that do nothing in diffsr; accepted, removed, and named in one logged line;
- ``UNSUPPORTED``: keys (or values) diffsr does not implement; the run stops at start with the
  key, the codebase and what to do.

:func:`translate` applies all of them before the schema check of ``diffsr.utils.options``; a
key none of them knows is then reported by the schema as unknown. Notes are stored under the
option ``dialect_notes`` and logged by the trainer.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["DialectError", "ModelType", "Rule", "find_keys", "translate"]


class DialectError(ValueError):
    """A foreign key or value diffsr does not implement; the message says what to do."""


@dataclass(frozen=True)
class Rule:
    """A dotted key pattern (``*`` matches one level) and why it is inert or unsupported.

    ``when``: the rule applies only to values for which it returns True (default: any value).
    """

    pattern: str
    message: str
    when: Callable[[Any], bool] | None = None


@dataclass(frozen=True)
class ModelType:
    """A foreign ``model_type``: the diffsr model it runs as (None: not implemented).

    ``losses_on_all_outputs``: the foreign model applies every loss to each output of a
    multi-output network and sums them (diffsr's ``output: all``).
    ``message``: what differs (logged), or, when ``target`` is None, what to do instead.
    ``apply``: further rewrites the model implies (e.g. SwinIRModel's test-time padding).
    """

    target: str | None
    message: str = ""
    losses_on_all_outputs: bool = False
    apply: Callable[[dict], None] | None = None


def find_keys(opt: dict, pattern: str) -> Iterator[tuple[list[str], Any]]:
    """Every ``(path, value)`` in ``opt`` whose dotted path matches ``pattern``."""

    def walk(node: Any, parts: list[str], path: list[str]) -> Iterator[tuple[list[str], Any]]:
        if not parts:
            yield path, node
            return
        if not isinstance(node, dict):
            return
        for key in list(node):
            if fnmatch.fnmatchcase(str(key), parts[0]):
                yield from walk(node[key], parts[1:], [*path, str(key)])

    yield from walk(opt, pattern.split("."), [])


def _delete(opt: dict, path: list[str]) -> None:
    node = opt
    for key in path[:-1]:
        node = node[key]
    node.pop(path[-1], None)


def _dialects() -> list[Any]:
    from diffsr.utils.dialects import basicsr, fsdgn, restormer

    return [basicsr, restormer, fsdgn]


def _apply_model_type(opt: dict, notes: list[str]) -> None:
    name = opt.get("model_type")
    for dialect in _dialects():
        model = dialect.MODEL_TYPES.get(name)
        if model is None:
            continue
        if model.target is None:
            raise DialectError(
                f"model_type {name!r} ({dialect.CODEBASE}) is not implemented in diffsr: "
                f"{model.message}"
            )
        opt["model_type"] = model.target
        note = f"model_type {name} ({dialect.CODEBASE}) runs as diffsr's {model.target}"
        if model.losses_on_all_outputs:
            for key, block in (opt.get("train") or {}).items():
                if key.endswith("_opt") and isinstance(block, dict) and "type" in block:
                    block.setdefault("output", "all")
            note += "; each loss applies to every network output and is summed (output: all)"
        notes.append(f"{note}{'; ' + model.message if model.message else ''}.")
        if model.apply is not None:
            model.apply(opt)
        return


def translate(opt: dict) -> tuple[dict, list[str]]:
    """Map foreign keys of ``opt`` to diffsr's; returns the new options and the notes to log.

    Raises DialectError for a key or value that no diffsr feature implements.
    """
    opt = copy.deepcopy(opt)
    notes: list[str] = []
    dialects = _dialects()
    for dialect in dialects:
        for rule in dialect.UNSUPPORTED:
            for path, value in find_keys(opt, rule.pattern):
                if rule.when is None or rule.when(value):
                    raise DialectError(
                        f"{'.'.join(path)}: {value!r} ({dialect.CODEBASE}) is not implemented "
                        f"in diffsr. {rule.message}"
                    )
    _apply_model_type(opt, notes)
    for dialect in dialects:
        dialect.rewrite(opt, notes)
    for dialect in dialects:
        for rule in dialect.INERT:
            found = [
                (path, value)
                for path, value in find_keys(opt, rule.pattern)
                if rule.when is None or rule.when(value)
            ]
            for path, _ in found:
                _delete(opt, path)
            if found:
                where = ", ".join(f"{'.'.join(p)}: {v!r}" for p, v in found)
                notes.append(f"{where} ({dialect.CODEBASE}): accepted, no effect: {rule.message}")
    return opt, notes
