"""GPU-resident frames: the decoded frames of a split (or a frozen backbone's features of
them) held in device memory as one tensor, and windows gathered from it by index, on the
device. The host loader, its workers and the host-to-device copies are skipped.

The batches are those a DataLoader over the same sampler yields (the same seeded order, the
same mid-epoch resume, the same DDP shards), only gathered where the model runs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from itertools import islice

import numpy as np
import torch

from tennis_exp.data.frames import WindowDataset

log = logging.getLogger(__name__)

# Device memory kept free for the model, its activations and the optimizer: the larger of
# these. A frozen backbone in bf16 at batch 32 needed under 4 GiB on an H200.
MARGIN_BYTES = 4 * 2**30
MARGIN_SHARE = 0.2
# Rows copied to the device at a time: bounds the host memory the copy needs.
_CHUNK_BYTES = 256 * 2**20


def fits(nbytes: int, free: int, total: int) -> bool:
    """Whether `nbytes` fit in the device's free memory with the margin left over."""
    return nbytes + max(MARGIN_BYTES, MARGIN_SHARE * total) <= free


class DeviceWindows:
    """The windows `which` of a dataset (all by default) and the frame rows they read, to be
    held on a device: `to(device)` copies only those rows there."""

    def __init__(self, dataset: WindowDataset, which: Sequence[int] | None = None) -> None:
        which = list(range(len(dataset)) if which is None else which)
        rows = np.stack([dataset.frame_rows(i) for i in which])
        self._needed, local = np.unique(rows, return_inverse=True)
        self._array = np.load(dataset.cache_file, mmap_mode="r")
        self.rows = torch.as_tensor(local.reshape(rows.shape))
        self.labels = torch.as_tensor(dataset.index.labels[which])
        self.frames: torch.Tensor | None = None
        self.nbytes = len(self._needed) * self._array[0].nbytes

    def to(self, device: torch.device) -> DeviceWindows:
        self.rows, self.labels = self.rows.to(device), self.labels.to(device)
        self.frames = _to_device(self._array, self._needed, device)
        return self

    def __len__(self) -> int:
        return len(self.labels)

    def gather(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(frames [B, T, ...], labels [B]) of the windows at these positions."""
        return self.frames[self.rows[windows]], self.labels[windows]


def _to_device(array: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    out = torch.empty((len(rows), *array.shape[1:]), dtype=_DTYPES[array.dtype], device=device)
    step = max(1, _CHUNK_BYTES // max(1, array[0].nbytes))
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        out[start : start + len(chunk)] = torch.from_numpy(np.ascontiguousarray(array[chunk]))
    return out


_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.float32): torch.float32}


class DeviceBatches:
    """Batches of the sampler's windows, gathered on the device: what a DataLoader with this
    sampler and batch size yields (the last batch may be short), without one."""

    def __init__(self, windows: DeviceWindows, sampler, batch_size: int) -> None:
        self.windows, self.sampler, self.batch_size = windows, sampler, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        device, order = self.windows.labels.device, iter(self.sampler)
        while chunk := list(islice(order, self.batch_size)):
            yield self.windows.gather(torch.tensor(chunk, device=device))


def wanted(setting, device: torch.device) -> bool:
    """data.device_cache: `auto` on a GPU, `true` anywhere (on the CPU: host memory, and no
    loader workers)."""
    return setting is True or (setting == "auto" and device.type == "cuda")


def fits_on(device: torch.device, nbytes: int, setting) -> bool:
    """Whether `nbytes` of frames fit on the device; if not, says so once (the data loader
    then reads them)."""
    if device.type != "cuda":
        return True
    free, total = torch.cuda.mem_get_info(device)
    if fits(nbytes, free, total):
        return True
    log.warning(
        "data.device_cache=%s: the frames need %.1f GiB of %s, which has %.1f GiB free "
        "(%.1f GiB kept for the model): the data loader reads them instead",
        setting,
        nbytes / 2**30,
        device,
        free / 2**30,
        max(MARGIN_BYTES, MARGIN_SHARE * total) / 2**30,
    )
    return False
