"""Samples per second of a bare PyTorch loop, of the engine, and of the engine inside a
Ray Tune trial (same model, data, batch size, optimizer); and a study's wall time against
the sum of its trials' times.

    python benchmarks/bench_platform.py             # both parts
    python benchmarks/bench_platform.py --no-ray    # bare loop vs engine only (GPU machine without Ray)

Throughput counts the training steps only (the engine's ``train_s``); evaluation is
reported separately because the bare loop has none.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import emit  # noqa: E402
from studies import STUDIES, expand  # noqa: E402
from weaklab.engine import build_trial, resolve_device, train  # noqa: E402
from weaklab.methods.heteroscedastic import heteroscedastic_log_probs  # noqa: E402
from weaklab.models import build_model  # noqa: E402


def bench_config(epochs: int) -> dict:
    cfg = next(c for c in expand(STUDIES.get("tau-sweep")) if c["method"] == "heteroscedastic")
    return {**cfg, "hp.tau": 1.0, "hp.train_samples": 100, "hp.eval_samples": 1000, "train.epochs": epochs,
            "train.patience": 0}


def bare_loop(cfg: dict, epochs: int) -> float:
    """The same training as the engine with nothing else: samples per second."""
    t, weak, _ = build_trial(cfg)
    dev = resolve_device(t.train.device)
    torch.manual_seed(0)
    x, y = weak.x.to(dev), weak.weak["y"].to(dev)
    model = build_model(t.train.arch, in_shape=tuple(x.shape[1:]), num_classes=10, head="heteroscedastic",
                        width=t.train.width).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=t.train.lr, eps=t.train.adam_eps)
    total = 0.0
    for _ in range(epochs):
        t0 = time.perf_counter()
        for idx in torch.randperm(len(y), device=dev).split(t.train.batch_size):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                f, sigma = model(x[idx])
                loss = F.nll_loss(heteroscedastic_log_probs(f.float(), sigma.float(), tau=t.hparams.tau,
                                                            samples=t.hparams.train_samples), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        total += time.perf_counter() - t0
    return len(y) * epochs / total


def engine_run(cfg: dict) -> tuple[float, float]:
    """(training samples per second, evaluation seconds per epoch) of ``weaklab.engine.train``."""
    t, weak, method = build_trial(cfg)
    r = train(data=weak, method=method, config=t.train, seed=0)
    hist = r.history
    sps = sum(weak.n for _ in hist) / sum(h["train_s"] for h in hist)
    return sps, sum(h["epoch_s"] - h["train_s"] for h in hist) / len(hist)


def tune_trial(cfg: dict, results: str) -> tuple[float, float]:
    """The same run as a one-trial Tune study; read back from its Parquet."""
    import dataclasses

    from studies import Arm, register_study
    from weaklab.store import load_study
    from weaklab.tune.runner import run_study

    base = STUDIES.get("tau-sweep")
    name = "bench-one-trial"
    if name not in STUDIES:
        register_study(dataclasses.replace(base, name=name, seeds=1, fixed={**base.fixed, **{
            k: v for k, v in cfg.items() if k.startswith("train.")}},
            arms=(Arm("heteroscedastic", fixed={k: v for k, v in cfg.items() if k.startswith("hp.")}),)))
    t0 = time.perf_counter()
    study_dir = run_study(name, results=results, verbose=False)
    wall = time.perf_counter() - t0
    trials, epochs = load_study(study_dir)
    n = build_trial(cfg)[1].n
    return n * len(epochs) / epochs["train_s"].sum(), wall


def study_overhead(results: str) -> dict:
    """Wall time of the tau-sweep smoke study against the sum of its trials' wall times."""
    from weaklab.store import load_study
    from weaklab.tune.runner import run_study

    t0 = time.perf_counter()
    study_dir = run_study("tau-sweep", smoke=True, results=results, verbose=False)
    wall = time.perf_counter() - t0
    trials, _ = load_study(study_dir)
    return {"trials": len(trials), "study_wall_s": wall, "sum_trial_s": float(trials["wall_s"].sum()),
            "parallel_slots": 2, "efficiency": float(trials["wall_s"].sum()) / (wall * 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = bench_config(args.epochs)
    bare = bare_loop(cfg, args.epochs)
    eng, eval_s = engine_run(cfg)
    rows = [{"run": "bare loop", "samples_per_s": bare, "ratio_to_bare": 1.0},
            {"run": "engine", "samples_per_s": eng, "ratio_to_bare": eng / bare, "eval_s_per_epoch": eval_s}]
    if not args.no_ray:
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        with tempfile.TemporaryDirectory() as d:
            sps, wall = tune_trial(cfg, d)
            rows.append({"run": "engine in a Tune trial", "samples_per_s": sps, "ratio_to_bare": sps / bare,
                         "study_wall_s": wall})
            emit("platform_throughput", rows)
            print()
            emit("platform_study_overhead", [study_overhead(d)])
        ray.shutdown()
    else:
        emit("platform_throughput", rows)


if __name__ == "__main__":
    main()
