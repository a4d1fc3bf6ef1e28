"""Per-method cost on CPU: where an epoch goes, and the extra work each method adds.

    python benchmarks/bench_methods.py                     # every registered method, 3 epochs each
    python benchmarks/bench_methods.py --methods plot,balancemix --epochs 4
    python benchmarks/bench_methods.py --methods dllp --set hp.track_ot_every=1   # override config keys

For every method in ``weaklab.methods.METHODS``, its config is the first study (in
registry order) whose ``--smoke`` run uses it (else the first whose full run does), with
that study's default (non-smoke) ``train.*`` settings and ``train.patience=0``; the
epochs are ``--epochs``, on CPU with one thread. Per epoch (mean over the epochs after the
first, which warms up):

- ``epoch_s``, ``train_s`` (the step loop), ``method_s`` (``method.end_epoch``: pseudo
  labels, priors, GMMs, OT), ``eval_s`` (the rest: evaluating every split);
- ``timed_s``: the timing metrics the method reports itself (``label_update_s``, ``gmm_s``,
  ``relabel_s``, ``ot_s``, ... every extra key ending in ``_s``), listed in ``timed``;
- ``step_extra``: the per-step extra work, estimated by timing the method's ``loss()`` +
  backward against a plain cross-entropy forward + backward of the same model on the
  same batch (CPU process time, batches interleaved, median of ``--steps`` pairs):
  ``1 - t_ce / t_method``, i.e. the share of ``train_s`` beyond plain CE;
- ``extra_share`` = (``method_s`` + ``step_extra`` x ``train_s``) / ``epoch_s``; methods
  above 5 % are flagged ``*``.

Torch only: Ray is never imported (asserted at the end).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import emit  # noqa: E402
from studies import STUDIES, expand, resolve  # noqa: E402
from weaklab.engine import build_trial, train  # noqa: E402
from weaklab.methods import METHODS  # noqa: E402
from weaklab.models import build_model  # noqa: E402

STANDARD_S = {"epoch_s", "epoch_cpu_s", "train_s", "method_s", "wall_s", "samples_per_s"}


def method_configs() -> dict[str, tuple[str, dict]]:
    """method -> (study name, flat config) as described in the module docstring."""
    found: dict[str, tuple[str, dict]] = {}
    for smoke in (True, False):
        for name in STUDIES.names():
            study = STUDIES.get(name)
            train_defaults = {k: v for k, v in study.fixed.items() if k.startswith("train.")}
            for cfg in expand(resolve(study, smoke=smoke)):
                if cfg["method"] not in found:
                    found[cfg["method"]] = (name + (" (smoke)" if smoke else ""), {**cfg, **train_defaults})
    return found


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def step_extra(method, weak, t, epoch: int, steps: int) -> tuple[float, float, float]:
    """(median 1 - t_ce / t_method, t_method per step, t_ce per step) over ``steps`` batches."""
    torch.manual_seed(1)
    model = build_model(t.train.arch, in_shape=tuple(weak.x.shape[1:]), num_classes=weak.num_classes,
                        head=method.head, width=t.train.width)
    model.train()
    g = torch.Generator().manual_seed(1)
    ratios, tm, tc = [], [], []
    batches = list(method.batches(weak, epoch, t.train.batch_size))
    for i in range(steps):
        idx = batches[i % len(batches)]
        target = torch.randint(0, weak.num_classes, (len(idx),), generator=g)  # timing only

        def timed(fn) -> float:
            c0 = time.process_time()
            fn().backward()
            model.zero_grad(set_to_none=True)
            return time.process_time() - c0

        run_m = lambda: method.loss(model, weak, idx, epoch)
        run_ce = lambda: F.cross_entropy(_first(model(weak.x[idx])).float(), target)
        if i % 2:  # alternate the order: neither side always runs on a warm cache
            a = timed(run_m)
            b = timed(run_ce)
        else:
            b = timed(run_ce)
            a = timed(run_m)
        if i < 2:
            continue  # warm-up pairs
        tm.append(a)
        tc.append(b)
        ratios.append(1.0 - b / max(a, 1e-9))
    return statistics.median(ratios), statistics.median(tm), statistics.median(tc)


def bench(name: str, study: str, cfg: dict, epochs: int, steps: int, sets: dict | None = None) -> dict:
    hp_fields = {f"hp.{f.name}" for f in dataclasses.fields(METHODS.get(cfg["method"]).Hparams)}
    sets = {k: v for k, v in (sets or {}).items() if not k.startswith("hp.") or k in hp_fields}
    cfg = {**cfg, **sets, "train.epochs": epochs, "train.patience": 0, "train.device": "cpu"}
    t, weak, method = build_trial(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    hist = train(data=weak, method=method, config=t.train, seed=0).history
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = hist[1:] if len(hist) > 1 else hist
    # NaN-aware: a timing a method reports only some epochs (DLLP's every-k OT) averages over those
    mean = lambda k: (lambda v: sum(v) / len(v) if v else 0.0)([h[k] for h in rows if k in h and h[k] == h[k]])
    timed = sorted({k for h in rows for k in h if k.endswith("_s") and k not in STANDARD_S})
    epoch_s, train_s, method_s = mean("epoch_s"), mean("train_s"), mean("method_s")
    extra, t_m, t_ce = step_extra(method, weak, t, epochs - 1, steps)
    extra = max(extra, 0.0)
    share = (method_s + extra * train_s) / epoch_s
    return {"method": name, "study": study, "arch": f"{t.train.arch}x{t.train.width:g}", "dataset": t.dataset,
            "n_train": weak.n, "batch": t.train.batch_size, "epoch_s": epoch_s, "train_s": train_s,
            "method_s": method_s, "eval_s": epoch_s - train_s - method_s,
            "timed": " ".join(f"{k}={mean(k):.3g}" for k in timed), "timed_s": sum(mean(k) for k in timed),
            "step_ms": t_m * 1e3, "ce_step_ms": t_ce * 1e3, "step_extra": extra,
            "method_share": method_s / epoch_s, "eval_share": (epoch_s - train_s - method_s) / epoch_s,
            "extra_share": share, "flag": "*" if share > 0.05 else "", "run_s": wall,
            # process CPU seconds per epoch over the whole run: what load on a shared machine does not inflate
            "run_cpu_s_per_epoch": cpu / len(hist), "sets": " ".join(f"{k}={v}" for k, v in sets.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="", help="comma-separated names (default: every registered method)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per method (the first is warm-up, left out)")
    ap.add_argument("--steps", type=int, default=24, help="interleaved method/CE step pairs for step_extra")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key for every method that has it (hp.* only where the method has it)")
    args = ap.parse_args()
    from weaklab.study import parse_sets

    sets = parse_sets(args.set)
    torch.set_num_threads(args.threads)
    configs = method_configs()
    names = args.methods.split(",") if args.methods else METHODS.names()
    rows = []
    for name in names:
        if name not in configs:
            rows.append({"method": name, "study": "(no study uses it)"})
            continue
        study, cfg = configs[name]
        load = os.getloadavg()[0]
        try:
            row = bench(name, study, cfg, args.epochs, args.steps, sets)
        except Exception as e:  # one broken method must not hide the others' figures
            row = {"method": name, "study": study, "flag": f"error: {type(e).__name__}: {str(e)[:120]}"}
        row["load1"] = load
        rows.append(row)
        print(f"{name}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in row.items() if k != "method"), flush=True)
    print()
    emit("methods_cpu", rows)
    la = os.getloadavg()
    print(f"load average: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    assert "ray" not in sys.modules, "bench_methods must run with torch alone"


if __name__ == "__main__":
    main()
