"""``--search optuna``: seeds as replicates, one Optuna search per arm, asked and told on the driver.

Why not Ray's ``OptunaSearch``: it turns every Tune trial into one Optuna trial, so a seed
is either a searched parameter (no two configurations share a seed, no paired test) or a
configuration is sampled again per seed. Here Optuna's ask-and-tell interface runs on the
driver inside a Tune :class:`~ray.tune.search.Searcher`:

- The study is split into *searches*: one per arm and point of the study's conditions
  (``study.grid`` and the arm's ``setting.*`` grid keys, e.g. a noise type or a mix type:
  those are the experiment, not something to tune). A search's ``hp.*`` / ``train.*``
  grid keys that take more than one value are its searched hyperparameters, sampled by
  one Optuna study over the grid's range (:func:`distributions`). A search without any
  runs once per seed and is never sampled.
- ``--num-samples`` counts sampled *configurations* and is split evenly over the
  searches (:func:`split_samples`; a search whose finite space is smaller keeps only what
  exists and hands the rest on). Studies hold no per-arm share.
- Each sampled configuration becomes one Tune trial per seed of the study (the
  replicates), all carrying the same ``group``. Optuna is told the **seed-mean** of the
  study's metric once every seed of a configuration has finished: the report picks tau*
  and each arm's best on that same seed-mean, so the search optimises what is selected on,
  and every configuration runs all its seeds anyway (paired tests need them).
- No configuration runs twice: a suggestion equal to one already sampled is told the
  known seed-mean (or FAIL while it still runs) and Optuna is asked again.
- The searcher's state (Optuna studies with their sampler RNG, the queue of trials not yet
  handed out, which configuration each Tune trial belongs to) is saved with Tune's
  experiment state, so ``--resume`` continues the same search.
- :class:`ReplicateASHA`: ASHA over configurations, not trials. The first seed of a
  configuration to reach a rung decides for the configuration; its other seeds stop (or go
  on) at that same rung, so a configuration's replicates always cover the same epochs.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass, field
from typing import Any, Sequence

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.search import Searcher

from weaklab.config import Trial, as_trial, parse_trial
from weaklab.registry import ConfigError, check
from weaklab.study import tune_metric
from weaklab.tune._ray_compat import asha_rungs

SAMPLERS = ("tpe", "random", "cmaes", "qmc")
#: asks of an already-sampled configuration before a finite search is taken as exhausted
MAX_DUPLICATE_ASKS = 200


@dataclass
class SearchUnit:
    """One arm at one point of the study's conditions: an Optuna study, or a fixed config."""

    arm: int
    """index of the arm in ``study.arms``"""
    label: str
    """the arm's label plus its condition, for messages and Optuna study names"""
    base: dict[str, Any]
    """the arm's first config at this condition (seed removed); sampled values replace keys"""
    distributions: dict[str, Any] = field(default_factory=dict)
    """config key -> optuna distribution; empty: nothing to search, run once per seed"""
    size: int | None = None
    """number of distinct configurations when every distribution is finite, else None"""
    grid_points: int = 1
    """points of this unit's grid (the grid study's budget for it)"""


def _is_condition(key: str, study) -> bool:
    from weaklab.study import is_condition

    return is_condition(key, study)


def distributions(values: Sequence[Any]):
    """Optuna distribution over a grid's values: log-uniform for positive numeric ranges
    spanning >= 10x, uniform (int or float) for other numeric ranges of > 2 values,
    categorical otherwise (e.g. S in {1, 100}, booleans, names)."""
    import optuna.distributions as od

    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric and len(values) > 2:
        lo, hi = min(values), max(values)
        log = lo > 0 and hi / lo >= 10
        if all(isinstance(v, int) for v in values):
            return od.IntDistribution(int(lo), int(hi), log=log)
        return od.FloatDistribution(float(lo), float(hi), log=log)
    return od.CategoricalDistribution(list(values))


def _size(dist) -> int | None:
    import optuna.distributions as od

    if isinstance(dist, od.CategoricalDistribution):
        return len(dist.choices)
    if isinstance(dist, od.IntDistribution) and not dist.log:
        return (dist.high - dist.low) // dist.step + 1
    if isinstance(dist, od.IntDistribution):
        return dist.high - dist.low + 1
    return None


def arm_configs(study, sets: dict[str, Any] | None, data_root: str | None,
                configs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``configs`` (an ``expand`` of ``study``, possibly phase-tagged, at fewer seeds, or
    only some arms) split by arm: arms may share a label (pll-lambda-m), so the split
    comes from expanding each arm alone with the same ``--set`` values."""
    import dataclasses

    from weaklab.study import expand

    from weaklab.methods import METHODS

    def key(c: dict[str, Any]) -> str:
        return repr(sorted((k, repr(v)) for k, v in c.items() if k != "phase"))

    seeds = sorted({c["seed"] for c in configs})
    out, assigned = [], set()
    for arm in study.arms:
        # an hp.* --set of another arm's method is not this arm's (expand skips it there too)
        fields = {f.name for f in dataclasses.fields(METHODS.get(arm.method).Hparams)}
        own = {k: v for k, v in (sets or {}).items() if not k.startswith("hp.") or k[3:] in fields}
        mine = {key(c) for c in expand(dataclasses.replace(study, arms=(arm,)), sets=own, data_root=data_root,
                                       seeds=seeds)}
        # matched by content: a select phase may hold only the arms that have a choice to make
        out.append([c for c in configs if key(c) in mine])
        assigned |= mine
    if any(key(c) not in assigned for c in configs):
        raise RuntimeError(f"arm split: a config of {len(configs)} belongs to no arm of study {study.name!r}")
    return out


def search_units(study, per_arm: list[list[dict[str, Any]]]) -> list[SearchUnit]:
    units = []
    for i, (arm, cfgs) in enumerate(zip(study.arms, per_arm)):
        if not cfgs:
            continue
        first_seed = min(c["seed"] for c in cfgs)
        cfgs = [{k: v for k, v in c.items() if k != "seed"} for c in cfgs if c["seed"] == first_seed]
        keys = list(cfgs[0])
        varying = [k for k in keys if len({repr(c.get(k)) for c in cfgs}) > 1]
        conditions = [k for k in varying if _is_condition(k, study)]
        searched = [k for k in varying if k not in conditions]
        by_cond: dict[str, list[dict[str, Any]]] = {}
        for c in cfgs:
            by_cond.setdefault(repr([c.get(k) for k in conditions]), []).append(c)
        for group in by_cond.values():
            base = dict(group[0])
            cond = " ".join(f"{k.split('.', 1)[-1]}={base[k]}" for k in conditions)
            label = (arm.label or arm.method) + (f" [{cond}]" if cond else "") + f" (arm {i})"
            dists = {}
            for k in searched:
                values = sorted({c[k] for c in group}, key=lambda v: (str(type(v)), v))
                if len(values) > 1:
                    dists[k] = distributions(values)
            sizes = [_size(d) for d in dists.values()]
            size = math.prod(sizes) if dists and None not in sizes else None
            units.append(SearchUnit(arm=i, label=label, base=base, distributions=dists, size=size,
                                    grid_points=len(group)))
    return units


def split_samples(units: list[SearchUnit], num_samples: int | None) -> list[int]:
    """Configurations each searched unit samples: ``num_samples`` (default: as many as the
    grid has points in the searched units) split evenly, the first units taking the
    remainder; a unit whose finite space is smaller keeps its size and the rest is split
    again over the others. Fixed units get 0 (they run once per seed)."""
    searched = [j for j, u in enumerate(units) if u.distributions]
    total = sum(units[j].grid_points for j in searched) if num_samples is None else num_samples
    shares = [0] * len(units)
    open_, left = list(searched), total
    while open_ and left > 0:
        fair = left / len(open_)
        small = [j for j in open_ if units[j].size is not None and units[j].size <= fair]
        if not small:
            base, extra = divmod(left, len(open_))
            for rank, j in enumerate(open_):
                shares[j] = base + (1 if rank < extra else 0)
            break
        for j in small:  # a finite space smaller than its share runs whole; the rest goes on
            shares[j] = units[j].size
            left -= units[j].size
            open_.remove(j)
    return shares


def make_sampler(name: str, seed: int):
    import optuna

    check(name in SAMPLERS, "--sampler", name, " or ".join(SAMPLERS))
    if name == "tpe":
        # constant_liar: configurations still running count as bad guesses, so parallel
        # asks do not pile onto one point
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        # categorical keys (S, booleans) fall back to independent random sampling
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    import warnings

    with warnings.catch_warnings():  # "experimental" since Optuna 3.0
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)


def open_storage(url: str | None):
    """An Optuna storage from ``--optuna-storage``: an RDB URL (``sqlite:///study.db``) or
    a journal file path; None keeps the studies in memory (saved with Tune's state)."""
    if url is None:
        return None
    import optuna

    allowed = "an RDB URL such as sqlite:///study.db, or a journal file path (e.g. study.log) in a writable folder"
    try:
        if "://" in url:
            return optuna.storages.RDBStorage(url)
        folder = os.path.dirname(os.path.abspath(url))
        if not os.path.isdir(folder):
            raise FileNotFoundError(folder)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ConfigError(f"--optuna-storage={url!r} cannot be opened ({reason}); allowed: {allowed}") from None


def group_key(cfg: dict[str, Any]) -> str:
    """A configuration's identity, seed excluded: its seeds are one group of replicates."""
    return repr(sorted((k, repr(v)) for k, v in cfg.items() if k not in ("seed",)))


@dataclass
class _Config:
    unit: int
    number: int | None
    """Optuna trial number (None: a fixed unit)"""
    params: dict[str, Any]
    pending: set[int]
    values: dict[int, float] = field(default_factory=dict)
    stopped: bool = False
    failed: bool = False

    @property
    def mean(self) -> float | None:
        return sum(self.values.values()) / len(self.values) if self.values else None


class ReplicateSearcher(Searcher):
    """Hands Tune concrete (configuration, seed) trials; tells Optuna seed-means."""

    def __init__(self, units: list[SearchUnit], samples: list[int], seeds: Sequence[int], *, metric: str,
                 mode: str, sampler: str = "tpe", storage: str | None = None, study_name: str = "weaklab",
                 checkpoint_every_s: float = 0.0, resume: bool = False):
        super().__init__(metric=metric, mode=mode)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.units, self.samples, self.seeds = units, list(samples), list(seeds)
        self.checkpoint_every_s = checkpoint_every_s
        self.storage_url = storage
        store = open_storage(storage)
        direction = "maximize" if mode == "max" else "minimize"
        self.studies: dict[int, Any] = {}
        for j, u in enumerate(units):
            if u.distributions:
                self.studies[j] = optuna.create_study(
                    storage=store, sampler=make_sampler(sampler, seed=j), direction=direction,
                    study_name=f"{study_name}/{u.label}", load_if_exists=resume)
        self.configs: dict[str, _Config] = {}
        self.seen: dict[int, dict[str, str]] = {j: {} for j in self.studies}
        self.asked = [0] * len(units)
        self.queue: list[dict[str, Any]] = []
        self.trial_group: dict[str, str] = {}
        self.next_unit = 0
        self.fixed_queued = False

    # ---- planning ------------------------------------------------------------------
    @property
    def total_trials(self) -> int:
        fixed = sum(1 for u in self.units if not u.distributions)
        return (fixed + sum(self.samples)) * len(self.seeds)

    def _enqueue(self, j: int, number: int | None, params: dict[str, Any]) -> None:
        cfg = {**self.units[j].base, **params}
        group = group_key(cfg)
        self.configs[group] = _Config(unit=j, number=number, params=params, pending=set(self.seeds))
        for seed in self.seeds:  # a new configuration: parsed here, once (check_search checked its ranges)
            self.queue.append({"trial": parse_trial({**cfg, "seed": seed}), "group": group,
                               "checkpoint_every_s": self.checkpoint_every_s})

    def _ask(self, j: int) -> bool:
        from optuna.trial import TrialState

        study = self.studies[j]
        for _ in range(MAX_DUPLICATE_ASKS):
            trial = study.ask(self.units[j].distributions)
            key = repr(sorted(trial.params.items()))
            if key not in self.seen[j]:
                self.seen[j][key] = group_key({**self.units[j].base, **trial.params})
                self._enqueue(j, trial.number, dict(trial.params))
                return True
            # a configuration already sampled is not run again; the sampler learns its result
            known = self.configs[self.seen[j][key]]
            done = not known.pending and not known.failed and not known.stopped and known.mean is not None
            study.tell(trial, known.mean) if done else study.tell(trial, state=TrialState.FAIL)
        return False

    def _refill(self) -> None:
        if not self.fixed_queued:
            self.fixed_queued = True
            for j, u in enumerate(self.units):
                if not u.distributions:
                    self._enqueue(j, None, {})
            if self.queue:
                return
        # round-robin over the searches, so an interrupted study has sampled every arm
        for _ in range(len(self.units)):
            j = self.next_unit
            self.next_unit = (j + 1) % len(self.units)
            if j in self.studies and self.asked[j] < self.samples[j]:
                if self._ask(j):
                    self.asked[j] += 1
                    return
                self.samples[j] = self.asked[j]  # the finite space is exhausted

    def _exhausted(self) -> bool:
        return self.fixed_queued and all(self.asked[j] >= self.samples[j] for j in self.studies)

    # ---- Tune's Searcher interface -------------------------------------------------------
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric and mode come from the study, given in __init__

    def suggest(self, trial_id: str):
        if not self.queue:
            self._refill()
        if not self.queue:
            return Searcher.FINISHED if self._exhausted() else None
        config = self.queue.pop(0)
        self.trial_group[trial_id] = (config["group"], as_trial(config["trial"]).seed)
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        group, seed = self.trial_group.get(trial_id, (None, None))
        c = self.configs.get(group)
        if c is None or seed not in c.pending:
            return
        c.pending.discard(seed)
        result = result or {}
        value = result.get(self.metric)
        if error or value is None or value != value:
            c.failed = True
        else:
            c.values[seed] = float(value)
            # ended before its last epoch: stopped by ReplicateASHA with its other seeds
            c.stopped = c.stopped or not result.get("weaklab/last", True)
        if c.pending or c.number is None:
            return
        study = self.studies[c.unit]
        if c.failed:
            study.tell(c.number, state=TrialState.FAIL)
        elif c.stopped:
            study.tell(c.number, state=TrialState.PRUNED)
        else:
            study.tell(c.number, c.mean)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        from optuna.trial import TrialState

        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        # an external storage may hold trials asked after the state was saved (the driver
        # died in between): their configurations are not in the queue, so they never run
        open_numbers = {c.number for c in self.configs.values() if c.pending}
        for study in self.studies.values():
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.number not in open_numbers:
                    study.tell(t.number, state=TrialState.FAIL)

    def summary(self) -> str:
        parts = [f"{u.label}: {self.samples[j]} sampled" if u.distributions else f"{u.label}: fixed"
                 for j, u in enumerate(self.units)]
        return "; ".join(parts)


class ReplicateASHA(AsyncHyperBandScheduler):
    """ASHA whose unit is a configuration (its seeds), not a trial.

    At each rung the first seed of a configuration to arrive decides, against the values
    other configurations recorded there, whether the configuration goes on; the other
    seeds follow that decision when they reach the same rung. Stopped trials end before
    their last epoch and are stored as ``stopped`` rows.
    """

    def __init__(self, **kwargs):
        super().__init__(brackets=1, **kwargs)
        self._decided: dict[str, dict[float, str]] = {}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        t = result[self._time_attr]
        if t >= self._max_t and self._stop_last_trials:
            return TrialScheduler.STOP
        group = _group_of(trial.config)
        bracket = self._brackets[0]
        reached = [m for m, _ in asha_rungs(bracket) if t >= m]
        if not reached:
            return TrialScheduler.CONTINUE
        milestone = max(reached)
        decided = self._decided.setdefault(group, {})
        if milestone not in decided:
            decided[milestone] = bracket.on_result(_Unit(group), t, self._metric_op * result[self._metric])
        action = decided[milestone]
        if action == TrialScheduler.STOP:
            self._num_stopped += 1
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._trial_info.pop(trial.trial_id, None)  # rungs hold configurations, recorded above

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._trial_info.pop(trial.trial_id, None)


@dataclass(frozen=True)
class _Unit:
    trial_id: str


def _group_of(config: dict[str, Any]) -> str:
    if "group" in config:
        return config["group"]
    trial = config["trial"]  # a flat dict in a Tune state written before the grid held Trials
    return group_key(trial.config if isinstance(trial, Trial) else trial)


def _plan(study, configs, opts, sets, data_root) -> tuple[list[SearchUnit], list[int], list[int]]:
    units = search_units(study, arm_configs(study, sets, data_root, configs))
    return units, split_samples(units, opts.num_samples), sorted({c["seed"] for c in configs})


def planned_trials(study, configs, opts, *, sets=None, data_root=None) -> int:
    """Tune trials a search over ``configs`` runs: (fixed units + sampled configurations) x seeds."""
    units, samples, seeds = _plan(study, configs, opts, sets, data_root)
    return (sum(1 for u in units if not u.distributions) + sum(samples)) * len(seeds)


def check_search(study, configs, opts, *, sets=None, data_root=None, experiments: Sequence[str] = ()) -> None:
    """Bad ``--num-samples`` / ``--optuna-storage`` as one-line ConfigErrors, before Ray."""
    units = search_units(study, arm_configs(study, sets, data_root, configs))
    searched = [u.label for u in units if u.distributions]
    if opts.num_samples is not None:
        check(bool(searched), "--num-samples", opts.num_samples,
              f"nothing: study {study.name!r} has no arm with a searched hyperparameter here (each arm runs once "
              f"per seed); drop --num-samples")
        check(opts.num_samples >= len(searched), "--num-samples", opts.num_samples,
              f"an integer >= {len(searched)}, one configuration per search ({', '.join(searched)})")
    storage = open_storage(opts.optuna_storage)
    if storage is not None and not opts.resume:
        import optuna

        taken = [n for n in optuna.get_all_study_names(storage) if n.split("/")[0] in experiments]
        check(not taken, "--optuna-storage", opts.optuna_storage,
              f"a storage without this study's searches (it holds {taken[0] if taken else ''!r}); "
              f"add --resume to continue them, or use another storage")


def make_searcher(study, configs, opts, *, experiment: str, resume: bool, sets=None, data_root=None):
    units, samples, seeds = _plan(study, configs, opts, sets, data_root)
    return ReplicateSearcher(units, samples, seeds, metric=tune_metric(study.metric), mode=study.mode,
                             sampler=opts.sampler, storage=opts.optuna_storage, study_name=experiment,
                             checkpoint_every_s=opts.checkpoint_every_s, resume=resume)
