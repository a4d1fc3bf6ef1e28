"""Claims: verdicts on hand-built trials frames whose answers are known, scipy's p-values,
every registered study's claims valid, and ``weaklab report --check``'s exit status."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.claims import COLUMNS, evaluate_claims
from weaklab.registry import ConfigError
from weaklab.study import STUDIES, Arm, Claim, Study, check_claims, discover, package_studies, register_study

discover()


def frame(arms: dict[str, dict], seeds=range(6), **cols) -> pd.DataFrame:
    """label -> {"test": per-seed values or f(seed), "val": ..., extra columns} as a trials frame."""
    rows = []
    for label, spec in arms.items():
        for s in seeds:
            row = {"study": "t", "trial_id": f"{label}-{s}-{len(rows)}", "status": "completed", "label": label,
                   "method": label, "seed": s}
            for k, v in spec.items():
                row[k] = v(s) if callable(v) else v
            rows.append(row)
    return pd.DataFrame(rows)


def noise(scale, offset=0):
    rng = np.random.default_rng(offset)
    draws = rng.normal(0, scale, size=100)
    return lambda s: draws[s]


BEATS = Claim("a>b", metric="best.test_acc", better="a", worse="b")


def test_clear_win_holds_with_scipys_p():
    base = noise(0.02, 1)
    df = frame({"a": {"best.test_acc": lambda s: 0.8 + base(s) + 0.03 + noise(0.005, 2)(s)},
                "b": {"best.test_acc": lambda s: 0.8 + base(s)}})
    row = evaluate_claims(df, [BEATS]).iloc[0]
    a = df[df.label == "a"].sort_values("seed")["best.test_acc"].to_numpy()
    b = df[df.label == "b"].sort_values("seed")["best.test_acc"].to_numpy()
    assert row.verdict == "holds" and row.n_pairs == 6
    assert row.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
    assert row.effect == pytest.approx((a - b).mean())
    assert row.ci_low < row.effect < row.ci_high and row.ci_low > 0
    assert list(evaluate_claims(df, [BEATS]).columns) == COLUMNS


def test_clear_loss_is_reversed_and_noise_is_not_significant():
    df = frame({"a": {"best.test_acc": lambda s: 0.7 + 0.001 * s}, "b": {"best.test_acc": lambda s: 0.8 + 0.002 * s}})
    assert evaluate_claims(df, [BEATS]).iloc[0].verdict == "reversed"
    df = frame({"a": {"best.test_acc": noise(0.05, 3)}, "b": {"best.test_acc": noise(0.05, 4)}})
    row = evaluate_claims(df, [BEATS]).iloc[0]
    assert row.verdict == "not significant" and row.p_value > 0.05


def test_lower_is_better_flips_the_expected_sign():
    df = frame({"a": {"best.test_acc": lambda s: 0.7 + 0.001 * s}, "b": {"best.test_acc": lambda s: 0.8 + 0.002 * s}})
    claim = Claim("a<b", metric="best.test_acc", better="a", worse="b", higher_is_better=False)
    assert evaluate_claims(df, [claim]).iloc[0].verdict == "holds"


def test_missing_arm_or_slice_is_not_run():
    df = frame({"a": {"best.test_acc": 0.9}})
    row = evaluate_claims(df, [BEATS]).iloc[0]
    assert row.verdict == "not run" and "'b'" in row.detail
    assert evaluate_claims(df.iloc[:0], [BEATS]).iloc[0].verdict == "not run"
    sliced = Claim("a>b", metric="best.test_acc", better="a", worse="b", slice_by=("setting.mix",))
    assert evaluate_claims(df, [sliced]).iloc[0].verdict == "not run"


def test_one_row_per_slice_metric_and_worse_arm():
    df = pd.concat([frame({"a": {"best.test_acc": lambda s: 0.9 + 0.01 * s, "best.test_acc_few": 0.5, "setting.mix": m},
                           "b": {"best.test_acc": 0.5, "best.test_acc_few": 0.4, "setting.mix": m},
                           "c": {"best.test_acc": 0.6, "best.test_acc_few": 0.3, "setting.mix": m}})
                    for m in ("mixup", "patchmix")], ignore_index=True)
    claim = Claim("a>b,c", metric=("best.test_acc", "best.test_acc_few"), better="a", worse=("b", "c"),
                  slice_by=("setting.mix",))
    out = evaluate_claims(df, [claim])
    assert len(out) == 2 * 2 * 2
    assert set(out.slice) == {"setting.mix=mixup", "setting.mix=patchmix"}
    # identical paired differences (zero variance): scipy's own answer, whatever it is, is kept
    few = out[out.metric == "best.test_acc_few"]
    assert (few.effect > 0).all()


def test_hyperparameters_are_chosen_on_validation_seed_mean_never_on_test():
    # hp.tau = 1: best validation, worse test; hp.tau = 5: worse validation, best test
    rows = []
    for tau, val, test in ((1.0, 0.9, 0.70), (5.0, 0.8, 0.95)):
        rows.append(frame({"a": {"hp.tau": tau, "best.val_acc": val, "best.test_acc": lambda s, t=test: t + 0.001 * s}}))
    rows.append(frame({"b": {"best.test_acc": lambda s: 0.6 + 0.002 * s}}))
    out = evaluate_claims(pd.concat(rows, ignore_index=True), [BEATS]).iloc[0]
    assert out.effect == pytest.approx(0.70 - 0.6 + np.mean([-0.001 * s for s in range(6)]))


def test_worse_where_compares_against_one_grid_point():
    rows = [frame({"het": {"hp.tau": tau, "best.val_ll": -1 + 0.1 * tau, "best.test_noisy_ll": lambda s, t=tau: -1 + 0.1 * t + 0.001 * s}})
            for tau in (0.5, 1.0, 2.0)]
    claim = Claim("tau*>tau=1", metric="best.test_noisy_ll", select="best.val_ll", better="het", worse="het",
                  worse_where={"hp.tau": 1.0})
    out = evaluate_claims(pd.concat(rows, ignore_index=True), [claim]).iloc[0]
    assert out.effect == pytest.approx(0.1)  # tau* = 2 against tau = 1


def test_select_phase_rows_are_ignored_when_a_final_phase_exists():
    final = frame({"a": {"best.test_acc": lambda s: 0.9 + 0.001 * s, "phase": "final"},
                   "b": {"best.test_acc": lambda s: 0.8 + 0.002 * s, "phase": "final"}})
    select = frame({"a": {"best.test_acc": 0.1, "phase": "select"}}, seeds=[0])
    out = evaluate_claims(pd.concat([final, select], ignore_index=True), [BEATS]).iloc[0]
    assert out.n_pairs == 6 and out.verdict == "holds"


def test_trend_claim_detects_a_gain_growing_with_log_bag_size():
    rows = []
    for bag in (16, 32, 64, 128):
        gain = 0.02 * np.log2(bag)
        rows.append(frame({"plot": {"setting.bag_size": bag, "final.test_acc": lambda s, g=gain: 0.5 + g + noise(0.003, 5)(s)},
                           "dllp": {"setting.bag_size": bag, "final.test_acc": 0.5}}))
    claim = Claim("grows", kind="trend", metric="final.test_acc", better="plot", worse="dllp",
                  axis="setting.bag_size", log_axis=True)
    out = evaluate_claims(pd.concat(rows, ignore_index=True), [claim]).iloc[0]
    assert out.verdict == "holds" and out.effect == pytest.approx(0.02, abs=0.003)
    shrinking = pd.concat(rows, ignore_index=True)
    shrinking["final.test_acc"] = np.where(shrinking.label == "plot", 1.5 - shrinking["final.test_acc"], 0.5)
    assert evaluate_claims(shrinking, [claim]).iloc[0].verdict == "reversed"


@pytest.mark.parametrize("spread,verdict", [(0.002, "holds"), (0.2, "reversed")])
def test_flat_claim(spread, verdict):
    rows = [frame({"pi1": {"hp.pi1": p, "best.test_acc": lambda s, p=p: 0.8 + spread * p / 0.3 + noise(0.001, 6)(s)}})
            for p in (0.05, 0.1, 0.2, 0.3, 0.7)]
    claim = Claim("flat", kind="flat", metric="best.test_acc", better="pi1", axis="hp.pi1", axis_range=(0.05, 0.3),
                  within=0.02)
    out = evaluate_claims(pd.concat(rows, ignore_index=True), [claim]).iloc[0]
    assert out.verdict == verdict
    assert out.effect == pytest.approx(spread * (0.3 - 0.05) / 0.3, abs=0.004)  # 0.7 is outside the range


@pytest.mark.parametrize("name", package_studies())
def test_every_registered_studys_claims_name_its_own_arms_and_slices(name):
    study = STUDIES.get(name)
    assert study.claims, f"{name} declares no claims"
    check_claims(study)
    labels = {a.label or a.method for a in study.arms}
    for c in study.claims:
        assert c.better in labels and set(c.worse_labels()) <= labels | {""}
        assert c.paper_effect


@pytest.mark.parametrize("bad,match", [
    ({"better": "nope"}, "arm='nope'"),
    ({"metric": "best.tset_acc"}, "metric='best.tset_acc'"),
    ({"select": "best.test_acc"}, "select='best.test_acc'"),
    ({"slice_by": ("setting.nope",)}, "column='setting.nope'"),
    ({"where": {"setting.mix": "cutmix"}}, "setting.mix='cutmix'"),
])
def test_a_claim_naming_what_the_study_lacks_fails_at_registration(bad, match):
    kw = {"name": "c", "metric": "best.test_acc", "better": "ce", "worse": "cpu", **bad}
    study = Study(name="t-bad-claim", title="t", reproduces="(test)", setting="quantized",
                  grid={"setting.mix": ("mixup",)}, arms=(Arm("ce"), Arm("cpu")), claims=(Claim(**kw),))
    with pytest.raises(ConfigError, match=match.replace("(", r"\(").replace(")", r"\)")):
        register_study(study)
    assert "t-bad-claim" not in STUDIES


def _study_dir(tmp_path, gap: float):
    from weaklab import store

    name = f"t-claims-check-{gap:+.2f}".replace(".", "p")
    if name not in STUDIES:
        register_study(Study(name=name, title="t", reproduces="(test)", setting="quantized",
                             arms=(Arm("ce"), Arm("cpu")),
                             claims=(Claim("cpu>ce", metric="best.test_acc", better="cpu", worse="ce"),)))
    d = tmp_path / name
    for label, base in (("cpu", 0.8 + gap), ("ce", 0.8)):
        for s in range(4):
            row = {"study": name, "trial_id": f"{label}{s}", "status": "completed", "label": label, "method": label,
                   "setting": "quantized", "dataset": "digits",
                   "seed": s, "best.test_acc": base + 0.001 * s * (1 if label == "ce" else 2),
                   "best.val_acc": 0.5, "epochs": 1, "best_epoch": 1}
            store.write_trial(str(d), row, [{"epoch": 1, "val_acc": 0.5}])
    return d


@pytest.mark.parametrize("gap,code", [(-0.05, 1), (0.05, 0)])
def test_report_check_exits_1_only_when_a_claim_is_reversed(tmp_path, capsys, gap, code):
    from weaklab.cli import main

    d = _study_dir(tmp_path, gap)
    assert main(["report", str(d), "--check"]) == code
    out = capsys.readouterr().out
    assert ("reversed" if code else "holds") in out
    csv = pd.read_csv(d / "report" / "claims.csv")
    assert list(csv.columns) == COLUMNS and len(csv) == 1
    assert (d / "report" / "report.md").read_text().index("Does it reproduce?") < 200
    assert main(["report", str(d)]) == 0  # without --check a reversed claim is reported, not fatal


def test_report_on_a_folder_without_parquet_is_one_line_exit_2(tmp_path, capsys):
    from weaklab.cli import main

    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing" in err[0]


def test_claims_csv_round_trip_keeps_empty_text_for_a_flat_claim(tmp_path):
    """A flat claim has no ``worse`` arm: read back from claims.csv it must print as '-',
    not crash the terminal table (pandas reads an empty cell as NaN)."""
    from analysis.claims import claims_markdown, claims_terminal, read_claims

    table = pd.DataFrame([
        {"claim": "cpu flat", "kind": "flat", "slice": "all", "better": "cpu", "worse": "", "metric": "best.test_acc",
         "n_pairs": 5, "effect": 0.02, "ci_low": 0.01, "ci_high": 0.03, "p_value": float("nan"),
         "paper_effect": "", "verdict": "holds", "detail": ""},
        {"claim": "cpu>ce", "kind": "beats", "slice": "setting.mix=mixup", "better": "cpu", "worse": "ce",
         "metric": "best.test_acc", "n_pairs": 5, "effect": 0.01, "ci_low": -0.01, "ci_high": 0.02, "p_value": 0.2,
         "paper_effect": "+8.0", "verdict": "not significant", "detail": "better at hp.lr=0.1"}], columns=COLUMNS)
    table.to_csv(tmp_path / "claims.csv", index=False)
    back = read_claims(tmp_path / "claims.csv")
    assert back.loc[0, "worse"] == "" and back.loc[1, "worse"] == "ce"
    assert back["p_value"].isna().tolist() == [True, False]
    text = claims_terminal(back)
    assert "cpu flat" in text and "not significant" in text
    assert "| cpu flat | all | cpu | - |" in claims_markdown(back)


# --- multiplicity and power (issue 27) ---------------------------------------------------

def test_holm_matches_the_step_down_by_hand():
    from analysis.stats import holm, holm_levels

    p = [0.01, 0.04, float("nan"), 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4*0.005, 3*0.01, max(.., 2*0.03), max(.., 1*0.04)
    assert np.allclose(holm(p), [0.03, 0.06, np.nan, 0.06, 0.02], equal_nan=True)
    assert np.allclose(holm_levels(p), [0.05 / 3, 0.05, np.nan, 0.05 / 2, 0.05 / 4], equal_nan=True)


def test_power_agrees_with_the_textbook_paired_t():
    """Cohen's d = 0.5 needs 34 pairs for 80 % power at alpha 0.05 (G*Power, paired t); the
    minimum detectable effect with 10 pairs is ~1.0 sd; power at d = 0 is alpha."""
    from analysis.stats import paired_mde, paired_power, seeds_needed

    assert seeds_needed(0.5, 1.0) == 34
    assert paired_mde(1.0, 10) == pytest.approx(0.996, abs=0.01)
    assert paired_power(0.0, 8) == pytest.approx(0.05, abs=1e-6)
    assert paired_power(1.0, 34) > paired_power(1.0, 10) > paired_power(0.5, 10)


def test_a_family_of_claims_is_held_to_holm_and_the_raw_verdict_stays():
    """Four claims at raw p ~ 0.02-0.04: each holds alone, none after Holm over four, and
    their power says how many seeds would decide them."""
    base = np.random.default_rng(0).normal(0, 0.02, 6)
    z = np.array([1.2, -0.9, 0.3, -1.4, 0.5, 0.3])
    z = (z - z.mean()) / z.std(ddof=1)  # paired differences 0.01 + 0.0085 z: t = 2.9, p = 0.034
    arms = {"a": {"best.test_acc": lambda s: 0.8 + base[s]}}
    for k in range(4):
        arms[f"b{k}"] = {"best.test_acc": lambda s, k=k: 0.8 + base[s] - 0.01 - 0.0085 * np.roll(z, k)[s]}
    claim = Claim("a>b", metric="best.test_acc", better="a", worse=tuple(f"b{k}" for k in range(4)))
    out = evaluate_claims(frame(arms, seeds=range(6)), [claim])
    assert (out.p_value < 0.05).all() and (out.verdict_raw == "holds").all()
    assert (out.p_holm >= 0.05).any()
    assert np.allclose(out.p_holm, np.minimum(1, out.p_holm), equal_nan=True)
    for r in out.itertuples():
        assert r.p_holm >= r.p_value
        if r.p_holm >= 0.05:
            assert r.verdict == f"undecided (needs {int(r.seeds_needed)} seeds)" and r.seeds_needed > 6
        assert r.mde_80 > 0


def test_null_claims_are_falsely_declared_at_the_nominal_family_rate():
    """200 simulated 5-seed studies of 4 null claims each: Holm keeps the share of studies
    with any holds/reversed near 0.05 (binomial sd ~1.5 %), raw p near 1 - 0.95^4 = 0.19."""
    rng = np.random.default_rng(1)
    claim = Claim("a>b", metric="best.test_acc", better="a", worse=("b0", "b1", "b2", "b3"))
    any_adj = any_raw = 0
    for _ in range(200):
        draws = rng.normal(0, 0.02, size=(5, 5))
        arms = {lab: {"best.test_acc": lambda s, i=i: 0.8 + draws[i, s]} for i, lab in enumerate(("a", "b0", "b1", "b2", "b3"))}
        out = evaluate_claims(frame(arms, seeds=range(5)), [claim])
        any_adj += out.verdict.isin(["holds", "reversed"]).any()
        any_raw += out.verdict_raw.isin(["holds", "reversed"]).any()
    assert any_adj / 200 <= 0.05 + 3 * 0.0154 and any_raw / 200 > 0.10
