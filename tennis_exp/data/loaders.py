"""The batches a run reads: the training windows' resumable order, the splits' loaders (or the
same batches gathered from frames held on the device), and how long the loop waits for them."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Protocol

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from tennis_exp.data import device_cache
from tennis_exp.data.device_cache import DeviceBatches, DeviceWindows

log = logging.getLogger(__name__)


class Ranks(Protocol):
    """This process's place among the run's processes (the engine's `Dist`)."""

    rank: int
    world_size: int


class ResumableSampler(DistributedSampler):
    """This rank's share of the training windows in a new order every epoch, seeded by seed +
    epoch and so the same whatever the process (one process is a world of one); an epoch can
    start `skip` windows in, where a stopped run left it."""

    def __init__(self, dataset, seed: int, ranks: Ranks) -> None:
        super().__init__(dataset, num_replicas=ranks.world_size, rank=ranks.rank, seed=seed)
        self.skip = 0

    def start_epoch(self, epoch: int, skip: int = 0) -> None:
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return islice(super().__iter__(), self.skip, None)


def make_loader(dataset, batch_size: int, training, device: torch.device, seed: int, sampler=None):
    """`training`: the run's training config (its num_workers and prefetch_factor)."""
    workers = training.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=training.prefetch_factor if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
    )


def make_loaders(
    datasets, sampler, batch_size: int, device: torch.device, ranks: Ranks, training, seed: int
):
    """The train loader over `sampler`; val and test split over the ranks, each window once."""
    return {
        "train": make_loader(datasets["train"], batch_size, training, device, seed, sampler),
        **{
            split: make_loader(
                Subset(datasets[split], range(ranks.rank, len(datasets[split]), ranks.world_size)),
                batch_size,
                training,
                device,
                seed,
            )
            for split in ("val", "test")
        },
    }


def device_batches(
    datasets, sampler, batch_size: int, device: torch.device, ranks: Ranks, setting
) -> dict | None:
    """The splits' batches gathered from frames held on the device (the same batches as
    `make_loaders`'), or None where data.device_cache does not apply or they do not fit."""
    # Only over a frame cache (validation refuses `true` without one).
    if not device_cache.wanted(setting, device) or any(
        d.cache_file is None for d in datasets.values()
    ):
        return None
    windows = {  # a rank holds its val and test shards, and all of train (reshuffled each epoch)
        split: DeviceWindows(
            d, range(ranks.rank, len(d), ranks.world_size) if split != "train" else None
        )
        for split, d in datasets.items()
    }
    nbytes = sum(w.nbytes for w in windows.values())
    if not device_cache.fits_on(device, nbytes, setting):
        return None
    log.info("data.device_cache: %.2f GiB of frames on %s, no loader", nbytes / 2**30, device)
    return {
        split: DeviceBatches(
            w.to(device), sampler if split == "train" else range(len(w)), batch_size
        )
        for split, w in windows.items()
    }


class TimedBatches:
    """Batches, timed from the `warmup`-th on: the samples that went through, and the time
    spent waiting for the next batch (the loader's share of the epoch)."""

    def __init__(self, batches: Iterable, warmup: int, sync) -> None:
        self.batches, self.warmup, self.sync = batches, warmup, sync
        self.since: float | None = None
        self.samples = 0
        self.waited = 0.0

    def __iter__(self) -> Iterator:
        for i, batch in enumerate(self._fetched()):
            if i == self.warmup:
                self.sync()
                self.since = time.perf_counter()
            yield batch
            if self.since is not None:
                self.samples += len(batch[1])

    def _fetched(self) -> Iterator:
        batches = iter(self.batches)
        while True:
            asked = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            if self.since is not None:
                self.waited += time.perf_counter() - asked
            yield batch
