"""The Parquet results store: ``RESULTS/STUDY/trials/`` and ``RESULTS/STUDY/epochs/``.

One file per trial in each folder, named by trial id, written to a temporary name and
renamed, so a crash never leaves half a file and a resumed study rewriting a trial
replaces it instead of adding a second row. ``trials/`` holds one row per trial:

- identity: study, trial_id, status (completed | failed | stopped), error, retries,
  method, label, dataset, setting, seed, phase
- every setting parameter, hyperparameter and training parameter as its own typed column
  (``setting.*``, ``hp.*``, ``train.*``; defaults resolved, so every value is explicit)
- ``final.<metric>`` (last epoch) and ``best.<metric>`` (the epoch chosen by
  ``train.monitor``, the checkpoint paper 002 evaluates), epochs, best_epoch, stopped_early
- ``info.*`` facts of the realised weak labels (e.g. info.flip_rate)
- wall_s, device, gpu_fraction, node_ip, versions (weaklab, torch, ray), git_commit,
  started_at, ended_at

``epochs/`` holds one row per (trial, epoch) with that epoch's metrics. This module has no
Ray dependency: the Tune callback in ``weaklab.tune`` calls :func:`write_trial`.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import uuid
from functools import lru_cache
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

STATUSES = ("completed", "failed", "stopped")


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    import torch

    import weaklab

    out = {"weaklab_version": weaklab.__version__, "torch_version": torch.__version__}
    try:
        import ray

        out["ray_version"] = ray.__version__
    except ImportError:  # the engine and store also run where Ray is absent (GPU benchmarks)
        out["ray_version"] = ""
    try:
        out["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = ""
    return out


def resolved_params(config: dict[str, Any]) -> dict[str, Any]:
    """The trial's setting/hp/train values with defaults filled in, as prefixed columns."""
    from weaklab.config import parse_trial

    t = parse_trial(config)
    out: dict[str, Any] = {}
    for prefix, obj in (("setting.", t.setting_params), ("hp.", t.hparams), ("train.", t.train)):
        out.update({prefix + k: v for k, v in dataclasses.asdict(obj).items()})
    return out


def trial_row(*, study: str, trial_id: str, config: dict[str, Any], status: str, history: list[dict[str, Any]],
              error: str = "", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``trials/`` row from a trial's config and epoch history."""
    if status not in STATUSES:
        raise ValueError(f"status={status!r}; allowed: {STATUSES}")
    row: dict[str, Any] = {"study": study, "trial_id": trial_id, "status": status, "error": error}
    for k in ("method", "label", "dataset", "setting", "seed", "phase"):
        row[k] = config.get(k, "" if k != "seed" else 0)
    row["label"] = row["label"] or row["method"]
    try:
        row.update(resolved_params(config))
    except Exception:  # an invalid config still gets its row (status failed) with raw values
        row.update({k: v for k, v in config.items() if k.startswith(("setting.", "hp.", "train."))})
    numeric = lambda d: {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if history:
        last = history[-1]
        best_epoch = int(last.get("best_epoch", last["epoch"]))
        best = next((h for h in history if h["epoch"] == best_epoch), last)
        row.update({f"final.{k}": v for k, v in numeric(last).items() if k != "epoch"})
        row.update({f"best.{k}": v for k, v in numeric(best).items() if k != "epoch"})
        row["epochs"], row["best_epoch"] = int(last["epoch"]), best_epoch
    else:
        row["epochs"], row["best_epoch"] = 0, 0
    row.update(versions())
    row.update(extra or {})
    return row


def _atomic_write(table: pa.Table, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_trial(study_dir: str, row: dict[str, Any], history: Iterable[dict[str, Any]]) -> None:
    """Write ``epochs/<id>.parquet`` then ``trials/<id>.parquet``, each atomically.

    The trials file is written last: its presence means the trial is fully stored.
    """
    tid = row["trial_id"]
    epochs = [{"study": row["study"], "trial_id": tid, **h} for h in history]
    if epochs:
        # the union of keys over all epochs: a metric that starts later (a GMM fitted after
        # warm-up) must not be dropped, which from_pylist's first-row schema would do
        table = pa.Table.from_pandas(pd.DataFrame.from_records(epochs), preserve_index=False)
        _atomic_write(table, os.path.join(study_dir, "epochs", f"{tid}.parquet"))
    _atomic_write(pa.Table.from_pylist([row]), os.path.join(study_dir, "trials", f"{tid}.parquet"))


def stored_trial_ids(study_dir: str) -> set[str]:
    folder = os.path.join(study_dir, "trials")
    if not os.path.isdir(folder):
        return set()
    return {f[: -len(".parquet")] for f in os.listdir(folder) if f.endswith(".parquet")}


def _read_folder(folder: str) -> pd.DataFrame:
    files = sorted(f for f in os.listdir(folder) if f.endswith(".parquet")) if os.path.isdir(folder) else []
    if not files:
        return pd.DataFrame()
    # trials of different methods carry different hp.* columns: unify, filling nulls
    tables = [pq.read_table(os.path.join(folder, f)) for f in files]
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


def load_study(study_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(trials, epochs)`` DataFrames of a study folder; the one loader every analysis uses."""
    if not os.path.isdir(os.path.join(study_dir, "trials")):
        raise FileNotFoundError(f"{study_dir} holds no trials/ folder: not a weaklab study results folder")
    return _read_folder(os.path.join(study_dir, "trials")), _read_folder(os.path.join(study_dir, "epochs"))
