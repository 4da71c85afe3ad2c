"""Option files of BasicSR, Restormer / MB-TaylorFormer and FSDGN: mapped keys do what they do
there, inert keys are logged once, unimplemented keys stop the run naming key and codebase."""

from __future__ import annotations

import copy
import math
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from diffsr.losses import LOSS_REGISTRY
from diffsr.models import build_model
from diffsr.models.mixing import Mixup
from diffsr.train import main as train_main
from diffsr.utils.dialects import translate
from diffsr.utils.options import OptionError, _fill_paths, validate_options
from diffsr.utils.registry import ARCH_REGISTRY
from tests.helpers.fixtures import make_paired_folder, read_jsonl, train_options


@ARCH_REGISTRY.register()
class H6MultipleOf8Net(nn.Module):
    """Accepts only sides that are multiples of 8 (like a windowed transformer); ``upscale``
    nearest-neighbour upsamples; adds a learnable offset."""

    def __init__(self, upscale: int = 1) -> None:
        super().__init__()
        self.upscale = upscale
        self.offset = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2] % 8 == 0 and x.shape[-1] % 8 == 0, x.shape
        return F.interpolate(x, scale_factor=self.upscale, mode="nearest") + self.offset


# BasicSR's EDSR constructor signature (basicsr/archs/edsr_arch.py), a tiny body of our own.
SR_ARCH_SOURCE = """
import torch
import torch.nn as nn
from diffsr.utils.registry import ARCH_REGISTRY


@ARCH_REGISTRY.register()
class H6TinyEDSR(nn.Module):
    def __init__(self, num_in_ch, num_out_ch, num_feat=64, num_block=16, upscale=4,
                 res_scale=1, img_range=255.0, rgb_mean=(0.4488, 0.4371, 0.4040)):
        super().__init__()
        self.img_range = img_range
        self.register_buffer("mean", torch.tensor(rgb_mean).view(1, 3, 1, 1))
        self.head = nn.Conv2d(num_in_ch, num_feat, 3, padding=1)
        self.body = nn.Sequential(*[nn.Conv2d(num_feat, num_feat, 3, padding=1) for _ in range(num_block)])
        self.res_scale = res_scale
        self.up = nn.Sequential(nn.Conv2d(num_feat, num_feat * upscale**2, 3, padding=1), nn.PixelShuffle(upscale))
        self.tail = nn.Conv2d(num_feat, num_out_ch, 3, padding=1)

    def forward(self, x):
        x = (x - self.mean) * self.img_range
        x = self.head(x)
        x = x + self.res_scale * self.body(x)
        return self.tail(self.up(x)) / self.img_range + self.mean


@ARCH_REGISTRY.register()
class H6TinyVGGStyleDiscriminator(nn.Module):
    def __init__(self, num_in_ch, num_feat, input_size=128):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(num_in_ch, num_feat, 4, 2, 1), nn.LeakyReLU(0.2))
        self.head = nn.Linear(num_feat, 1)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))
"""


def _sr_arch_file() -> Path:
    """One file per process: a registered name may be defined only once."""
    path = Path(tempfile.gettempdir()) / f"diffsr_tests_{os.getpid()}" / "h6_tiny_edsr.py"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SR_ARCH_SOURCE)
    return path


def _checked(tmp_path: Path, opt: dict) -> dict:
    opt = validate_options(opt, str(tmp_path / "x.yml"))
    _fill_paths(opt)
    return opt


def _model(tmp_path: Path, **train_changes):
    return build_model(_checked(tmp_path, train_options(tmp_path, **train_changes)))


# ------------------------------------------------------------------------ model_type names
@pytest.mark.parametrize(
    ("name", "target", "all_outputs"),
    [
        ("SRModel", "RestorationModel", False),
        ("SwinIRModel", "RestorationModel", False),
        ("SRGANModel", "RestorationGANModel", False),
        ("ESRGANModel", "RelativisticGANModel", False),
        ("ImageCleanModel", "RestorationModel", True),
        ("DehazeModel", "RestorationModel", True),
    ],
)
def test_foreign_model_types_map_to_diffsr_models(tmp_path: Path, name, target, all_outputs):
    opt = train_options(tmp_path)
    opt["model_type"] = name
    mapped, notes = translate(opt)
    assert mapped["model_type"] == target
    assert any(note.startswith(f"model_type {name} (") for note in notes)
    assert (mapped["train"]["pixel_opt"].get("output") == "all") is all_outputs


def test_swinir_model_pads_to_the_network_window(tmp_path: Path):
    opt = train_options(tmp_path)
    opt.update(model_type="SwinIRModel", network_g={"type": "H6MultipleOf8Net"})
    opt["network_g"]["window_size"] = 8  # SwinIR's argument; our stand-in does not take it
    mapped, _ = translate(opt)
    assert mapped["val"]["window_size"] == 8


def test_dehaze_model_sums_the_loss_over_both_outputs(tmp_path: Path):
    """FSDGN's DehazeModel: cri_pix(output, gt) + cri_pix(output1, gt)."""
    opt = train_options(tmp_path, pixel_opt={"type": "CharbonnierLoss"})
    opt["model_type"] = "DehazeModel"
    model = build_model(_checked(tmp_path, opt))
    gen = torch.Generator().manual_seed(3)
    outputs = [torch.rand(2, 3, 8, 8, generator=gen) for _ in range(2)]
    model.gt = torch.rand(2, 3, 8, 8, generator=gen)
    model.lq = model.gt
    total, _ = model.compute_losses(outputs)
    want = sum(torch.sqrt((o - model.gt) ** 2 + 1e-12).mean() for o in outputs)
    assert total.item() == pytest.approx(want.item(), rel=1e-6)


def test_esrgan_model_uses_the_relativistic_average_gan_loss(tmp_path: Path):
    """BasicSR's ESRGANModel formulas (basicsr/models/esrgan_model.py), written out here."""
    opt = train_options(
        tmp_path, gan_opt={"type": "GANLoss", "gan_type": "vanilla", "loss_weight": 0.1}
    )
    opt["model_type"] = "ESRGANModel"
    opt["network_d"] = {
        "type": "PatchDiscriminator",
        "num_feat": 4,
        "num_layers": 1,
        "spectral_norm": False,  # its power iteration would change D between the calls
    }
    model = build_model(_checked(tmp_path, opt))
    gen = torch.Generator().manual_seed(6)
    model.gt = torch.rand(2, 3, 16, 16, generator=gen)
    final = torch.rand(2, 3, 16, 16, generator=gen)
    real, fake = model.net_d(model.gt), model.net_d(final)
    bce = F.binary_cross_entropy_with_logits
    g_want = (
        0.1
        * (
            bce(real - fake.mean(), torch.zeros_like(real))
            + bce(fake - real.mean(), torch.ones_like(fake))
        )
        / 2
    )
    d_real_want = 0.5 * bce(real - fake.mean(), torch.ones_like(real))
    d_fake_want = 0.5 * bce(fake - real.mean(), torch.zeros_like(fake))
    assert model.generator_adversarial(final).item() == pytest.approx(g_want.item(), rel=1e-6)
    d_real, d_fake = model.discriminator_losses(final)
    assert d_real.item() == pytest.approx(d_real_want.item(), rel=1e-6)
    assert d_fake.item() == pytest.approx(d_fake_want.item(), rel=1e-6)
    model.feed_data({"lq": final, "gt": model.gt})
    log = model.optimize_parameters(1)
    assert {"l_gan", "l_d_real", "l_d_fake"} <= set(log)


# --------------------------------------------------------------------------- grad clip
def test_use_grad_clip_clips_the_gradient_norm_at_0_01(tmp_path: Path):
    model = _model(tmp_path, use_grad_clip=True, optim_g={"type": "SGD", "lr": 1.0})
    assert model.opt["train"]["grad_clip"] == 0.01
    net = model.net_g
    gen = torch.Generator().manual_seed(0)
    model.lq = torch.rand(2, 3, 16, 16, generator=gen)
    model.gt = torch.rand(2, 3, 16, 16, generator=gen)
    # independent reference: the unclipped gradient of the same loss on a copy of the network
    ref = copy.deepcopy(net)
    F.mse_loss(ref(model.lq), model.gt).backward()
    grads = [p.grad.detach().clone() for p in ref.parameters()]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    assert norm > 0.1  # so that clipping acts
    before = [p.detach().clone() for p in net.parameters()]
    model.optimize_parameters(1)
    steps = [b - p.detach() for b, p in zip(before, net.parameters())]  # SGD lr 1: the gradient
    assert torch.sqrt(sum((s**2).sum() for s in steps)).item() == pytest.approx(0.01, rel=1e-4)
    for step, grad in zip(steps, grads):
        # parameter differences: float32 rounding of the parameters (~0.3) bounds the precision
        torch.testing.assert_close(step, grad * (0.01 / norm), rtol=1e-3, atol=5e-8)


# --------------------------------------------------------------------------------- mixup
def _constant_batch(values: list[float], size: int = 4) -> torch.Tensor:
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 3, size, size).clone()


def _solve_mix(mixed: torch.Tensor, values: list[float]) -> tuple[float, list[int]]:
    """lam and the permutation with mixed_i = lam * v_i + (1 - lam) * v_perm(i) (B >= 2)."""
    import itertools

    m = [float(mixed[i, 0, 0, 0]) for i in range(len(values))]
    for perm in itertools.permutations(range(len(values))):
        i = next((k for k in range(len(values)) if perm[k] != k), None)
        if i is None:
            continue
        lam = (m[i] - values[perm[i]]) / (values[i] - values[perm[i]])
        if all(
            abs(lam * values[k] + (1 - lam) * values[perm[k]] - m[k]) < 1e-5 for k in range(len(m))
        ):
            return lam, list(perm)
    raise AssertionError(f"{m} is no mixup of {values}")


def test_mixup_mixes_gt_and_lq_with_one_lam_and_one_permutation():
    values = [0.0, 0.25, 0.5, 1.0]
    gt = _constant_batch(values)
    lq = _constant_batch([2 * v + 1 for v in values], size=2)  # another size (SR)
    torch.manual_seed(1)
    mixup = Mixup(mixup_beta=1.2, use_identity=False)
    lams = []
    for _ in range(300):
        new_gt, new_lq = mixup(gt, lq)
        if torch.equal(new_gt, gt):  # the permutation may be the identity (1 in 24)
            continue
        lam, perm = _solve_mix(new_gt, values)
        lq_values = [2 * v + 1 for v in values]
        want_lq = [lam * lq_values[k] + (1 - lam) * lq_values[perm[k]] for k in range(4)]
        torch.testing.assert_close(new_lq, _constant_batch(want_lq, size=2), atol=1e-5, rtol=0)
        assert lam == pytest.approx(mixup.last_lam, abs=1e-5)
        lams.append(mixup.last_lam)
    # lam ~ Beta(1.2, 1.2): Kolmogorov-Smirnov against scipy's distribution
    assert len(lams) > 250
    assert scipy.stats.kstest(lams, scipy.stats.beta(1.2, 1.2).cdf).pvalue > 0.01


def test_mixup_use_identity_leaves_half_of_the_batches():
    gt = _constant_batch([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    torch.manual_seed(2)
    mixup = Mixup(1.2, use_identity=True)
    kept = sum(mixup(gt, gt)[0].equal(gt) for _ in range(400))
    # P(kept) = 1/2 + 1/2 * P(identity permutation of 8) ~= 0.5000124
    assert abs(kept / 400 - 0.5) < 4 * math.sqrt(0.25 / 400)
    assert Mixup(1.2, use_identity=False).use_identity is False


def test_model_trains_on_mixed_pairs(tmp_path: Path):
    mixing = {"mixup": True, "mixup_beta": 1.2, "use_identity": False}
    model = _model(tmp_path, mixing_augs=mixing)
    gt = _constant_batch([0.0, 1.0], size=16)
    torch.manual_seed(5)
    for _ in range(30):  # until the drawn permutation is not the identity (1 in 2)
        model.feed_data({"lq": gt.clone(), "gt": gt.clone()})
        model.forward_train()
        if not torch.equal(model.gt, gt):
            break
    else:
        pytest.fail("30 batches and none was mixed")
    lam = model.mixing.last_lam
    torch.testing.assert_close(model.gt, _constant_batch([1 - lam, lam], size=16))
    torch.testing.assert_close(model.lq, model.gt)
    assert _model(tmp_path / "off").mixing is None  # mixing_augs absent: off


# --------------------------------------------------------------------------- window_size
@pytest.mark.parametrize("upscale", [1, 2])
def test_val_window_size_pads_and_crops_back(tmp_path: Path, upscale: int):
    opt = train_options(tmp_path)
    opt["network_g"] = {"type": "H6MultipleOf8Net", "upscale": upscale}
    opt["val"]["window_size"] = 8
    model = build_model(_checked(tmp_path, opt))
    model.lq = torch.rand(1, 3, 13, 10)
    out = model.test()
    assert out.shape == (1, 3, 13 * upscale, 10 * upscale)
    want = F.interpolate(model.lq, scale_factor=upscale, mode="nearest")
    torch.testing.assert_close(out, want)
    opt["val"]["window_size"] = None
    unpadded = build_model(_checked(tmp_path, opt))
    unpadded.lq = model.lq
    with pytest.raises(AssertionError):  # without padding the network refuses the size
        unpadded.test()


# ------------------------------------------------------------------------ inert and errors
def test_inert_keys_are_removed_and_noted_once(tmp_path: Path):
    opt = train_options(tmp_path)
    opt["num_gpu"] = 8
    opt["dist_params"] = {"backend": "nccl", "port": 29500}
    opt["datasets"]["train"]["prefetch_mode"] = None
    opt["datasets"]["val"]["prefetch_mode"] = None
    opt["val"].update(rgb2bgr=True, use_image=True, max_minibatch=8)
    opt["path"]["ignore_resume_networks"] = None
    checked = validate_options(opt, "x.yml")
    notes = checked["dialect_notes"]
    inert = ("num_gpu: 8", "val.rgb2bgr", "val.use_image", "val.max_minibatch")
    for key in (*inert, "path.ignore_resume_networks: None"):
        assert sum(note.startswith(key) for note in notes) == 1, key
    (prefetch,) = [n for n in notes if "prefetch_mode" in n]
    assert "datasets.train.prefetch_mode" in prefetch and "datasets.val.prefetch_mode" in prefetch
    assert all("accepted, no effect" in n for n in notes)
    assert "num_gpu" not in checked
    assert checked["dist_params"] == {"backend": "nccl", "port": 29500}  # read by init_dist
    assert not {"rgb2bgr", "use_image", "max_minibatch"} & set(checked["val"])


def test_num_gpu_0_means_cpu(tmp_path: Path):
    opt = train_options(tmp_path)
    del opt["device"]
    opt["num_gpu"] = 0
    checked = validate_options(opt, "x.yml")
    assert checked["device"] == "cpu"
    assert any(
        n.startswith("num_gpu: 0 (BasicSR) runs as device: cpu") for n in checked["dialect_notes"]
    )


def _set(opt: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = opt
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        (
            "val.rgb2bgr",
            False,
            r"val\.rgb2bgr: False \(Restormer / MB-TaylorFormer\) is not implemented",
        ),
        ("val.use_image", False, r"val\.use_image: False \(Restormer / MB-TaylorFormer\)"),
        ("model_type", "HiFaceGANModel", r"'HiFaceGANModel' \(BasicSR\) is not implemented"),
        ("model_type", "EDVRModel", r"'EDVRModel' \(BasicSR\) is not implemented.*video"),
        (
            "train.scheduler",
            {"type": "CosineAnnealingWarmupRestarts"},
            r"train\.scheduler\.type: 'CosineAnnealingWarmupRestarts' \(Restormer",
        ),
        (
            "train.perceptual_opt",
            {"type": "PerceptualLoss", "layer_weights": {"conv5_4": 1}, "perceptual_weight": 1},
            r"train\.perceptual_opt\.vgg_type is 'vgg19' \(BasicSR.*VGG16",
        ),
        (
            "train.perceptual_opt",
            {
                "type": "PerceptualLoss",
                "layer_weights": {"conv3_3": 1},
                "vgg_type": "vgg16",
                "style_weight": 1,
            },
            r"style_weight > 0 \(BasicSR\)",
        ),
        (
            "train.perceptual_opt",
            {
                "type": "PerceptualLoss",
                "layer_weights": {"conv3_3": 1},
                "vgg_type": "vgg16",
                "range_norm": True,
            },
            r"range_norm: true \(BasicSR\)",
        ),
        ("train.use_grad_clip", "yes", r"train\.use_grad_clip must be true or false"),
        (
            "train.gan_opt",
            {"type": "GANLoss", "gan_type": "wgan_softplus"},
            r"train\.gan_opt\.gan_type: 'wgan_softplus' \(BasicSR\)",
        ),
        (
            "path.ignore_resume_networks",
            ["network_g"],
            r"ignore_resume_networks: \['network_g'\] \(BasicSR\)",
        ),
        ("train.frobnicate", 1, r"unknown key 'train\.frobnicate'"),
    ],
)
def test_unimplemented_keys_stop_at_load_naming_key_and_codebase(
    tmp_path: Path, dotted, value, message
):
    opt = train_options(tmp_path)
    _set(opt, dotted, value)
    with pytest.raises(OptionError, match=message) as info:
        validate_options(opt, "their.yml")
    assert str(info.value).startswith("their.yml: ")


def test_use_grad_clip_and_grad_clip_together_is_an_error(tmp_path: Path):
    opt = train_options(tmp_path, use_grad_clip=True, grad_clip=1.0)
    with pytest.raises(OptionError, match="both given"):
        validate_options(opt, "x.yml")


def test_basicsr_perceptual_arguments_map_to_diffsr(tmp_path: Path):
    block = {
        "type": "PerceptualLoss",
        "layer_weights": {"conv3_3": 0.5},
        "vgg_type": "vgg16",
        "use_input_norm": False,
        "range_norm": False,
        "perceptual_weight": 0.25,
        "style_weight": 0,
        "criterion": "l1",
        "vgg_path": None,
        "allow_random_init": True,
    }
    opt = train_options(tmp_path, perceptual_opt=block)
    checked = validate_options(opt, "x.yml")
    assert checked["train"]["perceptual_opt"] == {
        "type": "PerceptualLoss",
        "layer_weights": {"conv3_3": 0.5},
        "criterion": "l1",
        "vgg_path": None,
        "allow_random_init": True,
        "loss_weight": 0.25,
        "normalize_input": False,
    }


def test_fsdgn_phase_and_amplitude_losses(tmp_path: Path):
    """FSDGN's PhaseLoss / AmplitudeLoss: L1 of rfft2 phase / amplitude, on both outputs."""
    opt = train_options(
        tmp_path, Phase_opt={"type": "PhaseLoss"}, Amplitude_opt={"type": "AmplitudeLoss"}
    )
    opt["model_type"] = "DehazeModel"
    train = validate_options(opt, "x.yml")["train"]
    gen = torch.Generator().manual_seed(4)
    outputs = [torch.rand(2, 3, 8, 8, generator=gen) for _ in range(2)]
    gt = torch.rand(2, 3, 8, 8, generator=gen)
    spectra = [torch.fft.rfft2(o, norm="backward") for o in outputs]
    target = torch.fft.rfft2(gt, norm="backward")
    want = {
        "Phase_opt": sum((s.angle() - target.angle()).abs().mean() for s in spectra),
        "Amplitude_opt": sum((s.abs() - target.abs()).abs().mean() for s in spectra),
    }
    for key, value in want.items():
        block = {k: v for k, v in train[key].items() if k != "output"}
        loss = LOSS_REGISTRY.build(block)
        assert loss(outputs, gt).item() == pytest.approx(value.item(), rel=1e-5), key


def test_restormer_param_key_is_param_key_g(tmp_path: Path):
    opt = train_options(tmp_path)
    opt["path"]["param_key"] = "params_ema"
    assert validate_options(opt, "x.yml")["path"]["param_key_g"] == "params_ema"


# ----------------------------------------------------------------- two-iteration runs
def _sr_data(root: Path, count: int, seed: int) -> tuple[Path, Path]:
    """GT 32 x 32, LQ its 16 x 16 bicubic downscale (BasicSR's X2 layout)."""
    lq_dir, gt_dir = make_paired_folder(root, count, size=32, seed=seed)
    for path in sorted(gt_dir.glob("*.png")):
        gt = cv2.imread(str(path))
        cv2.imwrite(
            str(lq_dir / path.name), cv2.resize(gt, (16, 16), interpolation=cv2.INTER_CUBIC)
        )
    return lq_dir, gt_dir


def _run(tmp_path: Path, monkeypatch, text: str, **paths) -> tuple[Path, list[dict]]:
    """Write ``text`` (a foreign option file, paths filled in) and train it from ``tmp_path``."""
    monkeypatch.chdir(tmp_path)  # experiments/<name> lands in tmp_path, as in BasicSR
    path = tmp_path / "their.yml"
    path.write_text(text.format(**{k: str(v) for k, v in paths.items()}))
    assert train_main(["-opt", str(path)]) == 0
    name = yaml.safe_load(text.split("\n", 1)[0])["name"]
    root = tmp_path / "experiments" / name
    return root, read_jsonl(root / "metrics.jsonl")


BASICSR_SR = """name: 201_TinyEDSR_Mx2
model_type: SRModel
scale: 2
num_gpu: 0  # set num_gpu: 0 for cpu mode
manual_seed: 10
imports: [{arch}]

datasets:
  train:
    name: DIV2K
    type: PairedImageDataset
    dataroot_gt: {train_gt}
    dataroot_lq: {train_lq}
    filename_tmpl: '{{}}'
    io_backend:
      type: disk
    gt_size: 16
    use_hflip: true
    use_rot: true
    num_worker_per_gpu: 0
    batch_size_per_gpu: 2
    dataset_enlarge_ratio: 1
    prefetch_mode: ~
  val:
    name: Set5
    type: PairedImageDataset
    dataroot_gt: {val_gt}
    dataroot_lq: {val_lq}
    io_backend:
      type: disk

network_g:
  type: H6TinyEDSR
  num_in_ch: 3
  num_out_ch: 3
  num_feat: 8
  num_block: 1
  upscale: 2
  res_scale: 1
  img_range: 255.
  rgb_mean: [0.4488, 0.4371, 0.4040]

path:
  pretrain_network_g: ~
  strict_load_g: true
  resume_state: ~

train:
  ema_decay: 0.999
  optim_g:
    type: Adam
    lr: !!float 1e-4
    weight_decay: 0
    betas: [0.9, 0.99]
  scheduler:
    type: MultiStepLR
    milestones: [2]
    gamma: 0.5
  total_iter: 2
  warmup_iter: -1  # no warm up
  pixel_opt:
    type: L1Loss
    loss_weight: 1.0
    reduction: mean

val:
  val_freq: !!float 2
  save_img: true
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: 2
      test_y_channel: false

logger:
  print_freq: 1
  save_checkpoint_freq: !!float 2
  use_tb_logger: false
  wandb:
    project: ~
    resume_id: ~

dist_params:
  backend: nccl
  port: 29500
"""


def test_basicsr_sr_file_trains_two_iterations(tmp_path: Path, monkeypatch):
    train_lq, train_gt = _sr_data(tmp_path / "train", 4, seed=1)
    val_lq, val_gt = _sr_data(tmp_path / "val", 1, seed=2)
    root, records = _run(
        tmp_path,
        monkeypatch,
        BASICSR_SR,
        arch=_sr_arch_file(),
        train_gt=train_gt,
        train_lq=train_lq,
        val_gt=val_gt,
        val_lq=val_lq,
    )
    losses = [r for r in records if "l_pixel" in r]
    assert [r["iter"] for r in losses] == [1, 2]
    assert [r["lr"] for r in losses] == pytest.approx([1e-4, 0.5e-4])
    (val,) = [r for r in records if "psnr" in r]
    assert val["iter"] == 2 and np.isfinite(val["psnr"])
    (saved,) = (root / "visualization").rglob("*_2.png")
    assert cv2.imread(str(saved)).shape == (32, 32, 3)  # the x2 output of the 16 x 16 LQ
    assert set(torch.load(root / "models" / "net_g_2.pth")) == {"params", "params_ema"}
    log = next(root.glob("train_*.log")).read_text()
    for key in ("num_gpu: 0 (BasicSR) runs as device: cpu", "prefetch_mode"):
        assert log.count(key) == 1, key


FSDGN_DEHAZE = """name: DWT
model_type: DehazeModel
scale: 1
num_gpu: 0  # set num_gpu: 0 for cpu mode
manual_seed: 10

datasets:
  train:
    name: VDH
    type: PairedImageDataset
    dataroot_gt: {train_gt}
    dataroot_lq: {train_lq}
    filename_tmpl: '{{}}'
    flag: False
    io_backend:
      type: disk
    gt_sizeH: 16
    gt_sizeW: 16
    use_flip: true
    use_rot: true
    use_shuffle: true
    num_worker_per_gpu: 0
    batch_size_per_gpu: 2
    dataset_enlarge_ratio: 1
    prefetch_mode: ~
  val:
    name: indoor
    type: PairedImageDataset
    dataroot_gt: {val_gt}
    dataroot_lq: {val_lq}
    gt_sizeH: 16
    gt_sizeW: 16
    flag: true
    io_backend:
      type: disk

network_g:
  type: fusion_net

path:
  pretrain_network_g: ~
  strict_load_g: true
  resume_state: ~

train:
  ema_decay: 0.999
  optim_g:
    type: Adam
    lr: !!float 1e-4
    weight_decay: 0
    betas: [0.9, 0.99]
  scheduler:
    type: CosineAnnealingRestartLR
    periods: [1, 1]
    restart_weights: [1, 0.5]
    eta_min: !!float 1e-7
  total_iter: 2
  warmup_iter: -1  # no warm up
  pixel_opt:
    type: CharbonnierLoss
  Phase_opt:
    type: PhaseLoss
  Amplitude_opt:
    type: AmplitudeLoss

val:
  val_freq: !!float 2e0
  save_img: false
  metrics:
    ssim:
      type: calculate_ssim
      crop_border: 0
      test_y_channel: false
    psnr:
      type: calculate_psnr
      crop_border: 0
      test_y_channel: false

logger:
  print_freq: 1
  save_checkpoint_freq: !!float 2
  use_tb_logger: false
  wandb:
    project: ~
    resume_id: ~

dist_params:
  backend: nccl
  port: 29500
"""


def test_fsdgn_file_trains_two_iterations(tmp_path: Path, monkeypatch):
    train_lq, train_gt = make_paired_folder(tmp_path / "train", 4, size=24, seed=1)
    val_lq, val_gt = make_paired_folder(tmp_path / "val", 1, size=24, seed=2)
    _, records = _run(
        tmp_path,
        monkeypatch,
        FSDGN_DEHAZE,
        train_gt=train_gt,
        train_lq=train_lq,
        val_gt=val_gt,
        val_lq=val_lq,
    )
    losses = [r for r in records if "l_pixel" in r]
    assert [r["iter"] for r in losses] == [1, 2]
    assert all(r["l_Phase"] > 0 and r["l_Amplitude"] > 0 for r in losses)
    # BasicSR's cosine with restarts: iteration 1 ends period 1 (eta_min), 2 ends period 2
    assert [r["lr"] for r in losses] == pytest.approx([1e-7, 1e-7])
    (val,) = [r for r in records if "psnr" in r]
    assert np.isfinite(val["psnr"]) and 0 < val["ssim"] <= 1


BASICSR_SRGAN_TRAIN = """train:
  ema_decay: 0.999
  optim_g: {{type: Adam, lr: !!float 1e-4, weight_decay: 0, betas: [0.9, 0.99]}}
  optim_d: {{type: Adam, lr: !!float 1e-4, weight_decay: 0, betas: [0.9, 0.99]}}
  scheduler: {{type: MultiStepLR, milestones: [50000], gamma: 0.5}}
  total_iter: 2
  warmup_iter: -1
  pixel_opt: {{type: L1Loss, loss_weight: !!float 1e-2, reduction: mean}}
  perceptual_opt:
    type: PerceptualLoss
    layer_weights: {{'conv3_3': 1}}
    vgg_type: vgg16
    use_input_norm: true
    range_norm: false
    perceptual_weight: 1.0
    style_weight: 0
    criterion: l1
    vgg_path: ~  # diffsr's keys: no VGG16 weight file in the tests
    allow_random_init: true
  gan_opt:
    type: GANLoss
    gan_type: vanilla
    real_label_val: 1.0
    fake_label_val: 0.0
    loss_weight: !!float 5e-3
  net_d_iters: 1
  net_d_init_iters: 1
"""


def test_basicsr_srgan_file_trains_two_iterations(tmp_path: Path, monkeypatch):
    """SRGANModel with BasicSR's perceptual / GAN keys; net_d_init_iters: 1 skips G at iter 1."""
    train_lq, train_gt = _sr_data(tmp_path / "train", 4, seed=1)
    head, rest = BASICSR_SR.split("train:\n  ema_decay", 1)
    text = head + BASICSR_SRGAN_TRAIN + rest[rest.index("\nval:") :]
    text = text.replace("model_type: SRModel", "model_type: SRGANModel")
    text = text.replace("name: 201_TinyEDSR_Mx2", "name: 001_TinyMSRGAN_x2")
    discriminator = "network_d: {{type: H6TinyVGGStyleDiscriminator, num_in_ch: 3, num_feat: 4}}"
    text = text.replace("\npath:\n", f"\n{discriminator}\n\npath:\n")
    _, records = _run(
        tmp_path,
        monkeypatch,
        text,
        arch=_sr_arch_file(),
        train_gt=train_gt,
        train_lq=train_lq,
        val_gt=train_gt,
        val_lq=train_lq,
    )
    steps = {r["iter"]: r for r in records if "l_d_real" in r}
    assert "l_pixel" not in steps[1] and "l_gan" not in steps[1]  # D only until net_d_init_iters
    assert {"l_pixel", "l_perceptual", "l_gan", "l_d_real", "l_d_fake"} <= set(steps[2])
