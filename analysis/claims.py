"""Verdicts on a study's claims (``weaklab.study.Claim``) from its ``trials`` Parquet alone.

One row per claim x worse arm x metric x slice, the columns of ``claims.csv``:

- ``effect``: the mean paired difference better - worse over seeds (``beats``), the mean
  per-seed slope of that difference along the claim's axis (``trend``), or the spread
  max - min of the seed-mean metric over the axis (``flat``), in the metric's own units
  (accuracy and mAP as fractions);
- ``ci_low``, ``ci_high``: a 95 % t-interval of the mean paired difference or slope
  (``beats``, ``trend``: the same t distribution as the test), a 95 % percentile
  bootstrap interval over seeds of the spread (``flat``);
- ``p_value``: ``scipy.stats.ttest_rel`` of better against worse paired by seed,
  two-sided (``beats``); of the per-seed slopes against 0 (``trend``); for ``flat`` the
  two-sided bootstrap p of the spread against ``within``;
- ``sd``: the paired differences' (slopes') standard deviation over seeds;
- ``p_holm``, ``mde_80``, ``seeds_needed``: the family's Holm-adjusted p and the row's power
  (:func:`family_verdicts`);
- ``verdict``: ``holds`` = the claimed sign and Holm p < 0.05; ``reversed`` = the opposite
  sign and Holm p < 0.05; ``undecided (needs N seeds)`` = not significant with fewer seeds
  than a paired test needs at the observed effect (N at most 100); ``not significant``
  otherwise; ``not run`` = an arm or slice is missing from the Parquet
  (e.g. a smoke run), with the reason in ``detail``. ``verdict_raw`` is the same rule on the
  raw p (no undecided), the verdict before multiplicity.

Arms whose rows span several hyperparameter values are taken at the values with the best
seed-mean of the claim's ``select`` column (validation): tau* and each arm's best grid
point are chosen on validation only. In a select-then-seeds study only the final phase's
rows count (the select phase ran one seed at every grid point).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

VERDICTS = ("holds", "not significant", "undecided (needs N seeds)", "reversed", "not run")
COLUMNS = ["claim", "kind", "slice", "better", "worse", "metric", "n_pairs", "effect", "ci_low", "ci_high",
           "sd", "p_value", "p_holm", "mde_80", "seeds_needed", "paper_effect", "verdict", "verdict_raw", "detail"]
ALPHA = 0.05


class NotRun(Exception):
    """An arm, slice or column the claim needs is not in the Parquet."""


def _match(series: pd.Series, value: Any) -> pd.Series:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and pd.api.types.is_numeric_dtype(series):
        return pd.Series(np.isclose(series.astype(float), float(value)), index=series.index)
    return series.astype(str) == str(value)


def _restrict(df: pd.DataFrame, where: Mapping[str, Any]) -> pd.DataFrame:
    for col, value in where.items():
        if col not in df:
            raise NotRun(f"column {col} is not in the Parquet")
        df = df[_match(df[col], value)]
    return df


def _rows(trials: pd.DataFrame) -> pd.DataFrame:
    done = trials[trials["status"] == "completed"] if "status" in trials else trials
    if "phase" in done and (done["phase"] == "final").any():
        done = done[done["phase"] == "final"]
    return done


def _hp_columns(df: pd.DataFrame, exclude: Iterable[str]) -> list[str]:
    """The configuration columns that vary within one arm's rows: its searched hyperparameters."""
    skip = set(exclude)
    return [c for c in df.columns if c.startswith(("hp.", "train.", "setting.")) and c not in skip
            and df[c].astype(str).nunique() > 1]


def arm_by_seed(df: pd.DataFrame, *, metric: str, select: str, exclude: Sequence[str] = ()) -> pd.Series:
    """One value of ``metric`` per seed for one arm's rows, at the hyperparameters with the
    best seed-mean of ``select`` (a validation column; higher is better)."""
    if df.empty:
        raise NotRun("no completed trials")
    if metric not in df:
        raise NotRun(f"column {metric} is not in the Parquet")
    hp = _hp_columns(df, exclude)
    if hp:
        if select not in df:
            raise NotRun(f"column {select} (to choose {', '.join(hp)}) is not in the Parquet")
        key = df[hp].astype(str).agg("|".join, axis=1)
        means = df[select].groupby(key).mean().dropna()
        if means.empty:
            raise NotRun(f"no value of {select} to choose {', '.join(hp)}")
        # deterministic on ties: the first key in sorted order among the best
        best = sorted(means[means == means.max()].index)[0]
        df = df[key == best]
        chosen = ", ".join(f"{c}={v}" for c, v in zip(hp, best.split("|")))
    else:
        chosen = ""
    out = df.groupby("seed")[metric].mean().dropna()
    out.attrs["chosen"] = chosen  # the selected hyperparameters, shown in the verdict's detail
    return out


def _arm_values(rows: pd.DataFrame, label: str, where: Mapping[str, Any], claim, metric: str) -> pd.Series:
    df = _restrict(rows[rows["label"] == label], where)
    if df.empty:
        at = f" at {', '.join(f'{k}={v}' for k, v in where.items())}" if where else ""
        raise NotRun(f"arm {label!r} has no completed trials{at} here (not run, or not sampled)")
    exclude = (*claim.slice_by, *claim.average_over, *([claim.axis] if claim.axis else []))
    if not claim.average_over:
        return arm_by_seed(df, metric=metric, select=claim.select, exclude=exclude)
    parts = [arm_by_seed(g, metric=metric, select=claim.select, exclude=exclude)
             for _, g in df.groupby(list(claim.average_over), dropna=False)]
    # the mean over the averaged columns, for the seeds present in every part
    out = pd.concat(parts, axis=1, join="inner").mean(axis=1)
    out.attrs["chosen"] = "; ".join(p.attrs["chosen"] for p in parts if p.attrs.get("chosen"))
    return out


def _t_summary(diffs: np.ndarray) -> tuple[float, float, float]:
    """(mean, ci_low, ci_high) with a 95 % t-interval."""
    n, mean = diffs.size, float(diffs.mean())
    if n < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1) * diffs.std(ddof=1) / np.sqrt(n))
    return mean, mean - half, mean + half


def _sd(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if x.size >= 2 else float("nan")


def _verdict(effect: float, p: float, expect_positive: bool) -> str:
    if p != p or p >= ALPHA:
        return "not significant"
    return "holds" if (effect > 0) == expect_positive else "reversed"


def _beats(rows, claim, metric, worse) -> dict[str, Any]:
    b = _arm_values(rows, claim.better, {**claim.better_where}, claim, metric)
    w = _arm_values(rows, worse, {**claim.worse_where}, claim, metric)
    pairs = pd.concat([b.rename("b"), w.rename("w")], axis=1, join="inner").dropna()
    if pairs.empty:
        raise NotRun(f"no seed shared by {claim.better!r} and {worse!r}")
    diffs = (pairs["b"] - pairs["w"]).to_numpy(float)
    effect, lo, hi = _t_summary(diffs)
    p = float(stats.ttest_rel(pairs["b"], pairs["w"]).pvalue) if len(pairs) >= 2 else float("nan")
    chosen = [f"{name} at {s.attrs['chosen']}" for name, s in (("better", b), ("worse", w)) if s.attrs.get("chosen")]
    return {"n_pairs": len(pairs), "effect": effect, "ci_low": lo, "ci_high": hi, "sd": _sd(diffs), "p_value": p,
            "verdict": _verdict(effect, p, claim.higher_is_better), "detail": "; ".join(chosen)}


def _trend(rows, claim, metric, worse) -> dict[str, Any]:
    values = sorted(rows[claim.axis].dropna().unique()) if claim.axis in rows else []
    gains = {}
    for v in values:
        at = rows[_match(rows[claim.axis], v)]
        try:
            b = _arm_values(at, claim.better, claim.better_where, claim, metric)
            w = _arm_values(at, worse, claim.worse_where, claim, metric)
        except NotRun:
            continue
        gains[v] = b - w
    if len(gains) < 2:
        raise NotRun(f"fewer than two values of {claim.axis} with both arms")
    g = pd.DataFrame(gains).dropna()  # seeds x axis values, seeds present at every value
    if g.empty:
        raise NotRun(f"no seed present at every value of {claim.axis}")
    x = np.array([float(v) for v in g.columns])
    x = np.log2(x) if claim.log_axis else x
    slopes = np.array([np.polyfit(x, row.to_numpy(float), 1)[0] for _, row in g.iterrows()])
    effect, lo, hi = _t_summary(slopes)
    p = float(stats.ttest_rel(slopes, np.zeros_like(slopes)).pvalue) if slopes.size >= 2 else float("nan")
    return {"n_pairs": int(slopes.size), "effect": effect, "ci_low": lo, "ci_high": hi, "sd": _sd(slopes), "p_value": p,
            "verdict": _verdict(effect, p, claim.higher_is_better),
            "detail": f"slope of the paired gain per {'doubling' if claim.log_axis else 'unit'} of {claim.axis} "
                      f"over {', '.join(f'{v:g}' for v in g.columns)}"}


def _flat(rows, claim, metric, *, n_boot: int = 10_000, seed: int = 0) -> dict[str, Any]:
    df = _restrict(rows[rows["label"] == claim.better], claim.better_where)
    if df.empty or claim.axis not in df:
        raise NotRun(f"arm {claim.better!r} has no completed trials with {claim.axis} here")
    if claim.axis_range is not None:
        lo, hi = claim.axis_range
        df = df[(df[claim.axis] >= lo - 1e-12) & (df[claim.axis] <= hi + 1e-12)]
    cols = {}
    for v, g in df.groupby(claim.axis):
        cols[v] = arm_by_seed(g, metric=metric, select=claim.select, exclude=(*claim.slice_by, claim.axis))
    m = pd.DataFrame(cols).dropna()  # seeds x axis values
    if m.shape[1] < 2 or m.empty:
        raise NotRun(f"fewer than two values of {claim.axis} with a common seed")
    a = m.to_numpy(float)
    spread = lambda x: float(np.ptp(x.mean(axis=0)))
    effect = spread(a)
    rng = np.random.default_rng(seed)
    boots = np.array([spread(a[idx]) for idx in rng.integers(0, a.shape[0], size=(n_boot, a.shape[0]))])
    ci_low, ci_high = (float(q) for q in np.quantile(boots, [ALPHA / 2, 1 - ALPHA / 2]))
    p = float(min(1.0, 2 * min((boots >= claim.within).mean(), (boots < claim.within).mean())))
    verdict = "holds" if ci_high < claim.within else "reversed" if ci_low > claim.within else "not significant"
    return {"n_pairs": int(a.shape[0]), "effect": effect, "ci_low": ci_low, "ci_high": ci_high, "p_value": p,
            "verdict": verdict,
            "detail": f"spread of the seed-mean over {claim.axis} in "
                      f"{', '.join(f'{v:g}' for v in m.columns)}; flat means < {claim.within:g}"}


def _slices(rows: pd.DataFrame, claim) -> list[dict[str, Any]]:
    """The slice_by value combinations the better arm ran (all rows' if it ran none)."""
    if not claim.slice_by:
        return [{}]
    missing = [c for c in claim.slice_by if c not in rows]
    if missing:
        raise NotRun(f"column {missing[0]} is not in the Parquet")
    own = rows[rows["label"] == claim.better]
    src = own if len(own) else rows
    combos = src[list(claim.slice_by)].drop_duplicates().sort_values(list(claim.slice_by))
    return [dict(zip(claim.slice_by, r)) for r in combos.itertuples(index=False)] or [{}]


def _slice_name(claim, sl: Mapping[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in {**claim.where, **sl}.items()]
    if claim.kind == "trend":
        parts.append(f"trend over {claim.axis}")
    if claim.kind == "flat" and claim.axis_range is not None:
        parts.append(f"{claim.axis} in [{claim.axis_range[0]:g}, {claim.axis_range[1]:g}]")
    if claim.average_over:
        parts.append(f"mean over {', '.join(claim.average_over)}")
    return ", ".join(parts) or "all"


def evaluate_claims(trials: pd.DataFrame, claims: Sequence) -> pd.DataFrame:
    """The verdict rows of ``claims`` on a study's ``trials`` frame (columns: :data:`COLUMNS`)."""
    out = []
    rows_all = _rows(trials) if len(trials) else trials
    for claim in claims:
        worse_list = claim.worse_labels() if claim.kind != "flat" else ("",)
        for metric in claim.metrics():
            for worse in worse_list:
                base = {"claim": claim.name, "kind": claim.kind, "better": claim.better, "worse": worse,
                        "metric": metric, "paper_effect": claim.paper_effect}
                try:
                    if rows_all.empty or "label" not in rows_all:
                        raise NotRun("no completed trials")
                    rows = _restrict(rows_all, claim.where)
                    slices = _slices(rows, claim)
                except NotRun as e:
                    out.append({**base, "slice": _slice_name(claim, {}), "n_pairs": 0, "verdict": "not run",
                                "detail": str(e)})
                    continue
                for sl in slices:
                    row = {**base, "slice": _slice_name(claim, sl), "detail": ""}
                    try:
                        sub = _restrict(rows, sl)
                        if claim.kind == "beats":
                            row.update(_beats(sub, claim, metric, worse))
                        elif claim.kind == "trend":
                            row.update(_trend(sub, claim, metric, worse))
                        else:
                            row.update(_flat(sub, claim, metric))
                    except NotRun as e:
                        row.update({"n_pairs": 0, "verdict": "not run", "detail": str(e)})
                    out.append(row)
    return family_verdicts(pd.DataFrame(out, columns=COLUMNS), claims)


def family_verdicts(table: pd.DataFrame, claims: Sequence = ()) -> pd.DataFrame:
    """Holm-adjust the p-values over the study's whole claim family (every row with a p) and
    give each row its power; the verdict then reads the adjusted p, ``verdict_raw`` the raw.

    - ``p_holm``: Holm's step-down p (:func:`analysis.stats.holm`);
    - ``mde_80``: the |effect| the paired test finds with 80 % power with the run's seeds at
      the level Holm applies to this row (alpha / (m - rank + 1)), from the row's paired sd;
    - ``seeds_needed``: the seeds that test would need at the observed effect (inf: more than
      :data:`analysis.stats.MAX_SEEDS`);
    - ``verdict``: holds / reversed at p_holm < 0.05; otherwise ``undecided (needs N seeds)``
      when the seeds run < N <= :data:`analysis.stats.FEASIBLE_SEEDS` (the run could not
      have found the observed effect, so its silence says little), ``not significant`` when
      N is beyond that (the observed effect is a small fraction of the seed-to-seed spread)
      or the run had the power. Power at the observed effect is a function of p, so
      ``seeds_needed`` plans the next run; it is no evidence for or against the effect. ``flat`` claims (a bootstrap, no t power) are holds / reversed / not significant.
    """
    from analysis.stats import FEASIBLE_SEEDS, holm, holm_levels, paired_mde, seeds_needed

    table = table.copy()
    table["verdict_raw"] = table["verdict"]
    p = table["p_value"].astype(float).to_numpy()
    table["p_holm"] = holm(p)
    levels = holm_levels(p, alpha=ALPHA)
    higher = {c.name: c.higher_is_better for c in claims}
    within = {c.name: c.within for c in claims if c.kind == "flat"}
    mde, need, verdicts = [], [], []
    for r, level in zip(table.itertuples(index=False), levels):
        if r.verdict == "not run" or r.p_value != r.p_value:
            mde.append(float("nan")), need.append(float("nan")), verdicts.append(r.verdict)
            continue
        if r.kind == "flat":
            mde.append(float("nan")), need.append(float("nan"))
            below = r.effect < within.get(r.claim, float("inf"))
            verdicts.append(("holds" if below else "reversed") if r.p_holm < ALPHA else "not significant")
            continue
        n = int(r.n_pairs)
        mde.append(paired_mde(r.sd, n, alpha=level))
        need.append(seeds_needed(r.effect, r.sd, alpha=level))
        if r.p_holm < ALPHA:
            verdicts.append("holds" if (r.effect > 0) == higher.get(r.claim, True) else "reversed")
        elif need[-1] == need[-1] and n < need[-1] <= FEASIBLE_SEEDS:
            verdicts.append(f"undecided (needs {int(need[-1])} seeds)")
        else:
            verdicts.append("not significant")
    table["mde_80"], table["seeds_needed"], table["verdict"] = mde, need, verdicts
    return table[COLUMNS]


def claims_markdown(table: pd.DataFrame) -> str:
    """The claims table as Markdown (leads every report)."""
    if table.empty:
        return "This study declares no claims."
    lines = ["| claim | slice | better | worse | metric | n | effect | 95% CI | p | p Holm | MDE 80% | seeds needed "
             "| paper | verdict | raw verdict | detail |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        lines.append(f"| {r.claim} | {r.slice} | {r.better} | {r.worse or '-'} | {r.metric} | {r.n_pairs} | "
                     f"{_num(r.effect)} | {_ci(r.ci_low, r.ci_high)} | {_num(r.p_value, p=True)} | "
                     f"{_num(r.p_holm, p=True)} | {_mag(r.mde_80)} | {_seeds(r.seeds_needed)} | "
                     f"{r.paper_effect or '-'} | **{r.verdict}** | {r.verdict_raw} | "
                     f"{r.detail if isinstance(r.detail, str) else ''} |")
    return "\n".join(lines)


#: the claims table's text columns: an empty one (a flat claim's ``worse``, a missing
#: detail) must stay "" when claims.csv is read back, not become pandas' NaN
TEXT_COLUMNS = ("claim", "kind", "slice", "better", "worse", "metric", "paper_effect", "verdict", "verdict_raw",
                "detail", "verdict_fixed_n")


def read_claims(path) -> pd.DataFrame:
    """``claims.csv`` as written by the report, text columns as text."""
    table = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False)
    for c in table.columns:
        if c not in TEXT_COLUMNS:
            table[c] = pd.to_numeric(table[c].replace("", float("nan")))
    return table


def claims_terminal(table: pd.DataFrame) -> str:
    """A compact fixed-width table for the terminal."""
    if table.empty:
        return "claims: none declared"
    lines = [f"{'claim':22s} {'slice':34s} {'worse':18s} {'metric':20s} {'n':>3s} {'effect':>9s} "
             f"{'95% CI':>21s} {'p':>8s} {'p Holm':>8s} {'MDE80':>7s}  verdict"]
    for r in table.itertuples(index=False):
        lines.append(f"{r.claim[:22]:22s} {r.slice[:34]:34s} {(r.worse or '-')[:18]:18s} {r.metric[:20]:20s} "
                     f"{r.n_pairs:>3d} {_num(r.effect):>9s} {_ci(r.ci_low, r.ci_high):>21s} "
                     f"{_num(r.p_value, p=True):>8s} {_num(r.p_holm, p=True):>8s} {_mag(r.mde_80):>7s}  {r.verdict}")
    return "\n".join(lines)


def _num(v, p: bool = False) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:.2g}" if p and v < 0.01 else f"{v:.3f}" if p else f"{v:+.4f}"


def _mag(v) -> str:
    return "-" if v is None or v != v else f"{v:.4f}"


def _seeds(v) -> str:
    from analysis.stats import MAX_SEEDS

    return "-" if v is None or v != v else f">{MAX_SEEDS}" if v == float("inf") else f"{int(v)}"


def _ci(lo, hi) -> str:
    if lo is None or hi is None or lo != lo or hi != hi:
        return "-"
    return f"[{lo:+.4f}, {hi:+.4f}]"
