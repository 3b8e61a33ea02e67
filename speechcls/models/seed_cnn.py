"""The chapter's CNN, exactly, with its input channels and classes taken from the store. Registered as "seed"
(the issue's `--model seed`); "seed_cnn", its name before, still builds it for older checkpoints."""

from __future__ import annotations

import torch
from torch import nn

from speechcls.models.registry import register

MIN_SIZE = 78  # unpadded 3x3 convs and 4 max-pools: 78 bins / frames is the least that leaves 1x1


def _out_size(n: int) -> int:
    for _ in range(4):
        n = (n - 2) // 2  # conv3x3 (no padding), then max-pool 2
    return n - 2  # the fifth conv has no pool after it


def check_input(freq: int, frames: int) -> None:
    """Refuse inputs the convolutions cannot take, before any training."""
    if _out_size(freq) < 1 or _out_size(frames) < 1:
        raise ValueError(
            f"features of {freq} frequency bins x {frames} frames are too small for the seed CNN, which needs at "
            f"least {MIN_SIZE} of each (e.g. --n-mels 128 rather than fewer)"
        )


class SeedCNN(nn.Module):
    """Five conv3x3 blocks 32-64-128-256-512 (BatchNorm, ReLU, MaxPool 2 but after the fifth,
    Dropout2d), adaptive average pool, head 512-512 (BatchNorm1d, ReLU, Dropout) -> n_classes.

    x: (B, C, F, T) -> logits (B, n_classes). Flatten instead of the chapter's squeeze(), which
    breaks at batch size 1.
    """

    def __init__(self, in_channels: int, n_classes: int, dropout2d: float = 0.2, dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        widths = [in_channels, 32, 64, 128, 256, 512]
        for i in range(5):
            layers += [nn.Conv2d(widths[i], widths[i + 1], kernel_size=3), nn.BatchNorm2d(widths[i + 1]), nn.ReLU()]
            if i < 4:
                layers.append(nn.MaxPool2d(kernel_size=2))
            else:
                layers.append(nn.AdaptiveAvgPool2d((1, 1)))
            layers.append(nn.Dropout2d(p=dropout2d))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(p=dropout), nn.Linear(512, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))  # (B, 512, 1, 1) -> (B, 512)


@register("seed", aliases=("seed_cnn",))
def seed_cnn(in_shape: tuple[int, ...], n_classes: int, dropout2d: float = 0.2, dropout: float = 0.5) -> SeedCNN:
    """The chapter's model; `in_shape` is (C, F, T)."""
    c, f, t = in_shape
    check_input(f, t)
    return SeedCNN(c, n_classes, dropout2d, dropout)
