"""How much of its best score a method keeps when its hyperparameters are not tuned, and
``weaklab compare``: every method of several studies side by side on it, with its cost.

For one method (a ``label``) at one value of the study's setting axes, each grid point's
score is its metric averaged over seeds; the robustness is the **median** and the **10th
percentile** of ``score(point) / score(best point)`` over the method's own grid: what a
user keeps with a grid value picked blindly, and with an unlucky one. 1 means flat.

The interval is a percentile bootstrap over seeds, resampled together across grid points
(a seed fixes the data split and the weak labels, so the points of one seed are paired),
with the best point re-found on each resample's means: the seed noise of the number. The
grid points are not resampled: they are the study's design (the paper's values), not a
sample, and a median over a resampled 7-point grid swings between its extremes. With one
seed per point (select-then-seeds studies) there is no interval.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.beyond import Metric, fmt_point, grid_rows, study_metric, study_name, study_settings, varying
from analysis.figures import save_figure
from analysis.stats import completed, markdown_table
from weaklab.registry import ConfigError


def robustness(rows: pd.DataFrame, metric: Metric, params: list[str], *, n_boot: int = 2000, level: float = 0.95,
               seed: int = 0) -> dict:
    """Median and 10th percentile of score/best over the grid ``params`` span in ``rows``,
    with bootstrap intervals. ``rows`` are one method at one setting."""
    rows = rows.assign(_score=metric.score(rows[metric.column]))
    if params:
        table = rows.pivot_table(index=params, columns="seed", values="_score", aggfunc="mean")
    else:
        table = rows.groupby("seed")["_score"].mean().to_frame().T
    m = table.to_numpy(dtype=float)  # grid points x seeds
    means = np.nanmean(m, axis=1)
    best_i = int(np.nanargmax(means))
    best = means[best_i]
    if not best > 0:
        raise ValueError(f"best {metric.label} is {best}: ratios need a positive score")
    rel = means / best
    out = {"grid_points": m.shape[0], "seeds": m.shape[1], "best": best,
           "best_point": fmt_point(dict(zip(params, np.atleast_1d(table.index[best_i])))) if params else "",
           "median": float(np.nanmedian(rel)), "p10": float(np.nanquantile(rel, 0.1))}
    if m.shape[0] < 2:
        return {**out, "median": np.nan, "p10": np.nan, "median_lo": np.nan, "median_hi": np.nan,
                "p10_lo": np.nan, "p10_hi": np.nan}
    if m.shape[1] < 2:
        return {**out, "median_lo": np.nan, "median_hi": np.nan, "p10_lo": np.nan, "p10_hi": np.nan}
    rng = np.random.default_rng(seed)
    s_idx = rng.integers(0, m.shape[1], size=(n_boot, m.shape[1]))
    with warnings.catch_warnings():  # a point whose seeds all failed stays NaN in every resample
        warnings.simplefilter("ignore", RuntimeWarning)
        boot_means = np.nanmean(m[:, s_idx], axis=2).T  # n_boot x points
        boot_rel = boot_means / np.nanmax(boot_means, axis=1, keepdims=True)
    a = (1 - level) / 2
    med_b, p10_b = np.nanmedian(boot_rel, axis=1), np.nanquantile(boot_rel, 0.1, axis=1)
    return {**out, "median_lo": float(np.nanquantile(med_b, a)), "median_hi": float(np.nanquantile(med_b, 1 - a)),
            "p10_lo": float(np.nanquantile(p10_b, a)), "p10_hi": float(np.nanquantile(p10_b, 1 - a))}


def robustness_table(trials: pd.DataFrame, metric: Metric, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (method, setting value) of a study: robustness, its best score against the
    study's best at the same setting, and its cost."""
    rows = grid_rows(trials, metric)
    settings = study_settings(trials)
    done = completed(trials)
    out = []
    for key, g in rows.groupby(["label", *settings], sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        label, setting = key[0], dict(zip(settings, key[1:]))
        params = [p for p in varying(g) if not p.startswith("setting.")]
        r = robustness(g, metric, params, n_boot=n_boot, seed=seed)
        same = done[done["label"] == label]
        for c, v in setting.items():
            same = same[same[c] == v]
        best_rows = g
        for p, v in zip(params, _best_values(g, metric, params)):
            best_rows = best_rows[best_rows[p] == v]
        # the median: the first trial of each worker process also pays its imports
        cpu = best_rows["cost.cpu_s"].astype(float).median() if "cost.cpu_s" in best_rows else np.nan
        out.append({"study": study_name(trials), "method": label, "setting": fmt_point(setting), **r,
                    "searched": ", ".join(p.split(".", 1)[-1] for p in params), "metric": metric.label,
                    "failed": _failed(trials, label, setting),
                    "cpu_s_per_trial": cpu, "grid_cpu_h": float(same["cost.cpu_s"].astype(float).sum() / 3600)
                    if "cost.cpu_s" in same and same["cost.cpu_s"].notna().any() else np.nan})
    tbl = pd.DataFrame(out)
    if tbl.empty:
        return tbl
    study_best = tbl.groupby("setting")["best"].transform("max")
    tbl["best_vs_study"] = tbl["best"] / study_best
    tbl["best_per_cpu_h"] = tbl["best"] / (tbl["cpu_s_per_trial"] / 3600)
    return tbl


def _best_values(g: pd.DataFrame, metric: Metric, params: list[str]) -> tuple:
    if not params:
        return ()
    means = g.assign(_score=metric.score(g[metric.column])).groupby(params)["_score"].mean()
    best = means.idxmax()
    return best if isinstance(best, tuple) else (best,)


def _failed(trials: pd.DataFrame, label: str, setting: dict) -> int:
    t = trials[(trials["label"] == label) & (trials["status"] == "failed")]
    for c, v in setting.items():
        t = t[t[c] == v]
    return len(t)


def _ci(v: float, lo: float, hi: float) -> str:
    if v != v:
        return "n/a"
    return f"{v:.3f} (one seed)" if lo != lo else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def _show(tbl: pd.DataFrame, *, with_study: bool) -> pd.DataFrame:
    cols = {"study": tbl["study"]} if with_study else {}
    cols.update({"method": tbl["method"], "setting": tbl["setting"], "searched": tbl["searched"],
                 "points x seeds": [f"{p} x {s}" for p, s in zip(tbl["grid_points"], tbl["seeds"])],
                 "best": [f"{v:.4f}" for v in tbl["best"]], "best point": tbl["best_point"],
                 "best / study best": [f"{v:.3f}" for v in tbl["best_vs_study"]],
                 "median kept [95% CI]": [_ci(*r) for r in tbl[["median", "median_lo", "median_hi"]].to_numpy()],
                 "p10 kept [95% CI]": [_ci(*r) for r in tbl[["p10", "p10_lo", "p10_hi"]].to_numpy()],
                 "CPU s / trial": [f"{v:.3g}" if v == v else "n/a" for v in tbl["cpu_s_per_trial"]],
                 "best per CPU-h": [f"{v:.3g}" if v == v else "n/a" for v in tbl["best_per_cpu_h"]],
                 "grid CPU-h": [f"{v:.3f}" if v == v else "n/a" for v in tbl["grid_cpu_h"]],
                 "failed": tbl["failed"]})
    return pd.DataFrame(cols)


def robustness_section(trials: pd.DataFrame, metric: Metric) -> str:
    tbl = robustness_table(trials, metric)
    lines = ["### Robustness: the share of its best score a method keeps over its own grid", ""]
    if tbl.empty or tbl["median"].isna().all():
        return "\n".join(lines + ["Every method here has one grid point: nothing to measure robustness over.", ""])
    lines += [f"Per method and setting: `{metric.label}` averaged over seeds at each grid point, divided by the "
              "best grid point's; the median and 10th percentile over the grid, with 95% bootstrap intervals "
              "over seeds (n/a with one seed per point). `best / study best` compares with the best method at the same "
              "setting; `best per CPU-h` is the best score over the CPU hours of one trial at the best point (median over its "
              "seeds; `grid CPU-h` is the whole grid's).", "",
              markdown_table(_show(tbl, with_study=False), index=False), ""]
    return "\n".join(lines)


# -- weaklab compare ------------------------------------------------------------------------------

def load_for_compare(study_dir: str) -> tuple[pd.DataFrame, Metric]:
    """A study's trials and metric, or a one-line ConfigError naming the folder and why not."""
    from weaklab.store import load_study

    allowed = "a study folder written by `weaklab run` (RESULTS/STUDY with trials/*.parquet)"
    if not os.path.isdir(os.path.join(study_dir, "trials")):
        raise ConfigError(f"study_dir={study_dir!r} is not allowed: it holds no trials/ folder; expected {allowed}")
    trials, _ = load_study(study_dir)
    if trials.empty or not len(completed(trials)):
        raise ConfigError(f"study_dir={study_dir!r} is not allowed: no completed trial in its trials/; "
                          f"expected {allowed}")
    metric = study_metric(trials)
    if metric is None:
        raise ConfigError(f"study_dir={study_dir!r} is not allowed: its trials have no test metric at the "
                          f"best-validation epoch (best.test_*)")
    return trials, metric


def compare_table(study_dirs: list[str], *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    tables = []
    for d in study_dirs:
        trials, metric = load_for_compare(d)
        tbl = robustness_table(trials, metric, n_boot=n_boot, seed=seed)
        if tbl.empty or tbl["median"].isna().all():
            raise ConfigError(f"study_dir={d!r} (study {study_name(trials)}) is not allowed: every method has one "
                              "grid point, nothing to measure robustness over; expected a study whose methods "
                              "search a grid")
        tables.append(tbl.assign(study_dir=os.path.abspath(d)))
    return pd.concat(tables, ignore_index=True)


def compare_figure(tbl: pd.DataFrame, path: Path) -> Path:
    """Three panels, one row per (study, method, setting): robustness (median bar, 10th
    percentile dot, 95% intervals), best against its study's best, best per CPU-hour."""
    names = [f"{s}: {m}" + (f" ({st})" if st else "") for s, m, st in zip(tbl["study"], tbl["method"], tbl["setting"])]
    y = np.arange(len(tbl))[::-1]
    studies = list(dict.fromkeys(tbl["study"]))
    colors = {s: plt.cm.tab10(i % 10) for i, s in enumerate(studies)}
    c = [colors[s] for s in tbl["study"]]
    fig, axes = plt.subplots(1, 3, figsize=(14, 1.2 + 0.32 * len(tbl)), sharey=True,
                             gridspec_kw={"width_ratios": [2, 1, 1]})
    ax = axes[0]
    med = tbl["median"].to_numpy(dtype=float)
    ax.barh(y, np.nan_to_num(med), color=c, alpha=0.8,
            xerr=np.abs(np.vstack([med - tbl["median_lo"], tbl["median_hi"] - med])), capsize=2,
            error_kw={"lw": 0.8}, label="median over the grid")
    p10 = tbl["p10"].to_numpy(dtype=float)
    ax.errorbar(p10, y, xerr=np.abs(np.vstack([p10 - tbl["p10_lo"], tbl["p10_hi"] - p10])), fmt="o", color="k",
                ms=3, lw=0.8, capsize=2, label="10th percentile")
    for yi, v in zip(y, med):
        if v != v:
            ax.text(0.01, yi, "one grid point", va="center", fontsize=7, color="0.4")
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("score / best grid point of the same method")
    ax.set_title("Robustness: share of the best kept, untuned", fontsize=9, loc="left")
    ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False)
    axes[1].barh(y, tbl["best_vs_study"], color=c)
    axes[1].set_xlim(min(0.9, float(np.nanmin(tbl["best_vs_study"]))) - 0.02, 1.0)
    axes[1].set_xlabel("best / study's best at that setting")
    axes[1].set_title("Best score", fontsize=9)
    per_h = tbl["best_per_cpu_h"].to_numpy(dtype=float)
    axes[2].barh(y, np.nan_to_num(per_h), color=c)
    wide = np.isfinite(per_h).any() and np.nanmax(per_h) > 20 * np.nanmin(per_h[per_h > 0], initial=np.inf)
    if wide:
        axes[2].set_xscale("log")
    axes[2].set_xlabel("best score per CPU-hour of one trial" + (" (log)" if wide else ""))
    axes[2].set_title("Cost", fontsize=9)
    metrics = ", ".join(f"{s}: {m}" for s, m in dict(zip(tbl["study"], tbl["metric"])).items())
    fig.suptitle(f"Methods across studies, each normalised within its own study ({metrics})", fontsize=9)
    return save_figure(fig, path)


def write_compare(study_dirs: list[str], out: str | None = None) -> str:
    """``compare.csv``, ``compare.md`` and ``compare.png`` in ``out``; returns the Markdown."""
    tbl = compare_table(study_dirs)
    out_dir = Path(out or os.path.join(os.path.dirname(os.path.abspath(study_dirs[0].rstrip("/"))), "compare"))
    out_dir.mkdir(parents=True, exist_ok=True)
    tbl.to_csv(out_dir / "compare.csv", index=False)
    compare_figure(tbl, out_dir / "compare.png")
    md = "\n".join([
        "# Methods across studies: robustness, best score and cost", "",
        "Studies: " + ", ".join(f"`{d}`" for d in dict.fromkeys(tbl["study_dir"])), "",
        "Each method's score is its study's test metric at the best-validation epoch (`metric`), averaged over "
        "seeds per grid point. `median kept` / `p10 kept`: the median / 10th percentile over the method's own grid "
        "of score / its best grid point (95% bootstrap intervals over seeds). `best / study best`: against the best method "
        "of the same study at the same setting. `best per CPU-h`: best score over the CPU hours of one trial at the best point (median over seeds: "
        "the first trial of each worker process also pays its imports); `grid CPU-h`: what the whole grid cost.", "",
        markdown_table(_show(tbl, with_study=True).assign(metric=tbl["metric"]), index=False), "",
        "![methods across studies](compare.png)", ""])
    (out_dir / "compare.md").write_text(md)
    return md + f"\nWritten: {out_dir / 'compare.md'}, {out_dir / 'compare.csv'}, {out_dir / 'compare.png'}\n"
