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
  no_grad, frozen weights, sdpa attention, float32);
- ``optimised``: default + bf16 autocast + channels_last;
- ``optimised-ckpt``: optimised + activation checkpointing (in the default list on CUDA only);
- ``ckpt``: default + activation checkpointing, still float32 (on request): the exact loss in
  the least memory;
- ``channels-last``, ``bf16``: default + one of the two options (on request, ``--variants``);
- ``fp16``, ``fp16-ckpt``: default + float16 autocast with the prior's gradient scaling (about
  8x finer rounding than bf16; in the default list on CUDA only: CPUs without float16 units
  emulate it), and the same with checkpointing.

Reported per variant: median seconds per step (after warm-up; CUDA synchronised) and median CPU
time of the process per step (steadier than wall time on a busy machine), the ratio to
the step without DiffLoss, peak memory of one step, bytes autograd saves for backward, FLOPs
(``FlopCounterMode``, attention counted through the math backend), the DiffLoss part's achieved
FLOP/s against a ceiling measured here in the variant's compute dtype (bf16 or float32; the
faster of a large matmul and a 3x3 convolution; TF32 allowed on CUDA), the relative
difference of the DiffLoss value and of its gradient from ``default`` (same t and noise): plain
must agree to ~1e-5 in float32. Peak memory: CUDA ``max_memory_allocated``; CPU (Linux) the peak
resident set size of a fresh process per variant (see ``diffsr.utils.benchmark.peak_memory``).

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
from diffsr.diffusion import DiffusionPrior, build_prior
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
    "cuda": "none,plain,default,ckpt,optimised,optimised-ckpt,fp16,fp16-ckpt",
}
TARGET_SPEEDUP = 2.5  # the target for default over plain on the 2-core CPU
TARGET_STEP_MEMORY = 20 * 2**30  # whole-step peak at the paper's setting: fits a 24 GB card
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
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    args.arch_options = parse_arch_options(args.arch_kw)
    device_type = torch.device(args.device).type
    names = args.variants or DEFAULT_VARIANTS.get(device_type, DEFAULT_VARIANTS["cpu"])
    args.variant_names = [n.strip() for n in names.split(",") if n.strip()]
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
        # The same draws, in the same order, as PriorLossCore.forward.
        t = torch.randint(core.t_low, core.t_high + 1, (x.shape[0],), device=x.device)
        noise = torch.randn_like(x)
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


def build_step(args: argparse.Namespace, variant: str, device: torch.device) -> TrainingStep:
    """The training step of ``variant``: same network initialisation and data in every one."""
    torch.manual_seed(args.seed)
    net = build_network({"type": args.arch, **args.arch_options}).to(device).train()
    generator = torch.Generator().manual_seed(args.seed)
    gt = torch.rand(args.batch, 3, args.size, args.size, generator=generator)
    lq = 0.6 * gt + 0.3  # a hazy version of it
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    return TrainingStep(
        net, optimizer, lq.to(device), gt.to(device), build_diffloss(args, variant, device)
    )


def measure_memory(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """Peak memory and saved-for-backward bytes of one step (after a warm-up step)."""
    device = setup_torch(args)
    step = build_step(args, variant, device)
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
    steps: dict[str, TrainingStep], device: torch.device, warmup: int, repeats: int
) -> dict[str, dict[str, Any]]:
    """Median and best wall seconds, and median process CPU seconds, per step; each round
    runs one step of every variant."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    runs: dict[str, list[float]] = {name: [] for name in steps}
    cpu_runs: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            timing = time_runs(step, device, warmup=0, repeats=1)
            runs[name].extend(timing["runs"])
            cpu_runs[name].extend(timing["cpu_runs"])
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


def check_loss_values(
    steps: dict[str, TrainingStep], device: torch.device, seed: int
) -> dict[str, dict[str, float]]:
    """DiffLoss value and input gradient of each variant on one fixed image pair with the same
    draws (seeded), and their relative difference from ``default``."""
    generator = torch.Generator().manual_seed(seed + 1)
    clean = next(iter(steps.values())).gt
    noise = 0.05 * torch.randn(clean.shape, generator=generator).to(device)
    restored = (clean + noise).clamp(0, 1)
    values: dict[str, tuple[float, torch.Tensor]] = {}
    for name, step in steps.items():
        if step.diffloss is None:
            continue
        pred = restored.clone().requires_grad_(True)
        torch.manual_seed(seed)
        value = step.diffloss(pred, clean)
        value.backward()
        values[name] = (value.item(), pred.grad.detach().double())
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


def measure_ceilings(device: torch.device, variants: list[str]) -> dict[str, float]:
    """Ceiling FLOP/s in float32, bfloat16 and any other compute dtype of ``variants``: the
    faster of a large matmul and a 3x3 convolution. float32 may use TF32 on CUDA, as cuDNN
    convolutions do by default."""
    cuda = device.type == "cuda"
    matmul_size, conv_shape = (8192, (32, 512, 64)) if cuda else (1024, (4, 256, 16))
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        ceilings = {}
        names = dict.fromkeys(["float32", "bfloat16", *map(compute_dtype, variants)])
        for name in names:
            dtype = getattr(torch, name)
            ceilings[name] = max(
                matmul_flops_per_second(device, dtype, matmul_size),
                conv_flops_per_second(device, dtype, *conv_shape),
            )
        return ceilings
    finally:
        torch.set_float32_matmul_precision(precision)


def add_derived(results: dict[str, dict[str, Any]], ceilings: dict[str, float]) -> None:
    """Spread of the runs, ratios to the step without DiffLoss and to plain, and the DiffLoss
    part's FLOP/s (its FLOPs over its seconds: the step's minus those of ``none``)."""
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
        if plain is not None and name not in ("none", "plain"):
            r["speedup_vs_plain"] = ratio(plain["step_s"], r["step_s"])
            r["cpu_speedup_vs_plain"] = ratio(plain["cpu_step_s"], r["cpu_step_s"])
            if r.get("diffloss_s", 0) > 0:
                r["diffloss_speedup_vs_plain"] = ratio(plain["diffloss_s"], r["diffloss_s"])
            r["peak_memory_vs_plain"] = ratio(r["peak_memory_bytes"], plain["peak_memory_bytes"])


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
            else:
                memory[name] = measure_memory(args, name)
        except torch.OutOfMemoryError as error:  # e.g. plain with the full prior on a GPU
            skipped[name] = f"out of memory: {str(error).splitlines()[0]}"
        if name in skipped:
            gc.collect()
            torch.cuda.empty_cache()
        elif isolate:
            memory[name]["memory_method"] += " (fresh process)"
    return memory, skipped


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every variant; returns the report written as JSON."""
    device = setup_torch(args)
    load_before = machine_info(device)["load_average"]
    memory, skipped = measure_memory_of_variants(args, device)  # before this process builds any
    steps = {name: build_step(args, name, device) for name in memory}
    checks = check_loss_values(steps, device, args.seed)
    results: dict[str, dict[str, Any]] = {}
    for name, step in steps.items():
        results[name] = {**memory[name], **checks.get(name, {}), "flops": count_flops(step)}
    for name, timing in time_interleaved(steps, device, args.warmup, args.repeats).items():
        results[name].update(timing)
    ceilings = measure_ceilings(device, list(steps))
    add_derived(results, ceilings)

    machine = machine_info(device)
    machine["load_average_before"] = load_before
    first = next(iter(steps.values()))
    priors = [s.diffloss.prior for s in steps.values() if s.diffloss is not None]
    return {
        "args": args_for_json(args),
        "machine": machine,
        "network_parameters": sum(p.numel() for p in first.net.parameters()),
        "prior_parameters": sum(p.numel() for p in priors[0].parameters()) if priors else 0,
        "ceilings_flops_per_second": ceilings,
        "results": results,
        "skipped": skipped,
        "target": target_summary(results),
        "memory_target": memory_summary(results),
    }


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
        f"median of {args['repeats']} steps after {args['warmup']} warm-up, interleaved"
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
