"""Small dataset files in the real on-disk formats, for testing the loading code offline."""

from __future__ import annotations

import os
import pickle

import numpy as np


def write_cifar10(root: str, *, n_per_batch: int = 20, n_test: int = 20, seed: int = 0) -> str:
    """The official ``cifar-10-batches-py`` pickles (data (N, 3072) uint8 row-major CHW, labels)."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    for name, n in [(f"data_batch_{i}", n_per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        d = {"batch_label": name, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             "labels": [int(v) for v in rng.integers(0, 10, n)], "filenames": [f"{i}.png" for i in range(n)]}
        with open(os.path.join(folder, name), "wb") as fh:
            pickle.dump(d, fh)
    with open(os.path.join(folder, "batches.meta"), "wb") as fh:
        pickle.dump({"label_names": [str(i) for i in range(10)], "num_cases_per_batch": n_per_batch}, fh)
    return root


def write_cifar100(root: str, *, n_train: int = 200, n_test: int = 50, seed: int = 0) -> str:
    """The official ``cifar-100-python`` pickles with fine and coarse labels (fine c -> coarse c // 5)."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = np.concatenate([np.arange(100), rng.integers(0, 100, max(0, n - 100))])[:n]
        d = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": fine.tolist(),
             "coarse_labels": (fine // 5).tolist(), "filenames": [f"{i}.png" for i in range(n)]}
        with open(os.path.join(folder, name), "wb") as fh:
            pickle.dump(d, fh)
    with open(os.path.join(folder, "meta"), "wb") as fh:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)],
                     "coarse_label_names": [f"s{i}" for i in range(20)]}, fh)
    return root


def _idx(path: str, arr: np.ndarray) -> None:
    """IDX format: magic (0, 0, 0x08 = ubyte, ndim), big-endian int32 dims, raw bytes."""
    with open(path, "wb") as fh:
        fh.write(bytes([0, 0, 0x08, arr.ndim]))
        fh.write(np.asarray(arr.shape, dtype=">i4").tobytes())
        fh.write(arr.astype(np.uint8).tobytes())


def write_mnist(root: str, folder: str = "MNIST", *, n_train: int = 60, n_test: int = 20, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    raw = os.path.join(root, folder, "raw")
    os.makedirs(raw, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), rng.integers(0, 256, (n, 28, 28)))
        _idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), rng.integers(0, 10, n))
    return root


def write_svhn(root: str, *, n_train: int = 30, n_test: int = 10, seed: int = 0) -> str:
    """``train_32x32.mat`` / ``test_32x32.mat``: X (32, 32, 3, N) uint8, y (N, 1) in 1..10."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        savemat(os.path.join(root, f"{split}_32x32.mat"),
                {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": rng.integers(1, 11, (n, 1))})
    return root
