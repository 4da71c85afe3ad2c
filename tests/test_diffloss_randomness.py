"""DiffLoss's own random numbers: t, noise and crops come from its generator, never the global
RNG, so adding or removing the loss changes nothing else in a run, and resume restores them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffsr.diffusion import clear_shared_priors
from diffsr.losses import LOSS_REGISTRY
from diffsr.models.checkpoint import load_training_state
from diffsr.train import main as train_main
from tests.helpers.fixtures import (
    TINY_PRIOR,
    read_jsonl,
    train_options,
    write_options,
)

PRIOR = TINY_PRIOR


pytestmark = pytest.mark.usefixtures("fresh_prior_cache")


def make(**options) -> torch.nn.Module:
    return LOSS_REGISTRY.build({"type": "DiffLoss", "prior": PRIOR, **options})


def images(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(4)
    clean = torch.rand(2, 3, size, size, generator=gen)
    return (clean + 0.1 * torch.randn(clean.shape, generator=gen)).clamp(0, 1), clean


def record_draws(loss, monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Spy on the prior's q_sample: every (t, noise) the loss draws, in order."""
    draws = []
    original = type(loss.prior).q_sample

    def spy(self, x, t, noise):
        draws.append((t.clone(), noise.clone()))
        return original(self, x, t, noise)

    monkeypatch.setattr(type(loss.prior), "q_sample", spy)
    return draws


def test_two_instances_with_one_seed_draw_the_same_t_and_noise(monkeypatch):
    first, second, other = make(seed=3), make(seed=3), make(seed=4)
    restored, clean = images()
    draws = record_draws(first, monkeypatch)
    for loss in (first, second, other):
        for _ in range(2):  # two calls each: the streams continue, not restart
            loss(restored, clean)
    a, b, c = draws[0:4], draws[4:8], draws[8:12]
    for (t1, n1), (t2, n2) in zip(a, b):
        assert torch.equal(t1, t2) and torch.equal(n1, n2)
    assert not torch.equal(a[0][1], c[0][1])
    assert not torch.equal(a[0][1], a[2][1])  # the second call draws new noise
    # What it draws is the seeded stream: randint for t, then randn for the noise.
    gen = torch.Generator().manual_seed(3)
    t = torch.randint(0, 100, (2,), generator=gen)
    assert torch.equal(a[0][0], t)
    assert torch.equal(a[0][1], torch.randn(clean.shape, generator=gen))


def test_standalone_seed_is_zero_and_the_global_rng_is_untouched():
    torch.manual_seed(99)
    before = torch.get_rng_state()
    loss = make(fit="crop")  # building the prior initialises a UNet: not from the global RNG
    restored, clean = images(size=24)  # larger than the prior: a random crop
    value = loss(restored.requires_grad_(), clean)
    value.backward()
    assert torch.equal(torch.get_rng_state(), before)
    assert loss.core.seed == 0
    assert make(seed=0)(restored, clean).item() == value.item()


def test_the_crop_comes_from_the_generator():
    restored, clean = images(size=24)
    first, second = make(seed=8), make(seed=8)
    assert first(restored, clean).item() == second(restored, clean).item()
    third = make(seed=9)
    values = {third(restored, clean).item() for _ in range(3)}
    assert len(values) == 3


def test_generator_state_restores_the_stream():
    loss = make(seed=5)
    restored, clean = images()
    loss(restored, clean)
    state = loss.generator_state()
    assert state.dtype == torch.uint8 and state.device.type == "cpu"
    expected = [loss(restored, clean).item() for _ in range(2)]
    fresh = make(seed=123)  # another seed: the state, not the seed, decides
    fresh.set_generator_state(state)
    assert [fresh(restored, clean).item() for _ in range(2)] == expected
    with pytest.raises(ValueError, match="uint8"):
        fresh.set_generator_state(torch.zeros(3))
    with pytest.raises(ValueError, match="non-negative"):
        fresh.set_seed(-1)


def test_zero_weight_skips_the_prior(monkeypatch):
    loss = make(loss_weight=0)
    draws = record_draws(loss, monkeypatch)
    restored, clean = images()
    assert loss(restored, clean).item() == 0.0 and not draws
    assert make(loss_weight=0, reduction="none")(restored, clean).shape == (2,)


def _weights(root: Path) -> dict[str, torch.Tensor]:
    return torch.load(root / "models" / "net_g_latest.pth", map_location="cpu")["params"]


def _run(tmp_path: Path, name: str, *extra: str, **train) -> Path:
    opt = train_options(tmp_path / name, name=name, **train)
    opt["logger"]["save_checkpoint_freq"] = 3
    path = write_options(tmp_path / f"{name}.yml", opt)
    assert train_main(["-opt", str(path), *extra]) == 0
    return Path(opt["path"]["experiments_root"])


def test_zero_weight_diffloss_run_is_bit_identical_to_the_run_without_it(tmp_path: Path):
    without = _run(tmp_path, "without", total_iter=4)
    block = {"type": "DiffLoss", "loss_weight": 0.0, "prior": PRIOR}
    with_zero = _run(tmp_path, "with_zero", total_iter=4, diffloss_opt=block)
    a, b = _weights(without), _weights(with_zero)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # and a DiffLoss that does act leaves the data and initialisation alone: same first loss
    acting = _run(tmp_path, "acting", total_iter=1, diffloss_opt={**block, "loss_weight": 0.5})
    first = next(r for r in _read(without) if r.get("iter") == 1)["l_pixel"]
    assert next(r for r in _read(acting) if r.get("iter") == 1)["l_pixel"] == first


def _read(root: Path) -> list[dict]:
    return read_jsonl(root / "metrics.jsonl")


def test_resume_restores_the_diffloss_generator(tmp_path: Path):
    block = {"type": "DiffLoss", "loss_weight": 0.5, "prior": PRIOR}
    straight = _run(tmp_path, "straight", total_iter=6, diffloss_opt=block)
    opt = train_options(tmp_path / "resumed", name="resumed", total_iter=6, diffloss_opt=block)
    opt["logger"]["save_checkpoint_freq"] = 3
    path = write_options(tmp_path / "resumed.yml", opt)
    assert train_main(["-opt", str(path), "--set", "train.total_iter=3"]) == 0
    root = Path(opt["path"]["experiments_root"])
    state = load_training_state(root / "training_states" / "3.state")
    assert state["rng"][0]["losses"]["diffloss"].dtype == torch.uint8
    clear_shared_priors()
    assert train_main(["-opt", str(path), "--auto_resume"]) == 0
    a, b = _weights(straight), _weights(root)
    assert all(torch.equal(a[k], b[k]) for k in a)
