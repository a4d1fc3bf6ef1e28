"""Long-tailed partial-label learning (paper 001, Xu, Lian et al., sec. 3.1; protocol of Solar).

1. Long tail: class sizes fall geometrically from ``n_1`` to ``n_L = n_1 / gamma``
   (``n_1/n_2 = ... = n_{L-1}/n_L``); ``n_1`` is the smallest clean class count, so every
   class can supply its quota. Which class is the head, second, ..., tail is a random
   permutation drawn from the seed's generator; images are removed class-wise at random.
2. Candidate sets: every wrong label enters independently with probability
   ``psi = P(y_hat in S | y_hat != y)``; the true label is always in. The hierarchical
   variant (CIFAR-100-H) lets only labels of the true label's superclass enter.

Validation and test stay clean and balanced; the true labels live in ``hidden["y"]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from weaklab.data import Dataset
from weaklab.registry import ConfigError, check
from weaklab.settings import WeakData, clean_evals, register_setting


@dataclass(frozen=True)
class PartialParams:
    gamma: float = 10.0
    """imbalance ratio n_1 / n_L >= 1 (paper: 50/100/200 on CIFAR-10-LT, 10/20/50 on CIFAR-100-LT)"""
    psi: float = 0.3
    """flipping probability of each wrong label into the candidate set, in [0, 1]"""
    hierarchical: bool = False
    """flip only within the true label's superclass (CIFAR-100-H); needs a dataset with superclasses"""

    def __post_init__(self):
        check(self.gamma >= 1, "setting.gamma", self.gamma, "an imbalance ratio n_1/n_L >= 1")
        check(0.0 <= self.psi <= 1.0, "setting.psi", self.psi, "a flipping probability in [0, 1]")
        check(isinstance(self.hierarchical, bool), "setting.hierarchical", self.hierarchical, "true or false")


def many_medium_few(counts) -> torch.Tensor:
    """Paper 001's class groups (sec. 4.1 / Table 3, the one definition every method and the
    analysis use): classes sorted by training count, descending (ties by class index), Many =
    ranks ``1..floor(c/3)``, Few = ranks ``floor(2c/3)+1..c``, Medium the rest: 3/3/4 for
    c = 10, 33/33/34 for c = 100. Returns the group (0 many, 1 medium, 2 few) of each class.

    (Solar's code uses 3/4/3 and 66/68/66 instead; we follow paper 001's text.)
    """
    counts = torch.as_tensor(np.asarray(counts))
    c = len(counts)
    many, medium_end = c // 3, (2 * c) // 3
    if many == 0 or medium_end == many or medium_end == c:
        raise ConfigError(f"class groups: {c} classes leave a Many/Medium/Few group empty "
                          f"(paper 001 splits at floor(c/3) and floor(2c/3)); use a dataset with >= 3 classes")
    order = torch.argsort(counts, descending=True, stable=True)
    groups = torch.empty(c, dtype=torch.int64)
    groups[order[:many]] = 0
    groups[order[many:medium_end]] = 1
    groups[order[medium_end:]] = 2
    return groups


def long_tail_sizes(*, n_max: int, gamma: float, num_classes: int) -> np.ndarray:
    """``n_k = n_max * gamma^(-k/(L-1))`` for k = 0..L-1 (floored, at least 1 image per class)."""
    k = np.arange(num_classes)
    expo = k / max(num_classes - 1, 1)
    return np.maximum(1, np.floor(n_max * gamma ** (-expo) + 1e-9)).astype(np.int64)


def long_tail_indices(y: np.ndarray, *, gamma: float, num_classes: int, rng: np.random.Generator):
    """(kept indices sorted, per-class sizes indexed by class). The class order is ``rng.permutation``."""
    counts = np.bincount(y, minlength=num_classes)
    sizes_by_rank = long_tail_sizes(n_max=int(counts.min()), gamma=gamma, num_classes=num_classes)
    order = rng.permutation(num_classes)  # order[rank] = class holding that rank
    sizes = np.empty(num_classes, dtype=np.int64)
    sizes[order] = sizes_by_rank
    # one random key per image: within each class keep the `sizes[c]` smallest keys
    keys = rng.random(len(y))
    by_class = np.lexsort((keys, y))
    rank_in_class = np.arange(len(y)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = by_class[rank_in_class < sizes[y[by_class]]]
    return np.sort(keep), sizes


def candidate_sets(y: np.ndarray, *, psi: float, num_classes: int, rng: np.random.Generator,
                   superclass: np.ndarray | None = None) -> np.ndarray:
    """(N, K) float32 0/1 matrix: wrong labels flip in with prob. ``psi`` (within the superclass
    of ``y`` if ``superclass`` is given), the true label always in."""
    n = len(y)
    S = rng.random((n, num_classes)) < psi
    if superclass is not None:
        S &= superclass[y][:, None] == superclass[None, :]
    S[np.arange(n), y] = True
    return S.astype(np.float32)


@register_setting("partial", kind="partial", params=PartialParams)
def partial_labels(data: Dataset, params: PartialParams, rng: np.random.Generator) -> WeakData:
    """Long-tailed training set with uniform (or within-superclass) candidate label sets (paper 001 sec. 3.1)."""
    K = data.num_classes
    check(not data.multilabel, "dataset", data.name, "a single-label dataset for setting 'partial'")
    check(K >= 3, "dataset", data.name, f"a dataset with >= 3 classes for Many/Medium/Few (it has {K}: a group would be empty)")
    superclass = None
    if params.hierarchical:
        if data.superclass is None:
            raise ConfigError(f"setting.hierarchical=True is not allowed for dataset={data.name!r}: "
                              f"it has no superclasses (use cifar100)")
        superclass = data.superclass.numpy()
    y_all = data.y_train.numpy()
    keep, sizes = long_tail_indices(y_all, gamma=params.gamma, num_classes=K, rng=rng)
    y = y_all[keep]
    S = candidate_sets(y, psi=params.psi, num_classes=K, rng=rng, superclass=superclass)
    eligible = np.ones((len(y), K), bool) if superclass is None else superclass[y][:, None] == superclass[None, :]
    eligible[np.arange(len(y)), y] = False
    wrong_in = S.sum() - len(y)
    counts = np.bincount(y, minlength=K)
    return WeakData(
        kind="partial", num_classes=K, x=data.x_train[torch.from_numpy(keep)],
        weak={"S": torch.from_numpy(S)},
        hidden={"y": torch.from_numpy(y.astype(np.int64))},
        evals=clean_evals(data),
        class_groups=many_medium_few(counts),
        info={"flip_rate": float(wrong_in / max(eligible.sum(), 1)), "avg_candidates": float(S.sum(1).mean()),
              "n_train": float(len(y)), "n_max": float(counts.max()), "n_min": float(counts.min()),
              "realised_gamma": float(counts.max() / max(counts.min(), 1))},
    )
