"""The driver's progress line: trials left and the time left estimated from trials' CPU time."""

import io
from types import SimpleNamespace

import pytest

from weaklab.study import STUDIES, discover, expand
from weaklab.tune.callbacks import ProgressCallback, eta_s


def test_eta_is_mean_cost_times_left_over_slots():
    assert eta_s([], 10, 2) is None
    assert eta_s([10.0, 30.0], 6, 2) == pytest.approx(60.0)
    assert eta_s([10.0], 3, 0) == pytest.approx(30.0)  # never divides by zero slots


def _trial(tid, cfg, status="RUNNING"):
    return SimpleNamespace(trial_id=tid, status=status, config={"trial": cfg})


def test_progress_line_counts_down_from_reported_cpu_time():
    discover()
    cfgs = expand(STUDIES.get("tau-sweep"), seeds=[0])[:4]
    out = io.StringIO()
    cb = ProgressCallback(4, "best.val_ll", "max", stream=out)
    trials = [_trial(f"t{i}", c) for i, c in enumerate(cfgs)]
    running = trials[:2]
    for i, (tr, cpu) in enumerate(zip(running, (20.0, 60.0))):
        cb.on_trial_result(0, running, tr, {"best.val_ll": -1.0 + i,
                                             "weaklab": {"device": "cpu", "wall_s": 99.0, "cost": {"cpu_s": cpu}}})
    cb.on_trial_complete(0, running, running[0])
    cb.on_trial_complete(0, running, running[1])
    first, second = out.getvalue().splitlines()
    # two slots: 3 trials left x 20 s / 2, then 2 left x mean(20, 60) / 2
    assert first.startswith("[1/4") and "3 left, ~30s]" in first and "best so far -1.0000" in first
    assert "2 left, ~40s]" in second and "best so far 0.0000" in second


def test_progress_line_uses_wall_time_for_gpu_trials():
    discover()
    cfg = expand(STUDIES.get("tau-sweep"), seeds=[0])[0]
    out = io.StringIO()
    cb = ProgressCallback(3, "best.val_ll", "max", stream=out)
    tr = _trial("g", cfg)
    cb.on_trial_result(0, [tr], tr, {"weaklab": {"device": "cuda:0", "wall_s": 90.0, "cost": {"cpu_s": 5.0}}})
    cb.on_trial_error(0, [tr], tr)
    line = out.getvalue()
    assert "FAILED" in line and "2 left, ~3m00s]" in line
