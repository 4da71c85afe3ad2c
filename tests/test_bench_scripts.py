"""Benchmark helpers (diffsr.utils.benchmark) and the scripts bench_diffloss.py / bench_prior.py
on tiny configurations. Reference values are direct formulas (FLOPs of a matmul, attention and
the convolutions of AODNet; bytes of saved tensors), not outputs of the code under test."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from diffsr.diffusion import clear_shared_priors
from diffsr.utils import benchmark
from tests.helpers.scripts import load_script

REPO = Path(__file__).resolve().parents[1]
TINY_PRIOR_FLAGS = [
    "--channels", "32", "--mult", "1,2", "--res-blocks", "1", "--attention-res", "8",
    "--head-channels", "16",
]  # fmt: skip
STEP_KEYS = ("step_s", "cpu_step_s", "peak_memory_bytes", "saved_for_backward_bytes", "flops")
DIFFLOSS_KEYS = ("overhead_ratio", "diffloss_s", "diffloss_flops", "loss_rel_diff", "grad_rel_diff")
# AODNet's convolutions as (in, out, kernel), in order (diffsr/archs/aodnet_arch.py).
AODNET_CONVS = [(3, 3, 1), (3, 3, 3), (6, 3, 5), (6, 3, 7), (12, 3, 3)]


@pytest.fixture(autouse=True)
def _fresh_prior_cache():
    clear_shared_priors()
    yield
    clear_shared_priors()


# -- helpers ------------------------------------------------------------------------------------
def test_count_flops_matmul_and_fused_attention():
    a, b = torch.randn(64, 32), torch.randn(32, 48)
    assert benchmark.count_flops(lambda: a @ b) == 2 * 64 * 32 * 48
    tokens, width = 40, 16
    q, k, v = (torch.randn(1, 1, tokens, width) for _ in range(3))
    # q k^T and (softmax) v: two matmuls of tokens x tokens x width multiply-adds each.
    expected = 2 * (2 * tokens * tokens * width)
    assert benchmark.count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == expected


def test_saved_tensor_bytes_counts_each_storage_once():
    a = torch.randn(100, requires_grad=True)
    b = torch.randn(100, requires_grad=True)
    assert benchmark.saved_tensor_bytes(lambda: a * b) == 2 * 100 * 4  # mul saves both inputs
    assert benchmark.saved_tensor_bytes(lambda: a * a) == 100 * 4  # one storage, saved twice


def _peak_of_a_temporary_tensor(size: int) -> dict:
    return benchmark.peak_memory(lambda: torch.ones(size // 4).sum(), torch.device("cpu"))


def test_peak_memory_sees_a_temporary_cpu_tensor():
    """Measured in a fresh process, as the benchmark does: a long-lived process may serve the
    tensor from heap pages it already holds, which RSS cannot see."""
    size = 64 * 2**20
    result = benchmark.run_in_fresh_process(_peak_of_a_temporary_tensor, size)
    assert 0.9 * size <= result["peak_memory_bytes"] < size + 16 * 2**20
    assert "VmHWM" in result["memory_method"]


def test_time_runs_counts_calls_and_measures_wall_time():
    calls = []

    def nap() -> None:
        calls.append(1)
        time.sleep(0.01)

    timing = benchmark.time_runs(nap, torch.device("cpu"), warmup=2, repeats=3)
    assert len(calls) == 5 and len(timing["runs"]) == 3
    assert 0.01 <= timing["best"] <= timing["median"] < 1.0


def test_run_in_fresh_process_sets_the_mmap_threshold_in_the_child_only():
    value = benchmark.run_in_fresh_process(os.getenv, "MALLOC_MMAP_THRESHOLD_")
    assert value == str(benchmark.MMAP_THRESHOLD_BYTES)
    assert os.environ.get("MALLOC_MMAP_THRESHOLD_") != value


# -- bench_diffloss.py ----------------------------------------------------------------------------
def test_bench_diffloss_tiny_run(tmp_path):
    script = load_script("bench_diffloss")
    batch, size = 2, 16
    out = tmp_path / "bench.json"
    shape = ["--prior-size", str(size), "--size", str(size), "--batch", str(batch)]
    run = ["--repeats", "1", "--warmup", "0", "--no-isolate", "--threads", "2"]
    variants = ["--variants", "none,plain,default,optimised", "--json", str(out)]
    script.main([*TINY_PRIOR_FLAGS, *shape, *run, *variants])
    report = json.loads(out.read_text())
    results = report["results"]
    assert list(results) == ["none", "plain", "default", "optimised"]
    for r in results.values():
        assert all(key in r for key in STEP_KEYS)
        assert r["step_s"] > 0 and len(r["runs_s"]) == 1
    for name in ("plain", "default", "optimised"):
        assert all(key in results[name] for key in DIFFLOSS_KEYS)
    assert set(report["ceilings_flops_per_second"]) == {"float32", "bfloat16"}
    assert report["machine"]["torch"] == torch.__version__

    # Plain (one batched call, legacy attention, trainable weights) and default compute the
    # same loss and the same gradient to the restored image.
    assert results["plain"]["loss_rel_diff"] <= 1e-5
    assert results["plain"]["grad_rel_diff"] <= 1e-4
    assert results["default"]["loss_rel_diff"] == 0.0
    assert report["target"]["loss_agrees"] is True

    # The step without DiffLoss is AODNet alone: forward, weight gradients and input
    # gradients of every convolution but the first (its input needs none).
    pixels = batch * size * size
    macs = [c_in * c_out * k * k for c_in, c_out, k in AODNET_CONVS]
    assert results["none"]["flops"] == 2 * pixels * (2 * sum(macs) + sum(macs[1:]))
    # Plain does the prior's work twice over (two halves, weight gradients): about 6 passes
    # against default's 3 (clean forward, restored forward, backward to the input).
    ratio = results["plain"]["diffloss_flops"] / results["default"]["diffloss_flops"]
    assert 1.9 < ratio < 2.1
    assert (
        results["plain"]["saved_for_backward_bytes"]
        > results["default"]["saved_for_backward_bytes"]
    )


def test_bench_diffloss_rejects_unknown_variants_and_bad_arch_options():
    script = load_script("bench_diffloss")
    with pytest.raises(SystemExit):
        script.parse_args(["--variants", "default,fastest"])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        script.parse_args(["--arch-kw", "widths"])
    args = script.parse_args(["--arch", "FSDGN", "--arch-kw", "widths=[8,12,16]"])
    assert args.arch_options == {"widths": [8, 12, 16]}


# -- bench_prior.py -------------------------------------------------------------------------------
def test_bench_prior_tiny_run(tmp_path):
    script = load_script("bench_prior")
    out = tmp_path / "prior.json"
    run = ["--size", "16", "--batch", "2", "--repeats", "1", "--threads", "2", "--no-isolate"]
    script.main(
        [*TINY_PRIOR_FLAGS, *run, "--variants", "fp32 legacy,checkpointing", "--json", str(out)]
    )
    report = json.loads(out.read_text())
    legacy, checkpointed = report["results"]
    assert legacy["variant"] == "fp32 legacy" and checkpointed["variant"] == "checkpointing"
    for key in ("forward_s", "fwd_bwd_s", "peak_memory_bytes", "saved_for_backward_bytes"):
        assert key in legacy
    # Backward to the input of a frozen network costs about one more forward (two matmuls per
    # attention matmul push it a little above 2); checkpointing recomputes at most one forward
    # (torch stops recomputing a block once the tensors backward needs are back).
    assert 1.95 < legacy["flops_fwd_bwd"] / legacy["flops_forward"] < 2.2
    extra = checkpointed["flops_fwd_bwd"] - legacy["flops_fwd_bwd"]
    assert 0.5 * legacy["flops_forward"] < extra <= legacy["flops_forward"]
    assert checkpointed["saved_for_backward_bytes"] < legacy["saved_for_backward_bytes"]
