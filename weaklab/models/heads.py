"""Output heads: plain linear logits, and the heteroscedastic location/scale head of paper 002."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from weaklab.models import register_head


@register_head("linear")
class LinearHead(nn.Linear):
    """features -> K logits (softmax, one-vs-rest or multi-label sigmoid: the method decides)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__(in_features, num_classes)


@register_head("heteroscedastic")
class HeteroscedasticHead(nn.Module):
    """Paper 002 Table 7: two dense heads, location f(x) and scale sigma(x) > 0.

    sigma = softplus(.) + 1e-6 keeps the scale positive with a gradient everywhere; the paper
    does not name its positivity map.
    """

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.loc = nn.Linear(in_features, num_classes)
        self.scale = nn.Linear(in_features, num_classes)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc(h), F.softplus(self.scale(h)) + 1e-6
