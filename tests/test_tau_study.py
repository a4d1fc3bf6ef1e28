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
