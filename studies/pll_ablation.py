"""pll-ablation: paper 001 (Xu, Lian et al.) Table 2, the sec. 2.4 extras switched off one at a time.

pll-reg with and without sample selection (``w/o S``), mixup (``w/o MU``), consistency
regularisation (``w/o CR``) and both (``w/o MU+CR``); Solar with and without selection and
without both extras, all on the shared prior schedule and digits recipe of ``pll-lambda-m``
(batch 64, rho 0.1 -> 0.2, where the per-class quota binds: see ``selected_frac``).
The paper runs it on CIFAR-10-LT (psi 0.5, gamma 100) and CIFAR-100-LT (psi 0.1, gamma 20).

Digits default: psi = 0.3, gamma = 10, pll-reg at lambda = 1, M = 0.5 (the paper's
CIFAR-100 pair, a lambda = 1 cell of pll-compare's validated candidates), 5 seeds.
"""

from __future__ import annotations

from weaklab.study import Arm, Claim, Study, register_study
from studies.pll_lambda_m import (DIGITS_HP, DIGITS_PRIOR, DIGITS_TRAIN, PAPER_EPOCHS, PAPER_HP, PAPER_PRIOR,
                                  PAPER_TRAIN)

OFF = {"w/o S": {"hp.selection": False}, "w/o MU": {"hp.mixup": False}, "w/o CR": {"hp.consistency": False},
       "w/o MU+CR": {"hp.mixup": False, "hp.consistency": False}}
#: Table 2 ablates Solar without selection and without both extras only
SOLAR_OFF = ("w/o S", "w/o MU+CR")


def ablation_arms(lam: float, M: float, prior: dict) -> tuple[Arm, ...]:
    reg = {"hp.lam": lam, "hp.M": M, **prior}
    arms = [Arm("pll-reg", fixed=reg, label="pll-reg")]
    arms += [Arm("pll-reg", fixed={**reg, **off}, label=f"pll-reg {name}") for name, off in OFF.items()]
    arms += [Arm("solar", fixed=dict(prior), label="solar")]
    arms += [Arm("solar", fixed={**prior, **OFF[name]}, label=f"solar {name}") for name in SOLAR_OFF]
    return tuple(arms)


def paper_preset(ds: str, psi: float, gamma: float, lam: float, M: float) -> dict:
    return {"fixed": {**PAPER_TRAIN, "train.epochs": PAPER_EPOCHS[ds], **PAPER_HP[ds],
                      "setting.psi": psi, "setting.gamma": gamma},
            "arms": ablation_arms(lam, M, PAPER_PRIOR[ds]), "seeds": 3}


#: Table 2, CIFAR10-LT / CIFAR100-LT
PAPER = {"pll-reg": (78.38, 54.49), "w/o S": (64.28, 51.06), "w/o MU": (65.27, 51.97), "w/o CR": (73.45, 51.61),
         "w/o MU+CR": (45.97, 39.83), "solar": (74.16, 53.03), "solar w/o S": (29.61, 35.80),
         "solar w/o MU+CR": (44.83, 30.88)}


def _paper(a: str, b: str) -> str:
    (a10, a100), (b10, b100) = PAPER[a], PAPER[b]
    return f"{a10 - b10:+.2f} CIFAR10-LT, {a100 - b100:+.2f} CIFAR100-LT (Table 2: {a10} vs {b10}, {a100} vs {b100})"


CLAIMS = tuple(
    Claim(f"pll-reg>{name}", metric=("final.test_acc", "final.test_acc_few"), select="final.val_acc",
          better="pll-reg", worse=f"pll-reg {name}", paper_effect=_paper("pll-reg", name))
    for name in OFF
) + (
    Claim("solar>solar w/o S", metric="final.test_acc", select="final.val_acc", better="solar",
          worse="solar w/o S", paper_effect=_paper("solar", "solar w/o S")),
    Claim("solar>solar w/o MU+CR", metric="final.test_acc", select="final.val_acc", better="solar",
          worse="solar w/o MU+CR", paper_effect=_paper("solar", "solar w/o MU+CR")),
    Claim("pll-reg w/o S>solar w/o S", metric="final.test_acc", select="final.val_acc", better="pll-reg w/o S",
          worse="solar w/o S", paper_effect=_paper("w/o S", "solar w/o S")),
)


STUDY = register_study(Study(
    name="pll-ablation",
    title="pll-reg and Solar with and without selection, mixup, consistency (paper 001 Table 2)",
    reproduces="paper 001 Table 2",
    setting="partial",
    fixed={"setting.psi": 0.3, "setting.gamma": 10.0, **DIGITS_TRAIN, **DIGITS_HP},
    arms=ablation_arms(1.0, 0.5, DIGITS_PRIOR),
    seeds=5,
    metric="best.val_acc",
    mode="max",
    claims=CLAIMS,
    smoke={"seeds": 1, "fixed": {"train.epochs": 2, "train.width": 0.05},
           "arms": ablation_arms(1.0, 0.5, {**DIGITS_PRIOR, "hp.pre_epochs": 1})},
    presets={"cifar10": paper_preset("cifar10", 0.5, 100.0, 3.0, 2.0),
             "cifar100": paper_preset("cifar100", 0.1, 20.0, 1.0, 0.5)},
))

if __name__ == "__main__":
    from weaklab.cli import study_main

    study_main(STUDY.name)
