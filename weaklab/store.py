"""The Parquet results store: ``RESULTS/STUDY/trials/`` and ``RESULTS/STUDY/epochs/``.

``RESULTS`` is a folder or a URI (``s3://bucket/prefix``, ``gs://bucket/prefix``,
``file:///path``): every read and write goes through ``pyarrow.fs``, so the rows can live
in the same bucket as Tune's state and survive the head node.

One file per trial in each folder, named by trial id. A write is atomic on every
filesystem: on an object store (S3, GCS) the object appears only when its upload
completes, elsewhere the file is written under a hidden temporary name and renamed. A
resumed study rewriting a trial replaces its file instead of adding a second row.

Every file of a study has exactly the study's schema (:func:`study_schema`), fixed
before the first trial: pandas, ``pyarrow.dataset``, DuckDB and Polars read the folder
whole. ``trials/`` holds one row per trial:

- identity: study, trial_id, status (completed | failed | stopped), error, retries,
  method, label, dataset, setting, seed, phase, carried_from (the select-phase trial a
  final-phase row repeats without running again, :func:`carry_trial`; '' otherwise)
- every setting parameter, hyperparameter and training parameter of the study's setting
  and methods as its own typed column (``setting.*``, ``hp.*``, ``train.*``; from the
  dataclass fields, ``X | None`` is a nullable X; defaults resolved; a method's
  hyperparameter is null in another method's rows)
- ``final.<metric>`` (last epoch) and ``best.<metric>`` (the epoch chosen by
  ``train.monitor``) for the engine's and the evaluation splits' metrics, epochs, best_epoch
- ``info.*`` facts of the realised weak labels (e.g. info.flip_rate)
- ``final.other`` / ``best.other`` / ``info.other``: maps holding the values no column was
  fixed for (a method's own diagnostics such as ``gmm_s``); :func:`load_study` spreads
  them into ``final.<key>`` columns again
- wall_s, cpus, gpu_fraction, device, node_ip, node_id, hostname, versions (weaklab,
  torch, ray), git_commit, started_at, ended_at, ``cost.*`` (CPU/GPU seconds, peak memory)

``epochs/`` holds one row per (trial, epoch) with that epoch's metrics (the same split
into columns and an ``other`` map). The schema version is in each file's metadata
(``weaklab.schema_version``); :func:`load_study` unifies files of older versions by
column name and warns which columns they lack. This module has no Ray dependency: the
Tune callback in ``weaklab.tune`` calls :func:`write_trial`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import types
import typing
import uuid
import warnings
from functools import lru_cache
from typing import Any, Iterable, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from weaklab.registry import ConfigError

if typing.TYPE_CHECKING:
    from weaklab.config import Trial

STATUSES = ("completed", "failed", "stopped")
SCHEMA_VERSION = 4
"""1: columns inferred per file (a None value made a null-typed column); 2: one typed
schema per study, fixed before the first trial; 3: one name per number (epoch rows lose
their running ``best_val_*`` copies, so trials lose ``final.best_val_*`` and
``best.best_val_*``: the value is ``best.val_*``); 4: ``carried_from``, the select-phase
trial a final-phase row is (:func:`carry_trial`)"""
VERSION_KEY = b"weaklab.schema_version"

#: columns every ``trials/`` file has, beside the typed parameters and the metrics
FIXED_TRIAL_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("study", pa.string()), ("trial_id", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("retries", pa.int64()), ("method", pa.string()), ("label", pa.string()), ("dataset", pa.string()),
    ("setting", pa.string()), ("seed", pa.int64()), ("phase", pa.string()), ("carried_from", pa.string()),
    ("epochs", pa.int64()), ("best_epoch", pa.int64()),
    ("wall_s", pa.float64()), ("cpus", pa.float64()), ("gpu_fraction", pa.float64()),
    ("device", pa.string()), ("node_ip", pa.string()), ("node_id", pa.string()), ("hostname", pa.string()),
    ("started_at", pa.string()), ("ended_at", pa.string()),
    ("weaklab_version", pa.string()), ("torch_version", pa.string()), ("ray_version", pa.string()),
    ("git_commit", pa.string()),
    # resources a trial used, written by the trainable/callback (issue 15)
    ("cost.cpu_s", pa.float64()), ("cost.gpu_s", pa.float64()), ("cost.peak_rss_mb", pa.float64()),
    ("cost.peak_gpu_mb", pa.float64()),
)
#: keys of every epoch the engine reports, whatever the method (``weaklab.engine.train``)
ENGINE_METRICS = ("train_loss", "lr", "epoch_s", "train_s", "method_s", "samples_per_s")
#: prefixes of open-ended numeric families; a key no column was fixed for goes to ``<family>.other``
FAMILIES = ("final.", "best.", "info.")
OTHER = "other"
_MAP = pa.map_(pa.string(), pa.float64())
_PY_TO_ARROW = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}


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


# -- where: folders and URIs -----------------------------------------------------------------

def is_uri(location: str) -> bool:
    return "://" in location


def is_local(location: str) -> bool:
    return not is_uri(location) or location.startswith("file://")


def join(location: str, *parts: str) -> str:
    """``location/part/...`` for a folder or a URI (a URI's ``?query`` stays at the end)."""
    if not is_uri(location):
        return os.path.join(location, *parts)
    base, q, query = location.partition("?")
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)]) + (q + query)


def absolute(location: str) -> str:
    """A folder (or ``file://`` URI) as an absolute path; any other URI unchanged."""
    if location.startswith("file://"):
        from urllib.parse import unquote, urlparse

        location = unquote(urlparse(location).path)
    return location if is_uri(location) else os.path.abspath(os.path.expanduser(location))


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """``(pyarrow filesystem, path on it)`` of a folder or URI."""
    if not is_uri(location):
        return pafs.LocalFileSystem(), absolute(location)
    return pafs.FileSystem.from_uri(location)


def _is_object_store(fs: pafs.FileSystem) -> bool:
    return fs.type_name in ("s3", "gcs")


def exists(location: str) -> bool:
    """Whether a file or folder (an object or a non-empty prefix on an object store) exists."""
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def check_results(location: str) -> None:
    """Raise a one-line ConfigError naming ``--results`` unless a study can write there:
    the URI parses, its bucket exists, and a probe file can be written and deleted."""
    allowed = "a writable folder, file:///path, s3://bucket/prefix or gs://bucket/prefix"
    what = f"--results={location!r}"

    def fail(reason: str) -> None:
        raise ConfigError(f"{what} is not usable: {reason}; allowed: {allowed}")

    if not isinstance(location, str) or not location.strip():
        fail("empty")
    try:
        fs, path = filesystem(location)
    except Exception as e:  # bad scheme, a pyarrow without S3/GCS, malformed URI or options
        fail(_first_line(e))
    if _is_object_store(fs):
        bucket = path.split("/", 1)[0]
        try:
            info = fs.get_file_info(bucket)
        except Exception as e:  # unreachable endpoint, refused or missing credentials
            fail(f"cannot access bucket {bucket!r} ({_first_line(e)}): check the endpoint and the credentials")
        if info.type == pafs.FileType.NotFound:
            fail(f"bucket {bucket!r} does not exist")
    probe = f"{path.rstrip('/')}/.weaklab-write-probe-{uuid.uuid4().hex}"
    try:
        if not _is_object_store(fs):
            fs.create_dir(path, recursive=True)
        with fs.open_output_stream(probe) as f:
            f.write(b"probe")
        fs.delete_file(probe)
    except Exception as e:
        fail(f"cannot write there ({_first_line(e)})")


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:300]}" if lines else type(e).__name__


# -- the study's schema ----------------------------------------------------------------------

def arrow_type(py_type: Any, *, name: str = "") -> pa.DataType:
    """Arrow type of a dataclass field's type: ``X | None`` (Optional[X]) is X, nullable."""
    origin = typing.get_origin(py_type)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(py_type) if a is not type(None)]
        if len(args) == 1:
            return arrow_type(args[0], name=name)
    if py_type in _PY_TO_ARROW:
        return _PY_TO_ARROW[py_type]
    raise TypeError(f"{name}: field type {py_type!r} has no Parquet column type; use int, float, bool, str "
                    f"or Optional of one (weaklab.store.arrow_type)")


def _fields(prefix: str, cls: type) -> list[tuple[str, pa.DataType]]:
    hints = typing.get_type_hints(cls)
    return [(prefix + f.name, arrow_type(hints[f.name], name=prefix + f.name)) for f in dataclasses.fields(cls)]


def metric_keys(data: Any) -> list[str]:
    """The evaluation metrics ``weaklab.engine.evaluate_splits`` reports on ``data`` (a
    WeakData): which keys exist depends only on the splits' labels and class groups, so
    uniform predictions give them exactly, without training."""
    import torch

    from weaklab.metrics import evaluate

    keys = []
    for split, (_, y) in data.evals.items():
        probs = torch.full((y.shape[0], data.num_classes), 1.0 / data.num_classes)
        keys += [f"{split}_{k}" for k in evaluate(probs, y, data.class_groups)]
    return keys


@dataclasses.dataclass(frozen=True)
class StudySchema:
    """The Arrow schemas every file of one study is written with."""

    trials: pa.Schema
    """one row per trial"""
    epochs: pa.Schema
    """one row per (trial, epoch)"""


def study_schema(configs: Sequence[dict[str, Any]], data: Iterable[Any] = (), *, study: str = "") -> StudySchema:
    """The schema of a study whose trials are ``configs`` (flat trial configs, all arms).

    Columns: the fixed ones, every field of the settings' ``Params``, the methods'
    ``Hparams`` and ``TrainConfig``, the engine's per-epoch metrics, and the evaluation
    metrics and ``info`` facts of ``data`` (the study's weak datasets, built on the driver
    before any trial; without them those values go to the ``other`` maps).
    """
    from weaklab.config import TrainConfig
    from weaklab.methods import METHODS
    from weaklab.settings import SETTINGS

    params: dict[str, pa.DataType] = {}
    for kind, registry, key in (("setting.", SETTINGS, "setting"), ("hp.", METHODS, "method")):
        for name in sorted({c[key] for c in configs}):
            cls = registry.get(name).Params if kind == "setting." else registry.get(name).Hparams
            for col, typ in _fields(kind, cls):
                if params.setdefault(col, typ) != typ:
                    raise TypeError(f"{col} is {params[col]} in one {key} and {typ} in another of this study")
    params.update(_fields("train.", TrainConfig))
    metrics, info = list(ENGINE_METRICS), []
    for d in data:
        evals = metric_keys(d)
        metrics += [k for k in evals if k not in metrics]
        info += [k for k in d.info if k not in info]
    metrics.append("best_epoch")
    meta = {VERSION_KEY: str(SCHEMA_VERSION).encode(), b"weaklab.study": study.encode()}
    trials = [*FIXED_TRIAL_COLUMNS, *sorted(params.items())]
    for family in ("final.", "best."):
        trials += [(family + k, pa.float64()) for k in metrics] + [(family + OTHER, _MAP)]
    trials += [("info." + k, pa.float64()) for k in info] + [("info." + OTHER, _MAP)]
    epochs = [("study", pa.string()), ("trial_id", pa.string()), ("epoch", pa.int64()), ("best_epoch", pa.int64()),
              *((k, pa.float64()) for k in metrics if k != "best_epoch"), (OTHER, _MAP)]
    return StudySchema(trials=pa.schema(trials, metadata={**meta, b"weaklab.table": b"trials"}),
                       epochs=pa.schema(epochs, metadata={**meta, b"weaklab.table": b"epochs"}))


def _conform(record: dict[str, Any], schema: pa.Schema, families: Sequence[str]) -> dict[str, Any]:
    """``record`` with exactly ``schema``'s keys: values no column was fixed for go to the
    ``<family>other`` map of their family; any other unknown key is an error (a new
    fixed column belongs in :data:`FIXED_TRIAL_COLUMNS`)."""
    out: dict[str, Any] = {name: None for name in schema.names}
    maps: dict[str, dict[str, float]] = {}
    for k, v in record.items():
        if k in out and schema.field(k).type != _MAP:
            out[k] = _cell(v, schema.field(k).type)
            continue
        family = next((f for f in families if k.startswith(f)), None)
        if family is None:
            raise ValueError(f"{k!r} is not a column of this study's schema ({schema.metadata.get(b'weaklab.table')}); "
                             f"add it to weaklab.store.FIXED_TRIAL_COLUMNS")
        num = _number(v)
        if num is not None:
            maps.setdefault(family + OTHER, {})[k[len(family):]] = num
    for name, m in maps.items():
        out[name] = sorted(m.items())
    return out


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "item"):
        return None
    try:
        return float(v.item() if hasattr(v, "item") else v)
    except (TypeError, ValueError):
        return None


def _cell(v: Any, typ: pa.DataType) -> Any:
    """``v`` as a value of column type ``typ``; a value that is not one (the raw config of
    a trial whose config failed to parse) is null rather than a failed write."""
    if v is None or (isinstance(v, float) and math.isnan(v) and not pa.types.is_floating(typ)):
        return None
    v = v.item() if hasattr(v, "item") else v
    try:
        if pa.types.is_string(typ):
            return v if isinstance(v, str) else str(v)
        if pa.types.is_boolean(typ):
            return v if isinstance(v, bool) else None
        if pa.types.is_integer(typ):
            return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() else None
        if pa.types.is_floating(typ):
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    except (TypeError, ValueError, OverflowError):
        return None
    return v


# -- rows --------------------------------------------------------------------------------

def selected_row(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch row chosen so far by ``train.monitor`` (``best_epoch`` of the last row):
    what the ``best.*`` columns hold."""
    last = history[-1]
    return next((h for h in history if h["epoch"] == int(last.get("best_epoch", last["epoch"]))), last)


def selected_so_far(history: list[dict[str, Any]]) -> dict[str, float]:
    """``best.val_*`` of a running trial, named as the trials table's columns, for Tune to
    rank it by (``weaklab.study.tune_metric``)."""
    return {f"best.{k}": v for k, v in selected_row(history).items() if k.startswith("val_")}


def trial_row(*, study: str, trial_id: str, trial: Trial, status: str, history: list[dict[str, Any]],
              error: str = "", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``trials/`` row from a :class:`~weaklab.config.Trial` and its epoch history."""
    if status not in STATUSES:
        raise ValueError(f"status={status!r}; allowed: {STATUSES}")
    row: dict[str, Any] = {"study": study, "trial_id": trial_id, "status": status, "error": error,
                           "method": trial.method, "label": trial.label, "dataset": trial.dataset,
                           "setting": trial.setting, "seed": trial.seed, "phase": trial.config.get("phase", ""),
                           "carried_from": ""}
    row.update(trial.columns())
    numeric = lambda d: {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if history:
        last, best = history[-1], selected_row(history)
        row.update({f"final.{k}": v for k, v in numeric(last).items() if k != "epoch"})
        row.update({f"best.{k}": v for k, v in numeric(best).items() if k != "epoch"})
        row["epochs"], row["best_epoch"] = int(last["epoch"]), int(last.get("best_epoch", last["epoch"]))
    else:
        row["epochs"], row["best_epoch"] = 0, 0
    row.update(versions())
    row.update(extra or {})
    return row


# -- writing -----------------------------------------------------------------------------

def _atomic_write(table: pa.Table, fs: pafs.FileSystem, path: str) -> None:
    parent, name = path.rsplit("/", 1)
    if _is_object_store(fs):
        # an object becomes visible only when its upload completes: a killed writer
        # leaves nothing, and a second PUT of the same key replaces the first whole
        pq.write_table(table, path, filesystem=fs)
        return
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"  # hidden: every Parquet reader skips it
    pq.write_table(table, tmp, filesystem=fs)
    try:
        fs.move(tmp, path)  # rename: replaces an existing file atomically on POSIX
    except OSError:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise
        fs.delete_file(path)  # a filesystem whose rename does not replace
        fs.move(tmp, path)


def write_trial(study_dir: str, row: dict[str, Any], history: Iterable[dict[str, Any]],
                schema: StudySchema | None = None) -> None:
    """Write ``epochs/<id>.parquet`` then ``trials/<id>.parquet``, each atomically, with
    the study's ``schema`` (default: one derived from this trial's own config and data
    facts, for callers that run single trials outside a study).

    The trials file is written last: its presence means the trial is fully stored.
    """
    if schema is None:
        schema = _schema_of_row(row)
    fs, base = filesystem(study_dir)
    tid = row["trial_id"]
    epochs = [_conform({"study": row["study"], "trial_id": tid, **h}, schema.epochs, ("",)) for h in history]
    if epochs:
        table = pa.Table.from_pylist(epochs, schema=schema.epochs)
        _atomic_write(table, fs, f"{base.rstrip('/')}/epochs/{tid}.parquet")
    table = pa.Table.from_pylist([_conform(row, schema.trials, FAMILIES)], schema=schema.trials)
    _atomic_write(table, fs, f"{base.rstrip('/')}/trials/{tid}.parquet")


def carry_trial(study_dir: str, trial_id: str, new_id: str, *, phase: str) -> None:
    """Store trial ``trial_id`` of ``study_dir`` again as ``new_id`` in ``phase``, naming it
    in ``carried_from``: a select-then-seeds study's final phase holds the select trials of
    its chosen points without training them twice (same config and seed; training is
    deterministic given both). The copy ran nothing, so its ``wall_s`` and ``cost.*`` are
    null: the select row holds what the run cost, and cost sums count it once. Epochs
    first, the trials file last, as :func:`write_trial`."""
    fs, base = filesystem(study_dir)
    base = base.rstrip("/")

    def replaced(table: pa.Table, values: dict[str, Any]) -> pa.Table:
        for name, v in values.items():
            i = table.schema.get_field_index(name)
            typ = table.schema.field(i).type if i >= 0 else dict(FIXED_TRIAL_COLUMNS)[name]
            col = pa.array([v] * table.num_rows, type=typ)
            table = table.set_column(i, name, col) if i >= 0 else table.append_column(name, col)
        return table

    epochs = f"{base}/epochs/{trial_id}.parquet"
    if fs.get_file_info(epochs).type == pafs.FileType.File:
        table = replaced(pq.read_table(epochs, filesystem=fs), {"trial_id": new_id})
        _atomic_write(table, fs, f"{base}/epochs/{new_id}.parquet")
    costs = {c: None for c, _ in FIXED_TRIAL_COLUMNS if c.startswith("cost.")}
    table = replaced(pq.read_table(f"{base}/trials/{trial_id}.parquet", filesystem=fs),
                     {"trial_id": new_id, "phase": phase, "carried_from": trial_id, "wall_s": None, **costs})
    _atomic_write(table, fs, f"{base}/trials/{new_id}.parquet")


def _schema_of_row(row: dict[str, Any]) -> StudySchema:
    config = {k: row[k] for k in ("method", "dataset", "setting") if k in row}
    return study_schema([config], study=str(row.get("study", "")))


# -- reading -----------------------------------------------------------------------------

class SchemaWarning(UserWarning):
    """Files of an older schema version lack columns of a newer one (read as null)."""


def _parquet_files(fs: pafs.FileSystem, folder: str) -> list[pafs.FileInfo]:
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    # hidden and underscore names are temporary or metadata files, as for every Parquet reader
    return sorted((i for i in infos if i.type == pafs.FileType.File and not i.base_name.startswith((".", "_"))),
                  key=lambda i: i.base_name)


def stored_trial_ids(study_dir: str) -> set[str]:
    fs, base = filesystem(study_dir)
    return {i.base_name[: -len(".parquet")] for i in _parquet_files(fs, f"{base.rstrip('/')}/trials")
            if i.base_name.endswith(".parquet")}


def _read_folder(study_dir: str, fs: pafs.FileSystem, folder: str) -> pd.DataFrame:
    tables = []
    for info in _parquet_files(fs, folder):
        try:
            tables.append(pq.read_table(info.path, filesystem=fs))
        except Exception as e:  # not Parquet, truncated, unreadable: name the file, touch nothing
            where = join(study_dir, folder.rsplit("/", 1)[-1], info.base_name)
            raise ConfigError(f"{where} is not a readable Parquet file ({_first_line(e)}); move or delete it "
                              f"(the other files are untouched)") from None
    if not tables:
        return pd.DataFrame()
    # a study whose schema changed between versions (a new hyperparameter): unify by name
    version = lambda t: int((t.schema.metadata or {}).get(VERSION_KEY, b"1"))
    newest = max(version(t) for t in tables)
    current = set().union(*(t.schema.names for t in tables if version(t) == newest))
    missing: dict[str, int] = {}
    older = [t for t in tables if version(t) < newest]
    for t in older:
        for name in current - set(t.schema.names):
            missing[name] = missing.get(name, 0) + 1
    if missing:
        warnings.warn(f"{join(study_dir, folder.rsplit('/', 1)[-1])}: {len(older)} of {len(tables)} files are of "
                      f"schema version {', '.join(sorted({str(version(t)) for t in older}))} (now {newest}) and "
                      f"lack columns {', '.join(f'{k} ({n} files)' for k, n in sorted(missing.items()))}; "
                      f"read as null", SchemaWarning, stacklevel=3)
    df = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    return _spread_maps(df)


def _spread_maps(df: pd.DataFrame) -> pd.DataFrame:
    """``final.other`` (a map) -> ``final.<key>`` columns, as the analysis code reads them."""
    for col in [c for c in df.columns if c == OTHER or c.endswith("." + OTHER)]:
        family = col[: -len(OTHER)]
        values = [dict(m) if m is not None else {} for m in df[col]]
        spread = pd.DataFrame.from_records(values, index=df.index)
        for key in spread.columns:
            name = family + key
            df[name] = df[name].combine_first(spread[key]) if name in df.columns else spread[key]
        df = df.drop(columns=col)
    return df


def load_study(study_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(trials, epochs)`` DataFrames of a study folder or URI; the one loader every analysis uses."""
    fs, base = filesystem(study_dir)
    trials = f"{base.rstrip('/')}/trials"
    if fs.get_file_info(trials).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{study_dir} holds no trials/ folder: not a weaklab study results folder")
    return _read_folder(study_dir, fs, trials), _read_folder(study_dir, fs, f"{base.rstrip('/')}/epochs")
