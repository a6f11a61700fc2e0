"""Feature cache for a frozen backbone: every frame goes through the backbone once, not every
epoch.

A frozen backbone (weights and BatchNorm statistics) maps a frame to the same features each
time, and training windows overlap (stride 8 of 16), so the old script's 124,400 ResNet-50
passes per epoch reduce to one pass over each split's unique frames. Features are stored as a
float32 array with one row per frame, in the frame cache's order, so a window reads its rows
exactly as it would read its frames. The file name hashes the frames (the frame cache's name
already does), the backbone's weights and buffers, and the precision they were computed in.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import torch

from tennis_exp.config import Precision
from tennis_exp.data.frames import WindowDataset
from tennis_exp.engine.distributed import Dist
from tennis_exp.engine.hardware import autocast
from tennis_exp.files import atomic_write
from tennis_exp.models.cnn_lstm import CNNLSTM

log = logging.getLogger(__name__)

# Part of the key: bump it whenever how features are computed or stored changes.
_VERSION = 1
# Frames per backbone pass: large enough to keep a GPU busy, small enough for its memory.
_CHUNK = 256


def weights_digest(module: torch.nn.Module) -> str:
    """A hash of every parameter and buffer (BatchNorm statistics included)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}\0{tuple(tensor.shape)}\0{tensor.dtype}\n".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def feature_file(
    cache_dir: Path, split: str, frames: Path, weights: str, precision: Precision
) -> Path:
    key = hashlib.sha256(f"v{_VERSION}\0{frames.name}\0{weights}\0{precision.value}".encode())
    return cache_dir / f"{split}-{key.hexdigest()[:24]}.npy"


def cached_features(
    model: CNNLSTM,
    datasets: dict[str, WindowDataset],
    cache_dir: Path,
    precision: Precision,
    device: torch.device,
    dist: Dist,
) -> dict[str, WindowDataset]:
    """The datasets re-pointed at their frames' backbone features, computing what is missing.

    Each machine's first rank computes what its disk lacks (nodes need not share one); the
    other ranks wait, then read the same files."""
    weights = weights_digest(model.backbone)
    files = {
        split: feature_file(cache_dir, split, dataset.cache_file, weights, precision)
        for split, dataset in datasets.items()
    }
    if dist.is_node_main:
        for split, path in files.items():
            if path.exists():
                log.info("%s: reusing feature cache %s", split, path)
                continue
            started = time.perf_counter()
            rows = _compute(model, datasets[split].cache_file, path, precision, device)
            log.info(
                "%s: backbone features of %d frames in %.1fs -> %s",
                split,
                rows,
                time.perf_counter() - started,
                path,
            )
    dist.barrier()
    return {split: dataset.reading(files[split]) for split, dataset in datasets.items()}


@torch.no_grad()
def _compute(
    model: CNNLSTM, frames_file: Path, path: Path, precision: Precision, device: torch.device
) -> int:
    frames = np.load(frames_file, mmap_mode="r")
    was_training = model.training
    model.eval()
    try:
        with atomic_write(path) as tmp:
            out = None
            for start in range(0, len(frames), _CHUNK):
                chunk = torch.from_numpy(np.array(frames[start : start + _CHUNK]))
                with autocast(precision, device.type):
                    features = model.features(chunk.to(device, non_blocking=True)[None])[0]
                if out is None:
                    out = np.lib.format.open_memmap(
                        tmp, mode="w+", dtype=np.float32, shape=(len(frames), features.shape[1])
                    )
                out[start : start + len(chunk)] = features.float().cpu().numpy()
            out.flush()
            del out
    finally:
        model.train(was_training)
    return len(frames)
