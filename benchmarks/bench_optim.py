"""Adam's fused kernel (``train.adam_fused``) against the unfused (foreach) step, on the
networks of the studies that train with Adam, and on whole trials.

    python benchmarks/bench_optim.py                      # every Adam study's model, + two whole trials
    python benchmarks/bench_optim.py --trials ''          # optimizer steps only

Part 1, per study that trains with Adam (its default, non-smoke ``train.*`` settings and
its first arm's trial): the model at that width and batch size; per step, process CPU
time of forward + loss + backward + ``step()`` with ``fused=False`` and ``fused=True``,
interleaved, median of ``--steps`` steps each, one thread. Part 2: whole trials of the
balancemix-delta-alpha study at seed 0 (``engine.run_trial``, every epoch), with
``train.adam_fused`` False then True: wall, process CPU time and the final test metric,
which differs because the fused kernel's arithmetic is not bit-identical to the unfused
one (the update is the same formula).

The unfused (foreach) step runs several element-wise kernels over the parameter tensors
one after another; the fused kernel makes one pass, which matters most where the step is
a large share of a small network's iteration. Torch only: Ray is never imported (asserted at the end).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import emit  # noqa: E402
from weaklab.engine import build_trial, run_trial  # noqa: E402
from weaklab.models import build_model  # noqa: E402
from weaklab.study import STUDIES, discover, expand  # noqa: E402


def adam_studies() -> list[tuple[str, dict]]:
    """(study, its first trial's flat config) for every registered study that trains with Adam."""
    discover()
    out = []
    for name in STUDIES.names():
        cfg = expand(STUDIES.get(name), seeds=[0])[0]
        if cfg.get("train.optimizer", "adam") == "adam":
            out.append((name, cfg))
    return out


def step_times(cfg: dict, steps: int) -> dict[str, float]:
    """Median CPU ms per training step (forward, plain loss, backward, step) unfused and fused."""
    t, weak, method = build_trial(cfg)
    x = weak.x[: t.train.batch_size]
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    out: dict[str, list[float]] = {"unfused": [], "fused": []}
    nets = {}
    for kind in out:
        torch.manual_seed(0)
        net = build_model(t.train.arch, in_shape=tuple(weak.x.shape[1:]), num_classes=weak.num_classes,
                          head=method.head, width=t.train.width)
        nets[kind] = (net, torch.optim.Adam(net.parameters(), lr=t.train.lr, fused=kind == "fused"))
    for i in range(steps + 5):
        for kind, (net, opt) in nets.items():
            c0 = time.process_time()
            out_ = net(x)
            logits = out_[0] if isinstance(out_, (tuple, list)) else out_
            loss = -F.logsigmoid(logits).mean()  # any scalar of the outputs: the step's cost is the same
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= 5:  # the first steps allocate the moment buffers
                out[kind].append(time.process_time() - c0)
    return {k: 1e3 * statistics.median(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="timed steps per variant")
    ap.add_argument("--trials", default="balancemix,bce",
                    help="comma-separated arm labels of balancemix-delta-alpha to run whole ('' = none)")
    ap.add_argument("--noise", default="mislabel", help="setting.noise of those trials")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())

    rows = []
    for name, cfg in adam_studies():
        ms = step_times(cfg, args.steps)
        rows.append({"study": name, "arch": cfg.get("train.arch"), "width": cfg.get("train.width"),
                     "batch": cfg.get("train.batch_size"), "unfused_ms": ms["unfused"], "fused_ms": ms["fused"],
                     "speedup": ms["unfused"] / ms["fused"], "load": load})
    emit("optim_steps", rows)

    labels = [s for s in args.trials.split(",") if s]
    if labels:
        rows = []
        cfgs = expand(STUDIES.get("balancemix-delta-alpha"), seeds=[0])
        for label in labels:
            cfg = next(c for c in cfgs if c["label"] == label and c["setting.noise"] == args.noise)
            run_trial({**cfg, "train.epochs": 2})  # data, imports and lazy inits out of the timing
            for fused in (False, True, True, False):  # both orders: the second run of a pair gains from warm caches
                w0, c0 = time.perf_counter(), time.process_time()
                res = run_trial({**cfg, "train.adam_fused": fused, "hp.peer_adam_fused": fused}
                                if cfg["method"] == "coteaching" else {**cfg, "train.adam_fused": fused})
                rows.append({"trial": f"{label} {args.noise} seed 0", "adam_fused": fused,
                             "epochs": len(res.history), "wall_s": time.perf_counter() - w0,
                             "cpu_s": time.process_time() - c0, "final_test_map": res.history[-1]["test_map"],
                             "load": " ".join(f"{v:.1f}" for v in os.getloadavg())})
        emit("optim_trials", rows)
    assert "ray" not in sys.modules, "the benchmark must not import Ray"


if __name__ == "__main__":
    main()
