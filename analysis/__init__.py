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
    def deco(fn: ReportFn) -> ReportFn:
        for name in study_names:
            REPORTS.add(name, fn)
        return fn

    return deco


import_submodules(__name__, __path__)
