"""What each method's trials cost, beside what they score (paper 001 Table 5's question,
asked of every study): CPU seconds of the trial process, GPU seconds, peak memory, and
epochs to the best epoch, from the ``cost.*`` columns ``weaklab.tune.trainable.CostMeter``
measures.

``cost.cpu_s`` is the worker process's user + system CPU time over the trial (every
thread); ``cost.gpu_s`` is wall seconds x the trial's GPU fraction, 0.0 on a CPU trial;
``cost.peak_rss_mb`` is the process's peak resident memory during the trial (the Ray
worker with torch loaded is most of it on small models); ``cost.peak_gpu_mb`` is
``torch.cuda.max_memory_allocated``, NaN on a CPU trial. Epochs to the best epoch is the
stored ``best_epoch`` (1-based: the epoch ``train.monitor`` chose). Rows written before
these columns existed read as n/a. The first trial a worker process runs also pays its
one-off imports and data loading, so the per-trial figures are medians.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.beyond import Metric, grid_rows, varying
from analysis.stats import completed, markdown_table

COST_COLUMNS = ("cost.cpu_s", "cost.gpu_s", "cost.peak_rss_mb", "cost.peak_gpu_mb")


def _col(df: pd.DataFrame, c: str) -> pd.Series:
    return df[c].astype(float) if c in df else pd.Series(np.nan, index=df.index, dtype=float)


def cost_table(trials: pd.DataFrame, metric: Metric | None) -> pd.DataFrame:
    """One row per method (label): its score and what its completed trials cost."""
    done = completed(trials)
    scored = grid_rows(trials, metric) if metric is not None else done
    out = {}
    for label, g in done.groupby("label", sort=False):
        row = {"trials": len(g)}
        if metric is not None:
            s = scored[scored["label"] == label]
            params = varying(s)
            per_point = (s.groupby(params)[metric.column].mean() if params
                         else s[metric.column].astype(float).agg(["mean"]))  # one point: its seed mean
            row["mean score"] = float(s[metric.column].astype(float).mean())
            row["best point score"] = float(per_point.max()) if len(per_point) else np.nan
        cpu = _col(g, "cost.cpu_s")
        row.update({"CPU s / trial": cpu.median(), "CPU-h total": cpu.sum() / 3600 if cpu.notna().any() else np.nan,
                    "wall s / trial": _col(g, "wall_s").median(), "GPU s / trial": _col(g, "cost.gpu_s").median(),
                    "peak RSS MB": _col(g, "cost.peak_rss_mb").max(), "peak GPU MB": _col(g, "cost.peak_gpu_mb").max(),
                    "best epoch": _col(g, "best_epoch").mean(), "epochs": _col(g, "epochs").mean()})
        out[label] = row
    tbl = pd.DataFrame(out).T
    tbl.index.name = "method"
    return tbl


def _fmt(v, digits: str) -> str:
    return "n/a" if v != v else format(v, digits)


def cost_section(trials: pd.DataFrame, metric: Metric | None) -> str:
    tbl = cost_table(trials, metric)
    lines = ["### Cost per trial beside the score", ""]
    if tbl.empty:
        return "\n".join(lines + ["No completed trials.", ""])
    devices = ", ".join(sorted(set(completed(trials)["device"].dropna().astype(str))) or ["?"]) if "device" in trials else "?"
    show = pd.DataFrame(index=tbl.index)
    show["trials"] = tbl["trials"].astype(int)
    if metric is not None:
        show[f"{metric.column} (mean / best point)"] = [
            f"{_fmt(m, '.4f')} / {_fmt(b, '.4f')}" for m, b in zip(tbl["mean score"], tbl["best point score"])]
    show["CPU s / trial"] = [_fmt(v, ".2f") for v in tbl["CPU s / trial"]]
    show["CPU-h total"] = [_fmt(v, ".4f") for v in tbl["CPU-h total"]]
    show["wall s / trial"] = [_fmt(v, ".2f") for v in tbl["wall s / trial"]]
    show["GPU s / trial"] = [_fmt(v, ".2f") for v in tbl["GPU s / trial"]]
    show["peak RSS MB"] = [_fmt(v, ".0f") for v in tbl["peak RSS MB"]]
    show["peak GPU MB"] = [_fmt(v, ".0f") for v in tbl["peak GPU MB"]]
    show["best epoch / epochs"] = [f"{_fmt(b, '.1f')} / {_fmt(e, '.1f')}" for b, e in zip(tbl["best epoch"],
                                                                                           tbl["epochs"])]
    lines += [f"Per method over its completed trials (device: {devices}): per-trial seconds are medians (the first "
              "trial of each worker process also pays its imports and data loading; `CPU-h total` includes it), "
              "best epoch and epochs are means, peak memory is the largest over its trials. CPU seconds are the "
              "trial process's user + system time, so on a shared machine they, unlike wall seconds, do not grow "
              "with the load. GPU s = wall s x GPU fraction (0 on CPU trials).",
              "", markdown_table(show), ""]
    cpu = tbl["CPU s / trial"].astype(float)
    if cpu.notna().sum() >= 2:
        lo, hi = cpu.idxmin(), cpu.idxmax()
        lines += [f"Cheapest per trial: {lo} ({cpu[lo]:.2f} CPU s); dearest: {hi} ({cpu[hi]:.2f} CPU s, "
                  f"{cpu[hi] / cpu[lo]:.1f}x).", ""]
    elif cpu.isna().all():
        lines += ["These rows predate the `cost.*` columns (written before cost was measured).", ""]
    return "\n".join(lines)
