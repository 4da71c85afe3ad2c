"""DiffusionPriorModel: trains an ADM UNet with the DDPM objective on clean images.

Used by ``scripts/train_prior.py`` to make a domain prior from a task's own clean images (and
the embedded demo prior). It reuses the whole trainer: EMA, resume, DDP, logging, checkpoints
in the ``{'params', 'params_ema'}`` layout that :class:`diffsr.diffusion.DiffusionPrior` loads.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from tqdm import tqdm

from diffsr.diffusion import DiffusionSchedule
from diffsr.diffusion.training_loss import ddpm_loss
from diffsr.models.restoration_model import RestorationModel
from diffsr.utils.dist_util import get_dist_info
from diffsr.utils.registry import MODEL_REGISTRY

__all__ = ["DiffusionPriorModel"]


@MODEL_REGISTRY.register()
class DiffusionPriorModel(RestorationModel):
    """``network_g`` is an ``ADMUNet``; the ``diffusion`` section sets the noise schedule.

    Images (the dataset's ``gt``, in [0, 1]) are mapped to [-1, 1]; t is drawn uniformly.
    Validation reports the noise-prediction MSE on fixed, seeded (t, noise) draws per image.
    """

    def init_training_settings(self) -> None:
        self.loss_terms = []
        self.init_optimization()

    def feed_data(self, data: dict[str, Any]) -> None:
        key = "gt" if "gt" in data else "lq"
        self.x0 = data[key].to(self.device, non_blocking=True) * 2.0 - 1.0

    @functools.cached_property
    def noise_schedule(self) -> DiffusionSchedule:
        diffusion = self.opt["diffusion"]
        schedule = DiffusionSchedule(diffusion["noise_schedule"], diffusion["diffusion_steps"])
        return schedule.to(self.device)

    def losses_at(
        self, net: torch.nn.Module, t: torch.Tensor, noise: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        x_t = self.noise_schedule.q_sample(self.x0, t, noise)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            output = net(x_t, t)
        return ddpm_loss(output.float(), self.x0, x_t, t, noise, self.noise_schedule)

    def optimize_parameters(self, current_iter: int) -> dict[str, float]:
        self.optimizer_g.zero_grad(set_to_none=True)
        t = torch.randint(
            0, self.noise_schedule.num_timesteps, (self.x0.shape[0],), device=self.device
        )
        terms = self.losses_at(self.net_g, t, torch.randn_like(self.x0))
        total = terms["loss"].mean()
        log = {f"l_{k}": v.mean().item() for k, v in terms.items() if k != "loss"}
        log["l_total"] = total.item()
        if not self.loss_is_finite(total):
            return self.handle_non_finite(current_iter, log)
        self.step_generator(total)
        self.scaler.update()
        return log

    @torch.no_grad()
    def validation(
        self, dataloader, current_iter: int, tb_logger=None, save_img: bool = False
    ) -> dict[str, float]:
        """Mean noise-prediction MSE (lower is better) at seeded timesteps and noise."""
        if get_dist_info()[0] != 0:
            return {}
        net = self.inference_net()
        net.eval()
        generator = torch.Generator().manual_seed(self.opt["manual_seed"])
        draws = self.opt["diffusion"]["val_draws"]
        total, count = 0.0, 0
        name = dataloader.dataset.opt.name or "val"
        for data in tqdm(
            dataloader, desc=f"val {name}", disable=not self.opt["val"]["pbar"], leave=False
        ):
            self.feed_data(data)
            for _ in range(draws):
                t = torch.randint(
                    0, self.noise_schedule.num_timesteps, (self.x0.shape[0],), generator=generator
                )
                noise = torch.randn(self.x0.shape, generator=generator).to(self.device)
                total += self.losses_at(net, t.to(self.device), noise)["mse"].sum().item()
                count += self.x0.shape[0]
        results = {"eps_mse": total / max(count, 1)}
        self.log_validation(name, results, {"eps_mse": False}, current_iter, tb_logger)
        return results
