"""Hyperparameter importance per method from a study's ``trials/`` rows: Optuna's fANOVA
(Hutter, Hoos & Leyton-Brown 2014) over an Optuna study rebuilt from the Parquet.

Each completed trial becomes ``optuna.trial.create_trial(params, distributions, value)``;
``optuna.importance.get_param_importances`` with ``FanovaImportanceEvaluator`` fits a
random forest on them and splits the variance of its prediction over the searched space
into each axis's main effect. Two numbers per axis: ``main_effect``, the fraction of that
variance the axis explains alone (fANOVA's own number; what the main effects leave of 1
is interactions), and ``importance``, the main effects normalised to sum to 1 (what
Optuna reports by default).

Numeric axes enter by their rank in the grid (``IntDistribution(0, k-1)``): Optuna's
fANOVA integrates uniformly over each axis's raw range (its transform keeps no log scale),
so a log-spaced grid such as tau = 0.025 .. 100 would put every value below 3 into 3% of
the range; by rank, every grid value the study chose weighs the same. Text and boolean
axes are categorical. A grid that is not a full product (pll-lambda-m's M values depend
on lambda) still works, but fANOVA then integrates the forest over combinations never run.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.beyond import Metric, grid_rows, slug, varying
from analysis.figures import save_figure
from analysis.stats import markdown_table


def param_importances(rows: pd.DataFrame, params: list[str], metric: str, *, seed: int = 0,
                      n_trees: int = 64) -> dict[str, float]:
    """fANOVA main effect (fraction of variance) of each of ``params`` on ``rows[metric]``."""
    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    encoders, distributions = {}, {}
    for p in params:
        values = rows[p].dropna().unique()
        if pd.api.types.is_numeric_dtype(rows[p]) and not pd.api.types.is_bool_dtype(rows[p]):
            ranks = {v: i for i, v in enumerate(sorted(float(v) for v in values))}
            encoders[p] = lambda v, ranks=ranks: ranks[float(v)]
            distributions[p] = IntDistribution(0, len(ranks) - 1)
        else:
            choices = tuple(sorted(str(v) for v in values))
            encoders[p] = str
            distributions[p] = CategoricalDistribution(choices)
    trials = [optuna.trial.create_trial(params={p: encoders[p](r[p]) for p in params}, distributions=distributions,
                                        value=float(r[metric]))
              for r in rows[params + [metric]].to_dict("records")]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    with warnings.catch_warnings():  # normalize=False is marked experimental; it is fANOVA's own number
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        raw = get_param_importances(study, evaluator=FanovaImportanceEvaluator(n_trees=n_trees, seed=seed),
                                    normalize=False)
    return {p: float(raw.get(p, 0.0)) for p in params}


def importance_table(trials: pd.DataFrame, metric: Metric, *, seed: int = 0) -> pd.DataFrame:
    """One row per (method, searched axis) of every method that searches at least one
    hyperparameter and two axes in all (hyperparameters or setting axes)."""
    rows = grid_rows(trials, metric)
    out = []
    for label, g in rows.groupby("label", sort=False):
        params = varying(g)
        if len(params) < 2 or not any(p.startswith(("hp.", "train.")) for p in params):
            continue
        y = g[metric.column].astype(float)
        if y.std(ddof=0) == 0:
            continue  # nothing to explain
        main = param_importances(g, params, metric.column, seed=seed)
        total = sum(main.values())
        points = g.groupby(params, dropna=False).ngroups
        product = int(np.prod([g[p].nunique() for p in params]))
        for p, v in sorted(main.items(), key=lambda kv: -kv[1]):
            out.append({"study": str(g["study"].iloc[0]), "method": label, "param": p,
                        "importance": v / total if total > 0 else float("nan"), "main_effect": v,
                        "trials": len(g), "grid_points": points, "product_points": product,
                        "metric": metric.column})
    return pd.DataFrame(out, columns=["study", "method", "param", "importance", "main_effect", "trials",
                                      "grid_points", "product_points", "metric"])


def importance_figure(tbl: pd.DataFrame, method: str, out: Path) -> Path:
    """Bar chart of one method's importance shares, main effects written beside the bars."""
    g = tbl[tbl["method"] == method].sort_values("importance")
    fig, ax = plt.subplots(figsize=(5.2, 0.9 + 0.45 * len(g)))
    ax.barh(g["param"], g["importance"], color="tab:blue")
    for i, (share, main) in enumerate(zip(g["importance"], g["main_effect"])):
        ax.text(share, i, f" {100 * share:.0f}% (main effect {main:.2f})", va="center", fontsize=7)
    ax.set_xlim(0, 1.45)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel(f"share of {g['metric'].iloc[0]} variance (fANOVA, normalised)")
    ax.set_title(f"{g['study'].iloc[0]}: {method} ({int(g['trials'].iloc[0])} trials, "
                 f"{int(g['grid_points'].iloc[0])} grid points)", fontsize=9)
    return save_figure(fig, out / f"importance-{slug(method)}.png")


def importance_section(trials: pd.DataFrame, metric: Metric, out: Path) -> str:
    """Markdown section; writes ``importance.csv`` and one bar chart per method into ``out``."""
    tbl = importance_table(trials, metric)
    tbl.to_csv(out / "importance.csv", index=False)
    lines = ["### Hyperparameter importance (fANOVA over the stored trials)", ""]
    if tbl.empty:
        return "\n".join(lines + ["No method here searches a hyperparameter together with a second axis: "
                                  "nothing to apportion (`importance.csv` is empty).", ""])
    lines += ["Share of the metric's variance over each method's grid explained by each axis alone "
              "(Optuna `FanovaImportanceEvaluator` on trials rebuilt from Parquet; numeric axes by grid rank). "
              "`main effect` is the unnormalised fraction; 1 minus their sum is left to interactions "
              "and seed noise. Table: `importance.csv`.", ""]
    show = tbl.assign(importance=[f"{100 * v:.1f}%" for v in tbl["importance"]],
                      main_effect=[f"{v:.3f}" for v in tbl["main_effect"]])
    lines += [markdown_table(show[["method", "param", "importance", "main_effect", "trials", "grid_points"]],
                             index=False), ""]
    for method in tbl["method"].unique():
        path = importance_figure(tbl, method, out)
        top = tbl[tbl["method"] == method].iloc[0]
        line = f"- {method}: `{top['param']}` explains the largest share ({100 * top['importance']:.0f}%)."
        if top["grid_points"] < top["product_points"]:
            line += (f" Its grid is not a full product ({top['grid_points']} of {top['product_points']} "
                     "combinations run): fANOVA integrates the forest over the combinations never run too.")
        lines += [line, "", f"![importance of {method}]({path.name})", ""]
    return "\n".join(lines)
