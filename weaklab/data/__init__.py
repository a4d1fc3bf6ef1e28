"""Clean datasets by name, as plain tensors with a train/val/test split fixed by a seed.

``x`` tensors are float32 ``(N, C, H, W)`` scaled to [0, 1]; ``y`` is ``(N,)`` int64 class
indices, or ``(N, K)`` float32 multi-hot for multi-label datasets. Every module in this
package registers its loaders with :func:`register_dataset`; :func:`load_dataset` is the
one entry point.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from weaklab.registry import ConfigError, Registry, import_submodules

Tensor = torch.Tensor


@dataclass
class Dataset:
    """A clean dataset split three ways. No weak labels here: see ``weaklab.settings``."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    superclass: Tensor | None = None
    """``(num_classes,)`` superclass index of each class (CIFAR-100's 20 coarse labels), else None."""

    @property
    def multilabel(self) -> bool:
        return self.y_train.dim() == 2

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> "Dataset":
        move = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
        return replace(self, **move)


Loader = Callable[..., Dataset]
DATASETS: Registry[Loader] = Registry("dataset")
register_dataset = DATASETS.register

#: datasets that need files under --data-root (the rest are bundled or synthetic)
NEEDS_ROOT: set[str] = set()


def load_dataset(name: str, *, root: str | None = None, split_seed: int = 0) -> Dataset:
    """Load dataset ``name``; ``root`` is the folder holding torchvision-format files."""
    if name not in DATASETS:
        raise ConfigError(f"dataset={name!r} is not allowed: one of {', '.join(DATASETS.names())}")
    if name in NEEDS_ROOT and not root:
        raise ConfigError(f"dataset={name!r} needs --data-root DIR: the folder holding its torchvision files")
    return DATASETS.get(name)(root=root, split_seed=split_seed)


def split_indices(n: int, *, val: float | int, test: float | int, seed: int, stratify=None):
    """Index arrays (train, val, test) of a seeded, optionally stratified split."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    n_test = test if isinstance(test, int) else int(round(test * n))
    n_val = val if isinstance(val, int) else int(round(val * n))
    rest, te = train_test_split(idx, test_size=n_test, random_state=seed, stratify=stratify)
    tr, va = train_test_split(
        rest, test_size=n_val, random_state=seed + 1, stratify=None if stratify is None else stratify[rest]
    )
    return np.sort(tr), np.sort(va), np.sort(te)


import_submodules(__name__, __path__)
