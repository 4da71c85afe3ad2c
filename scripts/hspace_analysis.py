"""h-space analysis (Fig. 2): how much do the principal components of the prior's h-space
change what it generates, for clean, degraded and restored images?

Examples:
    # OpenAI's 256x256 prior; DDIM with 50 steps from t = 500; four perturbation strengths
    python scripts/hspace_analysis.py --preset adm_256_uncond \\
        --checkpoint experiments/pretrained_models/256x256_diffusion_uncond.pt \\
        --resnet-weights experiments/pretrained_models/resnet50-0676ba61.pth \\
        --clean datasets/CUB_200_2011/images --degraded datasets/CUB_200_2011_fog3/images \\
        --restored results/cub_fog3/restored/with/images --recursive --limit 100 \\
        --t 500 --sampler ddim --steps 50 --strengths 0.5 1 2 4 --components 1 \\
        --out results/hspace_fog3
    # a tiny random prior and ResNet (pipeline check only; the numbers mean nothing)
    python scripts/hspace_analysis.py --unet image_size=32 --unet num_channels=32 \\
        --unet num_res_blocks=1 --unet channel_mult=1,2 --allow-random-init \\
        --clean photos --t 10 --out /tmp/hspace

For every image (centre square, resized to --size, default the prior's image size):
  1. it is diffused to step t: x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps (--t noising steps,
     1..T; eps drawn from --seed and the image's position, so image i of every set gets the
     same noise);
  2. x_0 is generated back from x_t, once per strength alpha (0 and --strengths, as one batch):
     DDIM (deterministic, --steps steps) or ancestral sampling (t steps, noise from --seed,
     the same for every strength). At every UNet call the middle-block output h (C x H' x W')
     is reshaped to C x H'W', decomposed h = U S V^T, and perturbed along its first k
     (--components) principal components:
        scale:  h + alpha * sum_{i<k} s_i u_i v_i^T   (top-k singular values times 1 + alpha)
        add:    h + alpha * s_1 * sum_{i<k} u_i v_i^T (a step in units of the largest one)
     alpha = 0 leaves h unchanged: that generation is the reference;
  3. ResNet-50 features (forward_features, 2048-d) of each perturbed generation are compared
     with those of the reference (--distance l2 or cosine).

Writes under --out:
    strip_<set>.png    the first --strip-images images of a set: input, x_t, then one row per
                       strength (alpha = 0 first)
    distances.csv      set,image,strength,distance for every image and non-zero strength
    summary.md, .csv   mean and standard deviation of the distance per set and strength
    histogram.png      one panel per non-zero strength, one histogram per set (matplotlib,
                       the optional extra 'plots'; --no-plot to skip)

Weights: the prior's checkpoint (or --allow-random-init for a random one) and torchvision's
ResNet-50 file (a CUB classifier.pth from scripts/train_classifier.py also loads); nothing is
downloaded. An unreadable image is named on stderr and skipped (exit status 1).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import csv
import importlib.util
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from diffsr.archs.resnet_arch import ResNet50
from diffsr.data.file_client import list_image_files
from diffsr.data.sampler import derive_seed
from diffsr.diffusion import DiffusionPrior, DiffusionSchedule
from diffsr.diffusion.unet_blocks import float32_region
from diffsr.utils.file_util import atomic_write_text, mkdirs
from diffsr.utils.img_util import imread, imwrite
from diffsr.utils.misc import resolve_device
from diffsr.utils.visualize import label_bar, stack_rows, to_uint8_image
from diffsr.utils.yaml_util import parse_scalar

MODES = ("scale", "add")
SAMPLERS = ("ddim", "ancestral")
SETS = ("clean", "degraded", "restored")
# UNet keywords that are comma-separated lists: "16" must stay the string "16", not an int.
LIST_KEYWORDS = ("channel_mult", "attention_resolutions")
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class AnalysisError(Exception):
    """A problem with the arguments or files, reported as one line (exit status 2)."""


# ----------------------------------------------------------------------------- h-space
def perturb_h(
    h: torch.Tensor, strengths: torch.Tensor, components: int = 1, mode: str = "scale"
) -> torch.Tensor:
    """Move each h along its first ``components`` principal components.

    Args:
        h: (B, C, H', W') middle-block output.
        strengths: (B,) alpha per sample; 0 returns that sample unchanged.
        components: k, the number of leading singular triplets of h (as C x H'W') used.
        mode: ``scale`` (s_i -> (1 + alpha) s_i for i < k) or ``add`` (h + alpha s_1
            sum_{i<k} u_i v_i^T).
    Returns:
        The perturbed h, same shape and dtype (the SVD runs in float32 or float64).
    """
    if mode not in MODES:
        raise ValueError(f"perturbation mode must be one of {MODES}, got {mode!r}.")
    batch, channels, height, width = h.shape
    work = h.reshape(batch, channels, height * width)
    work = work if work.dtype in (torch.float32, torch.float64) else work.float()
    with float32_region(h.device):  # under a bf16/fp16 prior, keep the SVD products exact
        u, s, vh = torch.linalg.svd(work, full_matrices=False)
        k = min(components, s.shape[-1])
        u, s, vh = u[..., :k], s[..., :k], vh[..., :k, :]
        if mode == "scale":
            direction = (u * s[:, None, :]) @ vh
        else:
            direction = s[:, :1, None] * (u @ vh)
        alpha = strengths.to(device=work.device, dtype=work.dtype).view(batch, 1, 1)
        return (work + alpha * direction).reshape(h.shape).to(h.dtype)


@dataclass
class HSpacePerturbation:
    """Context manager: a forward hook on ``unet.middle_block`` that replaces its output h by
    :func:`perturb_h` of it, so the decoder (and a returned h) see the perturbed h.

    The UNet itself is not modified; the hook is removed on exit.
    """

    unet: nn.Module
    strengths: torch.Tensor
    components: int = 1
    mode: str = "scale"
    handle: torch.utils.hooks.RemovableHandle | None = field(default=None, init=False)

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if output.shape[0] != self.strengths.shape[0]:
            raise ValueError(
                f"HSpacePerturbation: {self.strengths.shape[0]} strengths for a batch of "
                f"{output.shape[0]}."
            )
        return perturb_h(output, self.strengths, self.components, self.mode)

    def __enter__(self) -> HSpacePerturbation:
        self.handle = self.unet.middle_block.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


# ----------------------------------------------------------------------------- sampling
def _at(values: torch.Tensor, t: int, like: torch.Tensor) -> torch.Tensor:
    """``values[t]`` (a float64 schedule tensor) as a scalar tensor in ``like``'s dtype."""
    return values[t].to(device=like.device, dtype=like.dtype)


def predicted_x0(
    schedule: DiffusionSchedule, output: torch.Tensor, x: torch.Tensor, t: int
) -> torch.Tensor:
    """x0 from the model's eps (its first 3 channels), clipped to [-1, 1] as ADM samples."""
    steps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    return schedule.predict_x0(x, steps, output[:, :3]).clamp(-1.0, 1.0)


def ddim_step(
    schedule: DiffusionSchedule, output: torch.Tensor, x: torch.Tensor, t: int, t_next: int
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from step ``t`` to ``t_next`` (< t; -1 gives x_0)."""
    x0 = predicted_x0(schedule, output, x, t)
    eps = (_at(schedule.sqrt_recip_alphas_cumprod, t, x) * x - x0) / _at(
        schedule.sqrt_recipm1_alphas_cumprod, t, x
    )
    if t_next < 0:
        return x0
    abar_next = _at(schedule.alphas_cumprod, t_next, x)
    return abar_next.sqrt() * x0 + (1.0 - abar_next).sqrt() * eps


def ancestral_step(
    schedule: DiffusionSchedule,
    output: torch.Tensor,
    x: torch.Tensor,
    t: int,
    noise: torch.Tensor,
) -> torch.Tensor:
    """One ancestral step x_t -> x_{t-1} (no noise at t = 0).

    Variance: learned (6-channel output, ADM's interpolation between the posterior variance
    and beta_t in log space) or, for a 3-channel output, ADM's fixed "large" variance beta_t.
    """
    x0 = predicted_x0(schedule, output, x, t)
    steps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    mean = schedule.posterior_mean(x0, x, steps)
    if t == 0:
        return mean
    posterior = schedule.posterior_variance
    if output.shape[1] == 6:
        min_log = _at(posterior, t, x).log()  # t >= 1: the posterior variance is positive
        max_log = _at(schedule.betas, t, x).log()
        fraction = (output[:, 3:] + 1.0) / 2.0
        log_variance = fraction * max_log + (1.0 - fraction) * min_log
    else:
        log_variance = _at(schedule.betas, t, x).log()
    return mean + torch.exp(0.5 * log_variance) * noise


def ddim_timesteps(t_start: int, steps: int) -> list[int]:
    """``steps`` timesteps from ``t_start - 1`` down to 0, evenly spaced (duplicates merged)."""
    values = np.round(np.linspace(t_start - 1, 0, max(1, min(steps, t_start)))).astype(int)
    return list(dict.fromkeys(int(v) for v in values))


def generate(
    model_fn: ModelFn,
    schedule: DiffusionSchedule,
    x_t: torch.Tensor,
    t_start: int,
    sampler: str = "ddim",
    steps: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Generate x_0 from x_t, the result of ``t_start`` noising steps (timestep t_start - 1).

    ``model_fn(x, t)`` returns the UNet output (B, 3 or 6, H, W). DDIM uses ``steps``
    timesteps (default ``t_start``); ancestral sampling uses all ``t_start`` steps, its noise
    drawn on the CPU from ``seed`` and shared by every sample of the batch.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")
    x = x_t
    if sampler == "ddim":
        timesteps = ddim_timesteps(t_start, steps or t_start)
        for t, t_next in zip(timesteps, [*timesteps[1:], -1]):
            batch_t = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            x = ddim_step(schedule, model_fn(x, batch_t), x, t, t_next)
        return x
    generator = torch.Generator().manual_seed(seed)
    for t in range(t_start - 1, -1, -1):
        batch_t = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        noise = torch.randn((1, *x.shape[1:]), generator=generator).to(x.device, x.dtype)
        x = ancestral_step(schedule, model_fn(x, batch_t), x, t, noise.expand_as(x))
    return x


def prior_model_fn(prior: DiffusionPrior) -> ModelFn:
    """The prior's full UNet output in float32, under its autocast dtype."""

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        enabled = prior.autocast_dtype != torch.float32
        with torch.autocast(x.device.type, dtype=prior.autocast_dtype, enabled=enabled):
            return prior.unet(x, t).float()

    return model_fn


# ----------------------------------------------------------------------------- one image
@dataclass
class ImageResult:
    """Generations (S, 3, H, W in [0, 1], one per strength), the noised input and distances."""

    generations: torch.Tensor
    noised: torch.Tensor
    distances: list[float]


def feature_distance(features: torch.Tensor, reference: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(features, reference[None], dim=1)
    return (features - reference[None]).norm(dim=1)


@torch.no_grad()
def analyse_image(
    prior: DiffusionPrior,
    resnet: nn.Module,
    image: torch.Tensor,
    position: int,
    strengths: Sequence[float],
    args: argparse.Namespace,
) -> ImageResult:
    """Noise, generate back at every strength, and measure the feature distances."""
    device = next(prior.parameters()).device
    x0 = image.to(device)[None] * 2.0 - 1.0
    noise = torch.randn(
        x0.shape, generator=torch.Generator().manual_seed(derive_seed(args.seed, position, 0))
    )
    timestep = torch.full((1,), args.t - 1, device=device, dtype=torch.long)
    x_t = prior.q_sample(x0, timestep, noise.to(device))
    alphas = torch.tensor(strengths, dtype=torch.float32, device=device)
    batch = x_t.expand(len(strengths), -1, -1, -1)
    with HSpacePerturbation(prior.unet, alphas, args.components, args.mode):
        x_0 = generate(
            prior_model_fn(prior),
            prior.schedule,
            batch,
            args.t,
            args.sampler,
            args.steps,
            derive_seed(args.seed, position, 1),
        )
    generations = ((x_0.clamp(-1.0, 1.0) + 1.0) / 2.0).float()
    features = resnet.forward_features(generations)
    reference = features[list(strengths).index(0.0)]
    distances = feature_distance(features, reference, args.distance)
    return ImageResult(
        generations.cpu(),
        ((x_t[0].clamp(-1.0, 1.0) + 1.0) / 2.0).cpu(),
        [float(d) for d, s in zip(distances, strengths) if s != 0.0],
    )


# ----------------------------------------------------------------------------- inputs
def square_image(path: Path, size: int) -> torch.Tensor:
    """The central square of an image, resized to ``size``: 3 x size x size RGB in [0, 1]."""
    img = imread(path)
    height, width = img.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    img = img[top : top + side, left : left + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    img = np.clip(cv2.resize(img, (size, size), interpolation=interpolation), 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))).float()


def list_set(folder: Path, recursive: bool, limit: int | None) -> list[str]:
    try:
        names = list_image_files(folder, recursive)
    except (FileNotFoundError, NotADirectoryError) as err:
        raise AnalysisError(str(err)) from None
    if not names:
        raise AnalysisError(f"{folder}: no images (use --recursive for sub-folders).")
    return names[:limit] if limit else names


def build_prior(args: argparse.Namespace, device: torch.device) -> DiffusionPrior:
    unet = {}
    for item in args.unet:
        key, sep, value = item.partition("=")
        if not sep:
            raise AnalysisError(f"--unet {item!r}: expected KEY=VALUE.")
        key = key.strip()
        unet[key] = value if key in LIST_KEYWORDS else parse_scalar(value)
    if args.preset is None and not unet:
        raise AnalysisError("name the prior: --preset NAME --checkpoint PATH, or --unet KEY=VALUE.")
    if args.checkpoint is None and not args.allow_random_init:
        raise AnalysisError(
            "--checkpoint is missing; a prior with random weights needs --allow-random-init "
            "(tests and pipeline checks only)."
        )
    options = {
        "preset": args.preset,
        "unet": unet or None,
        "dtype": args.dtype,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "diffusion_steps": args.diffusion_steps,
    }
    if args.noise_schedule:
        options["noise_schedule"] = args.noise_schedule
    try:
        prior = DiffusionPrior(**options)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as err:
        raise AnalysisError(f"prior: {err}") from None
    return prior.to(device)


def build_resnet(args: argparse.Namespace, device: torch.device) -> nn.Module:
    if args.resnet_weights is None and not args.allow_random_init:
        raise AnalysisError(
            "--resnet-weights is missing (torchvision's resnet50-0676ba61.pth); "
            "--allow-random-init uses random features (tests only)."
        )
    path = str(args.resnet_weights) if args.resnet_weights else None
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            net = ResNet50(pretrained_path=path, skip_fc_mismatch=True)
    except (ValueError, FileNotFoundError) as err:
        raise AnalysisError(f"--resnet-weights: {err}") from None
    return net.to(device).eval()


# ----------------------------------------------------------------------------- outputs
def strip_image(
    inputs: list[torch.Tensor],
    noised: list[torch.Tensor],
    generated: list[torch.Tensor],
    strengths: Sequence[float],
) -> np.ndarray:
    """Rows: input, x_t, one per strength; columns: images; a label at the left of each row."""
    height = inputs[0].shape[1]
    label_width = max(64, height)

    def row(label: str, images: list[torch.Tensor]) -> np.ndarray:
        gap = np.full((height, 4, 3), 255, np.uint8)
        parts = [label_bar(label, label_width, height)]
        for image in images:
            rgb = image.permute(1, 2, 0).numpy()
            parts += [gap, to_uint8_image(rgb[:, :, ::-1])]  # to OpenCV's BGR
        return np.concatenate(parts, axis=1)

    rows = [row("input", inputs), row("x_t", noised)]
    rows += [row(f"a={s:g}", [g[i] for g in generated]) for i, s in enumerate(strengths)]
    return stack_rows(rows)


def summary_tables(distances: dict[str, dict[float, list[float]]]) -> tuple[str, str]:
    """Markdown and CSV of mean and standard deviation per set and strength."""
    sets = list(distances)
    strengths = list(dict.fromkeys(s for name in sets for s in distances[name]))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["set", "strength", "count", "mean", "std"])
    lines = [
        "| set | " + " | ".join(f"alpha = {s:g}" for s in strengths) + " |",
        "|---" * (len(strengths) + 1) + "|",
    ]
    for name in sets:
        cells = []
        for strength in strengths:
            values = np.asarray(distances[name].get(strength, []), dtype=np.float64)
            mean = float(values.mean()) if values.size else math.nan
            std = float(values.std()) if values.size else math.nan
            writer.writerow([name, f"{strength:g}", values.size, f"{mean:.6f}", f"{std:.6f}"])
            cells.append(f"{mean:.4f} ± {std:.4f} ({values.size})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", buffer.getvalue()


def require_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise AnalysisError(
            "the histogram needs matplotlib, which is not installed: pip install 'diffsr[plots]' "
            "(or pip install matplotlib); or pass --no-plot."
        )


def save_histograms(
    path: Path, distances: dict[str, dict[float, list[float]]], metric: str
) -> None:
    """One panel per non-zero strength with one translucent histogram per set."""
    require_matplotlib()
    from matplotlib.figure import Figure

    strengths = list(dict.fromkeys(s for name in distances for s in distances[name]))
    figure = Figure(figsize=(4 * len(strengths), 3.2), dpi=100, layout="constrained")
    axes_list = figure.subplots(1, len(strengths), squeeze=False)[0]
    for axes, strength in zip(axes_list, strengths):
        values = [v for name in distances for v in distances[name].get(strength, [])]
        bins = np.histogram_bin_edges(values, bins=min(30, max(5, len(values))))
        for name in distances:
            axes.hist(distances[name].get(strength, []), bins=bins, alpha=0.5, label=name)
        axes.set_title(f"alpha = {strength:g}")
        axes.set_xlabel(f"ResNet-50 feature distance ({metric})")
        axes.set_ylabel("images")
        axes.legend(fontsize="small")
    figure.savefig(path)


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = parser.add_argument_group("image sets (at least one)")
    for name in SETS:
        data.add_argument(f"--{name}", type=Path, help=f"folder of {name} images")
    data.add_argument("--recursive", action="store_true", help="also read sub-folders")
    data.add_argument("--limit", type=int, help="use the first N images of each set")
    prior = parser.add_argument_group("diffusion prior")
    prior.add_argument("--preset", help="e.g. adm_256_uncond (see diffsr.diffusion.PRESETS)")
    prior.add_argument("--checkpoint", type=Path, help="prior weights")
    prior.add_argument(
        "--unet", action="append", default=[], metavar="KEY=VALUE", help="UNet keyword"
    )
    prior.add_argument("--noise-schedule", choices=("linear", "cosine"))
    prior.add_argument("--diffusion-steps", type=int, default=1000, help="T (default: 1000)")
    prior.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    analysis = parser.add_argument_group("analysis")
    analysis.add_argument("--t", type=int, default=500, help="noising steps, 1..T (default 500)")
    analysis.add_argument("--sampler", choices=SAMPLERS, default="ddim")
    analysis.add_argument("--steps", type=int, help="DDIM steps (default: t)")
    analysis.add_argument(
        "--strengths", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="alphas (0 added)"
    )
    analysis.add_argument("--components", type=int, default=1, help="k leading components")
    analysis.add_argument("--mode", choices=MODES, default="scale")
    analysis.add_argument("--distance", choices=("l2", "cosine"), default="l2")
    analysis.add_argument("--size", type=int, help="image size (default: the prior's)")
    analysis.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resnet-weights", type=Path, help="torchvision resnet50-0676ba61.pth")
    parser.add_argument(
        "--allow-random-init",
        action="store_true",
        help="random prior / ResNet weights when no file is given (tests only)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--strip-images", type=int, default=4, help="images per strip (4)")
    parser.add_argument("--no-plot", action="store_true", help="skip histogram.png")
    args = parser.parse_args(argv)
    if not any(getattr(args, name) for name in SETS):
        parser.error("give at least one of --clean, --degraded, --restored.")
    for name in ("t", "components", "strip_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1.")
    return args


def run(args: argparse.Namespace) -> int:
    if not args.no_plot:
        require_matplotlib()
    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        raise AnalysisError(f"--device: {err}") from None
    prior = build_prior(args, device)
    if not 1 <= args.t <= prior.num_timesteps:
        raise AnalysisError(f"--t {args.t} must be in 1..{prior.num_timesteps} (T).")
    size = args.size or prior.image_size
    if size % prior.downsample_factor:
        raise AnalysisError(
            f"--size {size} must be a multiple of {prior.downsample_factor} for this prior."
        )
    resnet = build_resnet(args, device)
    strengths = sorted({0.0, *args.strengths})
    sets = {name: getattr(args, name) for name in SETS if getattr(args, name)}
    listed = {name: list_set(folder, args.recursive, args.limit) for name, folder in sets.items()}
    mkdirs(args.out)
    rows, failures = [], []
    distances: dict[str, dict[float, list[float]]] = {}
    for name, folder in sets.items():
        distances[name] = {s: [] for s in strengths if s != 0.0}
        shown: tuple[list, list, list] = ([], [], [])
        for position, image_name in enumerate(tqdm(listed[name], desc=name, unit="img")):
            try:
                image = square_image(folder / image_name, size)
            except (OSError, ValueError) as err:
                print(f"error: skipped {err}", file=sys.stderr)
                failures.append(str(err))
                continue
            result = analyse_image(prior, resnet, image, position, strengths, args)
            nonzero = [s for s in strengths if s != 0.0]
            for strength, distance in zip(nonzero, result.distances):
                distances[name][strength].append(distance)
                rows.append([name, image_name, f"{strength:g}", f"{distance:.6f}"])
            if len(shown[0]) < args.strip_images:
                shown[0].append(image)
                shown[1].append(result.noised)
                shown[2].append(result.generations)
        if shown[0]:
            imwrite(strip_image(*shown, strengths), args.out / f"strip_{name}.png")
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["set", "image", "strength", "distance"], *rows])
    atomic_write_text(args.out / "distances.csv", buffer.getvalue())
    markdown, summary_csv = summary_tables(distances)
    atomic_write_text(args.out / "summary.md", markdown)
    atomic_write_text(args.out / "summary.csv", summary_csv)
    if not args.no_plot:
        save_histograms(args.out / "histogram.png", distances, args.distance)
    print("\n" + markdown + f"\nResults in {args.out}")
    if failures:
        print(
            f"error: {len(failures)} image(s) could not be read and were skipped.", file=sys.stderr
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
