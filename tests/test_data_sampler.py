"""EpochSampler and the train loader: determinism, resume, rank split, worker independence."""

import cv2
import numpy as np
import pytest
import torch

from diffsr.data import build_dataloader, build_dataset
from diffsr.data.sampler import EpochSampler


def test_each_epoch_is_a_seeded_permutation_of_virtual_indices():
    sampler = EpochSampler(7, seed=3, enlarge_ratio=2)
    assert len(sampler) == 14
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        assert sorted(indices) == list(range(epoch * 14, (epoch + 1) * 14))
        epochs.append([v - epoch * 14 for v in indices])
    assert epochs[0] != epochs[1] != epochs[2]  # reshuffled every epoch
    again = EpochSampler(7, seed=3, enlarge_ratio=2)
    again.set_epoch(1)
    assert [v - 14 for v in again] == epochs[1]
    other_seed = EpochSampler(7, seed=4, enlarge_ratio=2)
    other_seed.set_epoch(1)
    assert [v - 14 for v in other_seed] != epochs[1]
    ordered = EpochSampler(5, shuffle=False)
    ordered.set_epoch(2)
    assert list(ordered) == [10, 11, 12, 13, 14]


@pytest.mark.parametrize(("size", "replicas"), [(10, 1), (10, 3), (7, 4), (2, 3)])
def test_rank_split_covers_every_index_like_distributed_sampler(size, replicas):
    per_rank = -(-size // replicas)
    shards = []
    for rank in range(replicas):
        sampler = EpochSampler(size, num_replicas=replicas, rank=rank, seed=1)
        sampler.set_epoch(4)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler) == per_rank
    merged = [v for shard in shards for v in shard]
    assert set(merged) == set(range(4 * size, 5 * size))  # all covered
    assert len(merged) == per_rank * replicas  # padding only up to a multiple of replicas
    full = EpochSampler(size, seed=1)  # the same permutation, dealt out like DistributedSampler
    full.set_epoch(4)
    padded = (list(full) * replicas)[: per_rank * replicas]
    assert shards == [padded[rank::replicas] for rank in range(replicas)]


def test_set_start_resumes_with_the_tail_and_resets_next_epoch():
    sampler = EpochSampler(11, num_replicas=2, rank=1, seed=9)
    sampler.set_epoch(3)
    uninterrupted = list(sampler)
    resumed = EpochSampler(11, num_replicas=2, rank=1, seed=9)
    resumed.set_epoch(3)
    resumed.set_start(4)
    assert list(resumed) == uninterrupted[4:]
    resumed.set_epoch(4)
    sampler.set_epoch(4)
    assert list(resumed) == list(sampler)
    with pytest.raises(ValueError, match="set_start"):
        resumed.set_start(len(resumed) + 1)


def test_seek_matches_iteration_count():
    sampler = EpochSampler(10, seed=2)
    batch = 3  # 3 full batches per epoch with drop_last
    consumed = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        consumed += [indices[i * batch : (i + 1) * batch] for i in range(3)]
    resumed = EpochSampler(10, seed=2)
    epoch = resumed.seek(iteration=4, batch_size=batch)  # 4 batches done -> epoch 1, batch 1
    assert epoch == 1 and resumed.start == 3
    tail = list(resumed)
    assert [tail[i * batch : (i + 1) * batch] for i in range(2)] == consumed[4:6]


def write_tiny_set(root, count=6, size=12):
    rng = np.random.default_rng(0)
    for i in range(count):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        for side in ("lq", "gt"):
            (root / side).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / side / f"{i}.png"), img)


def loader_for(root, workers, seed=7):
    opt = {
        "name": "tiny",
        "type": "PairedImageDataset",
        "phase": "train",
        "dataroot_lq": str(root / "lq"),
        "dataroot_gt": str(root / "gt"),
        "gt_size": 8,
        "use_hflip": True,
        "use_rot": True,
        "batch_size_per_gpu": 2,
        "num_worker_per_gpu": workers,
        "dataset_enlarge_ratio": 2,
    }
    return build_dataloader(build_dataset(opt, seed=seed), opt, "train", seed=seed)


def epoch_batches(loader, epoch, start_iter=None):
    if start_iter is None:
        loader.sampler.set_epoch(epoch)
    else:
        assert loader.sampler.seek(start_iter, loader.batch_size) == epoch
    return [(b["lq"], b["gt"], b["lq_path"]) for b in loader]


def test_same_batches_with_0_and_2_workers_and_after_resume(tmp_path):
    write_tiny_set(tmp_path)
    serial = loader_for(tmp_path, workers=0)
    parallel = loader_for(tmp_path, workers=2)
    assert parallel.persistent_workers and parallel.num_workers == 2
    assert len(serial) == 6  # 12 samples per epoch (enlarge ratio 2), batch 2, drop_last
    for epoch in (0, 1):
        a, b = epoch_batches(serial, epoch), epoch_batches(parallel, epoch)
        assert len(a) == len(b) == 6
        for (lq_a, gt_a, path_a), (lq_b, gt_b, path_b) in zip(a, b, strict=True):
            assert torch.equal(lq_a, lq_b) and torch.equal(gt_a, gt_b) and path_a == path_b
    uninterrupted = epoch_batches(serial, 1)
    resumed = epoch_batches(loader_for(tmp_path, workers=0), 1, start_iter=6 + 2)
    assert len(resumed) == 4
    for (lq_a, _, path_a), (lq_b, _, path_b) in zip(uninterrupted[2:], resumed, strict=True):
        assert torch.equal(lq_a, lq_b) and path_a == path_b


def test_val_loader_is_ordered_batch_1(tmp_path):
    write_tiny_set(tmp_path, count=3)
    opt = {
        "type": "PairedImageDataset",
        "phase": "val",
        "dataroot_lq": str(tmp_path / "lq"),
        "dataroot_gt": str(tmp_path / "gt"),
    }
    # phase comes from the options; null loader keys take their automatic values
    loader = build_dataloader(
        build_dataset(opt), {**opt, "pin_memory": None, "prefetch_factor": None}
    )
    assert loader.batch_size == 1 and loader.num_workers == 0
    paths = [b["lq_path"][0] for b in loader]
    assert paths == [str(tmp_path / "lq" / f"{i}.png") for i in range(3)]
    assert next(iter(loader))["lq"].shape == (1, 3, 12, 12)
    with pytest.raises(ValueError, match="batch_size_per_gpu"):
        build_dataloader(build_dataset(opt), opt, "train")
