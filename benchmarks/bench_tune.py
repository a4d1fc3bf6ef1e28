"""Ray Tune overhead: a study's wall time against the sum of its trials' times / parallel slots.

    python benchmarks/bench_tune.py                      # 4 trials of ~10 s CPU on 2 slots, reuse_actors off and on
    python benchmarks/bench_tune.py --trials 8 --epochs 8 --slots 2

The trials are the tau-sweep study's homoscedastic config (small CNN on digits) with
seeds 0..N-1 and ``train.epochs=--epochs`` (about 0.24 CPU seconds an epoch: 40 epochs
~ 10 s on an idle core). The Tuner is built here as ``weaklab.tune.runner`` builds it (the
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
  trainable's per-epoch ``save(tempdir)`` of the same config against its epoch time;
- load-robust CPU accounting: ``tree_cpu_s`` is the CPU seconds used during ``fit()`` by
  the driver and every Ray process it started (GCS, raylet, workers; /proc sampled every
  0.2 s while each lives);
  ``engine_cpu_s_noray`` = trials x epochs x the CPU seconds of one epoch measured without
  Ray; ``overhead_cpu_s_per_trial`` and ``overhead_cpu_share`` = 1 - engine / tree are
  what Ray, the trainable (imports, data, checkpoints, reports) and the callbacks cost in
  CPU, which a shared machine inflates far less than wall time. With every core busy
  (slots = cores), ``overhead_cpu_share`` is what the wall-time overhead would be on an
  idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import emit  # noqa: E402
from studies import STUDIES, expand  # noqa: E402


def trial_configs(n: int, epochs: int) -> list[dict]:
    base = next(c for c in expand(STUDIES.get("tau-sweep")) if c["method"] == "homoscedastic")
    return [{**base, "seed": s, "train.epochs": epochs, "train.patience": 0, "train.device": "cpu",
             "study": "bench-tune"} for s in range(n)]


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _cpu_of(pids) -> dict[int, float]:
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
            out[pid] = sum(int(v) for v in f[11:15]) / tick  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            pass
    return out


class TreeCPU:
    """CPU seconds used by this process and every descendant (Ray's GCS, raylet, workers)
    between ``start()`` and ``stop()``, from /proc sampled every ``period`` seconds: the
    raylet does not account its exited workers in its own ``cutime``, so each process is
    followed while it lives (what a worker uses in its last ``period`` is missed)."""

    def __init__(self, period: float = 0.2):
        self.period, self._stop = period, threading.Event()

    def _sample(self) -> None:
        for pid, v in _cpu_of(_descendants(self.me)).items():
            self.first.setdefault(pid, 0.0)  # born after start(): all its CPU counts
            self.last[pid] = v

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def start(self) -> "TreeCPU":
        self.me = os.getpid()
        self.first = _cpu_of(_descendants(self.me))
        self.last = dict(self.first)
        self.t_self = time.process_time()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> float:
        self._sample()
        self._stop.set()
        self._thread.join()
        return (time.process_time() - self.t_self) + sum(self.last[p] - self.first.get(p, 0.0) for p in self.last)


def checkpoint_cost(cfg: dict, epochs: int = 4) -> dict:
    """Without Ray: seconds per epoch of the trainable's ``save(tempdir)`` against the epoch,
    and the CPU seconds of one epoch without the save."""
    from weaklab.engine import run_trial

    saves, cpu = [], [time.process_time()]

    def on_epoch(history, save, last):
        cpu.append(time.process_time())
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            save(d)
            saves.append(time.perf_counter() - t0)
        cpu.append(time.process_time())  # the next epoch starts after the save

    t0 = time.perf_counter()
    hist = run_trial({**cfg, "train.epochs": epochs}, on_epoch=on_epoch).history
    wall = time.perf_counter() - t0
    epoch_s = sum(h["epoch_s"] for h in hist[1:]) / max(len(hist) - 1, 1)
    save_s = sum(saves[1:]) / max(len(saves) - 1, 1)
    starts, ends = cpu[0::2], cpu[1::2]  # epoch k runs from starts[k] to ends[k]
    epoch_cpu = [e - b for b, e in zip(starts, ends)][1:]
    return {"epoch_s": epoch_s, "save_s": save_s, "save_share": save_s / (epoch_s + save_s),
            "epoch_cpu_s": sum(epoch_cpu) / max(len(epoch_cpu), 1),
            "setup_s": wall - sum(h["epoch_s"] for h in hist) - sum(saves)}


def run_variant(configs: list[dict], reuse: bool, slots: int, root: str, checkpoint_every_s: float = 5.0) -> dict:
    from ray import tune

    from weaklab.store import load_study
    from weaklab.tune.callbacks import ParquetCallback
    from weaklab.tune.trainable import weaklab_trainable

    name = f"bench-tune-reuse-{int(reuse)}"
    study_dir = os.path.join(root, name)
    trainable = tune.with_resources(weaklab_trainable, {"cpu": 1, "gpu": 0})
    tuner = tune.Tuner(
        trainable, param_space={"trial": tune.grid_search(configs), "checkpoint_every_s": checkpoint_every_s},
        tune_config=tune.TuneConfig(metric="best.val_acc", mode="max", num_samples=1, reuse_actors=reuse),
        run_config=tune.RunConfig(name=name, storage_path=os.path.join(root, "_tune"),
                                  callbacks=[ParquetCallback(study_dir, "bench-tune")], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    load = os.getloadavg()[0]
    sampler = TreeCPU().start()
    t0 = time.perf_counter()
    tuner.fit()
    wall = time.perf_counter() - t0
    cpu = sampler.stop()
    trials, epochs = load_study(study_dir)
    sum_trial = float(trials["wall_s"].sum())
    epoch_sum = epochs.groupby("trial_id")["epoch_s"].sum()
    in_trial = float((trials.set_index("trial_id")["wall_s"] - epoch_sum).mean())
    ideal = sum_trial / slots
    return {"reuse_actors": reuse, "checkpoint_every_s": checkpoint_every_s, "trials": len(trials), "completed": int((trials["status"] == "completed").sum()),
            "slots": slots, "mean_trial_s": sum_trial / len(trials), "study_wall_s": wall, "sum_trial_s": sum_trial,
            "ideal_s": ideal, "overhead": 1 - ideal / wall, "overhead_s_per_trial": (wall - ideal) * slots / len(trials),
            "in_trial_s": in_trial, "engine_share": float(epochs["epoch_s"].sum()) / (wall * slots),
            "target_met": (1 - ideal / wall) <= 0.10, "tree_cpu_s": cpu, "load1_start": load, "load1_end": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=40, help="train.epochs per trial (40 ~ 10 s of CPU, 0.24 s an epoch)")
    ap.add_argument("--slots", type=int, default=2, help="CPUs given to Ray = trials at once (1 CPU each)")
    ap.add_argument("--variants", default="false,true", help="reuse_actors values, in order")
    ap.add_argument("--checkpoint-every-s", type=float, default=5.0,
                    help="seconds between a trial's checkpoints, as the runner's option (0: every epoch)")
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
            row = run_variant(configs, v.strip().lower() == "true", args.slots, root, args.checkpoint_every_s)
            row["ray_init_s"] = init_s
            row["save_s_per_epoch_noray"] = ck["save_s"]
            row["save_share_noray"] = ck["save_share"]
            engine_cpu = ck["epoch_cpu_s"] * args.epochs * row["trials"]
            row["engine_cpu_s_noray"] = engine_cpu
            row["overhead_cpu_s_per_trial"] = (row["tree_cpu_s"] - engine_cpu) / row["trials"]
            row["overhead_cpu_share"] = 1 - engine_cpu / row["tree_cpu_s"]
            row["engine_cpu_s_per_trial"] = engine_cpu / row["trials"]
            rows.append(row)
            print(row, flush=True)
    ray.shutdown()
    emit("tune_overhead", rows)
    la = os.getloadavg()
    print(f"load average: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")


if __name__ == "__main__":
    main()
