"""pll-compare: paper 001 (Xu, Lian et al.) Table 1 shape, and Table 5's cost.

Methods (pll-reg, PRODEN, CC, Solar; all with the sec. 2.4 extras, as sec. 3.1 equips
the baselines) x flipping probability psi x imbalance ratio gamma, overall and
Many / Medium / Few accuracy, and the per-epoch cost of the label update
(``label_update_s``) of each method.

Digits default (2-core machine, ~10 minutes): psi in {0.3, 0.5}, gamma in {10, 20}, the
same MLP recipe and prior schedule as ``pll-lambda-m`` (see there for mu), pll-reg at
lambda = 1, M = 0.5 (the paper's CIFAR-100-LT pair, in the best region of our digits
lambda x M surface). ``--dataset cifar10`` / ``cifar100`` run the paper's Table 1 grid
and recipe (lambda = 3, M = 2 and lambda = 1, M = 0.5).
"""

from __future__ import annotations

from weaklab.study import Arm, Claim, Study, register_study
from studies.pll_lambda_m import (DIGITS_HP, DIGITS_PRIOR, DIGITS_TRAIN, PAPER_EPOCHS, PAPER_HP, PAPER_PRIOR,
                                  PAPER_TRAIN)

#: paper 001 Table 1 grids and sec. 3.1 (lambda, M) per dataset
PAPER_GRID = {"cifar10": {"setting.psi": (0.3, 0.5), "setting.gamma": (50.0, 100.0, 200.0)},
              "cifar100": {"setting.psi": (0.05, 0.1), "setting.gamma": (10.0, 20.0, 50.0)}}
PAPER_LAM_M = {"cifar10": (3.0, 2.0), "cifar100": (1.0, 0.5)}


def compare_arms(lam: float, M: float, prior: dict) -> tuple[Arm, ...]:
    return (Arm("pll-reg", fixed={"hp.lam": lam, "hp.M": M, **prior}),
            Arm("proden"), Arm("cc"),
            Arm("solar", fixed=dict(prior)))


def paper_preset(ds: str) -> dict:
    return {"fixed": {**PAPER_TRAIN, "train.epochs": PAPER_EPOCHS[ds], **PAPER_HP[ds]},
            "grid": PAPER_GRID[ds], "arms": compare_arms(*PAPER_LAM_M[ds], PAPER_PRIOR[ds]), "seeds": 3}


CLAIMS = (
    Claim("pll-reg>baselines", metric=("final.test_acc", "final.test_acc_few"), select="final.val_acc",
          better="pll-reg", worse=("proden", "solar"), slice_by=("setting.psi", "setting.gamma"),
          paper_effect="+10.7 vs PRODEN, +5.1 vs Solar overall (CIFAR10-LT psi 0.3, gamma 100, Table 1)"),
)


STUDY = register_study(Study(
    name="pll-compare",
    title="pll-reg vs PRODEN, CC, Solar over psi x gamma on long-tailed partial labels (+ label-update cost)",
    reproduces="paper 001 Table 1 and Table 5",
    setting="partial",
    fixed={**DIGITS_TRAIN, **DIGITS_HP},
    grid={"setting.psi": (0.3, 0.5), "setting.gamma": (10.0, 20.0)},
    arms=compare_arms(1.0, 0.5, DIGITS_PRIOR),
    seeds=3,
    metric="best_val_acc",
    mode="max",
    claims=CLAIMS,
    smoke={"seeds": 1, "fixed": {"train.epochs": 2, "train.width": 0.05},
           "grid": {"setting.psi": (0.3,), "setting.gamma": (10.0,)},
           "arms": compare_arms(1.0, 0.5, {**DIGITS_PRIOR, "hp.pre_epochs": 1})},
    presets={"cifar10": paper_preset("cifar10"), "cifar100": paper_preset("cifar100")},
))

if __name__ == "__main__":
    from weaklab.cli import study_main

    study_main(STUDY.name)
