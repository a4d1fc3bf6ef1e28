"""Tests parametrized over every registered study and method: a new one gets these for free."""

import dataclasses
import math

import pytest

from studies import STUDIES, expand, register_study, resolve
from weaklab.config import parse_trial
from weaklab.engine import run_trial
from weaklab.methods import METHODS
from weaklab.registry import Registry
from weaklab.settings import SETTINGS


def test_registries_raise_on_duplicates_and_unknown_names():
    reg = Registry("thing")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="duplicate thing name 'a'"):
        reg.add("a", 2)
    with pytest.raises(KeyError, match="unknown thing 'b'; allowed: a"):
        reg.get("b")
    with pytest.raises(ValueError, match="duplicate study"):
        register_study(dataclasses.replace(STUDIES.get("tau-sweep"), title="another study, same name"))


@pytest.mark.parametrize("name", STUDIES.names())
def test_study_and_its_smoke_version_are_valid(name):
    study = STUDIES.get(name)
    assert study.reproduces and study.title
    full, smoke = expand(study), expand(resolve(study, smoke=True))
    assert 0 < len(smoke) <= 40, "smoke must stay small"
    for cfg in full + smoke:
        t = parse_trial(cfg)
        assert SETTINGS.get(t.setting).kind in METHODS.get(t.method).consumes
    # the smoke run is a smaller version of the same study: no arm of its own
    assert {c["label"] for c in smoke} <= {c["label"] for c in full}


@pytest.mark.parametrize("metric", ["best.test_acc", "best_val_acc", "val_acc", "final.train_loss"])
def test_a_study_metric_is_a_validation_column_of_the_trials_table(metric):
    from weaklab.registry import ConfigError

    with pytest.raises(ConfigError, match=rf"study 'tau-sweep' metric='{metric}'.*best.val_\* or final.val_\*"):
        dataclasses.replace(STUDIES.get("tau-sweep"), metric=metric)


@pytest.mark.parametrize("name", STUDIES.names())
def test_the_study_metric_is_a_column_of_its_schema_and_tune_sees_it_every_epoch(name):
    """The select phase reads the study's metric from ``trials``; Tune ranks running
    trials by the key :func:`weaklab.study.tune_metric` names, which every epoch reports."""
    from weaklab.store import selected_so_far
    from weaklab.study import tune_metric

    study = resolve(STUDIES.get(name), smoke=True)
    cfg = {**expand(study)[0], "train.epochs": 1}
    history = run_trial(cfg).history
    reported = {**history[-1], **selected_so_far(history)}
    assert tune_metric(study.metric) in reported
    family, key = study.metric.split(".", 1)
    assert reported[tune_metric(study.metric)] == (history[-1][key] if family == "final" else
                                                    next(h for h in history if h["epoch"] == history[-1]["best_epoch"])[key])


def _one_config_per_method():
    """Per registered method, a smoke config of a study that uses it (else a full one)."""
    found = {}
    for smoke in (True, False):
        for name in STUDIES.names():
            study = STUDIES.get(name)
            for cfg in expand(resolve(study, smoke=True) if smoke else study):
                found.setdefault(cfg["method"], {**cfg, **(resolve(study, smoke=True).fixed)})
    return found


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_is_used_by_a_study_and_trains_one_epoch(method):
    cfg = _one_config_per_method().get(method)
    assert cfg is not None, f"method {method!r} is registered but no study's smoke run uses it"
    cfg = {**cfg, "train.epochs": 1, "train.patience": 0}
    r = run_trial(cfg)
    row = r.history[-1]
    assert math.isfinite(row["train_loss"])
    assert any(k.startswith("val_") for k in row) and any(k.startswith("test_") for k in row)
