"""The study schema: ``Study``, ``Arm``, ``Claim``, the registry of studies, ``resolve``,
``expand`` and the ``--set`` parsing.

A study is data, not code: which setting and methods, which grid, how many seeds, what
metric, how small ``--smoke`` is, dataset presets (``--dataset cifar10`` selects the
paper's own training recipe) and the paper's claims. The study files themselves live in
the top-level ``studies`` package (one file per paper figure or table), which registers
them on import; :func:`discover` is the one place the library imports it.
:func:`expand` turns a study into the list of flat trial configs the Tune runner grids
over (see ``weaklab.config`` for the keys).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from weaklab.registry import ConfigError, Registry


@dataclass(frozen=True)
class Arm:
    """One method with its own grid, e.g. heteroscedastic over tau x S_train."""

    method: str
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    """``hp.* / setting.* / train.*`` key -> values, crossed with each other"""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    """name shown in figures and tables (default: the method name)"""


@dataclass(frozen=True)
class Study:
    name: str
    title: str
    """one line for ``weaklab studies``"""
    reproduces: str
    """the paper figure/table, e.g. 'paper 002 Fig. 1 and Table 1'"""
    setting: str
    arms: tuple[Arm, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    """``setting.* / train.*`` values for every trial"""
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    """grid crossed with every arm (e.g. noise protocols, bag sizes)"""
    dataset: str = "digits"
    seeds: int = 3
    metric: str = "best_val_acc"
    """what Tune optimises and prints as 'best so far' (a key the engine reports every epoch)"""
    mode: str = "max"
    select_then_seeds: bool = False
    """first run every grid point at seed 0, pick each arm's best hyperparameters per
    (setting grid point) on ``metric``, then run all seeds at the chosen values"""
    smoke: Mapping[str, Any] = field(default_factory=dict)
    """field overrides for ``--smoke`` (arms, grid, seeds, fixed is merged)"""
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """dataset name -> field overrides applied when ``--dataset`` names it (the paper's recipe)"""
    datasets: tuple[str, ...] = ()
    """datasets the study accepts (empty: any of the right kind)"""

    def with_overrides(self, over: Mapping[str, Any]) -> "Study":
        over = dict(over)
        if "fixed" in over:
            over["fixed"] = {**self.fixed, **over["fixed"]}
        return dataclasses.replace(self, **over)


STUDIES: Registry[Study] = Registry("study")


def register_study(study: Study) -> Study:
    # ``python -m studies.NAME`` runs the file a second time as __main__: the same study
    # value again is not a duplicate; a different study under the same name still raises.
    if study.name in STUDIES and STUDIES.get(study.name) == study:
        return STUDIES.get(study.name)
    return STUDIES.add(study.name, study)


def discover() -> None:
    """Import the ``studies`` package (every file registers its study); idempotent."""
    import importlib

    importlib.import_module("studies")


def get_study(name: str) -> Study:
    if name not in STUDIES:
        discover()
    if name not in STUDIES:
        raise ConfigError(f"study={name!r} is not allowed: one of {', '.join(STUDIES.names())}")
    return STUDIES.get(name)


def resolve(study: Study, *, dataset: str | None = None, smoke: bool = False, seeds: int | None = None) -> Study:
    """Apply the dataset preset, then ``--smoke``, then ``--seeds``."""
    if dataset and dataset != study.dataset:
        if study.datasets and dataset not in study.datasets:
            raise ConfigError(f"dataset={dataset!r} is not allowed for study {study.name!r}: "
                              f"one of {', '.join(study.datasets)}")
        study = study.with_overrides({**study.presets.get(dataset, {}), "dataset": dataset})
    if smoke:
        study = study.with_overrides(study.smoke)
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds={seeds} is not allowed: an integer >= 1")
        study = dataclasses.replace(study, seeds=seeds)
    return study


def _product(grid: Mapping[str, Sequence[Any]]):
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        yield dict(zip(keys, values))


def expand(study: Study, *, sets: Mapping[str, Any] | None = None, data_root: str | None = None,
           seeds: Sequence[int] | None = None, phase: str | None = None) -> list[dict[str, Any]]:
    """All flat trial configs of ``study`` (``sets`` from ``--set`` fix a key for every trial)."""
    from weaklab.methods import METHODS

    sets = dict(sets or {})
    seeds = list(range(study.seeds)) if seeds is None else list(seeds)
    _check_sets(study, sets)
    out = []
    for arm in study.arms:
        hp_fields = {f.name for f in dataclasses.fields(METHODS.get(arm.method).Hparams)}
        arm_sets = {k: v for k, v in sets.items() if not k.startswith("hp.") or k[3:] in hp_fields}
        grid = {k: v for k, v in {**study.grid, **arm.grid}.items() if k not in arm_sets}
        for point in _product(grid):
            for seed in seeds:
                cfg = {"study": study.name, "dataset": study.dataset, "data_root": data_root,
                       "setting": study.setting, "method": arm.method, "seed": seed,
                       "label": arm.label or arm.method}
                if phase:
                    cfg["phase"] = phase
                cfg.update(study.fixed)
                cfg.update(arm.fixed)
                cfg.update(point)
                cfg.update(arm_sets)
                out.append(cfg)
    return out


def _check_sets(study: Study, sets: Mapping[str, Any]) -> None:
    """``--set`` keys must be parameters this study's setting, methods or training have."""
    from weaklab.config import TrainConfig
    from weaklab.methods import METHODS
    from weaklab.settings import SETTINGS

    setting_fields = {f.name for f in dataclasses.fields(SETTINGS.get(study.setting).Params)}
    hp_fields = set().union(*({f.name for f in dataclasses.fields(METHODS.get(a.method).Hparams)} for a in study.arms))
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for k in sets:
        prefix, _, name = k.partition(".")
        allowed = {"setting": setting_fields, "hp": hp_fields, "train": train_fields}.get(prefix)
        if allowed is None or name not in allowed:
            keys = sorted([f"setting.{f}" for f in setting_fields] + [f"hp.{f}" for f in hp_fields]
                          + [f"train.{f}" for f in train_fields])
            raise ConfigError(f"--set {k} is not a parameter of study {study.name!r}; allowed: {', '.join(keys)}")


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """``["hp.tau=2", "train.epochs=5"]`` -> dict; values stay strings until typed by parse_trial."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set {item!r} is not allowed: KEY=VALUE, e.g. --set train.epochs=5")
        out[key.strip()] = value.strip()
    return out
