"""Learning-rate schedules as pure functions of the iteration (trivially resumable).

The model sets ``lr = initial_lr * factor(iteration)`` every iteration, so restoring a run only
needs the iteration count. Linear warm-up multiplies the factor during the first iterations.

Schedules, by the ``type`` names of BasicSR and Restormer (same arguments, same formulas, with
the iteration ``t`` in the role of their scheduler's ``last_epoch``):

- ``ConstantLR``: 1.
- ``MultiStepLR`` / ``MultiStepRestartLR`` (``milestones``, ``gamma`` 0.1, ``restarts``,
  ``restart_weights``): ``w_r * gamma ** #{milestones m: restart r < m <= t}``.
- ``CosineAnnealingRestartLR`` (``periods``, ``restart_weights``, ``eta_min``) and Restormer's
  ``CosineAnnealingRestartCyclicLR`` (``eta_mins``, one per period):
  ``eta + w_i * (base - eta) * (1 + cos(pi * (t - start_i) / period_i)) / 2`` in period ``i``
  (a period owns its end iteration); past the last period the lr stays at its end value.
- ``TrueCosineAnnealingLR`` (Restormer's name for torch's ``CosineAnnealingLR``: ``T_max``,
  ``eta_min``): ``eta + (base - eta) * (1 + cos(pi * t / T_max)) / 2``.
- ``LinearLR`` (Restormer's, no arguments): ``1 - t / total_iter``.
- ``VibrateLR`` (Restormer's, no arguments): a triangle wave of period ``total_iter // 80``
  under a piecewise envelope (see :func:`vibrate_factor`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping
from typing import Any

from diffsr.utils.registry import suggestion

__all__ = ["SCHEDULERS", "LRSchedule", "build_schedule", "check_scheduler_options"]

REQUIRED = object()

# type -> {argument: default (REQUIRED: must be given)}
SCHEDULERS: dict[str, dict[str, Any]] = {
    "ConstantLR": {},
    "MultiStepLR": {"milestones": REQUIRED, "gamma": 0.1, "restarts": [], "restart_weights": []},
    "MultiStepRestartLR": {
        "milestones": REQUIRED,
        "gamma": 0.1,
        "restarts": [],
        "restart_weights": [],
    },
    "CosineAnnealingRestartLR": {"periods": REQUIRED, "restart_weights": [], "eta_min": 0.0},
    "CosineAnnealingRestartCyclicLR": {
        "periods": REQUIRED,
        "restart_weights": [],
        "eta_mins": [0.0],
    },
    "TrueCosineAnnealingLR": {"T_max": REQUIRED, "eta_min": 0.0},
    "LinearLR": {},
    "VibrateLR": {},
}
VIBRATE_MIN_ITERS = 160  # VibrateLR's wave period is total_iter // 80 and needs a half-period >= 1


def _numbers(value: Any, key: str, integer: bool = False) -> list:
    kinds = (int,) if integer else (int, float)
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, kinds) and not isinstance(v, bool) for v in value
    ):
        kind = "integers" if integer else "numbers"
        raise ValueError(f"train.scheduler.{key} must be a list of {kind}, got {value!r}.")
    return list(value)


def _per_entry(out: dict[str, Any], key: str, count: int, what: str) -> None:
    """``out[key]`` (empty: ones) must hold one number per period or restart."""
    out[key] = out[key] or [1.0] * count
    if len(out[key]) != count:
        raise ValueError(
            f"train.scheduler.{key} must have one entry per {what} ({count}), got {len(out[key])}."
        )


def _filled(opt: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The arguments of ``kind`` with defaults; unknown and missing ones are errors."""
    spec = SCHEDULERS[kind]
    unknown = [key for key in opt if key != "type" and key not in spec]
    if unknown:
        accepted = ", ".join(spec) or "(none)"
        raise ValueError(
            f"train.scheduler.{unknown[0]} is not an argument of {kind} (accepts: {accepted})."
        )
    out: dict[str, Any] = {"type": kind}
    for key, default in spec.items():
        if opt.get(key) is not None:
            out[key] = opt[key]
        elif default is REQUIRED:
            raise ValueError(f"train.scheduler.{key} is required for {kind}.")
        else:
            out[key] = list(default) if isinstance(default, list) else default
    for key in ("milestones", "restarts", "periods"):
        if key in out:
            out[key] = _numbers(out[key], key, integer=True)
    for key in ("restart_weights", "eta_mins"):
        if key in out:
            out[key] = _numbers(out[key], key)
    return out


def check_scheduler_options(opt: Mapping[str, Any], total_iter: int | None = None) -> dict:
    """Validate a ``train.scheduler`` block; returns it with defaults filled.

    Raises ValueError naming the key (unknown type or argument, missing or mismatched list).
    """
    kind = opt.get("type", "ConstantLR")
    if kind not in SCHEDULERS:
        raise ValueError(
            f"train.scheduler.type {kind!r} is not a known schedule."
            f"{suggestion(str(kind), list(SCHEDULERS))} Known: {', '.join(SCHEDULERS)}."
        )
    out = _filled(opt, kind)
    if "periods" in out:
        periods = out["periods"]
        if not periods or any(p <= 0 for p in periods):
            raise ValueError(f"train.scheduler.periods must be positive lengths, got {periods!r}.")
        _per_entry(out, "restart_weights", len(periods), "period")
        if kind == "CosineAnnealingRestartCyclicLR" and len(out["eta_mins"]) != len(periods):
            raise ValueError(
                f"train.scheduler.eta_mins must have one entry per period ({len(periods)}), "
                f"got {len(out['eta_mins'])}."
            )
    if "restarts" in out:
        _per_entry(out, "restart_weights", len(out["restarts"]), "restart")
    t_max = out.get("T_max", 1)
    if not isinstance(t_max, int) or isinstance(t_max, bool) or t_max <= 0:
        raise ValueError(f"train.scheduler.T_max must be a positive integer, got {t_max!r}.")
    minimum = {"LinearLR": 1, "VibrateLR": VIBRATE_MIN_ITERS}.get(kind)
    if minimum is not None and total_iter is not None and total_iter < minimum:
        raise ValueError(
            f"train.scheduler.type {kind} needs train.total_iter >= {minimum}, got {total_iter}."
        )
    return out


def cosine(t: float, period: float, weight: float, base: float, eta: float) -> float:
    """BasicSR's cosine step as an lr: ``eta + weight * (base - eta) * (1 + cos(pi t/period))/2``."""
    return eta + weight * 0.5 * (base - eta) * (1 + math.cos(math.pi * t / period))


def vibrate_factor(t: int, total_iter: int) -> float:
    """Restormer's VibrateLR at ``t``: envelope ``f`` (``1 - 8p/3`` up to 3/8 of the run, 0.2 up
    to 5/8, then 0.1) times a triangle wave of period ``total_iter // 80``; at least 0.1 during
    the first half-wave."""
    process = t / total_iter
    envelope = 0.1
    if process < 3 / 8:
        envelope = 1 - process * 8 / 3
    elif process < 5 / 8:
        envelope = 0.2
    period = total_iter // 80
    half = period // 2
    phase = t % period
    wave = phase / half if phase < half else 2 - phase / half
    weight = envelope * wave
    return max(0.1, weight) if t < half else weight


class LRSchedule:
    """Multiplicative lr factor for each iteration (``t`` in the formulas of the module doc)."""

    def __init__(
        self, opt: Mapping[str, Any], warmup_iter: int = -1, total_iter: int | None = None
    ) -> None:
        self.opt = check_scheduler_options(opt, total_iter)
        self.kind = self.opt["type"]
        self.warmup_iter = warmup_iter
        self.total_iter = total_iter
        if self.kind in ("LinearLR", "VibrateLR") and total_iter is None:
            raise ValueError(f"train.scheduler.type {self.kind} needs train.total_iter.")
        if "periods" in self.opt:
            periods = self.opt["periods"]
            self.period_ends = [sum(periods[: i + 1]) for i in range(len(periods))]
        self._schedule: Callable[[int, float], float] = getattr(self, f"_{self.kind.lower()}")

    def factor(self, iteration: int, base_lr: float = 1.0) -> float:
        """lr multiplier at ``iteration``; ``base_lr`` is needed only for an absolute eta_min."""
        value = self._schedule(iteration, base_lr)
        if 0 < iteration <= self.warmup_iter:
            value *= iteration / self.warmup_iter
        return value

    # one method per type: factor at iteration t for an initial lr ``base``
    def _constantlr(self, t: int, base: float) -> float:
        return 1.0

    def _multisteplr(self, t: int, base: float) -> float:
        restarts, weights = self.opt["restarts"], self.opt["restart_weights"]
        index = bisect.bisect_right(restarts, t) - 1  # decays count from the latest restart
        weight = weights[index] if index >= 0 else 1.0
        since = restarts[index] if index >= 0 else 0
        decays = sum(1 for m in self.opt["milestones"] if since < m <= t)
        return weight * self.opt["gamma"] ** decays

    _multisteprestartlr = _multisteplr

    def _cosine_period(self, t: int, base: float, eta: float | None) -> float:
        periods = self.opt["periods"]
        index = min(bisect.bisect_left(self.period_ends, t), len(periods) - 1)
        start = self.period_ends[index] - periods[index]
        eta_min = self.opt["eta_mins"][index] if eta is None else eta
        progress = min(t - start, periods[index])
        weight = self.opt["restart_weights"][index]
        return cosine(progress, periods[index], weight, base, eta_min) / base if base else 0.0

    def _cosineannealingrestartlr(self, t: int, base: float) -> float:
        return self._cosine_period(t, base, self.opt["eta_min"])

    def _cosineannealingrestartcycliclr(self, t: int, base: float) -> float:
        return self._cosine_period(t, base, None)

    def _truecosineannealinglr(self, t: int, base: float) -> float:
        return cosine(t, self.opt["T_max"], 1.0, base, self.opt["eta_min"]) / base if base else 0.0

    def _linearlr(self, t: int, base: float) -> float:
        return 1 - t / self.total_iter

    def _vibratelr(self, t: int, base: float) -> float:
        return vibrate_factor(t, self.total_iter)


def build_schedule(
    opt: Mapping[str, Any] | None, warmup_iter: int = -1, total_iter: int | None = None
) -> LRSchedule:
    """The schedule of a ``train.scheduler`` block (None: constant)."""
    return LRSchedule(opt or {"type": "ConstantLR"}, warmup_iter, total_iter)
