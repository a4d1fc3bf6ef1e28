"""Statistics over seeds: mean/std, bootstrap confidence intervals, paired t-tests, and a
Markdown table writer (no extra dependency)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def bootstrap_ci(values: Sequence[float], *, level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (paper 002 Fig. 1/2 shade 95% intervals)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-tailed paired t-test p-value (replicates paired by seed, as paper 002 Table 1)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 2 or np.allclose(a[ok], b[ok]):
        return float("nan")
    return float(stats.ttest_rel(a[ok], b[ok]).pvalue)


def stars(p: float) -> str:
    """Paper 002's marks: * p<0.05, † p<0.01, ‡ p<0.001."""
    if p != p:
        return ""
    return "‡" if p < 0.001 else "†" if p < 0.01 else "*" if p < 0.05 else ""


def fmt_mean_std(values: Sequence[float], digits: int = 3) -> str:
    m, s = mean_std(values)
    return "n/a" if m != m else f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown_table(df: pd.DataFrame, *, index: bool = True) -> str:
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        cells = ([str(idx)] if index else []) + [_cell(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.4g}"
    return str(v)


def completed(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["status"] == "completed"] if "status" in trials else trials
