"""Label-proportion bags (paper 003, Liu et al., sec. 3.3 and 5.2).

The training set is cut into disjoint bags; each bag keeps only its class-proportion
vector p_i (the instance labels go to ``hidden`` for diagnostics). Two protocols:

- ``random`` (the paper's, after LLP-GAN): a random permutation cut into bags of
  ``bag_size``; the last partial bag is dropped or kept (``drop_last``).
- ``dirichlet``: non-uniform bags. For every bag, class weights pi ~ Dir(alpha 1_K) and
  class counts ~ Multinomial(bag_size, pi), capped by what is left of each class; a
  shortfall is filled uniformly from what is left. Small alpha gives nearly pure bags,
  large alpha approaches ``random``.

Instances are stored in bag order (bag 0 first), so ``weak["bag"]`` is non-decreasing;
methods must not rely on that (``weaklab.ot.bag_layout`` works for any order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from weaklab.data import Dataset
from weaklab.registry import ConfigError, check
from weaklab.settings import WeakData, clean_evals, register_setting


@dataclass(frozen=True)
class BagParams:
    bag_size: int = 64
    """instances per bag (paper: 16, 32, 64, 128)"""
    protocol: str = "random"
    """random (paper 003) | dirichlet (non-uniform proportions)"""
    drop_last: bool = False
    """drop the last, partial bag instead of keeping it as a smaller bag"""
    alpha: float = 1.0
    """Dirichlet concentration of the class weights of each bag (``dirichlet`` only)"""

    def __post_init__(self):
        check(isinstance(self.bag_size, int) and self.bag_size >= 1, "setting.bag_size", self.bag_size,
              "an integer >= 1 (and at most the training-set size)")
        check(self.protocol in ("random", "dirichlet"), "setting.protocol", self.protocol, "random or dirichlet")
        check(self.alpha > 0, "setting.alpha", self.alpha, "a Dirichlet concentration > 0")


def random_bags(n: int, bag_size: int, *, drop_last: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """Disjoint bags of a random permutation of range(n), in order."""
    perm = rng.permutation(n)
    cut = (n // bag_size) * bag_size if drop_last else n
    return [perm[s:s + bag_size] for s in range(0, cut, bag_size)]


def dirichlet_bags(y: np.ndarray, num_classes: int, bag_size: int, *, alpha: float, drop_last: bool,
                   rng: np.random.Generator) -> list[np.ndarray]:
    """Disjoint bags whose class mix is drawn from Dir(alpha); the loop is over bags, not samples."""
    pools = [rng.permutation(np.flatnonzero(y == k)) for k in range(num_classes)]
    used = np.zeros(num_classes, dtype=np.int64)
    left = np.array([len(p) for p in pools], dtype=np.int64)
    bags = []
    while left.sum() >= bag_size or (not drop_last and left.sum() > 0):
        size = min(bag_size, int(left.sum()))
        counts = np.minimum(rng.multinomial(size, rng.dirichlet(np.full(num_classes, alpha))), left)
        short = size - counts.sum()
        if short:
            counts += rng.multivariate_hypergeometric(left - counts, short)
        bags.append(np.concatenate([pools[k][used[k]:used[k] + counts[k]] for k in range(num_classes)]))
        used += counts
        left -= counts
    return bags


def proportions_of(y: np.ndarray, bag: np.ndarray, num_bags: int, num_classes: int) -> np.ndarray:
    """(B, K) exact class proportions of each bag."""
    counts = np.zeros((num_bags, num_classes), dtype=np.float64)
    np.add.at(counts, (bag, y), 1.0)
    return counts / counts.sum(1, keepdims=True)


@register_setting("bags", kind="bags", params=BagParams)
def label_proportion_bags(data: Dataset, params: BagParams, rng: np.random.Generator) -> WeakData:
    """Disjoint bags with their class proportions (paper 003 sec. 5.2); instance labels hidden."""
    y = data.y_train.numpy()
    n, K = len(y), data.num_classes
    if params.bag_size > n:
        raise ConfigError(f"setting.bag_size={params.bag_size!r} is not allowed: at most the training-set size "
                          f"{n} of dataset {data.name!r}")
    if params.protocol == "random":
        bags = random_bags(n, params.bag_size, drop_last=params.drop_last, rng=rng)
    else:
        bags = dirichlet_bags(y, K, params.bag_size, alpha=params.alpha, drop_last=params.drop_last, rng=rng)
    order = np.concatenate(bags)
    bag = np.repeat(np.arange(len(bags)), [len(b) for b in bags])
    props = proportions_of(y[order], bag, len(bags), K)
    order_t = torch.from_numpy(order)
    purity = props.max(1).mean()  # 1.0 = every bag a single class (then LLP is supervised)
    return WeakData(
        kind="bags", num_classes=K, x=data.x_train[order_t],
        weak={"bag": torch.from_numpy(bag), "proportions": torch.from_numpy(props).float()},
        hidden={"y": data.y_train[order_t].clone()},
        evals=clean_evals(data),
        info={"num_bags": float(len(bags)), "bag_purity": float(purity), "kept": float(len(order) / n)},
    )
