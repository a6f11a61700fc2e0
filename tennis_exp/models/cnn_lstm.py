"""The users' CNN-LSTM: a per-frame CNN backbone, a bidirectional LSTM, an MLP head.

Parameter names match the users' old script (`backbone.*` = a torchvision ResNet's children
minus `fc`, `lstm.*`, `fc.0` / `fc.3`), so their `best_model.pth` files load unchanged.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from tennis_exp.config import Backbone
from tennis_exp.errors import UserError, first_line

# ImageNet statistics: what the torchvision backbones were trained with.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def small_cnn() -> tuple[nn.Module, int]:
    """A CNN small enough to train from scratch on a laptop CPU.

    It keeps a coarse 4x4 grid instead of pooling globally: where the ball is relative to the
    player is the signal.
    """
    layers: list[nn.Module] = []
    # Narrow at full resolution, where the cost is: 2.7x faster on a CPU than 16-32-64-64.
    channels = [3, 8, 16, 32, 64]
    for c_in, c_out in zip(channels, channels[1:], strict=False):
        layers += [
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
    layers.append(nn.AdaptiveAvgPool2d(4))
    return nn.Sequential(*layers), channels[-1] * 16


def resnet(name: str, pretrained: bool, weights_path: str | None) -> tuple[nn.Module, int]:
    """A torchvision ResNet without its classifier, as the old script built it."""
    if weights_path:
        net = torchvision.models.get_model(name, weights=None)
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except FileNotFoundError:
            raise UserError(f"model.weights_path={weights_path}: no such file") from None
        except Exception as err:
            raise UserError(
                f"model.weights_path={weights_path} is not a {name} state dict: {first_line(err)}"
            ) from None
    elif pretrained:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        try:
            net = torchvision.models.get_model(name, weights=weights)
        except Exception as err:
            raise UserError(
                f"could not download {name} weights ({first_line(err)}); "
                "on an offline machine pass model.weights_path=<local .pth file>"
            ) from None
    else:
        net = torchvision.models.get_model(name, weights=None)
    return nn.Sequential(*list(net.children())[:-1]), net.fc.in_features


def _classify(lstm: nn.LSTM, fc: nn.Sequential, features: torch.Tensor) -> torch.Tensor:
    """Per-frame features [B, T, D] -> logits: the BiLSTM's last step through the MLP head."""
    if torch.is_autocast_enabled(features.device.type):
        # Cached features are stored in float32. Under autocast the backbone hands the LSTM its
        # autocast dtype, and so do we: CPU autocast's LSTM fails on float32 input.
        features = features.to(torch.get_autocast_dtype(features.device.type))
    out, _ = lstm(features)
    return fc(out[:, -1])


class SequenceHead(nn.Module):
    """The part of a CNNLSTM after the backbone, sharing its parameters: what trains on a
    frozen backbone's cached features, and all that a wrapper then needs to hold."""

    def __init__(self, lstm: nn.LSTM, fc: nn.Sequential) -> None:
        super().__init__()
        self.lstm, self.fc = lstm, fc

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return _classify(self.lstm, self.fc, features)


class CNNLSTM(nn.Module):
    """uint8 frames [B, T, 3, H, W], or their backbone features [B, T, D] (a frozen backbone's
    feature cache), -> event logits [B, classes]."""

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        num_classes: int,
        lstm_hidden: int,
        lstm_layers: int,
        lstm_dropout: float,
        head_hidden: int,
        head_dropout: float,
        freeze_backbone: bool,
        freeze_bn_stats: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.lstm = nn.LSTM(
            feature_dim,
            lstm_hidden,
            lstm_layers,
            batch_first=True,
            dropout=lstm_dropout if lstm_layers > 1 else 0.0,
            bidirectional=True,
        )
        self.fc = nn.Sequential(
            nn.Linear(2 * lstm_hidden, head_hidden),
            nn.ReLU(),
            nn.Dropout(head_dropout),
            nn.Linear(head_hidden, num_classes),
        )
        # Not persistent: normalisation is not a weight, and old checkpoints do not hold it.
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze_backbone = freeze_backbone
        # A frozen backbone keeps its BatchNorm statistics too, unless asked to update them as
        # the old script did (its whole model was in train mode).
        self.freeze_bn_stats = freeze_backbone and freeze_bn_stats
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        if self.freeze_bn_stats:
            self.backbone.eval()

    def train(self, mode: bool = True) -> CNNLSTM:
        super().train(mode)
        if self.freeze_bn_stats:
            self.backbone.eval()
        return self

    def unfreeze_backbone(self) -> None:
        """Train the backbone from now on, its BatchNorm statistics included."""
        self.freeze_backbone = self.freeze_bn_stats = False
        self.backbone.requires_grad_(True)
        self.backbone.train(self.training)

    def head(self) -> SequenceHead:
        return SequenceHead(self.lstm, self.fc)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame backbone features [B, T, feature_dim]."""
        b, t = frames.shape[:2]
        x = (frames.flatten(0, 1).float() / 255 - self.mean) / self.std
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            x = self.backbone(x)
        return x.view(b, t, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _classify(self.lstm, self.fc, x if x.dim() == 3 else self.features(x))


def build_model(model_cfg, num_classes: int, weights_follow: bool = False) -> CNNLSTM:
    """The configured model. `weights_follow`: a checkpoint will supply every weight (resume,
    `model.init_from`), so no ImageNet weights are read or downloaded for it to replace."""
    if model_cfg.backbone is Backbone.small_cnn:
        if model_cfg.pretrained or model_cfg.weights_path:
            raise UserError(
                "model.backbone=small_cnn has no pretrained weights; "
                "use model.backbone=resnet18 or resnet50 with model.pretrained/weights_path"
            )
        backbone, dim = small_cnn()
    elif weights_follow:
        backbone, dim = resnet(model_cfg.backbone.value, pretrained=False, weights_path=None)
    else:
        backbone, dim = resnet(
            model_cfg.backbone.value, model_cfg.pretrained, model_cfg.weights_path
        )

    def dropout(specific: float | None) -> float:
        return model_cfg.dropout if specific is None else specific

    return CNNLSTM(
        backbone,
        dim,
        num_classes,
        model_cfg.lstm_hidden,
        model_cfg.lstm_layers,
        dropout(model_cfg.lstm_dropout),
        model_cfg.head_hidden,
        dropout(model_cfg.head_dropout),
        model_cfg.freeze_backbone,
        model_cfg.freeze_bn_stats,
    )
