"""The one way every report writes a figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written on headless machines

import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path: Path, *, tight: bool = True) -> Path:
    """Lay out (unless the caller already did), write a 120-dpi PNG to ``path``, close the
    figure; returns ``path``."""
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
