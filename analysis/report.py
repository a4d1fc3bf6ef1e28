"""``weaklab report``: Markdown + PNG from a study's Parquet, via the study's registered report."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written on headless machines

from analysis import REPORTS
from analysis.beyond import sections as beyond_sections
from analysis.claims import claims_markdown, evaluate_claims
from analysis.stats import completed, fmt_mean_std, markdown_table
from weaklab.store import load_study

CLAIMS_CSV = "claims.csv"


def generic_report(trials, epochs, out: Path) -> str:
    """Mean ± std over seeds of each label's best-epoch metrics (studies without their own report)."""
    import pandas as pd

    done = completed(trials)
    cols = [c for c in done.columns if c.startswith("best.") and ("test" in c or "val" in c)][:8]
    rows = {label: {c: fmt_mean_std(g[c]) for c in cols} for label, g in done.groupby("label")}
    return markdown_table(pd.DataFrame(rows).T) if rows else "No completed trials."


def study_claims(study: str) -> tuple:
    """The claims the registered study ``study`` declares (none for an unknown study)."""
    from weaklab.study import STUDIES, discover

    discover()
    return STUDIES.get(study).claims if study in STUDIES else ()


def read_record(study_dir: str) -> dict | None:
    """The ``--until-decided`` record of a study folder (``analysis.sequential.RECORD``), or None."""
    import json

    from analysis.sequential import RECORD
    from weaklab import store

    fs, path = store.filesystem(study_dir)
    location = f"{path.rstrip('/')}/{RECORD}"
    import pyarrow.fs as pafs

    if fs.get_file_info(location).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(location) as f:
        return json.loads(f.readall())


def write_report(study_dir: str, out: str | None = None) -> str:
    """Write ``claims.csv``, ``report.md`` (led by the claims' verdicts) and figures;
    returns the path of ``report.md``."""
    trials, epochs = load_study(study_dir)
    out_dir = Path(out or os.path.join(study_dir, "report"))
    out_dir.mkdir(parents=True, exist_ok=True)
    study = str(trials["study"].iloc[0]) if len(trials) else os.path.basename(study_dir.rstrip("/"))
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    claims = evaluate_claims(trials, study_claims(study))
    record = read_record(study_dir)
    if record is not None:  # an --until-decided run: the verdicts its stopping rule licenses
        from analysis.sequential import apply_record

        claims = apply_record(claims, record)
    claims.to_csv(out_dir / CLAIMS_CSV, index=False)
    lines = [f"# {study}", "", f"Source: `{study_dir if '://' in study_dir else os.path.abspath(study_dir)}` (Parquet). Trials: "
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), "",
             "## Does it reproduce?", "",
             "Each claim of the paper tested on this Parquet: effect = mean paired difference better - worse "
             "over seeds (trend: slope of that difference; flat: spread over the axis), in the metric's units "
             "(accuracy and mAP as fractions), 95 % t-interval (flat: bootstrap), paired two-sided t-test. "
             "The verdict reads Holm's adjusted p over this study's whole claim family (p Holm): holds = "
             "right sign and p Holm < 0.05; reversed = wrong sign and p Holm < 0.05; undecided (needs N "
             "seeds) = neither, and a paired test would need N > the seeds run (N <= 100) to find the "
             "observed effect with 80 % power; not significant otherwise. MDE 80% = the smallest effect "
             "these seeds find with 80 % power at the row's Holm level. The raw verdict is the same rule "
             "on the raw p.", "",
             claims_markdown(claims), ""]
    if record is not None:
        from analysis.sequential import rounds_markdown

        lines += [rounds_markdown(record)]
    failed = trials[trials["status"] == "failed"] if len(trials) else trials
    if len(failed):
        lines += ["## Failed trials", ""] + [f"- `{r.trial_id}` {r.label} seed {r.seed}: {r.error}"
                                             for r in failed.itertuples()] + [""]
    fn = REPORTS.get(study) if study in REPORTS else generic_report
    lines.append(fn(trials, epochs, out_dir))
    lines.append(beyond_sections(trials, epochs, out_dir))  # importance, robustness, cost
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return str(path)
