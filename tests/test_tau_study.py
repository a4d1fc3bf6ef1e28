"""The tau-sweep smoke study through Ray Tune end to end: Parquet, then the report."""

import os



from analysis.report import write_report
from weaklab.store import load_study
from weaklab.tune.runner import run_study


def test_tau_sweep_smoke_end_to_end(smoke_study):
    """The shared smoke run throttles checkpoints away (``--checkpoint-every-s`` 1e6, only
    the last epoch saves, tests/conftest.py): metrics still go out every epoch, so Parquet
    holds the whole history."""
    study_dir = smoke_study("tau-sweep")
    assert study_dir.endswith("tau-sweep-smoke")
    trials, epochs = load_study(study_dir)
    assert len(trials) == 8 and set(trials["status"]) == {"completed"}
    assert trials["trial_id"].is_unique
    assert set(trials["method"]) == {"heteroscedastic", "homoscedastic"}
    assert sorted(trials["hp.tau"].dropna().unique().tolist()) == [0.1, 1.0, 10.0]
    assert (trials["epochs"] == 3).all() and len(epochs) == 8 * 3
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert trials["best.test_noisy_ll"].notna().all() and (trials["best.test_noisy_ll"] < 0).all()
    assert (trials["wall_s"] > 0).all() and (trials["device"] == "cpu").all()
    # the realised noise of each trial's weak labels is stored beside its results
    assert trials["info.flip_rate"].between(0.05, 0.3).all()
    # epochs rows match the per-trial history and are keyed by trial
    assert set(epochs["trial_id"]) == set(trials["trial_id"])
    assert epochs.groupby("trial_id")["epoch"].apply(list).map(lambda e: e == [1, 2, 3]).all()

    report = write_report(study_dir)
    text = open(report).read()
    assert "Table 1" in text and "τ*" in text
    for png in ("fig1_noisy_test_ll.png", "fig6_noisy_test_acc.png"):
        assert os.path.getsize(os.path.join(os.path.dirname(report), png)) > 5000

    # a second run into the same folder must not mix studies silently
    import pytest
    from weaklab.registry import ConfigError

    with pytest.raises(ConfigError, match="--resume"):
        run_study("tau-sweep", smoke=True, results=os.path.dirname(study_dir), verbose=False)


def test_report_flags_a_best_epoch_at_the_cap_and_ties_tau_to_the_budget(tmp_path):
    import pandas as pd

    from analysis.tau import report

    trials, epochs = [], []
    for tau, best, run in ((0.1, 30, 50), (1.0, 40, 60), (5.0, 80, 80)):  # tau = 5 peaks at its last (cap) epoch
        for seed in range(3):
            tid = f"{tau}-{seed}"
            trials.append({"trial_id": tid, "method": "heteroscedastic", "label": "heteroscedastic", "seed": seed,
                           "status": "completed", "hp.tau": tau, "hp.train_samples": 100, "train.epochs": 80,
                           "train.patience": 20, "train.lr": 1e-3, "train.batch_size": 128, "best_epoch": best,
                           "epochs": run, "best.val_ll": -1.0 - 0.1 * abs(tau - 1.0) + 0.01 * seed,
                           "best.test_noisy_ll": -1.1 - 0.1 * abs(tau - 1.0), "best.test_noisy_acc": 0.8,
                           "best.test_acc": 0.9})
            epochs += [{"trial_id": tid, "epoch": e, "samples_per_s": 1079.0, "train_s": 1.0} for e in range(1, run + 1)]
    for seed in range(3):
        trials.append({"trial_id": f"hom-{seed}", "method": "homoscedastic", "label": "homoscedastic", "seed": seed,
                       "status": "completed", "train.epochs": 80, "best_epoch": 20, "epochs": 40, "best.val_ll": -1.2,
                       "best.test_noisy_ll": -1.2, "best.test_noisy_acc": 0.8, "best.test_acc": 0.9})
    text = report(pd.DataFrame(trials), pd.DataFrame(epochs), tmp_path)
    assert "**Best epoch is the last epoch**" in text and "τ=5 S=100 seed 0 (80/80)" in text
    assert "τ=0.1" not in text.split("**Best epoch is the last epoch**")[1]
    assert "tied to the step budget and the learning rate" in text and "9 steps an epoch" in text


def test_recipe_is_4_taus_x_5_seeds_and_the_claims_of_table_1():
    """Issue 26/28: the grid shrank (4 of the paper's temperatures), the seeds did not; the
    claims test tau* against homoscedastic (noisy LL and clean accuracy), tau* against
    tau = 1, and tau = 1 against homoscedastic."""
    from weaklab.study import get_study
    from weaklab.tune.runner import prepare

    study = get_study("tau-sweep")
    assert prepare("tau-sweep", build_data=False).planned_trials() == 25 and study.seeds == 5
    het = next(a for a in study.arms if a.method == "heteroscedastic")
    assert het.grid["hp.tau"] == (0.025, 0.2, 1.0, 5.0)
    claims = {c.name: c for c in study.claims}
    assert set(claims) == {"tau*>homoscedastic", "tau*>tau=1", "tau=1>homoscedastic"}
    assert claims["tau*>homoscedastic"].metrics() == ("best.test_noisy_ll", "best.test_acc")
    assert claims["tau=1>homoscedastic"].better_where == {"hp.tau": 1.0}
    assert all(c.select == "best.val_ll" for c in study.claims)


def test_noise_floor_is_the_bayes_ll_of_the_protocol():
    """Sec. 5.1's protocol: classes 5..9 redrawn w.p. 0.2..0.6 over all 10 classes; a model
    that knows the clean class scores sum_c [q log q + 9 (r/10) log(r/10)] / 10 with
    q = 1 - r + r/10: -0.704 nats, accuracy 0.82; no noise: 0 and 1."""
    import pytest

    from analysis.tau import noise_floor

    ll, acc = noise_floor("heteroscedastic")
    assert ll == pytest.approx(-0.70412, abs=1e-4) and acc == pytest.approx(0.82)
    assert noise_floor("none") == (0.0, 1.0)
    assert noise_floor("increased")[0] == pytest.approx(-1.0741, abs=1e-4)


def test_report_has_noise_floor_and_sigma_tables(tmp_path):
    import pandas as pd

    from analysis.tau import report

    trials = []
    for tau in (0.2, 1.0):
        for seed in range(3):
            row = {"trial_id": f"{tau}-{seed}", "method": "heteroscedastic", "label": "heteroscedastic",
                   "seed": seed, "status": "completed", "hp.tau": tau, "hp.train_samples": 100,
                   "setting.protocol": "heteroscedastic", "best_epoch": 10, "epochs": 30, "train.epochs": 150,
                   "best.val_ll": -0.8 - 0.1 * tau, "best.test_noisy_ll": -0.8 - 0.1 * tau,
                   "best.test_noisy_acc": 0.78, "best.test_acc": 0.95, "best.diag_sigma_spearman": 0.6}
            row.update({f"best.diag_sigma_c{k}": 0.5 + 0.01 * k for k in range(10)})
            trials.append(row)
    for seed in range(3):
        trials.append({"trial_id": f"hom-{seed}", "method": "homoscedastic", "label": "homoscedastic", "seed": seed,
                       "status": "completed", "setting.protocol": "heteroscedastic", "best_epoch": 10, "epochs": 30,
                       "train.epochs": 150, "best.val_ll": -0.85, "best.test_noisy_ll": -0.85,
                       "best.test_noisy_acc": 0.78, "best.test_acc": 0.95})
    text = report(pd.DataFrame(trials), pd.DataFrame(), tmp_path)
    floor = text.split("## Noise floor")[1]
    assert "Bayes floor" in floor and "-0.7041" in floor and "-0.1459" in floor  # homoscedastic - floor
    assert "σ, τ = 0.2" in floor and "redraw rate r_c" in floor and "0.6" in floor
