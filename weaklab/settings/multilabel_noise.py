"""Noisy multi-labels of paper 004 (BalanceMix, Song, Kim & Lee), "Imbalanced and Noisy Labels".

Three protocols on the clean ``(N, K)`` multi-hot training labels, each a pure function
of (labels, params, numpy Generator):

- ``mislabel`` (eq. 11, class-dependent, after Wei et al. 2021): each positive label of
  class i moves to class j != i with probability
  ``rho_{i->j} = rho * N_j / (N - N_i)``, N_i the positive-label count of class i and
  N = sum_i N_i, so every row sums to rho. The source label becomes negative and the
  target positive (it may already be positive: then the instance just loses label i).
- ``flip`` (class-independent): every positive and every negative label flips with
  probability rho.
- ``missing`` (single positive label, Kim et al. 2022): one random positive is kept, the
  other positives become negatives; rho is unused.
- ``none``: the clean labels (the "0%" columns of Tables 1-2).

Validation and test labels stay clean; the clean training labels are kept in
``hidden["Y"]`` for diagnostics only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from weaklab.data import Dataset
from weaklab.registry import check
from weaklab.settings import WeakData, class_groups_by_count, clean_evals, register_setting

NOISE_TYPES = ("mislabel", "flip", "missing", "none")
GROUPINGS = ("thirds", "paper")
#: paper 004 "Evaluation Metric": many-shot > 10,000 positives, medium 1,000-10,000, few < 1,000
PAPER_GROUP_BOUNDS = (10_000, 1_000)


@dataclass(frozen=True)
class MultilabelNoiseParams:
    noise: str = "mislabel"
    """mislabel (eq. 11) | flip | missing (single positive) | none"""
    rho: float = 0.4
    """noise rate rho of mislabel and flip (paper: 0.2 and 0.4); unused by missing / none"""
    groups: str = "thirds"
    """class groups for mAP_many/medium/few: thirds by positive count, or the paper's fixed
    bounds (>10k many, 1k-10k medium, <1k few; meaningful for VOC / COCO sizes)"""

    def __post_init__(self):
        check(self.noise in NOISE_TYPES, "setting.noise", self.noise, f"one of {', '.join(NOISE_TYPES)}")
        check(isinstance(self.rho, (int, float)) and 0.0 <= self.rho <= 1.0, "setting.rho", self.rho,
              "a noise rate in [0, 1]")
        check(self.groups in GROUPINGS, "setting.groups", self.groups, f"one of {', '.join(GROUPINGS)}")


def mislabel_rates(counts: np.ndarray, rho: float) -> np.ndarray:
    """``(K, K)`` matrix rho_{i->j} of eq. 11 (zero diagonal; rows sum to rho)."""
    counts = np.asarray(counts, dtype=np.float64)
    N = counts.sum()
    T = rho * counts[None, :] / np.maximum(N - counts[:, None], 1e-12)
    np.fill_diagonal(T, 0.0)
    return T


def mislabel(Y: np.ndarray, rho: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 11 on multi-hot ``Y`` (N, K). Returns (noisy Y, transition counts (K, K)):
    ``counts[i, j]`` is how many positives of class i were moved to class j."""
    Y = np.asarray(Y) > 0.5
    K = Y.shape[1]
    T = mislabel_rates(Y.sum(0), rho)
    rows, src = np.nonzero(Y)
    moved = rng.random(len(rows)) < rho
    rows, src = rows[moved], src[moved]
    # j | (i moved) ~ T[i] / rho: inverse-CDF draw for all moved labels at once
    cond = T[src] / np.maximum(T[src].sum(1, keepdims=True), 1e-12)
    dst = np.minimum((rng.random(len(src))[:, None] > np.cumsum(cond, 1)).sum(1), K - 1)
    noisy = Y.copy()
    noisy[rows, src] = False
    noisy[rows, dst] = True
    counts = np.zeros((K, K), dtype=np.int64)
    np.add.at(counts, (src, dst), 1)
    return noisy.astype(np.float32), counts


def random_flip(Y: np.ndarray, rho: float, rng: np.random.Generator) -> np.ndarray:
    """Every positive and negative label flipped independently with probability rho.

    Paper 004 (sec. "Label Noise Modeling"): random flipping is class-independent noise "where the
    presence (or absence) of a class c is randomly flipped with a probability of
    ρ_c = p(ỹ_c=1|y_c=0) = p(ỹ_c=0|y_c=1)", and (sec. "Imbalanced and Noisy Labels"): "all positive and
    negative labels are flipped independently with the probability of ρ". So one rate for
    both polarities, as here. With PN_Imb = negatives / positives, the share of the given
    positives that are truly positive is (1-ρ) / ((1-ρ) + ρ PN_Imb) (:func:`flip_floor`):
    0.10 on VOC (PN 13) and 0.05 on MS-COCO (PN 27) at ρ = 0.4.
    """
    Y = np.asarray(Y) > 0.5
    return (Y ^ (rng.random(Y.shape) < rho)).astype(np.float32)


def flip_floor(rho: float, pn_imb: float) -> float:
    """Share of the given positives that are clean after :func:`random_flip` at rate ``rho``
    of labels whose negatives / positives ratio is ``pn_imb``: the precision a selection
    of "clean" positives has when it cannot tell clean from flipped (its noise floor)."""
    return (1 - rho) / ((1 - rho) + rho * pn_imb)


def single_positive(Y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Keep one positive per instance, chosen uniformly; instances without positives stay empty."""
    Y = np.asarray(Y) > 0.5
    keys = np.where(Y, rng.random(Y.shape), -1.0)  # argmax of uniform keys over positives = uniform pick
    out = np.zeros(Y.shape, dtype=np.float32)
    has = Y.any(1)
    out[np.flatnonzero(has), keys.argmax(1)[has]] = 1.0
    return out


def imbalance_ratios(Y: np.ndarray) -> dict[str, float]:
    """CLS_Imb (eq. 12, max/min positive count) and PN_Imb (eq. 13, negatives/positives)."""
    pos = np.asarray(Y).sum(0)
    return {"cls_imb": float(pos.max() / max(pos.min(), 1)),
            "pn_imb": float((np.asarray(Y).shape[0] * Y.shape[1] - pos.sum()) / max(pos.sum(), 1))}


def paper_groups(counts: np.ndarray) -> torch.Tensor:
    many, medium = PAPER_GROUP_BOUNDS
    c = torch.as_tensor(np.asarray(counts))
    return torch.where(c > many, 0, torch.where(c >= medium, 1, 2)).long()


def apply_noise(Y: np.ndarray, params: MultilabelNoiseParams, rng: np.random.Generator) -> np.ndarray:
    if params.noise == "mislabel":
        return mislabel(Y, params.rho, rng)[0]
    if params.noise == "flip":
        return random_flip(Y, params.rho, rng)
    if params.noise == "missing":
        return single_positive(Y, rng)
    return (np.asarray(Y) > 0.5).astype(np.float32)


@register_setting("multilabel-noise", kind="multilabel", params=MultilabelNoiseParams)
def multilabel_noise(data: Dataset, params: MultilabelNoiseParams, rng: np.random.Generator) -> WeakData:
    """Mislabeling (eq. 11), random flipping or single-positive missing labels on multi-hot labels (paper 004)."""
    check(data.multilabel, "dataset", data.name,
          "a multi-label dataset (digits-multi, voc2007, voc2012) for setting 'multilabel-noise'")
    Y = data.y_train.numpy()
    noisy = apply_noise(Y, params, rng)
    clean = Y > 0.5
    counts = clean.sum(0)
    info = {f"clean_{k}": v for k, v in imbalance_ratios(clean.astype(np.float32)).items()}
    info.update({
        "label_error_rate": float((noisy.astype(bool) != clean).mean()),
        "pos_error_rate": float((noisy[clean] < 0.5).mean()) if clean.any() else 0.0,
        "neg_error_rate": float((noisy[~clean] > 0.5).mean()) if (~clean).any() else 0.0,
        "noisy_pos_per_instance": float(noisy.sum(1).mean()),
    })
    groups = paper_groups(counts) if params.groups == "paper" else class_groups_by_count(counts)
    return WeakData(
        kind="multilabel", num_classes=data.num_classes, x=data.x_train,
        weak={"Y": torch.from_numpy(noisy)},
        hidden={"Y": data.y_train.clone().float()},
        evals=clean_evals(data), class_groups=groups, info=info,
    )
