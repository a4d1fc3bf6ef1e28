"""The balancemix-delta-alpha study: bad input before Ray, the VOC paper preset for one step,
and a smoke run through Ray into Parquet and the report."""

from __future__ import annotations

import math

import pytest
import torch

from studies import expand, get_study, resolve
from weaklab.registry import ConfigError

try:
    from tests.test_multilabel import write_fake_voc
except ImportError:  # tests/ run as a plain folder
    from test_multilabel import write_fake_voc

NAME = "balancemix-delta-alpha"


def test_study_grid_matches_paper_tables():
    study = get_study(NAME)
    cfgs = expand(study, seeds=[0])
    bm = [c for c in cfgs if c["label"] == "balancemix"]
    # where App. E searches: Table 7's δ sweep at α = 4 and Table 8's α sweep at δ = 0.975
    # under mislabeling; random flipping at the paper's (δ, α) only; no duplicate point
    points = [(c["setting.noise"], c["hp.delta"], c["hp.mixup_alpha"]) for c in bm]
    assert len(points) == len(set(points)) == 7 + 1
    assert {(d, a) for n, d, a in points if n == "mislabel"} == {
        (0.9, 4), (0.95, 4), (0.975, 4), (1.0, 4), (0.975, 1), (0.975, 2), (0.975, 8)}
    assert {(d, a) for n, d, a in points if n == "flip"} == {(0.975, 4)}
    sp = [c for c in cfgs if c["label"] == "balancemix-single-positive"]
    # Table 7's missing-label column: δ at α = 4 (Table 8 searched α under mislabeling only)
    assert {(c["hp.delta"], c["hp.mixup_alpha"]) for c in sp} == {(0.55, 4), (0.6, 4), (0.7, 4), (0.9, 4)}
    assert {c["setting.noise"] for c in sp} == {"missing"}
    # make_arms still sweeps both under every noise type when asked
    from studies.balancemix_delta_alpha import DIGITS_TRAIN, NOISES, make_arms

    wide = [a for a in make_arms(warmup=15, train=DIGITS_TRAIN, delta_sweep=NOISES, alpha_sweep=NOISES)
            if a.label == "balancemix-single-positive"]
    assert sum(len(a.grid["hp.delta"]) * len(a.grid["hp.mixup_alpha"]) for a in wide) == 7
    for base in ("bce", "bce-mixup", "asl", "coteaching", "t-estimator", "ll-r", "ll-ct"):
        assert {c["setting.noise"] for c in cfgs if c["method"] == base} == {"mislabel", "flip", "missing"}
    assert all(c["train.monitor"] == "val_map" and c["train.epochs"] == 60 for c in cfgs)
    from weaklab.config import parse_trial

    assert all(parse_trial(c).hparams.randaug for c in cfgs)  # paper 004: RandAugment for every method
    cot = next(c for c in cfgs if c["method"] == "coteaching")
    assert (cot["hp.peer_optimizer"], cot["hp.peer_lr"]) == (cfgs[0]["train.optimizer"], cfgs[0]["train.lr"])
    assert next(c for c in cfgs if c["method"] == "ll-r")["hp.delta_rel"] == pytest.approx(0.1 * 20 / 60, abs=1e-6)
    assert study.select_then_seeds and study.seeds >= 3


def test_select_phase_chooses_one_point_per_noise_among_both_sweeps():
    """The runner's choice (``_chosen_trials``) keeps exactly one (δ, α) per noise type and
    label, all seeds, whichever sweep it comes from."""
    import pandas as pd

    from weaklab.config import parse_trial
    from weaklab.tune.runner import _chosen_trials

    study = get_study(NAME)
    cfgs = expand(study)
    select = pd.DataFrame([{**c, "phase": "select", "status": "completed", "final.val_map": 0.5}
                           for c in cfgs if c["seed"] == 0])
    best = {"mislabel": (0.95, 4.0), "missing": (0.6, 4.0)}
    for noise, (d, a) in best.items():
        hit = (select["setting.noise"] == noise) & (select["hp.delta"] == d) & (select["hp.mixup_alpha"] == a) \
            & select["label"].str.startswith("balancemix")
        select.loc[hit, "final.val_map"] = 0.9
    final = [t.config for t in _chosen_trials(study, [parse_trial(c) for c in cfgs], select)]
    chosen = {(c["setting.noise"], c["hp.delta"], c["hp.mixup_alpha"], c["seed"]) for c in final
              if c["label"].startswith("balancemix")}
    best["flip"] = (0.975, 4.0)  # one point: nothing to choose, all seeds in the final phase
    from weaklab.tune.runner import planned_final, split_select

    trials = [parse_trial(c) for c in cfgs]
    sel, _ = split_select(study, trials)
    # 7 mislabel + 4 missing points at the select seeds; flip's one point is not among them
    assert len(sel) == (7 + 4) * study.select_seeds and not any(t.config["setting.noise"] == "flip" for t in sel)
    assert planned_final(study, trials) == len(final) == (3 + 9 + 21) * study.seeds
    assert chosen == {(n, d, a, s) for n, (d, a) in best.items() for s in range(study.seeds)}
    assert sum(c["method"] == "ll-ct" for c in final) == 3 * study.seeds


@pytest.mark.parametrize("sets, fragment", [
    ({"hp.delta": "0.5"}, "hp.delta=0.5"), ({"hp.delta": "1.2"}, "hp.delta=1.2"), ({"hp.mixup_alpha": "0"}, "hp.mixup_alpha=0"),
    ({"setting.rho": "1.5"}, "setting.rho=1.5"), ({"setting.noise": "swap"}, "setting.noise='swap'"),
])
def test_bad_input_is_one_line_error_before_ray(sets, fragment):
    from weaklab.tune.runner import run_study

    with pytest.raises(ConfigError) as e:
        run_study(NAME, smoke=True, sets=sets, results="/nonexistent-results")
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_single_label_dataset_is_rejected_before_ray():
    from weaklab.tune.runner import prepare

    with pytest.raises(ConfigError, match="dataset='digits'") as e:
        prepare(NAME, smoke=True, dataset="digits")
    assert "\n" not in str(e.value)


def test_voc_paper_preset_one_step(tmp_path):
    from weaklab.engine import build_trial, make_optimizer
    from weaklab.models import build_model

    write_fake_voc(tmp_path, "2007", {"trainval": [["dog", "person"], ["cat"], ["car", "bus"], ["person"], ["cow"]],
                                      "test": [["tvmonitor"], ["dog", "cat"]]})
    study = resolve(get_study(NAME), dataset="voc2007")
    f = study.fixed
    assert (f["train.arch"], f["train.optimizer"], f["train.lr"], f["train.schedule"], f["train.epochs"],
            f["train.batch_size"]) == ("resnet50", "sgd", 0.01, "cosine", 20, 32)
    cfg = next(c for c in expand(study, data_root=str(tmp_path), seeds=[0])
               if c["label"] == "balancemix" and c["setting.noise"] == "mislabel" and c["hp.delta"] == 0.975
               and c["hp.mixup_alpha"] == 4)
    trial, weak, method = build_trial(cfg)
    assert weak.x.shape[1:] == (3, 448, 448) and weak.weak["Y"].shape == (4, 20)
    model = build_model(trial.train.arch, in_shape=tuple(weak.x.shape[1:]), num_classes=20, head=method.head)
    opt = make_optimizer(model.parameters(), trial.train)
    method.init_state(weak)
    before = model.head.weight.detach().clone()
    loss = method.loss(model, weak, torch.arange(2), 0)
    loss.backward()
    opt.step()
    assert math.isfinite(loss.item()) and not torch.equal(before, model.head.weight)
    scores = method.predict(model.eval(), weak.evals["test"][0][:1])
    assert scores.shape == (1, 20) and ((scores >= 0) & (scores <= 1)).all()  # sigmoid scores


def test_smoke_study_through_ray_to_report(tmp_path, smoke_study):
    from analysis.balancemix import report
    from weaklab.store import load_study

    d = smoke_study(NAME)
    trials, epochs = load_study(d)
    assert len(trials) == 8, trials[["label", "status", "error"]]
    assert (trials["status"] == "completed").all(), trials["error"].tolist()
    assert set(trials["label"]) == {"balancemix", "balancemix-single-positive", "bce", "asl", "coteaching",
                                    "t-estimator", "ll-r", "ll-ct"}
    assert trials["final.test_map"].between(0.01, 1).all()
    assert (epochs.groupby("trial_id").size() == 2).all()
    bm = trials[trials["method"] == "balancemix"]
    assert bm["final.gmm_s"].notna().all() and bm["final.diag_clean_precision"].between(0, 1).all()
    md = report(trials, epochs, tmp_path)
    assert "δ x α" in md and "Table 5" in md and "clean precision" in md and "Co-teaching" in md
    assert "Memorisation" in md
    assert (tmp_path / "delta_alpha_heatmap.png").stat().st_size > 0
    assert (tmp_path / "map_by_class_group.png").stat().st_size > 0


def test_random_flip_is_the_papers_one_rate_for_positives_and_negatives():
    """Paper 004: p(ỹ_c=1|y_c=0) = p(ỹ_c=0|y_c=1) = ρ. On digits-multi-cells (VOC's PN_Imb)
    the realised rates of both polarities are ρ, and the share of the given positives that
    are true is the floor formula's, ~0.10 at ρ = 0.4 (VOC's 0.103)."""
    import numpy as np

    from analysis.balancemix import positive_floor
    from weaklab.data import load_dataset
    from weaklab.settings.multilabel_noise import (MultilabelNoiseParams, flip_floor, imbalance_ratios,
                                                   multilabel_noise, random_flip)

    Y = (np.random.default_rng(0).random((4000, 40)) < 0.07).astype(np.float32)
    for rho in (0.2, 0.4):
        noisy = random_flip(Y, rho, np.random.default_rng(1)) > 0.5
        clean = Y > 0.5
        assert abs((~noisy[clean]).mean() - rho) < 0.01 and abs(noisy[~clean].mean() - rho) < 0.005
    weak = multilabel_noise(load_dataset("digits-multi-cells"), MultilabelNoiseParams(noise="flip", rho=0.4),
                            np.random.default_rng(0))
    i = weak.info
    assert abs(i["pos_error_rate"] - 0.4) < 0.01 and abs(i["neg_error_rate"] - 0.4) < 0.01
    clean, given = weak.hidden["Y"].numpy() > 0.5, weak.weak["Y"].numpy() > 0.5
    share = clean[given].mean()
    assert share == pytest.approx(positive_floor(pos_error=i["pos_error_rate"], neg_error=i["neg_error_rate"],
                                                 pn_imb=i["clean_pn_imb"]), abs=1e-9)
    assert share == pytest.approx(flip_floor(0.4, imbalance_ratios(clean.astype(np.float32))["pn_imb"]), abs=0.01)
    assert 0.08 < share < 0.12 and flip_floor(0.4, 13) == pytest.approx(0.1034, abs=1e-4)


def test_flip_study_of_issue_28_is_the_study_restricted_to_flips():
    """studies._absent_effects: the study's flip arms (δ, α sweeps, 7 baselines), seeds and
    select phase, on another dataset and rate, without ablation rows; its claims are the
    7 BalanceMix-vs-baseline claims."""
    from studies._absent_effects import FLIP_CLAIMS, flip_study
    from weaklab.config import parse_trial
    from weaklab.tune.runner import Plan

    study = flip_study(dataset="digits-multi-cells", rho=0.2)
    cfgs = expand(study)
    assert {c["setting.noise"] for c in cfgs} == {"flip"} and {c["setting.rho"] for c in cfgs} == {0.2}
    assert {c["dataset"] for c in cfgs} == {"digits-multi-cells"}
    assert {c["label"] for c in cfgs} == {"balancemix", "bce", "bce-mixup", "asl", "coteaching", "t-estimator",
                                          "ll-r", "ll-ct"}
    assert study.seeds == 5 and study.select_then_seeds and study.select_seeds == 3
    assert {c.worse for c in FLIP_CLAIMS} == {"bce", "bce-mixup", "asl", "coteaching", "t-estimator", "ll-r", "ll-ct"}
    plan = Plan(study=study, trials=[parse_trial(c) for c in cfgs], data=[], sets={}, data_root=None, smoke=False)
    # select 7 points x 3 seeds, then 5 seeds a label, less the chosen point's 3 select seeds
    assert plan.planned_trials() == 7 * 3 + 5 + 7 * 5 - 3


def test_noise_floor_table_compares_gmm_precision_with_the_floor():
    import pandas as pd

    from analysis.balancemix import noise_floor_table

    rows = []
    for seed in range(2):
        for label, method in (("balancemix", "balancemix"), ("bce", "bce")):
            rows.append({"trial_id": f"{label}-{seed}", "label": label, "method": method, "seed": seed,
                         "status": "completed", "phase": "final", "setting.noise": "flip", "setting.rho": 0.4,
                         "hp.delta": 0.975 if method == "balancemix" else None,
                         "hp.mixup_alpha": 4.0 if method == "balancemix" else None,
                         "final.val_map": 0.5, "info.pos_error_rate": 0.4, "info.neg_error_rate": 0.4,
                         "info.clean_pn_imb": 13.0, "info.label_error_rate": 0.4,
                         "final.diag_clean_precision": 0.61, "final.diag_clean_precision_pos": 0.12})
    text = noise_floor_table(pd.DataFrame(rows))
    assert "0.103" in text and "0.6" in text and "0.61" in text and "0.12" in text and "MS-COCO (PN 27)" in text
