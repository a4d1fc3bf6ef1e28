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
    """Two-tailed paired t-test p-value (replicates paired by seed, as paper 002 Table 1).

    Two Series indexed by seed are paired on the seeds they share; sequences of unequal
    length cannot be paired and give NaN (a report then shows no mark, not a traceback)."""
    if isinstance(a, pd.Series) and isinstance(b, pd.Series) and a.index.is_unique and b.index.is_unique:
        common = a.index.intersection(b.index)
        a, b = a.loc[common], b.loc[common]
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        return float("nan")
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


def seed_complete(trials: pd.DataFrame, by: Sequence[str], *, seeds: Sequence[int] | None = None,
                  what: str = "configuration") -> tuple[pd.DataFrame, list[str]]:
    """The completed rows of the groups (one configuration each, grouped by ``by``) that
    have every seed, and one note per dropped group.

    A seed-mean over fewer seeds is not comparable with the others, nor pairable by seed:
    with ``--scheduler asha`` a stopped configuration has no completed seed, and a failed
    seed leaves its configuration short. ``seeds`` defaults to every seed among the trials.
    """
    done = completed(trials)
    if done.empty:
        return done, []
    want = set(trials["seed"].dropna().unique().tolist() if seeds is None else seeds)
    keys = [done[k].astype(str) for k in by]  # NaN-safe: a missing key is its own value
    have = done.groupby(keys, dropna=False)["seed"].transform(lambda s: set(s) >= want)
    notes = []
    for key, g in done[~have.astype(bool)].groupby(keys, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        name = ", ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in zip(by, key))
        notes.append(f"{what} {name} dropped: seeds {sorted(g['seed'].tolist())} of {sorted(want)} completed")
    return done[have.astype(bool)], notes


def is_sampled(values: Sequence[float]) -> bool:
    """True when a numeric column holds searched (Optuna) values rather than grid points:
    a sampled float carries ~16 significant digits, a grid value typed into a study a few."""
    v = pd.Series(values).dropna()
    if v.empty or not np.issubdtype(v.dtype, np.number):
        return False
    return bool((v.astype(float).map(lambda x: len(f"{x:.15g}".lstrip("-").replace(".", "").strip("0"))) > 8).any())


def smooth(x: Sequence[float], y: Sequence[float], *, log: bool = False, n: int = 200,
           bandwidth: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-kernel (Nadaraya-Watson) smoothing of points ``y`` over ``x`` (in log x when
    ``log``), bandwidth a fraction of the x range: the line through sampled configurations."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    t = np.log(x) if log else x
    grid = np.linspace(t.min(), t.max(), n) if x.size else np.array([])
    h = max(bandwidth * (t.max() - t.min()), 1e-12) if x.size else 1.0
    w = np.exp(-0.5 * ((grid[:, None] - t[None, :]) / h) ** 2)
    line = (w * y[None, :]).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-300)
    return (np.exp(grid) if log else grid), line


def guarded(name: str, fn, *args, **kwargs) -> str:
    """``fn(*args, **kwargs)`` (Markdown), or one line naming what could not be computed and
    why: a report on a partial or sampled study shows its other sections, never a traceback."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - any failure of one slice becomes its one-line note
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        return f"*{name}: not computed ({type(e).__name__}{': ' + reason if reason else ''}).*"


def draw_curve(ax, x, mean, lo, hi, *, label: str, log: bool = False, scale: float = 1.0) -> bool:
    """One curve of means over seeds with its 95% interval: over grid points a line with a
    band (the papers' style); over sampled values (:func:`is_sampled`) a point per sampled
    configuration with its interval, and a kernel-smoothed line through them. True when sampled."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x)
    x = x[order]
    mean, lo, hi = (scale * np.asarray(v, dtype=float)[order] for v in (mean, lo, hi))
    if not is_sampled(x):
        ax.plot(x, mean, marker="o", ms=3, label=label)
        ax.fill_between(x, lo, hi, alpha=0.2)
        return False
    bars = ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], fmt="o", ms=3, elinewidth=0.6, alpha=0.7,
                       label=f"{label} (sampled)")
    if len(x) >= 3:
        ax.plot(*smooth(x, mean, log=log), color=bars[0].get_color(), lw=1.5)
    if log:  # sampled values within one decade: plain labels on the minor ticks, else none
        from matplotlib.ticker import FormatStrFormatter, NullFormatter

        narrow = x.size and x.max() < 10 * x.min()
        ax.xaxis.set_minor_formatter(FormatStrFormatter("%g") if narrow else NullFormatter())
    return True


# --- multiplicity and power of the paired t-test (issue 27) --------------------------------

#: ``seeds_needed`` above this is reported as ">MAX_SEEDS" (the search stops there)
MAX_SEEDS = 10_000
#: a claim that needs more seeds than this is "not significant", not "undecided": 20x the
#: 5 seeds of a default study, beyond what anyone reruns for one comparison; the observed
#: effect is then a small fraction of the seed-to-seed spread
FEASIBLE_SEEDS = 100


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979, Scand. J. Statist. 6:65-70): with the m
    finite p sorted ascending, p_(i) -> max_{j<=i} min(1, (m - j + 1) p_(j)); NaN stays NaN.
    Controls the family-wise error at the nominal level under any dependence, which a study's
    claims (sharing arms and seeds) have. Five lines, so no statsmodels dependency."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]
        out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def holm_levels(p_values: Sequence[float], *, alpha: float = 0.05) -> np.ndarray:
    """The level alpha / (m - k + 1) Holm's procedure applies to each p (k its ascending rank):
    the level a claim must reach, given the rest of the family, to be declared."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    out[order] = alpha / (ok.size - np.arange(ok.size))
    return out


def paired_power(d: float, n: int, *, alpha: float = 0.05) -> float:
    """Power of the two-sided paired (one-sample) t-test with n pairs at standardised effect
    d = mean / sd of the differences: the noncentral t with n - 1 df and noncentrality
    d sqrt(n) beyond the critical value (Cohen 1988, ch. 2)."""
    if n < 2:
        return float("nan")
    df, ncp = n - 1, abs(d) * np.sqrt(n)
    t = stats.t.ppf(1 - alpha / 2, df)
    # the far tail is < 1e-8 wherever scipy's nct returns NaN for it (ncp >> t): count it 0
    return float(stats.nct.sf(t, df, ncp) + np.nan_to_num(stats.nct.cdf(-t, df, ncp)))


def paired_mde(sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The minimum detectable effect (same units as ``sd``): the |mean difference| that a
    paired t-test with n pairs finds with probability ``power`` at level ``alpha``."""
    from scipy.optimize import brentq

    if n < 2 or not sd == sd or sd <= 0:
        return float("nan")
    hi = 1.0
    while paired_power(hi, n, alpha=alpha) < power:  # the noncentral t is NaN far out: bracket up
        hi *= 2
        if hi > 64:
            return float("nan")
    return float(sd * brentq(lambda d: paired_power(d, n, alpha=alpha) - power, 0.0, hi))


def seeds_needed(effect: float, sd: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The fewest seeds (pairs) whose paired t-test has ``power`` at the observed effect and
    paired sd; inf when that exceeds :data:`MAX_SEEDS` (or the effect is 0)."""
    if not (effect == effect and sd == sd) or sd <= 0:
        return float("nan")
    d = abs(effect) / sd
    if paired_power(d, MAX_SEEDS, alpha=alpha) < power:
        return float("inf")
    lo, hi = 2, MAX_SEEDS  # power rises with n: bisect for the first n that reaches it
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if paired_power(d, mid, alpha=alpha) >= power else (mid + 1, hi)
    return float(lo)
