"""Beyond the papers: which metric and which searched axes a study's Parquet holds, and the
report sections on hyperparameter importance, robustness and cost that every study report
ends with (``analysis.importance``, ``analysis.robustness``, ``analysis.cost``).

Everything here reads ``trials/`` rows only. The metric is the study's test metric at the
best-validation epoch (``best.*``: the checkpoint model selection would keep, chosen
without the test split), named after the trials' own ``train.monitor``: ``val_acc`` gives
``best.test_acc``, ``val_map`` gives ``best.test_map``. :data:`TEST_METRIC` names the
studies whose paper scores another split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.stats import completed

#: studies whose test metric is not ``best.test_<monitor>``: paper 002 (Table 1, Fig. 1)
#: scores the log-likelihood of the *noisy* test labels, which tau-sweep monitors on val
TEST_METRIC = {"tau-sweep": "best.test_noisy_ll"}

#: prefixes of the columns a study can search: setting axes, hyperparameters, training
PARAM_PREFIXES = ("setting.", "hp.", "train.")


@dataclass(frozen=True)
class Metric:
    """The metric a study's methods are compared on."""

    column: str
    """the ``trials/`` column, e.g. ``best.test_acc``"""
    log_likelihood: bool
    """a mean log-likelihood (nats): ratios are taken of ``exp(ll)``, the geometric-mean
    probability the model gives the label, which is positive and at most 1 as accuracy is"""

    @property
    def label(self) -> str:
        return f"exp({self.column})" if self.log_likelihood else self.column

    def score(self, values) -> np.ndarray:
        """Values on the scale ratios are taken on (higher is better, positive)."""
        v = np.asarray(values, dtype=float)
        return np.exp(v) if self.log_likelihood else v


def study_name(trials: pd.DataFrame) -> str:
    return str(trials["study"].iloc[0]) if len(trials) and "study" in trials else ""


def study_metric(trials: pd.DataFrame) -> Metric | None:
    """The study's test metric at the best-validation epoch, or None if its rows have none."""
    column = TEST_METRIC.get(study_name(trials))
    if column is None:
        monitors = trials["train.monitor"].dropna() if "train.monitor" in trials else pd.Series(dtype=str)
        monitor = str(monitors.mode().iloc[0]) if len(monitors) else "val_acc"
        column = "best.test_" + (monitor[len("val_"):] if monitor.startswith("val_") else monitor)
    if column not in trials or not trials[column].notna().any():
        return None
    return Metric(column=column, log_likelihood=column.endswith("_ll"))


def grid_rows(trials: pd.DataFrame, metric: Metric | None = None) -> pd.DataFrame:
    """Completed trials with a finite metric; under select-then-seeds the 'select' phase only
    (every grid point at one seed; the 'final' rows repeat the chosen point over seeds)."""
    rows = completed(trials)
    if "phase" in rows and (rows["phase"] == "select").any():
        rows = rows[rows["phase"] == "select"]
    if metric is not None:
        rows = rows[np.isfinite(rows[metric.column].astype(float))]
    return rows


def varying(rows: pd.DataFrame, prefixes: tuple[str, ...] = PARAM_PREFIXES) -> list[str]:
    """Columns with one of ``prefixes`` that take more than one value in ``rows``, minus any
    that only re-encode an earlier one (the same partition of the rows, e.g. an epoch count
    that follows a stage length)."""
    out, partitions = [], []
    for c in rows.columns:
        if not c.startswith(prefixes) or rows[c].nunique(dropna=True) < 2:
            continue
        # codes number values in order of appearance: equal codes, equal partitions
        key = tuple(pd.factorize(rows[c].astype(str))[0])
        if key in partitions:
            continue
        partitions.append(key)
        out.append(c)
    return out


def study_settings(trials: pd.DataFrame) -> list[str]:
    """Setting axes that vary across the whole study (noise type, mix, bag size, ...)."""
    return varying(completed(trials), ("setting.",))


def fmt_point(values: dict) -> str:
    return ", ".join(f"{k.split('.', 1)[-1]}={_fmt(v)}" for k, v in values.items())


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    return str(v)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "method"


def sections(trials: pd.DataFrame, epochs: pd.DataFrame, out: Path) -> str:
    """Importance, robustness and cost sections appended to a study's report."""
    from analysis.cost import cost_section
    from analysis.importance import importance_section
    from analysis.robustness import robustness_section

    if not len(completed(trials)):
        return ""
    metric = study_metric(trials)
    parts = ["## Beyond the paper: importance, robustness and cost", ""]
    if metric is None:
        parts += ["No test metric at the best-validation epoch in these rows: importance and robustness "
                  "are not computed.", ""]
    else:
        parts += [f"Metric: `{metric.column}` (the test metric at each trial's best-validation epoch)"
                  + (f"; ratios are taken of `{metric.label}`, the geometric-mean probability of the label."
                     if metric.log_likelihood else "."), ""]
        parts += [importance_section(trials, metric, out), robustness_section(trials, metric)]
    parts.append(cost_section(trials, metric))
    return "\n".join(parts)
