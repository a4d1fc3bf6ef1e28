import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from studies import STUDIES, expand
from weaklab import store
from weaklab.cli import main
from weaklab.config import parse_trial
from weaklab.registry import ConfigError


def _configs():
    return expand(STUDIES.get("tau-sweep"))


def _schema():
    return store.study_schema(_configs(), study="tau-sweep")


def _write(d, tid, config, status="completed", history=(), schema=None, **kw):
    history = list(history)
    row = store.trial_row(study="tau-sweep", trial_id=tid, trial=parse_trial(config), status=status, history=history, **kw)
    store.write_trial(str(d), row, history, schema or _schema())


def test_round_trip_and_typed_columns(tmp_path):
    cfgs = _configs()
    het, hom = cfgs[0], cfgs[-1]
    hist = [{"epoch": 1, "val_acc": 0.5, "test_noisy_ll": -1.2, "best_epoch": 1},
            {"epoch": 2, "val_acc": 0.4, "test_noisy_ll": -1.1, "best_epoch": 1}]
    _write(tmp_path, "t1", het, history=hist)
    _write(tmp_path, "t2", hom, status="failed", error="ValueError: x")
    trials, epochs = store.load_study(str(tmp_path))
    assert len(trials) == 2 and len(epochs) == 2
    t1 = trials.set_index("trial_id").loc["t1"]
    # metrics with no fixed column (no weak data given to study_schema) come back from the map
    assert t1["best.test_noisy_ll"] == -1.2 and t1["final.test_noisy_ll"] == -1.1
    assert t1["epochs"] == 2 and t1["best_epoch"] == 1
    assert t1["hp.tau"] == het["hp.tau"] and t1["train.width"] == het["train.width"]
    assert pd.api.types.is_float_dtype(trials["hp.tau"]) and pd.api.types.is_integer_dtype(trials["seed"])
    assert pd.api.types.is_bool_dtype(trials["train.amp"])
    # defaults resolved: every hyperparameter is explicit even if the study never set it
    assert t1["hp.eval_samples"] == 1000 and t1["train.optimizer"] == "adam"
    t2 = trials.set_index("trial_id").loc["t2"]
    assert t2["status"] == "failed" and t2["error"] == "ValueError: x" and pd.isna(t2["hp.tau"])
    for col in ("study", "trial_id", "status", "error", "method", "dataset", "seed", "git_commit",
                "weaklab_version", "torch_version", "ray_version", "cost.cpu_s", "cost.peak_gpu_mb"):
        assert col in trials.columns
    assert list(epochs.columns[:4]) == ["study", "trial_id", "epoch", "best_epoch"]


def test_every_file_has_the_study_schema_fixed_before_the_first_trial(tmp_path):
    """A trial of one method and a failed trial of another hold the same columns and
    types; an optional hyperparameter is its value's type, nullable, never null-typed."""
    schema = store.study_schema(expand(STUDIES.get("cpu-prior")), study="cpu-prior")
    assert schema.trials.field("hp.pi2").type == pa.float64() and schema.trials.field("hp.pi2").nullable
    cfgs = expand(STUDIES.get("cpu-prior"))
    with_pi2 = next(c for c in cfgs if c.get("hp.pi2") is not None)
    without = next(c for c in cfgs if c.get("hp.pi2") is None)
    hist = [{"epoch": 1, "val_acc": 0.5, "gmm_s": 0.1, "best_epoch": 1}]
    for tid, cfg in (("a", with_pi2), ("b", without)):
        row = store.trial_row(study="cpu-prior", trial_id=tid, trial=parse_trial(cfg), status="completed", history=hist)
        store.write_trial(str(tmp_path), row, hist, schema)
    for table, want in (("trials", schema.trials), ("epochs", schema.epochs)):
        for f in os.listdir(tmp_path / table):
            got = pq.read_schema(tmp_path / table / f)
            assert got.equals(want) and got.metadata[store.VERSION_KEY] == str(store.SCHEMA_VERSION).encode()
            assert pa.null() not in got.types
    assert len(pd.read_parquet(tmp_path / "trials")) == 2  # raised 'Unsupported cast from double to null' before
    with pytest.raises(TypeError, match="no Parquet column type"):
        store.arrow_type(list[int], name="hp.x")


def test_an_unknown_column_raises_instead_of_being_dropped(tmp_path):
    row = store.trial_row(study="s", trial_id="x", trial=parse_trial(_configs()[0]), status="completed", history=[],
                          extra={"cost.new_thing": 1.0})
    with pytest.raises(ValueError, match="cost.new_thing"):
        store.write_trial(str(tmp_path), row, [], _schema())


def test_older_files_are_unified_by_name_and_the_missing_columns_named(tmp_path):
    _write(tmp_path, "new", _configs()[0], history=[{"epoch": 1, "val_acc": 0.5, "best_epoch": 1}])
    # a version-1 file: columns inferred from values, no hp.eval_samples yet, a null-typed hp.tau
    new = pq.read_table(tmp_path / "trials" / "new.parquet").to_pylist()[0]
    old = {k: v for k, v in new.items() if k not in ("hp.eval_samples", "final.other", "best.other", "info.other")}
    old.update({"trial_id": "old", "hp.tau": None, "best.val_acc": 0.3})
    pq.write_table(pa.Table.from_pylist([old]), tmp_path / "trials" / "old.parquet")
    with pytest.warns(store.SchemaWarning, match=rf"1 of 2 files are of schema version 1 \(now {store.SCHEMA_VERSION}\) and lack columns "
                                                  r"best.other \(1 files\), final.other \(1 files\), "
                                                  r"hp\.eval_samples \(1 files\), info.other \(1 files\); read as null"):
        trials, _ = store.load_study(str(tmp_path))
    assert sorted(trials["trial_id"]) == ["new", "old"]
    assert pd.isna(trials.set_index("trial_id").loc["old", "hp.eval_samples"])
    assert trials.set_index("trial_id").loc["old", "best.val_acc"] == 0.3


def test_rewriting_a_trial_replaces_it_and_leaves_no_temp_files(tmp_path):
    cfg = _configs()[0]
    for v in (0.1, 0.2):
        _write(tmp_path, "same", cfg, history=[{"epoch": 1, "val_acc": v, "best_epoch": 1}])
    trials, epochs = store.load_study(str(tmp_path))
    assert len(trials) == 1 and trials["best.val_acc"].iloc[0] == 0.2 and len(epochs) == 1
    assert sorted(os.listdir(tmp_path / "trials")) == ["same.parquet"]
    assert sorted(os.listdir(tmp_path / "epochs")) == ["same.parquet"]


def test_a_crashed_writers_temp_file_is_hidden_from_every_reader(tmp_path):
    _write(tmp_path, "t", _configs()[0], history=[{"epoch": 1, "val_acc": 0.1, "best_epoch": 1}])
    (tmp_path / "trials" / ".u.parquet.0123.tmp").write_bytes(b"PAR1 half a file")
    assert store.stored_trial_ids(str(tmp_path)) == {"t"}
    assert len(store.load_study(str(tmp_path))[0]) == 1 and len(pd.read_parquet(tmp_path / "trials")) == 1


def test_bad_status_and_missing_folder(tmp_path):
    with pytest.raises(ValueError):
        store.trial_row(study="s", trial_id="x", trial=parse_trial(_configs()[0]), status="weird", history=[])
    with pytest.raises(FileNotFoundError, match="not a weaklab study"):
        store.load_study(str(tmp_path))


def test_metrics_that_start_in_a_later_epoch_are_kept(tmp_path):
    hist = [{"epoch": 1, "val_acc": 0.1, "best_epoch": 1},
            {"epoch": 2, "val_acc": 0.2, "gmm_s": 0.5, "best_epoch": 2}]
    _write(tmp_path, "t", _configs()[0], history=hist)
    _, epochs = store.load_study(str(tmp_path))
    assert epochs["gmm_s"].isna().tolist() == [True, False]


@pytest.mark.parametrize("content", [b"not parquet at all\n", "truncated"])
def test_report_on_a_non_parquet_or_truncated_file_is_one_line_naming_it(tmp_path, capsys, content):
    _write(tmp_path, "good", _configs()[0], history=[{"epoch": 1, "val_acc": 0.1, "best_epoch": 1}])
    good = (tmp_path / "trials" / "good.parquet").read_bytes()
    bad = tmp_path / "trials" / ("notes.txt" if content != "truncated" else "cut.parquet")
    bad.write_bytes(good[: len(good) // 2] if content == "truncated" else content)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("weaklab: error:") and "\n" not in err and str(bad) in err, err
    assert (tmp_path / "trials" / "good.parquet").read_bytes() == good  # the other rows untouched
    assert not (tmp_path / "report").exists()


def test_unusable_results_location_is_one_line_naming_results(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for where, reason in ((str(blocker / "sub"), "cannot write"), ("nosuch://bucket/x", "nosuch"),
                          ("", "empty")):
        with pytest.raises(ConfigError, match="--results=") as e:
            store.check_results(where)
        assert reason in str(e.value) and "\n" not in str(e.value)
    store.check_results(str(tmp_path / "new" / "folder"))  # created on demand
    store.check_results("file://" + str(tmp_path / "uri"))
    assert os.listdir(tmp_path / "new" / "folder") == []  # the probe is gone


def test_join_keeps_a_uris_query_at_the_end():
    assert store.join("s3://b/p?endpoint_override=h:1", "study", "trials") == "s3://b/p/study/trials?endpoint_override=h:1"
    assert store.join("/tmp/r", "s") == "/tmp/r/s"
