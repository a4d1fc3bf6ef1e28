"""The function trainable: a Tune config becomes one ``weaklab.engine`` run.

Tune's config is ``{"trial": <flat trial config>}`` for grid search; under Optuna the
suggested values arrive as extra keys ``"<arm>:<key>"`` and ``"seed"`` that
:func:`materialize` folds into the flat config. Every epoch reports the engine's metrics
plus a ``weaklab`` entry (device, node, wall time; on the last epoch the full history, so
the driver stores every epoch even for a trial resumed from a checkpoint) with a
checkpoint, so ``FailureConfig(max_failures=...)`` resumes a trial where it stopped.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from typing import Any

from ray import tune

from weaklab.engine import resolve_device, run_trial


def materialize(config: dict[str, Any]) -> dict[str, Any]:
    """The flat trial config from a Tune config (grid or Optuna define-by-run)."""
    if "arms" in config:  # Optuna: the chosen arm's base config plus suggested values
        cfg = dict(config["arms"][config["arm"]])
        prefix = f"{config['arm']}:"
        cfg.update({k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)})
        cfg["seed"] = config.get("seed", cfg.get("seed", 0))
        return cfg
    return dict(config["trial"])


def weaklab_trainable(config: dict[str, Any]) -> None:
    cfg = materialize(config)
    t0 = time.perf_counter()
    import ray

    checkpoint = tune.get_checkpoint()
    restore_ctx = checkpoint.as_directory() if checkpoint else None
    restore = restore_ctx.__enter__() if restore_ctx else None
    device = str(resolve_device(cfg.get("train.device", "auto")))
    meta_static = {"device": device, "node_ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname(),
                   "restored": restore is not None}

    def on_epoch(history, save, last):
        row = history[-1]
        meta = {**meta_static, "wall_s": time.perf_counter() - t0, "keys": list(row), "last": last}
        if last:
            meta["history"] = json.dumps(history)
        with tempfile.TemporaryDirectory() as d:
            save(d)
            tune.report({**row, "weaklab": meta}, checkpoint=tune.Checkpoint.from_directory(d))

    try:
        run_trial(cfg, on_epoch=on_epoch, restore=restore)
    finally:
        if restore_ctx:
            restore_ctx.__exit__(None, None, None)
