"""scripts/hspace_analysis.py: h-space perturbation hook, samplers, and the analysis run."""

import csv
import itertools
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from diffsr.diffusion import DiffusionPrior, DiffusionSchedule, create_unet, reinit_zero_layers
from tests.helpers.scripts import load_script

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
UNET = {"image_size": 16, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
        "attention_resolutions": "8"}  # fmt: skip
UNET_ARGS = [f"--unet={k}={v}" for k, v in UNET.items()]


hspace = load_script("hspace_analysis")


def tiny_unet(learn_sigma: bool = False):
    torch.manual_seed(0)
    return reinit_zero_layers(create_unet(**UNET, learn_sigma=learn_sigma)).eval()


# ----------------------------------------------------------------------------- perturbation
def numpy_svd(h: torch.Tensor):
    matrices = h.double().reshape(h.shape[0], h.shape[1], -1).numpy()
    return np.linalg.svd(matrices, full_matrices=False)


def test_scale_mode_multiplies_the_leading_singular_values():
    h = torch.randn(2, 8, 3, 4, dtype=torch.float64)
    alphas = torch.tensor([0.5, -0.3], dtype=torch.float64)
    out = hspace.perturb_h(h, alphas, components=2, mode="scale")
    u, s, vt = numpy_svd(h)
    for b, alpha in enumerate(alphas.tolist()):
        scaled = s[b].copy()
        scaled[:2] *= 1 + alpha
        expected = (u[b] * scaled) @ vt[b]
        np.testing.assert_allclose(out[b].reshape(8, 12).numpy(), expected, atol=1e-10)


def test_add_mode_steps_along_the_leading_components():
    h = torch.randn(3, 6, 2, 5, dtype=torch.float64)
    alphas = torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64)
    out = hspace.perturb_h(h, alphas, components=3, mode="add")
    u, s, vt = numpy_svd(h)
    for b, alpha in enumerate(alphas.tolist()):
        step = alpha * s[b, 0] * sum(np.outer(u[b][:, i], vt[b][i]) for i in range(3))
        expected = h[b].reshape(6, 10).numpy() + step
        np.testing.assert_allclose(out[b].reshape(6, 10).numpy(), expected, atol=1e-10)
    assert torch.equal(out[1], h[1])


def test_hook_changes_the_unet_output_and_strength_zero_changes_nothing():
    unet = tiny_unet()
    x = torch.randn(3, 3, 16, 16)
    t = torch.tensor([5, 5, 5])
    with torch.no_grad():
        baseline, h = unet(x, t, return_h=True)
        alphas = torch.tensor([0.0, 1.0, 3.0])
        with hspace.HSpacePerturbation(unet, alphas, components=1):
            perturbed, h_seen = unet(x, t, return_h=True)
        after = unet(x, t)
    assert torch.equal(perturbed[0], baseline[0])
    assert not torch.allclose(perturbed[1], baseline[1], atol=1e-4)
    torch.testing.assert_close(h_seen, hspace.perturb_h(h, alphas), rtol=1e-5, atol=1e-5)
    assert torch.equal(after, baseline)  # the hook is gone
    wrong = hspace.HSpacePerturbation(unet, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="2 strengths for a batch of 3"), wrong, torch.no_grad():
        unet(x, t)


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_strength_zero_reproduces_the_unperturbed_generation(sampler):
    torch.manual_seed(0)
    prior = DiffusionPrior(unet=UNET, diffusion_steps=50)
    model_fn = hspace.prior_model_fn(prior)
    x_t = torch.randn(1, 3, 16, 16).expand(2, -1, -1, -1)
    with torch.no_grad():
        plain = hspace.generate(model_fn, prior.schedule, x_t, 6, sampler, 3, seed=4)
        with hspace.HSpacePerturbation(prior.unet, torch.tensor([0.0, 2.0])):
            hooked = hspace.generate(model_fn, prior.schedule, x_t, 6, sampler, 3, seed=4)
    assert torch.equal(hooked[0], plain[0])
    assert (hooked[1] - plain[1]).abs().max() > 1e-3


# ----------------------------------------------------------------------------- samplers
def test_ddim_timesteps():
    assert hspace.ddim_timesteps(10, 10) == list(range(9, -1, -1))
    steps = hspace.ddim_timesteps(500, 50)
    assert steps[0] == 499 and steps[-1] == 0 and len(steps) == 50
    assert all(a > b for a, b in itertools.pairwise(steps))
    assert hspace.ddim_timesteps(3, 10) == [2, 1, 0]


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
@pytest.mark.parametrize("channels", [3, 6])
def test_an_oracle_model_generates_its_clean_image_back(sampler, channels):
    """A model that returns the true noise of x_t for a known x0 must lead back to x0."""
    schedule = DiffusionSchedule("linear", 100)
    x0 = torch.rand(1, 3, 8, 8, dtype=torch.float64) * 1.6 - 0.8

    def oracle(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], 1) if channels == 6 else eps

    noise = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    x_t = schedule.q_sample(x0, torch.tensor([39]), noise)
    out = hspace.generate(oracle, schedule, x_t, 40, sampler, steps=7, seed=1)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-9)


@pytest.mark.parametrize("learn_sigma", [True, False])
@pytest.mark.parametrize("t", [0, 1, 37])
def test_steps_equal_guided_diffusion(learn_sigma, t):
    gd = pytest.importorskip("guided_diffusion.gaussian_diffusion", reason="test-only reference")
    variance = gd.ModelVarType.LEARNED_RANGE if learn_sigma else gd.ModelVarType.FIXED_LARGE
    reference = gd.GaussianDiffusion(
        betas=gd.get_named_beta_schedule("linear", 50),
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=variance,
        loss_type=gd.LossType.MSE,
    )
    schedule = DiffusionSchedule("linear", 50)
    x = torch.randn(2, 3, 8, 8) * 1.5
    output = torch.randn(2, 6 if learn_sigma else 3, 8, 8)
    output[:, 3:] = output[:, 3:].clamp(-1, 1)
    steps = torch.full((2,), t)

    def model(*args):
        return output

    torch.manual_seed(11)
    expected = reference.p_sample(model, x, steps)["sample"]
    torch.manual_seed(11)
    ours = hspace.ancestral_step(schedule, output, x, t, torch.randn_like(x))
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    expected = reference.ddim_sample(model, x, steps, eta=0.0)["sample"]
    torch.testing.assert_close(
        hspace.ddim_step(schedule, output, x, t, t - 1), expected, rtol=1e-5, atol=1e-5
    )


# ----------------------------------------------------------------------------- the script
def write_images(folder: Path, count: int, seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture()
def image_sets(tmp_path):
    write_images(tmp_path / "clean", 2, 0)
    write_images(tmp_path / "degraded", 2, 1)
    return tmp_path


def analysis_args(root: Path, out: str, *extra: str) -> list[str]:
    return [*UNET_ARGS, "--allow-random-init", "--diffusion-steps", "20", "--t", "3",
            "--strengths", "1", "2", "--clean", str(root / "clean"),
            "--degraded", str(root / "degraded"), "--restored", str(root / "clean"),
            "--out", str(root / out), "--device", "cpu", *extra]  # fmt: skip


def test_analysis_writes_strips_distances_and_histograms(image_sets):
    root = image_sets
    assert hspace.main(analysis_args(root, "a", "--sampler", "ancestral")) == 0
    rows = read_rows(root / "a" / "distances.csv")
    assert len(rows) == 3 * 2 * 2
    assert {(r["set"], r["strength"]) for r in rows} == {
        (s, a) for s in ("clean", "degraded", "restored") for a in ("1", "2")
    }
    by_key = {(r["set"], r["image"], r["strength"]): float(r["distance"]) for r in rows}
    # Image i of every set gets the same noise: the same images give the same distances.
    for image in ("0.png", "1.png"):
        for strength in ("1", "2"):
            assert by_key[("clean", image, strength)] == by_key[("restored", image, strength)]
            assert by_key[("clean", image, strength)] > 0
    summary = {(r["set"], r["strength"]): r for r in read_rows(root / "a" / "summary.csv")}
    for (name, strength), row in summary.items():
        values = [d for (s, _, a), d in by_key.items() if (s, a) == (name, strength)]
        assert int(row["count"]) == 2
        assert float(row["mean"]) == pytest.approx(np.mean(values), abs=1e-6)
        assert float(row["std"]) == pytest.approx(np.std(values), abs=1e-6)
    strip = cv2.imread(str(root / "a" / "strip_clean.png"))
    rows_in_strip = 2 + 3  # input, x_t, alpha = 0, 1, 2
    assert strip.shape == (rows_in_strip * 16 + 4 * (rows_in_strip - 1), 64 + 2 * (4 + 16), 3)
    assert (root / "a" / "histogram.png").is_file()
    # Seeded: a second run gives the same numbers; another seed other ones.
    assert hspace.main(analysis_args(root, "b", "--sampler", "ancestral", "--no-plot")) == 0
    assert read_rows(root / "b" / "distances.csv") == rows
    assert hspace.main(analysis_args(root, "c", "--sampler", "ancestral", "--seed", "1",
                                     "--no-plot")) == 0  # fmt: skip
    assert read_rows(root / "c" / "distances.csv") != rows


def test_analysis_reports_a_corrupt_image_and_missing_pieces(image_sets, capsys, monkeypatch):
    root = image_sets
    (root / "degraded" / "9.png").write_bytes(b"broken")
    assert hspace.main(analysis_args(root, "d", "--no-plot", "--mode", "add")) == 1
    assert "9.png: cannot decode" in capsys.readouterr().err
    assert len(read_rows(root / "d" / "distances.csv")) == 3 * 2 * 2
    args = analysis_args(root, "e")
    args.remove("--allow-random-init")
    assert hspace.main(args) == 2
    assert "--allow-random-init" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert hspace.main(analysis_args(root, "f")) == 2
    assert "pip install 'diffsr[plots]'" in capsys.readouterr().err


def test_help_works():
    python = str(PYTHON) if PYTHON.exists() else sys.executable
    done = subprocess.run(
        [python, str(REPO / "scripts" / "hspace_analysis.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "Example" in done.stdout
