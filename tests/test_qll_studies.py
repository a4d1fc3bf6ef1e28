"""The paper-000 studies end to end: smoke runs through Ray -> Parquet -> report, the paper
presets on small fake CIFAR files, and bad input stopped before Ray."""

from __future__ import annotations

import os

import numpy as np
import pytest

from analysis.report import write_report
from studies import expand, get_study, resolve
from tests.fakes import write_cifar10, write_cifar100
from weaklab.config import parse_trial
from weaklab.engine import run_trial
from weaklab.registry import ConfigError
from weaklab.store import load_study
from weaklab.tune.runner import prepare


def test_cpu_prior_smoke_end_to_end(smoke_study):
    study_dir = smoke_study("cpu-prior")
    trials, epochs = load_study(study_dir)
    assert len(trials) == 3 and set(trials["status"]) == {"completed"}, trials[["status", "error"]]
    assert set(trials["method"]) == {"cpu"} and (trials["epochs"] == 1).all()
    by_label = trials.groupby("label")
    assert sorted(by_label.get_group("pi1")["hp.pi1"]) == [0.1, 0.5]
    # the default pi2 resolves to m/c = 2/10 for Mixup; the pi2 arm runs PatchMix (m = 4) at 0.4
    assert np.allclose(by_label.get_group("pi1")["final.pi2"], 0.2)
    pat = by_label.get_group("pi2-patchmix")
    assert (pat["setting.mix"] == "patchmix").all() and (pat["setting.m"] == 4).all() and np.allclose(pat["final.pi2"], 0.4)
    assert trials["best.test_acc"].between(0, 1).all() and trials["final.alpha_mean"].between(0, 0.5).all()

    text = open(write_report(study_dir)).read()
    assert "Fig. 3" in text and "Table VI" in text and "π2=0.4" in text
    assert os.path.getsize(os.path.join(study_dir, "report", "fig3_acc_vs_pi1.png")) > 5000


def test_qll_compare_smoke_selects_then_reruns_seeds(smoke_study):
    study_dir = smoke_study("qll-compare")
    trials, _ = load_study(study_dir)
    assert set(trials["status"]) == {"completed"}, trials[["status", "error"]]
    sel, fin = trials[trials["phase"] == "select"], trials[trials["phase"] == "final"]
    # only js has a value to choose (two pi1, seed 0 in the smoke run); ce goes straight to the final phase
    assert len(sel) == 2 and (sel["seed"] == 0).all() and set(sel["method"]) == {"js"}
    assert len(fin) == 4 and sorted(fin["seed"]) == [0, 0, 1, 1]
    # JS is re-run at the pi1 that scored best on validation in the select phase
    js = sel[sel["method"] == "js"]
    chosen = js.loc[js["best.val_acc"].idxmax(), "hp.pi1"]
    assert (fin[fin["method"] == "js"]["hp.pi1"] == chosen).all()
    # its seed 0 is that select trial, stored again (not re-run): same numbers, no cost of its own
    carried = fin[fin["carried_from"] != ""]
    assert len(carried) == 1 and carried["seed"].item() == 0 and carried["method"].item() == "js"
    src = sel.set_index("trial_id").loc[carried["carried_from"].item()]
    assert src["hp.pi1"] == chosen and carried["trial_id"].item() == f"{src.name}-final"
    assert carried["best.val_acc"].item() == src["best.val_acc"] and carried["best.test_acc"].item() == src["best.test_acc"]
    assert carried["cost.cpu_s"].isna().all() and carried["wall_s"].isna().all() and src["cost.cpu_s"] > 0
    assert fin[fin["carried_from"] == ""]["cost.cpu_s"].gt(0).all() and (sel["carried_from"] == "").all()
    _, epochs = load_study(study_dir)
    ep = lambda tid: epochs[epochs["trial_id"] == tid].drop(columns="trial_id").reset_index(drop=True)
    assert len(ep(src.name)) and ep(src.name).equals(ep(carried["trial_id"].item()))
    assert (trials["setting.mix"] == "patchmix").all() and (trials["setting.m"] == 4).all()

    text = open(write_report(study_dir)).read()
    assert "Table I" in text and "**" in text and "CPU against CE" in text
    assert os.path.getsize(os.path.join(study_dir, "report", "table1_accuracy.png")) > 5000


@pytest.mark.parametrize("study,dataset,methods", [
    ("qll-compare", "cifar10", ("cpu", "sce")),
    ("cpu-prior", "cifar100", ("cpu",)),
])
def test_paper_preset_one_epoch_on_fake_cifar(tmp_path, study, dataset, methods):
    root = write_cifar10(str(tmp_path)) if dataset == "cifar10" else write_cifar100(str(tmp_path))
    st = resolve(get_study(study), dataset=dataset)
    configs = expand(st, data_root=root, seeds=[0])
    # the paper's recipe is what the preset selects (App. A, Table IV)
    for c in configs:
        assert c["train.arch"] == "resnet18" and c["train.optimizer"] == "sgd" and c["train.epochs"] == 200
        assert c["train.batch_size"] == 128 and c["train.momentum"] == 0.9
    cpu = [c for c in configs if c["method"] == "cpu"]
    assert {c["train.lr"] for c in cpu} == {0.1 if dataset == "cifar10" else 0.3}
    if study == "qll-compare":
        sce = next(c for c in configs if c["method"] == "sce")
        assert (sce["hp.alpha"], sce["hp.beta"], sce["train.weight_decay"]) == (0.1, 1.0, 5e-4)
        assert sorted({c["hp.beta"] for c in configs if c["method"] == "bootstrap"}) == [
            0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    else:
        assert {c.get("hp.pi2") for c in configs if c["label"] == "pi2-mixup"} == {0.01, 0.02, 0.03}
    for method in methods:
        cfg = next(c for c in configs if c["method"] == method and c["setting.mix"] == "patchmix")
        cfg = {**cfg, "train.epochs": 1, "train.width": 0.0625}
        result = run_trial(cfg)
        row = result.final
        assert row["epoch"] == 1 and 0 <= row["test_acc"] <= 1 and np.isfinite(row["train_loss"])
        assert result.info["m"] == 4


@pytest.mark.parametrize("study,sets,needle", [
    ("cpu-prior", ["setting.m=1"], "setting.m=1 "),
    ("cpu-prior", ["setting.r=0"], "setting.r=0 "),
    ("qll-compare", ["setting.mix=cutmix"], "setting.mix='cutmix' "),
    ("cpu-prior", ["hp.pi1=0"], "hp.pi1=0.0 "),
    ("cpu-prior", ["hp.pi2=1.5"], "hp.pi2=1.5 "),
    ("cpu-prior", ["setting.grid=3"], "setting.grid=3 "),  # 8x8 digits: the patch grid must divide 8
])
def test_bad_input_fails_before_ray_with_one_line(study, sets, needle):
    with pytest.raises(ConfigError) as e:
        prepare(study, smoke=True, sets=sets)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_full_studies_expand_and_validate():
    """The default (digits) studies: sizes as documented, every config valid."""
    prior = expand(resolve(get_study("cpu-prior")))
    assert len(prior) == (2 * 7 + 3 + 3) * 5
    compare = resolve(get_study("qll-compare"))
    assert compare.select_then_seeds and compare.seeds >= 5 and compare.select_seeds >= 3
    # the paper's schedule shape: 200 epochs, lr x0.1 at 50 % and 75 %
    assert all(c["train.epochs"] == 200 and c["train.schedule"] == "multistep" and c["train.milestones"] == "0.5,0.75"
               for c in prior + expand(compare))
    configs = expand(compare)
    assert {c["method"] for c in configs} == {"ce", "bootstrap", "gce", "sce", "js", "cpu-kl", "cpu"}
    for c in prior[:: 7] + configs[:: 11]:
        parse_trial(c)


def test_selection_uses_the_seed_mean_of_validation_not_seed_0():
    """js at pi1=0.1 wins seed 0 by luck; pi1=0.7 has the better mean over the 3 select seeds."""
    import pandas as pd

    from weaklab.study import Arm, Study
    from weaklab.tune.runner import _chosen_trials

    study = Study(name="t", title="t", reproduces="t", setting="quantized", seeds=5, select_seeds=3,
                  select_then_seeds=True, grid={"setting.mix": ("patchmix",)},
                  arms=(Arm("ce"), Arm("js", grid={"hp.pi1": (0.1, 0.7)})))
    configs = expand(study)
    val = {(0.1, 0): 0.90, (0.1, 1): 0.50, (0.1, 2): 0.50, (0.7, 0): 0.85, (0.7, 1): 0.80, (0.7, 2): 0.80}
    rows = [{"label": "js", "setting.mix": "patchmix", "hp.pi1": p, "seed": s, "status": "completed",
             "best.val_acc": v} for (p, s), v in val.items()]
    chosen = [t.config for t in _chosen_trials(study, [parse_trial(c) for c in configs], pd.DataFrame(rows))]
    js = [c for c in chosen if c["label"] == "js"]
    assert {c["hp.pi1"] for c in js} == {0.7} and sorted(c["seed"] for c in js) == [0, 1, 2, 3, 4]
    # ce has nothing to choose: all its seeds, with no select rows at all
    assert sorted(c["seed"] for c in chosen if c["label"] == "ce") == [0, 1, 2, 3, 4]
    assert all(c["phase"] == "final" for c in chosen)


def test_setting_keys_of_an_arm_are_conditions_not_choices(tmp_path):
    """An arm whose grid varies only a setting (a baseline over noise types) has nothing to
    select: it runs only in the final phase; an arm with a setting key of its own and a
    hyperparameter chooses the hyperparameter per setting value."""
    import pandas as pd

    from weaklab.study import Arm, Study, hp_choices
    from weaklab.tune.runner import _chosen_trials

    study = Study(name="t", title="t", reproduces="t", setting="quantized", seeds=2, select_then_seeds=True,
                  arms=(Arm("ce", grid={"setting.mix": ("mixup", "patchmix")}),
                        Arm("js", grid={"setting.mix": ("mixup", "patchmix"), "hp.pi1": (0.1, 0.7)})))
    assert [hp_choices(study, a) for a in study.arms] == [1, 2]
    configs = expand(study)
    best = {"mixup": 0.1, "patchmix": 0.7}
    rows = [{"label": "js", "setting.mix": m, "hp.pi1": p, "seed": 0, "status": "completed",
             "best.val_acc": 0.9 if best[m] == p else 0.5} for m in best for p in (0.1, 0.7)]
    chosen = [t.config for t in _chosen_trials(study, [parse_trial(c) for c in configs], pd.DataFrame(rows))]
    assert {(c["setting.mix"], c["hp.pi1"], c["seed"]) for c in chosen if c["label"] == "js"} == \
        {(m, p, s) for m, p in best.items() for s in (0, 1)}
    assert len([c for c in chosen if c["label"] == "ce"]) == 4


def test_bad_select_seeds_and_layout_fail_before_ray():
    from weaklab.study import Arm, Study

    with pytest.raises(ConfigError, match=r"select_seeds=0 ") as e:
        Study(name="t", title="t", reproduces="t", setting="quantized", arms=(Arm("ce"),), select_seeds=0)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"setting.layout='ring' ") as e:
        prepare("qll-compare", smoke=True, sets=["setting.layout=ring"])
    assert "\n" not in str(e.value)


def test_qll_report_shows_three_numbers_overfit_curves_and_sensitivity(tmp_path):
    import pandas as pd

    from analysis.qll import report_qll_compare

    trials, epochs = [], []
    for label, method, mix in (("ce", "ce", "patchmix"), ("cpu", "cpu", "patchmix"), ("ce rect", "ce", "patchmix"),
                               ("cpu rect", "cpu", "patchmix")):
        for seed in range(3):
            tid = f"{label}-{seed}"
            base = 0.80 if method == "ce" else 0.85
            curve = [base - 0.1 * (method == "ce") * (e > 5) + 0.01 * seed for e in range(1, 11)]
            trials.append({"trial_id": tid, "label": label, "method": method, "seed": seed, "status": "completed",
                           "phase": "final", "dataset": "digits", "setting.mix": mix, "setting.m": 4,
                           "best.test_acc": curve[4], "final.test_acc": curve[-1], "train.lr": 0.1})
            epochs += [{"trial_id": tid, "epoch": e, "test_acc": a, "train_loss": 1.0 / e ** (2 if method == "ce" else 0.5)}
                       for e, a in enumerate(curve, 1)]
    text = report_qll_compare(pd.DataFrame(trials), pd.DataFrame(epochs), tmp_path)
    assert "best over epochs (paper)" in text and "final epoch" in text
    assert "Does CE overfit" in text and (tmp_path / "ce_overfit_curves.png").stat().st_size > 5000
    assert "Sensitivity" in text and "rect" in text
    # Table I keeps the sensitivity arms out of the ce/cpu rows: 3 seeds each, not 6
    table = text.split("### CPU against CE")[0]
    assert "| 3 |" in text.split("### CPU against CE, paired by seed")[1].split("###")[0]
    assert "rect" not in table
