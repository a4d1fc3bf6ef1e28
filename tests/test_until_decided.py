"""``weaklab run STUDY --until-decided`` end to end through Ray, on a tiny registered study.

Two arms of one method on digits, one that learns (lr 1e-3) and one that cannot
(lr 1e-30), so the claim "learns > frozen" is large but, with 2 seeds (1 degree of
freedom), far from the first look's boundary (0.0007 at 2 of 6 seeds): the first look
continues, a round adds seeds 2-3 to both arms, and the second look decides it (or the
third does). Every (arm, seed) is stored once, the run stops, and the report carries the
rounds. A rerun with ``--resume`` replays the looks, adds nothing and writes no trial file
again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = "ft-tiny-sequential"

DRIVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from studies import Arm, Study, register_study
    from weaklab.study import Claim

    register_study(Study(
        name={study!r}, title="until-decided test study", reproduces="(test)", setting="noise",
        fixed={{"setting.protocol": "none", "train.arch": "mlp", "train.width": 0.25, "train.batch_size": 64,
               "train.epochs": 2, "train.patience": 0}},
        arms=(Arm("homoscedastic", label="learns", fixed={{"train.lr": 1e-3}}),
              Arm("homoscedastic", label="frozen", fixed={{"train.lr": 1e-30}})),
        seeds=2, metric="best.val_acc",
        claims=(Claim("learns>frozen", metric="best.test_acc", better="learns", worse="frozen"),)))

    from weaklab.cli import main
    sys.exit(main(["run", {study!r}, *sys.argv[1:]]))
""")


def _run(tmp_path, *args):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=ROOT, study=STUDY))
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "1"}
    return subprocess.run([sys.executable, str(script), "--results", str(tmp_path / "results"), *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_until_decided_adds_seeds_keeps_finished_trials_and_stops(tmp_path):
    from weaklab import store

    study_dir = tmp_path / "results" / STUDY
    seq = _run(tmp_path, "--until-decided", "--max-seeds", "6", "--seeds-per-round", "2")
    assert seq.returncode == 0, seq.stderr[-3000:]
    rows = store.load_study(str(study_dir))[0]
    assert len(rows) > 4 and not rows.duplicated(["label", "seed"]).any()
    assert set(rows["seed"]) >= {0, 1, 2, 3}
    record = json.loads((study_dir / "sequential.json").read_text())
    assert record["design"]["schedule"] == [2, 4, 6]
    assert record["rounds"][0]["continuing"] == 1 and record["rounds"][0]["trials_added"] == 4
    assert len(rows) == 4 + sum(r["trials_added"] for r in record["rounds"])
    assert record["rows"][0]["verdict_seq"] == "holds"  # decided at look 2 or 3: the run stopped
    report = (study_dir / "report" / "report.md").read_text()
    assert "## Sequential seeds" in report
    claims = (study_dir / "report" / "claims.csv").read_text()
    assert "verdict_fixed_n" in claims.splitlines()[0]
    # again, resumed: the looks replay the same decisions, every trial a round asks for is
    # stored, so nothing runs and no trial file is written again
    before = {f: os.path.getmtime(study_dir / "trials" / f) for f in os.listdir(study_dir / "trials")}
    again = _run(tmp_path, "--until-decided", "--max-seeds", "6", "--seeds-per-round", "2", "--resume", "--no-report")
    assert again.returncode == 0, again.stderr[-3000:]
    after = {f: os.path.getmtime(study_dir / "trials" / f) for f in os.listdir(study_dir / "trials")}
    assert after == before
    assert "0 not yet run" in again.stdout
    assert json.loads((study_dir / "sequential.json").read_text())["rows"] == record["rows"]


def test_a_round_asks_only_for_trials_not_stored(tmp_path):
    """No Ray: the runner's round planning on tau-sweep. Stored trials (seeds 0-4, with a
    --set value still a string in the configs) are never asked for again; new seeds are new
    trials at the same configurations; the claim tau*>homoscedastic compares them all."""
    import pandas as pd

    from analysis.sequential import configs_for
    from weaklab import store
    from weaklab.tune.runner import _not_stored, _seed_trials, prepare

    plan = prepare("tau-sweep", build_data=False, sets=["train.epochs=7"])
    d = str(tmp_path / "tau-sweep")
    for i, t in enumerate(plan.trials):
        row = store.trial_row(study="tau-sweep", trial_id=f"t{i}", trial=t, status="completed",
                              history=[{"epoch": 1, "val_acc": 0.5, "best_epoch": 1}])
        store.write_trial(d, row, [{"epoch": 1, "val_acc": 0.5}])
    assert _not_stored(plan.trials, d) == []
    new = _seed_trials(plan, d, [5, 6])
    from studies.tau_sweep import DIGITS_TAUS

    # every heteroscedastic tau and homoscedastic, at the two new seeds
    assert len(new) == 2 * (len(DIGITS_TAUS) + 1) and {t.seed for t in new} == {5, 6} and {t.train.epochs for t in new} == {7}
    assert _not_stored(new, d) == new
    rows = pd.DataFrame([{"claim": "tau*>homoscedastic", "worse": "homoscedastic", "metric": "best.test_noisy_ll",
                          "slice": "all"}])
    assert len(configs_for(rows, plan.study.claims, [t.config for t in new])) == len(new)
    rows = pd.DataFrame([{"claim": "tau*>tau=1", "worse": "heteroscedastic", "metric": "best.test_noisy_ll",
                          "slice": "all"}])
    assert len(configs_for(rows, plan.study.claims, [t.config for t in new])) == 2 * len(DIGITS_TAUS)  # every tau: tau* is chosen
