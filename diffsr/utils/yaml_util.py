"""YAML loading that reads ``1e-4`` as a float (plain PyYAML reads it as a string)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["dump_yaml", "load_yaml", "parse_scalar"]


class _Loader(yaml.SafeLoader):
    """Safe loader with YAML 1.2 floats: ``1e-4``, ``5E3`` and ``.5`` are numbers."""


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Option file {path} does not exist.")
    try:
        with path.open(encoding="utf-8") as handle:
            return yaml.load(handle, Loader=_Loader)
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from err


def parse_scalar(text: str) -> Any:
    """Parse a command-line value with the same rules as the option files."""
    return yaml.load(text, Loader=_Loader)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
