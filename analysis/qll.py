"""Paper 000 (Xie, He, Lu et al.): Fig. 3 (accuracy against pi1), Table VI (accuracy against
pi2) from the ``cpu-prior`` Parquet, and Table I (mean +- std per method and setting, best
in bold) from the ``qll-compare`` Parquet.

Accuracy is the clean test accuracy at each trial's best-validation epoch (``best.test_acc``,
validation is clean too). The paper reports the best test accuracy over epochs; that
number (``max over epochs of test_acc``, read from the epochs table) is shown beside it as
"max-epoch", since it is what the paper's tables hold but it picks the epoch on the test set.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis import register_report
from analysis.figures import save_figure
from analysis.stats import bootstrap_ci, completed, draw_curve, markdown_table, mean_std, paired_ttest

ACC = "best.test_acc"
MAX_ACC = "max_epoch_test_acc"
MIX_NAME = {"mixup": "Mixup", "patchmix": "PatchMix"}
METHOD_ORDER = ("ce", "bootstrap", "gce", "sce", "js", "cpu-kl", "cpu")


def with_max_epoch_acc(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Add the paper's 'best test accuracy' (max over epochs of test_acc) as a column."""
    out = trials.copy()
    if len(epochs) and "test_acc" in epochs:
        out[MAX_ACC] = out["trial_id"].map(epochs.groupby("trial_id")["test_acc"].max())
    else:
        out[MAX_ACC] = np.nan
    return out


def setting_name(dataset: str, mix: str, m) -> str:
    return f"{dataset} {MIX_NAME.get(mix, mix)} m={int(m)}"


def _pct(values) -> str:
    m, s = mean_std(values)
    return "n/a" if m != m else f"{100 * m:.2f} ± {100 * s:.2f}"


# -- cpu-prior ----------------------------------------------------------------------------------

def pi1_curve(trials: pd.DataFrame, metric: str = ACC) -> pd.DataFrame:
    """Per (dataset, mix, m, pi1): mean and bootstrap 95% CI over seeds (the pi1 arm, pi2 = m/c)."""
    t = completed(trials)
    t = t[t["label"] == "pi1"]
    rows = []
    for (ds, mix, m, pi1), g in t.groupby(["dataset", "setting.mix", "setting.m", "hp.pi1"]):
        lo, hi = bootstrap_ci(g[metric])
        rows.append({"dataset": ds, "mix": mix, "m": int(m), "pi1": float(pi1), "mean": g[metric].mean(),
                     "lo": lo, "hi": hi, "n": len(g)})
    return pd.DataFrame(rows)


def figure_3(trials: pd.DataFrame, out: Path, name: str = "fig3_acc_vs_pi1.png") -> Path:
    curve = pi1_curve(trials)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.set_xscale("log")
    for (ds, mix, m), g in curve.groupby(["dataset", "mix", "m"]):
        # grid points as a line and band; Optuna-sampled pi1 as points and a smoothed line
        draw_curve(ax, g["pi1"], g["mean"], g["lo"], g["hi"], label=setting_name(ds, mix, m), log=True, scale=100)
    ax.set_xlabel("π_p^(1) (prior of the positive term, eq. 5)")
    ax.set_ylabel("test accuracy (%) at the best-validation epoch")
    ax.set_title("Paper 000 Fig. 3: CPU vs π1 (π2 = m/c); mean, 95% bootstrap CI over seeds", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, out / name)


def flatness(curve: pd.DataFrame, trials: pd.DataFrame, metric: str = ACC) -> pd.DataFrame:
    """Accuracy (%) per pi1 (mean ± std over seeds) and how flat the curve is: the spread
    (max - min) of the means over the whole grid and over pi1 >= 0.1 (the default and up)."""
    t = completed(trials)
    t = t[t["label"] == "pi1"]
    rows = {}
    for (ds, mix, m), g in t.groupby(["dataset", "setting.mix", "setting.m"]):
        row = {f"π1={p:g}": _pct(gg[metric]) for p, gg in sorted(g.groupby("hp.pi1"))}
        c = curve[(curve["dataset"] == ds) & (curve["mix"] == mix) & (curve["m"] == m)]
        upper = c[c["pi1"] >= 0.1 - 1e-9]
        row["spread (pts)"] = f"{100 * (c['mean'].max() - c['mean'].min()):.1f}"
        row["spread π1≥0.1 (pts)"] = f"{100 * (upper['mean'].max() - upper['mean'].min()):.1f}" if len(upper) else ""
        rows[setting_name(ds, mix, m)] = row
    return pd.DataFrame(rows).T


def table_6(trials: pd.DataFrame, metric: str = ACC) -> pd.DataFrame:
    """Rows: setting; columns: pi2 values, from the pi2 arms (pi1 = 0.1). The pi2 in force is
    read from what the method reports (``final.pi2``), so an m/c default would land in its column."""
    t = completed(trials)
    t = t[t["label"].astype(str).str.startswith("pi2")]
    if "final.pi2" not in t or not len(t):
        return pd.DataFrame()
    t = t.assign(pi2=t["final.pi2"].round(6))
    rows = {}
    for (ds, mix, m), g in t.groupby(["dataset", "setting.mix", "setting.m"]):
        rows[setting_name(ds, mix, m)] = {f"π2={p:g}": _pct(gg[metric]) for p, gg in sorted(g.groupby("pi2"))}
    df = pd.DataFrame(rows).T
    return df.reindex(sorted(df.columns, key=lambda c: float(c[3:])), axis=1).fillna("")


@register_report("cpu-prior")
def report_cpu_prior(trials: pd.DataFrame, epochs: pd.DataFrame, out: Path) -> str:
    trials = with_max_epoch_acc(trials, epochs)
    done = completed(trials)
    if not len(done):
        return "No completed trials."
    fig = figure_3(done, out)
    curve = pi1_curve(done)
    lines = ["## Fig. 3: accuracy against π1", "", f"![Fig. 3]({fig.name})", "",
             "Test accuracy (%) per π1, mean ± std over seeds, and the spread of the mean curve "
             "(percentage points):", "",
             markdown_table(flatness(curve, done)) if len(curve) else "(no π1 sweep)", "",
             "## Table VI: accuracy (%) against π2 (π1 = 0.1), mean ± std over seeds", "",
             markdown_table(table_6(done)), "",
             "Same table with the paper's metric, the best test accuracy over epochs (max-epoch):", "",
             markdown_table(table_6(done, MAX_ACC)), ""]
    return "\n".join(lines)


# -- qll-compare ----------------------------------------------------------------------------------

def final_phase(trials: pd.DataFrame, main: bool = True) -> pd.DataFrame:
    """Completed final-phase rows; ``main``: only the Table I arms (label = method), not the
    sensitivity arms (labels such as 'cpu rect', 'ce r=100')."""
    t = completed(trials)
    if "phase" in t and (t["phase"] == "final").any():
        t = t[t["phase"] == "final"]
    if main and "label" in t:
        t = t[t["label"] == t["method"]]
    return t


def sensitivity(trials: pd.DataFrame) -> pd.DataFrame:
    """The sensitivity arms (another PatchMix layout, another Mixup r): CE and CPU side by side,
    test accuracy (%) at the best-validation epoch and CPU - CE paired by seed."""
    t = final_phase(trials, main=False)
    t = t[t["label"] != t["method"]]
    rows = {}
    for variant, g in t.groupby(t["label"].str.split(" ", n=1).str[1]):
        a = g[g["method"] == "cpu"].set_index("seed")[ACC]
        b = g[g["method"] == "ce"].set_index("seed")[ACC]
        seeds = sorted(set(a.index) & set(b.index))
        mix = g["setting.mix"].iloc[0]
        row = {"setting": f"{MIX_NAME.get(mix, mix)} m={int(g['setting.m'].iloc[0])}, {variant}",
               "CE": _pct(b), "CPU": _pct(a)}
        if seeds:
            d = 100 * (a[seeds].to_numpy() - b[seeds].to_numpy())
            row.update({"CPU − CE (pts)": f"{d.mean():+.2f}", "paired t-test p": paired_ttest(a[seeds], b[seeds]),
                        "seeds": len(seeds)})
        rows[variant] = row
    return pd.DataFrame(rows).T


def table_1(trials: pd.DataFrame, metric: str = ACC) -> pd.DataFrame:
    """Rows: methods (paper order); columns: settings and their Mean; best mean per column in bold."""
    t = final_phase(trials)
    t = t.assign(setting_col=[setting_name(d, x, m) for d, x, m in zip(t["dataset"], t["setting.mix"], t["setting.m"])])
    means = t.groupby(["method", "setting_col"])[metric].mean().unstack()
    cells = t.groupby(["method", "setting_col"])[metric].apply(_pct).unstack()
    order = [m for m in METHOD_ORDER if m in means.index] + [m for m in means.index if m not in METHOD_ORDER]
    means, cells = means.reindex(order), cells.reindex(order)
    for col in means.columns:
        best = means[col].idxmax()
        cells.loc[best, col] = f"**{cells.loc[best, col]}**"
    mean_col = 100 * means.mean(axis=1)
    cells["Mean"] = [f"**{v:.2f}**" if v == mean_col.max() else f"{v:.2f}" for v in mean_col]
    cells.index.name = "method"
    return cells


def cpu_vs_ce(trials: pd.DataFrame, metric: str = ACC, base: str = "ce") -> pd.DataFrame:
    """CPU minus the baseline per setting: mean gap over seeds (paired by seed) and the paired t-test p."""
    t = final_phase(trials)
    rows = {}
    for (ds, mix, m), g in t.groupby(["dataset", "setting.mix", "setting.m"]):
        a = g[g["method"] == "cpu"].set_index("seed")[metric]
        b = g[g["method"] == base].set_index("seed")[metric]
        seeds = sorted(set(a.index) & set(b.index))
        if not seeds:
            continue
        diff = 100 * (a[seeds].to_numpy() - b[seeds].to_numpy())
        rows[setting_name(ds, mix, m)] = {f"CPU − {base} (pts)": f"{diff.mean():+.2f} ± {diff.std(ddof=1) if len(diff) > 1 else 0:.2f}",
                                          "paired t-test p": paired_ttest(a[seeds], b[seeds]), "seeds": len(seeds)}
    return pd.DataFrame(rows).T


def chosen_hparams(trials: pd.DataFrame) -> pd.DataFrame:
    """The values select_then_seeds chose per method and setting (final-phase rows)."""
    t = final_phase(trials)
    keys = [k for k in ("train.lr", "hp.beta", "hp.pi1", "hp.alpha", "hp.q", "hp.k") if k in t]
    rows = {}
    for (method, ds, mix, m), g in t.groupby(["method", "dataset", "setting.mix", "setting.m"]):
        r = g.iloc[0]
        rows[f"{method} @ {setting_name(ds, mix, m)}"] = ", ".join(
            f"{k.split('.')[1]}={r[k]:g}" for k in keys if isinstance(r[k], (int, float)) and r[k] == r[k])
    return pd.DataFrame({"chosen on the seed-mean of validation accuracy": rows})


def figure_table_1(trials: pd.DataFrame, out: Path, name: str = "table1_accuracy.png") -> Path:
    t = final_phase(trials)
    t = t.assign(setting_col=[setting_name(d, x, m) for d, x, m in zip(t["dataset"], t["setting.mix"], t["setting.m"])])
    cols = sorted(t["setting_col"].unique())
    methods = [m for m in METHOD_ORDER if m in set(t["method"])] + sorted(set(t["method"]) - set(METHOD_ORDER))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(methods), 1)
    for i, meth in enumerate(methods):
        ms = [mean_std(t[(t["method"] == meth) & (t["setting_col"] == c)][ACC]) for c in cols]
        ax.bar(np.arange(len(cols)) + i * width, [100 * m for m, _ in ms], width, yerr=[100 * s for _, s in ms],
               label=meth, capsize=2)
    ax.set_xticks(np.arange(len(cols)) + 0.4 - width / 2)
    ax.set_xticklabels(cols, fontsize=8)
    ax.set_ylabel("test accuracy (%), best-val epoch")
    lo = 100 * t[ACC].min() if len(t) else 0
    ax.set_ylim(max(0, lo - 10), 100)
    ax.set_title("Paper 000 Table I: mean ± std over seeds", fontsize=9)
    ax.legend(fontsize=7, ncol=4)
    return save_figure(fig, out / name)


def chance_level_runs(trials: pd.DataFrame, metric: str = ACC) -> list[str]:
    """Final-phase runs that never left chance (accuracy below 2/c): they dominate a std over few seeds."""
    t = final_phase(trials)
    c = t["dataset"].map({"cifar100": 100}).fillna(10)
    low = t[t[metric] < 2.0 / c]
    return [f"{r['method']} {setting_name(r['dataset'], r['setting.mix'], r['setting.m'])} seed {r['seed']}: "
            f"{100 * r[metric]:.1f}%" for _, r in low.iterrows()]


FINAL_ACC = "final.test_acc"


def three_numbers(trials: pd.DataFrame) -> pd.DataFrame:
    """Per method and setting, test accuracy (%) three ways, mean ± std over seeds: at the
    best-validation epoch (the honest number), the best over epochs (the paper's, which
    picks the epoch on test) and at the last epoch (what overfitting leaves)."""
    t = final_phase(trials)
    rows = {}
    for (method, ds, mix, m), g in t.groupby(["method", "dataset", "setting.mix", "setting.m"]):
        rows[(method, setting_name(ds, mix, m))] = {
            "best-val epoch": _pct(g[ACC]), "best over epochs (paper)": _pct(g[MAX_ACC]),
            "final epoch": _pct(g[FINAL_ACC]) if FINAL_ACC in g else "n/a",
            "final − best-val (pts)": f"{100 * (g[FINAL_ACC] - g[ACC]).mean():+.2f}" if FINAL_ACC in g else "",
            "seeds": len(g)}
    out = pd.DataFrame(rows).T
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return out.sort_index(key=lambda idx: idx.map(lambda v: order.get(v, len(order)) if isinstance(v, str) else v))


def learning_curves(trials: pd.DataFrame, epochs: pd.DataFrame, methods=("ce", "cpu")) -> pd.DataFrame:
    """Mean over seeds of train_loss and test_acc per (method, setting, epoch), final-phase trials."""
    t = final_phase(trials)
    t = t[t["method"].isin(methods)]
    if not len(epochs) or not len(t):
        return pd.DataFrame()
    e = epochs[epochs["trial_id"].isin(t["trial_id"])].merge(
        t[["trial_id", "method", "dataset", "setting.mix", "setting.m"]], on="trial_id")
    e = e.assign(setting=[setting_name(d, x, m) for d, x, m in zip(e["dataset"], e["setting.mix"], e["setting.m"])])
    return e.groupby(["method", "setting", "epoch"])[["train_loss", "test_acc"]].mean().reset_index()


def figure_overfit(curves: pd.DataFrame, out: Path, name: str = "ce_overfit_curves.png") -> Path | None:
    """CE's and CPU's training loss and test accuracy against epoch, one column per setting."""
    if not len(curves):
        return None
    settings = sorted(curves["setting"].unique())
    fig, axes = plt.subplots(2, len(settings), figsize=(4.5 * len(settings), 5.5), squeeze=False)
    for j, st in enumerate(settings):
        for meth, g in curves[curves["setting"] == st].groupby("method"):
            axes[0, j].plot(g["epoch"], g["train_loss"], label=meth)
            axes[1, j].plot(g["epoch"], 100 * g["test_acc"], label=meth)
        axes[0, j].set_yscale("log")
        axes[0, j].set_title(st, fontsize=9)
        axes[0, j].set_ylabel("training loss (own loss, on quantized labels)", fontsize=7)
        axes[1, j].set_ylabel("clean test accuracy (%)", fontsize=7)
        axes[1, j].set_xlabel("epoch")
        axes[0, j].legend(fontsize=7)
    fig.suptitle("CE memorises the quantized labels (loss -> 0) and its test accuracy falls; mean over seeds",
                 fontsize=9)
    return save_figure(fig, out / name)


def overfit_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Per method and setting: training loss and test accuracy at quarter points of training."""
    if not len(curves):
        return pd.DataFrame()
    rows = {}
    for (meth, st), g in curves.groupby(["method", "setting"]):
        g = g.set_index("epoch")
        last = int(g.index.max())
        marks = sorted({max(1, round(last * f)) for f in (0.25, 0.5, 0.75, 1.0)})
        row = {f"loss@{e}": f"{g.loc[e, 'train_loss']:.3f}" for e in marks}
        row.update({f"test@{e}": f"{100 * g.loc[e, 'test_acc']:.1f}" for e in marks})
        row["peak test (epoch)"] = f"{100 * g['test_acc'].max():.1f} ({int(g['test_acc'].idxmax())})"
        rows[(meth, st)] = row
    return pd.DataFrame(rows).T


@register_report("qll-compare")
def report_qll_compare(trials: pd.DataFrame, epochs: pd.DataFrame, out: Path) -> str:
    trials = with_max_epoch_acc(trials, epochs)
    if not len(final_phase(trials)):
        return "No completed trials."
    fig = figure_table_1(trials, out)
    lines = ["## Table I: test accuracy (%) at the best-validation epoch, mean ± std over seeds (best in bold)", "",
             markdown_table(table_1(trials)), "", f"![Table I]({fig.name})", "",
             "### CPU against CE, paired by seed", "", markdown_table(cpu_vs_ce(trials)), "",
             "Runs stuck at chance level (accuracy < 2/c): "
             + ("; ".join(chance_level_runs(trials)) or "none") + ".", "",
             "### The paper's metric: best test accuracy over epochs (max-epoch)", "",
             markdown_table(table_1(trials, MAX_ACC)), "",
             "### Hyperparameters chosen on the validation split", "", markdown_table(chosen_hparams(trials)), "",
             "### Three numbers per run: best-validation epoch, best over epochs, final epoch", "",
             markdown_table(three_numbers(trials)), ""]
    sens = sensitivity(trials)
    if len(sens):
        lines += ["### Sensitivity: PatchMix layout and Mixup r (test accuracy % at the best-validation epoch)", "",
                  markdown_table(sens), ""]
    curves = learning_curves(trials, epochs)
    fig_o = figure_overfit(curves, out)
    if fig_o is not None:
        lines += ["### Does CE overfit the quantized labels?", "",
                  "Training loss (each method's own loss on the quantized labels) and clean test accuracy, "
                  "mean over seeds:", "", markdown_table(overfit_table(curves)), "", f"![CE overfits]({fig_o.name})", ""]
    return "\n".join(lines)
