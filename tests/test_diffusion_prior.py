"""DiffusionPrior: a frozen loss network. Freezing, gradients to the input, speed options that
keep the function, the shared cache, and checkpoint loading with helpful errors."""

import logging
import warnings

import pytest
import torch

from diffsr.diffusion import (
    PRESETS,
    CheckpointMismatchError,
    DiffusionPrior,
    Preset,
    build_prior,
    clear_shared_priors,
    create_unet,
    get_shared_prior,
)
from diffsr.utils.registry import RegistryError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    gd = pytest.importorskip("guided_diffusion.gaussian_diffusion")
    script_util = pytest.importorskip("guided_diffusion.script_util")

UNET = dict(
    image_size=32,
    num_channels=32,
    num_res_blocks=1,
    channel_mult="1,2",
    attention_resolutions="16,8",
    num_head_channels=16,
    learn_sigma=True,
    use_scale_shift_norm=True,
    resblock_updown=True,
)


def random_prior(**options) -> DiffusionPrior:
    return build_prior({"unet": UNET, **options})


def noisy_batch(prior: DiffusionPrior):
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    t = torch.tensor([20, 700])
    return prior.q_sample(x0, t, torch.randn(x0.shape, generator=gen)), t


def eps_h_and_input_grad(prior: DiffusionPrior, x_t: torch.Tensor, t: torch.Tensor):
    x = x_t.clone().requires_grad_()
    eps, h = prior(x, t, need_h=True)
    (eps.square().mean() + h.square().mean()).backward()
    return eps.detach(), h.detach(), x.grad


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_prior_is_frozen_and_stays_in_eval_mode():
    prior = random_prior()
    assert all(not p.requires_grad for p in prior.parameters())
    prior.train()
    assert not prior.training and not any(m.training for m in prior.modules())
    assert (prior.num_timesteps, prior.image_size, prior.downsample_factor) == (1000, 32, 2)
    assert prior.learn_sigma and prior.h_channels == 64
    assert prior.schedule.betas.dtype == torch.float64


def test_all_options_on_backward_reaches_input_and_no_weight_grads():
    prior = random_prior(dtype="bfloat16", channels_last=True, checkpointing=True, attention="sdpa")
    x_t, t = noisy_batch(prior)
    eps, h, grad = eps_h_and_input_grad(prior, x_t, t)
    assert eps.dtype == h.dtype == torch.float32
    assert eps.shape == (2, 3, 32, 32) and h.shape == (2, 64, 16, 16)
    assert grad is not None and grad.abs().sum() > 0 and torch.isfinite(grad).all()
    assert all(p.grad is None for p in prior.parameters())


def test_eps_and_x0_equal_guided_diffusion_model_and_process():
    """eps = first 3 of the 6 output channels; x0_hat as GaussianDiffusion.p_mean_variance."""
    prior = random_prior(attention="legacy")
    reference = script_util.create_model(**UNET).eval()
    reference.load_state_dict(prior.unet.state_dict())
    diffusion = gd.GaussianDiffusion(
        betas=gd.get_named_beta_schedule("linear", 1000),
        model_mean_type=gd.ModelMeanType.EPSILON,
        model_var_type=gd.ModelVarType.LEARNED_RANGE,
        loss_type=gd.LossType.MSE,
    )
    x_t, t = noisy_batch(prior)
    with torch.no_grad():
        expected = diffusion.p_mean_variance(reference, x_t, t, clip_denoised=False)
        eps, _ = prior(x_t, t)
        x0 = prior.predict_x0(x_t, t, eps)
        xprev = prior.posterior_mean(x0, x_t, t)
    assert relative_error(x0, expected["pred_xstart"]) < 1e-5
    assert relative_error(xprev, expected["mean"]) < 1e-5


def test_sdpa_equals_legacy_attention():
    legacy, sdpa = random_prior(attention="legacy"), random_prior(attention="sdpa")
    x_t, t = noisy_batch(legacy)
    results = [eps_h_and_input_grad(p, x_t, t) for p in (legacy, sdpa)]
    for ours, ref in zip(results[1], results[0]):
        assert relative_error(ours, ref) < 1e-5


def test_channels_last_and_checkpointing_keep_outputs_and_input_grads():
    base = random_prior()
    x_t, t = noisy_batch(base)
    expected = eps_h_and_input_grad(base, x_t, t)
    for options in ({"channels_last": True}, {"checkpointing": True}, {"checkpointing": 1}):
        prior = random_prior(**options)
        for ours, ref in zip(eps_h_and_input_grad(prior, x_t, t), expected):
            assert relative_error(ours, ref) < 1e-5, options


@pytest.mark.parametrize(("dtype", "tolerance"), [("bfloat16", 0.06), ("float16", 0.01)])
def test_low_precision_autocast_is_close(dtype, tolerance):
    base, low = random_prior(), random_prior(dtype=dtype)
    x_t, t = noisy_batch(base)
    for ours, ref in zip(eps_h_and_input_grad(low, x_t, t), eps_h_and_input_grad(base, x_t, t)):
        error = relative_error(ours, ref)
        assert 0 < error < tolerance  # > 0: the autocast path really ran in low precision


def test_h_only_skips_the_decoder_and_equals_full_pass_h():
    prior = random_prior()
    x_t, t = noisy_batch(prior)
    calls = []
    prior.unet.out.register_forward_hook(lambda *_: calls.append(1))
    eps, h = prior(x_t, t, need_eps=False, need_h=True)
    assert eps is None and not calls
    _, h_full = prior(x_t, t, need_h=True)
    assert torch.equal(h, h_full) and calls


def test_shared_cache_returns_one_instance_per_config_and_device():
    clear_shared_priors()
    try:
        first = get_shared_prior({"unet": UNET})
        assert get_shared_prior({"unet": dict(UNET), "dtype": "float32"}, "cpu") is first
        assert get_shared_prior({"unet": UNET, "dtype": "bfloat16"}) is not first
    finally:
        clear_shared_priors()


def test_random_weights_log_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="diffsr.diffusion.prior"):
        random_prior()
    assert "RANDOM" in caplog.text


def test_missing_checkpoint_says_which_file_and_where(tmp_path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(FileNotFoundError) as info:
        build_prior({"preset": "adm_256_uncond", "checkpoint": str(missing)})
    message = str(info.value)
    for part in (
        str(missing),
        "256x256_diffusion_uncond.pt",
        "github.com/openai/guided-diffusion",
        "experiments/pretrained_models/256x256_diffusion_uncond.pt",
        "never downloads",
    ):
        assert part in message


def save_unet(path, wrapper=None, half=False, **options):
    unet = create_unet(**{**UNET, **options})
    state = unet.state_dict()
    if half:
        state = {k: v.half() for k, v in state.items()}
    torch.save({wrapper: state} if wrapper else state, path)
    return unet


@pytest.mark.parametrize("wrapper", [None, "params_ema", "params", "state_dict", "ema"])
def test_accepted_checkpoint_layouts_load(tmp_path, wrapper):
    path = tmp_path / "prior.pt"
    source = save_unet(path, wrapper)
    prior = random_prior(checkpoint=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(prior.unet.state_dict()[key], value), key
    assert all(not p.requires_grad and p.device.type == "cpu" for p in prior.parameters())


def test_float16_checkpoint_loads_as_float32(tmp_path):
    path = tmp_path / "fp16.pt"
    source = save_unet(path, half=True)
    prior = random_prior(checkpoint=str(path))
    weight = prior.unet.input_blocks[0][0].weight
    assert weight.dtype == torch.float32
    assert torch.equal(weight, source.input_blocks[0][0].weight.half().float())


def test_wrong_checkpoint_names_keys_and_suggests_the_matching_preset(tmp_path, monkeypatch):
    tiny_cond = {**UNET, "class_cond": True}
    monkeypatch.setitem(
        PRESETS, "test_tiny_cond", Preset("test_tiny_cond", "test", "tiny.pt", tiny_cond)
    )
    path = tmp_path / "cond.pt"
    save_unet(path, class_cond=True)
    with pytest.raises(CheckpointMismatchError) as info:
        random_prior(checkpoint=str(path))
    message = str(info.value)
    assert "unexpected keys: label_emb.weight" in message
    assert "test_tiny_cond" in message and str(path) in message


def test_wrong_shapes_are_listed(tmp_path):
    path = tmp_path / "wide.pt"
    save_unet(path, num_channels=64)
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatches: time_embed\.0\.weight"):
        random_prior(checkpoint=str(path))


def test_not_a_state_dict_is_reported(tmp_path):
    path = tmp_path / "junk.pt"
    torch.save({"iteration": 3}, path)
    with pytest.raises(ValueError, match="no UNet state dict found"):
        random_prior(checkpoint=str(path))


def test_bad_options_are_reported():
    with pytest.raises(RegistryError, match="checkpointin"):
        build_prior({"unet": UNET, "checkpointin": True})
    with pytest.raises(ValueError, match="dtype 'float8'"):
        random_prior(dtype="float8")
    with pytest.raises(ValueError, match="dtype: float16"):
        build_prior({"unet": {**UNET, "use_fp16": True}})
    with pytest.raises(ValueError, match=r"'preset'.*'unet'"):
        build_prior({})
