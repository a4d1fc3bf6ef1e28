"""Paper 004 (BalanceMix) from the ``balancemix-delta-alpha`` Parquet: the δ x α mAP
heatmap per noise type (Tables 7-8), mAP by class group, the method-versus-baseline table
(Tables 1-3 shape), the Table 5 component ablation, label-management precision against
the hidden clean labels and against the noise floor (the share of the given labels, and of
the given positives, that are true), and the per-epoch cost of the GMM fits.

Numbers are last-epoch values (``final.*``), as the paper reports "last mAPs", averaged
over seeds (± std). The study runs select-then-seeds: the δ x α surface is the select
phase (every grid point, seed 0); every other table uses the final phase (all seeds), in
which "BalanceMix (val-selected)" is the (δ, α) with the best last-epoch validation mAP
per noise type. Without phases (a smoke run) the same choice is made here.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis import register_report
from analysis.figures import save_figure
from analysis.stats import completed, markdown_table, mean_std, paired_ttest

GRID_LABELS = ("balancemix", "balancemix-single-positive")
BASELINES = ("bce", "bce-mixup", "asl", "coteaching", "t-estimator", "ll-r", "ll-ct")
BASELINE_NAMES = {"bce": "BCE", "bce-mixup": "BCE + Mixup", "asl": "ASL", "coteaching": "Co-teaching",
                  "t-estimator": "T-estimator", "ll-r": "LL-R", "ll-ct": "LL-Ct"}
NOISE_ORDER = ("mislabel", "flip", "missing", "none")
GROUPS = ("many", "medium", "few")
ABLATION_ROWS = (("Default (BCE)", "bce"), ("+ random sampler (Mixup)", "bce-mixup"),
                 ("+ minority sampler (eq. 4)", "abl:+minority-sampler"),
                 ("+ clean labels (eq. 8)", "abl:+clean-labels"),
                 ("+ re-labeled labels (eq. 9)", "abl:+relabeled-labels"),
                 ("+ ambiguous labels (eq. 10) = BalanceMix (val-selected δ, α)", "full"))
PAPER_ALPHA, PAPER_DELTA, PAPER_DELTA_MISSING = 4.0, 0.975, 0.55


def _noises(df: pd.DataFrame) -> list[str]:
    present = set(df["setting.noise"].dropna())
    return [n for n in NOISE_ORDER if n in present] + sorted(present - set(NOISE_ORDER))


def _grid(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["label"].isin(GRID_LABELS)]


def _phase(trials: pd.DataFrame, phase: str) -> pd.DataFrame:
    """Rows of a select-then-seeds ``phase`` ('select' | 'final'); all rows when the run had no phases."""
    if "phase" in trials and (trials["phase"] == phase).any():
        return trials[trials["phase"] == phase]
    return trials


def paper_point(trials: pd.DataFrame) -> pd.DataFrame:
    """BalanceMix grid rows at the paper's defaults (α = 4; δ = 0.975, or 0.55 for missing labels)."""
    g = _grid(trials)
    delta = np.where(g["setting.noise"] == "missing", PAPER_DELTA_MISSING, PAPER_DELTA)
    return g[np.isclose(g["hp.mixup_alpha"], PAPER_ALPHA) & np.isclose(g["hp.delta"], delta)]


def val_selected(trials: pd.DataFrame) -> pd.DataFrame:
    """BalanceMix rows at the (δ, α) with the best mean last-epoch val mAP, per noise type
    (in a select-then-seeds run the final phase holds only that point)."""
    g = _grid(_phase(trials, "final"))
    out = []
    for _, gn in g.groupby("setting.noise"):
        means = gn.groupby(["hp.delta", "hp.mixup_alpha"])["final.val_map"].mean()
        if means.notna().any():
            d, a = means.idxmax()
            out.append(gn[(gn["hp.delta"] == d) & (gn["hp.mixup_alpha"] == a)])
    return pd.concat(out) if out else g.iloc[:0]


def delta_alpha_surface(trials: pd.DataFrame, noise: str, metric: str = "final.test_map") -> pd.DataFrame:
    """Mean ``metric`` over seeds, rows δ, columns α, for one noise type (select phase)."""
    g = _grid(_phase(trials, "select"))
    g = g[g["setting.noise"] == noise]
    return g.pivot_table(index="hp.delta", columns="hp.mixup_alpha", values=metric, aggfunc="mean").sort_index()


def heatmap_figure(trials: pd.DataFrame, out: Path, name: str = "delta_alpha_heatmap.png") -> Path | None:
    noises = [n for n in _noises(_grid(trials)) if not delta_alpha_surface(trials, n).empty]
    if not noises:
        return None
    fig, axes = plt.subplots(1, len(noises), figsize=(4.2 * len(noises), 3.6), squeeze=False)
    for ax, noise in zip(axes[0], noises):
        s = delta_alpha_surface(trials, noise) * 100
        im = ax.imshow(s.values, cmap="viridis", aspect="auto", origin="lower")
        ax.set_xticks(range(s.shape[1]), [f"{a:g}" for a in s.columns])
        ax.set_yticks(range(s.shape[0]), [f"{d:g}" for d in s.index])
        for i in range(s.shape[0]):
            for j in range(s.shape[1]):
                if np.isfinite(s.values[i, j]):
                    ax.text(j, i, f"{s.values[i, j]:.1f}", ha="center", va="center", color="w", fontsize=8)
        ax.set_xlabel("alpha (eq. 5)")
        ax.set_ylabel("delta (eq. 9)")
        ax.set_title(f"test mAP (last epoch), {noise}")
        fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, out / name)


def method_rows(trials: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Display name -> final-phase trials of the compared methods (Tables 1-3)."""
    final = _phase(trials, "final")
    rows = {name: final[final["label"] == label] for label, name in BASELINE_NAMES.items()}
    rows["BalanceMix (val-selected)"] = val_selected(trials)
    return {k: v for k, v in rows.items() if len(v)}


def chosen_lines(trials: pd.DataFrame) -> list[str]:
    """The (δ, α) chosen on validation per noise type."""
    bm = val_selected(trials)
    searched = set(_grid(_phase(trials, "select"))["setting.noise"])  # every noise type when no select phase
    return [f"- {noise}: δ = {g['hp.delta'].iloc[0]:g}, α = {g['hp.mixup_alpha'].iloc[0]:g} "
            f"({g['seed'].nunique()} seed(s){'' if noise in searched else '; the paper’s point, not searched'})"
            for noise, g in bm.groupby("setting.noise")]


def _cell(values: pd.Series) -> str:
    m, s = mean_std(values)
    return "" if m != m else f"{100 * m:.1f} ± {100 * s:.1f}"


def comparison_table(trials: pd.DataFrame) -> str:
    """Tables 1-3 shape: per noise type, All / Many / Medium / Few last-epoch test mAP (x100)."""
    rows = method_rows(trials)
    noises = _noises(trials)
    cols = {}
    for noise in noises:
        for metric, short in (("final.test_map", "All"), *((f"final.test_map_{g}", g.capitalize()) for g in GROUPS)):
            if metric in trials:
                cols[f"{noise} {short}"] = (noise, metric)
    table = pd.DataFrame({name: {c: _cell(df[df["setting.noise"] == n][m]) for c, (n, m) in cols.items()}
                          for name, df in rows.items()}).T
    table.index.name = "method"
    return markdown_table(table)


def significance_lines(trials: pd.DataFrame) -> list[str]:
    """Paired (by seed) two-tailed t-tests of BalanceMix (val-selected) against each baseline."""
    bm = val_selected(trials)
    final = _phase(trials, "final")
    lines = []
    for noise in _noises(bm):
        a = bm[bm["setting.noise"] == noise].set_index("seed")["final.test_map"]
        for base in BASELINES:
            b = final[(final["label"] == base) & (final["setting.noise"] == noise)]
            b = b.set_index("seed")["final.test_map"]
            common = a.index.intersection(b.index)
            if len(common):
                diff = 100 * float((a[common] - b[common]).mean())
                p = paired_ttest(a[common].values, b[common].values)
                lines.append(f"- {noise}: BalanceMix − {BASELINE_NAMES[base]} = {diff:+.1f} mAP points over {len(common)} "
                             f"seed(s), paired t-test p = {p:.3g}")
    return lines


def group_figure(trials: pd.DataFrame, out: Path, name: str = "map_by_class_group.png") -> Path | None:
    rows = method_rows(trials)
    noises = _noises(trials)
    if not rows or not noises or "final.test_map_few" not in trials:
        return None
    fig, axes = plt.subplots(1, len(noises), figsize=(4.5 * len(noises), 3.6), squeeze=False, sharey=True)
    width = 0.8 / len(rows)
    for ax, noise in zip(axes[0], noises):
        for i, (label, df) in enumerate(rows.items()):
            d = df[df["setting.noise"] == noise]
            vals = [100 * d[f"final.test_map_{g}"].mean() if f"final.test_map_{g}" in d else np.nan for g in GROUPS]
            ax.bar(np.arange(3) + i * width, vals, width, label=label)
        ax.set_xticks(np.arange(3) + width * (len(rows) - 1) / 2, GROUPS)
        ax.set_title(f"test mAP by class group, {noise}")
    axes[0][0].set_ylabel("last-epoch test mAP (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(rows), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))  # room for the legend under the panels
    return save_figure(fig, out / name, tight=False)


def ablation_table(trials: pd.DataFrame) -> str:
    """Table 5: components added one at a time; gain over the previous row in parentheses."""
    noises = _noises(trials)
    final = _phase(trials, "final")
    means: dict[str, dict[str, float]] = {}
    for name, label in ABLATION_ROWS:
        if label == "full":
            df = val_selected(trials)
        else:
            df = final[final["label"].isin((label, label + "-sp"))]
        if len(df):
            means[name] = {n: 100 * df[df["setting.noise"] == n]["final.test_map"].mean() for n in noises}
    if len(means) < 2:
        return "No ablation trials."
    table, prev = {}, None
    for name, row in means.items():
        overall = np.nanmean(list(row.values())) if row else np.nan
        cells = {**row, "Overall (mean)": overall}
        table[name] = {k: (f"{v:.1f}" if prev is None or prev.get(k) != prev.get(k) else
                           f"{v:.1f} ({v - prev[k]:+.1f})") if v == v else "" for k, v in cells.items()}
        prev = cells
    df = pd.DataFrame(table).T
    df.index.name = "component"
    return markdown_table(df)


def memorisation_table(trials: pd.DataFrame) -> str:
    """Per method and noise type: test mAP at the best-validation epoch against the last
    epoch (x100); a drop shows the noisy labels being memorised late in training."""
    final = _phase(trials, "final")
    rows = {}
    for name, df in method_rows(trials).items():
        if "best.test_map" not in df:
            continue
        row = {}
        for noise in _noises(final):
            d = df[df["setting.noise"] == noise]
            if len(d):
                b, l = 100 * d["best.test_map"].mean(), 100 * d["final.test_map"].mean()
                row[noise] = f"{b:.1f} -> {l:.1f} ({l - b:+.1f})"
        rows[name] = row
    if not rows:
        return "No trials."
    df = pd.DataFrame(rows).T
    df.index.name = "method: best-val epoch -> last epoch"
    return markdown_table(df)


def management_table(trials: pd.DataFrame, epochs: pd.DataFrame) -> str:
    """Label-wise management against the hidden clean labels (last epoch), and per-epoch costs."""
    bm = val_selected(trials)
    if bm.empty:
        return "No BalanceMix trials."
    ep = epochs.merge(bm[["trial_id", "setting.noise"]], on="trial_id")
    rows = {}
    for noise in _noises(bm):
        t = bm[bm["setting.noise"] == noise]
        e = ep[ep["setting.noise"] == noise]
        row = {}
        for col, short in (("final.diag_clean_precision", "clean precision"),
                           ("final.diag_clean_recall", "clean recall"),
                           ("final.diag_relabel_precision", "relabel precision"),
                           ("final.relabel_frac", "relabelled share"),
                           ("final.diag_noisy_label_acc", "given-label acc"),
                           ("final.diag_refined_label_acc", "refined-label acc")):
            if col in t:
                m, _ = mean_std(t[col])
                row[short] = "" if m != m else f"{m:.3f}"
        for col, short in (("gmm_s", "GMM fit s/epoch"), ("relabel_s", "relabel s/epoch"),
                           ("method_s", "end_epoch s/epoch"), ("epoch_s", "epoch s")):
            # mean over the epochs that ran the step; the last epoch's value if epochs lack the column
            v = e[col].dropna() if col in e else t.get(f"final.{col}", pd.Series(dtype=float)).dropna()
            if len(v):
                row[short] = f"{v.mean():.3f}"
        rows[noise] = row
    df = pd.DataFrame(rows).T
    df.index.name = "noise"
    return markdown_table(df)


def positive_floor(*, pos_error: float, neg_error: float, pn_imb: float) -> float:
    """Share of the given positives that are truly positive, from the realised error rates
    of the positives and negatives and the clean negatives / positives ratio: clean
    positives (1 - pos_error) P against flipped-in negatives neg_error * PN * P."""
    kept = 1.0 - pos_error
    return kept / (kept + neg_error * pn_imb)


#: paper 004 (sec. "Imbalanced and Noisy Labels"): positive-negative ratios of its datasets
PAPER_PN = {"Pascal-VOC": 13.0, "MS-COCO": 27.0}


def noise_floor_table(trials: pd.DataFrame) -> str:
    """Per noise type: the noise floor of clean-label selection, from the realised weak labels
    (``info.*``), beside the val-selected BalanceMix's GMM clean-selection precision.

    A selection that cannot tell clean from noisy labels has the floor's precision: over all
    labels that is the given-label accuracy, over the given positives the share of them that
    are true. Under random flipping the second falls with PN_Imb, the paper's datasets'
    values (same ρ, by the formula) in the last columns."""
    done = completed(trials)
    need = ("info.pos_error_rate", "info.neg_error_rate", "info.clean_pn_imb")
    if not set(need) <= set(done):
        return "No noise facts (info.*) in the Parquet."
    bm = val_selected(trials)
    rows = {}
    for noise in _noises(done):
        d = done[done["setting.noise"] == noise]
        pe, ne, pn = (float(d[c].mean()) for c in need)
        rho = float(d["setting.rho"].iloc[0]) if "setting.rho" in d else float("nan")
        row = {"ρ": rho if noise in ("mislabel", "flip") else float("nan"), "clean PN_Imb": pn,
               "pos error": pe, "neg error": ne,
               "given-label acc (floor, all labels)": 1.0 - float(d["info.label_error_rate"].mean())
               if "info.label_error_rate" in d else float("nan"),
               "true share of given positives (floor, positives)": positive_floor(pos_error=pe, neg_error=ne, pn_imb=pn)}
        b = bm[bm["setting.noise"] == noise] if len(bm) else bm
        for col, short in (("final.diag_clean_precision", "GMM clean precision, all"),
                           ("final.diag_clean_precision_pos", "GMM clean precision, positives")):
            row[short] = float(b[col].mean()) if len(b) and col in b else float("nan")
        if noise == "flip":
            for name, v in PAPER_PN.items():
                row[f"floor, positives, {name} (PN {v:g})"] = positive_floor(pos_error=rho, neg_error=rho, pn_imb=v)
        rows[noise] = row
    df = pd.DataFrame(rows).T
    df.index.name = "noise"
    return markdown_table(df.astype(float).round(3))


@register_report("balancemix-delta-alpha")
def report(trials: pd.DataFrame, epochs: pd.DataFrame, out: Path) -> str:
    done = completed(trials)
    if done.empty:
        return "No completed trials."
    out = Path(out)
    lines = ["## δ x α (Tables 7-8): last-epoch test mAP, mean over seeds", ""]
    heat = heatmap_figure(done, out)
    if heat is not None:
        lines += [f"![delta x alpha]({heat.name})", ""]
    for noise in _noises(_grid(done)):
        s = delta_alpha_surface(done, noise) * 100
        if not s.empty:
            s.index = [f"δ={d:g}" for d in s.index]
            s.columns = [f"α={a:g}" for a in s.columns]
            s.index.name = noise
            lines += [markdown_table(s.round(1)), ""]
    lines += ["## BalanceMix against the baselines (Tables 1-3 shape), last-epoch test mAP x100", "",
              "BalanceMix's (δ, α), chosen on validation:", *chosen_lines(done), "",
              comparison_table(done), ""]
    lines += significance_lines(done) + [""]
    grp = group_figure(done, out)
    if grp is not None:
        lines += [f"![mAP by class group]({grp.name})", ""]
    lines += ["## Memorisation: test mAP at the best-validation epoch and at the last epoch (x100)", "",
              memorisation_table(done), ""]
    lines += ["## Component ablation (Table 5), last-epoch test mAP x100", "", ablation_table(done), ""]
    lines += ["## Label-wise management vs hidden clean labels, and per-epoch cost (val-selected δ, α)", "",
              management_table(done, epochs), ""]
    lines += ["## Noise floor: the precision of a selection that cannot tell clean from noisy labels", "",
              "Random flipping at rate ρ (paper 004: the same ρ for positives and negatives) makes "
              "ρ·PN_Imb of every positive's worth of negatives positive, so on data with many more negatives "
              "than positives most given positives are wrong, and a GMM on per-label losses that keeps the "
              "'clean' ones can at best start from that share. NaN: the column is not in this Parquet "
              "(positives: diagnostics from issue 28 on).", "", noise_floor_table(done), ""]
    return "\n".join(lines)
