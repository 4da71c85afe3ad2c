"""Benchmark the cost of DiffLoss in one training step of a restoration network.

One step = network forward, pixel MSE (+ DiffLoss with weight ``--gamma``), backward, Adam. The
variants run side by side in one process, their timed steps interleaved round by round so that
a change of machine load hits them all alike:

- ``none``: the step without DiffLoss;
- ``plain``: DiffLoss as a straightforward implementation writes it, kept here as a baseline:
  float32, legacy attention, prior weights requiring grad, clean and restored images in ONE
  UNet call with autograd on (the gradients of the clean half and of the weights are computed
  and thrown away), no channels_last, no checkpointing;
- ``default``: diffsr's ``DiffLoss`` with the default prior options (clean branch under
  no_grad, frozen weights, sdpa attention, exact float32, channels_last on the CPU only);
- ``optimised``: default + bfloat16 weights and compute + channels_last;
- ``optimised-ckpt``: optimised + activation checkpointing (in the default list on CUDA only);
- ``ckpt``: default + activation checkpointing, still float32 (on request): the exact loss in
  the least memory;
- ``channels-last``, ``bf16``: default + one of the two options (``channels-last`` is in the
  default list on CUDA, where default is contiguous);
- ``fp16``, ``fp16-ckpt``: default + float16 weights and compute with the prior's gradient
  scaling (about
  8x finer rounding than bf16; in the default list on CUDA only: CPUs without float16 units
  emulate it), and the same with checkpointing.

Reported per variant: median seconds per step (after warm-up; CUDA synchronised) and median CPU
time of the process per step (steadier than wall time on a busy machine), the ratio to
the step without DiffLoss, peak memory of one step, bytes autograd saves for backward, FLOPs
(``FlopCounterMode``, attention counted through the math backend), the DiffLoss part's achieved
FLOP/s against a ceiling measured here in the variant's compute dtype (bf16 or float32; the
faster of a large matmul and a 3x3 convolution; exact float32, no TF32) and against the bf16
matmul rate (the issue's GPU target: at least 40%), the relative
difference of the DiffLoss value and of its gradient from ``default`` (same t and noise): plain
must agree to ~1e-5 in float32. Peak memory: CUDA ``max_memory_allocated``; CPU (Linux) the peak
resident set size of a fresh process per variant (see ``diffsr.utils.benchmark.peak_memory``).

Schedule: on the CPU the timed steps of all variants are interleaved round by round, so that
a change of machine load hits them all alike (every variant's prior stays resident). On CUDA
(``--schedule sequential``) each variant is measured completely and its prior freed (shared
cache cleared, ``torch.cuda.empty_cache``) before the next is built, so that on a 24-40 GB card
no variant fails because earlier ones still hold memory. A variant that runs out of memory
becomes a ``skipped`` row of the report; the others are still measured.

    python scripts/bench_diffloss.py --json bench_diffloss_cpu.json
    python scripts/bench_diffloss.py --device cuda --preset adm_256_uncond --size 256 --batch 4 \
        --arch FSDGN --json bench_diffloss_cuda.json

The prior has random weights unless ``--checkpoint`` is given; timings do not depend on them.
On the CPU, idle OpenMP threads are told to sleep (``OMP_WAIT_POLICY=PASSIVE``) unless the
variable is already set: spinning threads make steps far slower on a busy machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch loads OpenMP

import argparse
import gc
import logging
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffsr.archs import build_network
from diffsr.diffusion import DiffusionPrior, build_prior, clear_shared_priors
from diffsr.diffusion.float32_precision import precision_scope
from diffsr.losses import build_loss
from diffsr.losses.prior_loss_core import PriorLoss, per_sample_distance
from diffsr.models.loss_terms import as_output_list
from diffsr.utils.benchmark import (
    add_prior_choice_arguments,
    args_for_json,
    available_cores,
    conv_flops_per_second,
    count_flops,
    machine_info,
    matmul_flops_per_second,
    peak_memory,
    prior_choice_options,
    run_in_fresh_process,
    saved_tensor_bytes,
    time_runs,
    write_json_report,
)
from diffsr.utils.yaml_util import parse_scalar

# Prior options of each diffsr DiffLoss variant, on top of the architecture options.
PRIOR_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "ckpt": {"checkpointing": True},
    "channels-last": {"channels_last": True},
    "bf16": {"dtype": "bfloat16"},
    "optimised": {"dtype": "bfloat16", "channels_last": True},
    "optimised-ckpt": {"dtype": "bfloat16", "channels_last": True, "checkpointing": True},
    "fp16": {"dtype": "float16"},
    "fp16-ckpt": {"dtype": "float16", "checkpointing": True},
}
VARIANTS = ("none", "plain", *PRIOR_VARIANTS)
DEFAULT_VARIANTS = {
    "cpu": "none,plain,default,optimised",
    "cuda": "none,plain,default,channels-last,ckpt,optimised,optimised-ckpt,fp16,fp16-ckpt",
}
SCHEDULES = ("interleaved", "sequential")
TARGET_SPEEDUP = 2.5  # the target for default over plain on the 2-core CPU
TARGET_STEP_MEMORY = 20 * 2**30  # whole-step peak at the paper's setting: fits a 24 GB card
TARGET_BF16_MATMUL_FRACTION = 0.4  # DiffLoss FLOP/s against the bf16 matmul rate (GPU target)
LOSS_TOLERANCE = 1e-5  # relative; plain and default in float32 compute the same value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    net = parser.add_argument_group("restoration network")
    net.add_argument("--arch", default="AODNet", help="a registered network (ARCH_REGISTRY)")
    net.add_argument(
        "--arch-kw",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="network option, value in YAML (e.g. widths=[16,20,28]); repeatable",
    )
    prior = parser.add_argument_group("prior (a preset, or a small UNet from the flags below)")
    add_prior_choice_arguments(prior)
    step = parser.add_argument_group("training step")
    step.add_argument("--size", type=int, default=64, help="training patch height = width")
    step.add_argument("--batch", type=int, default=4)
    step.add_argument("--gamma", type=float, default=0.001, help="DiffLoss loss_weight")
    step.add_argument("--lambda-sem", type=float, default=0.01, help="DiffLoss lambda_sem")
    run = parser.add_argument_group("measurement")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    run.add_argument("--threads", type=int, default=available_cores(), help="torch CPU threads")
    run.add_argument("--repeats", type=int, default=5, help="timed steps per variant (median)")
    run.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    run.add_argument(
        "--variants",
        help=f"comma-separated subset of {', '.join(VARIANTS)} (default: CPU "
        f"{DEFAULT_VARIANTS['cpu']}; CUDA {DEFAULT_VARIANTS['cuda']})",
    )
    run.add_argument("--no-isolate", action="store_true", help="CPU: memory in this process")
    run.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="interleaved: every variant resident, timed steps interleaved round by round; "
        "sequential: one variant at a time, its prior freed before the next (default: "
        "interleaved on the CPU, sequential on CUDA)",
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    args.arch_options = parse_arch_options(args.arch_kw)
    device_type = torch.device(args.device).type
    names = args.variants or DEFAULT_VARIANTS.get(device_type, DEFAULT_VARIANTS["cpu"])
    args.variant_names = [n.strip() for n in names.split(",") if n.strip()]
    if args.schedule is None:
        args.schedule = "interleaved" if device_type == "cpu" else "sequential"
    unknown = [n for n in args.variant_names if n not in VARIANTS]
    if unknown or not args.variant_names:
        parser.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}.")
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0.")
    return args


def parse_arch_options(pairs: list[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--arch-kw {pair!r}: write KEY=VALUE, e.g. widths=[16,20,28].")
        options[key.strip()] = parse_scalar(value)
    return options


def prior_options(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """DiffusionPrior options of a DiffLoss variant."""
    return {**prior_choice_options(args), **PRIOR_VARIANTS[variant]}


class PlainDiffLoss:
    """The baseline DiffLoss (``plain`` variant); not a feature of diffsr.

    Computes the same value as ``reference`` (a default ``DiffLoss``: eps space, no t
    weighting, shared noise, one draw) with the same random draws, but the naive way: its own
    prior in float32 with legacy attention and weights that require grad, and clean and restored
    images diffused and run through the UNet as one batch with autograd on.
    """

    def __init__(self, reference: PriorLoss, device: torch.device) -> None:
        core = reference.core
        mirrored = {"space": "eps", "t_weighting": "none", "shared_noise": True, "num_draws": 1}
        if any(getattr(core, key) != value for key, value in mirrored.items()):
            raise ValueError(f"PlainDiffLoss mirrors only DiffLoss with {mirrored}.")
        self.reference = reference
        options = {**core.prior_options, "attention": "legacy", "dtype": "float32"}
        self.prior: DiffusionPrior = build_prior(options, device)
        self.prior.unet.requires_grad_(True)  # as a prior left trainable would be

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Weighted DiffLoss of ``pred`` (restored) against ``target`` (clean): B x 3 x H x W
        in [0, 1] -> scalar."""
        core, prior = self.reference.core, self.prior
        prior.unet.zero_grad(set_to_none=True)  # last step's weight gradients, never used
        x, z = core.fit_to_prior(target * 2.0 - 1.0, pred * 2.0 - 1.0, prior)
        # The same draws, in the same order and from the same per-loss generator, as
        # PriorLossCore.forward.
        gen = core.generator(x.device)
        t = torch.randint(
            core.t_low, core.t_high + 1, (x.shape[0],), device=x.device, generator=gen
        )
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=gen)
        t2 = torch.cat([t, t])
        noisy = prior.q_sample(torch.cat([x, z]), t2, torch.cat([noise, noise]))
        eps, h = prior(noisy, t2, need_eps=True, need_h=True)
        eps_clean, eps_restored = eps.chunk(2)
        h_clean, h_restored = h.chunk(2)
        nat = per_sample_distance(eps_restored, eps_clean, core.criterion)
        sem = per_sample_distance(h_restored, h_clean, core.criterion)
        per_sample = core.nat_weight * nat + core.sem_weight * sem
        return self.reference.loss_weight * per_sample.mean()


@dataclass
class TrainingStep:
    """One optimisation step of ``net``: pixel MSE (+ DiffLoss), backward, Adam."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    lq: torch.Tensor
    gt: torch.Tensor
    diffloss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None

    def __call__(self, backward: bool = True) -> float:
        restored = as_output_list(self.net(self.lq))[-1]
        loss = F.mse_loss(restored, self.gt)
        if self.diffloss is not None:
            loss = loss + self.diffloss(restored, self.gt)
        if backward:
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


def setup_torch(args: argparse.Namespace) -> torch.device:
    torch.set_num_threads(args.threads)
    logging.getLogger("diffsr.diffusion.prior").setLevel(logging.ERROR)  # random weights: fine
    return torch.device(args.device)


def build_diffloss(args: argparse.Namespace, variant: str, device: torch.device) -> Any:
    """The DiffLoss of ``variant`` (None for ``none``); plain takes default's settings."""
    if variant == "none":
        return None
    options = {"type": "DiffLoss", "loss_weight": args.gamma, "lambda_sem": args.lambda_sem}
    prior = prior_options(args, "default" if variant == "plain" else variant)
    loss = build_loss({**options, "prior": prior, "device": str(device)})
    return PlainDiffLoss(loss, device) if variant == "plain" else loss


def batch_images(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """The benchmark's (lq, gt) pair, B x 3 x size x size in [0, 1], on the CPU."""
    generator = torch.Generator().manual_seed(args.seed)
    gt = torch.rand(args.batch, 3, args.size, args.size, generator=generator)
    return 0.6 * gt + 0.3, gt  # a hazy version of it, and the clean image


def build_step(args: argparse.Namespace, variant: str, device: torch.device) -> TrainingStep:
    """The training step of ``variant``: same network initialisation and data in every one."""
    torch.manual_seed(args.seed)
    net = build_network({"type": args.arch, **args.arch_options}).to(device).train()
    lq, gt = batch_images(args)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    return TrainingStep(
        net, optimizer, lq.to(device), gt.to(device), build_diffloss(args, variant, device)
    )


def free_priors(device: torch.device) -> None:
    """Drop the shared priors (freed once no step holds them) and return cached CUDA memory."""
    clear_shared_priors()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def out_of_memory_reason(error: BaseException) -> str:
    return f"out of memory: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


def measure_memory(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """Peak memory and saved-for-backward bytes of one step of a new ``variant`` step."""
    device = setup_torch(args)
    return measure_step_memory(build_step(args, variant, device), device)


def measure_step_memory(step: TrainingStep, device: torch.device) -> dict[str, Any]:
    """Peak memory and saved-for-backward bytes of one step (after a warm-up step)."""
    step()  # optimizer state, library workspaces
    result = peak_memory(step, device)
    result["saved_for_backward_bytes"] = saved_tensor_bytes(lambda: step(backward=False))
    result["resident_state_bytes"] = resident_state_bytes(step)
    result["whole_step_peak_bytes"] = result["resident_state_bytes"] + result["peak_memory_bytes"]
    return result


def resident_state_bytes(step: TrainingStep) -> int:
    """Bytes of the tensors held between steps: network weights, optimizer state, the prior's
    weights and buffers, and the batch (each storage counted once)."""
    tensors = [*step.net.parameters(), step.lq, step.gt]
    for state in step.optimizer.state.values():
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    if step.diffloss is not None:
        tensors += [*step.diffloss.prior.parameters(), *step.diffloss.prior.buffers()]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def time_interleaved(
    steps: dict[str, TrainingStep],
    device: torch.device,
    warmup: int,
    repeats: int,
    skipped: dict[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Median and best wall seconds, and median process CPU seconds, per step; each round
    runs one step of every variant. A variant that runs out of memory is dropped from
    ``steps`` and named in ``skipped``."""
    skipped = {} if skipped is None else skipped

    def run(name: str, step: TrainingStep, timed: bool) -> None:
        try:
            if not timed:
                step()
                return
            timing = time_runs(step, device, warmup=0, repeats=1)
            runs[name].extend(timing["runs"])
            cpu_runs[name].extend(timing["cpu_runs"])
        except torch.OutOfMemoryError as error:
            skipped[name] = out_of_memory_reason(error)

    runs: dict[str, list[float]] = {name: [] for name in steps}
    cpu_runs: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(warmup + repeats):
        for name, step in list(steps.items()):
            run(name, step, timed=round_index >= warmup)
            if name in skipped:
                del steps[name]
                free_priors(device)
    return {
        name: {
            "step_s": statistics.median(runs[name]),
            "best_s": min(runs[name]),
            "runs_s": runs[name],
            "cpu_step_s": statistics.median(cpu_runs[name]),
            "cpu_runs_s": cpu_runs[name],
        }
        for name in steps
    }


def loss_and_grad(step: TrainingStep, seed: int) -> tuple[float, torch.Tensor]:
    """DiffLoss value and its gradient to the restored image (float64, on the CPU) on one fixed
    image pair (the clean batch and a noisy copy). Called on a freshly built loss, whose own
    generator starts from the same seed in every variant: the draws are the same."""
    generator = torch.Generator().manual_seed(seed + 1)
    clean = step.gt
    noise = 0.05 * torch.randn(clean.shape, generator=generator).to(clean.device)
    pred = (clean + noise).clamp(0, 1).requires_grad_(True)
    torch.manual_seed(seed)
    value = step.diffloss(pred, clean)
    value.backward()
    return value.item(), pred.grad.detach().double().cpu()


def relative_checks(values: dict[str, tuple[float, torch.Tensor]]) -> dict[str, dict[str, float]]:
    """Each variant's DiffLoss value, and the relative difference of the value and of the
    gradient from ``default``'s (when it ran)."""
    reference = values.get("default")
    checks = {}
    for name, (value, grad) in values.items():
        checks[name] = {"diffloss_value": value}
        if reference is not None:
            checks[name]["loss_rel_diff"] = abs(value - reference[0]) / abs(reference[0])
            grad_norm = reference[1].norm().item()
            checks[name]["grad_rel_diff"] = (grad - reference[1]).norm().item() / grad_norm
    return checks


def compute_dtype(variant: str) -> str:
    """dtype of the prior's matmuls and convolutions in a DiffLoss variant."""
    return PRIOR_VARIANTS.get(variant, {}).get("dtype", "float32")


def ceiling_sizes(device: torch.device, dtype: torch.dtype) -> tuple[int, tuple[int, int, int]]:
    """Matmul size and (batch, channels, size) of the convolution that measure the ceilings.
    On the CPU reduced-precision matmuls are small: without a fast kernel for them one 1024^3
    bf16 matmul took about 20 s here (the convolution is their ceiling anyway)."""
    if device.type == "cuda":
        return 8192, (32, 512, 64)
    return (1024 if dtype == torch.float32 else 256), (4, 256, 16)


def measure_ceilings(
    device: torch.device, variants: list[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Ceiling FLOP/s in float32, bfloat16 and any other compute dtype of ``variants``: the
    faster of a large matmul and a 3x3 convolution; and the matmul rates alone. float32 is
    exact IEEE float32 (no TF32), as the prior runs it by default."""
    with precision_scope(allow_tf32=False):
        ceilings, matmuls = {}, {}
        names = dict.fromkeys(["float32", "bfloat16", *map(compute_dtype, variants)])
        for name in names:
            dtype = getattr(torch, name)
            matmul_size, conv_shape = ceiling_sizes(device, dtype)
            matmuls[name] = matmul_flops_per_second(device, dtype, matmul_size)
            ceilings[name] = max(matmuls[name], conv_flops_per_second(device, dtype, *conv_shape))
        return ceilings, matmuls


def add_derived(
    results: dict[str, dict[str, Any]], ceilings: dict[str, float], bf16_matmul: float
) -> None:
    """Spread of the runs, ratios to the step without DiffLoss and to plain, and the DiffLoss
    part's FLOP/s (its FLOPs over its seconds: the step's minus those of ``none``), also as a
    fraction of the bf16 matmul rate ``bf16_matmul``."""
    none, plain = results.get("none"), results.get("plain")
    for name, r in results.items():
        r["spread"] = ratio(max(r["runs_s"]) - min(r["runs_s"]), r["step_s"])
        if none is not None and name != "none":
            r["overhead_ratio"] = ratio(r["step_s"], none["step_s"])
            r["diffloss_s"] = r["step_s"] - none["step_s"]
            r["diffloss_flops"] = r["flops"] - none["flops"]
            if r["diffloss_s"] > 0:
                r["diffloss_flops_per_second"] = r["diffloss_flops"] / r["diffloss_s"]
                ceiling = ceilings[compute_dtype(name)]
                r["fraction_of_ceiling"] = ratio(r["diffloss_flops_per_second"], ceiling)
                r["fraction_of_bf16_matmul"] = ratio(r["diffloss_flops_per_second"], bf16_matmul)
        if plain is not None and name not in ("none", "plain"):
            r["speedup_vs_plain"] = ratio(plain["step_s"], r["step_s"])
            r["cpu_speedup_vs_plain"] = ratio(plain["cpu_step_s"], r["cpu_step_s"])
            if r.get("diffloss_s", 0) > 0:
                r["diffloss_speedup_vs_plain"] = ratio(plain["diffloss_s"], r["diffloss_s"])
            r["peak_memory_vs_plain"] = ratio(r["peak_memory_bytes"], plain["peak_memory_bytes"])


def throughput_summary(results: dict[str, dict[str, Any]], bf16_matmul: float) -> dict[str, Any]:
    """The GPU target: the DiffLoss part of the step at >= 40% of the bf16 matmul rate
    measured here, for the best variant that computes in a reduced dtype (bf16 or fp16)."""
    fractions = {
        name: r["fraction_of_bf16_matmul"]
        for name, r in results.items()
        if r.get("fraction_of_bf16_matmul") is not None
    }
    reduced = {n: f for n, f in fractions.items() if compute_dtype(n) != "float32"}
    best = max(reduced, key=reduced.get) if reduced else None
    return {
        "bf16_matmul_flops_per_second": bf16_matmul,
        "target_fraction": TARGET_BF16_MATMUL_FRACTION,
        "fraction_of_bf16_matmul": fractions,
        "best_reduced_precision_variant": best,
        "met": None if best is None else reduced[best] >= TARGET_BF16_MATMUL_FRACTION,
    }


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None when the denominator was measured as 0 (tiny runs)."""
    return numerator / denominator if denominator else None


# (title, width, result key, format, scale) of the two printed tables.
Column = tuple[str, int, str, str, float]
TIME_COLUMNS: list[Column] = [
    ("ms/step", 9, "step_s", ".1f", 1e3),
    ("spread", 7, "spread", ".0%", 1.0),
    ("x none", 7, "overhead_ratio", ".2f", 1.0),
    ("DL ms", 8, "diffloss_s", ".1f", 1e3),
    ("vs plain", 9, "speedup_vs_plain", ".2f", 1.0),
    ("DL vs plain", 12, "diffloss_speedup_vs_plain", ".2f", 1.0),
    ("CPU ms/step", 12, "cpu_step_s", ".1f", 1e3),
    ("CPU vs plain", 13, "cpu_speedup_vs_plain", ".2f", 1.0),
]
COST_COLUMNS: list[Column] = [
    ("peak MiB", 9, "peak_memory_bytes", ".1f", 2**-20),
    ("+state GiB", 11, "whole_step_peak_bytes", ".2f", 2**-30),
    ("saved MiB", 10, "saved_for_backward_bytes", ".1f", 2**-20),
    ("GFLOP", 8, "flops", ".2f", 1e-9),
    ("DL GFLOP", 9, "diffloss_flops", ".2f", 1e-9),
    ("DL TFLOP/s", 11, "diffloss_flops_per_second", ".3f", 1e-12),
    ("of ceiling", 11, "fraction_of_ceiling", ".1%", 1.0),
    ("of bf16 mm", 11, "fraction_of_bf16_matmul", ".1%", 1.0),
    ("loss drel", 10, "loss_rel_diff", ".1e", 1.0),
    ("grad drel", 10, "grad_rel_diff", ".1e", 1.0),
]


def print_table(results: dict[str, dict[str, Any]], columns: list[Column]) -> None:
    header = f"{'variant':<15}" + "".join(f"{title:>{width}}" for title, width, *_ in columns)
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        cells = []
        for _, width, key, spec, scale in columns:
            value = r.get(key)
            cells.append(f"{'-' if value is None else format(value * scale, spec):>{width}}")
        print(f"{name:<15}" + "".join(cells))


def target_summary(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The issue's target: default at least 2.5x faster than plain, with less peak memory."""
    default = results.get("default")
    if default is None or default.get("speedup_vs_plain") is None:
        return None
    memory_ratio = default.get("peak_memory_vs_plain")
    return {
        "speedup_target": TARGET_SPEEDUP,
        "speedup": default["speedup_vs_plain"],
        "speedup_met": default["speedup_vs_plain"] >= TARGET_SPEEDUP,
        "cpu_time_speedup": default["cpu_speedup_vs_plain"],
        "peak_memory_ratio": memory_ratio,
        "lower_peak_memory": memory_ratio is not None and memory_ratio < 1.0,
        "loss_agrees": results["plain"].get("loss_rel_diff", float("inf")) <= LOSS_TOLERANCE,
    }


def memory_summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The CUDA target at the paper's setting: the whole step (resident state + the step's
    peak) under 20 GiB, per variant with DiffLoss."""
    peaks = {
        name: r["whole_step_peak_bytes"]
        for name, r in results.items()
        if name != "none" and "whole_step_peak_bytes" in r
    }
    return {
        "whole_step_target_bytes": TARGET_STEP_MEMORY,
        "whole_step_peak_bytes": peaks,
        "under_target": {name: peak < TARGET_STEP_MEMORY for name, peak in peaks.items()},
    }


def measure_memory_of_variants(
    args: argparse.Namespace, device: torch.device
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Memory of each variant (CPU: each in a fresh process), and the variants that ran out."""
    isolate = device.type == "cpu" and not args.no_isolate
    memory, skipped = {}, {}
    for name in args.variant_names:
        try:
            if isolate:
                memory[name] = run_in_fresh_process(measure_memory, args, name)
                memory[name]["memory_method"] += " (fresh process)"
            else:
                memory[name] = measure_memory(args, name)
        except torch.OutOfMemoryError as error:  # e.g. plain with the full prior on a GPU
            skipped[name] = out_of_memory_reason(error)
        except RuntimeError as error:  # a fresh process killed or out of memory
            if not isolate or ("OutOfMemoryError" not in str(error) and "died" not in str(error)):
                raise
            skipped[name] = f"its subprocess failed: {str(error).strip().splitlines()[-1]}"
        if not isolate:
            free_priors(device)  # the next variant starts from an empty device
    return memory, skipped


@dataclass
class Measured:
    """What a benchmark run has measured so far."""

    results: dict[str, dict[str, Any]]
    skipped: dict[str, str]
    values: dict[str, tuple[float, torch.Tensor]]
    network_parameters: int = 0
    prior_parameters: int = 0

    def record_sizes(self, step: TrainingStep) -> None:
        self.network_parameters = sum(p.numel() for p in step.net.parameters())
        if step.diffloss is not None and not self.prior_parameters:
            self.prior_parameters = sum(p.numel() for p in step.diffloss.prior.parameters())


def measure_interleaved(
    args: argparse.Namespace, device: torch.device, memory: dict[str, dict[str, Any]], m: Measured
) -> None:
    """Every variant resident at once; timed steps interleaved round by round."""
    steps: dict[str, TrainingStep] = {}
    for name in memory:
        try:
            step = build_step(args, name, device)
            if step.diffloss is not None:
                m.values[name] = loss_and_grad(step, args.seed)
            m.results[name] = {**memory[name], "flops": count_flops(step)}
            steps[name] = step
            m.record_sizes(step)
        except torch.OutOfMemoryError as error:
            m.skipped[name] = out_of_memory_reason(error)
            m.results.pop(name, None)
            free_priors(device)
    timings = time_interleaved(steps, device, args.warmup, args.repeats, m.skipped)
    for name in list(m.results):
        if name in timings:
            m.results[name].update(timings[name])
        else:
            del m.results[name]


def measure_sequential(
    args: argparse.Namespace,
    device: torch.device,
    memory: dict[str, dict[str, Any]] | None,
    m: Measured,
    checkpoint: Callable[[], None],
) -> None:
    """One variant at a time, each built once (its memory measured on the same step unless
    ``memory`` has it from fresh processes); each one's prior is freed before the next is
    built, and ``checkpoint`` is called after each (to write a partial report)."""
    names = args.variant_names if memory is None else list(memory)
    for name in names:
        step = None
        try:
            step = build_step(args, name, device)
            m.record_sizes(step)
            if step.diffloss is not None:
                m.values[name] = loss_and_grad(step, args.seed)  # fresh generator: same draws
            used = measure_step_memory(step, device) if memory is None else memory[name]
            result = {**used, "flops": count_flops(step)}
            skipped: dict[str, str] = {}
            timing = time_interleaved({name: step}, device, args.warmup, args.repeats, skipped)
            if skipped:
                m.skipped.update(skipped)
            else:
                m.results[name] = {**result, **timing[name]}
        except torch.OutOfMemoryError as error:
            m.skipped[name] = out_of_memory_reason(error)
        finally:
            del step
            free_priors(device)
        checkpoint()


def build_report(
    args: argparse.Namespace,
    device: torch.device,
    m: Measured,
    load_before: list[float] | None,
    ceilings: dict[str, float],
    bf16_matmul: float,
) -> dict[str, Any]:
    """The JSON report of what ``m`` holds (a partial one while variants are still running)."""
    checks = relative_checks({n: v for n, v in m.values.items() if n in m.results})
    results = {name: {**r, **checks.get(name, {})} for name, r in m.results.items()}
    add_derived(results, ceilings, bf16_matmul)
    machine = machine_info(device)
    machine["load_average_before"] = load_before
    return {
        "args": args_for_json(args),
        "machine": machine,
        "network_parameters": m.network_parameters,
        "prior_parameters": m.prior_parameters,
        "ceilings_flops_per_second": ceilings,
        "results": results,
        "skipped": dict(m.skipped),
        "target": target_summary(results),
        "memory_target": memory_summary(results),
        "throughput_target": throughput_summary(results, bf16_matmul),
    }


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every variant; returns the report written as JSON."""
    device = setup_torch(args)
    load_before = machine_info(device)["load_average"]
    # Ceilings first, on an empty device (CUDA) and before the process holds any prior.
    ceilings, matmuls = measure_ceilings(device, args.variant_names)
    bf16_matmul = matmuls["bfloat16"]
    in_process = device.type != "cpu" or args.no_isolate
    if args.schedule == "sequential" and in_process:
        memory, skipped = None, {}  # measured on each variant's own step: one build each
    else:
        memory, skipped = measure_memory_of_variants(args, device)  # before any build here
    m = Measured(results={}, skipped=skipped, values={})

    def checkpoint() -> None:
        if args.json:
            report = build_report(args, device, m, load_before, ceilings, bf16_matmul)
            write_json_report(args.json, {**report, "partial": True})

    if args.schedule == "sequential":
        measure_sequential(args, device, memory, m, checkpoint)
    else:
        measure_interleaved(args, device, memory or {}, m)
    return build_report(args, device, m, load_before, ceilings, bf16_matmul)


def print_report(report: dict[str, Any]) -> None:
    args, machine, ceilings = report["args"], report["machine"], report["ceilings_flops_per_second"]
    prior = args["preset"] or (
        f"channels {args['channels']}, mult {args['mult']}, res blocks {args['res_blocks']}, "
        f"size {args['prior_size']}"
    )
    device = args["device"] + (f" ({machine['cuda_device']})" if machine["cuda_device"] else "")
    print(
        f"network {args['arch']} {args['arch_options'] or ''} "
        f"({report['network_parameters']:,} params); prior {prior} "
        f"({report['prior_parameters']:,} params); batch {args['batch']} x 3 x {args['size']} x "
        f"{args['size']}; gamma {args['gamma']}, lambda_sem {args['lambda_sem']}"
    )
    print(
        f"device {device}, threads {args['threads']}, OMP_WAIT_POLICY="
        f"{machine['omp_wait_policy']}, torch {machine['torch']}; load average (1 min) before "
        f"{machine['load_average_before'][0]:.2f}, after {machine['load_average'][0]:.2f}; "
        f"median of {args['repeats']} steps after {args['warmup']} warm-up, {args['schedule']}"
    )
    methods = {r["memory_method"] for r in report["results"].values()}
    print(
        "ceilings (matmul or conv): "
        + ", ".join(f"{name} {value / 1e12:.3f}" for name, value in ceilings.items())
        + f" TFLOP/s; memory: {'; '.join(sorted(methods))}"
    )
    print_table(report["results"], TIME_COLUMNS)
    print_table(report["results"], COST_COLUMNS)
    for name, reason in report["skipped"].items():
        print(f"skipped {name}: {reason}")
    throughput = report["throughput_target"]
    if throughput["best_reduced_precision_variant"] is not None:
        best = throughput["best_reduced_precision_variant"]
        print(
            f"DiffLoss FLOP/s against the bf16 matmul rate "
            f"({throughput['bf16_matmul_flops_per_second'] / 1e12:.3f} TFLOP/s): best reduced-"
            f"precision variant {best} at {throughput['fraction_of_bf16_matmul'][best]:.1%} "
            f"(want >= {throughput['target_fraction']:.0%}: "
            f"{'met' if throughput['met'] else 'NOT met'})"
        )
    target = report["target"]
    if target is not None:
        print(
            f"target: default {target['speedup']:.2f}x faster than plain (want >= "
            f"{target['speedup_target']}: {'met' if target['speedup_met'] else 'NOT met'}; in "
            f"CPU time {_times(target['cpu_time_speedup'])}); peak memory "
            f"{_times(target['peak_memory_ratio'])} plain's; loss values agree: "
            f"{'yes' if target['loss_agrees'] else 'NO'}"
        )
    memory = report["memory_target"]
    if memory["whole_step_peak_bytes"]:
        verdicts = ", ".join(
            f"{name} {peak / 2**30:.2f} GiB ({'under' if memory['under_target'][name] else 'OVER'})"
            for name, peak in memory["whole_step_peak_bytes"].items()
        )
        print(
            f"whole step (weights, optimizer state, batch + the step's peak) against "
            f"{memory['whole_step_target_bytes'] / 2**30:.0f} GiB: {verdicts}"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if torch.device(args.device).type == "cpu" and args.threads > available_cores():
        print(
            f"warning: {args.threads} threads on {available_cores()} cores; oversubscribed "
            "steps can be 10-30x slower (docs/performance.md)."
        )
    report = run_benchmark(args)
    print_report(report)
    if args.json:
        write_json_report(args.json, report)
    return report


if __name__ == "__main__":
    main()
