"""Shared helpers of the benchmark scripts: a printed table plus a CSV next to it."""

from __future__ import annotations

import csv
import os
import platform
from typing import Any, Sequence

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}, torch threads {torch.get_num_threads()}, torch {torch.__version__}"


def emit(name: str, rows: Sequence[dict[str, Any]]) -> str:
    """Print ``rows`` as a table and write ``benchmarks/out/<name>.csv``; returns the CSV path."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(fmt(r.get(c, "")).ljust(w) for c, w in zip(cols, widths)))
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"{name}.csv")
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    print(f"[{machine()}] -> {path}")
    return path
