"""Logging: a root ``diffsr`` logger (console + file, rank 0), training log lines, TensorBoard,
Weights & Biases."""

from __future__ import annotations

import datetime
import json
import logging
import time
from pathlib import Path
from typing import Any

from diffsr.utils.dist_util import get_dist_info

__all__ = [
    "MessageLogger",
    "MetricsWriter",
    "ScalarWriters",
    "WandbWriter",
    "get_root_logger",
    "init_tb_logger",
    "with_wandb",
]

LOGGER_NAME = "diffsr"


def get_root_logger(
    log_file: str | Path | None = None, level: int = logging.INFO
) -> logging.Logger:
    """The ``diffsr`` logger; the first call with ``log_file`` adds a file handler (rank 0).

    Other ranks log errors only, so multi-process runs print one set of lines.
    """
    logger = logging.getLogger(LOGGER_NAME)
    rank, _ = get_dist_info()
    fmt = logging.Formatter("%(asctime)s %(levelname)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    if not any(getattr(h, "_diffsr", False) for h in logger.handlers):
        console = logging.StreamHandler()
        console.setFormatter(fmt)
        console._diffsr = True
        logger.addHandler(console)
        logger.propagate = False
    logger.setLevel(level if rank == 0 else logging.ERROR)
    if log_file is not None and rank == 0:
        for handler in list(logger.handlers):
            if isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
                handler.close()
        file_handler = logging.FileHandler(log_file, "a", encoding="utf-8")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


class MetricsWriter:
    """Appends one JSON object per line (training losses, validation metrics) for tools/plots."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, record: dict[str, Any]) -> None:
        if get_dist_info()[0] != 0:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def init_tb_logger(log_dir: str | Path):
    """A TensorBoard SummaryWriter, or None (with a warning) when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logging.getLogger(LOGGER_NAME).warning(
            "use_tb_logger is on but the tensorboard package is not installed "
            "(pip install tensorboard); continuing without TensorBoard."
        )
        return None
    return SummaryWriter(log_dir=str(log_dir))


class WandbWriter:
    """``add_scalar(tag, value, step)`` / ``close()`` (TensorBoard's calls) on a wandb run."""

    def __init__(self, opt: dict[str, Any], log_dir: str | Path) -> None:
        import wandb  # optional: pip install 'diffsr[wandb]'; options.py checks it at start

        wandb_opt = opt["logger"]["wandb"]
        resume_id = wandb_opt.get("resume_id")
        self.run = wandb.init(
            project=wandb_opt["project"],
            entity=wandb_opt.get("entity"),
            name=opt["name"],
            id=resume_id or None,
            resume="allow" if resume_id else None,
            config=opt,
            dir=str(log_dir),
        )
        logging.getLogger(LOGGER_NAME).info(
            "Weights & Biases run %s (project %s, id %s).",
            self.run.name,
            wandb_opt["project"],
            self.run.id,
        )

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.run.log({tag: value}, step=step)

    def close(self) -> None:
        self.run.finish()


class ScalarWriters:
    """Several scalar writers (TensorBoard, wandb) behind the one ``add_scalar`` call."""

    def __init__(self, writers: list[Any]) -> None:
        self.writers = writers

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        for writer in self.writers:
            writer.add_scalar(tag, value, step)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def with_wandb(tb_logger: Any, opt: dict[str, Any], log_dir: str | Path) -> Any:
    """``tb_logger`` plus a wandb run when ``logger.wandb.project`` is set (rank 0 only); the
    run's files go to ``log_dir/wandb``. Returns ``tb_logger`` unchanged otherwise."""
    wandb_opt = opt["logger"].get("wandb") or {}
    if not wandb_opt.get("project") or get_dist_info()[0] != 0:
        return tb_logger
    writers = [w for w in (tb_logger, WandbWriter(opt, log_dir)) if w is not None]
    return ScalarWriters(writers)


class MessageLogger:
    """Formats the periodic training line: iteration, epoch, lr, each loss, s/iter and ETA."""

    def __init__(self, total_iter: int, start_iter: int = 0, tb_logger: Any = None) -> None:
        self.total_iter = total_iter
        self.start_iter = start_iter
        self.tb_logger = tb_logger
        self.start_time = time.time()
        self.logger = logging.getLogger(LOGGER_NAME)

    def reset_start(self, start_iter: int) -> None:
        self.start_iter = start_iter
        self.start_time = time.time()

    def __call__(self, record: dict[str, Any]) -> str:
        """Log ``record`` (iter, epoch, lr, losses); adds ``sec_per_iter`` to it."""
        it, epoch = record["iter"], record["epoch"]
        done = max(it - self.start_iter, 1)
        sec_per_iter = (time.time() - self.start_time) / done
        eta = datetime.timedelta(seconds=int(sec_per_iter * (self.total_iter - it)))
        parts = [f"[epoch {epoch:3d}, iter {it:8,d}/{self.total_iter:,d}, lr {record['lr']:.3e}]"]
        parts.append(f"[{sec_per_iter:.3f} s/iter, eta {eta}]")
        losses = {
            k: v for k, v in record.items() if k not in ("iter", "epoch", "lr", "sec_per_iter")
        }
        record["sec_per_iter"] = sec_per_iter
        parts.append(" ".join(f"{k}: {v:.4e}" for k, v in losses.items()))
        line = " ".join(parts)
        self.logger.info(line)
        if self.tb_logger is not None:
            for key, value in losses.items():
                self.tb_logger.add_scalar(f"losses/{key}", value, it)
            self.tb_logger.add_scalar("lr", record["lr"], it)
        return line
