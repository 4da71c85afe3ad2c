"""The CUDA path of DiffLoss, checked on the CPU where it can be and on CUDA where it must.

One prior per process and device (counted loads); contiguous q/k/v reaching the fused SDPA
kernel (profiler); reduced-precision weights stored in their dtype; exact float32 (no TF32)
around the prior's forward and backward; channels_last by device; the GradScaler in the
training state; dist_params reaching init_dist; no RNG save/restore in checkpointing; the
benchmarks surviving an out-of-memory; and the one-command GPU check on a tiny CPU dry run.

Tests marked ``cuda`` need a GPU; they skip with a reason on the CPU and run in
``scripts/gpu_check.sh``. The CPU suite does not depend on them.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

import diffsr.diffusion.prior as prior_module
import diffsr.diffusion.unet as unet_module
import diffsr.train as train_module
from diffsr.diffusion import (
    DiffusionPrior,
    build_prior,
    clear_shared_priors,
    default_channels_last,
)
from diffsr.diffusion.float32_precision import precision_knobs
from diffsr.diffusion.unet_blocks import AttentionBlock, GroupNorm32
from diffsr.losses import build_loss
from diffsr.models import build_model
from diffsr.models.checkpoint import load_training_state
from diffsr.train import main as train_main
from diffsr.utils.benchmark import saved_tensor_bytes
from diffsr.utils.options import parse_options
from tests.helpers.fixtures import TINY_PRIOR_UNET, train_options, write_options
from tests.helpers.scripts import load_script

REPO = Path(__file__).resolve().parents[1]
PRIOR = {"unet": TINY_PRIOR_UNET, "diffusion_steps": 100}
HAS_CUDA = torch.cuda.is_available()
cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (run scripts/gpu_check.sh)")


@pytest.fixture(autouse=True)
def _fresh_prior_cache():
    clear_shared_priors()
    yield
    clear_shared_priors()


def diffloss_options(tmp_path: Path, device: str = "cpu", **train_overrides) -> dict:
    opt = train_options(tmp_path, total_iter=1, **train_overrides)
    opt["device"] = device
    opt["train"]["diffloss_opt"] = {"type": "DiffLoss", "prior": copy.deepcopy(PRIOR)}
    return opt


def count_builds(monkeypatch) -> list[str]:
    """Record the device of every prior build (the weight loading happens there)."""
    devices: list[str] = []
    real = prior_module.build_prior

    def spy(opt, device=None):
        devices.append(str(device))
        return real(opt, device)

    monkeypatch.setattr(prior_module, "build_prior", spy)
    return devices


def cache_devices() -> list[str]:
    return [json.loads(key)["device"] for key in prior_module._SHARED]


# -- 1. one prior, on the training device ------------------------------------------------------
def test_model_builds_the_prior_once_on_its_device_and_a_step_loads_no_other(tmp_path, monkeypatch):
    devices = count_builds(monkeypatch)
    path = write_options(tmp_path / "opt.yml", diffloss_options(tmp_path))
    model = build_model(parse_options(str(path), is_train=True))
    # Before the fix the loss asked for the prior with no device (None): built on the CPU
    # whatever the model's device, then again at the first forward on the model's device.
    assert devices == [str(model.device)]
    model.feed_data({"lq": torch.rand(2, 3, 16, 16), "gt": torch.rand(2, 3, 16, 16)})
    model.optimize_parameters(1)
    assert devices == [str(model.device)]
    assert cache_devices() == [str(model.device)]


def test_a_loss_used_on_another_device_releases_its_old_copy():
    loss = build_loss({"type": "DiffLoss", "prior": copy.deepcopy(PRIOR), "device": "cpu"})
    old = loss.prior
    assert cache_devices() == ["cpu"]
    moved = loss.core._prior_on(torch.device("meta"))
    assert moved is not old and moved.schedule.betas.device.type == "meta"
    assert cache_devices() == ["meta"]  # the CPU copy is no longer cached
    # channels_last follows the new device's default (off on anything but the CPU).
    assert loss.core.prior_options["channels_last"] is False


@cuda
@needs_cuda
def test_cuda_model_loads_the_prior_once_and_keeps_no_cpu_copy(tmp_path, monkeypatch):
    devices = count_builds(monkeypatch)
    path = write_options(tmp_path / "opt.yml", diffloss_options(tmp_path, device="cuda"))
    model = build_model(parse_options(str(path), is_train=True))
    model.feed_data({"lq": torch.rand(2, 3, 16, 16), "gt": torch.rand(2, 3, 16, 16)})
    model.optimize_parameters(1)
    assert len(devices) == 1 and devices[0].startswith("cuda")
    assert all(d.startswith("cuda") for d in cache_devices())
    prior = model.loss_terms[-1].module.prior
    assert all(p.device.type == "cuda" for p in prior.parameters())


# -- 2. fused attention -------------------------------------------------------------------------
def attention_block(backend: str) -> AttentionBlock:
    torch.manual_seed(0)
    block = AttentionBlock(64, num_head_channels=16, backend=backend)
    nn.init.normal_(block.proj_out.weight, std=0.05)
    return block.requires_grad_(False)


def sdpa_kernels(block: AttentionBlock, x: torch.Tensor) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        block(x.clone().requires_grad_()).sum().backward()
    return {e.key for e in prof.key_averages() if "scaled_dot_product" in e.key}


def test_sdpa_gets_contiguous_qkv_and_the_fused_cpu_kernel(monkeypatch):
    block = attention_block("sdpa")
    x = torch.randn(2, 64, 16, 16)
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append(all(t.is_contiguous() for t in (q, k, v)))
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    block(x)
    monkeypatch.undo()
    assert seen == [True]
    kernels = sdpa_kernels(block, x)
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in kernels
    assert "aten::_scaled_dot_product_attention_math" not in kernels


def test_fused_attention_computes_legacy_attention_and_saves_less():
    x = torch.randn(2, 64, 16, 16)
    legacy, sdpa = attention_block("legacy"), attention_block("sdpa")
    grads = []
    for block in (legacy, sdpa):
        xi = x.clone().requires_grad_()
        out = block(xi)
        out.square().sum().backward()
        grads.append((out.detach(), xi.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-4, atol=1e-5)
    # The math kernel keeps 4 heads x 256 x 256 attention weights (and their logits) for
    # backward; the fused kernel keeps q, k, v, the output and one log-sum-exp per row.
    attention_maps = 2 * 4 * 256 * 256 * 4
    saved_legacy = saved_tensor_bytes(lambda: legacy(x.clone().requires_grad_()))
    saved_sdpa = saved_tensor_bytes(lambda: sdpa(x.clone().requires_grad_()))
    assert saved_sdpa < saved_legacy - attention_maps


@cuda
@needs_cuda
def test_sdpa_reaches_a_fused_cuda_kernel():
    block = attention_block("sdpa").cuda().half()
    x = torch.randn(2, 64, 16, 16, device="cuda", dtype=torch.half)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        block(x.clone().requires_grad_()).sum().backward()
    keys = {e.key for e in prof.key_averages()}
    fused = (
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
    )
    assert any(any(name in k for name in fused) for k in keys), sorted(keys)
    assert not any("_scaled_dot_product_attention_math" in k for k in keys)


# -- 3. weights in the compute dtype ------------------------------------------------------------
def torso_convs(prior: DiffusionPrior) -> list[nn.Module]:
    unet = prior.unet
    parts = (unet.input_blocks, unet.middle_block, unet.output_blocks)
    return [m for part in parts for m in part.modules() if isinstance(m, nn.Conv1d | nn.Conv2d)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_dtype_stores_the_torso_in_it_and_keeps_the_float32_layers(dtype):
    name = str(dtype).removeprefix("torch.")
    base, low = build_prior(copy.deepcopy(PRIOR)), build_prior({**PRIOR, "dtype": name})
    assert all(m.weight.dtype == dtype and m.bias.dtype == dtype for m in torso_convs(low))
    unet = low.unet
    float32_parts = [unet.time_embed, unet.out]
    float32_parts += [m for m in unet.modules() if isinstance(m, GroupNorm32)]
    float32_parts += [m.emb_layers for m in unet.modules() if hasattr(m, "emb_layers")]
    assert all(p.dtype == torch.float32 for part in float32_parts for p in part.parameters())
    assert low.schedule.betas.dtype == torch.float64
    # The torso holds nearly all the weights: memory close to half of float32's.
    size = {id(p): sum(q.numel() * q.element_size() for q in p.parameters()) for p in (base, low)}
    assert 0.5 < size[id(low)] / size[id(base)] < 0.6


def test_reduced_dtype_runs_without_autocast_even_inside_a_trainers_amp():
    prior = build_prior({**PRIOR, "dtype": "bfloat16"})
    conv = torso_convs(prior)[1]
    seen = []
    conv.register_forward_hook(
        lambda module, inputs, output: seen.append(
            (torch.is_autocast_enabled("cpu"), inputs[0].dtype, output.dtype)
        )
    )
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    t = torch.tensor([3, 70])
    with torch.autocast("cpu", dtype=torch.float16):  # a trainer's float16 AMP around it
        eps, h = prior(x, t, need_h=True)
    assert seen == [(False, torch.bfloat16, torch.bfloat16)]
    assert eps.dtype == h.dtype == torch.float32


def test_bf16_gradient_stays_within_the_documented_precision(tmp_path):
    """docs/performance.md, demo prior on its validation images, sigma 0.05 (3 draws of batch
    4 at 64x64): the DiffLoss gradient in bf16 differs from float32's by 2.1%. The prior with
    its weights stored in bf16 must stay within that figure (+25%)."""
    demo = (
        tmp_path / "demo_haze"
    )  # the demo's validation images (they do not depend on --num-train)
    assert load_script("make_demo_data").main(["--out", str(demo), "--num-train", "1"]) == 0
    script = load_script("bench_precision")
    rows = script.main(
        [
            "--options", str(REPO / "options/demo/dehaze_demo_diffloss.yml"),
            "--gt-folder", str(demo / "val" / "clear"),
            "--sigmas", "0.05", "--dtypes", "bfloat16", "--threads", "2",
        ]
    )  # fmt: skip
    (row,) = rows
    assert 0 < row["grad_total_rel_diff"] <= 1.25 * 0.021


@cuda
@needs_cuda
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cuda_reduced_dtype_prior_is_close_to_float32(dtype):
    base = build_prior(copy.deepcopy(PRIOR), "cuda")
    low = build_prior({**PRIOR, "dtype": dtype}, "cuda")
    x = (torch.rand(2, 3, 16, 16, device="cuda") * 2 - 1).requires_grad_()
    t = torch.tensor([3, 70], device="cuda")
    results = []
    for prior in (base, low):
        xi = x.detach().clone().requires_grad_()
        eps, h = prior(xi, t, need_h=True)
        (eps.square().mean() + h.square().mean()).backward()
        results.append((eps.detach(), xi.grad))
    for ours, ref in zip(results[1], results[0]):
        assert 0 < ((ours - ref).norm() / ref.norm()).item() < 0.06


# -- 4. exact float32 unless TF32 is asked for --------------------------------------------------
def knob_values() -> dict[str, str]:
    return {name: knob.fp32_precision for name, knob in precision_knobs().items()}


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("allow_tf32", [False, True])
def test_prior_sets_float32_precision_in_forward_and_backward_and_restores_it(
    allow_tf32, checkpointing
):
    prior = build_prior({**PRIOR, "allow_tf32": allow_tf32, "checkpointing": checkpointing})
    conv = torso_convs(prior)[2]
    during: dict[str, list[dict[str, str]]] = {"forward": [], "backward": []}
    conv.register_forward_hook(lambda *_: during["forward"].append(knob_values()))
    conv.register_full_backward_hook(lambda *_: during["backward"].append(knob_values()))
    knobs = precision_knobs()
    before = knob_values()
    try:
        knobs["cuda.matmul"].fp32_precision = "tf32"  # a process that opted into TF32
        knobs["mkldnn.matmul"].fp32_precision = "tf32"
        outside = knob_values()
        x = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_()
        eps, h = prior(x, torch.tensor([3, 70]), need_h=True)
        assert knob_values() == outside  # restored after the forward
        (eps.square().mean() + h.square().mean()).backward()
        assert knob_values() == outside  # and after the backward
    finally:
        for name, value in before.items():
            knobs[name].fp32_precision = value
    assert during["forward"] and during["backward"]
    for values in during["forward"] + during["backward"]:
        if allow_tf32:
            assert values["cuda.matmul"] == values["cudnn.conv"] == "tf32"
        else:
            assert set(values.values()) == {"ieee"}


@cuda
@needs_cuda
def test_cuda_float32_prior_is_exact_unless_tf32_is_allowed():
    options = {**PRIOR, "unet": {**TINY_PRIOR_UNET, "num_channels": 64, "num_head_channels": 32}}
    exact, tf32 = build_prior(options, "cuda"), build_prior({**options, "allow_tf32": True}, "cuda")
    reference = build_prior(options, "cuda").double()
    x = torch.rand(2, 3, 16, 16, device="cuda") * 2 - 1
    t = torch.tensor([3, 70], device="cuda")
    expected, _ = reference(x.double(), t)
    with torch.no_grad():
        errors = [
            ((p(x, t)[0].double() - expected).norm() / expected.norm()).item()
            for p in (exact, tf32)
        ]
    assert errors[0] < 1e-5  # IEEE float32
    assert errors[1] > 10 * errors[0]  # TF32 really was used when allowed


# -- 5. channels_last by device -----------------------------------------------------------------
def test_channels_last_default_depends_on_the_device():
    assert default_channels_last("cpu") is True and default_channels_last(None) is True
    assert default_channels_last("cuda") is False and default_channels_last("cuda:1") is False
    cpu_loss = build_loss({"type": "DiffLoss", "prior": copy.deepcopy(PRIOR), "device": "cpu"})
    assert cpu_loss.prior.channels_last is True
    meta_loss = build_loss({"type": "DiffLoss", "prior": copy.deepcopy(PRIOR), "device": "meta"})
    assert meta_loss.prior.channels_last is False
    explicit = {**PRIOR, "channels_last": True}
    assert build_loss({"type": "DiffLoss", "prior": explicit, "device": "meta"}).prior.channels_last


# -- 6. GradScaler state, dist_params, checkpointing without RNG --------------------------------
def test_float16_amp_run_resumes_exactly_with_its_grad_scaler(tmp_path):
    def options(name: str) -> Path:
        opt = train_options(tmp_path / name, name=name, amp=True, amp_dtype="float16")
        # A large loss weight: at the initial scale 2^16 the float16 gradients overflow, so the
        # scaler skips steps and backs off during the first iterations.
        opt["train"]["pixel_opt"]["loss_weight"] = 20.0
        opt["logger"]["save_checkpoint_freq"] = 3
        return write_options(tmp_path / f"{name}.yml", opt)

    assert train_main(["-opt", str(options("straight"))]) == 0
    resumed = options("resumed")
    assert train_main(["-opt", str(resumed), "--set", "train.total_iter=3"]) == 0
    state = load_training_state(tmp_path / "resumed/experiments/resumed/training_states/3.state")
    # The scaler has backed off: a resume that forgot it would skip steps again.
    assert state["grad_scaler"]["scale"] < 2.0**16
    assert train_main(["-opt", str(resumed), "--auto_resume"]) == 0
    a = torch.load(tmp_path / "straight/experiments/straight/models/net_g_6.pth")["params"]
    b = torch.load(tmp_path / "resumed/experiments/resumed/models/net_g_6.pth")["params"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dist_params_reach_init_dist(tmp_path, monkeypatch):
    """The options are read before the process group starts, so that their dist_params
    (backend, port) reach init_dist."""
    calls = []

    def fake_init_dist(launcher, backend=None, port=29500):
        calls.append((launcher, backend, port))
        raise SystemExit(0)  # stop before training

    monkeypatch.setattr(train_module, "init_dist", fake_init_dist)
    opt = train_options(tmp_path)
    opt["dist_params"] = {"backend": "gloo", "port": 29611}
    path = write_options(tmp_path / "opt.yml", opt)
    with pytest.raises(SystemExit):
        train_main(["-opt", str(path), "--launcher", "slurm"])
    assert calls == [("slurm", "gloo", 29611)]


@pytest.mark.parametrize(
    ("training", "dropout", "preserve"),
    [(False, 0.1, False), (True, 0.0, False), (True, 0.1, True)],
)
def test_checkpointing_saves_rng_state_only_for_active_dropout(
    monkeypatch, training, dropout, preserve
):
    calls = []
    real = unet_module.checkpoint

    def spy(*args, **kwargs):
        calls.append(kwargs.get("preserve_rng_state", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(unet_module, "checkpoint", spy)
    unet = unet_module.create_unet(**{**TINY_PRIOR_UNET, "dropout": dropout}).train(training)
    unet.enable_checkpointing(unet.num_levels)
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    unet(x, torch.tensor([4])).sum().backward()
    assert calls and set(calls) == {preserve}


# -- 7. benchmarks: one prior at a time, out-of-memory as a row ---------------------------------
TINY_BENCH = [
    "--channels", "32", "--mult", "1,2", "--res-blocks", "1", "--attention-res", "8",
    "--head-channels", "16", "--prior-size", "16", "--size", "16", "--batch", "1",
    "--repeats", "1", "--warmup", "0", "--no-isolate", "--threads", "2",
]  # fmt: skip


def test_bench_diffloss_sequential_frees_each_prior_and_reports_out_of_memory(
    tmp_path, monkeypatch
):
    script = load_script("bench_diffloss")
    real = script.build_step
    cached_at_build = []

    def build_step(args, variant, device):
        cached_at_build.append(len(prior_module._SHARED))
        if variant == "ckpt":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(args, variant, device)

    monkeypatch.setattr(script, "build_step", build_step)
    out = tmp_path / "bench.json"
    variants = "none,default,ckpt,optimised"
    report = script.main(
        [*TINY_BENCH, "--schedule", "sequential", "--variants", variants, "--json", str(out)]
    )
    # One build per variant (its memory measured on the same step), each with no prior left
    # resident by the ones before.
    assert cached_at_build == [0] * 4
    assert list(report["results"]) == ["none", "default", "optimised"]
    assert report["skipped"] == {
        "ckpt": "out of memory: CUDA out of memory. Tried to allocate 20.00 GiB"
    }
    written = json.loads(out.read_text())
    assert "partial" not in written and list(written["results"]) == list(report["results"])
    assert report["results"]["default"]["loss_rel_diff"] == 0.0
    assert 0 < report["results"]["optimised"]["grad_rel_diff"] < 0.2


def test_bench_prior_reports_out_of_memory_as_a_row(tmp_path, monkeypatch):
    script = load_script("bench_prior")
    real = script.measure_variant

    def measure_variant(args, name):
        if name == "checkpointing":
            raise torch.OutOfMemoryError("CUDA out of memory.")
        return real(args, name)

    monkeypatch.setattr(script, "measure_variant", measure_variant)
    out = tmp_path / "prior.json"
    index = TINY_BENCH.index("--prior-size")
    flags = TINY_BENCH[:index] + TINY_BENCH[index + 2 :]  # bench_prior has no --prior-size
    script.main([*flags, "--variants", "sdpa,checkpointing,bf16", "--json", str(out)])
    rows = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["checkpointing"]["skipped"] == "out of memory: CUDA out of memory."
    # bf16 stores the torso's convolutions in 2 bytes per parameter instead of 4.
    prior = build_prior(script.prior_options(script.parse_args(flags), {}))
    torso = sum(p.numel() for m in torso_convs(prior) for p in m.parameters())
    assert rows["sdpa"]["weight_bytes"] - rows["bf16"]["weight_bytes"] == 2 * torso


# -- the one-command GPU check ------------------------------------------------------------------
def test_gpu_check_dry_run_on_the_cpu_writes_the_report(tmp_path):
    env = {**os.environ, "GPU_CHECK_DRY_RUN": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        ["bash", str(REPO / "scripts/gpu_check.sh"), str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "out/gpu_check.json").read_text())
    table = (tmp_path / "out/gpu_check.md").read_text()
    assert report["dry_run"] is True
    assert {"cuda_tests", "bench_prior", "bench_diffloss"} <= set(report["stages"])
    assert set(report["targets"]) == {"diffloss_of_bf16_matmul", "whole_step_peak", "restored_pass"}
    for target in report["targets"].values():
        assert target["status"] in ("pass", "fail", "not measured")
    assert "| variant |" in table and "default" in table
    # No GPU here: the CUDA-marked tests are reported as skipped, with the reason printed.
    assert "skipped" in result.stdout
