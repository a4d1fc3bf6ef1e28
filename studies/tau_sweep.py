"""tau-sweep: paper 002 (Collier et al.) Fig. 1 and Table 1.

Noisy-test log-likelihood against the softmax temperature tau, one curve per number of
training MC samples S, the homoscedastic model as a reference; tau* picked on validation
log-likelihood and compared with tau = 1 and homoscedastic by paired t-tests over seeds.
Data: classes 5..9 relabelled uniformly with probability 0.2..0.6 (sec. 5.1).

Digits recipe (the default, the README's main job): the paper's optimiser and early
stopping on validation accuracy (App. D), but with a budget measured so that every tau
reaches its best epoch well inside the cap. Digits has 1079 training images, 9 steps an
epoch at batch 128, against ~350 on CIFAR-10: the paper's patience of 5 epochs is ~1750
steps there and 45 here, which stops a large-tau run before its logits have grown
(tau divides them: at tau = 5 the effective logit scale stayed at 0.63 after 40 epochs
with patience 5). So the cap is 150 epochs and the patience 20 (180 steps); in pilots
(S = 100, seed 0) the best epochs were 23 at tau = 1, 63-93 at tau = 0.025 and 73 at
tau = 10, each run stopping on patience. Validation and test use S = 1000 samples (as the
paper), and test splits are evaluated only at best-so-far and last epochs
(``train.eval_splits=best``: exact where the reported numbers read them).

To fit 15 minutes on 2 cores at 5 seeds, the default runs one training S (``--set
hp.train_samples=1`` gives the other curve of Fig. 1) and 4 of the paper's 18 temperatures,
0.025, 0.2, 1 and 5 (25 trials with homoscedastic; it was 10 temperatures, 55 trials):
issue 26 asks to shrink the grid before the seeds, and the seeds are what the paired tests
need. The four span the paper's range on a log scale and keep tau = 1 (Kendall & Gal, a
claim's reference) and the paper's tau* on CIFAR-10 / SVHN (5); ``--set hp.tau=...`` runs
any other. The paper's tau > 10 are left out: tau divides the logits, so the steps a run
needs grow with tau, and at tau = 100 the pilot ran all 150 epochs with its best at 136
(val LL -1.84 against -0.79 at tau = 0.025), a budget-bound number; ``--set hp.tau=35 --set
train.epochs=400`` runs one of them.

This is the faithful recipe (issue 28, docs/ABSENT_EFFECTS.md): the noise protocol of sec.
5.1, the diagonal heteroscedastic head of Table 7, tau inside the softmax as in eq. 7, the
paper's optimiser, S = 1000 at evaluation and the noisy-test LL. The effect it tests is
small on a near-clean-separable dataset: the paper's own MNIST gain is +0.004 nats
(-0.710 vs -0.714, 25 seeds), and the Bayes floor of this protocol (a model that knows the
clean class and the redraw rates) is -0.704 nats; the report's "noise floor" section gives
each row's gap to it, and the learned per-class noise scale against the true redraw rate.
"""

from __future__ import annotations

from weaklab.study import Arm, Claim, Study, register_study

#: paper 002 App. D, the temperatures searched
PAPER_TAUS = (0.025, 0.05, 0.1, 0.2, 0.6, 1.0, 1.4, 1.8, 2.2, 2.6, 3.0, 5.0, 10.0, 15.0, 20.0, 35.0, 50.0, 100.0)

#: paper 002 App. D: Adam(1e-3, eps 1e-7), early stop after 5 epochs without val-accuracy gain
PAPER_TRAIN = {"train.arch": "cnn", "train.width": 1.0, "train.optimizer": "adam", "train.lr": 1e-3,
               "train.adam_eps": 1e-7, "train.epochs": 1000, "train.patience": 5, "train.monitor": "val_acc",
               "train.batch_size": 128}

#: digits: 4 of the paper's temperatures, 0.025 to 5 (module docstring: why these, why not above 10)
DIGITS_TAUS = (0.025, 0.2, 1.0, 5.0)
#: digits: the one training S of the default (Fig. 1's other curve by --set hp.train_samples=1)
DIGITS_S = 100
#: digits: 150-epoch cap, patience 20 (180 steps), S = 1000 at evaluation, test splits at best/last epochs
DIGITS_BUDGET = {"train.width": 0.125, "train.epochs": 150, "train.patience": 20, "train.eval_splits": "best"}

#: Table 1: tau* picked on validation LL (seed-mean over tau x S), compared on noisy-test LL
#: (and, for tau* against homoscedastic, on clean test accuracy, Table 1's Acc_clean)
# Issue 28, this recipe at 4675e27 (seeds 0-4, 4 min 06 s): tau* = 0.025; tau*>homoscedastic
# +0.020 nats p 0.73 (clean acc -0.1 pt p 0.94), tau*>tau=1 +0.062 p 0.25, tau=1>homoscedastic
# -0.042 p 0.35, all not significant; paired sd 0.09-0.12 nats, so 5 seeds resolve ~0.2 nats
# against the paper's +0.042 (CIFAR-10) and +0.004 (MNIST). docs/ABSENT_EFFECTS.md.
CLAIMS = (
    Claim("tau*>homoscedastic", metric=("best.test_noisy_ll", "best.test_acc"), select="best.val_ll",
          better="heteroscedastic", worse="homoscedastic",
          paper_effect="LL +0.042 nats (-1.067 vs -1.109), Acc_clean +1.5 pt (0.853 vs 0.838), CIFAR-10, "
                       "Table 1, p < 0.001; MNIST +0.004 nats, +0.1 pt"),
    Claim("tau*>tau=1", metric="best.test_noisy_ll", select="best.val_ll", better="heteroscedastic",
          worse="heteroscedastic", worse_where={"hp.tau": 1.0},
          paper_effect="+0.026 nats (-1.067 vs -1.093, CIFAR-10, Table 1, p < 0.001)"),
    # Table 1's middle row against its first: Kendall & Gal's model above the plain softmax
    Claim("tau=1>homoscedastic", metric="best.test_noisy_ll", select="best.val_ll", better="heteroscedastic",
          better_where={"hp.tau": 1.0}, worse="homoscedastic",
          paper_effect="+0.016 nats (-1.093 vs -1.109, CIFAR-10, Table 1); MNIST +0.001 (-0.713 vs -0.714)"),
)


STUDY = register_study(Study(
    name="tau-sweep",
    title="heteroscedastic softmax temperature tau x training MC samples S vs homoscedastic (noisy-test LL)",
    reproduces="paper 002 Fig. 1 and Table 1",
    setting="noise",
    fixed={"setting.protocol": "heteroscedastic",
           # digits: the Table 7 net at 1/8 width; the budget of the module docstring
           **PAPER_TRAIN, **DIGITS_BUDGET},
    arms=(
        Arm("heteroscedastic", grid={"hp.tau": DIGITS_TAUS, "hp.train_samples": (DIGITS_S,)},
            fixed={"hp.eval_samples": 1000}),
        Arm("homoscedastic"),
    ),
    seeds=5,
    metric="best.val_ll",
    mode="max",
    claims=CLAIMS,
    smoke={"seeds": 2, "fixed": {"train.epochs": 3, "train.patience": 5},
           "arms": (Arm("heteroscedastic", grid={"hp.tau": (0.1, 1.0, 10.0), "hp.train_samples": (10,)}),
                    Arm("homoscedastic"))},
    presets={name: {"fixed": dict(PAPER_TRAIN)} for name in ("cifar10", "mnist", "svhn", "fashion_mnist")},
))

if __name__ == "__main__":
    from weaklab.cli import study_main

    study_main(STUDY.name)
