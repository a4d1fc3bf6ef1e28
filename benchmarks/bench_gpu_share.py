"""Trials per hour when N engine runs share one GPU (what --gpus-per-trial 1/N does under Ray).

    python benchmarks/bench_gpu_share.py                          # N = 1, 2, 4, 8; small CNN on digits
    python benchmarks/bench_gpu_share.py --procs 1,4 --epochs 40 --trials-per-proc 2
    python benchmarks/bench_gpu_share.py --device cpu --procs 1,2 --epochs 2   # dry run of the mechanics, no GPU

Each of N processes (multiprocessing 'spawn', one torch thread each) imports weaklab,
initialises CUDA and builds the weak data, then waits at a barrier; after it, every
process runs ``--trials-per-proc`` trials of the tau-sweep study's config (homoscedastic
by default, ``--method heteroscedastic`` for the paper's method; small CNN at the
study's width on digits) through ``weaklab.engine.run_trial`` with ``train.device=cuda``.
The clock runs from the barrier to the last process's end, so process start and CUDA
context creation (which a reused Ray actor pays once) are left out; they are reported
as ``startup_s``. ``trials_per_h`` = N x trials-per-proc x 3600 / wall; ``speedup`` is
against N = 1 (target: N = 4 >= 2.5x). Torch only, no Ray. Without a GPU it says so
and exits 0 (unless ``--device cpu``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def trial_config(method: str, epochs: int, device: str, seed: int, extra: dict) -> dict:
    from studies import STUDIES, expand

    base = next(c for c in expand(STUDIES.get("tau-sweep")) if c["method"] == method)
    if method == "heteroscedastic":
        base = {**base, "hp.tau": 1.0, "hp.train_samples": 100}
    return {**base, "seed": seed, "train.epochs": epochs, "train.patience": 0, "train.device": device, **extra}


def worker(rank: int, args: dict, barrier, results) -> None:
    t_start = time.perf_counter()
    sys.path.insert(0, ROOT)
    import torch

    torch.set_num_threads(1)
    from weaklab.engine import build_trial, run_trial

    cfgs = [trial_config(args["method"], args["epochs"], args["device"], rank * 100 + k, args["extra"])
            for k in range(args["trials_per_proc"])]
    for c in cfgs:
        build_trial(c)  # data and weak-label cache ready before the clock
    if args["device"] == "cuda":
        torch.zeros(1, device="cuda")
        torch.cuda.synchronize()
    startup = time.perf_counter() - t_start
    barrier.wait()
    t0 = time.perf_counter()
    sps, train_s, epoch_s = [], 0.0, 0.0
    for c in cfgs:
        r = run_trial(c)
        sps += [h["samples_per_s"] for h in r.history[1:]]
        train_s += sum(h["train_s"] for h in r.history)
        epoch_s += sum(h["epoch_s"] for h in r.history)
    results.put({"rank": rank, "wall": time.perf_counter() - t0, "end": time.time(), "startup": startup,
                 "sps": sum(sps) / max(len(sps), 1), "train_share": train_s / max(epoch_s, 1e-9)})


def run_n(n: int, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n + 1), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, args, barrier, results)) for r in range(n)]
    for p in procs:
        p.start()
    barrier.wait(timeout=600)
    t0, t0_wall = time.perf_counter(), time.time()
    got = [results.get(timeout=3600) for _ in range(n)]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise SystemExit(f"{len(bad)} worker(s) failed (exit codes {bad})")
    trials = n * args["trials_per_proc"]
    return {"procs": n, "gpus_per_trial": round(1 / n, 4), "trials": trials, "wall_s": wall,
            "trial_s_mean": sum(g["wall"] for g in got) / n / args["trials_per_proc"],
            "trials_per_h": trials * 3600 / wall, "samples_per_s_per_proc": sum(g["sps"] for g in got) / n,
            "samples_per_s_total": sum(g["sps"] for g in got), "train_share": sum(g["train_share"] for g in got) / n,
            "startup_s": max(g["startup"] for g in got), "load1": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", default="1,2,4,8", help="N processes sharing the GPU, one run each")
    ap.add_argument("--method", default="homoscedastic", choices=("homoscedastic", "heteroscedastic"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--trials-per-proc", type=int, default=1)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra train.* / hp.* values, e.g. --set train.compile=true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu_share: no GPU visible (torch.cuda.is_available() is False); nothing measured. "
              "Run it on a GPU machine, or with --device cpu for a dry run of the mechanics.")
        return
    extra = {}
    for item in args.set:
        k, _, v = item.partition("=")
        extra[k] = {"true": True, "false": False}.get(v.lower(), v)
    shared = {"method": args.method, "epochs": args.epochs, "trials_per_proc": args.trials_per_proc,
              "device": args.device, "extra": extra}
    rows = []
    for n in [int(v) for v in args.procs.split(",")]:
        rows.append(run_n(n, shared))
        print(rows[-1], flush=True)
    one = next((r for r in rows if r["procs"] == 1), None)
    for r in rows:
        if one:
            r["speedup"] = r["trials_per_h"] / one["trials_per_h"]
        if r["procs"] == 4 and one:
            r["target_met"] = r["speedup"] >= 2.5
    from benchmarks.common import emit

    emit("gpu_share" + ("" if args.device == "cuda" else "_cpu_dryrun"), rows)
    la = os.getloadavg()
    print(f"load average: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    assert "ray" not in sys.modules, "bench_gpu_share must run with torch alone"


if __name__ == "__main__":
    main()
