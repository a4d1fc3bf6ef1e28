"""qll-compare: paper 000 (Xie, He, Lu et al.) Table I: CPU against the noise-robust losses.

Every method x both mix types (Mixup m = 2, PatchMix m = 4) x seeds. Arms with a
searched hyperparameter (Bootstrap's beta, JS's pi1) run every value at the first 3 seeds
on the clean validation split and keep the value with the best seed-mean validation
accuracy (select_then_seeds, select_seeds = 3: one seed picks the luckiest run); then
every arm runs 5 seeds at its values. Table I reports test accuracy at the
best-validation epoch, mean +- std over seeds; the report shows the paper's best-over-epochs
number and the final-epoch number beside it.

Search spaces follow the paper's App. A: Bootstrap's beta and JS's pi1 over
{0.1, ..., 0.9}; GCE (q, k) = (0.7, 0.5) and SCE (alpha, beta) from their papers; CPU at
pi1 = 0.1, pi2 = m/c. ``--dataset cifar10|cifar100`` uses Table IV's per-method learning
rate and weight decay with ResNet-18, SGD momentum 0.9, batch 128, 200 epochs.

Digits (the default) keeps the paper's schedule shape: 200 epochs of SGD (momentum 0.9),
lr x0.1 at 50 % and 75 %, Table IV's CIFAR-10Q learning rate and weight decay per method.
This is long enough that CE memorises the quantized labels (its training loss reaches
~0.004 by epoch 100 and its test accuracy falls after its early peak), the failure the
paper's risk exists to avoid; the earlier 20-epoch recipe (lr x0.1 at 10) stopped CE
before it overfit and trapped CPU at lr 0.3 (its bounded SJS loss saturates), which
reversed the headline. The learning rate is Table IV's (as the paper), and
the beta/pi1 grid is every other value of the paper's, so that the study (72 select + 70
final + 20 sensitivity trials of ~7 CPU-s) fits 20 minutes on 2 cores; only GCE's rate is
searched (see ``digits_arms``). Sensitivity arms
(CE and CPU, 5 seeds): PatchMix with ``setting.layout='rect'`` (m contiguous rectangles
around a central cut, the common PatchMix/CutMix layout) and Mixup with r = 100
(lambda on a 0.01 grid instead of 0.1).
"""

from __future__ import annotations

from weaklab.study import Arm, Claim, Study, register_study
from studies.cpu_prior import DIGITS_TRAIN, PAPER_TRAIN

#: paper 000 App. A: beta for Bootstrap and pi1 for JS are tuned over this grid
PAPER_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DIGITS_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)

METHOD_ORDER = ("ce", "bootstrap", "gce", "sce", "js", "cpu-kl", "cpu")

#: sensitivity arms' labels: the PatchMix layout and the Mixup multinomial r
RECT, R100 = "rect", "r=100"


def paper_arms(dataset: str, grid=PAPER_GRID, prune: tuple[int, int] = (40, 10)) -> tuple[Arm, ...]:
    """Table IV: initial learning rate, weight decay and method-specific values on CIFAR-10Q / CIFAR-100Q.

    ``prune``: GCE's (prune_start, prune_every), its paper's 40-of-120 and every 10.
    """
    c100 = dataset == "cifar100"
    lr_wd = lambda lr, wd: {"train.lr": lr, "train.weight_decay": wd}
    return (
        Arm("ce", fixed=lr_wd(0.1, 1e-4)),
        Arm("bootstrap", grid={"hp.beta": grid}, fixed=lr_wd(0.1, 1e-4)),
        Arm("gce", fixed={**lr_wd(0.01, 1e-4), "hp.q": 0.7, "hp.k": 0.5, "hp.prune_start": prune[0],
                          "hp.prune_every": prune[1]}),
        Arm("sce", fixed={**lr_wd(0.1, 5e-4), "hp.alpha": 6.0 if c100 else 0.1, "hp.beta": 0.1 if c100 else 1.0}),
        Arm("js", grid={"hp.pi1": grid}, fixed=lr_wd(0.1, 1e-3)),
        Arm("cpu-kl", fixed={**lr_wd(0.3 if c100 else 0.1, 1e-4), "hp.pi1": 0.1}),
        Arm("cpu", fixed={**lr_wd(0.3 if c100 else 0.1, 1e-4), "hp.pi1": 0.1}),
    )


def sensitivity_arms() -> tuple[Arm, ...]:
    """CE and CPU on PatchMix with contiguous rectangles, and on Mixup with r = 100 (Table IV's lr and wd)."""
    out = []
    for method in ("ce", "cpu"):
        fixed = {"train.lr": 0.1, "train.weight_decay": 1e-4, **({"hp.pi1": 0.1} if method == "cpu" else {})}
        out.append(Arm(method, grid={"setting.mix": ("patchmix",)}, fixed={**fixed, "setting.layout": "rect"},
                       label=f"{method} {RECT}"))
        out.append(Arm(method, grid={"setting.mix": ("mixup",)}, fixed={**fixed, "setting.r": 100},
                       label=f"{method} {R100}"))
    return tuple(out)


def digits_arms() -> tuple[Arm, ...]:
    """Table IV's CIFAR-10Q values on digits, the halved grid, GCE pruning from epoch 67 every 17
    (its paper's 40-of-120 and every 10, scaled to 200 epochs), and the sensitivity arms.

    GCE's learning rate is searched over {0.01 (Table IV), 0.1}: at 0.01 the digits MLP is
    at 28 % test accuracy by epoch 25 and the first pruning (weights 0 for p < k) then
    removes nearly every sample (training loss 0.0, test 38 % in a pilot), a baseline
    broken by a rate tuned for ResNet-18 rather than beaten.
    """
    arms = list(paper_arms("cifar10", grid=DIGITS_GRID, prune=(67, 17)))
    i = next(i for i, a in enumerate(arms) if a.method == "gce")
    arms[i] = Arm("gce", grid={"train.lr": (0.01, 0.1)}, fixed={k: v for k, v in arms[i].fixed.items() if k != "train.lr"})
    return (*arms, *sensitivity_arms())


#: paper 000 Table I on CIFAR-10Q, CPU minus each baseline on the mean of Mixup m=2 and PatchMix m=4
PAPER_GAIN_MEAN = {"ce": 8.56, "bootstrap": 4.45, "gce": 6.91, "sce": 8.60, "js": 3.35}

CLAIMS = (
    Claim("cpu>ce per mix", metric="best.test_acc", better="cpu", worse="ce", slice_by=("setting.mix",),
          paper_effect="+8.0 Mixup, +9.2 PatchMix points (CIFAR-10Q, Table I)"),
    Claim("cpu>ce, final epoch", metric="final.test_acc", better="cpu", worse="ce", slice_by=("setting.mix",),
          paper_effect="CE memorises the quantized labels, CPU does not (sec. I, Fig. 1; no number)"),
    Claim("cpu>ce, rect PatchMix", metric="best.test_acc", better=f"cpu {RECT}", worse=f"ce {RECT}",
          paper_effect="+9.2 points on PatchMix (CIFAR-10Q, Table I; the paper's layout)"),
    Claim("cpu>ce, Mixup r=100", metric="best.test_acc", better=f"cpu {R100}", worse=f"ce {R100}",
          paper_effect="+8.0 points on Mixup (CIFAR-10Q, Table I)"),
    *(Claim(f"cpu>{b} on the mean", metric="best.test_acc", better="cpu", worse=b, average_over=("setting.mix",),
            paper_effect=f"+{g:.1f} points on the mean of the two mixes (CIFAR-10Q, Table I)")
      for b, g in PAPER_GAIN_MEAN.items()),
)


STUDY = register_study(Study(
    name="qll-compare",
    title="CPU vs CE / Bootstrap / GCE / SCE / JS on quantized labels, Mixup m=2 and PatchMix m=4",
    reproduces="paper 000 Table I (and Table III's CPU-KL)",
    setting="quantized",
    grid={"setting.mix": ("mixup", "patchmix")},  # m follows the mix type: 2 and 4
    fixed={"setting.r": 10, "setting.grid": 4, **DIGITS_TRAIN, "train.epochs": 200, "train.schedule": "multistep",
           "train.milestones": "0.5,0.75"},
    arms=digits_arms(),
    seeds=5,
    select_seeds=3,
    metric="best.val_acc",
    mode="max",
    select_then_seeds=True,
    claims=CLAIMS,
    smoke={"seeds": 2, "select_seeds": 1, "fixed": {"train.epochs": 1}, "grid": {"setting.mix": ("patchmix",)},
           "arms": (Arm("ce"), Arm("js", grid={"hp.pi1": (0.1, 0.7)}))},
    presets={name: {"fixed": {"setting.r": 10, "setting.grid": 4, **PAPER_TRAIN}, "arms": paper_arms(name)}
             for name in ("cifar10", "cifar100")},
))

if __name__ == "__main__":
    from weaklab.cli import study_main

    study_main(STUDY.name)
