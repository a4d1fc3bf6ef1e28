"""Argument groups and the flat trial config.

A trial is one flat dict, the same keys that become Parquet columns:

    study, dataset, data_root, setting, method, seed,
    setting.<field>  -> the setting's Params dataclass   (weaklab.settings)
    hp.<field>       -> the method's Hparams dataclass    (weaklab.methods)
    train.<field>    -> TrainConfig below                 (weaklab.engine)

:func:`parse_trial` turns it into a typed :class:`Trial` and is where every value is
validated, once, before any Ray work starts; the Trial (holding its flat config) is what
Tune's grid, the worker and the store receive.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from weaklab.registry import ConfigError, check


@dataclass(frozen=True)
class TrainConfig:
    """Everything the engine needs besides data and method. Units in the docstrings."""

    arch: str = "cnn"
    """network: cnn (paper 002 Table 7), resnet18 (CIFAR), resnet50, mlp"""
    width: float = 1.0
    """channel multiplier of the network (1.0 = the paper's sizes)"""
    epochs: int = 50
    """maximum number of epochs"""
    batch_size: int = 128
    """samples per optimizer step"""
    optimizer: str = "adam"
    """adam | sgd"""
    lr: float = 1e-3
    """learning rate"""
    momentum: float = 0.9
    """SGD momentum"""
    weight_decay: float = 0.0
    """L2 weight decay"""
    adam_beta1: float = 0.9
    """Adam beta1 (PLOT uses 0.5)"""
    adam_eps: float = 1e-8
    """Adam epsilon (paper 002 uses 1e-7)"""
    adam_fused: bool = True
    """Adam's fused kernel (one pass per step over all parameters): the same update, not
    bit-identical to the unfused one; on CPU 1.2-1.26x faster steps of the digits MLPs and
    1.1x faster whole digits-multi trials (benchmarks/RESULTS.md, "Fused Adam"). False
    reproduces runs made before this option existed"""
    schedule: str = "none"
    """none | cosine (to 0 over ``epochs``) | step (x step_gamma every step_size epochs) |
    multistep (x step_gamma at each of ``milestones``)"""
    step_size: int = 100
    """epochs between lr decays under ``step``"""
    step_gamma: float = 0.5
    """lr factor per decay under ``step`` and ``multistep``"""
    milestones: str = "0.5,0.75"
    """``multistep`` decay points as comma-separated fractions of ``epochs`` (e.g. 0.5,0.75)"""
    patience: int = 0
    """early stopping: epochs without improvement of ``monitor`` (0 = never stop early)"""
    monitor: str = "val_acc"
    """validation metric that picks the best epoch (and early-stops); higher is better"""
    eval_splits: str = "every"
    """every: evaluate every split each epoch | best: evaluate ``val`` each epoch and the
    other splits (test, test_noisy, ...) only at an epoch that is the best so far on
    ``monitor`` or the last one; their columns are NaN at the other epochs, so the test
    metrics at the best and last epochs stay exact and per-epoch test curves have points
    exactly there (benchmarks/RESULTS.md hotspot 3: evaluation is 18-33 % of an epoch)"""
    eval_batch_size: int = 2048
    """samples per forward pass at evaluation"""
    amp: bool = True
    """bf16 autocast on GPU (ignored on CPU)"""
    channels_last: bool = False
    """channels_last memory format on GPU (ignored on CPU)"""
    compile: bool = False
    """torch.compile the model"""
    device: str = "auto"
    """auto (the GPU Ray assigned, else CPU) | cpu | cuda"""

    def milestone_epochs(self) -> list[int]:
        return sorted({max(1, round(float(v) * self.epochs)) for v in str(self.milestones).split(",") if v.strip()})

    def __post_init__(self):
        from weaklab.models import ARCHS

        check(self.arch in ARCHS, "train.arch", self.arch, f"one of {', '.join(ARCHS.names())}")
        check(self.width > 0, "train.width", self.width, "a channel multiplier > 0")
        check(self.epochs >= 1, "train.epochs", self.epochs, "an integer >= 1")
        check(self.batch_size >= 1, "train.batch_size", self.batch_size, "an integer >= 1")
        check(self.optimizer in ("adam", "sgd"), "train.optimizer", self.optimizer, "adam or sgd")
        check(self.lr > 0, "train.lr", self.lr, "a learning rate > 0")
        check(0 <= self.momentum < 1, "train.momentum", self.momentum, "a value in [0, 1)")
        check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a value >= 0")
        check(0 <= self.adam_beta1 < 1, "train.adam_beta1", self.adam_beta1, "a value in [0, 1)")
        check(isinstance(self.adam_fused, bool), "train.adam_fused", self.adam_fused, "True or False")
        check(self.schedule in ("none", "cosine", "step", "multistep"), "train.schedule", self.schedule,
              "none, cosine, step or multistep")
        try:
            fractions = [float(v) for v in str(self.milestones).split(",") if v.strip()]
        except ValueError:
            fractions = [-1.0]
        check(all(0 < f < 1 for f in fractions), "train.milestones", self.milestones,
              "comma-separated fractions of train.epochs in (0, 1), e.g. 0.5,0.75")
        check(self.step_size >= 1, "train.step_size", self.step_size, "an integer >= 1")
        check(0 < self.step_gamma <= 1, "train.step_gamma", self.step_gamma, "a factor in (0, 1]")
        check(self.patience >= 0, "train.patience", self.patience, "an integer >= 0 (0 = off)")
        check(self.monitor.startswith("val_"), "train.monitor", self.monitor, "a validation metric such as val_acc")
        check(self.eval_splits in ("every", "best"), "train.eval_splits", self.eval_splits, "every or best")
        check(self.device in ("auto", "cpu", "cuda"), "train.device", self.device, "auto, cpu or cuda")


TOP_KEYS = ("study", "dataset", "data_root", "setting", "method", "seed", "label", "phase")


@dataclass(frozen=True)
class Trial:
    """A parsed, validated trial config: what Tune's grid holds, the worker trains and the
    store writes (:func:`parse_trial` makes it, once per configuration)."""

    dataset: str
    """dataset name (weaklab.data)"""
    data_root: str | None
    """folder of the torchvision-format files (None: bundled data)"""
    setting: str
    """weak-label setting (weaklab.settings)"""
    setting_params: Any
    """the setting's Params"""
    method: str
    """method (weaklab.methods)"""
    hparams: Any
    """the method's Hparams"""
    train: TrainConfig
    """the engine's TrainConfig"""
    seed: int
    """seed of the weak labels and of training"""
    config: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """the flat config it was parsed from (with ``study``, ``label``, ``phase``): its keys
    name the Parquet columns, its values are what the study file and ``--set`` gave"""

    @property
    def label(self) -> str:
        """the arm's label (its method name when the study gives none)"""
        return self.config.get("label") or self.method

    def columns(self) -> dict[str, Any]:
        """Every setting/hp/train value, defaults filled in, as prefixed Parquet columns."""
        out: dict[str, Any] = {}
        for prefix, obj in (("setting.", self.setting_params), ("hp.", self.hparams), ("train.", self.train)):
            out.update({prefix + k: v for k, v in dataclasses.asdict(obj).items()})
        return out

    def in_phase(self, phase: str) -> "Trial":
        """This trial tagged with a select-then-seeds phase (no value changes, nothing to re-check)."""
        return dataclasses.replace(self, config={**self.config, "phase": phase})


def _coerce(cls: type, prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    """Cast strings (from ``--set``) to each dataclass field's declared type."""
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    out = {}
    for k, v in values.items():
        t = types.get(k)
        if isinstance(v, str) and t is not None:
            t = t if isinstance(t, str) else getattr(t, "__name__", str(t))
            try:
                if t.startswith("bool"):
                    if v.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError
                    v = v.lower() in ("true", "1", "yes")
                elif t.startswith("int"):
                    v = int(v)
                elif t.startswith("float"):
                    v = float(v)
            except ValueError:
                raise ConfigError(f"{prefix}{k}={v!r} is not allowed: a value of type {t}") from None
        out[k] = v
    return out


def split_prefixed(cfg: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in cfg.items() if k.startswith(prefix)}


def parse_trial(cfg: dict[str, Any]) -> Trial:
    """Validate a flat trial config; raises ConfigError with a one-line message."""
    from weaklab.data import DATASETS
    from weaklab.methods import METHODS, method_hparams
    from weaklab.settings import SETTINGS, setting_params

    for k in cfg:
        if k not in TOP_KEYS and not k.startswith(("setting.", "hp.", "train.")):
            raise ConfigError(f"{k} is not a config key; allowed: {', '.join(TOP_KEYS)} and setting.*, hp.*, train.*")
    check(cfg.get("dataset") in DATASETS, "dataset", cfg.get("dataset"), f"one of {', '.join(DATASETS.names())}")
    check(cfg.get("setting") in SETTINGS, "setting", cfg.get("setting"), f"one of {', '.join(SETTINGS.names())}")
    check(cfg.get("method") in METHODS, "method", cfg.get("method"), f"one of {', '.join(METHODS.names())}")
    spec, mcls = SETTINGS.get(cfg["setting"]), METHODS.get(cfg["method"])
    check(spec.kind in mcls.consumes, "method", cfg["method"],
          f"a method that consumes {spec.kind!r} data (setting {cfg['setting']!r}); {cfg['method']!r} consumes "
          f"{', '.join(mcls.consumes)}")
    sp = split_prefixed(cfg, "setting.")
    hp = split_prefixed(cfg, "hp.")
    tr = split_prefixed(cfg, "train.")
    unknown = set(tr) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        k = sorted(unknown)[0]
        raise ConfigError(f"train.{k} is not a training parameter; allowed: "
                          f"{', '.join(f.name for f in dataclasses.fields(TrainConfig))}")
    seed = cfg.get("seed", 0)
    check(isinstance(seed, int) and seed >= 0, "seed", seed, "an integer >= 0")
    return Trial(
        dataset=cfg["dataset"], data_root=cfg.get("data_root"), setting=cfg["setting"],
        setting_params=setting_params(cfg["setting"], _coerce(spec.Params, "setting.", sp)),
        method=cfg["method"], hparams=method_hparams(cfg["method"], _coerce(mcls.Hparams, "hp.", hp)),
        train=TrainConfig(**_coerce(TrainConfig, "train.", tr)), seed=seed, config=dict(cfg),
    )


def as_trial(trial: "Trial | dict[str, Any]") -> Trial:
    """A :class:`Trial` as is; a flat config parsed. For callers that start from a dict
    (``engine.run_trial`` without Ray, benchmarks, a Tune state written before Tune's grid
    held trials); a study's trials are parsed once, in ``weaklab.tune.runner.prepare``."""
    return trial if isinstance(trial, Trial) else parse_trial(trial)


def plain(v: Any) -> Any:
    """A numpy scalar (as Parquet reads a config value back) as its Python value."""
    return v.item() if hasattr(v, "item") else v


def same_value(a: Any, b: Any) -> bool:
    """Two config values are the same: numbers within a relative 1e-9 (a float read back
    from Parquet), anything else by equality."""
    a, b = plain(a), plain(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b
