"""The model over a stream of frames: each frame through the backbone once, in batches on the
run's devices, then every window of their features through the LSTM head.

A window's probabilities are those of the model on its frames: in eval mode the backbone treats
frames one by one (BatchNorm uses its stored statistics), so features shared by overlapping
windows are computed once instead of window / stride times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tennis_exp.config import shows_progress_bar
from tennis_exp.data.video import Frame
from tennis_exp.engine.hardware import RunPlan, autocast, wrap_model
from tennis_exp.inference.windows import Ring, chunks
from tennis_exp.models.cnn_lstm import CNNLSTM

log = logging.getLogger(__name__)


class FrameEncoder(nn.Module):
    """uint8 frames [N, 3, H, W] -> the model's per-frame features [N, D] (CNNLSTM.features,
    frame by frame): the part that DataParallel splits over GPUs. It holds the backbone alone,
    as DataParallel copies every parameter of its module to every GPU at every step."""

    def __init__(self, model: CNNLSTM) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.register_buffer("mean", model.mean, persistent=False)
        self.register_buffer("std", model.std, persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.backbone((frames.float() / 255 - self.mean) / self.std).flatten(1)


@dataclass
class WindowProbabilities:
    """One video's windows: their time spans and the model's class probabilities."""

    start: np.ndarray  # [W] seconds: the window's first frame
    end: np.ndarray  # [W] seconds: its last frame's time plus one frame
    probabilities: np.ndarray  # [W, classes]
    frames: int  # frames decoded
    duration: float  # seconds of video decoded: the last frame's time plus one frame
    seconds: float  # wall-clock time of decoding and inference

    @property
    def centres(self) -> np.ndarray:
        return (self.start + self.end) / 2

    @property
    def realtime_factor(self) -> float:
        return self.duration / self.seconds

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds


class Predictor:
    """A trained model on the plan's devices, reading windows of `window` frames every
    `stride`, `batch` frames per device at a time."""

    def __init__(self, model: CNNLSTM, plan: RunPlan, window: int, stride: int, batch: int):
        model.eval().to(plan.device)
        self.encoder = wrap_model(FrameEncoder(model), plan)
        self.head = model.head()
        self.plan, self.window, self.stride = plan, window, stride
        self.batch = batch * max(1, len(plan.setup.device_ids))
        self.ring: Ring | None = None

    @torch.no_grad()
    def run(self, frames: Iterable[Frame], frame_step: float, progress: Progress):
        """The windows of a stream of frames; `frame_step`: one frame's duration."""
        device, precision = self.plan.device, self.plan.precision
        self.ring = Ring(self.window, self.stride)
        spans, probabilities, count, last = [], [], 0, -frame_step
        started = time.perf_counter()
        for images, times in chunks(frames, self.batch):
            pixels = torch.from_numpy(images).permute(0, 3, 1, 2).to(device)
            with autocast(precision, device.type):
                features = self.encoder(pixels)
            windows, window_times = self.ring.push(features, torch.from_numpy(times))
            if len(windows):
                with autocast(precision, device.type):
                    logits = self.head(windows)
                probabilities.append(logits.float().softmax(1))  # on the device: no sync here
                spans.append(window_times[:, [0, -1]])
            count, last = count + len(images), float(times[-1])
            progress.update(len(images), last + frame_step)
        span = torch.cat(spans).numpy() if spans else np.zeros((0, 2))
        probs = torch.cat(probabilities).cpu().numpy() if probabilities else np.zeros((0, 0))
        return WindowProbabilities(
            span[:, 0],
            span[:, 1] + frame_step,
            probs,
            count,
            last + frame_step,
            time.perf_counter() - started,
        )


class Progress:
    """Frames done, frames per second and the real-time factor (video seconds per wall
    second): a tqdm bar on a terminal, else a log line every `every` seconds."""

    def __init__(self, name: str, total: int | None, bar: bool | None, every: float = 30.0):
        self.name, self.every = name, every
        self.started = self.logged = time.perf_counter()
        self.frames, self.video_time = 0, 0.0
        show = shows_progress_bar(bar)
        self.bar = tqdm(
            total=total, desc=name, unit="frame", disable=not show, dynamic_ncols=True, leave=False
        )

    def update(self, frames: int, video_time: float) -> None:
        self.frames += frames
        self.video_time = video_time
        now = time.perf_counter()
        self.bar.update(frames)
        if not self.bar.disable:
            self.bar.set_postfix_str(f"{self.realtime(now):.1f}x real time", refresh=False)
        elif now - self.logged >= self.every:
            self.logged = now
            log.info(
                "%s: %d frames, %.0f s of video: %.0f frames/s, %.1fx real time",
                self.name,
                self.frames,
                self.video_time,
                self.frames / (now - self.started),
                self.realtime(now),
            )

    def realtime(self, now: float) -> float:
        return self.video_time / max(now - self.started, 1e-9)

    def close(self) -> None:
        self.bar.close()
