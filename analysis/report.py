"""``weaklab report``: Markdown + PNG from a study's Parquet, via the study's registered report."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written on headless machines

from analysis import REPORTS
from analysis.stats import completed, fmt_mean_std, markdown_table
from weaklab.store import load_study


def generic_report(trials, epochs, out: Path) -> str:
    """Mean ± std over seeds of each label's best-epoch metrics (studies without their own report)."""
    import pandas as pd

    done = completed(trials)
    cols = [c for c in done.columns if c.startswith("best.") and ("test" in c or "val" in c)][:8]
    rows = {label: {c: fmt_mean_std(g[c]) for c in cols} for label, g in done.groupby("label")}
    return markdown_table(pd.DataFrame(rows).T) if rows else "No completed trials."


def write_report(study_dir: str, out: str | None = None) -> str:
    """Write ``report.md`` and figures; returns the path of ``report.md``."""
    trials, epochs = load_study(study_dir)
    out_dir = Path(out or os.path.join(study_dir, "report"))
    out_dir.mkdir(parents=True, exist_ok=True)
    study = str(trials["study"].iloc[0]) if len(trials) else os.path.basename(study_dir.rstrip("/"))
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    lines = [f"# {study}", "", f"Source: `{os.path.abspath(study_dir)}` (Parquet). Trials: "
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), ""]
    failed = trials[trials["status"] == "failed"] if len(trials) else trials
    if len(failed):
        lines += ["## Failed trials", ""] + [f"- `{r.trial_id}` {r.label} seed {r.seed}: {r.error}"
                                             for r in failed.itertuples()] + [""]
    fn = REPORTS.get(study) if study in REPORTS else generic_report
    lines.append(fn(trials, epochs, out_dir))
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return str(path)
