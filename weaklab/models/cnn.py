"""Paper 002 Table 7 CNN (the Co-teaching net with GroupNorm(2) and LeakyReLU(0.01)), and an MLP."""

from __future__ import annotations

import math

import torch
from torch import nn

from weaklab.models import register_arch


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(2, c_out), nn.LeakyReLU(0.01)]


@register_arch("cnn")
class TableSevenCNN(nn.Module):
    """9 conv layers 128,128,128 | pool, drop .25 | 256,256,256 | pool, drop .25 | 512,256,128 | avg-pool.

    Adaptation to the input size: 3x3 convs with padding 1 and two 2x2 max-pools, so an
    8x8 digits image ends at 2x2 before the global average pool; 28x28 and 32x32 inputs
    are the paper's case. ``width`` scales all channel counts (digits studies use 0.125
    so a 2-core machine finishes a study in minutes; 1.0 is the paper's net).
    """

    def __init__(self, *, in_shape: tuple[int, ...], width: float = 1.0):
        super().__init__()
        w = lambda c: max(2, int(round(c * width / 2)) * 2)  # even, for GroupNorm(2)
        c = in_shape[0]
        layers: list[nn.Module] = []
        for spec in ((128, 128, 128), (256, 256, 256), (512, 256, 128)):
            for c_out in spec:
                layers += _block(c, w(c_out))
                c = w(c_out)
            if spec[0] != 512:
                layers += [nn.MaxPool2d(2, 2), nn.Dropout(0.25)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.out_features = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_arch("mlp")
class MLP(nn.Module):
    """Flatten -> ``depth`` hidden layers of ``units * width`` units (at least ``min_units``)
    with ReLU; the defaults are the usual LLP/PLL toy net, ``mlp3`` is paper 003's."""

    def __init__(self, *, in_shape: tuple[int, ...], width: float = 1.0, depth: int = 2, units: int = 512,
                 min_units: int = 8):
        super().__init__()
        h = max(min_units, int(units * width))
        d_in = math.prod(in_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for _ in range(depth):
            layers += [nn.Linear(d_in, h), nn.ReLU()]
            d_in = h
        self.body = nn.Sequential(*layers)
        self.out_features = h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
