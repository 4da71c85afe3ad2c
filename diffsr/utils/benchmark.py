"""Measurement helpers shared by the benchmark scripts (``scripts/bench_*.py``).

Timing with device synchronisation, peak memory (CUDA allocator statistics, or the resident set
size on a Linux CPU), bytes saved for backward, FLOP counting, matmul and convolution throughput
ceilings, and running a measurement in a fresh process so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import queue
import re
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .file_util import atomic_write_text

__all__ = [
    "add_prior_choice_arguments",
    "add_small_prior_arguments",
    "args_for_json",
    "available_cores",
    "conv_flops_per_second",
    "count_flops",
    "machine_info",
    "matmul_flops_per_second",
    "peak_memory",
    "prior_choice_options",
    "reset_peak_rss",
    "rss_kib",
    "run_in_fresh_process",
    "saved_tensor_bytes",
    "small_prior_unet",
    "synchronize",
    "time_runs",
    "write_json_report",
]

# glibc returns freed blocks at least this large to the OS at once (see run_in_fresh_process).
MMAP_THRESHOLD_BYTES = 128 * 1024


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(
    fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int
) -> dict[str, Any]:
    """Wall time of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls, in seconds.

    Returns ``{"best", "median", "runs", "cpu_runs"}``: ``runs`` lists every timed call, in
    order; ``cpu_runs`` the CPU time this process (all its threads) spent in each. On a busy
    machine CPU time is far steadier than wall time: it leaves out the time spent waiting for
    a core (but still includes the slowdown of shared caches).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    for _ in range(warmup):
        fn()
    times, cpu_times = [], []
    for _ in range(repeats):
        synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return {
        "best": min(times),
        "median": statistics.median(times),
        "runs": times,
        "cpu_runs": cpu_times,
    }


def rss_kib(field: str) -> int:
    """``VmRSS`` (current) or ``VmHWM`` (peak) of this process from /proc, in KiB (Linux)."""
    with open("/proc/self/status") as f:
        match = re.search(rf"{field}:\s+(\d+)", f.read())
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}; CPU memory needs Linux.")
    return int(match.group(1))


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_memory(fn: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    """Peak memory that one call of ``fn`` adds to what was in use before it.

    CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated before (tensors only,
    exact). CPU (Linux): peak resident set size (VmHWM, reset before the call) minus the RSS
    before; it includes allocator slack and anything else the process touches, so it is an
    approximation. Returns ``{"peak_memory_bytes", "memory_method", "memory_before_bytes"}``.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        method = "cuda max_memory_allocated minus allocated before"
    else:
        reset_peak_rss()
        before = rss_kib("VmRSS") * 1024
        fn()
        peak = rss_kib("VmHWM") * 1024 - before
        method = "peak RSS (VmHWM reset before) minus RSS before"
    return {"peak_memory_bytes": peak, "memory_method": method, "memory_before_bytes": before}


def saved_tensor_bytes(fn: Callable[[], Any]) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn()`` runs.

    Run ``fn`` without its backward: the graph it builds is what is counted. Inside
    checkpointed regions nothing is saved, and their kept inputs are not counted.
    """
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(seen.values())


def count_flops(fn: Callable[[], Any], math_attention: bool = True) -> int:
    """FLOPs of matmuls, convolutions and attention in one call of ``fn`` (forward and any
    backward it runs), by ``torch.utils.flop_counter.FlopCounterMode``.

    ``math_attention`` runs ``F.scaled_dot_product_attention`` through its math backend while
    counting, because the counter has no formula for the fused CPU kernel; the count is then
    the same on every device.
    """
    backend = sdpa_kernel(SDPBackend.MATH) if math_attention else contextlib.nullcontext()
    with backend, FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_flops_per_second(
    device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5
) -> float:
    """Best FLOP/s of an ``n x n`` by ``n x n`` matmul: a practical throughput ceiling."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / time_runs(lambda: a @ b, device, warmup=2, repeats=repeats)["best"]


def conv_flops_per_second(
    device: torch.device,
    dtype: torch.dtype,
    batch: int,
    channels: int,
    size: int,
    repeats: int = 5,
) -> float:
    """Best FLOP/s of a 3x3 convolution, ``channels`` in and out, on a channels-last
    ``batch x channels x size x size`` input: a ceiling for convolutional networks (on CPUs
    where torch's float32 matmul goes through a slow BLAS path, convolutions go through
    oneDNN and run faster than any matmul)."""
    x = torch.randn(batch, channels, size, size, device=device, dtype=dtype)
    weight = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    weight = weight.contiguous(memory_format=torch.channels_last)
    seconds = time_runs(
        lambda: torch.nn.functional.conv2d(x, weight, padding=1), device, warmup=2, repeats=repeats
    )["best"]
    return 2 * batch * channels**2 * 9 * size**2 / seconds


def machine_info(device: torch.device) -> dict[str, Any]:
    """Platform, cores, torch version, threads, load average and the CUDA device name."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "available_cores": available_cores(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def _call_and_report(results: Any, fn: Callable[..., Any], args: tuple) -> None:
    try:
        results.put(("ok", fn(*args)))
    except BaseException:
        results.put(("error", traceback.format_exc()))


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a new (spawned) Python process; returns its picklable result.

    Used to measure CPU peak memory: the process's RSS then holds only what ``fn`` builds.
    glibc's mmap threshold is fixed at 128 KiB in the child, so that freed tensors go back to
    the OS at once and RSS follows the live tensors rather than the heap's high-water mark.
    ``fn`` must be importable by the child (a module-level function). Errors in the child are
    raised here with its traceback.
    """
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_call_and_report, args=(results, fn, args))
    with _environment(MALLOC_MMAP_THRESHOLD_=str(MMAP_THRESHOLD_BYTES)):
        process.start()
    while True:
        try:
            status, payload = results.get(timeout=1.0)
            break
        except queue.Empty:
            if not process.is_alive():
                raise RuntimeError(
                    f"The benchmark subprocess for {fn.__name__} died (exit code "
                    f"{process.exitcode}) without a result; out of memory?"
                ) from None
    process.join()
    if status == "error":
        raise RuntimeError(f"The benchmark subprocess for {fn.__name__} failed:\n{payload}")
    return payload


def args_for_json(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed command line as JSON-ready values (paths as strings)."""
    return {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in vars(args).items()}


def write_json_report(path: str | os.PathLike, report: dict[str, Any]) -> None:
    """Write a benchmark report as indented JSON, atomically (folders created as needed)."""
    atomic_write_text(path, json.dumps(report, indent=2))
    print(f"wrote {path}")


def add_small_prior_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Flags of a small ADM UNet for CPU benchmarks (the issue's ~11M configuration by default)."""
    parser.add_argument("--channels", type=int, default=64, help="num_channels")
    parser.add_argument("--mult", default="1,2,2,2", help="channel_mult")
    parser.add_argument("--res-blocks", type=int, default=2, help="num_res_blocks")
    parser.add_argument("--attention-res", default="16,8", help="attention_resolutions")
    parser.add_argument("--head-channels", type=int, default=32, help="num_head_channels")


def small_prior_unet(args: argparse.Namespace, image_size: int) -> dict[str, Any]:
    """``create_unet`` keywords from :func:`add_small_prior_arguments` flags (ADM's block style)."""
    return {
        "image_size": image_size,
        "num_channels": args.channels,
        "num_res_blocks": args.res_blocks,
        "channel_mult": args.mult,
        "attention_resolutions": args.attention_res,
        "num_head_channels": args.head_channels,
        "learn_sigma": True,
        "use_scale_shift_norm": True,
        "resblock_updown": True,
    }


def add_prior_choice_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--preset``/``--checkpoint``, or a small UNet (:func:`add_small_prior_arguments`) of
    ``--prior-size``; read back with :func:`prior_choice_options`."""
    parser.add_argument("--preset", help="a diffsr.diffusion preset, e.g. adm_256_uncond")
    parser.add_argument("--checkpoint", help="prior weights (default: random, seed 0)")
    add_small_prior_arguments(parser)
    parser.add_argument("--prior-size", type=int, default=64, help="image_size of the UNet")


def prior_choice_options(args: argparse.Namespace) -> dict[str, Any]:
    """DiffusionPrior options (``preset`` or ``unet``, and ``checkpoint``) from those flags."""
    if args.preset:
        options: dict[str, Any] = {"preset": args.preset}
    else:
        options = {"unet": small_prior_unet(args, args.prior_size)}
    if args.checkpoint:
        options["checkpoint"] = args.checkpoint
    return options
