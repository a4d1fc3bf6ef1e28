"""The function trainable: a Tune config becomes one ``weaklab.engine`` run.

Tune's config is ``{"trial": <flat trial config>, ...}`` for grid search and for Optuna
alike: the Optuna searcher (``weaklab.tune.search``) hands Tune concrete configurations
with their seed, plus the ``group`` of replicates they belong to. Every epoch reports the engine's metrics
plus a ``weaklab`` entry (device, node, wall time; on the last epoch the full history, so
the driver stores every epoch even for a trial resumed from a checkpoint) with a
checkpoint, so ``FailureConfig(max_failures=...)`` resumes a trial where it stopped.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
from typing import Any

from ray import tune
from ray.train._internal.session import _TrainingResult
from ray.tune.trainable import wrap_function

from weaklab.engine import build_trial, resolve_device, train


def materialize(config: dict[str, Any]) -> dict[str, Any]:
    """The flat trial config from a Tune config (grid point or sampled configuration)."""
    return dict(config["trial"])


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
        if fs.get_file_info(f"{candidate}/{CHECKPOINT_FILE}").type == pyarrow.fs.FileType.File:
            return checkpoint if candidate == path else tune.Checkpoint(candidate, filesystem=fs)
    return None


def weaklab_trainable(config: dict[str, Any]) -> None:
    cfg = materialize(config)
    t0 = time.perf_counter()
    import ray

    checkpoint = tune.get_checkpoint()
    restore_ctx = checkpoint.as_directory() if checkpoint else None
    restore = restore_ctx.__enter__() if restore_ctx else None
    device = str(resolve_device(cfg.get("train.device", "auto")))
    trial, weak, method = build_trial(cfg)
    meta_static = {"device": device, "node_ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname(),
                   "node_id": ray.get_runtime_context().get_node_id(),
                   "restored": restore is not None, "info": dict(weak.info)}

    reported = []

    every_s = float(config.get("checkpoint_every_s", 0.0))
    last_ckpt = [time.perf_counter()]

    def on_epoch(history, save, last):
        reported.append(True)
        row = history[-1]
        meta = {**meta_static, "wall_s": time.perf_counter() - t0, "keys": list(row), "last": last}
        if last:
            meta["history"] = json.dumps(history)
        # metrics every epoch; a checkpoint when every_s seconds have passed, and always at
        # the end: on short epochs a save + upload per epoch was most of Tune's overhead
        # (benchmarks/bench_tune.py), and a lost node then costs at most every_s of work
        if not (last or time.perf_counter() - last_ckpt[0] >= every_s):
            tune.report({**row, "weaklab": meta})
            return
        with tempfile.TemporaryDirectory() as d:
            save(d)
            tune.report({**row, "weaklab": meta}, checkpoint=tune.Checkpoint.from_directory(d))
        last_ckpt[0] = time.perf_counter()

    try:
        result = train(data=weak, method=method, config=trial.train, seed=trial.seed, on_epoch=on_epoch,
                       restore=restore)
        if not reported and result.history:
            # restored from its final checkpoint (the trial had ended, but the experiment
            # state Tune resumed from had not seen it end): nothing left to train, so
            # report the final epoch again, else the driver would store it without results
            row = result.history[-1]
            tune.report({**row, "weaklab": {**meta_static, "wall_s": time.perf_counter() - t0, "keys": list(row),
                                            "last": True, "history": json.dumps(result.history)}})
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
        if isinstance(checkpoint_path, _TrainingResult):
            newest = _newest_checkpoint(checkpoint_path.checkpoint)
            if newest is None:  # nothing usable left: run the trial from its first epoch
                return None
            checkpoint_path = _TrainingResult(checkpoint=newest, metrics=checkpoint_path.metrics)
        return super().restore(checkpoint_path)
