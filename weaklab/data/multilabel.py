"""Multi-label datasets: ``digits-multi`` (bundled, no network) and Pascal VOC 2007 / 2012.

``y`` is ``(N, K)`` float32 multi-hot, so ``Dataset.multilabel`` is True.

digits-multi: each image is a ``grid x grid`` mosaic of 8x8 scikit-learn digits; a cell is
empty with probability ``empty_prob`` (at least one cell is filled), otherwise it holds a
digit whose class is drawn from a long-tailed (geometric) distribution with
``q_0 / q_9 = imbalance_ratio``. The label is the *set* of digits present. This gives
both imbalances BalanceMix targets (paper 004 App. C): class imbalance (CLS_Imb, eq. 12)
and positive-negative imbalance (PN_Imb, eq. 13; few positives among 10 classes).
Source digits are split 60/20/20 *before* composing, so no digit image appears in two splits.
``digits-multi`` uses ratio 20 (realised CLS_Imb ~14, like VOC's 14); ``digits-multi-imb5``
and ``digits-multi-imb100`` vary it (:func:`build_digits_multi` takes any ratio).

Positive-to-negative ratios (PN_Imb = negatives / positives, eq. 13, of the training labels
at split seed 0; VOC 2007 ~13, MS-COCO ~27 per paper 004 App. C):

=====================  =======  ========  ===========  =======  ==================
variant                K        CLS_Imb   PN_Imb       pos/img  labels
=====================  =======  ========  ===========  =======  ==================
digits-multi           10       14.4      3.7          2.1      digit set
digits-multi-imb5      10       4.2       3.5          2.2      digit set
digits-multi-imb100    10       97.8      4.0          2.0      digit set
digits-multi-cells     40       14.1      13.4         2.8      (digit, cell) pairs
=====================  =======  ========  ===========  =======  ==================

With 10 classes and ~2 positives an image, ``digits-multi`` cannot reach VOC's PN_Imb
(at most 9 even with one positive), so its minority sampler barely oversamples. The harder
``digits-multi-cells`` labels each (digit, cell) pair of the 2x2 mosaic (K = 40, label
``cell * 10 + digit``), with empty cells at probability 0.4 and class ratio 12: both
CLS_Imb (14) and PN_Imb (13) are VOC's. Its rarest class has ~40 training and ~9 test
positives, so its few-shot mAP is noisier than digits-multi's. Measured (seed 0, 40 %
mislabeling, the balancemix-delta-alpha recipe, last / peak test mAP x100): BCE 63.8 / 71.3,
BalanceMix 78.3 / 78.9 (few-shot 35.2 vs 49.0), a wider gap than on digits-multi
(60.2 vs 71.6), as the minority sampler now has positives to favour.

VOC: ``torchvision.datasets.VOCDetection`` folders under ``--data-root``
(``VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main}``). The label of an image is
the set of object classes in its annotation XML (objects marked ``difficult`` count as
present). Images are resized to ``VOC_SIZE`` (448 px, the paper's resolution, App. D) and
kept as **uint8** ``(N, 3, S, S)``: float32 at 448 px would need ~12 GB for VOC2007. The
multi-label methods (``weaklab.methods.balancemix`` / ``baselines_multilabel``) convert a
uint8 batch to float in [0, 1] on the fly (:func:`as_float`).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import numpy as np
import torch

from weaklab.data import NEEDS_ROOT, Dataset, register_dataset, split_indices
from weaklab.registry import ConfigError, check

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
#: paper 004 App. D: images resized to 448 x 448
VOC_SIZE = 448
#: digits-multi-cells: empty-cell probability that puts its PN_Imb near VOC's (module docstring)
CELLS_EMPTY_PROB = 0.4


def as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (VOC, kept compact) -> float in [0, 1]; float inputs pass through."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def long_tail_probs(num_classes: int, imbalance_ratio: float) -> np.ndarray:
    """Geometric class probabilities q_k ∝ ratio^(-k/(K-1)), so q_0 / q_{K-1} = ratio."""
    q = float(imbalance_ratio) ** (-np.arange(num_classes) / max(1, num_classes - 1))
    return q / q.sum()


LABELINGS = ("digit", "digit-cell")


def compose_mosaics(images: np.ndarray, labels: np.ndarray, *, n: int, grid: int, empty_prob: float,
                    class_probs: np.ndarray, rng: np.random.Generator,
                    labeling: str = "digit") -> tuple[np.ndarray, np.ndarray]:
    """``n`` mosaics ``(n, 1, grid*h, grid*w)`` and their multi-hot labels ``(n, K)``.

    ``images`` (M, h, w) with class ``labels`` (M,) is the pool of source digits; every
    filled cell gets a class from ``class_probs`` and a random pool image of that class.
    ``labeling='digit'``: K = 10 labels, the set of digits present; ``'digit-cell'``:
    K = 10 x grid² labels, one per (digit, cell) pair (label ``cell * 10 + digit``).
    """
    K, (h, w) = len(class_probs), images.shape[1:]
    cells = grid * grid
    filled = rng.random((n, cells)) >= empty_prob
    filled[np.arange(n), rng.integers(0, cells, n)] = True  # no empty image: every image has a positive
    cls = rng.choice(K, size=(n, cells), p=class_probs)
    # a random pool member of class c: sort the pool by class, index into each class's block
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=K)
    if (counts == 0).any():
        raise ValueError(f"source pool lacks classes {np.flatnonzero(counts == 0).tolist()}")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pick = order[starts[cls] + (rng.random((n, cells)) * counts[cls]).astype(np.int64)]
    tiles = images[pick] * filled[..., None, None]  # (n, cells, h, w)
    x = tiles.reshape(n, grid, grid, h, w).transpose(0, 1, 3, 2, 4).reshape(n, 1, grid * h, grid * w)
    rows = np.repeat(np.arange(n), cells)
    if labeling == "digit-cell":
        Y = np.zeros((n, K * cells), dtype=np.float32)
        lab = (np.arange(cells)[None, :] * K + cls).ravel()
    else:
        Y = np.zeros((n, K), dtype=np.float32)
        lab = cls.ravel()
    Y[rows[filled.ravel()], lab[filled.ravel()]] = 1.0
    return x.astype(np.float32), Y


def build_digits_multi(*, split_seed: int = 0, n_train: int = 3000, n_val: int = 1000, n_test: int = 1000,
                       grid: int = 2, empty_prob: float = 0.5, imbalance_ratio: float = 20.0,
                       labeling: str = "digit", name: str = "digits-multi") -> Dataset:
    """The digits mosaic dataset (see module docstring); a pure function of its arguments."""
    check(grid >= 1, "grid", grid, "an integer >= 1")
    check(labeling in LABELINGS, "labeling", labeling, f"one of {', '.join(LABELINGS)}")
    check(0.0 <= empty_prob < 1.0, "empty_prob", empty_prob, "a probability in [0, 1)")
    check(imbalance_ratio >= 1.0, "imbalance_ratio", imbalance_ratio, "a ratio >= 1 (1 = balanced)")
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    imgs, lab = (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)
    pools = split_indices(len(lab), val=0.2, test=0.2, seed=split_seed, stratify=lab)
    q = long_tail_probs(10, imbalance_ratio)
    rng = np.random.default_rng([split_seed, 4004])
    parts = [compose_mosaics(imgs[p], lab[p], n=n, grid=grid, empty_prob=empty_prob, class_probs=q, rng=rng,
                             labeling=labeling)
             for p, n in zip(pools, (n_train, n_val, n_test))]
    (xt, yt), (xv, yv), (xs, ys) = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in parts]
    if labeling == "digit-cell":
        names = [f"{d}@{c}" for c in range(grid * grid) for d in range(10)]
    else:
        names = [str(i) for i in range(10)]
    return Dataset(name=name, x_train=xt, y_train=yt, x_val=xv, y_val=yv, x_test=xs, y_test=ys,
                   num_classes=len(names), class_names=names)


#: registered digits-multi variants: name -> build_digits_multi arguments (besides the split seed)
DIGITS_MULTI_VARIANTS = {
    "digits-multi": {"imbalance_ratio": 20.0},
    "digits-multi-imb5": {"imbalance_ratio": 5.0},
    "digits-multi-imb100": {"imbalance_ratio": 100.0},
    "digits-multi-cells": {"imbalance_ratio": 12.0, "labeling": "digit-cell", "empty_prob": CELLS_EMPTY_PROB},
}
#: the class imbalance ratio q_0 / q_9 of each variant's cell draws
DIGITS_MULTI_RATIOS = {k: v["imbalance_ratio"] for k, v in DIGITS_MULTI_VARIANTS.items()}


def _digits_multi_loader(name: str, kwargs: dict):
    def load(*, root: str | None = None, split_seed: int = 0) -> Dataset:
        """2x2 mosaics of digits (16x16), 3000/1000/1000 images, long-tailed classes."""
        return build_digits_multi(split_seed=split_seed, name=name, **kwargs)

    return load


for _name, _kwargs in DIGITS_MULTI_VARIANTS.items():
    register_dataset(_name)(_digits_multi_loader(_name, _kwargs))


# -- Pascal VOC ------------------------------------------------------------------------------

def voc_multi_hot(annotation_paths: list[str]) -> np.ndarray:
    """(N, 20) multi-hot from VOC annotation XML files (every <object><name> present)."""
    index = {c: i for i, c in enumerate(VOC_CLASSES)}
    Y = np.zeros((len(annotation_paths), len(VOC_CLASSES)), dtype=np.float32)
    for n, path in enumerate(annotation_paths):
        for obj in ET.parse(path).getroot().iter("object"):
            name = obj.findtext("name", "").strip()
            if name not in index:
                raise ConfigError(f"VOC annotation {path}: class {name!r} is not one of the 20 VOC classes")
            Y[n, index[name]] = 1.0
    return Y


def _voc_images(paths: list[str], size: int) -> torch.Tensor:
    from PIL import Image

    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for n, p in enumerate(paths):  # decoding JPEGs is per file by nature; done once per dataset load
        with Image.open(p) as im:
            arr = np.array(im.convert("RGB").resize((size, size), Image.BILINEAR))  # a writable copy
        out[n] = torch.from_numpy(arr).permute(2, 0, 1)
    return out


def _voc_split(root: str, name: str, year: str, image_set: str, size: int):
    import torchvision

    sub = os.path.join("VOCdevkit", f"VOC{year}")
    need = os.path.join(sub, "ImageSets", "Main", f"{image_set}.txt")
    if not os.path.exists(os.path.join(root or "", need)):
        raise ConfigError(f"dataset={name!r}: {os.path.join(root or '', need)} not found under --data-root "
                          f"{root!r}; expected torchvision's VOCDetection layout {sub}/{{JPEGImages,Annotations,"
                          f"ImageSets/Main}} (this machine cannot download: fetch it elsewhere and copy it)")
    ds = torchvision.datasets.VOCDetection(root, year=year, image_set=image_set, download=False)
    return _voc_images(ds.images, size), torch.from_numpy(voc_multi_hot(ds.annotations))


def load_voc(name: str, year: str, root: str | None, split_seed: int, *, size: int = VOC_SIZE) -> Dataset:
    """VOC2007: trainval -> train/val (val = 1/5, seeded), official test as test.
    VOC2012 (test labels are not public): train -> train/val, official val as test."""
    train_set, test_set = ("trainval", "test") if year == "2007" else ("train", "val")
    x, Y = _voc_split(root, name, year, train_set, size)
    xt, Yt = _voc_split(root, name, year, test_set, size)
    perm = np.random.default_rng(split_seed).permutation(len(Y))
    n_val = max(1, len(Y) // 5)
    va, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return Dataset(name=name, x_train=x[tr], y_train=Y[tr], x_val=x[va], y_val=Y[va], x_test=xt, y_test=Yt,
                   num_classes=20, class_names=list(VOC_CLASSES))


@register_dataset("voc2007")
def load_voc2007(*, root: str | None = None, split_seed: int = 0) -> Dataset:
    return load_voc("voc2007", "2007", root, split_seed)


@register_dataset("voc2012")
def load_voc2012(*, root: str | None = None, split_seed: int = 0) -> Dataset:
    return load_voc("voc2012", "2012", root, split_seed)


NEEDS_ROOT.update({"voc2007", "voc2012"})
