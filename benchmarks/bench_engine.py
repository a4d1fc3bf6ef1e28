"""The engine against a bare PyTorch loop: same model, data, batch size and optimizer.

    python benchmarks/bench_engine.py                          # CPU: small CNN on digits + ResNet-18 (width 0.125, 256 images)
    python benchmarks/bench_engine.py --device cuda            # GPU: ResNet-18 width 1.0, 8192 random CIFAR images
    python benchmarks/bench_engine.py --device cuda --channels-last --compile --amp

Two cases, each trained by ``weaklab.engine.train`` (method ``homoscedastic``: plain
cross-entropy) and by a loop with nothing else (randperm, index, forward, CE, backward,
step):

- ``cnn-digits``: the paper-002 Table 7 CNN at the tau-sweep study's width (0.125) and
  batch size (64) on the digits training split of that study;
- ``resnet18-random``: the CIFAR ResNet-18 on random ``(N, 3, 32, 32)`` tensors in a
  hand-built ``WeakData``.

Throughput counts training steps only (the engine's ``train_s``); the engine's evaluation
of every split is reported apart as ``eval_s_per_epoch`` (``epoch_s - train_s - method_s``).
The first epoch (warm-up, compile) is left out when there are two or more. Bare and engine
runs alternate ``--repeats`` times and the best of each is kept, since the machine may be
shared; ``cpu_s_per_epoch`` (process CPU time; for the engine the whole epoch, evaluation
included) is the figure that a loaded machine disturbs least. Torch only: Ray is never imported (asserted at the end).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import emit  # noqa: E402
from weaklab.config import TrainConfig  # noqa: E402
from weaklab.engine import build_trial, resolve_device, train  # noqa: E402
from weaklab.methods import METHODS  # noqa: E402
from weaklab.models import build_model  # noqa: E402
from weaklab.settings import WeakData  # noqa: E402


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def digits_case(args) -> tuple[WeakData, TrainConfig]:
    """The tau-sweep study's homoscedastic trial (its width and batch size), our options on top."""
    from studies import STUDIES, expand

    cfg = next(c for c in expand(STUDIES.get("tau-sweep")) if c["method"] == "homoscedastic")
    cfg = {**cfg, "train.epochs": args.epochs, "train.patience": 0, "train.device": args.device,
           "train.channels_last": args.channels_last, "train.compile": args.compile, "train.amp": args.amp}
    t, weak, _ = build_trial(cfg)
    return weak, t.train


def random_cifar_case(args, dev: torch.device) -> tuple[WeakData, TrainConfig]:
    n = args.n or (8192 if dev.type == "cuda" else 256)
    width = args.width or (1.0 if dev.type == "cuda" else 0.125)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    n_eval = max(n // 4, 64)
    xv, yv = torch.randn(n_eval, 3, 32, 32, generator=g), torch.randint(0, 10, (n_eval,), generator=g)
    weak = WeakData(kind="noisy", num_classes=10, x=x, weak={"y": y}, hidden={"y": y.clone()},
                    evals={"val": (xv, yv), "test": (xv, yv)})
    cfg = TrainConfig(arch="resnet18", width=width, epochs=args.epochs, batch_size=args.batch_size or 128,
                      optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, patience=0,
                      eval_batch_size=1024, device=args.device, channels_last=args.channels_last,
                      compile=args.compile, amp=args.amp)
    return weak, cfg


def bare_loop(weak: WeakData, cfg: TrainConfig, dev: torch.device) -> tuple[float, float]:
    """(samples per second, CPU seconds per epoch) of the training steps alone (the first
    epoch left out if epochs >= 2)."""
    torch.manual_seed(0)
    x, y = weak.x.to(dev), weak.weak["y"].to(dev)
    model = build_model(cfg.arch, in_shape=tuple(x.shape[1:]), num_classes=weak.num_classes,
                        width=cfg.width).to(dev)
    cuda = dev.type == "cuda"
    if cuda and cfg.channels_last and x.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, 0.999), eps=cfg.adam_eps,
                               weight_decay=cfg.weight_decay)
    step_model = torch.compile(model) if cfg.compile else model
    times, cpu = [], []
    for _ in range(cfg.epochs):
        _sync(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        for idx in torch.randperm(len(y), device=dev).split(cfg.batch_size):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda and cfg.amp):
                loss = F.cross_entropy(step_model(x[idx]).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(dev)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    times, cpu = (times[1:], cpu[1:]) if len(times) > 1 else (times, cpu)
    return len(y) * len(times) / sum(times), sum(cpu) / len(cpu)


def engine_run(weak: WeakData, cfg: TrainConfig, dev: torch.device) -> dict[str, float]:
    method = METHODS.get("homoscedastic")(None, num_classes=weak.num_classes, device=dev, seed=0)
    cpu = [time.process_time()]
    hist = train(data=weak, method=method, config=cfg, seed=0,
                 on_epoch=lambda h, save, last: cpu.append(time.process_time())).history
    cpu = [b - a for a, b in zip(cpu, cpu[1:])]  # first: includes model build; left out below
    hist, cpu = (hist[1:], cpu[1:]) if len(hist) > 1 else (hist, cpu)
    train_s = sum(h["train_s"] for h in hist)
    return {"sps": weak.n * len(hist) / train_s,
            "eval_s": sum(h["epoch_s"] - h["train_s"] - h["method_s"] for h in hist) / len(hist),
            "train_s": train_s / len(hist), "epoch_s": sum(h["epoch_s"] for h in hist) / len(hist),
            "cpu_s": sum(cpu) / len(cpu)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is warm-up, left out)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating bare/engine runs; best of each kept")
    ap.add_argument("--cases", default="cnn-digits,resnet18-random")
    ap.add_argument("--width", type=float, default=None, help="ResNet-18 width (default 1.0 on GPU, 0.125 on CPU)")
    ap.add_argument("--n", type=int, default=None, help="random CIFAR images (default 8192 on GPU, 256 on CPU)")
    ap.add_argument("--batch-size", type=int, default=None, help="ResNet-18 batch size (default 128)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (GPU only; the engine ignores it on CPU)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    rows = []
    for case in args.cases.split(","):
        weak, cfg = digits_case(args) if case == "cnn-digits" else random_cifar_case(args, dev)
        bare, eng = [], []
        for _ in range(args.repeats):
            bare.append(bare_loop(weak, cfg, dev))
            eng.append(engine_run(weak, cfg, dev))
        best = max(eng, key=lambda e: e["sps"])
        b, b_cpu = max(bare)[0], min(c for _, c in bare)
        common = {"case": case, "arch": cfg.arch, "width": cfg.width, "n_train": weak.n, "batch": cfg.batch_size,
                  "device": str(dev), "amp": cfg.amp and dev.type == "cuda", "channels_last": cfg.channels_last,
                  "compile": cfg.compile}
        rows.append({**common, "run": "bare loop", "samples_per_s": b, "ratio_to_bare": 1.0,
                     "cpu_s_per_epoch": b_cpu})
        rows.append({**common, "run": "engine", "samples_per_s": best["sps"], "ratio_to_bare": best["sps"] / b,
                     "train_s_per_epoch": best["train_s"], "eval_s_per_epoch": best["eval_s"],
                     "epoch_s": best["epoch_s"], "cpu_s_per_epoch": min(e["cpu_s"] for e in eng),
                     "eval_share": best["eval_s"] / best["epoch_s"]})
    emit("engine_vs_bare" + ("_gpu" if dev.type == "cuda" else ""), rows)
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    assert "ray" not in sys.modules, "bench_engine must run with torch alone"


if __name__ == "__main__":
    main()
