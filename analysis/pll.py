"""Paper 001 (Xu, Lian et al.): Table 3 (lambda x M heatmap and per-group lines against M),
Table 1 (methods x psi x gamma, mean ± std over seeds) and Table 5 (measured per-epoch
cost of the label update), from the ``pll-lambda-m`` and ``pll-compare`` Parquet.

Accuracies are taken at the last epoch (``final.*``): the paper trains a fixed number of
epochs and reports the final model, and with a pre-estimation stage the best-validation
epoch could fall in the stage that only estimates the prior. Many / Medium / Few are the
groups of ``weaklab.settings.partial.many_medium_few`` (paper 001: 3/3/4 for 10 classes),
computed once by the setting and used by the engine's metrics that these tables read.
An arm whose rows span several hyperparameter values (pll-reg's lambda x M candidates in
pll-compare) is shown at the values with the best seed-mean validation accuracy, the same
rule as the claims (``analysis.claims.arm_by_seed``). Arms labelled ``oracle-prior ...`` are
diagnostics (the true class prior, hidden truth) and never enter a claim.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis import register_report
from analysis.figures import save_figure
from analysis.claims import NotRun, arm_by_seed
from analysis.stats import completed, markdown_table, mean_std, paired_ttest, stars

GROUP_COLS = {"All": "final.test_acc", "Many": "final.test_acc_many", "Medium": "final.test_acc_medium",
              "Few": "final.test_acc_few"}


def _col(df: pd.DataFrame, c: str) -> pd.Series:
    return df[c] if c in df else pd.Series(np.nan, index=df.index)


# -- Table 3 --------------------------------------------------------------------------------------

def lambda_m_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (lambda, M) of pll-reg: mean and std over seeds of every group accuracy."""
    reg = completed(trials)
    reg = reg[reg["method"] == "pll-reg"]
    rows = []
    for (lam, M), g in reg.groupby(["hp.lam", "hp.M"]):
        row = {"lambda": float(lam), "M": float(M), "n": len(g), "val": float(_col(g, "final.val_acc").mean())}
        for name, c in GROUP_COLS.items():
            row[name], row[f"{name}_std"] = mean_std(_col(g, c))
        rows.append(row)
    return pd.DataFrame(rows)


def proden_row(trials: pd.DataFrame) -> dict[str, float]:
    pro = completed(trials)
    pro = pro[pro["method"] == "proden"]
    out = {"n": len(pro)}
    for name, c in GROUP_COLS.items():
        out[name], out[f"{name}_std"] = mean_std(_col(pro, c))
    return out


def heatmap(tbl: pd.DataFrame, proden: dict, out: Path, name: str = "table3_lambda_m_heatmap.png") -> Path:
    grid = tbl.pivot(index="lambda", columns="M", values="All").sort_index(ascending=False)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * grid.shape[1], 1.2 + 0.6 * grid.shape[0]))
    im = ax.imshow(np.ma.masked_invalid(grid.to_numpy(dtype=float)), cmap="viridis", aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = grid.iat[i, j]
            if v == v:
                ax.text(j, i, f"{100 * v:.1f}", ha="center", va="center", color="w", fontsize=8)
    ax.set_xticks(range(grid.shape[1]), [f"{m:g}" for m in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{lam:g}" for lam in grid.index])
    ax.set_xlabel("M")
    ax.set_ylabel("λ")
    title = "pll-reg test accuracy (%), mean over seeds"
    if proden.get("n"):
        title += f"\nPRODEN (λ=1, M=0): {100 * proden['All']:.1f}"
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    return save_figure(fig, out / name)


def group_lines(tbl: pd.DataFrame, proden: dict, out: Path, name: str = "table3_groups_vs_M.png") -> Path:
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2), sharey=False)
    for ax, group in zip(axes, GROUP_COLS):
        for lam, g in tbl.groupby("lambda"):
            g = g.sort_values("M")
            ax.errorbar(g["M"], 100 * g[group], yerr=100 * g[f"{group}_std"], marker="o", ms=3, capsize=2,
                        label=f"λ={lam:g}")
        if proden.get("n"):
            ax.axhline(100 * proden[group], color="k", ls="--", lw=1, label="PRODEN")
        ax.set_title(group)
        ax.set_xlabel("M")
    axes[0].set_ylabel("test accuracy (%)")
    axes[-1].legend(fontsize=7)
    fig.suptitle("Paper 001 Table 3: accuracy per class group against M (mean ± std over seeds)", fontsize=9)
    return save_figure(fig, out / name)


def _pct(m: float, s: float) -> str:
    return "n/a" if m != m else f"{100 * m:.2f} ± {100 * s:.2f}"


@register_report("pll-lambda-m")
def report_lambda_m(trials: pd.DataFrame, epochs: pd.DataFrame, out: Path) -> str:
    tbl = lambda_m_table(trials)
    pro = proden_row(trials)
    if tbl.empty:
        return "No completed pll-reg trials."
    lines = ["## Table 3: influence of λ and M (pll-reg, eq. 5)", "",
             f"Setting: {_setting_line(trials)}. Test accuracy (%) at the last epoch, mean ± std over seeds.", ""]
    rows = {}
    for _, r in tbl.sort_values(["lambda", "M"], ascending=[False, True]).iterrows():
        rows[f"λ={r['lambda']:g}, M={r['M']:g}"] = {
            g: _pct(r[g], r[f"{g}_std"]) for g in GROUP_COLS} | {"seeds": int(r["n"])}
    if pro["n"]:
        rows["PRODEN (λ=1, M=0)"] = {g: _pct(pro[g], pro[f"{g}_std"]) for g in GROUP_COLS} | {"seeds": pro["n"]}
    lines += [markdown_table(pd.DataFrame(rows).T), ""]
    # (lambda, M) chosen on validation accuracy, never on test (the claims' rule)
    best = tbl.loc[tbl["val"].idxmax()]
    line = (f"Chosen on validation: λ={best['lambda']:g}, M={best['M']:g} (val {100 * best['val']:.2f}%), "
            f"test {100 * best['All']:.2f}%")
    if pro["n"]:
        done = completed(trials)
        a = done[(done["method"] == "pll-reg") & np.isclose(done["hp.lam"], best["lambda"])
                 & np.isclose(done["hp.M"], best["M"])][["seed", GROUP_COLS["All"]]]
        b = done[done["method"] == "proden"][["seed", GROUP_COLS["All"]]]
        both = a.merge(b, on="seed", suffixes=("", "_pro"))
        p = paired_ttest(both[GROUP_COLS["All"]], both[GROUP_COLS["All"] + "_pro"])
        line += (f" (PRODEN {100 * pro['All']:.2f}%, {100 * (best['All'] - pro['All']):+.2f} points; "
                 f"paired t-test over seeds p = {p:.3g}).")
    lines.append(line)
    for lam, g in tbl.groupby("lambda"):
        g = g.sort_values("M")
        m_star = g.loc[g["val"].idxmax(), "M"]
        lines.append(f"- λ={lam:g}: M chosen on validation = {m_star:g} (M/λ={m_star / lam:.2f}); All over M = "
                     + ", ".join(f"{100 * v:.1f}" for v in g["All"])
                     + "; Few over M = " + ", ".join(f"{100 * v:.1f}" for v in g["Few"]))
    heatmap(tbl, pro, out)
    group_lines(tbl, pro, out)
    lines += ["", "![λ x M heatmap](table3_lambda_m_heatmap.png)", "",
              "![accuracy per class group against M](table3_groups_vs_M.png)", ""]
    return "\n".join(lines)


def _setting_line(trials: pd.DataFrame) -> str:
    parts = [f"dataset {trials['dataset'].iloc[0]}"]
    for c, name in (("setting.psi", "ψ"), ("setting.gamma", "γ")):
        if c in trials:
            parts.append(f"{name} = " + "/".join(f"{v:g}" for v in sorted(trials[c].dropna().unique())))
    for c in ("train.arch", "train.epochs"):
        if c in trials:
            parts.append(f"{c.split('.')[1]} {trials[c].iloc[0]}")
    return ", ".join(parts)


# -- Table 1 and Table 5 ------------------------------------------------------------------------

METHOD_ORDER = ("cc", "proden", "solar", "pll-reg")
SELECT = "final.val_acc"
SLICE = ("setting.psi", "setting.gamma")


def _labels(done: pd.DataFrame) -> list[str]:
    return [m for m in METHOD_ORDER if m in set(done["label"])] + sorted(set(done["label"]) - set(METHOD_ORDER))


def _per_seed(rows: pd.DataFrame, metric: str) -> pd.Series:
    """One value per seed at the arm's validation-chosen hyperparameters (empty if none)."""
    try:
        return arm_by_seed(rows, metric=metric, select=SELECT, exclude=SLICE)
    except NotRun:
        return pd.Series(dtype=float)


def chosen_hp(rows: pd.DataFrame) -> str:
    """The (lambda, M) an arm's rows were taken at, e.g. 'λ=2, M=1' ('' when fixed or absent)."""
    if "hp.lam" not in rows or rows["hp.lam"].isna().all() or rows[["hp.lam", "hp.M"]].drop_duplicates().shape[0] < 2:
        return ""
    means = rows.groupby(["hp.lam", "hp.M"])[SELECT].mean()
    lam, M = sorted(means[means == means.max()].index)[0]
    return f"λ={lam:g}, M={M:g}"


def table_1(trials: pd.DataFrame, metric: str = "final.test_acc") -> pd.DataFrame:
    """Rows arms, columns (psi, gamma): mean ± std (%) over seeds; the paired t-test
    mark (* p<0.05, † p<0.01, ‡ p<0.001) compares each arm with pll-reg over seeds."""
    done = completed(trials)
    cols = sorted({(float(p), float(g)) for p, g in zip(done["setting.psi"], done["setting.gamma"])})
    out = {}
    for label in _labels(done):
        row = {}
        for psi, gamma in cols:
            at = done[np.isclose(done["setting.psi"], psi) & np.isclose(done["setting.gamma"], gamma)]
            cell = _per_seed(at[at["label"] == label], metric)
            ref = _per_seed(at[at["label"] == "pll-reg"], metric)
            m, s = mean_std(cell)
            mark = ""
            if label != "pll-reg" and len(ref) and len(cell):
                both = pd.concat([cell.rename("a"), ref.rename("b")], axis=1, join="inner")
                mark = stars(paired_ttest(both["a"], both["b"]))
            hp = chosen_hp(at[at["label"] == label])
            row[f"ψ={psi:g}, γ={gamma:g}"] = _pct(m, s) + mark + (f" ({hp})" if hp else "")
        out[label] = row
    return pd.DataFrame(out).T


def selection_table(trials: pd.DataFrame, epochs: pd.DataFrame, every: int = 10) -> pd.DataFrame:
    """Mean ``selected_frac`` (share of the training set selected in its last visit) per arm at
    every ``every``-th epoch: below 1 where the per-class quota binds."""
    done = completed(trials)
    if "selected_frac" not in epochs:
        return pd.DataFrame()
    ep = epochs.merge(done[["trial_id", "label"]], on="trial_id")
    last = int(ep["epoch"].max())
    marks = sorted({1, *range(every, last + 1, every), last})
    ep = ep[ep["epoch"].isin(marks)]
    tbl = ep.groupby(["label", "epoch"])["selected_frac"].mean().unstack("epoch")
    tbl.columns = [f"ep {c}" for c in tbl.columns]
    return tbl.map(lambda v: f"{v:.2f}")


def cost_table(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Per method: label-update seconds per epoch (pseudo labels of every step + prior update,
    timed inside the method), the whole epoch's seconds, and the label update's share."""
    done = completed(trials)
    ep = epochs.merge(done[["trial_id", "label"]], on="trial_id")
    if "label_update_s" not in ep:
        return pd.DataFrame()
    rows = {}
    for label in [m for m in METHOD_ORDER if m in set(ep["label"])] + sorted(set(ep["label"]) - set(METHOD_ORDER)):
        g = ep[ep["label"] == label]
        lu, es = g["label_update_s"].astype(float), _col(g, "epoch_s").astype(float)
        rows[label] = {"label update (ms/epoch)": f"{1000 * lu.mean():.2f} ± {1000 * lu.std(ddof=1):.2f}",
                       "epoch (s)": f"{es.mean():.3f}", "share of epoch": f"{100 * (lu / es).mean():.2f}%",
                       "epochs": len(g)}
    return pd.DataFrame(rows).T


def cost_figure(trials: pd.DataFrame, epochs: pd.DataFrame, out: Path, name: str = "table5_label_update_cost.png"):
    done = completed(trials)
    ep = epochs.merge(done[["trial_id", "label"]], on="trial_id")
    labels = [m for m in METHOD_ORDER if m in set(ep["label"])]
    means = [1000 * ep.loc[ep["label"] == m, "label_update_s"].mean() for m in labels]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(labels, means, color="tab:blue")
    ax.set_yscale("log")
    ax.set_ylabel("label update per epoch (ms, log)")
    ax.set_title("Paper 001 Table 5: measured label-update cost", fontsize=9)
    return save_figure(fig, out / name)


@register_report("pll-compare")
def report_compare(trials: pd.DataFrame, epochs: pd.DataFrame, out: Path) -> str:
    done = completed(trials)
    if done.empty:
        return "No completed trials."
    device = ", ".join(sorted(set(done["device"].astype(str)))) if "device" in done else "?"
    lines = ["## Table 1: test accuracy (%) at the last epoch, mean ± std over seeds", "",
             f"Setting: {_setting_line(trials)}. Marks: paired t-test over seeds against pll-reg "
             "(* p<0.05, † p<0.01, ‡ p<0.001).", "",
             markdown_table(table_1(trials)), "",
             "### Few-shot group (the third of classes with the fewest training images)", "",
             markdown_table(table_1(trials, "final.test_acc_few")), "",
             "### Many-shot group", "", markdown_table(table_1(trials, "final.test_acc_many")), ""]
    oracle = [lab for lab in set(done["label"]) if lab.startswith("oracle-prior")]
    if oracle:
        lines += ["Rows `oracle-prior ...` are a diagnostic: r is the true training class prior from the first "
                  "epoch (hidden truth), never estimated; they isolate the label update from the prior and are "
                  "in no claim.", ""]
    sel = selection_table(trials, epochs)
    if not sel.empty:
        lines += ["### Selected fraction per epoch (mean over trials; < 1 where the class quota binds)", "",
                  markdown_table(sel), ""]
    cost = cost_table(trials, epochs)
    if not cost.empty:
        cost_figure(trials, epochs, out)
        lines += [f"## Table 5: label-update cost per epoch (measured on {device})", "",
                  "Seconds spent computing pseudo labels in every step (eq. 5, eq. 1, or Sinkhorn) plus the "
                  "prior update (eq. 6), timed inside each method (CUDA events on GPU).", "",
                  markdown_table(cost), "", "![label-update cost](table5_label_update_cost.png)", ""]
    return "\n".join(lines)


# -- Table 2 ------------------------------------------------------------------------------------

@register_report("pll-ablation")
def report_ablation(trials: pd.DataFrame, epochs: pd.DataFrame, out: Path) -> str:
    from studies.pll_ablation import PAPER

    done = completed(trials)
    if done.empty:
        return "No completed trials."
    rows = {}
    for label in sorted(set(done["label"]), key=lambda x: (not x.startswith("pll-reg"), x)):
        g = done[done["label"] == label]
        key = label.replace("pll-reg ", "") if label.startswith("pll-reg ") else label
        paper = PAPER.get(key)
        rows[label] = {g_name: _pct(*mean_std(_col(g, c))) for g_name, c in GROUP_COLS.items()} | {
            "paper CIFAR10-LT / CIFAR100-LT": f"{paper[0]} / {paper[1]}" if paper else "-", "seeds": len(g)}
    lines = ["## Table 2: ablation of selection (S), mixup (MU) and consistency (CR)", "",
             f"Setting: {_setting_line(trials)}. Test accuracy (%) at the last epoch, mean ± std over seeds.", "",
             markdown_table(pd.DataFrame(rows).T), ""]
    sel = selection_table(trials, epochs)
    if not sel.empty:
        lines += ["### Selected fraction per epoch", "", markdown_table(sel), ""]
    return "\n".join(lines)
