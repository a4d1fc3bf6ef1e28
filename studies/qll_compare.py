"""qll-compare: paper 000 (Xie, He, Lu et al.) Table I: CPU against the noise-robust losses.

Every method x both mix types (Mixup m = 2, PatchMix m = 4) x seeds. Each arm's own
hyperparameters are chosen on the clean validation split at seed 0 (select_then_seeds),
then every seed is re-run at the chosen values; Table I reports test accuracy at the
best-validation epoch, mean +- std over seeds.

Search spaces follow the paper's App. A: Bootstrap's beta and JS's pi1 over
{0.1, ..., 0.9}; GCE (q, k) = (0.7, 0.5) and SCE (alpha, beta) from their papers; CPU at
pi1 = 0.1, pi2 = m/c. ``--dataset cifar10|cifar100`` uses Table IV's per-method learning
rate and weight decay with ResNet-18, SGD momentum 0.9, batch 128, 200 epochs. On digits
the learning rate is searched too ({0.1, 0.3}: CE's and CPU's best in a pilot over
{0.03, 0.1, 0.3, 1}, the same for every arm), since Table IV's rates were tuned for
ResNet-18 on CIFAR; the beta/pi1 grid is halved and training is 20 epochs (lr x0.1 at 10)
so that the 102 trials finish in minutes on 2 cores.
"""

from __future__ import annotations

from weaklab.study import Arm, Claim, Study, register_study
from studies.cpu_prior import DIGITS_TRAIN, PAPER_TRAIN

#: paper 000 App. A: beta for Bootstrap and pi1 for JS are tuned over this grid
PAPER_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DIGITS_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)
DIGITS_LR = (0.1, 0.3)

METHOD_ORDER = ("ce", "bootstrap", "gce", "sce", "js", "cpu-kl", "cpu")


def paper_arms(dataset: str) -> tuple[Arm, ...]:
    """Table IV: initial learning rate, weight decay and method-specific values on CIFAR-10Q / CIFAR-100Q."""
    c100 = dataset == "cifar100"
    lr_wd = lambda lr, wd: {"train.lr": lr, "train.weight_decay": wd}
    return (
        Arm("ce", fixed=lr_wd(0.1, 1e-4)),
        Arm("bootstrap", grid={"hp.beta": PAPER_GRID}, fixed=lr_wd(0.1, 1e-4)),
        Arm("gce", fixed={**lr_wd(0.01, 1e-4), "hp.q": 0.7, "hp.k": 0.5}),
        Arm("sce", fixed={**lr_wd(0.1, 5e-4), "hp.alpha": 6.0 if c100 else 0.1, "hp.beta": 0.1 if c100 else 1.0}),
        Arm("js", grid={"hp.pi1": PAPER_GRID}, fixed=lr_wd(0.1, 1e-3)),
        Arm("cpu-kl", fixed={**lr_wd(0.3 if c100 else 0.1, 1e-4), "hp.pi1": 0.1}),
        Arm("cpu", fixed={**lr_wd(0.3 if c100 else 0.1, 1e-4), "hp.pi1": 0.1}),
    )


def digits_arms(grid=DIGITS_GRID, lrs=DIGITS_LR) -> tuple[Arm, ...]:
    """Table IV's method-specific values and weight decays; the learning rate searched for every arm.

    GCE prunes from epoch 7 every 2 epochs: its paper's 40-of-120 and every-10 scaled to 20 epochs.
    """
    lr = {"train.lr": lrs}
    return (
        Arm("ce", grid=lr, fixed={"train.weight_decay": 1e-4}),
        Arm("bootstrap", grid={**lr, "hp.beta": grid}, fixed={"train.weight_decay": 1e-4}),
        Arm("gce", grid=lr, fixed={"train.weight_decay": 1e-4, "hp.q": 0.7, "hp.k": 0.5,
                                   "hp.prune_start": 7, "hp.prune_every": 2}),
        Arm("sce", grid=lr, fixed={"train.weight_decay": 5e-4, "hp.alpha": 0.1, "hp.beta": 1.0}),
        Arm("js", grid={**lr, "hp.pi1": grid}, fixed={"train.weight_decay": 1e-3}),
        Arm("cpu-kl", grid=lr, fixed={"train.weight_decay": 1e-4, "hp.pi1": 0.1}),
        Arm("cpu", grid=lr, fixed={"train.weight_decay": 1e-4, "hp.pi1": 0.1}),
    )


#: paper 000 Table I on CIFAR-10Q, CPU minus each baseline on the mean of Mixup m=2 and PatchMix m=4
PAPER_GAIN_MEAN = {"ce": 8.56, "bootstrap": 4.45, "gce": 6.91, "sce": 8.60, "js": 3.35}

CLAIMS = (
    Claim("cpu>ce per mix", metric="best.test_acc", better="cpu", worse="ce", slice_by=("setting.mix",),
          paper_effect="+8.0 Mixup, +9.2 PatchMix points (CIFAR-10Q, Table I)"),
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
    fixed={"setting.r": 10, "setting.grid": 4, **DIGITS_TRAIN, "train.epochs": 20, "train.step_size": 10},
    arms=digits_arms(),
    seeds=3,
    metric="best_val_acc",
    mode="max",
    select_then_seeds=True,
    claims=CLAIMS,
    smoke={"seeds": 2, "fixed": {"train.epochs": 1}, "grid": {"setting.mix": ("patchmix",)},
           "arms": (Arm("ce"), Arm("js", grid={"hp.pi1": (0.1, 0.7)}))},
    presets={name: {"fixed": {"setting.r": 10, "setting.grid": 4, **PAPER_TRAIN}, "arms": paper_arms(name)}
             for name in ("cifar10", "cifar100")},
))

if __name__ == "__main__":
    from weaklab.cli import study_main

    study_main(STUDY.name)
