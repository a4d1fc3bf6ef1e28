"""Issue 28: paper 004's flip claims on other data, and the noise floor of random flipping.

Not a study file (the leading underscore keeps it out of ``weaklab studies``): two small
commands around ``balancemix-delta-alpha`` (docs/ABSENT_EFFECTS.md gives the runs).

    python3 -m studies._absent_effects flip --dataset digits-multi-cells --rho 0.4 --results /tmp/absent/cells-0.4
    python3 -m studies._absent_effects shares

``flip`` runs the study's flip claims (BalanceMix against the 7 baselines, 5 seeds, its
(δ, α) chosen on validation over 3 seeds as in the study) on another dataset or noise rate,
through the normal machinery: the study restricted to ``setting.noise = flip`` without the
ablation rows, under its own name, so its Parquet and report are the study's (the rows of
the other noise types read "not run"); the claims table of the flip rows is printed.

``shares`` prints, per dataset and noise type, the realised error rates of positives and
negatives and the share of the given positives that are true (the floor a clean-label
selection starts from), with paper 004's VOC and COCO by the formula.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from studies.balancemix_delta_alpha import CLAIMS, DIGITS_TRAIN, DIGITS_WARMUP, STUDY, make_arms

FLIP_CLAIMS = tuple(c for c in CLAIMS if c.better == "balancemix")
DATASETS = ("digits-multi", "digits-multi-cells", "digits-multi-imb5", "digits-multi-imb100")


def flip_study(*, dataset: str, rho: float):
    """The study restricted to random flipping at ``rho`` on ``dataset``: BalanceMix's δ and α
    sweeps (Tables 7-8's grids, here under flipping, which the main study runs at the paper's
    point) and the 7 baselines, the study's seeds, select phase and recipe, no ablation rows."""
    return dataclasses.replace(
        STUDY, dataset=dataset, grid={"setting.noise": ("flip",)}, fixed={**STUDY.fixed, "setting.rho": rho},
        arms=make_arms(warmup=DIGITS_WARMUP, train=DIGITS_TRAIN, noises=("flip",), ablation=False,
                       delta_sweep=("flip",), alpha_sweep=("flip",)),
        claims=FLIP_CLAIMS)


def run_flip(*, dataset: str, rho: float, results: str, seeds: int | None = None) -> str:
    from analysis.claims import claims_terminal, evaluate_claims
    from analysis.report import write_report
    from weaklab.config import parse_trial
    from weaklab.store import load_study
    from weaklab.study import check_trials, expand
    from weaklab.tune.runner import Plan, run_study

    study = flip_study(dataset=dataset, rho=rho)
    if seeds is not None:
        study = dataclasses.replace(study, seeds=seeds)
    trials = [parse_trial(c) for c in expand(study)]
    check_trials(trials)
    plan = Plan(study=study, trials=trials, data=[], sets={}, data_root=None, smoke=False)
    print(f"absent-effects: flip claims on {dataset} at rho {rho}: {plan.planned_trials()} trials", flush=True)
    t0 = time.time()
    study_dir = run_study(plan, results=results)
    wall = time.time() - t0
    write_report(study_dir)
    table = evaluate_claims(load_study(study_dir)[0], FLIP_CLAIMS)
    print(claims_terminal(table), flush=True)
    print(f"absent-effects: wall {wall:.0f} s; Parquet and report in {study_dir}", flush=True)
    return study_dir


def shares(*, rhos=(0.2, 0.4), datasets=DATASETS) -> str:
    """Markdown table: per dataset, noise type and rate, the realised positive / negative error
    rates and the true share of the given positives (seed 0 of the study's weak labels)."""
    import numpy as np

    from analysis.balancemix import PAPER_PN, positive_floor
    from weaklab.data import load_dataset
    from weaklab.settings import make_weak_data
    from weaklab.settings.multilabel_noise import MultilabelNoiseParams

    lines = ["| dataset | noise | ρ | clean PN_Imb | pos error | neg error | true share of given positives |",
             "|---|---|---|---|---|---|---|"]
    for name in datasets:
        data = load_dataset(name)
        for noise in ("mislabel", "flip", "missing"):
            for rho in (rhos if noise != "missing" else (0.0,)):
                weak = make_weak_data(data, "multilabel-noise", MultilabelNoiseParams(noise=noise, rho=rho), 0)
                clean, given = weak.hidden["Y"].numpy() > 0.5, weak.weak["Y"].numpy() > 0.5
                i = weak.info
                lines.append(f"| {name} | {noise} | {rho:g} | {i['clean_pn_imb']:.2f} | {i['pos_error_rate']:.3f} | "
                             f"{i['neg_error_rate']:.3f} | {float(np.mean(clean[given])):.3f} |")
    for name, pn in PAPER_PN.items():
        for rho in rhos:
            lines.append(f"| {name} (formula) | flip | {rho:g} | {pn:g} | {rho:.3f} | {rho:.3f} | "
                         f"{positive_floor(pos_error=rho, neg_error=rho, pn_imb=pn):.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m studies._absent_effects", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("flip", help="the flip claims on another dataset / noise rate")
    f.add_argument("--dataset", default="digits-multi-cells", choices=DATASETS)
    f.add_argument("--rho", type=float, default=0.4)
    f.add_argument("--results", default="/tmp/absent/flip")
    f.add_argument("--seeds", type=int, default=None)
    sub.add_parser("shares", help="the true share of the given positives per dataset and noise")
    args = p.parse_args(argv)
    if args.command == "flip":
        run_flip(dataset=args.dataset, rho=args.rho, results=args.results, seeds=args.seeds)
    else:
        print(shares())
    return 0


if __name__ == "__main__":
    sys.exit(main())
