"""The function trainable: a Tune config becomes one ``weaklab.engine`` run.

Tune's config is ``{"trial": <weaklab.config.Trial>, ...}`` for grid search and for Optuna
alike, validated once on the driver: the Optuna searcher (``weaklab.tune.search``) hands Tune concrete configurations
with their seed, plus the ``group`` of replicates they belong to. Every epoch reports the engine's metrics
plus a ``weaklab`` entry (device, node, wall time; on the last epoch the full history, so
the driver stores every epoch even for a trial resumed from a checkpoint; the trial's cost
so far, :class:`CostMeter`) with a checkpoint, so ``FailureConfig(max_failures=...)``
resumes a trial where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import resource
import socket
import tempfile
import time
from typing import Any

from ray import tune
from ray.tune.trainable import wrap_function

from weaklab.config import Trial, as_trial
from weaklab.engine import build_trial, resolve_device, train
from weaklab.store import selected_so_far
from weaklab.tune import _ray_compat


def materialize(config: dict[str, Any]) -> Trial:
    """The :class:`~weaklab.config.Trial` of a Tune config (grid point or sampled
    configuration); a Tune state written before the grid held trials gives its flat dict."""
    return as_trial(config["trial"])


def _newest_checkpoint(checkpoint: tune.Checkpoint | None) -> tune.Checkpoint | None:
    """The newest complete checkpoint of this trial, or None to start afresh.

    Tune hands back the checkpoint its saved experiment state names. After a killed driver
    that state can lag the trial by several epochs (it is saved every 10 s or more), and
    ``num_to_keep`` has deleted that checkpoint already; the newer ones lie beside it.
    """
    if checkpoint is None:
        return None
    import pyarrow.fs

    from weaklab.engine import CHECKPOINT_FILE

    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    parent = path.rsplit("/", 1)[0]
    candidates = sorted(
        (e.path for e in fs.get_file_info(pyarrow.fs.FileSelector(parent, allow_not_found=True))
         if e.type == pyarrow.fs.FileType.Directory and e.base_name.startswith("checkpoint_")), reverse=True)
    for candidate in [*candidates, path]:
        if _written_whole(fs, f"{candidate}/{CHECKPOINT_FILE}"):
            return checkpoint if candidate == path else tune.Checkpoint(candidate, filesystem=fs)
    return None


class CostMeter:
    """What one trial costs in its worker process, from the trainable's start.

    CPU seconds are the process's user + system time (``resource.getrusage``: every
    thread, torch's intra-op threads included) since the start, a difference because Tune
    reuses a worker process for consecutive trials (``RunOptions.reuse_actors``). For the
    same reason the peak RSS is reset at the start where Linux allows it (``clear_refs``
    5 resets the process's high-water mark, read back as ``VmHWM``); elsewhere it falls
    back to ``ru_maxrss``, the process's lifetime peak. GPU seconds are wall seconds x the
    GPU fraction Ray assigned the trial, 0.0 on a CPU trial (it used no GPU); the peak GPU
    memory is ``torch.cuda.max_memory_allocated`` (tensors, not the caching allocator's
    reserve), NaN on a CPU trial. A trial retried from a checkpoint reports the cost of
    its last attempt, as its ``wall_s`` does.
    """

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.t0, self.cpu0 = time.perf_counter(), self._cpu_s()
        self.hwm_reset = _reset_peak_rss()
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(device)
        self.device = device

    @staticmethod
    def _cpu_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def read(self) -> dict[str, float]:
        import ray

        wall = time.perf_counter() - self.t0
        gpu_fraction = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)) if self.cuda else 0.0
        peak_gpu = math.nan
        if self.cuda:
            import torch

            peak_gpu = torch.cuda.max_memory_allocated(self.device) / 2**20
        peak_rss = _peak_rss_mb() if self.hwm_reset else math.nan
        if peak_rss != peak_rss:
            # kB on Linux, bytes on macOS: the process's lifetime peak, the best available
            scale = 2**20 if os.uname().sysname == "Darwin" else 2**10
            peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
        return {"cpu_s": self._cpu_s() - self.cpu0, "gpu_s": wall * gpu_fraction, "peak_rss_mb": peak_rss,
                "peak_gpu_mb": peak_gpu}


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _written_whole(fs, path: str) -> bool:
    """Whether a checkpoint file exists and was written to its end. Tune copies a
    checkpoint into storage file by file, not atomically: a driver or node killed during
    the copy leaves a truncated file, which made the resumed trial fail to load it
    (tests/test_resume.py). ``torch.save`` writes a zip archive, whose end-of-central-
    directory record is its last bytes; a truncated copy lacks it."""
    import zipfile

    import pyarrow.fs

    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return False
    try:
        with fs.open_input_file(path) as f:
            return zipfile.is_zipfile(f)
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError, IndexError):
        pass
    return math.nan


def weaklab_trainable(config: dict[str, Any]) -> None:
    trial = materialize(config)
    t0 = time.perf_counter()
    import ray

    checkpoint = tune.get_checkpoint()
    restore_ctx = checkpoint.as_directory() if checkpoint else None
    restore = restore_ctx.__enter__() if restore_ctx else None
    device = str(resolve_device(trial.train.device))
    cost = CostMeter(device)
    _, weak, method = build_trial(trial)
    meta_static = {"device": device, "node_ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname(),
                   "node_id": ray.get_runtime_context().get_node_id(),
                   "restored": restore is not None, "info": dict(weak.info)}

    reported = []

    every_s = float(config.get("checkpoint_every_s", 0.0))
    last_ckpt = [time.perf_counter()]

    def payload(history, last: bool) -> dict[str, Any]:
        """An epoch's report: its metrics, the ``best.*`` Tune ranks by, and what the driver stores."""
        row = history[-1]
        # the cost so far on every epoch: a trial stopped by a scheduler or failing later
        # keeps what it spent up to its last report
        meta = {**meta_static, "wall_s": time.perf_counter() - t0, "keys": list(row), "last": last,
                "cost": cost.read()}
        if last and restore is not None:
            # the driver holds every epoch it was sent; a trial resumed from a checkpoint
            # (after a lost driver or worker) sends the epochs before it once. Not on every
            # trial: Tune keeps the last checkpoint's report in its experiment state, which
            # it rewrites at each forced snapshot, and a history was 61 of its 65 KB a trial
            meta["history"] = json.dumps(history)
        return {**row, **selected_so_far(history), "weaklab": meta}

    def on_epoch(history, save, last):
        reported.append(True)
        report = payload(history, last)
        # metrics every epoch; a checkpoint when every_s seconds have passed, and always at
        # the end: on short epochs a save + upload per epoch was most of Tune's overhead
        # (benchmarks/bench_tune.py), and a lost node then costs at most every_s of work
        if not (last or time.perf_counter() - last_ckpt[0] >= every_s):
            tune.report(report)
            return
        with tempfile.TemporaryDirectory() as d:
            save(d)
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(d))
        last_ckpt[0] = time.perf_counter()

    try:
        result = train(data=weak, method=method, config=trial.train, seed=trial.seed, on_epoch=on_epoch,
                       restore=restore)
        if not reported and result.history:
            # restored from its final checkpoint (the trial had ended, but the experiment
            # state Tune resumed from had not seen it end): nothing left to train, so
            # report the final epoch again, else the driver would store it without results
            tune.report(payload(result.history, True))
    finally:
        if restore_ctx:
            restore_ctx.__exit__(None, None, None)


class WeaklabTrainable(wrap_function(weaklab_trainable)):
    """:func:`weaklab_trainable` as Tune runs it (same name, so studies started before
    still resume), restoring from the newest checkpoint the trial has left.

    After a killed driver, Tune resumes from its last saved experiment state, saved every
    10 s or more; with ``num_to_keep`` the checkpoint that state names is often deleted
    already, and Tune's own restore then fails the trial ("does not exist on storage
    anymore"). The trial's newer checkpoints lie beside it.
    """

    def restore(self, checkpoint_path):
        named = _ray_compat.restored_checkpoint(checkpoint_path)
        if named is not None:
            newest = _newest_checkpoint(named)
            if newest is None:  # nothing usable left: run the trial from its first epoch
                return None
            checkpoint_path = _ray_compat.with_checkpoint(checkpoint_path, newest)
        return super().restore(checkpoint_path)
