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
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import re

from weaklab.registry import ConfigError, Registry, check


#: a ``trials`` column a claim may test: the metrics of the best-validation epoch (``best.``)
#: or of the last epoch (``final.``), per split and class group
METRIC_COLUMN = re.compile(r"^(best|final)\.(val|test|test_noisy)_(acc|ll|map)(_(many|medium|few))?$")
CLAIM_KINDS = ("beats", "trend", "flat")


@dataclass(frozen=True)
class Claim:
    """One headline claim of the paper, tested by ``weaklab report`` on the Parquet alone.

    ``beats``: arm ``better`` scores above each arm in ``worse`` on ``metric``, paired by
    seed, in each slice of ``slice_by``. ``trend``: that paired gain grows along
    ``axis`` (slope per seed, tested against 0). ``flat``: arm ``better``'s seed-mean
    ``metric`` varies by less than ``within`` over ``axis`` values in ``axis_range``.
    An arm whose rows span several hyperparameter values (tau x S, lambda x M, each
    arm's grid) is compared at the values with the best seed-mean of ``select``, a
    validation column: chosen on validation only, never on test.
    """

    name: str
    """short id shown in claims.csv, e.g. 'cpu>ce'"""
    metric: str | tuple[str, ...]
    """``trials`` column(s) tested, e.g. best.test_acc (one row per metric)"""
    better: str
    """arm label expected to win (``beats``/``trend``) or to stay flat (``flat``)"""
    worse: str | tuple[str, ...] = ()
    """arm label(s) expected to lose (one row per label); unused by ``flat``"""
    kind: str = "beats"
    """beats | trend | flat"""
    slice_by: tuple[str, ...] = ()
    """grid columns: the claim is tested in each of their value combinations, e.g. ('setting.mix',)"""
    where: Mapping[str, Any] = field(default_factory=dict)
    """grid column -> value restricting every arm, e.g. {'setting.mix': 'patchmix'}"""
    better_where: Mapping[str, Any] = field(default_factory=dict)
    """grid column -> value restricting only ``better`` (rare)"""
    worse_where: Mapping[str, Any] = field(default_factory=dict)
    """grid column -> value restricting only ``worse``, e.g. {'hp.tau': 1.0} for 'tau* above tau = 1'"""
    average_over: tuple[str, ...] = ()
    """grid columns averaged per seed before pairing, e.g. ('setting.mix',): 'the mean of the two'"""
    select: str = "best.val_acc"
    """validation column (higher is better) that picks an arm's hyperparameters; seed-mean"""
    higher_is_better: bool = True
    """the direction of ``metric``"""
    axis: str = ""
    """``trend``: the grid column along which the gain grows; ``flat``: the swept column"""
    log_axis: bool = False
    """``trend``: slope per doubling of ``axis`` (log2) instead of per unit"""
    axis_range: tuple[float, float] | None = None
    """``flat``: the closed range of ``axis`` values the claim covers (None: all)"""
    within: float = 0.0
    """``flat``: the largest spread (max - min of the seed-means over ``axis``) that counts as flat"""
    paper_effect: str = ""
    """the paper's own number for this effect, with where it comes from"""

    def metrics(self) -> tuple[str, ...]:
        return (self.metric,) if isinstance(self.metric, str) else tuple(self.metric)

    def worse_labels(self) -> tuple[str, ...]:
        return (self.worse,) if isinstance(self.worse, str) else tuple(self.worse)


def check_claims(study: "Study") -> None:
    """Every claim names arm labels, metric columns, grid columns and values the study has."""
    labels = {a.label or a.method for a in study.arms}
    grid_values: dict[str, set] = {}
    for src in (study.grid, *(a.grid for a in study.arms)):
        for k, vs in src.items():
            grid_values.setdefault(k, set()).update(vs)
    fixed_keys = set(study.fixed) | {k for a in study.arms for k in a.fixed}
    where = f"study {study.name!r}"
    for c in study.claims:
        check(c.kind in CLAIM_KINDS, f"{where} claim {c.name!r} kind", c.kind, " | ".join(CLAIM_KINDS))
        for m in (*c.metrics(), c.select):
            check(bool(METRIC_COLUMN.match(m)), f"{where} claim {c.name!r} metric", m,
                  "a trials column such as best.test_acc, final.test_map_few or best.test_noisy_ll")
        check(c.select.startswith(("best.val_", "final.val_")), f"{where} claim {c.name!r} select", c.select,
              "a validation column (best.val_* or final.val_*): hyperparameters are never chosen on test")
        arms = (c.better,) + (c.worse_labels() if c.kind != "flat" else ())
        for label in arms:
            check(label in labels, f"{where} claim {c.name!r} arm", label, f"one of {', '.join(sorted(labels))}")
        check(c.kind == "flat" or bool(c.worse_labels()), f"{where} claim {c.name!r} worse", c.worse,
              "at least one arm label for a beats/trend claim")
        cols = list(c.slice_by) + list(c.average_over) + ([c.axis] if c.axis else [])
        for col in cols:
            check(col in grid_values, f"{where} claim {c.name!r} column", col,
                  f"a grid column of the study: {', '.join(sorted(grid_values)) or '(none)'}")
        for mapping in (c.where, c.better_where, c.worse_where):
            for col, v in mapping.items():
                check(col in grid_values or col in fixed_keys, f"{where} claim {c.name!r} column", col,
                      f"a grid or fixed column of the study: {', '.join(sorted(grid_values)) or '(none)'}")
                check(col not in grid_values or v in grid_values[col], f"{where} claim {c.name!r} {col}", v,
                      f"one of the study's values {sorted(grid_values.get(col, ()), key=str)}")
        check(c.kind == "beats" or bool(c.axis), f"{where} claim {c.name!r} axis", c.axis,
              "a grid column for a trend or flat claim")
        check(c.kind != "flat" or c.within > 0, f"{where} claim {c.name!r} within", c.within,
              "a spread > 0 for a flat claim")


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
    metric: str = "best.val_acc"
    """the ``trials`` column that ranks trials: what the select phase chooses on, Tune
    optimises and the progress line prints as 'best so far'; ``best.val_*`` (at the
    best-validation epoch) or ``final.val_*`` (last epoch), never a test column. A running
    trial is ranked by its value so far (:func:`tune_metric`)"""
    mode: str = "max"
    select_then_seeds: bool = False
    """first run every grid point at seed 0, pick each arm's best hyperparameters per
    (setting grid point) on ``metric``, then run all seeds at the chosen values"""
    select_seeds: int = 1
    """select-then-seeds: the first ``select_seeds`` seeds (at most ``seeds``) run every grid
    point in the select phase, and each arm's hyperparameters are chosen on the mean of
    ``metric`` over them (one seed picks the luckiest run; >= 3 makes the choice fair)"""
    smoke: Mapping[str, Any] = field(default_factory=dict)
    """field overrides for ``--smoke`` (arms, grid, seeds, fixed is merged)"""
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """dataset name -> field overrides applied when ``--dataset`` names it (the paper's recipe)"""
    datasets: tuple[str, ...] = ()
    """datasets the study accepts (empty: any of the right kind)"""
    claims: tuple[Claim, ...] = ()
    """the paper's headline claims this study tests (``weaklab report`` gives each a verdict)"""

    def __post_init__(self):
        check(isinstance(self.metric, str) and bool(METRIC_COLUMN.match(self.metric))
              and self.metric.split(".", 1)[1].startswith("val_"), f"study {self.name!r} metric", self.metric,
              "a validation column of the trials table, best.val_* or final.val_* (e.g. best.val_acc)")
        check(isinstance(self.select_seeds, int) and self.select_seeds >= 1, f"study {self.name!r} select_seeds",
              self.select_seeds, "an integer >= 1 (seeds per grid point in the select phase)")

    def with_overrides(self, over: Mapping[str, Any]) -> "Study":
        over = dict(over)
        if "fixed" in over:
            over["fixed"] = {**self.fixed, **over["fixed"]}
        return dataclasses.replace(self, **over)


def tune_metric(metric: str) -> str:
    """The key of a trial's per-epoch report that carries trials column ``metric`` so far:
    ``final.val_map`` is the epoch's own ``val_map``; ``best.val_acc`` is reported as such
    (``weaklab.store.selected_so_far``)."""
    return metric[len("final."):] if metric.startswith("final.") else metric


def is_condition(key: str, study: Study) -> bool:
    """Whether grid ``key`` is one of the experiment's conditions (the study's grid, a
    setting parameter: a noise type, a bag size), crossed with everything and never chosen,
    rather than a hyperparameter an arm is compared at its best value of."""
    return key in study.grid or key.startswith("setting.")


def hp_choices(study: Study, arm: Arm) -> int:
    """How many hyperparameter points ``arm`` chooses among per condition (1: nothing to
    select; its seeds run once, in the final phase of a select-then-seeds study)."""
    return math.prod(len(v) for k, v in arm.grid.items() if not is_condition(k, study))


STUDIES: Registry[Study] = Registry("study")


def register_study(study: Study) -> Study:
    # ``python -m studies.NAME`` runs the file a second time as __main__: the same study
    # value again is not a duplicate; a different study under the same name still raises.
    if study.name in STUDIES and STUDIES.get(study.name) == study:
        return STUDIES.get(study.name)
    check_claims(study)
    return STUDIES.add(study.name, study)


def discover() -> None:
    """Import the ``studies`` package (every file registers its study); idempotent."""
    import importlib

    importlib.import_module("studies")


def package_studies() -> list[str]:
    """Names of the studies the ``studies`` package's files define (one ``STUDY`` per file),
    without any registered at run time (a test's tiny study, a notebook's)."""
    import importlib
    import pkgutil

    discover()
    package = importlib.import_module("studies")
    return sorted(importlib.import_module(f"studies.{m.name}").STUDY.name
                  for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


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


def check_trials(trials: Sequence[Any]) -> None:
    """Cross-checks a method declares between its hyperparameters and the training config
    (``Method.check_trial(hp, train)``, e.g. a pre-estimation stage shorter than training),
    on parsed :class:`weaklab.config.Trial` objects."""
    from weaklab.methods import METHODS

    for t in trials:
        hook = getattr(METHODS.get(t.method), "check_trial", None)
        if hook is not None:
            hook(t.hparams, t.train)


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
