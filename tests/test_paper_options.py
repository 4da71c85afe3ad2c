"""The option files of the paper's runs (options/*.yml, options/test/*.yml).

Every file must load and validate as shipped. Then every training file trains for two
iterations, and its test file restores the test split. Both runs use tiny generated data in the
documented layout (datasets/README.md) and small network and prior configurations. Only the
sizes and paths are overridden: the data blocks, splits, losses, model type and metrics of the
shipped file are what runs.
"""

from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import diffsr.test as test_script
from diffsr.data import build_dataset
from diffsr.data.lmdb_convert import paired_folders_to_lmdb
from diffsr.data.pairing import Selection
from diffsr.train import main as train_main
from diffsr.utils.options import parse_options
from diffsr.utils.yaml_util import load_yaml
from tests.helpers.fixtures import TINY_PRIOR_UNET, read_jsonl, write_options

REPO = Path(__file__).resolve().parents[1]
OPTIONS = REPO / "options"
TEST_OPTIONS = OPTIONS / "test"

PAPER_RUNS = [
    # Table 1: each network without and with DiffLoss
    *(
        f"{task}_{net}{suffix}"
        for task, net in [
            ("dehaze", "fsdgn"),
            ("dehaze", "taylorformer"),
            ("derain", "rcdnet"),
            ("derain", "efderain"),
            ("lowlight", "deeplpf"),
            ("lowlight", "iat"),
        ]
        for suffix in ("", "_diffloss")
    ),
    # Table 3: loss comparison with MSBDN
    *(f"dehaze_msbdn_{loss}" for loss in ("l1", "perceptual", "adversarial", "diffloss")),
    # Table 4: ablation of the space DiffLoss compares in
    *(f"dehaze_griddehazenet_{space}" for space in ("x0", "xprev", "eps")),
]
LMDB_RUNS = ["dehaze_fsdgn_lmdb", "dehaze_fsdgn_diffloss_lmdb"]
TRAIN_FILES = sorted(OPTIONS.glob("*.yml"))
TEST_FILES = sorted(TEST_OPTIONS.glob("*.yml"))

# Small configurations of the networks (from their tests); the type stays the file's.
SMALL_NETWORKS: dict[str, dict[str, Any]] = {
    "FSDGN": {"widths": [4, 6, 8]},
    "MBTaylorFormer": {
        "widths": [8, 16, 24, 32],
        "num_blocks": [1, 1, 1, 1],
        "num_refinement_blocks": 1,
        "num_paths": [2, 1, 1, 2],
    },
    "MSBDN": {
        "widths": [4, 8, 16],
        "blocks_per_level": 1,
        "bottleneck_blocks": 1,
        "input_kernel_size": 5,
    },
    "GridDehazeNet": {
        "base_channels": 4,
        "rows": 2,
        "columns": 4,
        "dense_layers": 2,
        "growth_rate": 4,
    },
    "RCDNet": {
        "num_stages": 2,
        "num_rain_kernels": 4,
        "num_dual_channels": 4,
        "num_res_blocks": 1,
        "kernel_size": 5,
    },
    "EfDeRain": {"widths": [8, 8, 16, 16], "convs_per_level": 1},
    "DeepLPF": {
        "widths": [4, 8],
        "feature_channels": 5,
        "head_channels": 8,
        "head_size": 64,
        "num_graduated_filters": 2,
        "num_elliptical_filters": 2,
    },
    "IAT": {"local_width": 8, "num_local_blocks": 2, "global_width": 16, "global_heads": 2},
}
SMALL_DISCRIMINATOR = {"num_feat": 8, "num_layers": 2}
TINY_PRIOR = {"unet": TINY_PRIOR_UNET, "diffusion_steps": 100}
IMAGE_SIZE = 40
CLASSIC = ("calculate_psnr", "calculate_ssim")
WEIGHT_KEYS = {"calculate_lpips": ("weights_path", "lin_path"), "FID": ("weights_path",)}

# Pair ids of the tiny sets: some in each split of the shipped files (see datasets/README.md).
DENSE_HAZE_IDS = ["01", "02", "03", "46", "51"]  # train 01-45, val 46-50, test 51-55
RAIN13K_IDS = ["1", "2", "3", "100"]  # val: ids ending in 00
RAIN100H_IDS = ["1", "2"]
LOL_OUR485_IDS = ["2", "5", "6", "50"]  # val: ids ending in 00 or 50
LOL_EVAL15_IDS = ["1", "22"]


# ------------------------------------------------------------------------------ tiny data
def write_pair(lq_path: Path, gt_path: Path, rng: np.random.Generator) -> None:
    """A smooth random clean image and a darker, hazier copy as the degraded one (uint8)."""
    coarse = rng.uniform(0, 1, (5, 5, 3)).astype(np.float32)
    gt = cv2.resize(coarse, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    lq = 0.5 * gt + 0.3
    for path, image in ((lq_path, lq), (gt_path, gt)):
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), (image * 255).round().astype(np.uint8))


def make_datasets(root: Path) -> Path:
    """``root/datasets`` with Dense-Haze, Rain13K (+ Rain100H) and LOL in their layouts."""
    rng = np.random.default_rng(0)
    data = root / "datasets"
    haze = data / "Dense-Haze"
    for pair_id in DENSE_HAZE_IDS:
        write_pair(haze / "hazy" / f"{pair_id}_hazy.png", haze / "GT" / f"{pair_id}_GT.png", rng)
    paired_folders_to_lmdb(  # as datasets/README.md builds it: the training pairs only
        haze / "hazy",
        haze / "GT",
        haze / "hazy_train.lmdb",
        haze / "GT_train.lmdb",
        name_mapping="dense_haze",
        selection=Selection(id_range=[1, 45]),
        n_thread=1,
        progress=False,
    )
    for folder, ids in (("train", RAIN13K_IDS), ("test/Rain100H", RAIN100H_IDS)):
        for pair_id in ids:
            base = data / "Rain13K" / folder
            write_pair(base / "input" / f"{pair_id}.png", base / "target" / f"{pair_id}.png", rng)
    for folder, ids in (("our485", LOL_OUR485_IDS), ("eval15", LOL_EVAL15_IDS)):
        for pair_id in ids:
            base = data / "LOL" / folder
            write_pair(base / "low" / f"{pair_id}.png", base / "high" / f"{pair_id}.png", rng)
    return data


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_datasets(tmp_path_factory.mktemp("paper_data"))


# ------------------------------------------------------------------------ small overrides
def relocate(path: str, data_root: Path) -> str:
    """``datasets/...`` in a shipped file -> the same layout under the generated root."""
    assert path.startswith("datasets/"), f"dataroot {path!r} is not under datasets/"
    return str(data_root / path.removeprefix("datasets/"))


def shrink_common(opt: dict[str, Any], data_root: Path) -> dict[str, Any]:
    """Tiny sizes and tmp paths for a train or test option dict; everything else is kept."""
    opt = copy.deepcopy(opt)
    opt["device"] = "cpu"
    for block in opt["datasets"].values():
        for key in ("dataroot_lq", "dataroot_gt"):
            block[key] = relocate(block[key], data_root)
    network = opt["network_g"]
    opt["network_g"] = {**network, **SMALL_NETWORKS[network["type"]]}
    return opt


def shrink_train(opt: dict[str, Any], data_root: Path, experiments: Path) -> dict[str, Any]:
    opt = shrink_common(opt, data_root)
    train_set = opt["datasets"]["train"]
    train_set.update(gt_size=32, batch_size_per_gpu=2, num_worker_per_gpu=0)
    if "network_d" in opt:
        opt["network_d"].update(SMALL_DISCRIMINATOR)
    for key, block in opt["train"].items():
        if not key.endswith("_opt"):
            continue
        if "prior" in block:
            block["prior"] = copy.deepcopy(TINY_PRIOR)
        if block["type"] == "PerceptualLoss":
            block.update(vgg_path=None, allow_random_init=True)
    opt["train"]["total_iter"] = 2
    opt["val"].update(val_freq=2, pbar=False)
    opt["logger"].update(print_freq=1, save_checkpoint_freq=2)
    opt["path"] = {"experiments_root": str(experiments / opt["name"])}
    return opt


def eval_options_of(train_file: Path) -> Path:
    """The test option file of a training file (an LMDB variant shares its disk twin's)."""
    return TEST_OPTIONS / f"{train_file.stem.removesuffix('_lmdb')}.yml"


def split_contents(opt_path: Path, is_train: bool) -> dict[str, set[str]]:
    """Digests of the whole GT images of each dataset block: comparable across backends."""
    opt = parse_options(opt_path, is_train=is_train)
    contents = {}
    for phase, block in opt["datasets"].items():
        dataset = build_dataset({**block, "phase": "test"})  # whole images, no augmentation
        contents[phase] = {
            hashlib.sha1(dataset[i]["gt"].numpy().tobytes()).hexdigest()
            for i in range(len(dataset))
        }
    return contents


# ------------------------------------------------------------------------------- tests
def test_every_paper_run_has_a_train_and_a_test_file():
    names = {path.stem for path in TRAIN_FILES}
    missing = sorted(set(PAPER_RUNS + LMDB_RUNS) - names)
    assert not missing, f"missing option files: {', '.join(f'options/{m}.yml' for m in missing)}"
    assert not names - set(PAPER_RUNS + LMDB_RUNS), "unlisted option files: add them here"
    assert sorted(path.stem for path in TEST_FILES) == sorted(PAPER_RUNS)


@pytest.mark.parametrize("path", TRAIN_FILES, ids=lambda p: p.name)
def test_train_file_validates_with_paper_settings(path: Path):
    opt = parse_options(path)
    train, data = opt["train"], opt["datasets"]["train"]
    assert opt["name"] == path.stem.removesuffix("_lmdb")
    assert train["optim_g"]["type"] == "Adam" and train["optim_g"]["lr"] == 1e-4
    assert data["batch_size_per_gpu"] == 4 and data["gt_size"] == 256
    if "diffloss_opt" in train:
        loss = train["diffloss_opt"]
        assert (loss["loss_weight"], loss["lambda_sem"]) == (0.001, 0.01)
        assert loss["prior"]["preset"] == "adm_256_uncond"
        assert loss["prior"]["checkpoint"].endswith("256x256_diffusion_uncond.pt")
        assert loss.get("output", "final") == "final"
    # a run with DiffLoss differs from its baseline run only by the DiffLoss block
    if "_diffloss" in path.stem:
        baseline = path.name.replace("_diffloss", "_l1" if "msbdn" in path.stem else "")
        raw, baseline_raw = load_yaml(path), load_yaml(OPTIONS / baseline)
        raw["train"].pop("diffloss_opt")
        assert raw | {"name": None} == baseline_raw | {"name": None}


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_test_file_validates_and_matches_its_training(path: Path):
    opt = parse_options(path, is_train=False)
    train_raw = load_yaml(OPTIONS / path.name)
    test_raw = load_yaml(path)
    assert test_raw["network_g"] == train_raw["network_g"]
    metrics = test_raw["val"]["metrics"]
    assert {k: metrics[k] for k in ("psnr", "ssim")} == train_raw["val"]["metrics"]
    # the learned metric each comparison table reports next to PSNR / SSIM
    learned = {"msbdn": "calculate_lpips", "griddehazenet": "FID"}.get(path.stem.split("_")[1])
    assert sorted(m["type"] for m in metrics.values() if m["type"] not in CLASSIC) == (
        [learned] if learned else []
    )
    assert (
        opt["path"]["pretrain_network_g"]
        == f"experiments/{train_raw['name']}/models/net_g_best.pth"
    )
    uses_ema = (train_raw["train"].get("ema_decay") or 0) > 0
    assert opt["path"]["param_key_g"] == ("params_ema" if uses_ema else "params")
    y_channel = path.stem.startswith("derain")  # Rain100H on Y; Dense-Haze and LOL on RGB
    for metric in (opt["val"]["metrics"][name] for name in ("psnr", "ssim")):
        assert metric["crop_border"] == 0 and metric["test_y_channel"] is y_channel


@pytest.mark.parametrize("path", TRAIN_FILES, ids=lambda p: p.name)
def test_train_two_iterations_then_test(path: Path, data_root: Path, tmp_path: Path):
    opt = shrink_train(load_yaml(path), data_root, tmp_path / "experiments")
    opt_path = write_options(tmp_path / path.name, opt)
    test_opt = shrink_common(load_yaml(eval_options_of(path)), data_root)
    root = Path(opt["path"]["experiments_root"])
    test_opt["path"].update(
        pretrain_network_g=str(root / "models" / "net_g_best.pth"),
        results_root=str(tmp_path / "results"),
    )
    for metric in test_opt["val"]["metrics"].values():  # LPIPS / FID: skipped without weights
        if metric["type"] not in CLASSIC:
            metric.update(
                {key: str(tmp_path / "absent.pth") for key in WEIGHT_KEYS[metric["type"]]}
            )
    test_path = write_options(tmp_path / f"test_{path.name}", test_opt)

    # train, val and test splits are disjoint and none is empty
    splits = split_contents(opt_path, is_train=True) | split_contents(test_path, is_train=False)
    assert all(splits.values()), splits
    assert not splits["train"] & splits["val"]
    assert not (splits["train"] | splits["val"]) & splits["test_1"]

    assert train_main(["-opt", str(opt_path)]) == 0
    records = read_jsonl(root / "metrics.jsonl")
    losses = [r for r in records if "l_total" in r]
    assert [r["iter"] for r in losses] == [1, 2]
    assert all(math.isfinite(r["l_total"]) for r in losses)
    if "diffloss_opt" in opt["train"]:
        assert all({"l_diffloss", "l_diffloss_nat", "l_diffloss_sem"} <= set(r) for r in losses)
    if opt.get("model_type") == "RestorationGANModel":
        assert all("l_gan" in r for r in losses)
    assert [r["iter"] for r in records if "psnr" in r] == [2]

    assert test_script.main(["-opt", str(test_path)]) == 0
    table = tmp_path / "results" / f"{test_opt['datasets']['test_1']['name']}_metrics.csv"
    lines = table.read_text().splitlines()
    assert lines[0] == "image,psnr,ssim" and lines[-1].startswith("mean,")
    assert len(lines) == len(splits["test_1"]) + 2
