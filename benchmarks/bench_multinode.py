"""Trials per minute of one small study on a single Ray node vs a local multi-node cluster.

Both setups offer the same trial slots (``--cpus`` CPUs in total, one trial per CPU): the
single node has them all; the cluster (``ray.cluster_utils.Cluster``, all on this machine)
has a 0-CPU head that only runs the driver, as cluster.yaml does, and ``--cpus`` worker
nodes with 1 CPU each. The difference is what spreading trials over nodes costs (actor
start-up on each node, checkpoints written by other nodes, the driver's bookkeeping).
Cluster start-up is excluded; the whole ``run_study`` (validation, weak-data build, Tune,
Parquet) is timed.

    python benchmarks/bench_multinode.py                      # 8 trials x 5 epochs, 2 CPUs
    python benchmarks/bench_multinode.py --trials 16 --epochs 10 --repeats 2 --csv out.csv

Prints a table and writes a CSV (default benchmarks/bench_multinode.csv).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STUDY = "bench-multinode"


def register(trials: int, epochs: int) -> None:
    from studies import Arm, Study, register_study

    seeds = 2 if trials % 2 == 0 else 1
    lrs = tuple(1e-3 * (1 + i) for i in range(trials // seeds))
    register_study(Study(
        name=STUDY, title="multi-node benchmark", reproduces="(benchmark)", setting="noise",
        fixed={"setting.protocol": "heteroscedastic", "train.arch": "mlp", "train.width": 0.25,
               "train.batch_size": 64, "train.epochs": epochs, "train.patience": 0},
        arms=(Arm("homoscedastic", grid={"train.lr": lrs}),), seeds=seeds, metric="best.val_acc"))


def run_once(address: str, workdir: str) -> tuple[float, int]:
    import pandas as pd

    from weaklab.tune.runner import run_study

    t0 = time.perf_counter()
    study_dir = run_study(STUDY, results=os.path.join(workdir, "results"), storage=os.path.join(workdir, "tune"),
                          address=address, cpus_per_trial=1, gpus_per_trial=0, max_failures=0, verbose=False)
    wall = time.perf_counter() - t0
    trials = pd.read_parquet(os.path.join(study_dir, "trials"))
    return wall, int((trials["status"] == "completed").sum())


def single_node(cpus: int, workdir: str) -> tuple[float, int]:
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus, "include_dashboard": False})
    ray.init(address=c.address, log_to_driver=False, logging_level="ERROR")
    try:
        return run_once(c.address, workdir)
    finally:
        ray.shutdown()
        c.shutdown()


def multi_node(cpus: int, workdir: str) -> tuple[float, int]:
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(cpus):
        c.add_node(num_cpus=1)
    ray.init(address=c.address, log_to_driver=False, logging_level="ERROR")
    c.wait_for_nodes()
    try:
        return run_once(c.address, workdir)
    finally:
        ray.shutdown()
        c.shutdown()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=8, help="trials in the study")
    p.add_argument("--epochs", type=int, default=5, help="epochs per trial")
    p.add_argument("--cpus", type=int, default=2, help="trial slots in total (= worker nodes of the cluster)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each setup")
    p.add_argument("--csv", default=os.path.join(ROOT, "benchmarks", "bench_multinode.csv"))
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    register(args.trials, args.epochs)
    from weaklab.tune.runner import prepare

    prepare(STUDY)  # build (and cache on disk) the weak data first, so no setup pays for it

    rows = []
    setups = [("single node", 1, single_node), ("multi-node", 1 + args.cpus, multi_node)]
    for rep in range(args.repeats):
        for setup, nodes, fn in (setups if rep % 2 == 0 else setups[::-1]):  # alternate the order
            with tempfile.TemporaryDirectory(prefix="bench-multinode-") as d:
                wall, done = fn(args.cpus, d)
            rows.append({"setup": setup, "nodes": nodes, "trial_slots": args.cpus, "trials": args.trials,
                         "completed": done, "epochs": args.epochs, "repeat": rep, "wall_s": round(wall, 2),
                         "trials_per_min": round(60 * done / wall, 2), "host": platform.node(),
                         "cpu_count": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2)})
            print(f"  {setup}: {done}/{args.trials} trials in {wall:.1f} s", file=sys.stderr, flush=True)

    print(f"\n{'setup':12s} {'nodes':>5s} {'slots':>5s} {'trials':>6s} {'wall_s':>8s} {'trials/min':>10s} {'load':>5s}")
    for r in rows:
        print(f"{r['setup']:12s} {r['nodes']:5d} {r['trial_slots']:5d} {r['completed']:6d} {r['wall_s']:8.1f} "
              f"{r['trials_per_min']:10.2f} {r['load_1min']:5.1f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"\nwrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
