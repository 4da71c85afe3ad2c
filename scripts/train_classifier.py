"""Fine-tune an ImageNet VGG16 or ResNet-50 on clean CUB-200-2011 (the classifiers of Table 2).

Examples:
    # ResNet-50, SGD with a 10x learning rate on the new 200-class layer, cosine schedule
    python scripts/train_classifier.py --data datasets/CUB_200_2011 --arch resnet50 \\
        --weights experiments/pretrained_models/resnet50-0676ba61.pth \\
        --out experiments/cub_resnet50 --epochs 30 --batch-size 32 --lr 0.01
    # VGG16 with Adam
    python scripts/train_classifier.py --data datasets/CUB_200_2011 --arch vgg16 \\
        --weights experiments/pretrained_models/vgg16-397923af.pth \\
        --out experiments/cub_vgg16 --optim adam --lr 1e-4 --epochs 20
    # continue an interrupted run from its last completed epoch
    python scripts/train_classifier.py --data datasets/CUB_200_2011 --arch resnet50 \\
        --weights experiments/pretrained_models/resnet50-0676ba61.pth \\
        --out experiments/cub_resnet50 --epochs 30 --batch-size 32 --lr 0.01 --resume

Trains on the train split of train_test_split.txt with random resized crops (--image-size,
default 224) and horizontal flips; the classifier's last layer is replaced by a freshly
initialised one with as many outputs as classes.txt has classes (200). ImageNet weights are
read from --weights (torchvision's files; nothing is downloaded). No checkpoint is chosen by
test accuracy: the test split is only measured once, at the end.

Writes under --out:
    last.pth        after every epoch, atomically: weights, optimizer, epoch and RNG states
                    (what --resume reads) plus the classifier description below
    classifier.pth  at the end: weights (params) and the description: arch (the network's
                    option block), image_size, resize_size, class_names; read by
                    scripts/eval_classification.py
    log.jsonl       one line per epoch (loss, train top-1, lr) and the final test top-1
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from diffsr.data import build_dataloader, build_dataset
from diffsr.data.cub_dataset import CUBDataset
from diffsr.models.safe_load import read_training_state
from diffsr.utils.file_util import atomic_torch_save, mkdirs
from diffsr.utils.logger import get_root_logger
from diffsr.utils.misc import get_rng_state, resolve_device, set_rng_state
from diffsr.utils.registry import ARCH_REGISTRY, RegistryError
from diffsr.utils.yaml_util import parse_scalar

ARCH_ALIASES = {"resnet50": "ResNet50", "vgg16": "VGG16Classifier"}
# Parameters of the new classification layer (they get --head-lr-mult).
HEAD_PREFIXES = {"ResNet50": "fc.", "VGG16Classifier": "classifier.6."}
LAST_FILE, FINAL_FILE, LOG_FILE = "last.pth", "classifier.pth", "log.jsonl"


class TrainError(Exception):
    """A problem with the arguments or files, reported as one line (exit status 2)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="CUB-200-2011 root folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument(
        "--arch",
        default="resnet50",
        help="resnet50, vgg16 or any registered classifier type taking num_classes",
    )
    parser.add_argument(
        "--arch-kw", action="append", default=[], metavar="KEY=VALUE", help="extra arch keyword"
    )
    parser.add_argument("--weights", type=Path, help="ImageNet weights of --arch (torchvision)")
    parser.add_argument(
        "--allow-random-init",
        action="store_true",
        help="train from random weights when --weights is not given (tests only)",
    )
    parser.add_argument("--image-size", type=int, default=224, help="crop size (default: 224)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--optim", choices=("sgd", "adam", "adamw"), default="sgd")
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate of the backbone")
    parser.add_argument(
        "--head-lr-mult",
        type=float,
        default=10.0,
        help="learning-rate factor of the new last layer (default: 10)",
    )
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine")
    parser.add_argument(
        "--milestones", type=int, nargs="*", default=[], help="step schedule: epochs of x gamma"
    )
    parser.add_argument("--gamma", type=float, default=0.1, help="step schedule factor")
    parser.add_argument("--workers", type=int, default=4, help="data loader processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--resume", action="store_true", help="continue from --out/last.pth")
    parser.add_argument("--no-test", action="store_true", help="skip the final test top-1")
    args = parser.parse_args(argv)
    for name in ("image_size", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1.")
    if args.workers < 0:
        parser.error("--workers must be >= 0.")
    return args


# ----------------------------------------------------------------------------- network
def arch_block(args: argparse.Namespace, num_classes: int) -> dict[str, Any]:
    """The classifier's option block, without weights: ``{type, num_classes, **arch_kw}``."""
    block: dict[str, Any] = {"type": ARCH_ALIASES.get(args.arch.lower(), args.arch)}
    block["num_classes"] = num_classes
    for item in args.arch_kw:
        key, sep, value = item.partition("=")
        if not sep:
            raise TrainError(f"--arch-kw {item!r}: expected KEY=VALUE.")
        block[key.strip()] = parse_scalar(value)
    return block


def build_classifier(block: dict[str, Any], weights: Path | None) -> nn.Module:
    """Build ``block``; with ``weights`` load ImageNet weights except the last layer."""
    opt = dict(block)
    if weights is not None:
        opt.update(pretrained_path=str(weights), skip_fc_mismatch=True)
    try:
        return ARCH_REGISTRY.build(opt)
    except (RegistryError, FileNotFoundError, ValueError) as err:
        raise TrainError(f"--arch {block['type']}: {err}") from None


def parameter_groups(net: nn.Module, arch_type: str, lr: float, head_mult: float) -> list[dict]:
    """Backbone at ``lr``, the new last layer (if the arch is known) at ``lr * head_mult``."""
    prefix = HEAD_PREFIXES.get(arch_type)
    head = [p for n, p in net.named_parameters() if prefix and n.startswith(prefix)]
    body = [p for n, p in net.named_parameters() if not (prefix and n.startswith(prefix))]
    groups = [{"params": body, "lr": lr, "initial_lr": lr}]
    if head:
        groups.append({"params": head, "lr": lr * head_mult, "initial_lr": lr * head_mult})
    return groups


def build_optimizer(groups: list[dict], args: argparse.Namespace) -> torch.optim.Optimizer:
    if args.optim == "sgd":
        return torch.optim.SGD(groups, momentum=args.momentum, weight_decay=args.weight_decay)
    kind = torch.optim.Adam if args.optim == "adam" else torch.optim.AdamW
    return kind(groups, weight_decay=args.weight_decay)


def lr_factor(epoch: int, args: argparse.Namespace) -> float:
    """Learning-rate factor of ``epoch`` (0-based) for the chosen schedule."""
    if args.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / args.epochs))
    if args.schedule == "step":
        return args.gamma ** sum(epoch >= m for m in args.milestones)
    return 1.0


# ----------------------------------------------------------------------------- loops
def train_one_epoch(
    net: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, device: torch.device
) -> dict[str, float]:
    """One pass over ``loader``; returns the mean loss and the train top-1 (%)."""
    net.train()
    total_loss, correct, seen = 0.0, 0, 0
    for batch in tqdm(loader, desc="train", unit="batch", leave=False):
        images, labels = batch["img"].to(device), batch["label"].to(device)
        logits = net(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
    return {"loss": total_loss / seen, "train_top1": 100.0 * correct / seen}


@torch.no_grad()
def evaluate(net: nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Top-1 accuracy (%) over ``loader``."""
    net.eval()
    correct, seen = 0, 0
    for batch in tqdm(loader, desc="test", unit="batch", leave=False):
        predictions = net(batch["img"].to(device)).argmax(1).cpu()
        correct += int((predictions == batch["label"]).sum())
        seen += len(predictions)
    return 100.0 * correct / seen


def append_log(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def description(block: dict, args: argparse.Namespace, class_names: list[str]) -> dict:
    """What eval_classification.py needs to rebuild and feed the classifier."""
    return {
        "arch": block,
        "image_size": args.image_size,
        "resize_size": round(args.image_size * 256 / 224),
        "class_names": class_names,
    }


def load_last(path: Path, block: dict) -> dict[str, Any]:
    state = read_training_state(path)  # weights_only, numpy RNG states allowed
    if state.get("meta", {}).get("arch") != block:
        raise TrainError(
            f"{path} was trained as {state.get('meta', {}).get('arch')}, not {block}; use the same "
            f"--arch/--arch-kw to resume, or another --out."
        )
    return state


# ----------------------------------------------------------------------------- main
def cub_split(args: argparse.Namespace, split: str) -> CUBDataset:
    """The train split with augmentation, or the test split with the evaluation view."""
    return build_dataset(
        {
            "type": "CUBDataset",
            "name": f"CUB {split}",
            "phase": "train" if split == "train" else "test",
            "split": split,
            "dataroot": str(args.data),
            "image_size": args.image_size,
        },
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    if args.weights is None and not args.allow_random_init:
        raise TrainError(
            "give the ImageNet weights with --weights (e.g. experiments/pretrained_models/"
            "resnet50-0676ba61.pth); --allow-random-init trains from scratch (tests only)."
        )
    if args.weights is not None and not args.weights.is_file():
        raise TrainError(f"--weights {args.weights}: no such file.")
    last_path = args.out / LAST_FILE
    if last_path.exists() and not args.resume:
        raise TrainError(
            f"{last_path} exists; pass --resume to continue it or choose another --out."
        )
    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        raise TrainError(f"--device: {err}") from None
    try:
        train_set, test_set = cub_split(args, "train"), cub_split(args, "test")
        loader = build_dataloader(
            train_set,
            {
                "phase": "train",
                "batch_size_per_gpu": args.batch_size,
                "num_worker_per_gpu": args.workers,
                "use_shuffle": True,
            },
            seed=args.seed,
        )
    except (OSError, ValueError) as err:
        raise TrainError(str(err)) from None

    block = arch_block(args, train_set.num_classes)
    torch.manual_seed(args.seed)
    net = build_classifier(block, args.weights).to(device)
    groups = parameter_groups(net, block["type"], args.lr, args.head_lr_mult)
    optimizer = build_optimizer(groups, args)
    meta = description(block, args, train_set.class_names)
    start_epoch = 0
    mkdirs(args.out)
    if args.resume and last_path.is_file():
        state = load_last(last_path, block)
        net.load_state_dict(state["params"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start_epoch = state["epoch"]
        print(f"Resuming {last_path} after epoch {start_epoch}.")

    for epoch in range(start_epoch, args.epochs):
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lr_factor(epoch, args)
        loader.sampler.set_epoch(epoch)
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        record.update(train_one_epoch(net, loader, optimizer, device))
        state = {
            "params": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch + 1,
            "rng": get_rng_state(),
            "meta": meta,
        }
        atomic_torch_save(state, last_path)
        append_log(args.out / LOG_FILE, record)
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {record['loss']:.4f}, "
            f"train top-1 {record['train_top1']:.2f} %, lr {record['lr']:.3g}"
        )
    atomic_torch_save({"params": net.state_dict(), **meta}, args.out / FINAL_FILE)
    if not args.no_test:
        test_loader = DataLoader(test_set, batch_size=args.batch_size, num_workers=args.workers)
        top1 = evaluate(net, test_loader, device)
        append_log(args.out / LOG_FILE, {"test_top1": top1, "test_images": len(test_set)})
        print(f"clean test top-1: {top1:.2f} % ({len(test_set)} images)")
    print(f"Classifier written to {args.out / FINAL_FILE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    get_root_logger()
    try:
        return run(args)
    except TrainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
