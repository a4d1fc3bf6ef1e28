import os

import pandas as pd
import pytest

from studies import STUDIES, expand
from weaklab import store


def _configs():
    return expand(STUDIES.get("tau-sweep"))


def test_round_trip_and_typed_columns(tmp_path):
    cfgs = _configs()
    het, hom = cfgs[0], cfgs[-1]
    hist = [{"epoch": 1, "val_acc": 0.5, "test_noisy_ll": -1.2, "best_epoch": 1},
            {"epoch": 2, "val_acc": 0.4, "test_noisy_ll": -1.1, "best_epoch": 1}]
    store.write_trial(str(tmp_path), store.trial_row(study="tau-sweep", trial_id="t1", config=het,
                                                     status="completed", history=hist), hist)
    store.write_trial(str(tmp_path), store.trial_row(study="tau-sweep", trial_id="t2", config=hom,
                                                     status="failed", history=[], error="ValueError: x"), [])
    trials, epochs = store.load_study(str(tmp_path))
    assert len(trials) == 2 and len(epochs) == 2
    t1 = trials.set_index("trial_id").loc["t1"]
    assert t1["best.test_noisy_ll"] == -1.2 and t1["final.test_noisy_ll"] == -1.1
    assert t1["epochs"] == 2 and t1["best_epoch"] == 1
    assert t1["hp.tau"] == het["hp.tau"] and t1["train.width"] == het["train.width"]
    assert pd.api.types.is_float_dtype(trials["hp.tau"]) and pd.api.types.is_integer_dtype(trials["seed"])
    assert pd.api.types.is_bool_dtype(trials["train.amp"])
    # defaults resolved: every hyperparameter is explicit even if the study never set it
    assert t1["hp.eval_samples"] == 1000 and t1["train.optimizer"] == "adam"
    t2 = trials.set_index("trial_id").loc["t2"]
    assert t2["status"] == "failed" and t2["error"] == "ValueError: x" and pd.isna(t2["hp.tau"])
    for col in ("study", "trial_id", "status", "error", "method", "dataset", "seed", "wall_s" if False else "git_commit",
                "weaklab_version", "torch_version", "ray_version"):
        assert col in trials.columns


def test_rewriting_a_trial_replaces_it_and_leaves_no_temp_files(tmp_path):
    cfg = _configs()[0]
    for v in (0.1, 0.2):
        hist = [{"epoch": 1, "val_acc": v, "best_epoch": 1}]
        store.write_trial(str(tmp_path), store.trial_row(study="s", trial_id="same", config=cfg,
                                                         status="completed", history=hist), hist)
    trials, epochs = store.load_study(str(tmp_path))
    assert len(trials) == 1 and trials["best.val_acc"].iloc[0] == 0.2 and len(epochs) == 1
    leftovers = [f for d in ("trials", "epochs") for f in os.listdir(tmp_path / d) if not f.endswith(".parquet")]
    assert leftovers == []


def test_bad_status_and_missing_folder(tmp_path):
    with pytest.raises(ValueError):
        store.trial_row(study="s", trial_id="x", config=_configs()[0], status="weird", history=[])
    with pytest.raises(FileNotFoundError, match="not a weaklab study"):
        store.load_study(str(tmp_path))


def test_metrics_that_start_in_a_later_epoch_are_kept(tmp_path):
    hist = [{"epoch": 1, "val_acc": 0.1, "best_epoch": 1},
            {"epoch": 2, "val_acc": 0.2, "gmm_s": 0.5, "best_epoch": 2}]
    store.write_trial(str(tmp_path), store.trial_row(study="s", trial_id="t", config=_configs()[0],
                                                     status="completed", history=hist), hist)
    _, epochs = store.load_study(str(tmp_path))
    assert epochs["gmm_s"].isna().tolist() == [True, False]
