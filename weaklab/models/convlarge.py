"""Networks of paper 003 (PLOT): the 13-layer max-pooling conv net, and the toy
3-hidden-layer MLP (a variant of ``weaklab.models.cnn.MLP``).

The paper names "a conv-based 13-layer max-pooling network" and defers its details to an
appendix (A.6) that is not in the text we have. The LLP papers it compares with (LLP-GAN,
LLP-VAT) use the ConvLarge net of Laine & Aila (2017) / Miyato et al. (VAT), which is a
13-layer max-pooling conv net, so that is the reconstruction here:

    3x conv3x3-128 (BN, LeakyReLU 0.1) | max-pool 2x2, dropout 0.5
    3x conv3x3-256 (BN, LeakyReLU 0.1) | max-pool 2x2, dropout 0.5
    conv3x3-512 valid, conv1x1-256, conv1x1-128 (BN, LeakyReLU 0.1) | global avg-pool | dense (the head)

9 conv + 2 pool + global pool + dense = 13 layers. On inputs too small for the valid 3x3
conv after two pools (digits' 8x8 ends at 2x2) that conv is padded instead.
"""

from __future__ import annotations

import torch
from torch import nn

from weaklab.models import register_arch
from weaklab.models.cnn import MLP


def _conv(c_in: int, c_out: int, k: int, pad: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, padding=pad), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.1)]


@register_arch("convlarge")
class ConvLarge(nn.Module):
    """The 13-layer conv net (see module docstring); ``width`` scales all channel counts."""

    def __init__(self, *, in_shape: tuple[int, ...], width: float = 1.0, dropout: float = 0.5):
        super().__init__()
        w = lambda c: max(4, int(round(c * width)))
        c, side = in_shape[0], min(in_shape[1:])
        layers: list[nn.Module] = []
        for c_out in (128, 256):
            for _ in range(3):
                layers += _conv(c, w(c_out), 3, 1)
                c = w(c_out)
            layers += [nn.MaxPool2d(2, 2), nn.Dropout(dropout)]
            side //= 2
        layers += _conv(c, w(512), 3, 0 if side >= 3 else 1)
        layers += _conv(w(512), w(256), 1, 0) + _conv(w(256), w(128), 1, 0)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.out_features = w(128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_arch("mlp3")
def mlp3(*, in_shape: tuple[int, ...], width: float = 1.0) -> MLP:
    """The two-moons net of paper 003 sec. 5.1: three hidden ReLU layers (128 * width units;
    the paper gives no width)."""
    return MLP(in_shape=in_shape, width=width, depth=3, units=128, min_units=4)
