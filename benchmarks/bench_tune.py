"""Ray Tune overhead: a study's wall time against the sum of its trials' times / parallel slots.

    python benchmarks/bench_tune.py                      # 4 trials of ~10 s on 2 slots, reuse_actors off and on
    python benchmarks/bench_tune.py --trials 8 --epochs 8 --slots 2

The trials are the tau-sweep study's homoscedastic config (small CNN on digits) with
seeds 0..N-1 and ``train.epochs=--epochs`` (about 0.6-0.8 s an epoch on one idle core:
12 epochs ~ 10 s). The Tuner is built here as ``weaklab.tune.runner`` builds it (the
function trainable ``weaklab_trainable`` with 1 CPU per trial, ``ParquetCallback``, a
checkpoint per epoch, keep 1) once with ``reuse_actors=False`` and once with ``True``,
in one local Ray instance of ``--slots`` CPUs.

Figures per variant:
- ``study_wall_s``: ``tuner.fit()`` alone (Ray's own start is ``ray_init_s``, once);
- ``sum_trial_s``: the trials' ``wall_s`` (trainable start to last report) from Parquet;
- ``ideal_s`` = ``sum_trial_s / slots``; ``overhead`` = 1 - ``ideal_s`` / ``study_wall_s``
  (target <= 10 % for 10 s trials);
- ``in_trial_s``: per trial, ``wall_s`` minus the sum of its epochs' ``epoch_s`` (data,
  model build, checkpoint save and ``tune.report`` per epoch), i.e. overhead that is
  inside the trial's own time and so not in ``overhead``;
- ``engine_share``: sum of ``epoch_s`` / (``study_wall_s`` x slots): the share of the
  slots' time spent in the engine's epochs;
- ``save_s_per_epoch_noray`` / ``save_share_noray``: measured first, without Ray, the
  trainable's per-epoch ``save(tempdir)`` of the same config against its epoch time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import emit  # noqa: E402
from studies import STUDIES, expand  # noqa: E402


def trial_configs(n: int, epochs: int) -> list[dict]:
    base = next(c for c in expand(STUDIES.get("tau-sweep")) if c["method"] == "homoscedastic")
    return [{**base, "seed": s, "train.epochs": epochs, "train.patience": 0, "train.device": "cpu",
             "study": "bench-tune"} for s in range(n)]


def checkpoint_cost(cfg: dict, epochs: int = 4) -> dict:
    """Without Ray: seconds per epoch of the trainable's ``save(tempdir)`` against the epoch."""
    from weaklab.engine import run_trial

    saves = []

    def on_epoch(history, save, last):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            save(d)
            saves.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    hist = run_trial({**cfg, "train.epochs": epochs}, on_epoch=on_epoch).history
    wall = time.perf_counter() - t0
    epoch_s = sum(h["epoch_s"] for h in hist[1:]) / max(len(hist) - 1, 1)
    save_s = sum(saves[1:]) / max(len(saves) - 1, 1)
    return {"epoch_s": epoch_s, "save_s": save_s, "save_share": save_s / (epoch_s + save_s),
            "setup_s": wall - sum(h["epoch_s"] for h in hist) - sum(saves)}


def run_variant(configs: list[dict], reuse: bool, slots: int, root: str) -> dict:
    from ray import tune

    from weaklab.store import load_study
    from weaklab.tune.callbacks import ParquetCallback
    from weaklab.tune.trainable import weaklab_trainable

    name = f"bench-tune-reuse-{int(reuse)}"
    study_dir = os.path.join(root, name)
    trainable = tune.with_resources(weaklab_trainable, {"cpu": 1, "gpu": 0})
    tuner = tune.Tuner(
        trainable, param_space={"trial": tune.grid_search(configs)},
        tune_config=tune.TuneConfig(metric="best_val_acc", mode="max", num_samples=1, reuse_actors=reuse),
        run_config=tune.RunConfig(name=name, storage_path=os.path.join(root, "_tune"),
                                  callbacks=[ParquetCallback(study_dir, "bench-tune")], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    tuner.fit()
    wall = time.perf_counter() - t0
    trials, epochs = load_study(study_dir)
    sum_trial = float(trials["wall_s"].sum())
    epoch_sum = epochs.groupby("trial_id")["epoch_s"].sum()
    in_trial = float((trials.set_index("trial_id")["wall_s"] - epoch_sum).mean())
    ideal = sum_trial / slots
    return {"reuse_actors": reuse, "trials": len(trials), "completed": int((trials["status"] == "completed").sum()),
            "slots": slots, "mean_trial_s": sum_trial / len(trials), "study_wall_s": wall, "sum_trial_s": sum_trial,
            "ideal_s": ideal, "overhead": 1 - ideal / wall, "overhead_s_per_trial": (wall - ideal) * slots / len(trials),
            "in_trial_s": in_trial, "engine_share": float(epochs["epoch_s"].sum()) / (wall * slots),
            "target_met": (1 - ideal / wall) <= 0.10, "load1_start": load, "load1_end": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=12, help="train.epochs per trial (12 ~ 10 s on an idle core)")
    ap.add_argument("--slots", type=int, default=2, help="CPUs given to Ray = trials at once (1 CPU each)")
    ap.add_argument("--variants", default="false,true", help="reuse_actors values, in order")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by Ray's workers
    import ray

    configs = trial_configs(args.trials, args.epochs)
    ck = checkpoint_cost(configs[0])
    print(f"checkpoint per epoch (no Ray): {ck}", flush=True)
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=args.slots, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for v in args.variants.split(","):
            row = run_variant(configs, v.strip().lower() == "true", args.slots, root)
            row["ray_init_s"] = init_s
            row["save_s_per_epoch_noray"] = ck["save_s"]
            row["save_share_noray"] = ck["save_share"]
            rows.append(row)
            print(row, flush=True)
    ray.shutdown()
    emit("tune_overhead", rows)
    la = os.getloadavg()
    print(f"load average: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")


if __name__ == "__main__":
    main()
