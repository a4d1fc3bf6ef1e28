"""Analysis from Parquet only (never Ray's folders): statistics, one module per paper with
its figures and tables, and the report writer.

A paper module registers ``report(trials, epochs, out) -> markdown`` for its studies with
``@register_report("study-name")``; it writes its PNGs into ``out`` and links them by name.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd

from weaklab.registry import Registry, import_submodules

ReportFn = Callable[[pd.DataFrame, pd.DataFrame, "object"], str]
REPORTS: Registry[ReportFn] = Registry("report")


def register_report(*study_names: str):
    """Register ``fn`` as the report of ``study_names``; the registered function never
    raises: a report it cannot compute (a partial or Optuna-sampled study) becomes one line
    naming it (``analysis.stats.guarded``). ``fn`` itself is returned unchanged."""
    def deco(fn: ReportFn) -> ReportFn:
        import functools

        from analysis.stats import guarded

        @functools.wraps(fn)
        def safe(trials, epochs, out):
            return guarded(f"the {'/'.join(study_names)} report", fn, trials, epochs, out)

        for name in study_names:
            REPORTS.add(name, safe)
        return fn

    return deco


import_submodules(__name__, __path__)
