"""``weaklab reproduce RESULTS``: docs/REPRODUCE.md generated from each study folder's
claims.csv (the report is written where it is missing), with date, commit, machine and the
wall time of each run, on a synthetic results folder (no Ray)."""

from __future__ import annotations

import json

import pandas as pd

from weaklab import store
from weaklab.study import STUDIES, Arm, Claim, Study, register_study

NAME = "t-reproduce"


def _results(tmp_path):
    if NAME not in STUDIES:
        register_study(Study(name=NAME, title="t", reproduces="(test)", setting="quantized", arms=(Arm("ce"), Arm("cpu")),
                             claims=(Claim("cpu>ce", metric="best.test_acc", better="cpu", worse="ce"),)))
    root = tmp_path / "results"
    d = root / NAME
    for label, base in (("cpu", 0.85), ("ce", 0.8)):
        for s in range(4):
            row = {"study": NAME, "trial_id": f"{label}{s}", "status": "completed", "label": label, "method": label,
                   "setting": "quantized", "dataset": "digits", "seed": s,
                   "best.test_acc": base + 0.002 * s * (1 if label == "ce" else 2), "best.val_acc": 0.5,
                   "epochs": 1, "best_epoch": 1, "git_commit": "0123456789abcdef", "hostname": "box",
                   "device": "cpu", "cost.cpu_s": 30.0,
                   "started_at": f"2026-12-01T10:0{s}:00+00:00", "ended_at": f"2026-12-01T10:{s + 2:02d}:30+00:00"}
            store.write_trial(str(d), row, [{"epoch": 1, "val_acc": 0.5}])
    # a second study whose claims.csv exists already (its report was run): read as it is
    other = root / "t-other"
    store.write_trial(str(other), {"study": "t-other", "trial_id": "x", "status": "failed", "label": "a", "seed": 0,
                                   "method": "ce", "setting": "quantized", "dataset": "digits",
                                   "started_at": "2026-12-02T00:00:00+00:00", "ended_at": "2026-12-02T01:30:00+00:00"},
                      [{"epoch": 1}])
    (other / "report").mkdir()
    pd.DataFrame([{"claim": "a>b", "kind": "beats", "slice": "all", "better": "a", "worse": "b",
                   "metric": "best.test_acc", "n_pairs": 5, "effect": 0.01, "ci_low": -0.01, "ci_high": 0.03,
                   "sd": 0.02, "p_value": 0.2, "p_holm": 0.2, "mde_80": 0.03, "seeds_needed": 30,
                   "paper_effect": "", "verdict": "undecided (needs 30 seeds)", "verdict_raw": "not significant",
                   "detail": ""}]).to_csv(other / "report" / "claims.csv", index=False)
    (root / "_tune").mkdir()  # Tune's state beside the studies is no study
    return root


def test_reproduce_writes_one_table_with_header_lines(tmp_path, capsys):
    from weaklab.cli import main

    root = _results(tmp_path)
    out = tmp_path / "docs" / "REPRODUCE.md"
    assert main(["reproduce", str(root), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    text = out.read_text()
    assert (root / NAME / "report" / "claims.csv").exists()  # the missing report was written
    assert text.startswith("# Does it reproduce?")
    assert "cores" in text and "commit `" in text and "UTC" in text
    head = next(ln for ln in text.splitlines() if ln.startswith(f"- **{NAME}**"))
    # first start 10:00:00, last end 10:05:30
    assert "8 completed trials, seeds 0-3" in head and "wall 5 min 30 s" in head, head
    assert "commit 0123456789ab" in head and "host box (cpu)" in head and "0.07 CPU-h" in head
    other = next(ln for ln in text.splitlines() if ln.startswith("- **t-other**"))
    assert "1 failed" in other and "wall 1 h 30 min" in other
    table = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert table[0] == "| study | claim | slice | worse | metric | n | effect | p | p Holm | verdict |"
    assert len(table) == 3  # studies in name order
    assert table[2].startswith(f"| {NAME} | cpu>ce | all | ce | best.test_acc | 4 | +0.0530 |") and "**holds**" in table[2]
    assert table[1] == ("| t-other | a>b | all | b | best.test_acc | 5 | +0.0100 | 0.200 | 0.200 | "
                        "**undecided (needs 30 seeds)** |")


def test_reproduce_names_an_until_decided_run(tmp_path):
    from analysis.reproduce import reproduce_markdown

    root = _results(tmp_path)
    (root / NAME / "sequential.json").write_text(json.dumps(
        {"design": {"first": 2, "step": 1, "max_seeds": 4, "alpha": 0.05},
         "rounds": [{"round": 1, "seeds": 2, "t": 0.5, "decided": [], "continuing": 1, "trials_added": 2,
                     "boundary_min": 0.005, "boundary_max": 0.005},
                    {"round": 2, "seeds": 4, "t": 1.0, "decided": [], "continuing": 0, "trials_added": 0,
                     "boundary_min": 0.04, "boundary_max": 0.04}],
         "rows": [{"key": ["cpu>ce", "ce", "best.test_acc", "all"], "verdict_seq": "not significant"}]}))
    text = reproduce_markdown(str(root))
    assert "`--until-decided`: looks at 2, 4 of max 4 seeds, 2 trials added" in text
    row = next(ln for ln in text.splitlines() if ln.startswith(f"| {NAME} |"))
    assert row.endswith("**not significant** |")  # the sequential verdict, not the one-look one
    assert "## Sequential seeds" in (root / NAME / "report" / "report.md").read_text()


def test_reproduce_of_a_folder_without_studies_is_one_line_exit_2(tmp_path, capsys):
    from weaklab.cli import main

    assert main(["reproduce", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no study folder" in err[0]
