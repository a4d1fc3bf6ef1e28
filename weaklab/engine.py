"""One training function for every method; it knows nothing of Ray.

``train`` owns the loop (each history row times its epoch in wall seconds, ``epoch_s``,
and in this process's CPU seconds, ``epoch_cpu_s``, which load on a shared machine does
not inflate): seeds, optimizer, schedule, epochs, evaluation of every split
each epoch, early stopping on a validation metric (the best epoch's metrics are the
ones reported as ``best_*``, as paper 002 uses its best validation checkpoint for test),
checkpoint save/restore, bf16 autocast on GPU. The method owns the loss and its
per-epoch updates (see ``weaklab.methods``). ``on_epoch(history, save, last)`` is called
once per epoch with the history so far (``history[-1]`` is this epoch's metrics); ``save(directory)`` writes a checkpoint that ``restore=directory``
resumes exactly (model, optimizer, schedule, method state, RNG streams, history).
"""

from __future__ import annotations

import copy
import functools
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Container

import torch

from weaklab.config import Trial, TrainConfig, as_trial
from weaklab.metrics import evaluate
from weaklab.methods import METHODS, Method, StageSwitch
from weaklab.models import build_model
from weaklab.settings import WeakData

CHECKPOINT_FILE = "state.pt"
OnEpoch = Callable[[list[dict[str, float]], Callable[[str], None], bool], None]


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    best_epoch: int
    stopped_early: bool
    device: str
    wall_s: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1]

    @property
    def best(self) -> dict[str, float]:
        return next(h for h in self.history if h["epoch"] == self.best_epoch)


def resolve_device(name: str) -> torch.device:
    """``auto``: the GPU this process may see (Ray sets CUDA_VISIBLE_DEVICES to the GPUs it
    assigned, empty when none), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device='cuda' but no GPU is visible to this process")
    return torch.device(name)


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.adam_beta1, 0.999), eps=cfg.adam_eps,
                            weight_decay=cfg.weight_decay, fused=cfg.adam_fused)


def make_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.step_gamma)
    if cfg.schedule == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=cfg.milestone_epochs(), gamma=cfg.step_gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


@torch.no_grad()
def evaluate_splits(method: Method, model: torch.nn.Module, data: WeakData, batch_size: int,
                    splits: Container[str] | None = None) -> dict[str, float]:
    """``<split>_<metric>`` for every split in ``data.evals`` (or those in ``splits``;
    probabilities from method.predict)."""
    was_training = model.training
    model.eval()
    out, cache = {}, {}
    for split, (x, y) in data.evals.items():
        if splits is not None and split not in splits:
            continue
        if id(x) not in cache:  # noisy and clean test splits share inputs: predict once
            cache[id(x)] = torch.cat([method.predict(model, xb) for xb in x.split(batch_size)])
        probs = cache[id(x)]
        out.update({f"{split}_{k}": v for k, v in evaluate(probs, y, data.class_groups).items()})
    model.train(was_training)
    return out


def _metric_names(val_metrics: dict[str, float]) -> list[str]:
    """The metric names evaluate() gave for ``val`` (acc, ll, acc_many, ...), to fill other splits with NaN."""
    return [k[len("val_"):] for k in val_metrics if k.startswith("val_")]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(*, data: WeakData, method: Method, config: TrainConfig, seed: int, on_epoch: OnEpoch | None = None,
          restore: str | None = None) -> TrainResult:
    """Train ``method`` on ``data``; returns the per-epoch history and the selected epoch."""
    t_start = time.perf_counter()
    cfg = config
    torch.manual_seed(seed)
    device = resolve_device(cfg.device)
    data = data.to(device)
    model = build_model(cfg.arch, in_shape=tuple(data.x.shape[1:]), num_classes=data.num_classes,
                        head=method.head, width=cfg.width).to(device)
    init_weights = copy.deepcopy(model.state_dict())  # two-stage methods re-initialise to these
    use_cuda = device.type == "cuda"
    if use_cuda and cfg.channels_last and data.x.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model.parameters(), cfg)
    sched = make_schedule(opt, cfg)
    method.init_state(data)

    history: list[dict[str, float]] = []
    best_value, best_epoch, bad_epochs, start_epoch = -math.inf, 0, 0, 0
    best_weights: dict[str, torch.Tensor] | None = None
    if restore:
        state = torch.load(os.path.join(restore, CHECKPOINT_FILE), map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        method.load_state_dict(state["method"])
        history, best_value, best_epoch = state["history"], state["best_value"], state["best_epoch"]
        bad_epochs, start_epoch, best_weights = state["bad_epochs"], state["epoch"], state.get("best_model")
        torch.set_rng_state(state["torch_rng"].cpu())
        if use_cuda and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)

    def switch_stage(switch: StageSwitch) -> None:
        """Apply a method's stage switch between two epochs; the next checkpoint holds its result."""
        nonlocal opt, sched, best_value, bad_epochs, best_weights
        if switch.reinit:
            model.load_state_dict(init_weights)
            best_value, bad_epochs, best_weights = -math.inf, 0, None  # the new stage selects its own best epoch
        if switch.load is not None:
            model.load_state_dict(switch.load)
        if switch.reinit or switch.load is not None or switch.fresh_optimizer:
            opt = make_optimizer(model.parameters(), cfg)
            sched = make_schedule(opt, cfg)

    switches = method.stage_switches()
    if not restore:
        first = method.begin(model, data)
        if first is not None:
            switch_stage(first)

    step_model = torch.compile(model) if cfg.compile else model
    amp = use_cuda and cfg.amp
    # a checkpoint written at the early-stopping epoch resumes as stopped, not training on
    stopped_early = bool(restore) and cfg.patience > 0 and bad_epochs >= cfg.patience
    if stopped_early:
        start_epoch = cfg.epochs

    def save(directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
                 "method": method.state_dict(), "history": history, "best_value": best_value,
                 "best_epoch": best_epoch, "bad_epochs": bad_epochs, "epoch": len(history),
                 "torch_rng": torch.get_rng_state()}
        if best_weights is not None:
            state["best_model"] = best_weights
        if use_cuda:
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        tmp = os.path.join(directory, CHECKPOINT_FILE + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, os.path.join(directory, CHECKPOINT_FILE))

    for epoch in range(start_epoch, cfg.epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        model.train()
        loss_sum = torch.zeros((), device=device)
        steps = 0
        for idx in method.batches(data, epoch, cfg.batch_size):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = method.loss(step_model, data, idx, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach().float()  # summed on the device: no sync per step
            steps += 1
        sched.step()
        train_loss = loss_sum.item() / max(steps, 1)  # the epoch's one host sync of the loss
        train_s = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss became {train_loss} in epoch {epoch + 1}")
        _sync(device)
        t_method = time.perf_counter()
        extra = method.end_epoch(model, data, epoch)
        _sync(device)
        method_s = time.perf_counter() - t_method
        if epoch in switches:
            switch_stage(switches[epoch])
        lazy = cfg.eval_splits == "best"
        metrics = evaluate_splits(method, model, data, cfg.eval_batch_size, splits=("val",) if lazy else None)
        metrics.update(method.diagnostics(data))
        value = metrics.get(cfg.monitor)
        if value is None:
            raise KeyError(f"train.monitor={cfg.monitor!r} is not a metric of this run; available: "
                           f"{', '.join(k for k in metrics if k.startswith('val_'))}")
        improved = value > best_value
        if improved:
            best_value, best_epoch, bad_epochs = value, epoch + 1, 0
            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        if lazy:
            # the other splits only where a reported number reads them: the best epoch so
            # far (best_*) and the last epoch (final_*); NaN elsewhere
            last_epoch = epoch + 1 == cfg.epochs or (cfg.patience > 0 and bad_epochs >= cfg.patience)
            others = [s for s in data.evals if s != "val"]
            if improved or last_epoch:
                metrics.update(evaluate_splits(method, model, data, cfg.eval_batch_size, splits=others))
            else:
                metrics.update({f"{s}_{k}": math.nan for s in others for k in _metric_names(metrics)})
        _sync(device)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": opt.param_groups[0]["lr"],
               "epoch_s": time.perf_counter() - t0, "epoch_cpu_s": time.process_time() - c0, "train_s": train_s,
               "method_s": method_s, "samples_per_s": data.n / max(train_s, 1e-9), **extra, **metrics}
        row["best_epoch"] = best_epoch  # a row holds its own epoch's metrics: best.* are the trials table's
        history.append(row)
        stopped_early = cfg.patience > 0 and bad_epochs >= cfg.patience
        last = stopped_early or epoch + 1 == cfg.epochs
        if on_epoch is not None:
            on_epoch(history, save, last)
        if stopped_early:
            break

    return TrainResult(history=history, best_epoch=best_epoch, stopped_early=stopped_early, device=str(device),
                       wall_s=time.perf_counter() - t_start, info=dict(data.info))


@functools.lru_cache(maxsize=4)
def _dataset(name: str, root: str | None, split_seed: int):
    """Datasets are read once per process: a reused Ray actor runs many trials on them."""
    from weaklab.data import load_dataset
    from weaklab.settings import record_dataset

    ds = load_dataset(name, root=root, split_seed=split_seed)
    record_dataset(ds, root=root, split_seed=split_seed)
    return ds


def build_trial(trial: Trial | dict[str, Any]) -> tuple[Trial, WeakData, Method]:
    """(trial, weak data, method) for a :class:`Trial` (a flat config is parsed first).

    The weak data come from the cache the driver filled when it can (no clean dataset read
    in the worker); else from the clean dataset, once per process."""
    from weaklab.settings import cached_weak_data, make_weak_data

    t = as_trial(trial)
    weak = cached_weak_data(t.dataset, t.setting, t.setting_params, t.seed, root=t.data_root)
    if weak is None:
        weak = make_weak_data(_dataset(t.dataset, t.data_root, 0), t.setting, t.setting_params, t.seed)
    method = METHODS.get(t.method)(t.hparams, num_classes=weak.num_classes,
                                   device=resolve_device(t.train.device), seed=t.seed)
    return t, weak, method


def run_trial(trial: Trial | dict[str, Any], *, on_epoch: OnEpoch | None = None,
              restore: str | None = None) -> TrainResult:
    """One trial (a :class:`Trial` or its flat config, ``weaklab.config``), without Ray."""
    t, weak, method = build_trial(trial)
    return train(data=weak, method=method, config=t.train, seed=t.seed, on_epoch=on_epoch, restore=restore)
