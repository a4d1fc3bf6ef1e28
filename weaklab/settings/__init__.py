"""Weak-supervision protocols: pure functions ``(clean Dataset, params, numpy Generator) -> WeakData``.

A setting never touches global RNG state: all randomness comes from the Generator it is
given. :func:`make_weak_data` caches what a setting produces on disk, keyed by
(dataset, split seed, setting, params, seed), so every trial with that key trains on
identical data, as the papers' own code does.

What a setting returns (``WeakData``):
- ``x``: training inputs (a setting may transform them, e.g. mixing for quantized labels);
- ``weak``: the weak supervision methods read (``{"y": noisy labels}``, ``{"S": candidate
  matrix}``, ``{"bag": bag id, "proportions": ...}``, ``{"Y": noisy multi-hot}``);
- ``hidden``: the truth (clean labels, soft labels), for diagnostics only: no method's
  training path reads it;
- ``evals``: named evaluation splits ``{"val": (x, y), "test": (x, y), ...}``; ``val`` is
  the early-stopping split;
- ``class_groups``: optional ``(num_classes,)`` group per class (0 many, 1 medium, 2 few).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from weaklab.data import Dataset
from weaklab.registry import ConfigError, Registry, import_submodules

Tensor = torch.Tensor

#: bump when a generator's output changes for the same parameters, so stale caches are ignored
CACHE_VERSION = 2  # 2: partial-label class groups follow paper 001 (3/3/4)

KINDS = ("noisy", "quantized", "partial", "bags", "multilabel")


@dataclass
class WeakData:
    kind: str
    num_classes: int
    x: Tensor
    weak: dict[str, Tensor]
    hidden: dict[str, Tensor]
    evals: dict[str, tuple[Tensor, Tensor]]
    class_groups: Tensor | None = None
    info: dict[str, float] = field(default_factory=dict)
    """scalar facts about the realised weak labels (e.g. realised noise rate), stored with the trial"""

    @property
    def n(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> "WeakData":
        moved: dict[int, Tensor] = {}

        def to(t: Tensor) -> Tensor:  # a tensor shared by two splits stays shared on the device
            if id(t) not in moved:
                moved[id(t)] = t.to(device)
            return moved[id(t)]

        mv = lambda d: {k: to(v) for k, v in d.items()}
        return dataclasses.replace(
            self, x=to(self.x), weak=mv(self.weak), hidden=mv(self.hidden),
            evals={k: (to(x), to(y)) for k, (x, y) in self.evals.items()},
            class_groups=None if self.class_groups is None else self.class_groups.to(device),
        )

    def to_tensors(self) -> dict[str, Any]:
        """Flat dict of tensors plus JSON metadata, for ``torch.save`` / ``weights_only`` loading."""
        out: dict[str, Any] = {"x": self.x}
        out.update({f"weak/{k}": v for k, v in self.weak.items()})
        out.update({f"hidden/{k}": v for k, v in self.hidden.items()})
        for k, (x, y) in self.evals.items():
            out[f"evals/{k}/x"], out[f"evals/{k}/y"] = x, y
        if self.class_groups is not None:
            out["class_groups"] = self.class_groups
        out["meta"] = json.dumps({"kind": self.kind, "num_classes": self.num_classes, "info": self.info,
                                  "evals": list(self.evals)})
        return out

    @classmethod
    def from_tensors(cls, d: dict[str, Any]) -> "WeakData":
        meta = json.loads(d["meta"])
        # torch.load returns one object per key even where the saved tensors were one (test
        # inputs shared by clean and noisy test splits): re-share them by storage
        canon: dict[tuple, Tensor] = {}
        for k, v in d.items():
            if isinstance(v, Tensor):
                d[k] = canon.setdefault((v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)), v)
        pick = lambda p: {k[len(p):]: v for k, v in d.items() if k.startswith(p)}
        return cls(
            kind=meta["kind"], num_classes=meta["num_classes"], x=d["x"], weak=pick("weak/"),
            hidden=pick("hidden/"), evals={k: (d[f"evals/{k}/x"], d[f"evals/{k}/y"]) for k in meta["evals"]},
            class_groups=d.get("class_groups"), info=meta["info"],
        )


@dataclass(frozen=True)
class SettingSpec:
    name: str
    kind: str
    Params: type
    make: Callable[..., WeakData]
    doc: str


SETTINGS: Registry[SettingSpec] = Registry("setting")


def register_setting(name: str, *, kind: str, params: type):
    """Register ``make(data, params, rng) -> WeakData``; ``params`` is a dataclass validating in __post_init__."""
    if kind not in KINDS:
        raise ValueError(f"setting kind {kind!r} not in {KINDS}")

    def deco(fn):
        SETTINGS.add(name, SettingSpec(name, kind, params, fn, (fn.__doc__ or "").strip().splitlines()[0]))
        return fn

    return deco


def setting_params(name: str, values: dict[str, Any]) -> Any:
    """Build (and so validate) the params dataclass of setting ``name`` from ``{field: value}``."""
    spec = SETTINGS.get(name)
    allowed = {f.name for f in dataclasses.fields(spec.Params)}
    for k in values:
        if k not in allowed:
            raise ConfigError(f"setting.{k} is not a parameter of setting {name!r}; allowed: {', '.join(sorted(allowed))}")
    return spec.Params(**values)


def cache_dir() -> str:
    return os.environ.get("WEAKLAB_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "weaklab"))


def _weak_path(dataset: str, n: int, setting: str, params: Any, seed: int, split_seed: int) -> str:
    key = json.dumps({"v": CACHE_VERSION, "dataset": dataset, "n": int(n), "split_seed": split_seed,
                      "setting": setting, "params": dataclasses.asdict(params), "seed": seed},
                     sort_keys=True, default=str)
    return os.path.join(cache_dir(), "settings", f"{setting}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt")


def _load(path: str) -> WeakData | None:
    if os.path.exists(path):
        try:
            return WeakData.from_tensors(torch.load(path, weights_only=True))
        except Exception:  # a torn or stale file: regenerate rather than fail the trial
            pass
    return None


def _size_path(dataset: str, root: str | None, split_seed: int) -> str:
    tag = hashlib.sha1(json.dumps([root and os.path.abspath(root), split_seed]).encode()).hexdigest()[:12]
    return os.path.join(cache_dir(), "datasets", f"{dataset}-{tag}.json")


def record_dataset(data: Dataset, *, root: str | None, split_seed: int) -> None:
    """Note the training-set size of ``data`` beside the cache, so :func:`cached_weak_data`
    can find a weak dataset by its key without reading the clean dataset again."""
    path = _size_path(data.name, root, split_seed)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"n_train": int(data.x_train.shape[0])}, f)
        os.replace(tmp, path)


def cached_weak_data(dataset: str, setting: str, params: Any, seed: int, *, root: str | None = None,
                     split_seed: int = 0) -> WeakData | None:
    """The cached weak dataset of that key, or None; reads neither the clean dataset nor its
    library. A Ray worker would otherwise hold the clean dataset for its whole life beside
    each trial's weak data (CIFAR-10's training images: 614 MB as float32) and import what
    loads it (digits: scikit-learn and scipy, 76 MB and ~1 CPU-s per worker)."""
    try:
        with open(_size_path(dataset, root, split_seed)) as f:
            n = json.load(f)["n_train"]
    except (OSError, ValueError, KeyError):
        return None
    return _load(_weak_path(dataset, n, setting, params, seed, split_seed))


def make_weak_data(data: Dataset, setting: str, params: Any, seed: int, *, split_seed: int = 0,
                   cache: bool = True) -> WeakData:
    """Run setting ``setting`` on ``data`` with ``np.random.default_rng(seed)``, cached on disk."""
    spec = SETTINGS.get(setting)
    path = _weak_path(data.name, data.x_train.shape[0], setting, params, seed, split_seed)
    if cache and (hit := _load(path)) is not None:
        return hit
    weak = spec.make(data, params, np.random.default_rng(seed))
    if weak.kind != spec.kind:
        raise RuntimeError(f"setting {setting!r} declared kind {spec.kind!r} but produced {weak.kind!r}")
    if cache:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        torch.save(weak.to_tensors(), tmp)
        os.replace(tmp, path)  # atomic: concurrent trials never read half a file
    return weak


def clean_evals(data: Dataset) -> dict[str, tuple[Tensor, Tensor]]:
    """The usual evaluation splits: clean validation and clean test."""
    return {"val": (data.x_val, data.y_val), "test": (data.x_test, data.y_test)}


def class_groups_by_count(counts: Tensor | np.ndarray) -> Tensor:
    """Many / Medium / Few groups (0/1/2): classes sorted by training count, split in thirds."""
    counts = torch.as_tensor(counts)
    order = torch.argsort(counts, descending=True, stable=True)
    groups = torch.empty(len(counts), dtype=torch.int64)
    for g, chunk in enumerate(torch.tensor_split(order, 3)):
        groups[chunk] = g
    return groups


import_submodules(__name__, __path__)
