"""Class-conditional label noise of paper 002 (Collier et al.), sec. 5.1 and App. C.

With probability ``r_c`` a label of class ``c`` is redrawn uniformly over *all* classes
(so it may land on itself: the realised flip rate is ``r_c (K-1)/K``). Training,
validation and test labels are corrupted the same way, as the paper's noisy-test
log-likelihood needs; the clean test labels are kept as the ``test`` split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from weaklab.data import Dataset
from weaklab.registry import check
from weaklab.settings import WeakData, register_setting

#: redraw probability per class for 10 classes (paper 002)
PROTOCOLS: dict[str, tuple[float, ...]] = {
    "heteroscedastic": (0, 0, 0, 0, 0, 0.2, 0.3, 0.4, 0.5, 0.6),  # sec. 5.1, Table 1
    "halved": (0, 0, 0, 0, 0, 0.1, 0.15, 0.2, 0.25, 0.3),  # App. C.3, Table 5
    "increased": (0, 0, 0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75),  # App. C.3, Table 6
}


@dataclass(frozen=True)
class NoiseParams:
    protocol: str = "heteroscedastic"
    """heteroscedastic | halved | increased | uniform | none"""
    rate: float = 0.2
    """redraw probability of every class under ``uniform`` (App. C.2 uses 0.2); unused otherwise"""

    def __post_init__(self):
        check(self.protocol in (*PROTOCOLS, "uniform", "none"), "setting.protocol", self.protocol,
              f"one of {', '.join((*PROTOCOLS, 'uniform', 'none'))}")
        check(0.0 <= self.rate <= 1.0, "setting.rate", self.rate, "a noise rate in [0, 1]")


def class_rates(params: NoiseParams, num_classes: int) -> np.ndarray:
    """Redraw probability r_c per class. For K != 10 the paper's 10-class profile is
    stretched over the classes (class c takes the profile entry at floor(10 c / K))."""
    if params.protocol == "none":
        return np.zeros(num_classes)
    if params.protocol == "uniform":
        return np.full(num_classes, params.rate)
    prof = np.asarray(PROTOCOLS[params.protocol])
    return prof[(np.arange(num_classes) * len(prof)) // num_classes]


def redraw_labels(y: np.ndarray, rates: np.ndarray, num_classes: int, rng: np.random.Generator):
    """Return (noisy labels, redrawn mask): each label redrawn uniformly over all classes w.p. rates[y]."""
    redrawn = rng.random(len(y)) < rates[y]
    new = rng.integers(0, num_classes, size=len(y))
    return np.where(redrawn, new, y), redrawn


@register_setting("noise", kind="noisy", params=NoiseParams)
def label_noise(data: Dataset, params: NoiseParams, rng: np.random.Generator) -> WeakData:
    """Class-conditional (heteroscedastic) or uniform label noise on train, val and test (paper 002 sec. 5.1)."""
    K = data.num_classes
    rates = class_rates(params, K)
    out = {}
    for split, y in (("train", data.y_train), ("val", data.y_val), ("test", data.y_test)):
        out[split] = redraw_labels(y.numpy(), rates, K, rng)
    to_t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64))
    y_noisy, redrawn = out["train"]
    return WeakData(
        kind="noisy", num_classes=K, x=data.x_train,
        weak={"y": to_t(y_noisy)},
        hidden={"y": data.y_train.clone(), "redrawn": torch.from_numpy(redrawn)},
        evals={"val": (data.x_val, to_t(out["val"][0])), "test": (data.x_test, data.y_test),
               "test_noisy": (data.x_test, to_t(out["test"][0]))},
        info={"flip_rate": float((y_noisy != data.y_train.numpy()).mean())},
    )
