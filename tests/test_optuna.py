"""``--search optuna``: seeds as replicates, one search per arm, no configuration twice,
bad input before Ray, every study's report on Optuna results, ``--resume`` of a killed driver.

The searcher tests drive :class:`weaklab.tune.search.ReplicateSearcher` the way Tune does
(``suggest`` until FINISHED, ``on_trial_complete`` with the trial's last result), with a
metric that is a fixed function of the configuration and seed, so they need no Ray.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from weaklab.config import Trial
from weaklab.study import package_studies
from weaklab.tune.runner import RunOptions, prepare
from weaklab.tune.search import ReplicateSearcher, arm_configs, make_searcher, search_units, split_samples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _objective(cfg):
    # a smooth function of the sampled tau plus a per-seed offset: replicates differ
    return -abs(math.log(float(cfg.get("hp.tau", 1.0))) - 0.5) + 0.01 * cfg["seed"]


def _drive(searcher: ReplicateSearcher, *, concurrent: int = 2, stop_after: int | None = None):
    """Run the searcher as Tune would, ``concurrent`` trials at a time; returns the configs
    handed out (in order) and the trial ids still running when ``stop_after`` was reached."""
    handed, running, n = [], [], 0
    while True:
        while len(running) < concurrent:
            if stop_after is not None and n >= stop_after:
                return handed, running
            cfg = searcher.suggest(f"t{n}")
            if cfg is None or cfg == ReplicateSearcher.FINISHED:
                break
            assert isinstance(cfg["trial"], Trial)  # parsed once, on the driver: the worker gets it typed
            cfg = {**cfg, "trial": cfg["trial"].config}
            handed.append(cfg)
            running.append((f"t{n}", cfg))
            n += 1
        if not running:
            return handed, []
        tid, cfg = running.pop(0)
        searcher.on_trial_complete(tid, {searcher.metric: _objective(cfg["trial"]), "weaklab/last": True})


def _tau_searcher(num_samples, seeds=3, **kw):
    plan = prepare("tau-sweep", seeds=seeds, build_data=False)
    study, configs = plan.study, plan.configs
    opts = RunOptions(search="optuna", num_samples=num_samples, **kw)
    return make_searcher(study, configs, opts, experiment="t", resume=False)


def _check_replicates(handed, seeds):
    trials = pd.DataFrame([{**c["trial"], "group": c["group"]} for c in handed])
    hp = ["label", "hp.tau", "hp.train_samples"]
    # one row per (configuration, seed): no configuration runs twice
    assert not trials.duplicated(hp + ["seed"]).any()
    per_group = trials.groupby("group")["seed"].apply(sorted)
    assert (per_group.map(lambda s: s == list(range(seeds)))).all(), per_group
    # a group is exactly one configuration
    assert (trials.groupby("group")[["hp.tau", "hp.train_samples", "label"]].nunique(dropna=False) == 1).all().all()
    return trials


def test_twenty_samples_no_duplicates_every_seed_fixed_arm_once_per_seed():
    s = _tau_searcher(20)
    handed, _ = _drive(s)
    trials = _check_replicates(handed, seeds=3)
    het, hom = trials[trials["method"] == "heteroscedastic"], trials[trials["method"] == "homoscedastic"]
    assert het.groupby("group").ngroups == 20 and len(het) == 60
    # the hyperparameter-free arm is never sampled: one trial per seed
    assert sorted(hom["seed"]) == [0, 1, 2] and hom["group"].nunique() == 1
    assert len(trials) == s.total_trials == 63
    taus = het.groupby("group")["hp.tau"].first()
    assert taus.between(0.025, 100.0).all() and taus.nunique() == 20
    assert set(het["hp.train_samples"]) <= {1, 100}
    # Optuna was told one seed-mean per configuration
    [study] = s.studies.values()
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 20
    by_tau = het.groupby("hp.tau")
    for t in done:
        seeds = by_tau.get_group(t.params["hp.tau"])
        assert t.value == pytest.approx(sum(_objective(r) for r in seeds.to_dict("records")) / 3)


def test_a_set_hyperparameter_of_one_arm_is_fixed_there_and_its_search_goes():
    # --set hp.tau=2: tau (tau-sweep's only searched key, at S = 100) is no longer searched,
    # so heteroscedastic runs once per seed at tau = 2; homoscedastic has no tau
    plan = prepare("tau-sweep", seeds=2, sets=["hp.tau=2"], build_data=False)
    study, configs = plan.study, plan.configs
    s = make_searcher(study, configs, RunOptions(search="optuna"), experiment="s", resume=False,
                      sets={"hp.tau": "2"})
    trials = _check_replicates(_drive(s)[0], seeds=2)
    het = trials[trials["method"] == "heteroscedastic"]
    assert set(het["hp.tau"]) == {"2"} and len(het) == 2 and len(trials) == 4


def test_a_finite_space_is_never_sampled_twice_and_its_share_moves_on():
    # qll-compare: GCE searches lr in {0.01, 0.1} per mix type (a finite space of 2),
    # Bootstrap and JS a beta / pi1; the other arms search nothing and run once per seed.
    # 40 configurations: the small spaces run whole, the rest of the share moves on.
    plan = prepare("qll-compare", seeds=2, build_data=False)
    study, configs = plan.study, plan.configs
    units = search_units(study, arm_configs(study, None, None, configs))
    shares = split_samples(units, 40)
    assert sum(shares) == 40 and all(sh == 2 for u, sh in zip(units, shares) if u.size == 2)
    fixed = sum(1 for u in units if not u.distributions)
    s = make_searcher(study, configs, RunOptions(search="optuna", num_samples=40, sampler="random"), experiment="q",
                      resume=False)
    handed, _ = _drive(s)
    trials = pd.DataFrame([{**c["trial"], "group": c["group"]} for c in handed])
    keys = [k for k in trials.columns if k not in ("seed", "group")]
    assert not trials.duplicated(keys + ["seed"]).any()
    assert trials.groupby("group").ngroups == 40 + fixed and len(trials) == 2 * (40 + fixed)


@pytest.mark.parametrize("sampler", ["random", "cmaes", "qmc"])
def test_every_sampler_runs_replicates(sampler):
    handed, _ = _drive(_tau_searcher(6, seeds=2, sampler=sampler))
    trials = _check_replicates(handed, seeds=2)
    assert trials.groupby("group").ngroups == 7


def test_saved_searcher_continues_the_same_search(tmp_path):
    """Saved mid-search (two trials running) and restored into a searcher built afresh, as
    ``Tuner.restore`` does: the rest of the search is the one the uninterrupted run makes."""
    whole, _ = _drive(_tau_searcher(12))
    s = _tau_searcher(12)
    first, running = _drive(s, stop_after=17)
    s.save(str(tmp_path / "searcher.pkl"))
    restored = _tau_searcher(12)
    restored.restore(str(tmp_path / "searcher.pkl"))
    for tid, cfg in running:  # Tune re-runs the trials its state saw running
        restored.on_trial_complete(tid, {restored.metric: _objective(cfg["trial"]), "weaklab/last": True})
    rest, _ = _drive(restored)
    assert [c["trial"] for c in first + rest] == [c["trial"] for c in whole]
    _check_replicates(first + rest, seeds=3)


class _FakeTrial:
    def __init__(self, trial_id, cfg):
        self.trial_id, self.config = trial_id, {"trial": cfg}


def test_replicate_asha_stops_and_promotes_a_configurations_seeds_together():
    """Rungs at epochs 1 and 3 (max 9): each configuration's first seed to arrive decides
    for all its seeds; a later seed with a better value still stops with its configuration."""
    from ray.tune.schedulers import TrialScheduler

    from weaklab.tune.search import ReplicateASHA

    sched = ReplicateASHA(metric="acc", mode="max", grace_period=1, max_t=9, reduction_factor=3)
    cfgs = {name: {"hp.x": x} for name, x in (("a", 1.0), ("b", 2.0), ("c", 3.0))}
    trials = {(n, s): _FakeTrial(f"{n}{s}", {**c, "seed": s}) for n, c in cfgs.items() for s in (0, 1)}
    for t in trials.values():
        sched.on_trial_add(None, t)

    def step(name, seed, epoch, acc):
        return sched.on_trial_result(None, trials[(name, seed)], {"training_iteration": epoch, "acc": acc})

    assert step("a", 0, 1, 0.9) == TrialScheduler.CONTINUE  # first at the rung: nothing to compare
    assert step("b", 0, 1, 0.95) == TrialScheduler.CONTINUE
    assert step("c", 0, 1, 0.1) == TrialScheduler.STOP  # below the rung's cutoff
    assert step("c", 1, 1, 0.99) == TrialScheduler.STOP  # its other seed stops at the same rung
    assert step("a", 1, 1, 0.0) == TrialScheduler.CONTINUE  # promoted with its first seed
    assert step("a", 1, 2, 0.0) == TrialScheduler.CONTINUE  # between rungs


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_optuna_storage_holds_the_searches_and_survives_a_restore(kind, tmp_path):
    """What optuna-dashboard reads: one Optuna study per search in the storage; the
    searcher saved and restored mid-search (as --resume does) keeps writing to it."""
    import optuna

    url = str(tmp_path / "study.log") if kind == "journal" else f"sqlite:///{tmp_path / 'study.db'}"
    s = _tau_searcher(6, seeds=2, optuna_storage=url)
    _, running = _drive(s, stop_after=7)
    s.save(str(tmp_path / "searcher.pkl"))
    restored = _tau_searcher(6, seeds=2, optuna_storage=None)
    restored.restore(str(tmp_path / "searcher.pkl"))
    for tid, cfg in running:
        restored.on_trial_complete(tid, {restored.metric: _objective(cfg["trial"]), "weaklab/last": True})
    handed, _ = _drive(restored)
    storage = optuna.storages.get_storage(url) if kind == "sqlite" else optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(url))
    [name] = optuna.get_all_study_names(storage)
    assert name == "t/heteroscedastic (arm 0)"
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)


@pytest.mark.parametrize("argv,expect", [
    (["run", "tau-sweep", "--search", "optuna", "--sampler", "grid"], "--sampler='grid'"),
    (["run", "tau-sweep", "--sampler", "random"], "only with --search optuna"),
    (["run", "cpu-prior", "--search", "optuna", "--num-samples", "3"], "--num-samples=3"),
    (["run", "llp-bag-size", "--smoke", "--search", "optuna", "--num-samples", "3"], "--num-samples=3"),
    (["run", "tau-sweep", "--search", "optuna", "--optuna-storage", "nosuchdb://x"], "--optuna-storage='nosuchdb://x'"),
    (["run", "tau-sweep", "--search", "optuna", "--optuna-storage", "/nonexistent-dir/s.log"], "--optuna-storage"),
])
def test_bad_search_input_is_one_line_before_ray(argv, expect, capsys, monkeypatch):
    import weaklab.tune.runner as runner
    from weaklab.cli import main

    started = []
    monkeypatch.setattr(runner, "_init_ray", lambda opts: started.append(opts))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("weaklab: error:") and expect in err, err
    assert "\n" not in err
    assert started == [], "Ray was started before the error"


RESUME_STUDY = "ft-optuna-resume"
RESUME_DRIVER = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {ROOT!r})
    from weaklab.study import Arm, Study, register_study

    register_study(Study(
        name={RESUME_STUDY!r}, title="optuna resume test", reproduces="(test)", setting="noise",
        fixed={{"setting.protocol": "heteroscedastic", "train.arch": "mlp", "train.width": 0.25,
               "train.batch_size": 32, "train.epochs": 4, "train.patience": 0}},
        arms=(Arm("homoscedastic", grid={{"train.lr": (1e-3, 3e-3, 1e-2)}}),), seeds=2, metric="best.val_acc"))

    from weaklab.cli import main
    sys.exit(main(["run", {RESUME_STUDY!r}, "--no-report", "--search", "optuna", "--num-samples", "5",
                   *sys.argv[1:]]))
""")


def _resume_driver(tmp_path, *args):
    script = tmp_path / "driver.py"
    script.write_text(RESUME_DRIVER)
    # Tune saves its state (and the searcher's) at every step, so a kill loses no asked trial
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    cmd = [sys.executable, str(script), "--results", str(tmp_path / "results"), "--checkpoint-every-s", "0", *args]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@pytest.mark.slow
def test_killed_optuna_driver_resumes_the_same_search(tmp_path):
    from weaklab.store import load_study, stored_trial_ids

    study_dir = str(tmp_path / "results" / RESUME_STUDY)
    trials_dir = os.path.join(study_dir, "trials")
    proc = _resume_driver(tmp_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        # stored trials, as the store counts them: a listing would also count the hidden
        # temporary file of a row being written (CI once killed at 2 stored + 1 in flight)
        if os.path.isdir(trials_dir) and len(stored_trial_ids(study_dir)) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the study ended before it could be interrupted:\n" + proc.communicate()[1][-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
    proc.communicate()
    before = load_study(study_dir)[0]
    assert 3 <= len(before) < 10

    proc = _resume_driver(tmp_path, "--resume")
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("--resume did not finish: " + proc.communicate()[1][-3000:])
    assert proc.returncode == 0, f"{out[-2000:]}\n{err[-3000:]}"
    trials = load_study(study_dir)[0]
    # exactly --num-samples configurations x seeds, each configuration on both seeds
    assert len(trials) == 10 and trials["trial_id"].is_unique and set(trials["status"]) == {"completed"}
    per_lr = trials.groupby("train.lr")["seed"].apply(sorted)
    assert len(per_lr) == 5 and (per_lr.map(lambda s: s == [0, 1])).all(), per_lr
    # what ran before the kill is part of the same search (its configurations were not redrawn)
    assert set(before["train.lr"]) <= set(per_lr.index)
    assert trials["train.lr"].between(1e-3, 1e-2).all()


STUDY_NAMES = package_studies()


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDY_NAMES)
def test_every_study_report_on_an_optuna_smoke_run(name, request, tmp_path):
    from analysis.report import write_report
    from weaklab.store import load_study
    from weaklab.study import discover
    from weaklab.tune.runner import run_study

    discover()
    plan = prepare(name, smoke=True, build_data=False)
    study, configs = plan.study, plan.configs
    searcher = make_searcher(study, configs, RunOptions(search="optuna"), experiment="x", resume=False)
    if not searcher.studies:
        # nothing searched in this smoke study: the Optuna run is the grid run (each config
        # once per seed), whose report the study's own test covers; no Ray run needed
        handed, _ = _drive(searcher)
        assert sorted(repr(sorted(c["trial"].items())) for c in handed) == sorted(repr(sorted(c.items())) for c in configs)
        return
    request.getfixturevalue("ray_local")
    # tau-sweep (the smoke study whose space is continuous) also runs under ReplicateASHA
    asha = name == "tau-sweep"
    study_dir = run_study(name, smoke=True, results=str(tmp_path), verbose=False, search="optuna",
                          scheduler="asha" if asha else "none")
    trials = load_study(study_dir)[0]
    assert len(trials) and set(trials["status"]) <= ({"completed", "stopped"} if asha else {"completed"})
    if asha:
        het = trials[trials["method"] == "heteroscedastic"]
        # 3 sampled taus (the smoke grid's 3 points) from its range [0.1, 10], not only its points
        assert het["hp.tau"].nunique() == 3 and het["hp.tau"].between(0.1, 10.0).all()
        # a configuration's seeds were stopped or promoted together: same status, same epochs
        per_tau = het.groupby("hp.tau")[["status", "epochs"]].nunique()
        assert (per_tau == 1).all().all(), het[["hp.tau", "seed", "status", "epochs"]]
    hp = [c for c in trials.columns if c.startswith(("hp.", "setting.", "train.")) or c in ("label", "phase")]
    key = trials[hp].apply(lambda r: "|".join(map(str, r)), axis=1)
    assert not pd.concat([key, trials["seed"].astype(str)], axis=1).duplicated().any(), "a configuration ran twice"
    seeds = trials["seed"].nunique()
    final = trials if "phase" not in trials or trials["phase"].isna().all() else trials[trials["phase"] != "select"]
    assert (final.groupby(key[final.index])["seed"].nunique() == seeds).all(), "a configuration lacks a seed"
    text = open(write_report(study_dir)).read()
    assert "Traceback" not in text and len(text.splitlines()) > 5 and "not computed" not in text, text
    if asha:
        # a configuration that lost a seed is no tau* candidate and is named in one line
        from analysis.tau import report as tau_report

        done = trials[trials["status"] == "completed"]
        lost = done[done["method"] == "heteroscedastic"].index[:1]
        if len(lost):
            text = tau_report(trials.drop(index=lost), load_study(study_dir)[1], tmp_path)
            tau = trials.loc[lost[0], "hp.tau"]
            assert any("dropped" in ln and f"tau={tau}" in ln for ln in text.splitlines()), text
