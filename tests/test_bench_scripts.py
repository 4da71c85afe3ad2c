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


pytestmark = pytest.mark.usefixtures("fresh_prior_cache")


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
    variants = ["--variants", "none,plain,default,ckpt,optimised", "--json", str(out)]
    script.main([*TINY_PRIOR_FLAGS, *shape, *run, *variants])
    report = json.loads(out.read_text())
    results = report["results"]
    assert list(results) == ["none", "plain", "default", "ckpt", "optimised"]
    for r in results.values():
        assert all(key in r for key in STEP_KEYS)
        assert r["step_s"] > 0 and len(r["runs_s"]) == 1
    for name in ("plain", "default", "ckpt", "optimised"):
        assert all(key in results[name] for key in DIFFLOSS_KEYS)
    assert set(report["ceilings_flops_per_second"]) == {"float32", "bfloat16"}
    assert report["machine"]["torch"] == torch.__version__

    # Plain (one batched call, legacy attention, trainable weights) and default compute the
    # same loss and the same gradient to the restored image.
    assert results["plain"]["loss_rel_diff"] <= 1e-5
    assert results["plain"]["grad_rel_diff"] <= 1e-4
    assert results["default"]["loss_rel_diff"] == 0.0
    # Checkpointing recomputes the same float32 function: same loss, fewer saved bytes, more work.
    assert results["ckpt"]["loss_rel_diff"] <= 1e-6
    assert results["ckpt"]["grad_rel_diff"] <= 1e-5
    assert (
        results["ckpt"]["saved_for_backward_bytes"] < results["default"]["saved_for_backward_bytes"]
    )
    assert results["ckpt"]["diffloss_flops"] > results["default"]["diffloss_flops"]
    assert report["target"]["loss_agrees"] is True

    # Resident state, counted from the parts: AODNet's weights with Adam's two moments and a
    # step counter per tensor, the batch, and for DiffLoss the prior's weights and buffers.
    aodnet = sum(c_in * c_out * k * k + c_out for c_in, c_out, k in AODNET_CONVS)
    batch_bytes = 2 * 4 * batch * 3 * size * size
    none_state = 4 * 3 * aodnet + 4 * 2 * len(AODNET_CONVS) + batch_bytes
    assert results["none"]["resident_state_bytes"] == none_state
    prior = script.build_loss(
        {
            "type": "DiffLoss",
            "prior": script.prior_options(
                script.parse_args([*TINY_PRIOR_FLAGS, *shape]), "default"
            ),
        }
    ).prior
    prior_bytes = sum(t.numel() * t.element_size() for t in [*prior.parameters(), *prior.buffers()])
    assert results["default"]["resident_state_bytes"] == none_state + prior_bytes
    for r in results.values():
        assert r["whole_step_peak_bytes"] == r["resident_state_bytes"] + r["peak_memory_bytes"]
    assert set(report["memory_target"]["under_target"]) == {"plain", "default", "ckpt", "optimised"}

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


# -- bench_precision.py ---------------------------------------------------------------------------
def test_bench_precision_tiny_run(tmp_path):
    script = load_script("bench_precision")
    out = tmp_path / "precision.json"
    shape = ["--prior-size", "16", "--size", "16", "--batch", "2", "--draws", "2"]
    dtypes = ("float32", "bfloat16", "float16", "float16-unscaled")
    run = ["--dtypes", ",".join(dtypes), "--sigmas", "0.2,0.002", "--json", str(out)]
    script.main([*TINY_PRIOR_FLAGS, *shape, *run])
    rows = {(r["dtype"], r["sigma"]): r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {(d, s) for d in dtypes for s in (0.2, 0.002)}

    # float32 against itself: the draws of t and noise are shared, so everything agrees exactly.
    for sigma in (0.2, 0.002):
        same = rows["float32", sigma]
        assert same["nat_ratio"] == 1.0 and same["sem_ratio"] == 1.0
        assert same["grad_nat_rel_diff"] == 0.0 and same["grad_total_rel_diff"] == 0.0
    # The float32 L_nat is the registered NaturalnessLoss with the same seed, averaged over draws.
    clear_shared_priors()
    prior = {"unet": benchmark.small_prior_unet(script.parse_args(TINY_PRIOR_FLAGS), 16)}
    prior["channels_last"] = True
    loss = script.build_loss({"type": "NaturalnessLoss", "prior": prior})
    clean = script.clean_images(script.parse_args([*shape]))
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1000))
    values = []
    for draw in range(2):
        loss.set_seed(draw)
        values.append(loss(clean + 0.2 * noise, clean).item())
    assert rows["float32", 0.2]["nat_float32"] == pytest.approx(sum(values) / 2, rel=1e-6)

    # bf16 rounding: close to float32 when the images differ a lot, a floor when they are close.
    far, near = rows["bfloat16", 0.2], rows["bfloat16", 0.002]
    assert 0.8 < far["nat_ratio"] < 1.25
    assert near["grad_nat_rel_diff"] > far["grad_nat_rel_diff"]
    assert near["nat_ratio"] > far["nat_ratio"]
    # float16's finer rounding, once its backward no longer underflows, beats bf16's.
    for sigma in (0.2, 0.002):
        fp16, unscaled = rows["float16", sigma], rows["float16-unscaled", sigma]
        assert fp16["grad_nat_rel_diff"] < unscaled["grad_nat_rel_diff"]
        assert fp16["grad_nat_rel_diff"] < rows["bfloat16", sigma]["grad_nat_rel_diff"]


def test_bench_precision_reads_the_prior_of_an_option_file(tmp_path):
    script = load_script("bench_precision")
    prior = script.prior_from_option_file(REPO / "options/demo/dehaze_demo_diffloss.yml")
    assert prior["checkpoint"] == "experiments/pretrained_models/demo_prior_64.pth"
    assert prior["unet"]["num_channels"] == 32
    plain = tmp_path / "l2.yml"
    plain.write_text("train:\n  pixel_opt: {type: MSELoss, loss_weight: 1}\n")
    with pytest.raises(SystemExit, match="no loss block of type DiffLoss"):
        script.prior_from_option_file(plain)
    with pytest.raises(SystemExit, match="no such file"):
        script.prior_from_option_file(tmp_path / "missing.yml")
    with pytest.raises(SystemExit):
        script.parse_args(["--dtypes", "float8"])
