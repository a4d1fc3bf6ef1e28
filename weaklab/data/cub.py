"""CUB-200-2011 (Wah et al. 2011), paper 001's fine-grained set (CUB200-LT, Table 4), read
from ``--data-root`` in its released folder layout (never downloaded here)::

    ROOT/CUB_200_2011/images.txt              <image_id> <class dir>/<file>.jpg
    ROOT/CUB_200_2011/image_class_labels.txt  <image_id> <class_id, 1-based>
    ROOT/CUB_200_2011/train_test_split.txt    <image_id> <1 = training image, 0 = test>
    ROOT/CUB_200_2011/classes.txt             <class_id> <class dir name>
    ROOT/CUB_200_2011/images/<class dir>/<file>.jpg

(``ROOT`` may also be the ``CUB_200_2011`` folder itself.) The official split is kept:
5,994 training and 5,794 test images; the validation split is cut from the training images
with a fixed seed, as for the other image sets. Images are resized to ``CUB_SIZE`` squared
RGB (grayscale files are converted), float32 in [0, 1]. Paper 001 (after Solar) trains at
224 px from an ImageNet-pretrained ResNet-18; 64 px keeps the whole set at ~0.6 GB here.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from weaklab.data import NEEDS_ROOT, Dataset, register_dataset
from weaklab.data.vision import _assemble, _require
from weaklab.registry import ConfigError

CUB_SIZE = 64
FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")


def _table(path: str) -> list[tuple[int, str]]:
    """Rows ``<int id> <rest of line>`` of one of CUB's text files."""
    rows = []
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            key, _, rest = line.strip().partition(" ")
            try:
                rows.append((int(key), rest.strip()))
            except ValueError:
                raise ConfigError(f"dataset='cub200': {path} line {n} is not '<id> <value>': {line.strip()!r}") from None
    return rows


def _load_images(paths: list[str], size: int) -> torch.Tensor:
    from PIL import Image

    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for n, p in enumerate(paths):  # decoding JPEGs is per file by nature; done once per dataset load
        with Image.open(p) as im:
            arr = np.array(im.convert("RGB").resize((size, size), Image.BILINEAR))
        out[n] = torch.from_numpy(arr).permute(2, 0, 1)
    return out.float().div_(255.0)


def read_cub(root: str, *, size: int = CUB_SIZE):
    """(x_train, y_train, x_test, y_test, class names) of the official split, labels 0-based."""
    base = root if os.path.exists(os.path.join(root, "images.txt")) else os.path.join(root, "CUB_200_2011")
    how = "expected the released CUB_200_2011 folder (images/, images.txt, image_class_labels.txt, ...)"
    for f in FILES:
        _require(base, "cub200", f, how)
    images = dict(_table(os.path.join(base, "images.txt")))
    labels = {i: int(v) for i, v in _table(os.path.join(base, "image_class_labels.txt"))}
    is_train = {i: int(v) for i, v in _table(os.path.join(base, "train_test_split.txt"))}
    classes = sorted(_table(os.path.join(base, "classes.txt")))
    ids = sorted(images)
    for table, name in ((labels, "image_class_labels.txt"), (is_train, "train_test_split.txt")):
        missing = [i for i in ids if i not in table]
        if missing:
            raise ConfigError(f"dataset='cub200': image id {missing[0]} of images.txt is missing from {name}")
    class_ids = [c for c, _ in classes]
    if class_ids != list(range(1, len(classes) + 1)):
        raise ConfigError(f"dataset='cub200': classes.txt ids must be 1..{len(classes)}")
    paths = [_require(os.path.join(base, "images"), "cub200", images[i], how) for i in ids]
    y = torch.tensor([labels[i] - 1 for i in ids], dtype=torch.int64)
    train = torch.tensor([is_train[i] == 1 for i in ids])
    x = _load_images(paths, size)
    names = [name.split(".", 1)[-1] for _, name in classes]
    return x[train], y[train], x[~train], y[~train], names


@register_dataset("cub200")
def load_cub200(*, root: str | None = None, split_seed: int = 0) -> Dataset:
    x_tr, y_tr, x_te, y_te, names = read_cub(root)
    return _assemble("cub200", x_tr, y_tr, x_te, y_te, len(names), split_seed, names)


NEEDS_ROOT.add("cub200")
