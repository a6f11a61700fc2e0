"""Training augmentation on the device: horizontal flip and colour jitter of a batch of
windows [B, T, 3, H, W], each window drawing its own parameters (or each frame, as the old
script did), so the loader is not slowed and the GPU does the work."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torchvision.transforms.v2 import functional as TF

from tennis_exp.config import Augment, AugmentPer


class Draw(NamedTuple):
    """Per window [B, 1, 1, 1, 1] (or per frame [B, T, 1, 1, 1]): flip, and the factors."""

    flip: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor


def augment(frames: torch.Tensor, cfg) -> torch.Tensor:
    """uint8 (or float) frames in [0, 255] -> float frames in [0, 255] (unchanged if none)."""
    if cfg.kind is Augment.none:
        return frames
    return apply(frames.float(), draw(frames.shape[:2], cfg, frames.device))


def draw(batch: torch.Size, cfg, device: torch.device) -> Draw:
    """Parameters as torchvision's RandomHorizontalFlip and ColorJitter draw them, one draw per
    window (its frames share it) or per frame (cfg.per=frame)."""
    b, t = batch
    shape = (b, t if cfg.per is AugmentPer.frame else 1, 1, 1, 1)

    def factor(spread: float) -> torch.Tensor:
        return torch.empty(shape, device=device).uniform_(1 - spread, 1 + spread)

    flip = torch.rand(shape, device=device) < cfg.flip_p
    return Draw(flip, factor(cfg.brightness), factor(cfg.contrast), factor(cfg.saturation))


def apply(x: torch.Tensor, d: Draw) -> torch.Tensor:
    """ColorJitter's adjustments, in a fixed order (brightness, contrast, saturation)."""
    x = torch.where(d.flip, TF.horizontal_flip(x), x)
    x = (x * d.brightness).clamp_(0, 255)
    mean = TF.rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    x = _blend(x, mean, d.contrast)
    return _blend(x, TF.rgb_to_grayscale(x), d.saturation)


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's blend: ratio x + (1 - ratio) other, clamped."""
    return (ratio * x + (1 - ratio) * other).clamp_(0, 255)
