"""Builds and runs the Tuner of a study: validation first, then Ray.

Order of work, so bad input never reaches Ray: resolve the study (dataset preset,
``--smoke``, ``--seeds``), expand it into flat trial configs with ``--set`` applied,
parse and validate every config into a typed ``Trial`` (``parse_trial``, the only time;
Tune's grid, the workers and the store get those Trials), check the resources, build each distinct weak
dataset once on the driver (dataset-dependent checks, and a warm cache), check the
cluster (``weaklab.tune.cluster.preflight``), and only then start or join Ray.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

from weaklab.config import Trial, parse_trial, plain as _norm, same_value as _same
from weaklab.registry import ConfigError
from weaklab.study import tune_metric

SEARCHES = ("grid", "optuna")
SCHEDULERS = ("none", "asha")


@dataclasses.dataclass(frozen=True)
class StudyArgs:
    """Which version of a study ``weaklab run`` runs; unset fields keep the study file's own.
    With :class:`RunOptions`, the one source of ``weaklab run``'s options, their defaults
    and their help (``weaklab.cli`` builds the parser and the README's table from both)."""

    dataset: str | None = dataclasses.field(default=None, metadata={"metavar": "NAME"})
    """dataset name: digits (bundled, the default), cifar10, cifar100, cub200, mnist, fashion_mnist, svhn,
    moons, digits-multi, voc2007, voc2012; a paper dataset selects that study's paper recipe (preset)"""
    data_root: str | None = dataclasses.field(default=None, metadata={"metavar": "DIR"})
    """folder with torchvision-format files (cifar-10-batches-py/, MNIST/raw/, train_32x32.mat, VOCdevkit/,
    CUB_200_2011/); nothing is downloaded"""
    smoke: bool = False
    """a tiny version of the study (results in RESULTS/STUDY-smoke/)"""
    seeds: int | None = dataclasses.field(default=None, metadata={"metavar": "N"})
    """seeds per grid point (default: the study's)"""
    sets: tuple[str, ...] = dataclasses.field(default=(), metadata={"flag": "--set", "metavar": "KEY=VALUE"})
    """fix a setting.*, hp.* or train.* value for the whole study, e.g. --set train.epochs=20 (repeatable); a key
    no arm of the study has is an error"""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Options of ``weaklab run`` that are not part of the study itself."""

    results: str = dataclasses.field(default="results", metadata={"metavar": "DIR|URI"})
    """results root: a folder or a URI, s3://bucket/prefix, gs://bucket/prefix, file:///path; one folder per study
    (Parquet)"""
    storage: str | None = dataclasses.field(default=None, metadata={"metavar": "URI"})
    """Tune experiment state and checkpoints, a local path or a cloud URI (default $WEAKLAB_STORAGE, else
    RESULTS/_tune, in the bucket when RESULTS is a URI)"""
    address: str | None = dataclasses.field(default=None, metadata={"metavar": "ADDR"})
    """Ray cluster to join ('auto' or host:port); default: start Ray locally"""
    cpus_per_trial: float = dataclasses.field(default=1.0, metadata={"metavar": "F"})
    """CPUs reserved per trial"""
    gpus_per_trial: float = dataclasses.field(default=0.0, metadata={"metavar": "F"})
    """GPUs per trial: a fraction in (0, 1] packs small trials on one GPU; a whole number gives each trial that many"""
    search: str = dataclasses.field(default="grid", metadata={"metavar": "grid|optuna"})
    """grid (every point of the study's grid) or optuna (sampled configurations over the grid's ranges)"""
    num_samples: int | None = dataclasses.field(default=None, metadata={"metavar": "N"})
    """configurations sampled by --search optuna, split evenly over the arms with searched hyperparameters; each
    runs on every seed (default: as many as those arms' grid points)"""
    sampler: str = dataclasses.field(default="tpe", metadata={"metavar": "tpe|random|cmaes|qmc"})
    """Optuna sampler of --search optuna: tpe, random, cmaes or qmc"""
    optuna_storage: str | None = dataclasses.field(default=None, metadata={"metavar": "URL"})
    """Optuna storage optuna-dashboard can watch: sqlite:///study.db or a journal file (default: in memory)"""
    scheduler: str = dataclasses.field(default="none", metadata={"metavar": "none|asha"})
    """none, or asha (stop weak configurations early; a configuration's seeds stop together)"""
    max_failures: int = dataclasses.field(default=1, metadata={"metavar": "N"})
    """retries of a trial that raised or lost its node (resumed from its last checkpoint)"""
    max_concurrent: int | None = dataclasses.field(default=None, metadata={"metavar": "N"})
    """cap on trials running at once (default: as many as the resources allow)"""
    reuse_actors: bool = dataclasses.field(default=True, metadata={"cli": False})
    """run consecutive trials in the same worker process (saves ~1 s of start-up per trial)"""
    checkpoint_every_s: float = dataclasses.field(default=5.0, metadata={"metavar": "S"})
    """seconds between a trial's checkpoints (0: every epoch); the last epoch always saves"""
    resume: bool = False
    """continue an interrupted study (Tuner.restore): finished trials are kept, unfinished ones resume from their
    checkpoints"""
    until_decided: bool = False
    """after the study, add seeds in rounds only to the configurations that undecided claims compare, until none
    is undecided or --max-seeds; a group-sequential stopping rule (O'Brien-Fleming-type alpha spending over the
    Holm family) keeps the overall error at 0.05 (docs/SEQUENTIAL.md); finished trials are never re-run"""
    max_seeds: int | None = dataclasses.field(default=None, metadata={"metavar": "N"})
    """--until-decided: the most seeds any configuration gets, more than the study's (default: 3 x the study's)"""
    seeds_per_round: int | None = dataclasses.field(default=None, metadata={"metavar": "N"})
    """--until-decided: seeds added per round (default: the study's seeds, e.g. looks at 5, 10, 15)"""
    verbose: bool = dataclasses.field(default=True, metadata={"cli": False})
    """print one progress line per finished trial"""

    def __post_init__(self):
        from weaklab.registry import check

        if self.storage is None and os.environ.get("WEAKLAB_STORAGE"):
            object.__setattr__(self, "storage", os.environ["WEAKLAB_STORAGE"])
        check(self.cpus_per_trial > 0, "--cpus-per-trial", self.cpus_per_trial, "a number of CPUs > 0")
        g = self.gpus_per_trial
        check(g == 0 or 0 < g <= 1 or float(g).is_integer(), "--gpus-per-trial", g,
              "0, a fraction in (0, 1], or a whole number of GPUs")
        check(g >= 0, "--gpus-per-trial", g, "0, a fraction in (0, 1], or a whole number of GPUs")
        check(self.search in SEARCHES, "--search", self.search, " or ".join(SEARCHES))
        check(self.scheduler in SCHEDULERS, "--scheduler", self.scheduler, " or ".join(SCHEDULERS))
        check(self.num_samples is None or self.num_samples >= 1, "--num-samples", self.num_samples, "an integer >= 1")
        check(self.num_samples is None or self.search == "optuna", "--num-samples", self.num_samples,
              "only with --search optuna (grid search runs every point of the study's grid)")
        from weaklab.tune.search import SAMPLERS

        check(self.sampler in SAMPLERS, "--sampler", self.sampler, " or ".join(SAMPLERS))
        check(self.sampler == "tpe" or self.search == "optuna", "--sampler", self.sampler, "only with --search optuna")
        check(self.optuna_storage is None or self.search == "optuna", "--optuna-storage", self.optuna_storage,
              "only with --search optuna")
        check(self.max_failures >= 0, "--max-failures", self.max_failures, "an integer >= 0")
        check(self.checkpoint_every_s >= 0, "--checkpoint-every-s", self.checkpoint_every_s, "seconds >= 0")
        check(self.max_concurrent is None or self.max_concurrent >= 1, "--max-concurrent", self.max_concurrent,
              "an integer >= 1")
        check(self.max_seeds is None or self.max_seeds >= 2, "--max-seeds", self.max_seeds,
              "an integer >= 2, more than the study's seeds")
        check(self.max_seeds is None or self.until_decided, "--max-seeds", self.max_seeds, "only with --until-decided")
        check(self.seeds_per_round is None or self.seeds_per_round >= 1, "--seeds-per-round", self.seeds_per_round,
              "an integer >= 1")
        check(self.seeds_per_round is None or self.until_decided, "--seeds-per-round", self.seeds_per_round,
              "only with --until-decided")
        # Optuna samples new configurations as it goes, so "the configurations a claim compares" is no fixed set to
        # add seeds to; ASHA's rungs would stop a round's seeds against a different cohort than the first round's
        check(not self.until_decided or self.search == "grid", "--search", self.search,
              "grid with --until-decided (Optuna's sampled configurations are not a fixed set to add seeds to)")
        check(not self.until_decided or self.scheduler == "none", "--scheduler", self.scheduler,
              "none with --until-decided (ASHA would stop a round's seeds against another cohort)")


def study_dir_name(name: str, smoke: bool) -> str:
    # a smoke run never mixes its rows into the real study's Parquet
    return f"{name}-smoke" if smoke else name


@dataclasses.dataclass(frozen=True)
class Plan:
    """A study validated into trials, once, before Ray: what ``weaklab run`` counts, prints
    and runs (:func:`prepare` builds it, :func:`run_study` runs it)."""

    study: Any
    """the resolved study (dataset preset, ``--smoke`` and ``--seeds`` applied)"""
    trials: list[Any]
    """every trial of the study, ``--set`` applied, parsed into typed :class:`weaklab.config.Trial`
    objects (every value checked): what Tune's grid gets"""
    data: list[Any]
    """each distinct weak dataset, built once here (its metric and info keys fix the Parquet schema)"""
    sets: dict[str, Any]
    """the ``--set`` values, parsed"""
    data_root: str | None
    smoke: bool

    @property
    def configs(self) -> list[dict[str, Any]]:
        """the trials' flat configs (what the study file and ``--set`` gave)"""
        return [t.config for t in self.trials]

    @property
    def experiment(self) -> str:
        """the study's folder under ``--results`` and its Tune experiment's name"""
        return study_dir_name(self.study.name, self.smoke)

    def planned_trials(self, opts: "RunOptions | None" = None) -> int:
        """Tune trials the run starts: every config (grid), or a select-then-seeds study's
        select trials plus one final trial per seed at each arm's chosen point, less those
        the select phase already ran (``planned_carried``)."""
        opts = opts or RunOptions()
        if not self.study.select_then_seeds:
            if opts.search == "optuna":
                from weaklab.tune.search import planned_trials

                return planned_trials(self.study, self.configs, opts, sets=self.sets, data_root=self.data_root)
            return len(self.trials)
        select, _ = split_select(self.study, self.trials)
        return len(select) + planned_final(self.study, self.trials) - planned_carried(self.study, self.trials)


def prepare(name: str, *, smoke: bool = False, dataset: str | None = None, data_root: str | None = None,
            seeds: int | None = None, sets: dict[str, Any] | Sequence[str] | None = None,
            build_data: bool = True) -> Plan:
    """The :class:`Plan` of study ``name``. Raises ConfigError on any bad value."""
    from weaklab.study import check_trials, expand, get_study, parse_sets, resolve

    study = resolve(get_study(name), dataset=dataset, smoke=smoke, seeds=seeds)
    if sets is not None and not isinstance(sets, dict):
        sets = parse_sets(sets)
    configs = expand(study, sets=sets, data_root=data_root)
    trials = [parse_trial(c) for c in configs]
    check_trials(trials)
    data = _build_weak_data(trials) if build_data else []
    return Plan(study=study, trials=trials, data=data, sets=dict(sets or {}), data_root=data_root,
                smoke=smoke)


def condition_keys(study) -> dict[str, list[str]]:
    """Label -> the keys of a condition (a point of ``study.grid`` and of its arms'
    ``setting.*`` keys): arms sharing a label (two sweeps of one method) choose one point
    among them all, per condition."""
    from weaklab.study import is_condition

    keys = {(a.label or a.method): [*study.grid] for a in study.arms}
    for a in study.arms:
        keys[a.label or a.method] += [k for k in a.grid if is_condition(k, study)
                                      and k not in keys[a.label or a.method]]
    return keys


def _condition(conds: dict[str, list[str]], label: str, config) -> tuple:
    """The comparable values of ``config``'s condition keys for ``label`` (``condition_keys``)."""
    return tuple(repr(_norm(config.get(k))) for k in conds[label])


def _choices(study, trials: list[Trial]):
    """trial -> how many hyperparameter points its (label, condition) chooses among: more
    than one is a choice for the select phase; one (a sweep that covers only some noise
    types) is not."""
    from weaklab.study import is_condition

    conds = condition_keys(study)
    hps = {label: [] for label in conds}
    for a in study.arms:
        hps[a.label or a.method] += [k for k in a.grid if not is_condition(k, study)
                                     and k not in hps[a.label or a.method]]
    points: dict[tuple, set] = {}
    for t in trials:
        points.setdefault((t.label, _condition(conds, t.label, t.config)), set()).add(
            _condition(hps, t.label, t.config))
    return lambda t: len(points.get((t.label, _condition(conds, t.label, t.config)), ()))


def split_select(study, trials: list[Trial]) -> tuple[list[Trial], set[str]]:
    """A select-then-seeds study's select-phase trials (every grid point of each (label,
    condition) that has a choice to make, at the first ``study.select_seeds`` seeds) and
    the labels with a choice somewhere."""
    seeds = sorted({t.seed for t in trials})
    select_seeds = set(seeds[:max(1, min(study.select_seeds, len(seeds)))])
    n = _choices(study, trials)
    select = [t.in_phase("select") for t in trials if t.seed in select_seeds and n(t) > 1]
    return select, {t.label for t in select}


def planned_final(study, trials: list[Trial]) -> int:
    """Final-phase trials of a select-then-seeds study: a (label, condition) with a choice
    runs one of its points per seed, so its trials divided by its number of points."""
    n = _choices(study, trials)
    return round(sum(1 / max(1, n(t)) for t in trials))


def planned_carried(study, trials: list[Trial]) -> int:
    """Final-phase trials the select phase already ran: a (label, condition) with a choice
    has its chosen point's select seeds done (``_carried``), one per select seed."""
    select, _ = split_select(study, trials)
    n = _choices(study, trials)
    return round(sum(1 / n(t) for t in select))


def _build_weak_data(parsed) -> list:
    """Each distinct weak dataset once, here on the driver: dataset-dependent checks
    (a missing --data-root folder, a bag size larger than the data) fail before Ray."""
    from weaklab.engine import _dataset
    from weaklab.settings import make_weak_data

    seen, built = set(), []
    for t in parsed:
        key = (t.dataset, t.data_root, t.setting, repr(t.setting_params), t.seed)
        if key not in seen:
            seen.add(key)
            built.append(make_weak_data(_dataset(t.dataset, t.data_root, 0), t.setting, t.setting_params, t.seed))
    return built


def run_study(name: "str | Plan", *, smoke: bool = False, dataset: str | None = None, data_root: str | None = None,
              seeds: int | None = None, sets: dict[str, Any] | Sequence[str] | None = None,
              options: RunOptions | None = None, **option_kwargs) -> str:
    """Run study ``name`` (or an already prepared :class:`Plan`) through Ray Tune; returns
    the folder (or URI) holding its Parquet."""
    from weaklab import store

    opts = options or RunOptions(**option_kwargs)
    plan = name if isinstance(name, Plan) else prepare(name, smoke=smoke, dataset=dataset, data_root=data_root,
                                                       seeds=seeds, sets=sets)
    if not plan.data and plan.trials:
        plan = dataclasses.replace(plan, data=_build_weak_data(plan.trials))
    study, trials, data, smoke, data_root, sets = (plan.study, plan.trials, plan.data, plan.smoke, plan.data_root,
                                                   plan.sets)
    configs = plan.configs
    study_dir = store.join(store.absolute(opts.results), plan.experiment)
    store.check_results(study_dir)  # unreachable, missing bucket, no credentials: before Ray
    # fixed before the first trial: every file of the study has exactly this schema
    schema = store.study_schema(configs, data, study=study.name)
    search = None
    if opts.search == "optuna":
        from weaklab.tune.search import check_search

        search = {"sets": sets, "data_root": data_root}
        check_search(study, configs, opts, experiments=(plan.experiment, f"{plan.experiment}-select"), **search)
    _preflight(opts)
    _init_ray(opts)
    if study.select_then_seeds:
        return _run_select_then_seeds(study, trials, study_dir, opts, smoke, schema, search=search)
    _fit(study, trials, study_dir, opts, experiment=study_dir_name(study.name, smoke), schema=schema, search=search)
    return study_dir


def _preflight(opts: RunOptions) -> None:
    try:
        from weaklab.tune.cluster import preflight
    except ImportError:
        return
    from weaklab.store import is_local

    # with --results on a bucket, Tune's state goes there too unless --storage says otherwise
    storage = opts.storage or (None if is_local(opts.results) else _storage_path(opts))
    preflight(address=opts.address, storage=storage, cpus_per_trial=opts.cpus_per_trial,
              gpus_per_trial=opts.gpus_per_trial)


def _init_ray(opts: RunOptions) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if opts.address:
        ray.init(address=opts.address, log_to_driver=False)
    else:
        # "local" starts a fresh instance; plain ray.init() would join any `ray start`
        # cluster on this machine, which --address is for
        ray.init(address="local", log_to_driver=False, include_dashboard=False)


def _storage_path(opts: RunOptions) -> str:
    from weaklab.store import absolute, join

    if opts.storage:
        return opts.storage
    return join(absolute(opts.results), "_tune")


def _fit(study, trials: list[Trial], study_dir: str, opts: RunOptions, *, experiment: str,
         phase: str | None = None, schema=None, search: dict[str, Any] | None = None) -> None:
    """One Tune experiment over ``trials``: every one of them (grid, or a select-then-seeds
    final phase), or an Optuna search over their configs when ``search`` holds the run's ``--set``
    values and data root (``weaklab.tune.search``); every trial stored with ``schema``."""
    from ray import tune

    from weaklab import store
    from weaklab.tune.callbacks import ParquetCallback, ProgressCallback
    from weaklab.tune.trainable import WeaklabTrainable

    # a checkpoint per epoch (so failed trials resume where they were) forces frequent
    # experiment snapshots; Tune's warning about it would bury the progress lines
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Parquet is the store: Tune's own CSV/JSON/TensorBoard logs would duplicate every result
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # ...so the ResultGrid Tune builds at the end finds no result.json and warns per trial
    import logging

    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    from weaklab.tune._ray_compat import atomic_experiment_uploads

    # a driver killed while Tune copies its state must leave a state --resume can read
    atomic_experiment_uploads()
    storage = _storage_path(opts)
    exp_path = store.join(storage, experiment)
    trainable = tune.with_resources(WeaklabTrainable, {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial})
    if opts.resume:
        tuner = _restore(exp_path, trainable, opts)
    else:
        stored = store.stored_trial_ids(study_dir)
        if phase == "seeds":  # --until-decided: the earlier rounds' rows are expected; ``trials`` are none of them
            stored = set()
        if stored and phase == "final":  # select-then-seeds: the select rows are expected here
            stored = set(_phase_rows(study_dir, "final")["trial_id"])
        if stored:
            raise ConfigError(f"--results: {study_dir} already holds {len(stored)} trials of this study; add --resume "
                              f"to continue it, or choose another --results folder (or delete that one) to start afresh")
        n, search_alg = len(trials), None
        param_space = {"trial": tune.grid_search(trials), "checkpoint_every_s": opts.checkpoint_every_s}
        if search is not None:
            from weaklab.tune.search import make_searcher

            search_alg = make_searcher(study, [t.config for t in trials], opts, experiment=experiment, resume=False,
                                       **search)
            n, param_space = search_alg.total_trials, {}
            if opts.verbose:
                print(f"weaklab: Optuna ({opts.sampler}) over {search_alg.summary()}; "
                      f"{len(search_alg.seeds)} seeds each, {n} trials", flush=True)
        scheduler = None
        if opts.scheduler == "asha":
            from weaklab.tune.search import ReplicateASHA

            epochs = trials[0].train.epochs
            # rungs decide per configuration: its seeds are stopped or promoted together
            scheduler = ReplicateASHA(grace_period=max(1, epochs // 10), max_t=max(epochs, 1))
        callbacks = [ParquetCallback(study_dir, study.name, schema)]
        if opts.verbose:
            callbacks.append(ProgressCallback(n, tune_metric(study.metric), study.mode))
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(metric=tune_metric(study.metric), mode=study.mode, search_alg=search_alg,
                                        scheduler=scheduler, num_samples=1 if search_alg is None else n,
                                        reuse_actors=opts.reuse_actors, max_concurrent_trials=opts.max_concurrent),
            run_config=tune.RunConfig(name=experiment, storage_path=storage, callbacks=callbacks, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
        )
    tuner.fit()


def _restore(exp_path: str, trainable, opts: RunOptions):
    from ray import tune

    fresh = "delete that folder and the study's results folder (or pick new --results/--storage) and run without --resume"
    try:
        ok = tune.Tuner.can_restore(exp_path)
    except Exception as e:
        raise ConfigError(f"--resume: cannot read the experiment state at {exp_path} ({type(e).__name__}); {fresh}") from None
    if not ok:
        raise ConfigError(f"--resume: no experiment state at {exp_path}; start it without --resume")
    # Tune itself only logs an unreadable experiment_state-*.json and then restarts the
    # experiment with empty trial configs; read it first so that is a clear error instead.
    try:
        import json

        from weaklab.tune._ray_compat import fs_and_path, newest_experiment_state

        fs, fs_path = fs_and_path(exp_path)
        state_path = newest_experiment_state(fs_path, fs)
        if state_path is None:
            raise ValueError("no experiment_state-*.json")
        with fs.open_input_stream(state_path) as f:
            state = json.loads(f.readall())
        if not isinstance(state, dict) or "trial_data" not in state or "runner_data" not in state:
            raise ValueError("experiment state without trial_data/runner_data")
    except Exception as e:
        raise ConfigError(f"--resume: the experiment state at {exp_path} is corrupt or truncated "
                          f"({type(e).__name__}); {fresh}") from None
    try:
        return tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=False)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--resume: the experiment state at {exp_path} is corrupt or truncated ({msg[:200]}); {fresh}") from None


def _run_select_then_seeds(study, trials: list[Trial], study_dir: str, opts: RunOptions, smoke: bool, schema=None,
                           search: dict[str, Any] | None = None) -> str:
    """Phase 'select': every grid point of each arm that has a choice to make, at the first
    ``study.select_seeds`` seeds (under ``--search optuna``: the configurations Optuna
    samples, on those seeds); phase 'final': all seeds at the hyperparameters each arm
    scored best on the seed-mean of ``study.metric`` per point of ``study.grid``. An arm
    with a single grid point has nothing to select and only runs in the final phase."""
    base = study_dir_name(study.name, smoke)
    select, _ = split_select(study, trials)
    n_select = len(select)
    if search is not None and select:
        from weaklab.tune.search import planned_trials

        n_select = planned_trials(study, [t.config for t in select], opts, **search)
    rows = _phase_rows(study_dir, "select")
    if select and (0 if rows is None else len(rows)) < n_select:
        _fit(study, select, study_dir, opts, experiment=f"{base}-select", phase="select", schema=schema,
             search=search)
        rows = _phase_rows(study_dir, "select")
    from weaklab import store

    final = _chosen_trials(study, trials, rows, sampled=search is not None)
    carried = _carried(final, rows)
    run = [t for i, t in enumerate(final) if i not in carried]
    if opts.verbose and carried:
        print(f"weaklab: final phase: {len(run)} trials to run; {len(carried)} are select trials of the chosen "
              f"points (same config and seed), stored again without training them twice", flush=True)
    if run:
        _fit(study, run, study_dir, dataclasses.replace(opts, resume=opts.resume and _has_state(opts, f"{base}-final")),
             experiment=f"{base}-final", phase="final", schema=schema)
    # after the fit: before it, a fresh final phase would find these rows and refuse to start
    for sid in carried.values():
        store.carry_trial(study_dir, sid, f"{sid}-final", phase="final")
    return study_dir


def _carried(final: list[Trial], select_rows) -> dict[int, str]:
    """Index in ``final`` -> the completed select trial it is (``_stored_as``, phase aside).
    A trial is deterministic given its config and seed (a chosen point's select and final
    rows were bit-identical in every metric, benchmarks/RESULTS.md "Issue 26"), so the
    final phase stores those rows again (``store.carry_trial``) instead of re-running them."""
    if select_rows is None or not len(select_rows):
        return {}
    by = _by_label_seed(select_rows[select_rows["status"] == "completed"])
    out = {}
    for i, t in enumerate(final):
        sid = _stored_as(t, by.get((t.label, t.seed), []), phase=False)
        if sid is not None:
            out[i] = sid
    return out


def _by_label_seed(rows) -> dict[tuple, list[dict]]:
    """Stored rows as records per (label, seed), the candidates ``_stored_as`` compares."""
    return {k: g.to_dict("records") for k, g in rows.groupby(["label", "seed"])}


def _stored_as(t: Trial, rows: list[dict], *, phase: bool = True) -> str | None:
    """The id of the first of ``rows`` (one label and seed) that is trial ``t``: the same
    ``setting.``/``hp.``/``train.`` value for every such key of its config (and the same
    phase, with ``phase``)."""
    keys = [k for k in t.config if k.startswith(("setting.", "hp.", "train.")) or (phase and k == "phase")]
    for r in rows:
        if all(_same_value(r.get(k), t.config[k]) for k in keys if k in r):
            return r["trial_id"]
    return None


def _phase_rows(study_dir: str, phase: str):
    """The stored ``trials`` rows of one phase of a select-then-seeds study; None while the
    study folder holds no trial."""
    from weaklab import store

    if not store.stored_trial_ids(study_dir):
        return None
    rows = store.load_study(study_dir)[0]
    return rows[rows["phase"] == phase]


def _has_state(opts: RunOptions, experiment: str) -> bool:
    """Whether Tune's state of ``experiment`` exists, on local or cloud storage alike."""
    from weaklab import store

    return store.exists(store.join(_storage_path(opts), experiment))


def _chosen_trials(study, trials: list[Trial], select_trials, sampled: bool = False) -> list[Trial]:
    """The trials (all seeds) whose arm hyperparameters have the best seed-mean of
    ``study.metric`` over the completed select trials, per arm and condition (a point of
    ``study.grid`` and of the arm's ``setting.*`` keys); every config of an arm with a
    single hyperparameter point (nothing to choose). ``sampled``:
    Optuna's values are no grid points, so they replace the arm's searched keys, one
    new configuration per seed, parsed here (its first and only check)."""
    import pandas as pd

    from weaklab.study import hp_choices

    metric = study.metric
    conditions = condition_keys(study)
    n_points = _choices(study, trials)
    sign = 1.0 if study.mode == "max" else -1.0
    best: dict[tuple, tuple[float, dict]] = {}
    rows = select_trials if select_trials is not None else pd.DataFrame()
    if len(rows):
        rows = rows[(rows["status"] == "completed") & rows[metric].notna()] if metric in rows else rows.iloc[:0]
    for arm in study.arms:
        label, keys = arm.label or arm.method, list(arm.grid)
        if hp_choices(study, arm) <= 1 or not len(rows):
            continue
        mine = rows[rows["label"] == label]
        groups: dict[tuple, list] = {}
        for _, row in mine.iterrows():
            point = _condition(conditions, label, row)
            hp = tuple(repr(_norm(row.get(k))) for k in keys)
            groups.setdefault((point, hp), []).append(row)
        for (point, _), members in groups.items():
            score = sign * sum(float(r[metric]) for r in members) / len(members)
            key = (label, point)
            if key not in best or score > best[key][0]:
                best[key] = (score, members[0])
    out, sampled_configs = [], []
    for t in trials:
        c = t.config
        arm = next(a for a in study.arms if (a.label or a.method) == t.label)
        if n_points(t) <= 1:
            out.append(t.in_phase("final"))
            continue
        chosen = best.get((t.label, _condition(conditions, t.label, c)))
        if chosen is None:
            continue
        if sampled:
            cfg = {**c, **{k: _norm(chosen[1].get(k)) for k in arm.grid if not k.startswith("setting.")},
                   "phase": "final"}
            if cfg not in sampled_configs:
                sampled_configs.append(cfg)
                out.append(parse_trial(cfg))
        elif all(_same(c.get(k), chosen[1].get(k)) for k in arm.grid):
            out.append(t.in_phase("final"))
    return out


# --- --until-decided: seeds where they decide (issue 27; analysis.sequential) ----------------


def sequential_schedule(study, opts: RunOptions) -> list[int]:
    """The seeds of each look of ``--until-decided`` (``analysis.sequential.seed_schedule``):
    the study's seeds, then ``--seeds-per-round`` more a round up to ``--max-seeds``.
    Raises ConfigError (before Ray) on a design that has nothing to add or to decide."""
    from analysis.sequential import seed_schedule
    from weaklab.registry import check

    first = study.seeds
    max_seeds = opts.max_seeds if opts.max_seeds is not None else 3 * first
    check(max_seeds > first, "--max-seeds", max_seeds, f"more than the {first} seeds study {study.name!r} runs")
    check(bool(study.claims), "--until-decided", True, f"a study that declares claims; {study.name!r} declares none")
    return seed_schedule(first=first, step=opts.seeds_per_round or first, max_seeds=max_seeds)


def _seed_trials(plan: Plan, study_dir: str, seeds: Sequence[int]) -> list[Trial]:
    """Every trial of the study at ``seeds`` (new seeds of the same configurations, parsed
    and checked like the first ones); for a select-then-seeds study the final-phase trials
    at the hyperparameters its select phase chose (the choice is not re-made)."""
    from weaklab.study import check_trials, expand

    trials = [parse_trial(c) for c in expand(plan.study, sets=plan.sets, data_root=plan.data_root, seeds=seeds)]
    check_trials(trials)
    if plan.study.select_then_seeds:
        trials = _chosen_trials(plan.study, trials, _phase_rows(study_dir, "select"))
    return trials


def _not_stored(trials: list[Trial], study_dir: str) -> list[Trial]:
    """The ``trials`` no stored row already is (same label, seed, phase and every
    ``setting.``/``hp.``/``train.`` value of its config, whatever its status): what a round
    still has to run, so a finished trial is never run twice."""
    from weaklab import store

    if not store.stored_trial_ids(study_dir):
        return list(trials)
    by = _by_label_seed(store.load_study(study_dir)[0])
    return [t for t in trials if _stored_as(t, by.get((t.label, t.seed), [])) is None]


def _same_value(stored, given) -> bool:
    """A stored (typed) value equals a config's value, which may still be ``--set``'s string."""
    if _same(stored, given):
        return True
    if isinstance(given, str) and not isinstance(_norm(stored), str):
        try:
            return _same(_norm(stored), type(_norm(stored))(float(given)) if not isinstance(_norm(stored), bool)
                         else given.strip().lower() in ("1", "true", "yes"))
        except (TypeError, ValueError):
            return False
    return False


def _jsonable(v):
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v.item() if hasattr(v, "item") else v


def write_record(study_dir: str, record: dict[str, Any]) -> None:
    """``STUDY_DIR/sequential.json``, the rounds and the sequential verdicts the report reads
    (beside ``trials/``, never inside it: it is no trial)."""
    import json

    from analysis.sequential import RECORD
    from weaklab import store

    fs, path = store.filesystem(study_dir)
    with fs.open_output_stream(f"{path.rstrip('/')}/{RECORD}") as f:
        f.write(json.dumps(_jsonable(record), indent=1).encode())


def run_until_decided(plan: Plan, options: RunOptions) -> str:
    """``weaklab run STUDY --until-decided``: run (or resume) the study, then look at its
    claims and add seeds in rounds to the configurations undecided claims compare
    (``analysis.sequential.run_rounds``), each round a Tune experiment of its own
    (``STUDY-seedsA-B``) writing into the same Parquet; with ``--resume`` an interrupted
    round resumes from its checkpoints. Returns the study folder."""
    from analysis import sequential as seq
    from analysis.claims import evaluate_claims
    from weaklab import store

    opts, study = options, plan.study
    schedule = sequential_schedule(study, opts)
    if not plan.data and plan.trials:
        plan = dataclasses.replace(plan, data=_build_weak_data(plan.trials))
    study_dir = run_study(plan, options=opts)
    schema = store.study_schema(plan.configs, plan.data, study=study.name)
    added: dict[int, int] = {}

    def evaluate(n: int):
        trials = store.load_study(study_dir)[0]
        return evaluate_claims(trials[trials["seed"] < n], study.claims)

    def add_seeds(rows, seeds: list[int]) -> None:
        cand = _seed_trials(plan, study_dir, seeds)
        want = [cand[i] for i in seq.configs_for(rows, study.claims, [t.config for t in cand])]
        missing = _not_stored(want, study_dir)
        experiment = f"{plan.experiment}-seeds{seeds[0]}-{seeds[-1]}"
        configs = len({repr(sorted((k, v) for k, v in t.config.items() if k != "seed")) for t in want})
        if opts.verbose:
            print(f"weaklab: --until-decided: {len(rows)} claim row(s) undecided; seeds {seeds[0]}-{seeds[-1]} at "
                  f"{configs} configuration(s): {len(want)} trials, {len(missing)} not yet run", flush=True)
        if missing:
            _fit(study, missing, study_dir, dataclasses.replace(opts, resume=opts.resume and _has_state(opts, experiment)),
                 experiment=experiment, phase="seeds", schema=schema)
        added[seeds[0]] = len(want)

    design = {"first": schedule[0], "step": opts.seeds_per_round or schedule[0], "max_seeds": schedule[-1],
              "schedule": schedule, "alpha": seq.ALPHA, "exact": True, "spending": "Lan-DeMets O'Brien-Fleming-type"}

    def record(table, rounds) -> None:
        for r in rounds:  # the trials each look's round added (the seeds after it)
            r["trials_added"] = added.get(r["seeds"], 0)
        rows = [{"key": list(seq.row_key(r)), **{k: getattr(r, k) for k in
                 ("verdict_seq", "status", "look", "level", "boundary", "p_value", "n_pairs")},
                 "round_decided": getattr(r, "round_decided", None)}
                for r in table.itertuples(index=False)]
        write_record(study_dir, {"design": design, "rounds": rounds, "rows": rows})

    # written after every look (an interrupted run keeps the looks it made) and once more at the end
    table, rounds = seq.run_rounds(evaluate=evaluate, add_seeds=add_seeds, schedule=schedule, claims=study.claims,
                                   on_look=record)
    record(table, rounds)
    if opts.verbose:
        for r in rounds:
            print(f"weaklab: look {r['round']} at {r['seeds']} seeds: {len(r['decided'])} decided, "
                  f"{r['continuing']} continuing, then {r['trials_added']} trials", flush=True)
    return study_dir
