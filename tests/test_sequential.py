"""The group-sequential stopping rule of ``--until-decided`` (``analysis.sequential``), on
synthetic trial frames through the real ``evaluate_claims``: no Ray.

- the boundaries are exact: Monte Carlo first-crossing probabilities of the score process
  equal the O'Brien-Fleming-type spending increments; with one look it is Holm at 0.05;
- over 300 simulated studies a null effect is declared (holds or reversed) at a rate within
  0.05 + 3 sd across all looks, for one claim and for a family of two (family-wise);
- a real effect (d = 1 in paired-difference sd) is found by max seeds with high probability;
- seeds go only to the configurations undecided claims compare (every grid point of their
  arms, in their slice).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import sequential as seq
from analysis.claims import evaluate_claims
from weaklab.study import Claim

METRIC, SELECT = "best.test_acc", "best.val_acc"


def test_spending_function_is_lan_demets_obrien_fleming():
    assert seq.spent_alpha(1.0) == pytest.approx(0.05)
    assert seq.spent_alpha(0.0) == 0.0
    # 2 - 2 Phi(1.96 / sqrt(1/3)) = 2 - 2 Phi(3.395)
    assert seq.spent_alpha(1 / 3) == pytest.approx(6.869e-4, rel=1e-3)
    ts = np.linspace(0.05, 1, 20)
    assert np.all(np.diff([seq.spent_alpha(t) for t in ts]) > 0)


def test_seed_schedule():
    assert seq.seed_schedule(first=5, step=5, max_seeds=15) == [5, 10, 15]
    assert seq.seed_schedule(first=5, step=4, max_seeds=15) == [5, 9, 13, 15]
    assert seq.seed_schedule(first=5, step=5, max_seeds=5) == [5]


@pytest.mark.parametrize("ts", [(1 / 3, 2 / 3, 1.0), (0.25, 0.5, 0.75, 1.0), (0.4, 1.0)])
def test_exact_boundaries_spend_exactly_the_increments(ts):
    """Brownian score process at the looks: the probability of first crossing the z
    boundaries at look k is alpha*(t_k) - alpha*(t_{k-1}) (Monte Carlo, 2e6 paths)."""
    z = np.array(seq._z_boundaries(tuple(ts), 0.05, 801))
    rng = np.random.default_rng(0)
    n = 2_000_000
    s = np.cumsum(rng.standard_normal((n, len(ts))) * np.sqrt(np.diff([0.0, *ts])), axis=1)
    cross = np.abs(s / np.sqrt(ts)) >= z
    first = np.where(cross.any(axis=1), cross.argmax(axis=1), -1)
    want = np.diff([0.0, *[seq.spent_alpha(t) for t in ts]])
    got = np.array([(first == k).mean() for k in range(len(ts))])
    sd = np.sqrt(want * (1 - want) / n)
    assert np.all(np.abs(got - want) < 4 * sd + 1e-6), (got, want)
    assert (first >= 0).mean() == pytest.approx(0.05, abs=4 * math.sqrt(0.05 * 0.95 / n))


def test_bonferroni_over_looks_is_more_conservative_and_final_exact_is_below_alpha():
    ts = (1 / 3, 2 / 3, 1.0)
    exact, bonf = seq.nominal_boundaries(ts), seq.nominal_boundaries(ts, exact=False)
    assert exact[0] == pytest.approx(bonf[0])  # the first look spends the same
    assert np.all(exact[1:] > bonf[1:]) and exact[-1] < 0.05
    assert seq.nominal_boundaries((1.0,))[0] == pytest.approx(0.05)


def frame(effects: dict[str, float], seeds: range, *, rng, configs: dict[str, list[dict]] | None = None) -> pd.DataFrame:
    """Synthetic trials rows: label x config x seed, metric = arm effect + seed effect + noise
    (paired by seed through the seed effect), validation a noisy copy."""
    rows = []
    seed_fx = {s: float(v) for s, v in zip(seeds, rng.normal(0, 1, len(seeds)))}
    for label, mu in effects.items():
        for cfg in (configs or {}).get(label, [{}]):
            for s in seeds:
                y = mu + seed_fx[s] + rng.normal(0, 1 / math.sqrt(2))  # paired diff sd 1
                rows.append({"study": "syn", "trial_id": f"{label}-{len(rows)}", "status": "completed",
                             "label": label, "seed": s, METRIC: y, SELECT: y + rng.normal(0, 0.1), **cfg})
    return pd.DataFrame(rows)


def simulate(effects: dict[str, float], claims, *, rng, first=5, step=5, max_seeds=15):
    """One study run the --until-decided way: the loop of :func:`seq.run_rounds` with
    seeds added (new rows drawn) only for the configurations it asks for."""
    schedule = seq.seed_schedule(first=first, step=step, max_seeds=max_seeds)
    seed_fx = rng.normal(0, 1, max_seeds)
    store: list[dict] = []

    def draw(label, s):
        y = effects[label] + seed_fx[s] + rng.normal(0, 1 / math.sqrt(2))
        store.append({"study": "syn", "trial_id": f"{label}-{s}", "status": "completed", "label": label, "seed": s,
                      METRIC: y, SELECT: y})

    for label in effects:
        for s in range(first):
            draw(label, s)
    added = []

    def evaluate(n):
        df = pd.DataFrame(store)
        return evaluate_claims(df[df["seed"] < n], claims)

    def add_seeds(rows, seeds):
        configs = [{"label": label} for label in effects]
        for i in seq.configs_for(rows, claims, configs):
            for s in seeds:
                draw(configs[i]["label"], s)
                added.append((configs[i]["label"], s))

    table, rounds = seq.run_rounds(evaluate=evaluate, add_seeds=add_seeds, schedule=schedule, claims=claims)
    return table, rounds, added


N_SIM = 300


def _rate_bound(p=0.05, n=N_SIM):
    return p + 3 * math.sqrt(p * (1 - p) / n)


def test_null_effect_is_declared_at_the_nominal_rate_over_all_looks():
    rng = np.random.default_rng(1)
    claims = (Claim("a>b", metric=METRIC, select=SELECT, better="a", worse="b"),)
    declared, seeds_run = 0, []
    for _ in range(N_SIM):
        table, rounds, _ = simulate({"a": 0.0, "b": 0.0}, claims, rng=rng)
        declared += bool(table["verdict_seq"].isin(["holds", "reversed"]).any())
        seeds_run.append(rounds[-1]["seeds"])
    rate = declared / N_SIM
    assert rate <= _rate_bound(), rate
    assert max(seeds_run) == 15 and min(seeds_run) == 5  # some nulls are stopped for futility, some run on


def test_null_family_keeps_the_family_wise_rate():
    rng = np.random.default_rng(2)
    claims = (Claim("a>b", metric=METRIC, select=SELECT, better="a", worse="b"),
              Claim("c>b", metric=METRIC, select=SELECT, better="c", worse="b"))
    any_declared = 0
    for _ in range(N_SIM):
        table, _, _ = simulate({"a": 0.0, "b": 0.0, "c": 0.0}, claims, rng=rng)
        assert len(table) == 2
        any_declared += bool(table["verdict_seq"].isin(["holds", "reversed"]).any())
    assert any_declared / N_SIM <= _rate_bound(), any_declared / N_SIM


def test_real_effect_is_found_by_max_seeds():
    rng = np.random.default_rng(3)
    claims = (Claim("a>b", metric=METRIC, select=SELECT, better="a", worse="b"),)
    found, wrong = 0, 0
    for _ in range(150):
        table, rounds, _ = simulate({"a": 1.0, "b": 0.0}, claims, rng=rng)
        found += table["verdict_seq"].iloc[0] == "holds"
        wrong += table["verdict_seq"].iloc[0] == "reversed"
    # one-look t-test at n = 15, d = 1, alpha 0.05 has power 0.95; the looks and the
    # futility stop at 5 seeds (an observed d below ~0.3) cost a few points of it
    assert found / 150 >= 0.8, found
    assert wrong == 0


def test_decided_rows_stay_decided_and_seeds_go_only_to_undecided_comparisons():
    """Claim a>b is strong (decided at the first look), c>d is weaker: only c and d get
    seeds, and a>b keeps its first-look verdict."""
    rng = np.random.default_rng(4)
    claims = (Claim("a>b", metric=METRIC, select=SELECT, better="a", worse="b"),
              Claim("c>d", metric=METRIC, select=SELECT, better="c", worse="d"))
    for _ in range(50):
        table, rounds, added = simulate({"a": 6.0, "b": 0.0, "c": 0.8, "d": 0.0}, claims, rng=rng)
        row = table.set_index("claim").loc["a>b"]
        if row["round_decided"] == 1 and len(rounds) > 1:
            assert {label for label, _ in added} <= {"c", "d"}
            assert row["verdict_seq"] == "holds"
            assert rounds[0]["decided"][0]["claim"] == "a>b"
            return
    pytest.fail("no simulated study decided a>b at the first look and went on")


def test_configs_for_takes_every_grid_point_of_the_arms_in_the_slice():
    claims = (Claim("tau*>homo", metric=METRIC, select=SELECT, better="het", worse="homo", slice_by=("setting.rate",)),
              Claim("tau*>tau=1", metric=METRIC, select=SELECT, better="het", worse="het",
                    worse_where={"hp.tau": 1.0}),)
    configs = [{"label": "het", "hp.tau": t, "setting.rate": r} for t in (0.5, 1.0, 2.0) for r in (0.2, 0.4)]
    configs += [{"label": "homo", "setting.rate": r} for r in (0.2, 0.4)]
    configs += [{"label": "other", "setting.rate": 0.2}]
    rows = pd.DataFrame([{"claim": "tau*>homo", "worse": "homo", "metric": METRIC, "slice": "setting.rate=0.4"}])
    got = [configs[i] for i in seq.configs_for(rows, claims, configs)]
    assert got == [c for c in configs if c["label"] in ("het", "homo") and c["setting.rate"] == 0.4]
    rows = pd.DataFrame([{"claim": "tau*>tau=1", "worse": "het", "metric": METRIC, "slice": "all"}])
    got = [configs[i] for i in seq.configs_for(rows, claims, configs)]
    assert got == [c for c in configs if c["label"] == "het"]  # tau* is chosen over every tau


def test_one_look_is_holm_at_alpha():
    """With max seeds = the seeds run there is one look: the sequential verdicts are the
    report's Holm verdicts (holds / reversed at p Holm < 0.05)."""
    rng = np.random.default_rng(5)
    claims = (Claim("a>b", metric=METRIC, select=SELECT, better="a", worse=("b", "c")),)
    for _ in range(30):
        df = frame({"a": 1.0, "b": 0.2, "c": 0.0}, range(8), rng=rng)
        table = evaluate_claims(df, claims)
        out = seq.look(table, schedule=[8], higher={"a>b": True})
        fixed = table["verdict"].isin(["holds", "reversed"])
        assert (out["status"] == "decided").tolist() == fixed.tolist()


def test_the_report_section_shows_each_rows_p_against_its_boundary():
    rng = np.random.default_rng(6)
    claims = (Claim("a>b", metric=METRIC, select=SELECT, better="a", worse="b"),)
    table, rounds, _ = simulate({"a": 0.6, "b": 0.0}, claims, rng=rng)
    text = seq.rounds_markdown({"design": {"first": 5, "step": 5, "max_seeds": 15, "alpha": 0.05}, "rounds": rounds})
    assert "## Sequential seeds" in text and "O'Brien-Fleming" in text
    first = next(ln for ln in text.splitlines() if ln.startswith("| 1 | 5 | 0.33 | 0.00069 |"))
    assert "a>b vs b (best.test_acc, n 5): p " in first and "vs 0.00069 (0.05) -> " in first
    assert len([ln for ln in text.splitlines() if ln.startswith("| ") and ln[2].isdigit()]) == len(rounds)
