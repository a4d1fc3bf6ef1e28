"""``weaklab reproduce RESULTS``: the "Does it reproduce?" table, generated, never hand-copied.

Reads each study folder of a results root (one with a ``trials/`` folder), its
``report/claims.csv`` (writing the report first where it is missing, as ``weaklab report``
would), and writes one Markdown file: a header naming when and where it was generated
(date, the checkout's git commit, the machine's CPU model and cores), one header line per
study (trials by status, seeds, the commits and hosts its trials ran at, the run's dates
and wall time, the ``--until-decided`` looks if any), and one table of every claim row:
study, claim, slice, worse, metric, n, effect, p, p Holm, verdict.

Wall time of a run is the span from the first trial's ``started_at`` to the last trial's
``ended_at`` (the driver's clock, UTC, written by the Parquet callback): the study's
elapsed time with every trial it ran, including an ``--until-decided`` run's rounds, and
any pause between an interrupted run and its ``--resume``. Beside it, the trials' summed
``cost.cpu_s`` (CPU seconds of the trial processes, which does not grow with the load).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from typing import Any

import pandas as pd

from analysis.claims import read_claims
from analysis.report import CLAIMS_CSV, read_record, write_report
from weaklab.store import load_study

DEFAULT_OUT = os.path.join("docs", "REPRODUCE.md")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> str:
    """``CPU model, N cores`` of this machine (the cores the OS lets this process use)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_model()}, {cores} cores ({platform.system()} {platform.release()}, {platform.node()})"


def git_commit(cwd: str | None = None) -> str:
    """The checkout's HEAD commit (with ``+dirty`` when tracked files differ), '' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=cwd).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=cwd).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if head and dirty else "")


def study_dirs(results: str) -> list[str]:
    """The study folders of a results root (those with a ``trials/`` folder), sorted; a
    study folder itself is its own only study."""
    if os.path.isdir(os.path.join(results, "trials")):
        return [results]
    if not os.path.isdir(results):
        raise FileNotFoundError(f"{results} is not a folder: give a results root such as results/")
    out = sorted(os.path.join(results, d) for d in os.listdir(results)
                 if not d.startswith(("_", ".")) and os.path.isdir(os.path.join(results, d, "trials")))
    if not out:
        raise FileNotFoundError(f"{results} holds no study folder (a folder with trials/): nothing to reproduce")
    return out


def _times(trials: pd.DataFrame) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    def col(c):
        if c not in trials:
            return pd.Series([], dtype="datetime64[ns, UTC]")
        return pd.to_datetime(trials[c].replace("", None), utc=True, errors="coerce").dropna()

    start, end = col("started_at"), col("ended_at")
    return (start.min() if len(start) else None), (end.max() if len(end) else None)


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


def study_summary(study_dir: str, trials: pd.DataFrame) -> dict[str, Any]:
    """What the header line of one study says, from its trials frame."""
    start, end = _times(trials)
    counts = trials["status"].value_counts().to_dict() if "status" in trials else {}
    seeds = sorted(int(s) for s in trials["seed"].dropna().unique()) if "seed" in trials else []
    uniq = lambda c: sorted({str(v) for v in trials[c].dropna() if str(v)}) if c in trials else []
    cpu = trials["cost.cpu_s"].astype(float).sum() if "cost.cpu_s" in trials else float("nan")
    return {"study": str(trials["study"].iloc[0]) if len(trials) and "study" in trials
            else os.path.basename(study_dir.rstrip("/")),
            "trials": counts, "seeds": seeds, "commits": [c[:12] for c in uniq("git_commit")],
            "hosts": uniq("hostname"), "devices": uniq("device"), "start": start, "end": end,
            "wall_s": (end - start).total_seconds() if start is not None and end is not None else float("nan"),
            "cpu_s": cpu, "record": read_record(study_dir)}


def _header_line(s: dict[str, Any]) -> str:
    trials = ", ".join(f"{n} {k}" for k, n in sorted(s["trials"].items())) or "none"
    seeds = (f"seeds {s['seeds'][0]}-{s['seeds'][-1]}" if s["seeds"] and s["seeds"] == list(range(s["seeds"][0],
             s["seeds"][-1] + 1)) else f"seeds {s['seeds']}")
    when = (f"run {s['start']:%Y-%m-%d %H:%M} to {s['end']:%Y-%m-%d %H:%M} UTC, wall {_duration(s['wall_s'])}"
            if s["wall_s"] == s["wall_s"] else "run times not recorded")
    cpu = f", {s['cpu_s'] / 3600:.2f} CPU-h in trials" if s["cpu_s"] == s["cpu_s"] and s["cpu_s"] > 0 else ""
    where = f"commit {', '.join(s['commits']) or '?'}; host {', '.join(s['hosts']) or '?'} " \
            f"({', '.join(s['devices']) or '?'})"
    line = f"- **{s['study']}**: {trials} trials, {seeds}; {when}{cpu}; {where}"
    rec = s["record"]
    if rec:
        rounds = rec.get("rounds", [])
        looks = ", ".join(str(r["seeds"]) for r in rounds)
        added = sum(int(r.get("trials_added", 0)) for r in rounds)
        line += (f"; `--until-decided`: looks at {looks} of max {rec.get('design', {}).get('max_seeds')} seeds, "
                 f"{added} trials added, verdicts are the sequential ones")
    return line


def _fmt(v, p: bool = False) -> str:
    if v is None or v != v:
        return "-"
    return (f"{v:.2g}" if v < 0.01 else f"{v:.3f}") if p else f"{v:+.4f}"


def reproduce_markdown(results: str) -> str:
    """The Markdown of docs/REPRODUCE.md for every study folder under ``results``."""
    dirs = study_dirs(results)
    headers, rows = [], []
    for d in dirs:
        csv = os.path.join(d, "report", CLAIMS_CSV)
        if not os.path.exists(csv):
            write_report(d)  # the report writes claims.csv (and report.md, figures) as `weaklab report` does
        trials = load_study(d)[0]
        s = study_summary(d, trials)
        headers.append(_header_line(s))
        for r in read_claims(csv).itertuples(index=False):
            rows.append(f"| {s['study']} | {r.claim} | {r.slice} | {r.worse or '-'} | {r.metric} | {r.n_pairs} | "
                        f"{_fmt(r.effect)} | {_fmt(r.p_value, p=True)} | {_fmt(r.p_holm, p=True)} | **{r.verdict}** |")
    now = _dt.datetime.now(_dt.timezone.utc)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lines = ["# Does it reproduce?", "",
             f"Generated by `weaklab reproduce {results}` on {now:%Y-%m-%d %H:%M} UTC at commit "
             f"`{git_commit(here) or '?'}` on {machine()}. Do not edit by hand: rerun the command.", "",
             "Effect = mean paired difference better - worse over seeds (trend: its slope; flat: the spread), in "
             "the metric's units (accuracy, mAP as fractions); p = paired two-sided t-test (flat: bootstrap); "
             "p Holm = Holm-adjusted over the study's claim family; the verdict reads p Holm at 0.05 "
             "(holds / reversed / undecided (needs N seeds) / not significant / not run), or, for a study "
             "run with `--until-decided`, the group-sequential verdict (docs/SEQUENTIAL.md). Wall time = "
             "first trial's start to last trial's end.", "",
             "## Runs", "", *headers, "",
             "## Claims", "",
             "| study | claim | slice | worse | metric | n | effect | p | p Holm | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|", *rows, ""]
    return "\n".join(lines)


def write_reproduce(results: str, out: str = DEFAULT_OUT) -> str:
    """Write :func:`reproduce_markdown` to ``out``; returns its path."""
    text = reproduce_markdown(results)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    return out
