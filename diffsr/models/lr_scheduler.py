"""Learning-rate schedules as pure functions of the iteration (trivially resumable).

The model sets ``lr = initial_lr * factor(iteration)`` every iteration, so restoring a run only
needs the iteration count. Linear warm-up multiplies the factor during the first iterations.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

__all__ = ["LRSchedule", "build_schedule"]


class LRSchedule:
    """Multiplicative lr factor for each iteration (1-based, as BasicSR counts)."""

    def __init__(self, opt: dict[str, Any], warmup_iter: int = -1) -> None:
        self.kind = opt.get("type", "ConstantLR")
        self.opt = opt
        self.warmup_iter = warmup_iter
        if self.kind == "CosineAnnealingRestartLR":
            periods = list(opt.get("periods") or [])
            if not periods:
                raise ValueError("train.scheduler.periods must list the cosine period lengths.")
            weights = list(opt.get("restart_weights") or [1.0] * len(periods))
            if len(weights) != len(periods):
                raise ValueError(
                    "train.scheduler.restart_weights must have one entry per period "
                    f"({len(periods)}), got {len(weights)}."
                )
            self.periods, self.weights = periods, weights
            self.period_ends = [sum(periods[: i + 1]) for i in range(len(periods))]
            eta_mins = list(opt.get("eta_mins") or [])
            self.eta_mins = eta_mins or [opt.get("eta_min", 0.0)] * len(periods)
        elif self.kind in ("MultiStepLR", "MultiStepRestartLR"):
            self.milestones = sorted(int(m) for m in opt.get("milestones") or [])
            self.restarts = [int(r) for r in opt.get("restarts") or []]
            self.restart_weights = list(opt.get("restart_weights") or [1.0] * len(self.restarts))
        elif self.kind != "ConstantLR":
            raise ValueError(f"train.scheduler.type {self.kind!r} is not supported.")

    def factor(self, iteration: int, base_lr: float = 1.0) -> float:
        """lr multiplier at ``iteration``; ``base_lr`` is needed only for cosine eta_min."""
        value = self._schedule(iteration, base_lr)
        if 0 < iteration <= self.warmup_iter:
            value *= iteration / self.warmup_iter
        return value

    def _schedule(self, iteration: int, base_lr: float) -> float:
        if self.kind == "ConstantLR":
            return 1.0
        if self.kind == "CosineAnnealingRestartLR":
            index = min(bisect.bisect_left(self.period_ends, iteration), len(self.periods) - 1)
            start = self.period_ends[index] - self.periods[index]
            progress = min((iteration - start) / self.periods[index], 1.0)
            eta_min = self.eta_mins[index] / base_lr if base_lr else 0.0
            weight = self.weights[index]
            return eta_min + (weight - eta_min) * 0.5 * (1 + math.cos(math.pi * progress))
        # multi-step with optional restarts: decays count from the latest restart
        restart_index = bisect.bisect_right(self.restarts, iteration) - 1
        weight = self.restart_weights[restart_index] if restart_index >= 0 else 1.0
        since = self.restarts[restart_index] if restart_index >= 0 else 0
        decays = sum(1 for m in self.milestones if since < m <= iteration)
        return weight * self.opt.get("gamma", 0.5) ** decays


def build_schedule(opt: dict[str, Any] | None, warmup_iter: int = -1) -> LRSchedule:
    return LRSchedule(opt or {"type": "ConstantLR"}, warmup_iter)
