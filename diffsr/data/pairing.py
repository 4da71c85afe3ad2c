"""Matching LQ and GT images by name, and selecting a subset of a data set.

Every image gets a *pair id* from its file name; an LQ and a GT image with the same id form a
pair. A :class:`NameMapping` holds one regular expression per side, matched (in full) against
the base name of each file; its group ``id`` (or its first group) is the pair id. Files whose
names do not match are ignored, so LQ and GT images may share one folder. For files in
sub-folders the sub-folder path is prefixed to the id.

Presets:

=============  ===========================  ===========================  ===========
name           LQ name                      GT name                      pair id
=============  ===========================  ===========================  ===========
``identity``   ``x.png``                    ``x.png`` (any extension)    ``x``
``dense_haze`` ``01_hazy.png``              ``01_GT.png``                ``01``
``prenet``     ``rain-1.png``               ``norain-1.png``             ``1``
=============  ===========================  ===========================  ===========

``dense_haze`` also fits NH-HAZE. BasicSR's ``filename_tmpl`` (LQ name = template filled with
the GT stem, e.g. ``'{}_x4'``) is turned into an equivalent mapping.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

__all__ = [
    "NAME_MAPPING_PRESETS",
    "NameMapping",
    "Pair",
    "Selection",
    "find_pairs",
    "natural_key",
]

# A meta-info line: the name, optionally followed by `` (h,w,c)`` (BasicSR's disk meta-info files,
# e.g. ``0001_s001.png (480,480,3)``) and a PNG level (LMDB meta_info.txt).
META_ENTRY_PATTERN = re.compile(r"^(?P<name>.+?) \(\d+,\d+,\d+\)(?: \d+)?$")

ANY_EXTENSION = r"\.[^.]+"
NAME_MAPPING_PRESETS: dict[str, tuple[str, str]] = {
    "identity": (rf"(?P<id>.+){ANY_EXTENSION}", rf"(?P<id>.+){ANY_EXTENSION}"),
    "dense_haze": (rf"(?P<id>.+)_hazy{ANY_EXTENSION}", rf"(?P<id>.+)_GT{ANY_EXTENSION}"),
    "prenet": (rf"rain-(?P<id>\d+){ANY_EXTENSION}", rf"norain-(?P<id>\d+){ANY_EXTENSION}"),
}
T = TypeVar("T")


def natural_key(text: str) -> list[Any]:
    """Sort key ordering embedded numbers by value ('rain-2' before 'rain-10')."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _compile(pattern: str, what: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"{what}: invalid regular expression {pattern!r} ({err}).") from None
    if compiled.groups == 0:
        raise ValueError(
            f"{what}: the pattern {pattern!r} needs a capturing group for the pair id, "
            f"e.g. '(?P<id>.+)_hazy\\.png'."
        )
    return compiled


@dataclass(frozen=True)
class NameMapping:
    """Regular expressions extracting the pair id from LQ and GT file names."""

    lq_pattern: re.Pattern[str]
    gt_pattern: re.Pattern[str]

    @classmethod
    def from_options(
        cls, name_mapping: str | Mapping[str, str] | None = None, filename_tmpl: str | None = None
    ) -> NameMapping:
        """Build from the dataset options ``name_mapping`` (preset or {lq, gt}) or
        ``filename_tmpl`` (BasicSR); neither gives ``identity``."""
        if name_mapping is not None and filename_tmpl is not None:
            raise ValueError("Give either name_mapping or filename_tmpl, not both.")
        if filename_tmpl is not None:
            if filename_tmpl.count("{}") != 1:
                raise ValueError(
                    f"filename_tmpl {filename_tmpl!r} must contain '{{}}' exactly once "
                    f"(it stands for the GT file stem)."
                )
            prefix, suffix = filename_tmpl.split("{}")
            lq = rf"{re.escape(prefix)}(?P<id>.+){re.escape(suffix)}{ANY_EXTENSION}"
            gt = NAME_MAPPING_PRESETS["identity"][1]
            return cls(_compile(lq, "filename_tmpl"), re.compile(gt))
        if name_mapping is None:
            name_mapping = "identity"
        if isinstance(name_mapping, str):
            if name_mapping not in NAME_MAPPING_PRESETS:
                raise ValueError(
                    f"name_mapping {name_mapping!r} is not a preset; use one of "
                    f"{sorted(NAME_MAPPING_PRESETS)} or a mapping {{lq: REGEX, gt: REGEX}}."
                )
            lq, gt = NAME_MAPPING_PRESETS[name_mapping]
            return cls(re.compile(lq), re.compile(gt))
        if not isinstance(name_mapping, Mapping) or set(name_mapping) != {"lq", "gt"}:
            raise ValueError(
                f"name_mapping must be a preset name or a mapping with exactly the keys 'lq' and "
                f"'gt' (regular expressions), got {name_mapping!r}."
            )
        return cls(
            _compile(name_mapping["lq"], "name_mapping.lq"),
            _compile(name_mapping["gt"], "name_mapping.gt"),
        )

    def pair_id(self, name: str, side: str) -> str | None:
        """Pair id of the file ``name`` (relative path) on ``side`` ('lq'/'gt'), or None."""
        pattern = self.lq_pattern if side == "lq" else self.gt_pattern
        path = PurePosixPath(name)
        match = pattern.fullmatch(path.name)
        if match is None:
            return None
        pair_id = match["id"] if "id" in pattern.groupindex else match[1]
        return pair_id if str(path.parent) == "." else f"{path.parent}/{pair_id}"


@dataclass(frozen=True)
class Pair:
    """An LQ/GT pair: the shared id and each side's file name within its folder."""

    pair_id: str
    lq_name: str
    gt_name: str


@dataclass(frozen=True)
class Selection:
    """Subset options, applied in this order (all optional):

    * ``name_filter``: regular expression that must match the whole id;
    * ``id_range``: ``[first, last]``, inclusive, for integer ids (``'07'`` counts as 7);
    * ``meta_info_file``: text file whose lines name the items to keep (by id or file name;
      a trailing ``(h,w,c)`` as in BasicSR's meta-info files, or ``(h,w,c) level`` as in LMDB
      meta_info.txt, is allowed); keeps its order.
    """

    name_filter: str | None = None
    id_range: Sequence[int] | None = None
    meta_info_file: str | None = None

    def __post_init__(self) -> None:
        if self.name_filter is not None:
            try:
                re.compile(self.name_filter)
            except re.error as err:
                raise ValueError(f"name_filter {self.name_filter!r} is invalid ({err}).") from None
        if self.id_range is not None and (
            len(self.id_range) != 2 or not all(isinstance(v, int) for v in self.id_range)
        ):
            raise ValueError(f"id_range must be [first, last] integers, got {self.id_range!r}.")

    def keep_id(self, item_id: str) -> bool:
        """Whether ``item_id`` passes ``name_filter`` and ``id_range``."""
        if self.name_filter is not None and re.fullmatch(self.name_filter, item_id) is None:
            return False
        if self.id_range is not None:
            number = PurePosixPath(item_id).name
            if not number.isdigit():
                raise ValueError(
                    f"id_range needs integer ids, but {item_id!r} is not one; use name_filter "
                    f"(a regular expression) instead."
                )
            return self.id_range[0] <= int(number) <= self.id_range[1]
        return True

    def apply_meta_info(self, items: list[T], aliases: Callable[[T], Iterable[str]]) -> list[T]:
        """Keep the items named in ``meta_info_file`` (in its order); error on unknown names."""
        if self.meta_info_file is None:
            return items
        path = Path(self.meta_info_file)
        if not path.is_file():
            raise FileNotFoundError(f"meta_info_file {path}: no such file.")
        lookup = {alias: item for item in items for alias in aliases(item)}
        kept, unknown = [], []
        for line in path.read_text(encoding="utf-8").splitlines():
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            match = META_ENTRY_PATTERN.match(entry)
            entry = match["name"] if match else entry
            if entry in lookup:
                kept.append(lookup[entry])
            else:
                unknown.append(entry)
        if unknown:
            raise ValueError(
                f"meta_info_file {path}: {len(unknown)} entr{'y' if len(unknown) == 1 else 'ies'} "
                f"match no image (after filters), e.g. {unknown[:5]}."
            )
        if not kept:
            raise ValueError(f"meta_info_file {path}: lists no images.")
        return kept


def _ids_of_folder(
    names: Sequence[str], mapping: NameMapping, side: str, selection: Selection, folder: str
) -> dict[str, str]:
    """``{pair_id: file name}`` of one side, after ``name_filter``/``id_range``."""
    ids: dict[str, str] = {}
    matched = 0
    for name in names:
        pair_id = mapping.pair_id(name, side)
        if pair_id is None:
            continue
        matched += 1
        if pair_id in ids:
            raise ValueError(
                f"{folder}: {ids[pair_id]!r} and {name!r} both have the pair id {pair_id!r}; "
                f"remove one, or adjust name_mapping."
            )
        if selection.keep_id(pair_id):
            ids[pair_id] = name
    if not names:
        raise ValueError(f"{folder}: contains no images.")
    if matched == 0:
        pattern = (mapping.lq_pattern if side == "lq" else mapping.gt_pattern).pattern
        raise ValueError(
            f"{folder}: none of its {len(names)} images (e.g. {list(names[:3])}) matches the "
            f"{side.upper()} name pattern {pattern!r}; check name_mapping."
        )
    return ids


def find_pairs(
    lq_names: Sequence[str],
    gt_names: Sequence[str],
    mapping: NameMapping,
    selection: Selection | None = None,
    lq_folder: str = "LQ folder",
    gt_folder: str = "GT folder",
) -> list[Pair]:
    """Pair LQ and GT file names by id; every selected image must have a partner.

    Returns the pairs in natural order of their ids (or in ``meta_info_file`` order).
    """
    selection = selection or Selection()
    lq_ids = _ids_of_folder(lq_names, mapping, "lq", selection, lq_folder)
    gt_ids = _ids_of_folder(gt_names, mapping, "gt", selection, gt_folder)
    if not lq_ids:
        raise ValueError(f"{lq_folder}: name_filter/id_range removed every image.")
    problems = []
    for ids, other, folder, other_folder in (
        (lq_ids, gt_ids, lq_folder, gt_folder),
        (gt_ids, lq_ids, gt_folder, lq_folder),
    ):
        lonely = sorted((i for i in ids if i not in other), key=natural_key)
        if lonely:
            examples = ", ".join(f"{folder}/{ids[i]}" for i in lonely[:5])
            problems.append(
                f"{len(lonely)} image(s) have no partner in {other_folder}: {examples}"
                + (" ..." if len(lonely) > 5 else "")
            )
    if problems:
        raise ValueError(
            "LQ/GT images do not pair up. "
            + "; ".join(problems)
            + ". Check the dataroots and name_mapping (or restrict the set with name_filter, "
            "id_range or meta_info_file)."
        )
    pairs = [Pair(i, lq_ids[i], gt_ids[i]) for i in sorted(lq_ids, key=natural_key)]
    return selection.apply_meta_info(pairs, lambda p: (p.pair_id, p.lq_name, p.gt_name))
