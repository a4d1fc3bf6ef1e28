"""The papers' networks as backbone (input -> features) + head (features -> outputs).

``build_model(arch, in_shape=..., num_classes=..., head=...)`` is the one entry point;
archs and heads are registries so a method file can add a head it needs.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from weaklab.registry import Registry, import_submodules

ARCHS: Registry[Callable[..., nn.Module]] = Registry("arch")
HEADS: Registry[Callable[..., nn.Module]] = Registry("head")
register_arch = ARCHS.register
register_head = HEADS.register


class Net(nn.Module):
    """backbone -> head. ``features(x)`` is exposed for methods that need embeddings;
    ``spec`` holds the :func:`build_model` arguments that made it."""

    def __init__(self, backbone: nn.Module, head: nn.Module, spec: dict | None = None):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.spec = dict(spec or {})

    def fresh(self) -> "Net":
        """A new network of this architecture, initialised from the torch stream, on this
        network's device (Co-teaching's peer). Reached through a torch.compile wrapper too,
        which forwards attributes to the module it wraps."""
        return build_model(**self.spec).to(next(self.parameters()).device)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor):
        return self.head(self.backbone(x))


def build_model(arch: str, *, in_shape: tuple[int, ...], num_classes: int, head: str = "linear",
                width: float = 1.0) -> Net:
    """``width`` scales every layer's channels (1.0 = the paper's sizes)."""
    backbone = ARCHS.get(arch)(in_shape=in_shape, width=width)
    return Net(backbone, HEADS.get(head)(backbone.out_features, num_classes),
               spec={"arch": arch, "in_shape": tuple(in_shape), "num_classes": num_classes, "head": head, "width": width})


import_submodules(__name__, __path__)
