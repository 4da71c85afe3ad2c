"""Train a restoration model: ``python diffsr/train.py -opt options/<file>.yml``.

Distributed: ``torchrun --nproc_per_node=N diffsr/train.py -opt X.yml --launcher pytorch``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the package, not sibling modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import logging
import math
import os
import time
from typing import Any

import torch

from diffsr.data import build_dataloader, build_dataset
from diffsr.data.progressive import progressive_schedule
from diffsr.models import build_model
from diffsr.models.checkpoint import latest_training_state, load_training_state
from diffsr.utils.dist_util import barrier, init_dist
from diffsr.utils.environment import describe_environment
from diffsr.utils.file_util import atomic_write_text, mkdirs
from diffsr.utils.logger import (
    MessageLogger,
    MetricsWriter,
    get_root_logger,
    init_tb_logger,
    with_wandb,
)
from diffsr.utils.misc import get_time_str, set_random_seed
from diffsr.utils.options import OptionError, parse_options
from diffsr.utils.yaml_util import dump_yaml

__all__ = ["main", "parse_args", "train"]

logger = logging.getLogger("diffsr")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-opt", "--opt", required=True, help="path to the option YAML file")
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    parser.add_argument(
        "--auto_resume", action="store_true", help="continue from the latest training state"
    )
    parser.add_argument("--debug", action="store_true", help="debug_ prefix, log every iteration")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        action="extend",
        metavar="KEY=VALUE",
        help="override options, e.g. --set train.total_iter=10 datasets.train.batch_size_per_gpu=2",
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def set_cpu_threads(num_threads: int | None = None) -> None:
    """Intra-op threads: ``num_threads`` (the option) when given, since CPU results depend on
    the thread count; else one process per core group (more threads than cores makes CPU
    steps many times slower) unless OMP_NUM_THREADS is set."""
    if num_threads is not None:
        if num_threads < 1:
            raise OptionError(f"num_threads must be >= 1, got {num_threads}.")
        torch.set_num_threads(num_threads)
        return
    if "OMP_NUM_THREADS" in os.environ or torch.cuda.is_available():
        return
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))


def find_resume_state(opt: dict[str, Any]) -> Path | None:
    if opt["path"]["resume_state"]:
        return Path(opt["path"]["resume_state"])
    if opt["auto_resume"]:
        return latest_training_state(opt["path"]["training_states"])
    return None


def prepare_experiment_dir(opt: dict[str, Any], opt_path: str, resuming: bool) -> None:
    """Create experiments/<name>/...; an existing folder of a fresh run is archived, not lost."""
    paths = opt["path"]
    root = Path(paths["experiments_root"])
    if opt["rank"] == 0:
        if root.exists() and not resuming:
            archived = root.with_name(f"{root.name}_archived_{get_time_str()}")
            root.rename(archived)
            print(f"Existing experiment folder moved to {archived}", file=sys.stderr)
        mkdirs(root, paths["models"], paths["training_states"], paths["visualization"])
        stamp = get_time_str()
        atomic_write_text(root / f"options_{stamp}.yml", dump_yaml(opt))
        atomic_write_text(root / f"original_{Path(opt_path).name}", Path(opt_path).read_text())
        # threads, versions, CPU/ISA: what CPU results depend on beyond the options
        atomic_write_text(root / "environment.json", json.dumps(describe_environment(), indent=2))
    barrier()


def build_loaders(opt: dict[str, Any]) -> tuple[Any, list[Any]]:
    """The training loader (with its resumable EpochSampler) and one loader per val set."""
    train_loader, val_loaders = None, []
    seed = opt["manual_seed"]
    for phase, dataset_opt in opt["datasets"].items():
        dataset = build_dataset(dataset_opt, seed=seed, scale=opt["scale"])
        loader = build_dataloader(
            dataset,
            dataset_opt,
            dataset_opt["phase"],
            world_size=opt["world_size"],
            rank=opt["rank"],
            seed=seed,
        )
        if dataset_opt["phase"] == "train":
            train_loader = loader
        else:
            val_loaders.append(loader)
            logger.info(
                "Validation set %s (%s): %d images.", dataset_opt["name"], phase, len(dataset)
            )
    if train_loader is None:
        raise OptionError("The options have no datasets.train block; training needs one.")
    return train_loader, val_loaders


def train(opt: dict[str, Any], opt_path: str) -> dict[str, Any]:
    """Run the training loop described by validated options; returns the last validation results."""
    resume_path = find_resume_state(opt)
    state = load_training_state(resume_path) if resume_path else None
    prepare_experiment_dir(opt, opt_path, resuming=state is not None)
    root = Path(opt["path"]["experiments_root"])
    get_root_logger(root / f"train_{opt['name']}_{get_time_str()}.log")
    set_random_seed(opt["manual_seed"] + opt["rank"])
    tb_logger = (
        init_tb_logger(root / "tb_logger")
        if opt["logger"]["use_tb_logger"] and opt["rank"] == 0
        else None
    )
    tb_logger = with_wandb(tb_logger, opt, root)  # logger.wandb: losses and metrics to W&B
    for note in opt.get("dialect_notes", []):  # keys of other codebases, mapped or inert
        logger.info(note)
    metrics_log = MetricsWriter(root / "metrics.jsonl")

    model = build_model(opt)  # before any data: a missing weight file fails here, at once
    start_iter = 0
    if state is not None:
        start_iter = state["iter"]
        model.load_networks_for_resume(start_iter)
        model.resume_training(state)
        logger.info("Resumed from %s at iteration %d.", resume_path, start_iter)

    train_loader, val_loaders = build_loaders(opt)
    sampler = train_loader.sampler
    batch_size = opt["datasets"]["train"]["batch_size_per_gpu"]
    progressive = progressive_schedule(  # Restormer's mini_batch_sizes / gt_sizes, or None
        train_loader.dataset.opt, batch_size, opt["manual_seed"], opt["rank"]
    )
    iters_per_epoch = len(train_loader)
    if iters_per_epoch == 0:
        raise OptionError(
            f"datasets.train has {len(train_loader.dataset)} samples, fewer than one batch of "
            f"{opt['datasets']['train']['batch_size_per_gpu']} per process; lower the batch size."
        )
    total_iter = opt["train"]["total_iter"]
    total_epochs = math.ceil(total_iter / iters_per_epoch)
    logger.info(
        "Training %d iterations (%d per epoch, %d epochs), %d process(es), device %s.",
        total_iter,
        iters_per_epoch,
        total_epochs,
        opt["world_size"],
        model.device,
    )

    msg_logger = MessageLogger(total_iter, start_iter, tb_logger)
    log_opt, val_opt = opt["logger"], opt["val"]
    current_iter = start_iter
    results: dict[str, Any] = {}
    epoch = sampler.seek(start_iter, opt["datasets"]["train"]["batch_size_per_gpu"])
    start_time = time.time()
    while current_iter < total_iter:
        for data in train_loader:
            current_iter += 1
            model.update_learning_rate(current_iter)
            if progressive is not None:
                data = progressive(data, current_iter)
            model.feed_data(data)
            losses = model.optimize_parameters(current_iter)
            if current_iter % log_opt["print_freq"] == 0 or current_iter == total_iter:
                record = {
                    "iter": current_iter,
                    "epoch": epoch,
                    "lr": model.get_current_learning_rate(),
                    **losses,
                }
                msg_logger(record)
                metrics_log.write(record)
            if current_iter % int(log_opt["save_checkpoint_freq"]) == 0:
                logger.info("Saving models and training state at iteration %d.", current_iter)
                model.save(epoch, current_iter)
            if val_loaders and current_iter % int(val_opt["val_freq"]) == 0:
                results = validate(model, val_loaders, current_iter, tb_logger, metrics_log)
            if current_iter >= total_iter:
                break
        epoch += 1
        sampler.set_epoch(epoch)
    logger.info("Training done in %s iterations; saving the latest model.", current_iter)
    model.save(epoch, "latest")
    if val_loaders and current_iter % int(val_opt["val_freq"]) != 0:
        results = validate(model, val_loaders, current_iter, tb_logger, metrics_log)
    if tb_logger is not None:
        tb_logger.close()
    logger.info("Wall time %.1f s.", time.time() - start_time)
    return results


def validate(
    model: Any,
    val_loaders: list[Any],
    current_iter: int,
    tb_logger: Any,
    metrics_log: MetricsWriter,
) -> dict[str, Any]:
    results = {}
    for loader in val_loaders:
        name = loader.dataset.opt.name or "val"
        values = model.validation(loader, current_iter, tb_logger, model.opt["val"]["save_img"])
        if values:
            metrics_log.write({"iter": current_iter, "val_set": name, **values})
            if getattr(model, "improved", False) and loader is val_loaders[0]:
                model.save_best()
        results[name] = values
    barrier()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        opt = parse_options(args.opt, is_train=True, overrides=args.set, debug=args.debug)
        set_cpu_threads(opt["num_threads"])
    except (OptionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rank, world_size = 0, 1
    if args.launcher != "none":  # after the options: dist_params.backend / port apply
        dist_params = opt.get("dist_params") or {}
        rank, world_size = init_dist(
            args.launcher, backend=dist_params.get("backend"), port=dist_params.get("port", 29500)
        )
    opt.update(dist=world_size > 1, rank=rank, world_size=world_size, launcher=args.launcher)
    opt["auto_resume"] = opt["auto_resume"] or args.auto_resume
    train(opt, args.opt)
    if world_size > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
