"""torchvision image datasets read from a local ``--data-root`` (never downloaded here).

Each loader checks for the files torchvision expects and names them in its error, so a
user on an offline cluster knows exactly what to copy where. The validation split is cut
from the official training set with a fixed seed; the official test set stays the test set.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import torch

from weaklab.data import NEEDS_ROOT, Dataset, register_dataset
from weaklab.registry import ConfigError

#: validation images cut from each official training set (paper 002 App. D uses 10,000 on
#: CIFAR-10/MNIST/SVHN; 5,000 keeps more training data and is the usual LLP/PLL choice)
VAL_SIZE = 5000


def _require(root: str, name: str, expected: str, how: str) -> str:
    path = os.path.join(root, expected)
    if not os.path.exists(path):
        raise ConfigError(
            f"dataset={name!r}: {path} not found under --data-root {root!r}; {how} "
            f"(this machine cannot download: fetch it elsewhere with torchvision's download=True and copy it)"
        )
    return path


def _images(arr: np.ndarray) -> torch.Tensor:
    """uint8 (N,H,W,C) or (N,H,W) -> float32 (N,C,H,W) in [0,1]."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dim() == 3:
        t = t.unsqueeze(-1)
    return t.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def _assemble(name, x_tr, y_tr, x_te, y_te, num_classes, split_seed, class_names, superclass=None) -> Dataset:
    n_val = min(VAL_SIZE, len(y_tr) // 5)
    tr, va = _split(len(y_tr), n_val, split_seed)
    return Dataset(
        name=name, x_train=x_tr[tr], y_train=y_tr[tr], x_val=x_tr[va], y_val=y_tr[va], x_test=x_te, y_test=y_te,
        num_classes=num_classes, class_names=class_names, superclass=superclass,
    )


def _split(n: int, n_val: int, seed: int):
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _cifar_batches(folder: str, files: list[str], label_key: str):
    xs, ys, coarse = [], [], []
    for f in files:
        with open(os.path.join(folder, f), "rb") as fh:
            d = pickle.load(fh, encoding="latin1")  # the official CIFAR format is a pickle
        xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(d[label_key], dtype=np.int64))
        if "coarse_labels" in d:
            coarse.append(np.asarray(d["coarse_labels"], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys), (np.concatenate(coarse) if coarse else None)


@register_dataset("cifar10")
def load_cifar10(*, root: str | None = None, split_seed: int = 0) -> Dataset:
    folder = _require(root, "cifar10", "cifar-10-batches-py", "expected torchvision's CIFAR10 folder")
    x, y, _ = _cifar_batches(folder, [f"data_batch_{i}" for i in range(1, 6)], "labels")
    xt, yt, _ = _cifar_batches(folder, ["test_batch"], "labels")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return _assemble("cifar10", _images(x), torch.from_numpy(y), _images(xt), torch.from_numpy(yt), 10, split_seed, names)


@register_dataset("cifar100")
def load_cifar100(*, root: str | None = None, split_seed: int = 0) -> Dataset:
    folder = _require(root, "cifar100", "cifar-100-python", "expected torchvision's CIFAR100 folder")
    x, y, coarse = _cifar_batches(folder, ["train"], "fine_labels")
    xt, yt, _ = _cifar_batches(folder, ["test"], "fine_labels")
    superclass = torch.full((100,), -1, dtype=torch.int64)
    superclass[torch.from_numpy(y)] = torch.from_numpy(coarse)  # each fine class has one coarse label
    names = [str(i) for i in range(100)]
    meta = os.path.join(folder, "meta")
    if os.path.exists(meta):
        with open(meta, "rb") as fh:
            names = list(pickle.load(fh, encoding="latin1").get("fine_label_names", names))
    return _assemble("cifar100", _images(x), torch.from_numpy(y), _images(xt), torch.from_numpy(yt), 100, split_seed,
                     names, superclass=superclass)


def _mnist_like(name: str, cls_name: str, root: str, split_seed: int, names: list[str]) -> Dataset:
    import torchvision

    _require(root, name, os.path.join(cls_name, "raw"), f"expected torchvision's {cls_name} folder with raw/ idx files")
    cls = getattr(torchvision.datasets, cls_name)
    try:
        tr = cls(root, train=True, download=False)
        te = cls(root, train=False, download=False)
    except RuntimeError as e:  # torchvision says "Dataset not found or corrupted"
        raise ConfigError(f"dataset={name!r}: files under {root}/{cls_name}/raw unreadable: {e}") from None
    return _assemble(name, _images(tr.data.numpy()), tr.targets.long(), _images(te.data.numpy()), te.targets.long(),
                     10, split_seed, names)


@register_dataset("mnist")
def load_mnist(*, root: str | None = None, split_seed: int = 0) -> Dataset:
    return _mnist_like("mnist", "MNIST", root, split_seed, [str(i) for i in range(10)])


@register_dataset("fashion_mnist")
def load_fashion_mnist(*, root: str | None = None, split_seed: int = 0) -> Dataset:
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    return _mnist_like("fashion_mnist", "FashionMNIST", root, split_seed, names)


@register_dataset("svhn")
def load_svhn(*, root: str | None = None, split_seed: int = 0) -> Dataset:
    """torchvision's SVHN files (train_32x32.mat, test_32x32.mat), read with scipy directly:
    torchvision's class insists on the official files' md5, which rules out test fixtures."""
    from scipy.io import loadmat

    how = "expected torchvision's SVHN files train_32x32.mat and test_32x32.mat"
    parts = []
    for split in ("train", "test"):
        m = loadmat(_require(root, "svhn", f"{split}_32x32.mat", how))
        x = torch.from_numpy(np.transpose(m["X"], (3, 2, 0, 1)).copy()).float().div_(255.0)  # (32,32,3,N) -> NCHW
        y = torch.from_numpy(m["y"].astype(np.int64).reshape(-1) % 10)  # SVHN labels digit 0 as 10
        parts += [x, y]
    return _assemble("svhn", *parts, 10, split_seed, [str(i) for i in range(10)])


NEEDS_ROOT.update({"cifar10", "cifar100", "mnist", "fashion_mnist", "svhn"})
