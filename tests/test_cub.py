"""CUB-200-2011 from --data-root in its released folder layout, on small files written in that layout."""

import os

import numpy as np
import pytest
import torch

from weaklab.registry import ConfigError


def write_cub(root: str, *, n_classes: int = 4, per_class: int = 6, seed: int = 0) -> str:
    """A tiny CUB_200_2011 folder: JPEGs of odd sizes (one grayscale), the four index files.
    Class k's images have mean intensity ~ (k + 1) / (n_classes + 1); every third image is a test image."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = os.path.join(root, "CUB_200_2011")
    names = [f"{k + 1:03d}.Bird_{k}" for k in range(n_classes)]
    lines = {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": [], "classes.txt": []}
    for k, name in enumerate(names):
        lines["classes.txt"].append(f"{k + 1} {name}")
        os.makedirs(os.path.join(base, "images", name), exist_ok=True)
    image_id = 0
    for j in range(per_class):
        for k, name in enumerate(names):  # ids interleave the classes, as a shuffled release would
            image_id += 1
            h, w = rng.integers(20, 50, size=2)
            level = int(255 * (k + 1) / (n_classes + 1))
            arr = np.full((h, w, 3), level, dtype=np.uint8)
            img = Image.fromarray(arr).convert("L") if image_id == 2 else Image.fromarray(arr)
            rel = f"{name}/{name.split('.')[1]}_{j:04d}.jpg"
            img.save(os.path.join(base, "images", rel), quality=95)
            lines["images.txt"].append(f"{image_id} {rel}")
            lines["image_class_labels.txt"].append(f"{image_id} {k + 1}")
            lines["train_test_split.txt"].append(f"{image_id} {0 if j % 3 == 2 else 1}")
    for f, ls in lines.items():
        with open(os.path.join(base, f), "w") as fh:
            fh.write("\n".join(ls) + "\n")
    return root


def test_cub_loads_the_released_layout(tmp_path):
    from weaklab.data import load_dataset
    from weaklab.data.cub import CUB_SIZE, read_cub

    root = write_cub(str(tmp_path))
    x_tr, y_tr, x_te, y_te, names = read_cub(root)
    assert names == ["Bird_0", "Bird_1", "Bird_2", "Bird_3"]
    assert x_tr.shape == (16, 3, CUB_SIZE, CUB_SIZE) and x_te.shape == (8, 3, CUB_SIZE, CUB_SIZE)
    assert torch.bincount(y_tr).tolist() == [4, 4, 4, 4] and torch.bincount(y_te).tolist() == [2, 2, 2, 2]
    # labels are the 1-based class ids minus one: class k's images have the k-th intensity
    for k in range(4):
        assert x_tr[y_tr == k].mean().item() == pytest.approx((k + 1) / 5, abs=0.02)
    # also readable when the root is the CUB_200_2011 folder itself
    assert torch.equal(read_cub(os.path.join(root, "CUB_200_2011"))[1], y_tr)
    ds = load_dataset("cub200", root=root)
    assert ds.num_classes == 4 and len(ds.y_train) + len(ds.y_val) == 16 and len(ds.y_test) == 8
    assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1


def test_cub_long_tailed_partial_labels(tmp_path):
    from weaklab.data import load_dataset
    from weaklab.settings import make_weak_data, setting_params

    ds = load_dataset("cub200", root=write_cub(str(tmp_path), n_classes=6, per_class=12))
    w = make_weak_data(ds, "partial", setting_params("partial", {"gamma": 2.0, "psi": 0.05}), 0, cache=False)
    counts = np.bincount(w.hidden["y"].numpy(), minlength=6)
    assert counts.max() / counts.min() == pytest.approx(2, rel=0.35)
    assert torch.bincount(w.class_groups, minlength=3).tolist() == [2, 2, 2]


def test_cub_missing_files_name_what_to_copy(tmp_path):
    from weaklab.data import load_dataset

    with pytest.raises(ConfigError, match="images.txt"):
        load_dataset("cub200", root=str(tmp_path))
    with pytest.raises(ConfigError, match="--data-root"):
        load_dataset("cub200")
    root = write_cub(str(tmp_path / "a"))
    os.remove(os.path.join(root, "CUB_200_2011", "images", "001.Bird_0", "Bird_0_0000.jpg"))
    with pytest.raises(ConfigError, match="Bird_0_0000.jpg"):
        load_dataset("cub200", root=root)
