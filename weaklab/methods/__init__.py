"""Methods: one file per paper plus ``baselines``; registered by name on import.

A method is a small class holding its own explicit state (pseudo labels, class prior,
GMM posteriors, sampler weights). The engine owns everything else (optimizer, schedule,
evaluation, early stopping, checkpoints) and calls, per trial:

    m = METHODS.get(name)(hp, num_classes=K, device=dev, seed=seed)
    m.init_state(data)                               # once, before epoch 0
    switches = m.stage_switches()                    # {epoch: StageSwitch}: the method's stages
    if fresh run: apply(m.begin(model, data))        # e.g. labels and weights from a loaded teacher
    for epoch in range(epochs):
        for idx in m.batches(data, epoch, batch_size):   # index tensors on the device
            loss = m.loss(model, data, idx, epoch)       # under autocast on GPU
            ...backward, step...
        extra = m.end_epoch(model, data, epoch)          # per-epoch updates; returns metrics
        apply(switches.get(epoch))                       # the engine re-initialises / loads / resets
        probs = m.predict(model, x) for each eval split  # (N,K) probabilities, or scores if multilabel
        diag = m.diagnostics(data)                       # the ONLY place that may read data.hidden

A stage switch is data the engine applies between two epochs (:class:`StageSwitch`), so
its result is in the next checkpoint and a resumed run never applies it twice; ``predict``
is a pure function of the model.

Hyperparameters are a frozen dataclass ``Hparams`` whose fields are the paper's symbols
(config keys ``hp.<field>``) and whose ``__post_init__`` validates with a one-line error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from torch.nn import functional as F

from weaklab.registry import ConfigError, Registry, import_submodules
from weaklab.settings import WeakData

Tensor = torch.Tensor


@dataclass(frozen=True)
class NoHparams:
    """A method without hyperparameters."""


@dataclass(frozen=True)
class StageSwitch:
    """What the engine does to the network between two epochs when a method changes stage."""

    reinit: bool = False
    """back to the network's initial weights (a new network, same seed) and a new optimizer
    and schedule; best-epoch selection restarts"""
    load: dict[str, Tensor] | None = None
    """weights to load into the network (a teacher's), then a new optimizer and schedule"""
    fresh_optimizer: bool = False
    """a new optimizer and schedule for the same weights"""


class Method:
    name: ClassVar[str] = ""
    consumes: ClassVar[tuple[str, ...]] = ()
    """WeakData kinds this method trains on (``noisy``, ``quantized``, ``partial``, ``bags``, ``multilabel``)."""
    Hparams: ClassVar[type] = NoHparams
    head: ClassVar[str] = "linear"
    state_keys: ClassVar[tuple[str, ...]] = ()
    """attribute names of tensors saved in checkpoints (pseudo labels, priors, ...)"""

    def __init__(self, hp: Any, *, num_classes: int, device: torch.device | str = "cpu", seed: int = 0):
        self.hp = hp
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.rng = np.random.default_rng([seed, 7])  # method-side numpy draws (Beta, sampling), own stream

    # -- per trial -----------------------------------------------------------------------
    def init_state(self, data: WeakData) -> None:
        """Set up explicit state from the weak data (never from ``data.hidden``)."""

    def stage_switches(self) -> dict[int, StageSwitch]:
        """The method's stages, declared from its hyperparameters: epoch index -> what the
        engine does after that epoch's :meth:`end_epoch`. One stage: ``{}``."""
        return {}

    def begin(self, model: torch.nn.Module, data: WeakData) -> StageSwitch | None:
        """Once before the first epoch of a fresh run (never on resume); the engine applies
        what it returns. E.g. PLOT's first labels and weights from a loaded teacher."""
        return None

    def batches(self, data: WeakData, epoch: int, batch_size: int) -> Iterator[Tensor]:
        """Index tensors of one epoch; default: a random permutation cut into batches."""
        perm = torch.randperm(data.n, device=data.x.device)
        yield from perm.split(batch_size)

    def loss(self, model: torch.nn.Module, data: WeakData, idx: Tensor, epoch: int) -> Tensor:
        raise NotImplementedError

    def end_epoch(self, model: torch.nn.Module, data: WeakData, epoch: int) -> dict[str, float]:
        """Per-epoch updates (pseudo labels, priors, GMMs, OT); returns extra metrics."""
        return {}

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, x: Tensor) -> Tensor:
        """Class probabilities ``(N, K)`` (rows sum to one), or per-label scores for multi-label."""
        return F.softmax(model(x).float(), dim=1)

    def diagnostics(self, data: WeakData) -> dict[str, float]:
        """Diagnostics against the hidden truth (pseudo-label accuracy, selection precision)."""
        return {}

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.state_keys if getattr(self, k, None) is not None}
        d["_rng"] = self.rng.bit_generator.state
        return d

    def load_state_dict(self, d: dict[str, Any]) -> None:
        for k in self.state_keys:
            if k in d:
                setattr(self, k, d[k].to(self.device) if isinstance(d[k], Tensor) else d[k])
        if "_rng" in d:
            self.rng.bit_generator.state = d["_rng"]


@torch.no_grad()
def eval_logits(model: torch.nn.Module, x: Tensor, *, batch: int = 1024,
                inputs: Callable[[Tensor], Tensor] | None = None, autocast: bool = False) -> Tensor:
    """Float32 outputs of ``model`` on every row of ``x`` in eval mode, ``batch`` rows per
    forward pass, restoring the caller's mode: the one "predict the whole training set" of
    the methods' per-epoch updates. ``inputs`` maps a chunk to the model's input (uint8
    images to float, chunk by chunk); ``autocast``: bf16 on GPU."""
    was = model.training
    model.eval()
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            return torch.cat([model(inputs(xb) if inputs else xb).float() for xb in x.split(batch)])
    finally:
        model.train(was)


METHODS: Registry[type[Method]] = Registry("method")


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: registers ``cls`` under ``cls.name`` (duplicates raise)."""
    if not cls.name or not cls.consumes:
        raise ValueError(f"{cls.__name__} must set name and consumes")
    return METHODS.add(cls.name, cls)


def method_hparams(name: str, values: dict[str, Any]) -> Any:
    """Build (and so validate) method ``name``'s Hparams from ``{field: value}``."""
    cls = METHODS.get(name) if name in METHODS else None
    if cls is None:
        raise ConfigError(f"method={name!r} is not allowed: one of {', '.join(METHODS.names())}")
    allowed = {f.name for f in dataclasses.fields(cls.Hparams)}
    for k in values:
        if k not in allowed:
            raise ConfigError(f"hp.{k} is not a hyperparameter of method {name!r}; allowed: "
                              f"{', '.join(sorted(allowed)) or 'none'}")
    return cls.Hparams(**values)


import_submodules(__name__, __path__)
