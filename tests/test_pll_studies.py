"""Paper 001 studies: smoke runs through Ray Tune into Parquet and the reports, the paper
preset on small fake CIFAR-10 files for one epoch, and bad input stopped before Ray."""

import os

import numpy as np
import pytest

from analysis.report import write_report
from studies import expand, get_study, resolve
from tests.fakes import write_cifar10
from weaklab.registry import ConfigError
from weaklab.store import load_study
from weaklab.tune.runner import prepare


def test_pll_lambda_m_smoke_end_to_end(smoke_study):
    study_dir = smoke_study("pll-lambda-m")
    trials, epochs = load_study(study_dir)
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}, trials.get("error")
    assert set(trials["method"]) == {"pll-reg", "proden"}
    reg = trials[trials["method"] == "pll-reg"]
    assert sorted(reg["hp.M"]) == [1.0, 2.0] and (reg["hp.lam"] == 3.0).all()
    for c in ("final.test_acc", "final.test_acc_many", "final.test_acc_medium", "final.test_acc_few"):
        assert trials[c].between(0, 1).all()
    assert (trials["epochs"] == 2).all() and len(epochs) == 6
    assert (epochs["label_update_s"] > 0).all()
    # the pre-estimation stage (1 epoch in smoke) ends with a re-initialisation: stage flips 0 -> 1
    reg_ep = epochs[epochs["trial_id"].isin(reg["trial_id"])].sort_values(["trial_id", "epoch"])
    assert reg_ep.groupby("trial_id")["stage"].apply(list).map(lambda s: s == [0.0, 1.0]).all()

    text = open(write_report(study_dir)).read()
    assert "Table 3" in text and "PRODEN" in text and "Few" in text
    out = os.path.join(study_dir, "report")
    for png in ("table3_lambda_m_heatmap.png", "table3_groups_vs_M.png"):
        assert os.path.getsize(os.path.join(out, png)) > 5000


def test_pll_compare_smoke_end_to_end(smoke_study):
    study_dir = smoke_study("pll-compare")
    trials, epochs = load_study(study_dir)
    assert len(trials) == 4 and set(trials["status"]) == {"completed"}, trials.get("error")
    assert set(trials["method"]) == {"pll-reg", "proden", "cc", "solar"}
    assert (trials["setting.psi"] == 0.3).all() and (trials["setting.gamma"] == 10.0).all()
    assert trials["final.test_acc_few"].notna().all()
    assert (epochs["label_update_s"] > 0).all() and epochs["epoch_s"].notna().all()
    text = open(write_report(study_dir)).read()
    assert "Table 1" in text and "Table 5" in text and "solar" in text and "ψ=0.3, γ=10" in text
    assert os.path.getsize(os.path.join(study_dir, "report", "table5_label_update_cost.png")) > 5000


@pytest.mark.parametrize("study", ["pll-compare", "pll-lambda-m"])
def test_paper_preset_recipe_and_one_epoch_on_fake_cifar10(tmp_path, study):
    from weaklab.engine import run_trial

    root = write_cifar10(str(tmp_path), n_per_batch=40, n_test=20)
    s = resolve(get_study(study), dataset="cifar10")
    full = expand(s, data_root=root)
    c = next(c for c in full if c["method"] == "pll-reg")
    assert (c["train.arch"], c["train.optimizer"], c["train.lr"], c["train.momentum"], c["train.schedule"],
            c["train.batch_size"], c["train.epochs"]) == ("resnet18", "sgd", 0.01, 0.9, "cosine", 256, 1100)
    assert (c["hp.pre_epochs"], c["hp.mu_pre"], c["hp.mu"], c["hp.rho_end"], c["hp.reinit"]) == (100, 0.9, 0.99, 0.5, True)
    if study == "pll-compare":
        assert (c["hp.lam"], c["hp.M"]) == (3.0, 2.0)
        assert {(x["setting.psi"], x["setting.gamma"]) for x in full} == {
            (p, g) for p in (0.3, 0.5) for g in (50.0, 100.0, 200.0)}
    else:
        assert (c["setting.psi"], c["setting.gamma"]) == (0.5, 100.0)
        assert {(x["hp.lam"], x["hp.M"]) for x in full if x["method"] == "pll-reg"} >= {(3.0, 2.0), (4.0, 3.0)}
    # a pre-estimation stage as long as training is refused before Ray
    from weaklab.config import parse_trial
    from weaklab.study import check_trials

    with pytest.raises(ConfigError, match="hp.pre_epochs"):  # prepare's check, on the parsed trials
        check_trials([parse_trial(c) for c in expand(s, data_root=root, seeds=[0], sets={"train.epochs": 1})])
    # one epoch at tiny width, as --set would lower it (no pre-estimation stage then)
    small = expand(s, data_root=root, seeds=[0], sets={"train.epochs": 1, "train.width": 0.0625, "hp.pre_epochs": 0})
    methods = ("pll-reg", "solar") if study == "pll-compare" else ("pll-reg",)
    for m in methods:
        cfg = next(c for c in small if c["method"] == m)
        res = run_trial({**cfg, "train.device": "cpu"})
        assert len(res.history) == 1 and 0 <= res.final["test_acc"] <= 1
        assert res.final["label_update_s"] > 0 and res.final["stage"] == 1.0


def test_cifar100_presets_validate():
    from weaklab.config import parse_trial

    for study in ("pll-compare", "pll-lambda-m"):
        cfgs = expand(resolve(get_study(study), dataset="cifar100"))
        parsed = [parse_trial(c) for c in cfgs]
        reg = [p for p in parsed if p.method == "pll-reg"]
        assert all(p.hparams.rho_end == 0.6 and p.hparams.pre_epochs == 20 and p.hparams.mu_pre == 0.95
                   for p in reg)
    psis = {c["setting.psi"] for c in expand(resolve(get_study("pll-compare"), dataset="cifar100"))}
    assert psis == {0.05, 0.1}


@pytest.mark.parametrize("sets,match", [
    ({"setting.gamma": "0.5"}, "setting.gamma"), ({"setting.psi": "1.5"}, "setting.psi"),
    ({"hp.lam": "0"}, "hp.lam"), ({"hp.M": "-1"}, "hp.M"), ({"hp.mu": "2"}, "hp.mu"),
    ({"hp.rho_end": "1.5"}, "hp.rho_end"), ({"setting.hierarchical": "true"}, "hierarchical"),
])
def test_bad_input_fails_before_ray(sets, match):
    import ray

    was = ray.is_initialized()
    with pytest.raises(ConfigError, match=match):
        prepare("pll-lambda-m", smoke=True, sets=sets)
    assert ray.is_initialized() == was  # nothing was started


def test_fake_cifar10_long_tail_is_realised(tmp_path):
    from weaklab.engine import _dataset
    from weaklab.settings import make_weak_data, setting_params

    root = write_cifar10(str(tmp_path), n_per_batch=60)
    ds = _dataset("cifar10", root, 0)
    w = make_weak_data(ds, "partial", setting_params("partial", {"gamma": 4.0, "psi": 0.3}), 0, cache=False)
    counts = np.bincount(w.hidden["y"].numpy(), minlength=10)
    assert counts.max() == np.bincount(ds.y_train.numpy(), minlength=10).min()
    assert counts.max() / counts.min() == pytest.approx(4, rel=0.35)


def test_pll_ablation_smoke_end_to_end(smoke_study):
    from analysis.claims import evaluate_claims
    from studies.pll_ablation import CLAIMS

    study_dir = smoke_study("pll-ablation")
    trials, epochs = load_study(study_dir)
    assert len(trials) == 8 and set(trials["status"]) == {"completed"}, trials.get("error")
    by_label = trials.set_index("label")
    assert not by_label.loc["pll-reg w/o S", "hp.selection"] and by_label.loc["pll-reg", "hp.selection"]
    assert not by_label.loc["solar w/o MU+CR", "hp.mixup"] and not by_label.loc["solar w/o MU+CR", "hp.consistency"]
    # without selection every sample counts as selected; with it, fewer
    sel = epochs.merge(trials[["trial_id", "label"]], on="trial_id").groupby("label")["selected_frac"].last()
    assert sel["pll-reg w/o S"] == 1.0 and sel["solar w/o S"] == 1.0 and sel["solar"] < 1.0
    text = open(write_report(study_dir)).read()
    assert "Table 2" in text and "78.38 / 54.49" in text and "Selected fraction" in text
    claims = evaluate_claims(trials, CLAIMS)
    assert set(claims["claim"]) == {c.name for c in CLAIMS} and len(claims) == 11
