"""Option files: BasicSR's YAML schema, validated on load, with command-line overrides.

Every key is checked against the schema below (or, for ``type:`` blocks, against the registered
constructor's signature) before anything is built, so a misspelled key or a wrong type fails at
start with the file and the dotted key named, never late in a long run. Nothing in the option
text is executed. Keys of BasicSR and its forks are first mapped by ``diffsr.utils.dialects``.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffsr.models.lr_scheduler import check_scheduler_options
from diffsr.models.optimizers import check_optimizer_options
from diffsr.utils.dialects import DialectError, translate
from diffsr.utils.registry import (
    ARCH_REGISTRY,
    DATASET_REGISTRY,
    LOSS_REGISTRY,
    METRIC_REGISTRY,
    MODEL_REGISTRY,
    Registry,
    RegistryError,
    check_kwargs,
    import_user_modules,
    suggestion,
)
from diffsr.utils.yaml_util import load_yaml, parse_scalar

__all__ = ["OptionError", "apply_overrides", "parse_options", "validate_options"]

REQUIRED = object()
OMIT = object()  # no default: the consumer (e.g. build_dataloader) applies its own


class OptionError(ValueError):
    """An option file or override is wrong; the message names the file and the key."""


@dataclass
class Key:
    """A leaf value: accepted types, default (or REQUIRED), optional allowed choices."""

    types: tuple[type, ...]
    default: Any = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = True


@dataclass
class Section:
    """A mapping with known keys; ``patterns`` map key regexes to specs for dynamic keys."""

    fields: dict[str, Any]
    patterns: dict[str, Any] = field(default_factory=dict)
    required: bool = False
    extra_keys: Callable[[dict], list[str]] | None = None  # keys accepted beyond ``fields``


@dataclass
class MapOf:
    """A mapping whose keys are free names and whose values all follow ``spec``."""

    spec: Any


@dataclass
class Custom:
    """A value checked by ``check(value, where)``, which returns it (defaults filled) or raises
    ValueError."""

    check: Callable[[Any, str], Any]


@dataclass
class Block:
    """A ``type: Name`` block built from ``registry``; other keys are constructor kwargs."""

    registry: Registry
    required: bool = False
    ignored: tuple[str, ...] = ()  # keys consumed by the caller, not passed to the constructor
    provided: tuple[str, ...] = ()  # arguments the caller supplies at call time


NUM = (int, float)
STR = (str,)
INT = (int,)
BOOL = (bool,)
LIST = (list, tuple)


def _dataset_keys(block: dict) -> list[str]:
    """Keys a dataset class reads: the fields of its ``options_cls`` dataclass (diffsr.data)."""
    name = block.get("type")
    if name not in DATASET_REGISTRY:
        known = ", ".join(DATASET_REGISTRY)
        raise OptionError(
            f"dataset type {name!r} is not registered.{suggestion(str(name), list(DATASET_REGISTRY))} Registered: {known}."
        )
    options_cls = getattr(DATASET_REGISTRY.get(name), "options_cls", None)
    if options_cls is None:
        return []
    return [f.name for f in dataclasses.fields(options_cls)]


DATASET_SPEC = Section(
    {
        "name": Key(STR, "dataset"),
        "type": Key(STR, REQUIRED),
        "phase": Key(STR, None),
        "batch_size_per_gpu": Key(INT, OMIT),
        "num_worker_per_gpu": Key(INT, OMIT),
        "dataset_enlarge_ratio": Key(INT, OMIT),
        "pin_memory": Key(BOOL, OMIT),
        "persistent_workers": Key(BOOL, OMIT),
        "prefetch_factor": Key(INT, OMIT),
        "prefetch_mode": Key(STR, OMIT),
        "use_shuffle": Key(BOOL, OMIT),
    },
    extra_keys=_dataset_keys,
)

OPTIMIZER_SPEC = Custom(check_optimizer_options)  # any torch.optim class (models/optimizers.py)
SCHEDULER_SPEC = Custom(lambda value, where: check_scheduler_options(value))

SCHEMA = Section(
    {
        "name": Key(STR, REQUIRED),
        "model_type": Key(STR, "RestorationModel"),
        "scale": Key(INT, 1),
        "device": Key(STR, "auto"),
        "manual_seed": Key(INT, 0),
        "num_threads": Key(INT, None),  # torch intra-op threads on CPU; None: train.py decides
        "imports": Key(LIST, []),
        "dialect_notes": Key(LIST, []),  # set by diffsr.utils.dialects, logged by the trainer
        "is_train": Key(BOOL, True),
        "dist": Key(BOOL, False),
        "rank": Key(INT, 0),
        "world_size": Key(INT, 1),
        "launcher": Key(STR, "none"),
        "auto_resume": Key(BOOL, False),
        "datasets": MapOf(DATASET_SPEC),
        "network_g": Block(ARCH_REGISTRY, required=True),
        "network_d": Block(ARCH_REGISTRY),
        "path": Section(
            {
                "pretrain_network_g": Key(STR, None),
                "param_key_g": Key(STR, "params"),
                "strict_load_g": Key(BOOL, True),
                "pretrain_network_d": Key(STR, None),
                "param_key_d": Key(STR, "params"),
                "strict_load_d": Key(BOOL, True),
                "resume_state": Key(STR, None),
                "experiments_root": Key(STR, None),
                "results_root": Key(STR, None),
                "models": Key(STR, None),
                "training_states": Key(STR, None),
                "log": Key(STR, None),
                "visualization": Key(STR, None),
            }
        ),
        "train": Section(
            {
                "optim_g": OPTIMIZER_SPEC,
                "optim_d": OPTIMIZER_SPEC,
                "scheduler": SCHEDULER_SPEC,
                "total_iter": Key(INT, REQUIRED),
                "warmup_iter": Key(INT, -1),
                "ema_decay": Key(NUM, 0.0),
                "grad_clip": Key(NUM, None),
                "amp": Key(BOOL, False),
                "amp_dtype": Key(STR, "bfloat16", choices=("bfloat16", "float16")),
                "nan_policy": Key(STR, "stop", choices=("stop", "skip")),
                "net_d_iters": Key(INT, 1),
                "net_d_init_iters": Key(INT, 0),
                "mixing_augs": Section(  # Restormer's mixup of training pairs
                    {
                        "mixup": Key(BOOL, False),
                        "mixup_beta": Key(NUM, 1.2),
                        "use_identity": Key(BOOL, False),
                    }
                ),
            },
            patterns={r".+_opt$": Block(LOSS_REGISTRY, ignored=("output",))},
        ),
        "val": Section(
            {
                "val_freq": Key(NUM, 5000),
                "save_img": Key(BOOL, False),
                "suffix": Key(STR, None),
                "pbar": Key(BOOL, True),
                "max_save_img": Key(INT, 20),
                "window_size": Key(INT, None),  # pad the test input to a multiple (Restormer)
                "tile": Section(  # diffsr/test.py: tiled inference; size required when present
                    {
                        "size": Key(INT, REQUIRED),
                        "overlap": Key(INT, 32),
                        "ramp": Key(STR, "cosine", choices=("cosine", "linear")),
                    }
                ),
                "metrics": MapOf(
                    Block(METRIC_REGISTRY, ignored=("better",), provided=("img", "img2"))
                ),
            }
        ),
        # --launcher pytorch/slurm: the process-group backend (default nccl with CUDA, else
        # gloo) and, under Slurm, the rendezvous port (torchrun sets its own).
        "dist_params": Section({"backend": Key(STR, None), "port": Key(INT, 29500)}),
        "logger": Section(
            {
                "print_freq": Key(INT, 100),
                "save_checkpoint_freq": Key(NUM, 5000),
                "keep_last": Key(INT, 3),
                "use_tb_logger": Key(BOOL, False),
                "grad_share": Key(BOOL, True),  # log grad_share_<term> (models/grad_share.py)
                "wandb": Section(  # Weights & Biases: on when project is set (utils/logger.py)
                    {
                        "project": Key(STR, None),
                        "resume_id": Key(STR, None),
                        "entity": Key(STR, None),
                    }
                ),
            }
        ),
        "diffusion": Section(  # DiffusionPriorModel only
            {
                "noise_schedule": Key(STR, "linear", choices=("linear", "cosine")),
                "diffusion_steps": Key(INT, 1000),
                "val_draws": Key(INT, 4),
            }
        ),
    }
)


def _type_names(types: tuple[type, ...]) -> str:
    names = {int: "integer", float: "number", str: "string", bool: "true/false", list: "list"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types if t is not tuple))


def _check_leaf(spec: Key, value: Any, where: str) -> Any:
    if value is None and spec.nullable:
        return value
    ok = isinstance(value, spec.types) and not (isinstance(value, bool) and bool not in spec.types)
    if not ok:
        raise OptionError(
            f"{where} must be {_type_names(spec.types)}, got {type(value).__name__} {value!r}."
        )
    if spec.choices is not None and value not in spec.choices:
        hint = suggestion(str(value), [str(c) for c in spec.choices])
        raise OptionError(
            f"{where} is {value!r}; allowed: {', '.join(map(str, spec.choices))}.{hint}"
        )
    return list(value) if isinstance(value, tuple) else value


def _check_block(spec: Block, value: Any, where: str) -> Any:
    if not isinstance(value, Mapping):
        raise OptionError(f"{where} must be a mapping with a 'type' key, got {value!r}.")
    if "type" not in value:
        raise OptionError(f"{where} has no 'type' key; name one of: {', '.join(spec.registry)}.")
    try:
        target = spec.registry.get(value["type"])
        kwargs = {k: v for k, v in value.items() if k != "type" and k not in spec.ignored}
        for name in spec.provided if not isinstance(target, type) else ():
            kwargs.setdefault(name, None)
        check_kwargs(target, kwargs, f"{spec.registry.name} {value['type']!r}")
    except RegistryError as err:
        raise OptionError(f"{where}: {err}") from None
    return dict(value)


def _check(spec: Any, value: Any, where: str) -> Any:
    if isinstance(spec, Key):
        return _check_leaf(spec, value, where)
    if isinstance(spec, Custom):
        if value is None:
            return None
        try:
            return spec.check(value, where)
        except ValueError as err:
            raise OptionError(str(err)) from None
    if isinstance(spec, Block):
        return _check_block(spec, value, where)
    if not isinstance(value, Mapping):
        raise OptionError(f"{where} must be a mapping, got {type(value).__name__} {value!r}.")
    if isinstance(spec, MapOf):
        return {k: _check(spec.spec, v, f"{where}.{k}") for k, v in value.items()}
    return _check_section(spec, value, where)


def _check_section(spec: Section, value: Mapping, where: str) -> dict:
    out: dict[str, Any] = {}
    extra = spec.extra_keys(dict(value)) if spec.extra_keys else []
    for key, item in value.items():
        key = str(key)
        child = f"{where}.{key}" if where else key
        if key in spec.fields:
            out[key] = _check(spec.fields[key], item, child)
        elif key in extra:
            out[key] = item
        else:
            pattern = next((s for p, s in spec.patterns.items() if re.fullmatch(p, key)), None)
            if pattern is None:
                known = list(spec.fields) + extra
                raise OptionError(f"unknown key {child!r}.{suggestion(key, known)}")
            out[key] = _check(pattern, item, child)
    for key, sub in spec.fields.items():
        child = f"{where}.{key}" if where else key
        if key in out:
            continue
        if isinstance(sub, Key):
            if sub.default is OMIT:
                continue
            if sub.default is REQUIRED:
                raise OptionError(f"missing required key {child!r}.")
            out[key] = copy.deepcopy(sub.default)
        elif getattr(sub, "required", False):
            raise OptionError(f"missing required block {child!r}.")
        elif isinstance(sub, Section):
            if any(isinstance(f, Key) and f.default is REQUIRED for f in sub.fields.values()):
                continue  # optional section with required keys: absent means "not used"
            out[key] = _check_section(sub, {}, child)
    return out


def _phase_of(key: str) -> str:
    """``datasets`` keys: ``train``; ``test``, ``test_1``, ... are test sets; others validate."""
    if key == "train":
        return "train"
    return "test" if key.startswith("test") else "val"


def load_components() -> None:
    """Import diffsr's component packages so that every registry is filled."""
    for package in ("archs", "losses", "data", "models", "metrics"):
        importlib.import_module(f"diffsr.{package}")


def validate_options(opt: Mapping[str, Any], source: str = "<options>") -> dict:
    """Check ``opt`` against the schema, fill defaults, and return a new dict.

    Raises OptionError whose message starts with ``source`` (the file name).
    """
    load_components()
    try:
        opt, notes = translate(dict(opt))
        import_user_modules(list(opt.get("imports") or []), Path(source).parent)
        checked = _check_section(SCHEMA, opt, "")
        checked["dialect_notes"] = notes
        if checked["model_type"] not in MODEL_REGISTRY:
            MODEL_REGISTRY.get(checked["model_type"])  # raises with suggestions
        if checked["is_train"]:
            if "train" not in opt:
                raise OptionError("missing required section 'train'.")
            if "optim_g" not in opt["train"]:
                raise OptionError("missing required block 'train.optim_g'.")
            _check_train_extras(checked)
        for phase, block in checked.get("datasets", {}).items():
            block["phase"] = block.get("phase") or _phase_of(phase)
    except (
        OptionError,
        DialectError,
        RegistryError,
        FileNotFoundError,
        ModuleNotFoundError,
    ) as err:
        raise OptionError(f"{source}: {err}") from None
    return checked


def _check_train_extras(opt: dict) -> None:
    """Checks that need more than one key: schedules of the run length, wandb installed."""
    train = opt["train"]
    if train.get("scheduler"):
        try:
            check_scheduler_options(train["scheduler"], train["total_iter"])
        except ValueError as err:
            raise OptionError(str(err)) from None
    if opt["logger"]["wandb"]["project"] and importlib.util.find_spec("wandb") is None:
        raise OptionError(
            "logger.wandb.project is set but the wandb package is not installed: "
            "pip install 'diffsr[wandb]' (or wandb), or set logger.wandb.project: ~."
        )


def _set_dotted(opt: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = opt
    for key in keys[:-1]:
        if not isinstance(node.setdefault(key, {}), dict):
            raise OptionError(f"--set {dotted}: {key!r} is not a mapping.")
        node = node[key]
    node[keys[-1]] = value


def apply_overrides(opt: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a copy of ``opt``."""
    opt = copy.deepcopy(opt)
    for item in overrides:
        if "=" not in item:
            raise OptionError(f"--set {item!r}: expected key.sub=value.")
        dotted, text = item.split("=", 1)
        _set_dotted(opt, dotted.strip(), parse_scalar(text))
    return opt


def parse_options(
    path: str | Path,
    *,
    is_train: bool = True,
    overrides: list[str] | None = None,
    debug: bool = False,
) -> dict:
    """Load, override and validate an option file; fill ``path.*`` for the experiment."""
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise OptionError(f"{path}: the top level must be a mapping of option keys.")
    raw = apply_overrides(raw, overrides or [])
    raw["is_train"] = is_train
    if debug and is_train and not raw.get("name", "").startswith("debug"):
        raw["name"] = f"debug_{raw.get('name', '')}"
    opt = validate_options(raw, str(path))
    if debug and is_train:
        opt["logger"]["print_freq"] = 1
        opt["logger"]["save_checkpoint_freq"] = 8
        opt["val"]["val_freq"] = 8
    _fill_paths(opt)
    return opt


def _fill_paths(opt: dict) -> None:
    paths = opt["path"]
    if opt["is_train"]:
        root = Path(paths["experiments_root"] or Path("experiments") / opt["name"])
        paths["experiments_root"] = str(root)
        paths["models"] = paths["models"] or str(root / "models")
        paths["training_states"] = paths["training_states"] or str(root / "training_states")
        paths["log"] = paths["log"] or str(root)
        paths["visualization"] = paths["visualization"] or str(root / "visualization")
    else:
        root = Path(paths["results_root"] or Path("results") / opt["name"])
        paths["results_root"] = str(root)
        paths["log"] = paths["log"] or str(root)
        paths["visualization"] = paths["visualization"] or str(root / "visualization")
