"""What every model shares: device placement, DDP, optimizers, lr schedule, checkpoints."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from diffsr.models.checkpoint import (
    load_network,
    prune_old_files,
    save_network,
    unwrap,
)
from diffsr.models.lr_scheduler import LRSchedule, build_schedule
from diffsr.models.optimizers import build_optimizer as build_torch_optimizer
from diffsr.utils.dist_util import get_dist_info
from diffsr.utils.file_util import atomic_torch_save
from diffsr.utils.misc import get_rng_state, resolve_device, set_rng_state

__all__ = ["BaseModel"]

logger = logging.getLogger("diffsr")


class BaseModel:
    """Holds ``opt``, the device, optimizers and the lr schedule; saves and restores state."""

    def __init__(self, opt: dict[str, Any]) -> None:
        self.opt = opt
        self.is_train = opt["is_train"]
        self.rank, self.world_size = get_dist_info()
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.device = resolve_device(opt["device"], local_rank)
        self.optimizers: list[torch.optim.Optimizer] = []
        self.lr_schedule: LRSchedule = build_schedule(None)
        self.best: dict[str, dict[str, float]] = {}

    # ----------------------------------------------------------------- networks
    def model_to_device(self, net: nn.Module) -> nn.Module:
        net = net.to(self.device)
        if self.opt["dist"] and any(p.requires_grad for p in net.parameters()):
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            net = DistributedDataParallel(net, device_ids=device_ids)
        return net

    def load_pretrained(self, net: nn.Module, label: str) -> None:
        path = self.opt["path"].get(f"pretrain_network_{label}")
        if path:
            load_network(
                net,
                path,
                strict=self.opt["path"].get(f"strict_load_{label}", True),
                param_key=self.opt["path"].get(f"param_key_{label}", "params"),
            )

    @staticmethod
    def count_parameters(net: nn.Module) -> int:
        return sum(p.numel() for p in unwrap(net).parameters())

    # --------------------------------------------------------------- optimizers
    def build_optimizer(
        self, params: list[nn.Parameter], opt: dict[str, Any]
    ) -> torch.optim.Optimizer:
        optimizer = build_torch_optimizer(params, opt)  # any torch.optim class by name
        for group in optimizer.param_groups:
            group["initial_lr"] = opt["lr"]
        self.optimizers.append(optimizer)
        return optimizer

    def setup_schedule(self) -> None:
        train = self.opt["train"]
        self.lr_schedule = build_schedule(
            train.get("scheduler"), train.get("warmup_iter", -1), train.get("total_iter")
        )

    def update_learning_rate(self, current_iter: int) -> None:
        """Set every group's lr for ``current_iter`` from the (stateless) schedule."""
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                base = group["initial_lr"]
                group["lr"] = base * self.lr_schedule.factor(current_iter, base)

    def get_current_learning_rate(self) -> float:
        return self.optimizers[0].param_groups[0]["lr"] if self.optimizers else 0.0

    # -------------------------------------------------------------- checkpoints
    def network_params(self) -> dict[str, dict[str, nn.Module]]:
        """Files to save: ``{label: {'params': net, 'params_ema': ema_net}}``. Override."""
        return {}

    def save(self, epoch: int, current_iter: int | str) -> None:
        """Save networks (``net_<label>_<iter>.pth``) and, for numbered saves, the training state."""
        if self.rank != 0:
            if isinstance(current_iter, int):
                self._gather_rng()  # every rank takes part in the collective
            return
        models_dir = Path(self.opt["path"]["models"])
        for label, params in self.network_params().items():
            save_network(models_dir / f"net_{label}_{current_iter}.pth", params)
            if isinstance(current_iter, int):
                prune_old_files(models_dir, f"net_{label}_*.pth", self.opt["logger"]["keep_last"])
        if isinstance(current_iter, int):
            self.save_training_state(epoch, current_iter)

    def save_best(self, label: str = "g") -> None:
        if self.rank == 0:
            path = Path(self.opt["path"]["models"]) / f"net_{label}_best.pth"
            save_network(path, self.network_params()[label])

    def loss_generator_states(self) -> dict[str, torch.Tensor]:
        """States of the losses' own generators (DiffLoss's t and noise), by loss name."""
        return {}

    def set_loss_generator_states(self, states: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`loss_generator_states` (a model with such losses overrides both)."""

    def _local_rng_state(self) -> dict[str, Any]:
        return {**get_rng_state(), "losses": self.loss_generator_states()}

    def _gather_rng(self) -> list[dict[str, Any]]:
        states = [None] * self.world_size
        if self.world_size > 1:
            torch.distributed.all_gather_object(states, self._local_rng_state())
            return states
        return [self._local_rng_state()]

    def training_state(self, epoch: int, current_iter: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "iter": current_iter,
            "optimizers": [o.state_dict() for o in self.optimizers],
            "best": self.best,
            "rng": self._gather_rng(),
            "grad_scaler": self.grad_scaler_state(),
        }

    def grad_scaler_state(self) -> dict[str, Any]:
        """The float16 AMP GradScaler's scale and growth tracker (plain numbers; empty when
        the model has no enabled scaler)."""
        scaler = getattr(self, "scaler", None)
        return scaler.state_dict() if scaler is not None and scaler.is_enabled() else {}

    def load_grad_scaler_state(self, saved: dict[str, Any]) -> None:
        """Restore :meth:`grad_scaler_state` (nothing to do when either side has no scaler)."""
        scaler = getattr(self, "scaler", None)
        if saved and scaler is not None and scaler.is_enabled():
            scaler.load_state_dict(saved)

    def save_training_state(self, epoch: int, current_iter: int) -> None:
        folder = Path(self.opt["path"]["training_states"])
        atomic_torch_save(
            self.training_state(epoch, current_iter), folder / f"{current_iter}.state"
        )
        prune_old_files(folder, "*.state", self.opt["logger"]["keep_last"])

    def resume_training(self, state: dict[str, Any]) -> None:
        """Restore optimizers, best metrics and this rank's RNG states from a training state."""
        if len(state["optimizers"]) != len(self.optimizers):
            raise ValueError(
                f"The training state has {len(state['optimizers'])} optimizer(s) but this model "
                f"has {len(self.optimizers)}; was it written by another model_type?"
            )
        for optimizer, saved in zip(self.optimizers, state["optimizers"]):
            optimizer.load_state_dict(saved)
        self.best = state.get("best", {})
        rng_states = state["rng"]
        if len(rng_states) != self.world_size:
            logger.warning(
                "The training state was written by %d process(es), this run has %d: RNG streams "
                "are re-seeded per rank, so the run is not an exact continuation.",
                len(rng_states),
                self.world_size,
            )
        set_rng_state(rng_states[self.rank % len(rng_states)])
        self.load_grad_scaler_state(state.get("grad_scaler", {}))
        self.set_loss_generator_states(rng_states[self.rank % len(rng_states)].get("losses", {}))
