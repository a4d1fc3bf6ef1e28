"""Every registered study's smoke Parquet opens whole in pandas, pyarrow.dataset, DuckDB
and Polars, with the same row counts.

The Parquet is each study's shared ``--smoke`` run through Ray (``smoke_study`` in
tests/conftest.py, written by the Tune callback with the store's own writer), plus one
failed row per study written by ``weaklab.store.write_trial`` (no history, the
hyperparameters of another arm left null). A study whose trials leave a value at None in one row and set it
in another (cpu-prior's ``hp.pi2``) is the case that used to break every reader.
"""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from weaklab import store
from weaklab.study import package_studies
from weaklab.tune.runner import prepare

NAMES = package_studies()


def _read_all(folder: str) -> dict[str, int]:
    import duckdb
    import polars as pl

    return {
        "pandas": len(pd.read_parquet(folder)),
        "pyarrow.dataset": ds.dataset(folder, format="parquet").count_rows(),
        "duckdb": duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/*.parquet')").fetchall()[0][0],
        "polars": pl.scan_parquet(os.path.join(folder, "*.parquet")).select(pl.len()).collect().item(),
    }


@pytest.fixture(scope="module")
def smoke_parquet(smoke_study, tmp_path_factory):
    """{study: (study_dir, schema, trials, trained)} of every study of the package: a copy of
    its shared smoke run through Ray (tests/conftest.py) plus one failed row."""
    root = tmp_path_factory.mktemp("readers")
    out = {}
    for name in NAMES:
        study_dir = str(root / name)
        for table in ("trials", "epochs"):
            shutil.copytree(os.path.join(smoke_study(name), table), os.path.join(study_dir, table))
        plan = prepare(name, smoke=True)
        schema = store.study_schema(plan.configs, plan.data, study=plan.study.name)
        trained = len(os.listdir(os.path.join(study_dir, "trials")))
        failed = store.trial_row(study=plan.study.name, trial_id="failed", trial=plan.trials[-1], status="failed",
                                 history=[], error="FloatingPointError: nan")
        store.write_trial(study_dir, failed, [], schema)
        out[name] = (study_dir, schema, trained + 1, trained)
    return out


def test_reader_matrix_every_study(smoke_parquet, capsys):
    lines = [f"{'study':24s} {'table':7s} {'rows':>5s}  pandas pyarrow.dataset duckdb polars"]
    for name, (study_dir, schema, n_trials, n_trained) in smoke_parquet.items():
        trials, epochs = store.load_study(study_dir)
        assert len(trials) == n_trials and trials["trial_id"].is_unique
        assert len(epochs) == epochs.groupby("trial_id")["epoch"].nunique().sum() > 0
        for table, expected, want in (("trials", len(trials), schema.trials), ("epochs", len(epochs), schema.epochs)):
            folder = os.path.join(study_dir, table)
            # every file has exactly the study's schema, metadata included
            for f in os.listdir(folder):
                got = pq.read_schema(os.path.join(folder, f))
                assert got.equals(want) and got.metadata == want.metadata, (f, got)
                assert not any(str(t) == "null" for t in got.types)
            counts = _read_all(folder)
            assert set(counts.values()) == {expected}, (name, table, counts)
            lines.append(f"{name:24s} {table:7s} {expected:5d}  " + " ".join(f"{counts[k]:>{len(k)}d}" for k in counts))
    with capsys.disabled():
        print("\n" + "\n".join(lines))


def test_optional_hyperparameter_is_typed_not_null(smoke_parquet):
    """cpu-prior: ``hp.pi2`` (``float | None``) is a nullable double in every file, so a
    row that set it and a row that left it at None read together."""
    study_dir, schema, *_ = smoke_parquet["cpu-prior"]
    assert str(schema.trials.field("hp.pi2").type) == "double"
    trials = pd.read_parquet(os.path.join(study_dir, "trials"))
    assert pd.api.types.is_float_dtype(trials["hp.pi2"])
    assert trials["hp.pi2"].isna().any() and (trials["hp.pi2"] == 0.4).any()
    assert schema.trials.metadata[store.VERSION_KEY] == str(store.SCHEMA_VERSION).encode()
