"""scikit-learn's bundled 8x8 handwritten digits: the default dataset, no network needed."""

from __future__ import annotations

import numpy as np
import torch

from weaklab.data import Dataset, register_dataset, split_indices


@register_dataset("digits")
def load_digits(*, root: str | None = None, split_seed: int = 0) -> Dataset:
    """1797 grey 8x8 images, 10 classes; stratified 60/20/20 split fixed by ``split_seed``."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)  # (N,1,8,8), pixel range 0..16
    y = torch.from_numpy(d.target.astype(np.int64))
    tr, va, te = split_indices(len(y), val=0.2, test=0.2, seed=split_seed, stratify=d.target)
    return Dataset(
        name="digits",
        x_train=x[tr], y_train=y[tr], x_val=x[va], y_val=y[va], x_test=x[te], y_test=y[te],
        num_classes=10, class_names=[str(i) for i in range(10)],
    )
