"""Driver-side Tune callbacks: the Parquet writer and the progress line."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

from ray import tune

from weaklab import store
from weaklab.tune.trainable import materialize


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _error_line(trial) -> str:
    """The last 'SomeError: message' line of the trial's error file, for the Parquet row."""
    text = ""
    try:
        text = trial.get_error() or ""
    except Exception:
        pass
    if not text and getattr(trial, "error_file", None) and os.path.exists(trial.error_file):
        with open(trial.error_file) as fh:
            text = fh.read()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln.split(":")[0] or "Exception" in ln.split(":")[0]:
            return ln[:2000]
    return (lines[-1] if lines else "unknown error")[:2000]


class ParquetCallback(tune.Callback):
    """Writes each trial to ``study_dir`` (a folder or URI) as it ends (completed, failed
    or stopped), every file with the study's ``schema`` (``weaklab.store.study_schema``;
    None: one per trial from its own config, for single-trial callers such as benchmarks)."""

    def __init__(self, study_dir: str, study: str, schema: store.StudySchema | None = None):
        self.study_dir, self.study, self.schema = study_dir, study, schema
        self.epochs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.meta: dict[str, dict[str, Any]] = {}
        self.started: dict[str, str] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.setdefault(trial.trial_id, _now())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        meta = result.get("weaklab", {})
        row = {k: result[k] for k in meta.get("keys", []) if k in result}
        history = self.epochs[trial.trial_id]
        # a trial restored from a checkpoint repeats no epoch, but drop any duplicate anyway
        history[:] = [h for h in history if h["epoch"] < row.get("epoch", 0)] + [row]
        if "history" in meta:
            history[:] = json.loads(meta.pop("history"))
        self.meta[trial.trial_id] = meta

    def _write(self, trial, status: str, error: str = "") -> None:
        tid = trial.trial_id
        meta = self.meta.get(tid, {})
        history = self.epochs.get(tid, [])
        if status == "completed" and not meta.get("last", False):
            status = "stopped"  # ended by a scheduler (ASHA) or a stopper before its last epoch
        res = trial.placement_group_factory.required_resources if trial.placement_group_factory else {}
        failures = int(getattr(trial.run_metadata, "num_failures", 0))
        # Tune counts the final failure of a failed trial too; retries are the restarts
        extra = {"retries": failures - (1 if status == "failed" and failures else 0),
                 "wall_s": float(meta.get("wall_s", 0.0)), "device": meta.get("device", ""),
                 "node_ip": meta.get("node_ip", ""), "node_id": meta.get("node_id", ""),
                 "hostname": meta.get("hostname", ""),
                 "cpus": float(res.get("CPU", 0)), "gpu_fraction": float(res.get("GPU", 0)),
                 "started_at": self.started.get(tid, ""), "ended_at": _now(),
                 # what the trial cost up to its last report (trainable.CostMeter); NaN where it reported nothing
                 **{f"cost.{k}": float(meta.get("cost", {}).get(k, float("nan")))
                    for k in ("cpu_s", "gpu_s", "peak_rss_mb", "peak_gpu_mb")},
                 # facts of the realised weak labels (flip rate, imbalance, candidate-set size)
                 **{f"info.{k}": v for k, v in meta.get("info", {}).items()}}
        row = store.trial_row(study=self.study, trial_id=tid, trial=materialize(trial.config), status=status,
                              history=history, error=error, extra=extra)
        store.write_trial(self.study_dir, row, history, self.schema)
        self.epochs.pop(tid, None)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trial, "completed")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trial, "failed", _error_line(trial))


def eta_s(costs: list[float], left: int, concurrency: int) -> float | None:
    """Seconds until the ``left`` trials still to run are done, estimated from the cost of
    the finished ones: their mean cost x trials left / trials running at once. A trial's
    cost is its process CPU time (one thread: its wall time on an idle core, without the
    wait for a loaded machine), so the estimate is the time left on the cores the study
    holds; None before any trial has finished."""
    if not costs:
        return None
    return sum(costs) / len(costs) * left / max(1, concurrency)


def _duration(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class ProgressCallback(tune.Callback):
    """One line per finished trial: done/total, trials left and the estimated time left
    (:func:`eta_s`), the trial's result and the best so far."""

    def __init__(self, total: int, metric: str, mode: str, stream=sys.stdout):
        self.total, self.metric, self.mode, self.stream = total, metric, mode, stream
        self.done, self.best, self.last = 0, None, {}
        self.cost: dict[str, float] = {}  # the latest cost each running trial reported
        self.costs: list[float] = []  # finished trials' costs
        self.concurrency = 1  # the most trials seen running at once: the study's slots
        self.t0 = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.metric in result:
            self.last[trial.trial_id] = result[self.metric]
        meta = result.get("weaklab", {})
        if "cost" in meta:
            # a GPU trial's CPU time leaves out its wait for the device: its wall time is its cost
            gpu = str(meta.get("device", "")).startswith("cuda")
            self.cost[trial.trial_id] = float(meta["wall_s"] if gpu else meta["cost"]["cpu_s"])
        self.concurrency = max(self.concurrency, sum(t.status == "RUNNING" for t in trials))

    def _line(self, trial, status: str) -> None:
        self.done += 1
        if trial.trial_id in self.cost:
            self.costs.append(self.cost.pop(trial.trial_id))
        value = self.last.get(trial.trial_id)
        if value is not None and (self.best is None or (value > self.best if self.mode == "max" else value < self.best)):
            self.best = value
        t = materialize(trial.config)
        shown = " ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in t.config.items() if k.startswith("hp."))
        val = "-" if value is None else f"{value:.4f}"
        best = "-" if self.best is None else f"{self.best:.4f}"
        left = max(0, self.total - self.done)
        eta = eta_s(self.costs, left, self.concurrency)
        togo = f"{left} left" + ("" if eta is None or not left else f", ~{_duration(eta)}")
        print(f"[{self.done}/{self.total} {time.time() - self.t0:6.0f}s, {togo}] {status:9s} {t.label} "
              f"seed={t.seed} {shown} {self.metric}={val} | best so far {best}", file=self.stream, flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._line(trial, "done")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, "FAILED")
