"""Paper 003 (PLOT, Liu et al.): Table 1/2 as a figure and a table (test accuracy against
bag size, DLLP vs DLLP + PLOT hard / soft, intervals over seeds), the Table 3 ablation,
and Fig. 3's pseudo-label accuracy per epoch, from the ``llp-bag-size`` Parquet.

Accuracies are taken at each trial's last epoch (``final.*``): the paper reports the
model at the end of training, and stage two's labels come from training data only.
The ``best.*`` (best-validation epoch) numbers are given beside them. The gain of PLOT
over DLLP is paired by (bag size, seed): both trials share the stage-one model.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis import register_report
from analysis.figures import save_figure
from analysis.stats import bootstrap_ci, completed, fmt_mean_std, markdown_table, mean_std, paired_ttest

FINAL, BEST, BAG = "final.test_acc", "best.test_acc", "setting.bag_size"
DLLP, PLOT_HARD, PLOT_SOFT = "DLLP", "DLLP + PLOT (hard)", "DLLP + PLOT (soft)"
MAIN = (DLLP, PLOT_HARD, PLOT_SOFT)
ABLATION_BAG = 64
PAPER_BAGS = (16, 32, 64, 128)
ABLATION_ROWS = ("baseline (DLLP)", "L_CE", "L_SCE", "L_CE + OT", "L_SCE + OT", "L_CE + OT + MIXUP",
                 "L_SCE + OT + MIXUP")


def accuracy_by_bag_size(trials: pd.DataFrame, metric: str = FINAL) -> pd.DataFrame:
    """Per (label, bag size): mean, std, bootstrap 95% CI over seeds and the number of seeds."""
    t = completed(trials)
    t = t[t["label"].isin(MAIN)]
    rows = []
    for (label, bag), g in t.groupby(["label", BAG]):
        m, s = mean_std(g[metric])
        lo, hi = bootstrap_ci(g[metric])
        rows.append({"label": label, "bag_size": int(bag), "mean": m, "std": s, "lo": lo, "hi": hi, "n": len(g)})
    return pd.DataFrame(rows, columns=["label", "bag_size", "mean", "std", "lo", "hi", "n"])


def plot_gain(trials: pd.DataFrame, label: str, metric: str = FINAL) -> pd.DataFrame:
    """Per bag size: mean paired gain of ``label`` over DLLP (same seed), its CI and t-test p."""
    t = completed(trials)
    rows = []
    for bag, g in t.groupby(BAG):
        a = g[g["label"] == label].set_index("seed")[metric]
        b = g[g["label"] == DLLP].set_index("seed")[metric]
        seeds = a.index.intersection(b.index)
        if not len(seeds):
            continue
        d = a[seeds] - b[seeds]
        lo, hi = bootstrap_ci(d)
        rows.append({"bag_size": int(bag), "gain": d.mean(), "lo": lo, "hi": hi,
                     "p": paired_ttest(a[seeds], b[seeds]), "n": len(seeds)})
    return pd.DataFrame(rows, columns=["bag_size", "gain", "lo", "hi", "p", "n"])


def ablation(trials: pd.DataFrame, metric: str = FINAL) -> pd.DataFrame:
    """Table 3 at bag size 64, keyed on the switches (hp.ot, hp.loss, hp.mixup), not on labels."""
    t = completed(trials)
    t = t[t[BAG] == ABLATION_BAG]
    out = {}
    base = t[t["method"] == "dllp"]
    if len(base):
        out[ABLATION_ROWS[0]] = base[metric]
    plot = t[(t["method"] == "plot") & (t.get("hp.labels", "hard") == "hard")]
    for row in ABLATION_ROWS[1:]:
        ot, loss, mix = "OT" in row, ("sce" if "SCE" in row else "ce"), "MIXUP" in row
        sel = plot[(plot["hp.ot"].astype(bool) == ot) & (plot["hp.loss"] == loss)
                   & (plot["hp.mixup"].astype(bool) == mix)]
        if len(sel):
            out[row] = sel[metric]
    return pd.DataFrame({"test accuracy (mean ± std)": {k: fmt_mean_std(v) for k, v in out.items()},
                         "seeds": {k: len(v) for k, v in out.items()}})


def pseudo_label_curves(trials: pd.DataFrame, epochs: pd.DataFrame, label: str = PLOT_HARD) -> pd.DataFrame:
    """Per (bag size, epoch): mean over seeds of TD (prediction accuracy on the training set),
    TD_OT (accuracy of the OT labels) and the labels PLOT trains on, against the hidden labels."""
    t = completed(trials)
    t = t[t["label"] == label][["trial_id", BAG]]
    cols = [c for c in ("diag_train_acc", "diag_ot_acc", "diag_pseudo_acc") if c in epochs]
    if not len(t) or not cols:
        return pd.DataFrame()
    e = epochs.merge(t, on="trial_id")
    return e.groupby([BAG, "epoch"])[cols].mean().reset_index()


def stage_ends(trials: pd.DataFrame, epochs: pd.DataFrame, label: str = PLOT_HARD) -> pd.DataFrame:
    """Per bag size, mean over seeds: TD and TD_OT at the last DLLP epoch (does OT fix the
    teacher's labels?), and TD and the trained-on labels at the last epoch."""
    t = completed(trials)
    t = t[t["label"] == label][["trial_id", BAG]]
    e = epochs.merge(t, on="trial_id")
    if not len(e) or "stage" not in e:
        return pd.DataFrame()
    s1 = e[e["stage"] == 1].sort_values("epoch").groupby("trial_id").tail(1)
    end = e.sort_values("epoch").groupby("trial_id").tail(1)
    out = pd.DataFrame({
        "TD, end of DLLP": s1.groupby(BAG)["diag_train_acc"].mean(),
        "TD_OT, end of DLLP": s1.groupby(BAG)["diag_ot_acc"].mean(),
        "TD, last epoch": end.groupby(BAG)["diag_train_acc"].mean(),
        "labels trained on, last epoch": end.groupby(BAG)["diag_pseudo_acc"].mean(),
    }).sort_index()
    out.index = out.index.astype(int)
    out.index.name = f"bag size ({label})"
    return out


def figure_accuracy(table: pd.DataFrame, out: Path, name: str = "table1_accuracy_vs_bag_size.png") -> str:
    fig, ax = plt.subplots(figsize=(6, 4))
    for label in MAIN:
        g = table[table["label"] == label].sort_values("bag_size")
        if not len(g):
            continue
        ax.errorbar(g["bag_size"], g["mean"], yerr=[g["mean"] - g["lo"], g["hi"] - g["mean"]], marker="o",
                    capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(table["bag_size"].unique()))
    ax.set_xticklabels([str(b) for b in sorted(table["bag_size"].unique())])
    ax.set_xlabel("bag size")
    ax.set_ylabel("test accuracy (last epoch)")
    ax.set_title("Paper 003 Table 1 as a figure\n(mean over seeds, 95% bootstrap CI)", fontsize=10)
    ax.legend()
    save_figure(fig, out / name)
    return name


def figure_pseudo_labels(curves: pd.DataFrame, out: Path, name: str = "fig3_pseudo_label_accuracy.png") -> str:
    bags = sorted(curves[BAG].unique())
    fig, axes = plt.subplots(1, len(bags), figsize=(3.2 * len(bags), 3.2), squeeze=False, sharey=True)
    names = {"diag_train_acc": "TD (argmax of predictions)", "diag_ot_acc": "TD_OT (OT labels)",
             "diag_pseudo_acc": "labels trained on"}
    for ax, bag in zip(axes[0], bags):
        g = curves[curves[BAG] == bag]
        for c, text in names.items():
            if c in g and g[c].notna().any():
                ax.plot(g["epoch"], g[c], label=text, ls="--" if c == "diag_pseudo_acc" else "-")
        ax.set_title(f"bag size {int(bag)}")
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel("agreement with hidden labels")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Paper 003 Fig. 3: training-set label accuracy, DLLP then PLOT (hard), mean over seeds")
    save_figure(fig, out / name)
    return name


def ot_seconds(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds per epoch spent solving OT, per label and bag size (epochs that solved one)."""
    if "ot_s" not in epochs:
        return pd.DataFrame()
    t = completed(trials)[["trial_id", "label", BAG]]
    e = epochs.merge(t, on="trial_id")
    e = e[e["ot_s"].notna()]
    return e.pivot_table(index="label", columns=BAG, values="ot_s", aggfunc="mean")


@register_report("llp-bag-size")
def report(trials: pd.DataFrame, epochs: pd.DataFrame, out: Path) -> str:
    out = Path(out)
    lines = []
    table = accuracy_by_bag_size(trials)
    if not len(table):
        return "No completed trials of the main arms."
    lines += ["## Table 1: test accuracy against bag size", "",
              f"![accuracy vs bag size]({figure_accuracy(table, out)})", ""]
    for metric, what in ((FINAL, "last epoch"), (BEST, "best-validation epoch")):
        tab = accuracy_by_bag_size(trials, metric)
        tab["cell"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(tab["mean"], tab["std"])]
        wide = tab.pivot(index="label", columns="bag_size", values="cell").reindex([m for m in MAIN if m in
                                                                                    set(tab["label"])])
        wide.index.name = f"{what} (mean ± std)"
        lines += [markdown_table(wide), ""]
    for label in (PLOT_HARD, PLOT_SOFT):
        gain = plot_gain(trials, label)
        if len(gain):
            g = gain.set_index("bag_size")
            g.index.name = f"{label} − DLLP"
            lines += [f"Paired gain of {label} over DLLP (same seed, last epoch), 95% bootstrap CI, "
                      "two-tailed paired t-test:", "", markdown_table(g), ""]
            trend = []
            for sizes, what in ((PAPER_BAGS, "over the paper's bag sizes 16-128"), (None, "over all bag sizes run")):
                sel = gain if sizes is None else gain[gain["bag_size"].isin(sizes)]
                if len(sel) >= 2:
                    grows = bool(np.all(np.diff(sel.sort_values("bag_size")["gain"].to_numpy()) > 0))
                    trend.append(f"- mean gain increases with bag size {what}: **{'yes' if grows else 'no'}**")
            if trend:
                lines += trend + ["", "(The paper reports that the gain grows with the bag size.)", ""]
    abl = ablation(trials)
    if len(abl):
        abl.index.name = f"Table 3 (bag size {ABLATION_BAG}, last epoch)"
        lines += ["## Table 3: ablation", "", markdown_table(abl), ""]
    curves = pseudo_label_curves(trials, epochs)
    if len(curves):
        lines += ["## Fig. 3: pseudo-label accuracy per epoch", "",
                  f"![pseudo-label accuracy]({figure_pseudo_labels(curves, out)})", ""]
        lines += [markdown_table(stage_ends(trials, epochs)), ""]
    secs = ot_seconds(trials, epochs)
    if len(secs):
        secs.index.name = "seconds per OT solve"
        lines += ["## Time in OT per epoch", "", markdown_table(secs), ""]
    return "\n".join(lines)
