"""Seeds where they decide: a group-sequential design over a study's claim family.

``weaklab run STUDY --until-decided`` runs the study, looks at its claims, and adds seeds in
rounds only to the configurations that undecided claims compare, until no claim is
undecided or ``--max-seeds`` is reached. Looking after every round and stopping when a
p-value is small would inflate the error rate (each look is another chance of a false
"holds"); this module keeps the overall type I error at ``alpha`` = 0.05 with

- **alpha spending** (Lan & DeMets 1983, Biometrika 70:659-663) with the
  O'Brien-Fleming-type function ``alpha*(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t))``
  (O'Brien & Fleming 1979, Biometrics 35:549-556): at information fraction
  t = seeds so far / max seeds the design has spent ``alpha*(t)``; the first looks,
  with few seeds, get almost nothing (a look at 5 of 15 seeds spends 0.0007), the last
  nearly all of it (:func:`spent_alpha`);
- **exact nominal boundaries** per look: the two-sided z boundaries c_k such that, under
  the null, the probability of first crossing at look k is alpha*(t_k) - alpha*(t_{k-1}),
  for the Brownian-motion score process with independent increments (Jennison & Turnbull
  2000, *Group Sequential Methods*, ch. 19: recursive numerical integration), as nominal
  p-value boundaries 2 (1 - Phi(c_k)) (:func:`nominal_boundaries`; ``exact=False`` gives
  the conservative Bonferroni-over-looks boundaries, the increments themselves);
- **Holm over the family** done as the graphical group-sequential procedure of Maurer &
  Bretz 2013 (Stat. Biopharm. Res. 5:311-320) with Holm's graph: at a look the m
  hypotheses not yet rejected are ordered by raw p, the i-th (0-based) is tested at level
  alpha / (m - i) with that level's own spending boundary at its own look, step-down
  until the first that fails; a rejected hypothesis passes its level on to the rest at
  later looks (:func:`look`). So the raw p of each row is compared with the
  Holm-level spent boundary, which is how the report's ``p_holm`` and 0.05 generalise
  to several looks; with one look it is Holm at 0.05 exactly.

A row (claim x worse arm x metric x slice) whose p is not below its boundary goes on to the
next round when a paired test could find its observed effect with at most
:data:`analysis.stats.FEASIBLE_SEEDS` seeds (the report's "undecided (needs N seeds)"
rule; a row beyond that is stopped for futility, which never raises the error rate: a
non-binding futility stop only removes chances to reject), and ends "not significant" at
``max_seeds``. The p-values are the claims' paired t-tests: nominal boundaries on t-test p
are the usual small-sample use of a z-derived design; ``tests/test_sequential.py``
measures the realised error over simulated studies.

Everything here is pure (frames in, frames out) so it is tested without Ray; the runner
(``weaklab.tune.runner.run_until_decided``) calls :func:`run_rounds` with an ``evaluate``
that reads the Parquet and an ``add_seeds`` that runs Tune.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import brentq

from weaklab.config import same_value

ALPHA = 0.05
#: the columns that name one row of a claims table (one hypothesis of the family)
KEY = ("claim", "worse", "metric", "slice")
#: the file of a study folder that records the rounds (written by the runner, read by the report)
RECORD = "sequential.json"


def spent_alpha(t: float, alpha: float = ALPHA) -> float:
    """Lan-DeMets O'Brien-Fleming-type spending: the error spent by information fraction
    ``t`` in (0, 1], ``2 - 2 Phi(z_{1-alpha/2} / sqrt(t))``; ``alpha`` at t = 1."""
    if t <= 0:
        return 0.0
    z = stats.norm.ppf(1 - alpha / 2)
    return float(2 * stats.norm.sf(z / math.sqrt(min(t, 1.0))))


def seed_schedule(*, first: int, step: int, max_seeds: int) -> list[int]:
    """The seeds at each look: ``first``, then ``step`` more a round, the last capped at
    ``max_seeds`` (e.g. 5, 10, 15). ``max_seeds <= first`` is a single look."""
    out = [first]
    while out[-1] < max_seeds:
        out.append(min(out[-1] + step, max_seeds))
    return out


@lru_cache(maxsize=256)
def _z_boundaries(ts: tuple[float, ...], alpha: float, points: int) -> tuple[float, ...]:
    """Exact two-sided z boundaries for looks at information fractions ``ts`` (ascending,
    last 1): recursive integration of the continuation density of S_k = Z_k sqrt(t_k)."""
    z, prev_spent = [], 0.0
    grid = dens = None  # S on the previous look's continuation region, and its density there
    prev_t = 0.0
    for t in ts:
        target = spent_alpha(t, alpha) - prev_spent
        prev_spent += target
        if grid is None:
            c = float(stats.norm.isf(target / 2))
            grid = np.linspace(-c * math.sqrt(t), c * math.sqrt(t), points)
            dens = stats.norm.pdf(grid, scale=math.sqrt(t))
        else:
            sd = math.sqrt(t - prev_t)
            w = np.full(points, grid[1] - grid[0])  # trapezoid weights
            w[0] = w[-1] = w[0] / 2
            mass = dens * w

            def crossing(c):
                b = c * math.sqrt(t)
                return float(np.sum(mass * (stats.norm.sf((b - grid) / sd) + stats.norm.cdf((-b - grid) / sd))))

            if target <= 0:
                c = 40.0
            else:
                c = brentq(lambda c: crossing(c) - target, 1e-6, 40.0, xtol=1e-10)
            new = np.linspace(-c * math.sqrt(t), c * math.sqrt(t), points)
            # density of S_k on the new continuation region: the old one convolved with N(0, t - t_prev)
            dens = (stats.norm.pdf((new[:, None] - grid[None, :]) / sd) / sd) @ mass
            grid = new
        z.append(c)
        prev_t = t
    return tuple(z)


def nominal_boundaries(ts: Sequence[float], *, alpha: float = ALPHA, exact: bool = True,
                       points: int = 801) -> np.ndarray:
    """The nominal two-sided p-value boundaries of looks at information fractions ``ts``:
    a test at look k rejects when its p is below entry k. ``exact``: from the exact z
    boundaries (:func:`_z_boundaries`; 3 equal looks at 0.05 give z 3.395, 2.407, 2.015:
    Lan & DeMets's two-sided form, alpha spent over |Z|; software that spends alpha / 2 per
    side with the one-sided function, e.g. gsDesign's sfLDOF, gives 3.471, 2.454, 2.004);
    otherwise the increments alpha*(t_k) - alpha*(t_{k-1}) themselves,
    Bonferroni over the looks, valid under any correlation but conservative."""
    ts = tuple(float(t) for t in ts)
    if not exact:
        spent = [spent_alpha(t, alpha) for t in ts]
        return np.diff([0.0, *spent])
    return 2 * stats.norm.sf(np.array(_z_boundaries(ts, float(alpha), int(points))))


def _look_index(n: int, schedule: Sequence[int]) -> int:
    """The look a row with ``n`` seeds is at: the last look whose seeds it has (0 below the
    first: a row short of seeds, from failed trials, is tested at the first look)."""
    return max(0, int(np.searchsorted(schedule, n, side="right")) - 1)


def row_key(r) -> tuple:
    return tuple(str(getattr(r, k) if not isinstance(r, Mapping) else r[k]) for k in KEY)


def look(table: pd.DataFrame, *, schedule: Sequence[int], decided: Mapping[tuple, Mapping[str, Any]] | None = None,
         alpha: float = ALPHA, exact: bool = True, higher: Mapping[str, bool] | None = None,
         within: Mapping[str, float] | None = None) -> pd.DataFrame:
    """One look at a claims table (``analysis.claims.evaluate_claims``'s columns): each row
    gets ``look`` (its look index), ``level`` (the Holm level it was tested at), ``boundary``
    (its nominal p boundary there), ``status`` (decided / continue / stopped / not run) and
    ``verdict_seq``. ``decided`` holds the rows rejected at earlier looks (key -> their
    record), which stay decided and hand their level to the rest. ``higher``: claim ->
    whether a positive effect is the claimed direction (default True); ``within``: a flat
    claim's threshold (holds when the spread is below it)."""
    from analysis.stats import FEASIBLE_SEEDS

    decided = dict(decided or {})
    higher, within = dict(higher or {}), dict(within or {})
    ts = tuple(n / schedule[-1] for n in schedule)
    out = table.copy()
    keys = [row_key(r) for r in out.itertuples(index=False)]
    p = out["p_value"].astype(float).to_numpy()
    n_pairs = out["n_pairs"].fillna(0).astype(int).to_numpy()
    looks = np.array([_look_index(int(n), schedule) for n in n_pairs])
    status = np.array(["not run"] * len(out), dtype=object)
    verdict = out["verdict"].astype(str).to_numpy(dtype=object).copy()
    level = np.full(len(out), np.nan)
    boundary = np.full(len(out), np.nan)
    for i, k in enumerate(keys):
        if k in decided:
            status[i], verdict[i] = "decided", decided[k]["verdict_seq"]
            level[i], boundary[i] = decided[k]["level"], decided[k]["boundary"]
    remaining = [i for i in range(len(out)) if keys[i] not in decided and p[i] == p[i]]
    remaining.sort(key=lambda i: p[i])
    m = len(remaining)
    failed = False
    for rank, i in enumerate(remaining):
        level[i] = alpha / (m - rank)
        boundary[i] = nominal_boundaries(ts, alpha=level[i], exact=exact)[looks[i]]
        if not failed and p[i] < boundary[i]:
            status[i] = "decided"
            r = out.iloc[i]
            if r["kind"] == "flat":
                verdict[i] = "holds" if r["effect"] < within.get(r["claim"], math.inf) else "reversed"
            else:
                verdict[i] = "holds" if (r["effect"] > 0) == higher.get(r["claim"], True) else "reversed"
            continue
        failed = True  # Holm steps down: once one fails, every larger p fails at this look
        need = float(out["seeds_needed"].iloc[i]) if "seeds_needed" in out else math.nan
        feasible = out["kind"].iloc[i] == "flat" or (need == need and need <= FEASIBLE_SEEDS)
        if n_pairs[i] < schedule[-1] and feasible:
            status[i], verdict[i] = "continue", f"undecided (look {looks[i] + 1} of {len(schedule)})"
        else:
            status[i], verdict[i] = "stopped", "not significant"
    out["look"], out["level"], out["boundary"] = looks + 1, level, boundary
    out["status"], out["verdict_seq"] = status, verdict
    return out


def configs_for(rows: pd.DataFrame, claims: Sequence, configs: Sequence[Mapping[str, Any]]) -> list[int]:
    """Indices of the ``configs`` (flat trial configs, any seed) the claim ``rows`` compare:
    every config of each row's arms in its slice (the claim's ``where``, the slice's
    values, ``better_where`` / ``worse_where``), all their grid points, so each arm's
    hyperparameters are still chosen on validation over every seed (never on test)."""
    from analysis.claims import _slice_name

    by_name = {c.name: c for c in claims}
    wanted: set[int] = set()
    for r in rows.itertuples(index=False):
        claim = by_name.get(r.claim)
        if claim is None:
            continue
        sl = _slice_of(claim, r.slice, configs, _slice_name)
        arms = [(claim.better, {**claim.where, **sl, **claim.better_where})]
        if claim.kind != "flat":
            arms.append((r.worse, {**claim.where, **sl, **claim.worse_where}))
        for i, c in enumerate(configs):
            if any(c.get("label") == label and all(_same(c.get(k), v) for k, v in where.items())
                   for label, where in arms):
                wanted.add(i)
    return sorted(wanted)


def _same(a, b) -> bool:
    # a --set value stays a string in the configs ("7"); the claim's value is typed
    return same_value(a, b) or str(a) == str(b)


def _slice_of(claim, name: str, configs, slice_name) -> dict[str, Any]:
    """The slice_by values whose name (as the claims table writes it) is ``name``."""
    if not claim.slice_by:
        return {}
    seen = []
    for c in configs:
        sl = {k: c.get(k) for k in claim.slice_by}
        if sl not in seen:
            seen.append(sl)
            if slice_name(claim, sl) == name:
                return sl
    return {}


def run_rounds(*, evaluate: Callable[[int], pd.DataFrame], add_seeds: Callable[[pd.DataFrame, list[int]], None],
               schedule: Sequence[int], claims: Sequence = (), alpha: float = ALPHA, exact: bool = True,
               on_look: Callable[[pd.DataFrame, list[dict[str, Any]]], None] | None = None,
               ) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The sequential loop: at each look ``evaluate(n)`` gives the claims table on seeds
    0..n-1; rows still undecided get ``add_seeds(rows, next seeds)`` (the caller runs
    those seeds at the configurations :func:`configs_for` picks) until no row continues or
    the last look of ``schedule``. Returns the last look's table (:func:`look`'s columns)
    and one record per look (round, seeds, newly decided rows, boundaries, continuing rows);
    ``on_look(table, rounds)`` is called after each look, before its round runs.
    Looks read only seeds below their own count, so replaying them on a resumed study gives
    the same decisions."""
    higher = {c.name: c.higher_is_better for c in claims}
    within = {c.name: c.within for c in claims if c.kind == "flat"}
    decided: dict[tuple, dict[str, Any]] = {}
    rounds: list[dict[str, Any]] = []
    table = pd.DataFrame()
    for k, n in enumerate(schedule):
        table = look(evaluate(n), schedule=schedule, decided=decided, alpha=alpha, exact=exact,
                     higher=higher, within=within)
        new = []
        for r in table.itertuples(index=False):
            key = row_key(r)
            if r.status == "decided" and key not in decided:
                decided[key] = {"verdict_seq": r.verdict_seq, "level": float(r.level),
                                "boundary": float(r.boundary), "round": k + 1}
                new.append({"claim": r.claim, "worse": r.worse, "metric": r.metric, "slice": r.slice,
                            "verdict": r.verdict_seq, "p_value": float(r.p_value), "boundary": float(r.boundary)})
        cont = table[table["status"] == "continue"]
        ts = tuple(m / schedule[-1] for m in schedule)
        # what each row with a p faced at this look: its p, Holm level, boundary and outcome
        tests = [{"claim": r.claim, "worse": r.worse, "metric": r.metric, "slice": r.slice, "n": int(r.n_pairs),
                  "p_value": float(r.p_value), "level": float(r.level), "boundary": float(r.boundary),
                  "status": r.status} for r in table.itertuples(index=False) if r.p_value == r.p_value]
        rounds.append({"round": k + 1, "seeds": int(n), "t": n / schedule[-1], "decided": new,
                       "continuing": int(len(cont)),
                       # the design's boundary for a single claim at full alpha (Holm's levels lie below it)
                       "boundary_alpha": float(nominal_boundaries(ts, alpha=alpha, exact=exact)[k]),
                       "tests": tests})
        if on_look is not None:  # e.g. write the record now, so an interrupted run keeps its looks
            on_look(table, rounds)
        if cont.empty or k == len(schedule) - 1:
            break
        add_seeds(cont, list(range(n, schedule[k + 1])))
    table["round_decided"] = [decided.get(row_key(r), {}).get("round", np.nan) for r in table.itertuples(index=False)]
    return table, rounds


def rounds_markdown(record: Mapping[str, Any]) -> str:
    """The report's "Sequential seeds" section from the runner's record."""
    d = record.get("design", {})
    lines = ["## Sequential seeds", "",
             f"`--until-decided`: seeds added in rounds to the configurations undecided claims compare, "
             f"{d.get('first')} seeds first, {d.get('step')} more a round, at most {d.get('max_seeds')}. "
             f"Stopping rule: Lan-DeMets alpha spending with the O'Brien-Fleming-type function "
             f"alpha*(t) = 2 - 2 Phi(z_(1-alpha/2) / sqrt(t)), t = seeds / max seeds, overall alpha "
             f"{d.get('alpha')}, {'exact' if d.get('exact', True) else 'Bonferroni-over-looks'} nominal boundaries; "
             "each row's raw p is compared with the boundary of its Holm level (alpha / rows not yet rejected, "
             "step-down) at its look. A row is decided when p < boundary; it goes on while a paired test could "
             "find its observed effect with at most 100 seeds, and ends not significant at max seeds. "
             "The verdict column of the claims table above is this sequential verdict; `verdict_fixed_n` in "
             "claims.csv is what the one-look rule says on all the seeds (not error-controlled after looks).", "",
             "| round | seeds | t | boundary at alpha | rows at this look: p vs boundary (Holm level) -> outcome "
             "| trials added after |",
             "|---|---|---|---|---|---|"]
    for r in record.get("rounds", []):
        tests = r.get("tests")
        if tests is None:  # a record without per-row tests: the rows decided there
            tests = [{**x, "status": "decided", "level": float("nan"), "n": None} for x in r.get("decided", [])]
        cells = "; ".join(
            f"{x['claim']} vs {x['worse'] or '-'} ({x['metric']}{'' if x['slice'] == 'all' else ', ' + x['slice']}"
            f"{'' if x.get('n') is None else ', n ' + str(x['n'])}): p {_p(x['p_value'])} vs {_p(x['boundary'])}"
            f"{'' if x.get('level') != x.get('level') else ' (' + format(x['level'], '.3g') + ')'} -> "
            f"{x['status']}" for x in tests) or "-"
        b = r.get("boundary_alpha")
        lines.append(f"| {r['round']} | {r['seeds']} | {r['t']:.2f} | {'-' if b is None else _p(b)} | {cells} | "
                     f"{r.get('trials_added', 0)} |")
    return "\n".join(lines) + "\n"


def _p(v) -> str:
    return "-" if v is None or v != v else f"{v:.2g}" if v < 0.01 else f"{v:.3f}"


def apply_record(table: pd.DataFrame, record: Mapping[str, Any]) -> pd.DataFrame:
    """The claims table with the sequential verdicts of ``record`` in ``verdict`` (rows it
    does not name keep theirs); the one-look verdict on all seeds moves to ``verdict_fixed_n``."""
    seq = {tuple(r["key"]): r["verdict_seq"] for r in record.get("rows", [])}
    out = table.copy()
    out["verdict_fixed_n"] = out["verdict"]
    out["verdict"] = [seq.get(row_key(r), r.verdict) for r in out.itertuples(index=False)]
    return out
