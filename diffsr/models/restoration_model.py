"""RestorationModel: one network trained with any number of registered losses."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm import tqdm

from diffsr.archs import build_network
from diffsr.archs.arch_util import pad_to_multiple
from diffsr.data.sampler import derive_seed
from diffsr.metrics.metric_set import MetricSet
from diffsr.models.base_model import BaseModel
from diffsr.models.checkpoint import load_network, unwrap
from diffsr.models.ema import ModelEMA
from diffsr.models.grad_share import gradient_shares
from diffsr.models.loss_terms import as_output_list, build_loss_terms
from diffsr.models.mixing import build_mixing
from diffsr.utils.dist_util import get_dist_info
from diffsr.utils.img_util import imwrite, tensor2img
from diffsr.utils.registry import MODEL_REGISTRY

__all__ = ["RestorationModel"]

logger = logging.getLogger("diffsr")


@MODEL_REGISTRY.register()
@MODEL_REGISTRY.register(name="SRModel")  # BasicSR's name for the same model
class RestorationModel(BaseModel):
    """Paired restoration: ``lq -> net_g -> output``, losses against ``gt``.

    Loss blocks are every ``train.<name>_opt`` entry (``pixel_opt``, ``diffloss_opt``, ...); their
    weighted values are summed and each is logged as ``l_<name>``.
    """

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__(opt)
        net = build_network(opt["network_g"])
        self.load_pretrained(net, "g")
        self.net_g = self.model_to_device(net)
        logger.info(
            "Network %s: %s parameters.",
            opt["network_g"]["type"],
            f"{self.count_parameters(net):,}",
        )
        self.ema: ModelEMA | None = None
        self.mixing = None  # train.mixing_augs (set by init_optimization)
        if self.is_train:
            self.init_training_settings()

    def init_training_settings(self) -> None:
        self.loss_terms = build_loss_terms(self.opt["train"], self.device)
        if not self.loss_terms:
            raise ValueError("The options define no loss: add e.g. train.pixel_opt.")
        self.seed_loss_generators()
        self.init_optimization()

    def seed_loss_generators(self) -> None:
        """Losses with their own generator (DiffLoss: t, noise, crops) and no ``seed`` option
        get ``derive_seed(manual_seed, rank)``; they never draw from the global RNG."""
        seed = derive_seed(self.opt["manual_seed"] % 2**63, self.rank)
        for term in self.loss_terms:
            if hasattr(term.module, "set_seed") and not getattr(term.module, "seed_given", False):
                term.module.set_seed(seed)

    def loss_generator_states(self) -> dict[str, torch.Tensor]:
        return {
            term.name: term.module.generator_state()
            for term in getattr(self, "loss_terms", [])
            if hasattr(term.module, "generator_state")
        }

    def set_loss_generator_states(self, states: dict[str, torch.Tensor]) -> None:
        for term in getattr(self, "loss_terms", []):
            if term.name in states and hasattr(term.module, "set_generator_state"):
                term.module.set_generator_state(states[term.name])

    def wants_grad_share(self, current_iter: int) -> bool:
        """Gradient shares are measured on logging steps only, when ``logger.grad_share``."""
        log_opt = self.opt["logger"]
        on_log_step = (
            current_iter % log_opt["print_freq"] == 0
            or current_iter == self.opt["train"]["total_iter"]
        )
        return bool(log_opt.get("grad_share", True)) and on_log_step and len(self.loss_terms) > 1

    def init_optimization(self) -> None:
        """EMA, optimizer, lr schedule and mixed precision for ``net_g``."""
        train = self.opt["train"]
        self.net_g.train()
        if train["ema_decay"] > 0:
            self.ema = ModelEMA(unwrap(self.net_g), train["ema_decay"])
        params = [p for p in self.net_g.parameters() if p.requires_grad]
        self.optimizer_g = self.build_optimizer(params, train["optim_g"])
        self.setup_schedule()
        self.amp_dtype = getattr(torch, train["amp_dtype"])
        self.use_amp = bool(train["amp"])
        use_scaler = self.use_amp and self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.mixing = build_mixing(train.get("mixing_augs"))

    # ------------------------------------------------------------------ training
    def feed_data(self, data: dict[str, Any]) -> None:
        self.lq = data["lq"].to(self.device, non_blocking=True)
        self.gt = data["gt"].to(self.device, non_blocking=True) if "gt" in data else None

    def forward_train(self) -> list[torch.Tensor]:
        if self.mixing is not None and self.gt is not None:  # Restormer's mixup of the pairs
            self.gt, self.lq = self.mixing(self.gt, self.lq)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            outputs = as_output_list(self.net_g(self.lq))
        for index, output in enumerate(outputs):  # in place: keeps a list subclass intact
            outputs[index] = output.float()
        return outputs

    def compute_losses(
        self, outputs: list[torch.Tensor], grad_share: bool = False
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Sum of the loss terms and their logged values; with ``grad_share`` also each term's
        gradient norm at the final output relative to the pixel term's (``grad_share_<name>``)."""
        total = torch.zeros((), device=self.device)
        log: dict[str, float] = {}
        values: dict[str, torch.Tensor] = {}
        for term in self.loss_terms:
            value = term(outputs, self.gt, self.lq)
            values[term.name] = value
            total = total + value
            log[f"l_{term.name}"] = value.item()
            log.update(term.logged_terms())
        log["l_total"] = total.item()
        if grad_share:
            log.update(gradient_shares(values, outputs[-1]))
        return total, log

    def loss_is_finite(self, total: torch.Tensor) -> bool:
        """True on every rank iff the loss is finite on every rank (keeps DDP in step)."""
        flag = torch.isfinite(total.detach()).float()
        if self.world_size > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())

    def handle_non_finite(self, current_iter: int, log: dict[str, float]) -> dict[str, float]:
        terms = ", ".join(f"{k}={v:.4g}" for k, v in log.items())
        if self.opt["train"]["nan_policy"] == "stop":
            raise FloatingPointError(
                f"Iteration {current_iter}: the loss is not finite ({terms}). Lower the learning "
                f"rate, check the data, or set train.nan_policy: skip to skip such steps."
            )
        logger.warning("Iteration %d: non-finite loss (%s); step skipped.", current_iter, terms)
        self.optimizer_g.zero_grad(set_to_none=True)
        return {**log, "skipped": 1.0}

    def optimize_parameters(self, current_iter: int) -> dict[str, float]:
        """One optimisation step; returns the logged loss values."""
        self.optimizer_g.zero_grad(set_to_none=True)
        outputs = self.forward_train()
        total, log = self.compute_losses(outputs, grad_share=self.wants_grad_share(current_iter))
        if not self.loss_is_finite(total):
            return self.handle_non_finite(current_iter, log)
        self.step_generator(total)
        self.scaler.update()
        return log

    def step_generator(self, total: torch.Tensor) -> None:
        """Backward of ``total``, optional gradient clipping, optimizer step and EMA update."""
        self.scaler.scale(total).backward()
        if self.opt["train"]["grad_clip"]:
            self.scaler.unscale_(self.optimizer_g)
            nn.utils.clip_grad_norm_(self.net_g.parameters(), self.opt["train"]["grad_clip"])
        self.scaler.step(self.optimizer_g)
        if self.ema is not None:
            self.ema.update(unwrap(self.net_g))

    # ----------------------------------------------------------------- inference
    def inference_net(self) -> nn.Module:
        return self.ema.module if self.ema is not None else unwrap(self.net_g)

    @torch.no_grad()
    def test(self) -> torch.Tensor:
        """Restore ``self.lq``; returns the final output, B x 3 x H x W (not clamped)."""
        net = self.inference_net()
        was_training = net.training
        net.eval()
        window = (self.opt.get("val") or {}).get("window_size")
        lq, (height, width) = pad_to_multiple(self.lq, window) if window else (self.lq, (0, 0))
        self.output = as_output_list(net(lq))[-1].float()
        if window:  # crop the padding back, at the network's scale (Restormer's pad_test)
            scale = self.output.shape[-2] // lq.shape[-2]
            self.output = self.output[..., : height * scale, : width * scale]
        net.train(was_training)
        return self.output

    @torch.no_grad()
    def validation(
        self, dataloader, current_iter: int, tb_logger=None, save_img: bool = False
    ) -> dict[str, float]:
        """Metrics over ``dataloader`` (rank 0 computes; others wait). Updates ``self.best``."""
        if get_dist_info()[0] != 0:
            return {}
        val_opt = self.opt["val"]
        dataset_name = dataloader.dataset.opt.name or "val"
        metrics = MetricSet(val_opt.get("metrics"))
        bar = tqdm(
            dataloader,
            desc=f"val {dataset_name}",
            unit="img",
            disable=not val_opt["pbar"],
            leave=False,
        )
        for index, data in enumerate(bar):
            self.feed_data(data)
            restored = tensor2img(self.test())
            if self.gt is not None:
                metrics.update(restored, tensor2img(self.gt))
            if save_img and index < val_opt["max_save_img"]:
                stem = Path(data["lq_path"][0]).stem
                suffix = f"_{val_opt['suffix']}" if val_opt["suffix"] else ""
                folder = Path(self.opt["path"]["visualization"]) / stem
                imwrite(restored, folder / f"{stem}_{current_iter}{suffix}.png")
        results = metrics.compute() if metrics.count else {}
        higher = {name: metrics.higher_is_better(name) for name in results}
        self.log_validation(dataset_name, results, higher, current_iter, tb_logger)
        return results

    def log_validation(
        self,
        dataset_name: str,
        results: dict[str, float],
        higher: dict[str, bool],
        current_iter: int,
        tb_logger: Any,
    ) -> None:
        """Log results, track the best value of each metric; ``self.improved`` tells whether
        the first metric improved (the trainer then writes ``net_g_best.pth``)."""
        best = self.best.setdefault(dataset_name, {})
        self.improved = False
        lines = [f"Validation {dataset_name} @ iter {current_iter}:"]
        for position, (name, value) in enumerate(results.items()):
            previous = best.get(name, {}).get("val")
            if previous is None or (value > previous if higher[name] else value < previous):
                best[name] = {"val": value, "iter": current_iter}
                self.improved = self.improved or position == 0
            lines.append(
                f"  {name}: {value:.4f}  (best {best[name]['val']:.4f} @ iter {best[name]['iter']})"
            )
            if tb_logger is not None:
                tb_logger.add_scalar(f"metrics/{dataset_name}/{name}", value, current_iter)
        logger.info("\n".join(lines))

    # -------------------------------------------------------------- checkpoints
    def network_params(self) -> dict[str, dict[str, nn.Module]]:
        params = {"params": self.net_g}
        if self.ema is not None:
            params["params_ema"] = self.ema.module
        return {"g": params}

    def load_networks_for_resume(self, current_iter: int) -> None:
        path = Path(self.opt["path"]["models"]) / f"net_g_{current_iter}.pth"
        load_network(self.net_g, path, strict=True, param_key="params")
        if self.ema is not None:
            load_network(self.ema.module, path, strict=True, param_key="params_ema")
