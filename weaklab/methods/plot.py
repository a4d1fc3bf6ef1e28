"""Learning from label proportions: DLLP and the two-stage PLOT of paper 003 (Liu et al.).

A re-implementation from the paper (no reference code is used; none is public for PLOT).

Stage one, ``dllp`` (Ardehaly & Culotta 2017, as the paper states it in sec. 2 and 3.3):
the cross-entropy between each bag's proportions p_i and the bag's mean prediction,
trained on whole bags per step:

    L_DLLP = 1/m sum_i  - sum_k p_i^k log( 1/n_i sum_j p_phi(k | x_ij) )

Stage two, ``plot`` (Algorithm 1): starting from the stage-one model, alternate
  (a) training on pseudo labels q with symmetric cross-entropy (eq. 8-9) and mixup, and
  (b) once per epoch, re-solving the per-bag OT problem between the bag's instances
      (mass 1/n_i) and its proportions with cost -log p (eq. 4 exact -> hard labels by
      eq. 6; eq. 7 entropic with weight 1/lambda -> soft labels).
One ``plot`` trial runs ``stage1_epochs`` of DLLP first (the teacher), or loads a teacher
from ``stage1_checkpoint`` (an earlier trial's ``state.pt``); the switch between the stages
is declared (:meth:`PLOT.stage_switches`, :meth:`PLOT.begin`) and applied by the engine
(``weaklab.methods.StageSwitch``), so a checkpoint on either side resumes exactly. The Table 3 ablation
switches are hyperparameters: ``loss`` (ce / sce), ``ot`` (False: pseudo labels from the
predictions themselves), ``mixup``; ``avg_last`` averages the last T label sets
(the paper's TD_OT_5 and the five-epoch prediction mean of its no-OT rows).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from typing import Iterator

import torch
from torch.nn import functional as F

from weaklab.augment import check_mixup_alpha, mixup, random_hflip, random_translate
from weaklab.methods import Method, StageSwitch, eval_logits, register_method
from weaklab.methods.baselines_qll import symmetric_ce
from weaklab.ot import SOLVERS, bag_layout, ot_pseudo_labels
from weaklab.registry import ConfigError, check
from weaklab.settings import WeakData
from weaklab.timing import Stopwatch

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------
# the math, as plain functions
# ---------------------------------------------------------------------------------------

def dllp_loss(logits: Tensor, bag: Tensor, proportions: Tensor) -> Tensor:
    """Mean over the bags present of -sum_k p_i^k log(mean_j p(k|x_ij)).

    ``bag`` (n,) holds the bag id of each row of ``logits`` (n, K); ``proportions`` is the
    full (B, K) table. Bags are averaged with equal weight, as DLLP does.
    """
    probs = F.softmax(logits.float(), dim=1)
    ids, local = torch.unique(bag, return_inverse=True)
    sums = torch.zeros(len(ids), probs.shape[1], device=probs.device).index_add_(0, local, probs)
    sizes = torch.bincount(local, minlength=len(ids)).clamp_min(1).unsqueeze(1)
    mean_p = sums / sizes
    return -(proportions[ids].float() * torch.log(mean_p.clamp_min(1e-12))).sum(1).mean()


def soft_ce(logits: Tensor, q: Tensor) -> Tensor:
    """Cross-entropy with (possibly soft) targets: the objective of eq. 3 for fixed Q."""
    return -(q * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def flip_crop(x: Tensor, *, pad: int = 4) -> Tensor:
    """Random crop with zero padding, then a random horizontal flip (paper sec. 5.2), on the device."""
    return random_hflip(random_translate(x, pad=pad))


@torch.no_grad()
def predict_log_probs(model: torch.nn.Module, x: Tensor, *, chunk: int = 1024) -> Tensor:
    """log p_phi(k|x) of every row of x in eval mode (the OT cost is -log p, eq. 4)."""
    return F.log_softmax(eval_logits(model, x, batch=chunk), dim=1)


def bag_proportion_l1(probs: Tensor, bag: Tensor, proportions: Tensor) -> Tensor:
    """(B,) per bag |mean_j probs_j - p_i|_1: how far predictions (or labels) are from the proportions."""
    B, K = proportions.shape
    sums = torch.zeros(B, K, device=probs.device, dtype=torch.float64).index_add_(0, bag, probs.double())
    mean_p = sums / torch.bincount(bag, minlength=B).clamp_min(1)[:, None]
    return (mean_p - proportions.double()).abs().sum(1)


def load_teacher(path: str, device: torch.device) -> dict[str, Tensor]:
    """Model weights from an earlier trial's checkpoint: the engine's ``state.pt`` (or its
    folder), whose ``model`` entry is the state dict, or a bare state dict."""
    if os.path.isdir(path):
        path = os.path.join(path, "state.pt")
    state = torch.load(path, map_location=device, weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"hp.stage1_checkpoint={path!r} is not allowed: a checkpoint holding model weights")
    return state


# ---------------------------------------------------------------------------------------
# hyperparameters
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DLLPHparams:
    augment: bool = False
    """random crop (pad 4) + horizontal flip on the device (paper sec. 5.2; images only)"""
    track_ot: bool = True
    """solve the exact OT on the predictions every epoch, for the TD / TD_OT diagnostics of Fig. 3"""
    track_ot_every: int = 1
    """with ``track_ot``: solve it only at epochs whose number is a multiple of this (NaN
    otherwise): it is a diagnostic, 17-28 % of a DLLP epoch on digits (benchmarks/RESULTS.md
    hotspot 6); make ``train.epochs`` a multiple so the last epoch has it"""
    solver: str = "auto"
    """auto (POT for exact OT, batched Sinkhorn for entropic) | batched | pot"""

    def __post_init__(self):
        check(isinstance(self.track_ot_every, int) and self.track_ot_every >= 1, "hp.track_ot_every",
              self.track_ot_every, "an integer >= 1 (epochs between diagnostic OT solves)")
        check(self.solver in ("auto", *SOLVERS), "hp.solver", self.solver, f"one of auto, {', '.join(SOLVERS)}")


@dataclass(frozen=True)
class PLOTHparams(DLLPHparams):
    stage1_epochs: int = 0
    """DLLP epochs before the OT stage (0: the teacher comes from ``stage1_checkpoint``)"""
    stage1_checkpoint: str = ""
    """path of an earlier trial's checkpoint (state.pt or its folder) holding the teacher"""
    student_init: str = "teacher"
    """teacher: stage two starts from the teacher's weights with a fresh optimizer | scratch:
    from the initial weights (a new student) | continue: same weights and optimizer"""
    labels: str = "hard"
    """hard: exact OT, eq. 4 + eq. 6 | soft: entropic OT, eq. 7"""
    lam: float = 25.0
    """lambda of eq. 5/7 (entropic weight 1/lambda; soft labels only). The paper gives no
    value; 25 is Asano et al.'s, whose self-labelling PLOT follows"""
    ot: bool = True
    """False: pseudo labels are the model's own predictions (Table 3's L_CE / L_SCE rows)"""
    avg_last: int = 1
    """average the last T label sets (TD_OT_5 of Fig. 3 is 5; Table 3's no-OT rows use 5)"""
    loss: str = "sce"
    """sce (eq. 9) | ce (eq. 3)"""
    sce_alpha: float = 0.1
    """weight of L_CE in SCE (Wang et al.'s CIFAR-10 value; 6.0 for CIFAR-100)"""
    sce_beta: float = 1.0
    """weight of L_RCE in SCE (Wang et al.'s CIFAR-10 value; 0.1 for CIFAR-100)"""
    sce_A: float = -4.0
    """log 0 := A in L_RCE (Wang et al.)"""
    mixup: bool = True
    """mixup of instances and pseudo labels in stage two (Table 3's MIXUP)"""
    mixup_alpha: float = 1.0
    """Beta(alpha, alpha) of the mixing weight (the paper gives none; 1.0 is Zhang et al.'s CIFAR value)"""

    def __post_init__(self):
        super().__post_init__()
        check(isinstance(self.stage1_epochs, int) and self.stage1_epochs >= 0, "hp.stage1_epochs",
              self.stage1_epochs, "an integer >= 0")
        check(self.stage1_epochs > 0 or bool(self.stage1_checkpoint), "hp.stage1_epochs", self.stage1_epochs,
              "> 0, or hp.stage1_checkpoint naming a first-stage model: the OT stage needs a first-stage model")
        check(not self.stage1_checkpoint or os.path.exists(self.stage1_checkpoint), "hp.stage1_checkpoint",
              self.stage1_checkpoint, "an existing checkpoint file or folder")
        check(self.student_init in ("teacher", "scratch", "continue"), "hp.student_init", self.student_init,
              "teacher, scratch or continue")
        check(self.student_init != "continue" or self.stage1_epochs > 0, "hp.student_init", self.student_init,
              "teacher or scratch when the teacher comes from hp.stage1_checkpoint")
        check(self.labels in ("hard", "soft"), "hp.labels", self.labels, "hard or soft")
        check(self.lam > 0, "hp.lam", self.lam, "an entropic weight lambda > 0")
        check(isinstance(self.avg_last, int) and self.avg_last >= 1, "hp.avg_last", self.avg_last, "an integer >= 1")
        check(self.loss in ("sce", "ce"), "hp.loss", self.loss, "sce or ce")
        check(self.sce_alpha >= 0 and self.sce_beta >= 0 and self.sce_alpha + self.sce_beta > 0, "hp.sce_alpha",
              (self.sce_alpha, self.sce_beta), "sce_alpha, sce_beta >= 0, not both 0")
        check(self.sce_A < 0, "hp.sce_A", self.sce_A, "a constant < 0")
        check_mixup_alpha(self.mixup_alpha)


# ---------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------

@register_method
class DLLP(Method):
    """Stage one: bag-level cross-entropy between proportions and the mean prediction."""

    name = "dllp"
    consumes = ("bags",)
    Hparams = DLLPHparams
    state_keys = ()

    def init_state(self, data: WeakData) -> None:
        self.layout = bag_layout(data.weak["bag"], data.weak["proportions"].shape[0])
        self._diag: dict[str, Tensor] = {}

    def _solver(self, lam: float | None) -> str:
        if self.hp.solver != "auto":
            return self.hp.solver
        # benchmarks/bench_ot.py, 1 CPU thread, 45,000 instances in bags of 64: exact OT
        # 0.08 s POT vs 0.51 s batched SSP; entropic (lambda 25) 86 s POT vs 6.5 s batched Sinkhorn
        return "pot" if lam is None else "batched"

    def batches(self, data: WeakData, epoch: int, batch_size: int) -> Iterator[Tensor]:
        """Whole bags per step: about ``batch_size`` instances, at least one bag."""
        per_step = max(1, round(batch_size / self.layout.index.shape[1]))
        order = torch.randperm(self.layout.num_bags, device=self.layout.index.device)
        for group in order.split(per_step):
            yield self.layout.index[group][self.layout.mask[group]]

    def _inputs(self, data: WeakData, idx: Tensor) -> Tensor:
        x = data.x[idx]
        return flip_crop(x) if self.hp.augment else x

    def loss(self, model, data, idx, epoch):
        return dllp_loss(model(self._inputs(data, idx)), data.weak["bag"][idx], data.weak["proportions"])

    def _ot(self, logp: Tensor, data: WeakData, lam: float | None) -> tuple[Tensor, float]:
        watch = Stopwatch(logp.device)
        with watch:
            q = ot_pseudo_labels(logp, self.layout, data.weak["proportions"], lam=lam, solver=self._solver(lam))
        return q, watch.pop()

    def _track_ot_now(self, epoch: int) -> bool:
        return self.hp.track_ot and (epoch + 1) % self.hp.track_ot_every == 0

    #: every epoch reports the same keys (NaN where a value does not apply), so per-epoch
    #: tables have the same columns from the first epoch on
    diag_keys: tuple[str, ...] = ("train_acc", "ot_acc")

    def end_epoch(self, model, data, epoch):
        logp = predict_log_probs(model, data.x)
        out = {"prop_l1": bag_proportion_l1(logp.exp(), data.weak["bag"], data.weak["proportions"]).mean().item(),
               "ot_s": math.nan}
        self._diag = {"train_acc": logp.argmax(1)}
        if self._track_ot_now(epoch):
            q, out["ot_s"] = self._ot(logp, data, None)
            self._diag["ot_acc"] = q.argmax(1)
        return out

    def diagnostics(self, data):
        y = data.hidden["y"]
        return {f"diag_{k}": (self._diag[k] == y).float().mean().item() if k in self._diag else math.nan
                for k in self.diag_keys}


@register_method
class PLOT(DLLP):
    """Algorithm 1 after ``stage1_epochs`` of DLLP (or a loaded teacher)."""

    name = "plot"
    Hparams = PLOTHparams
    state_keys = ("q", "q_hist")
    diag_keys = ("train_acc", "ot_acc", "pseudo_acc")

    def init_state(self, data: WeakData) -> None:
        super().init_state(data)
        self.q: Tensor | None = None  # (N, K) pseudo labels used for training
        self.q_hist: Tensor | None = None  # (T', N, K) the last T raw label sets

    def stage_switches(self) -> dict[int, StageSwitch]:
        """After the last DLLP epoch: stage two from the teacher's weights with a fresh
        optimizer (``student_init=teacher``) or from the initial weights (``scratch``)."""
        s1, init = self.hp.stage1_epochs, self.hp.student_init
        if s1 == 0 or init == "continue":
            return {}
        return {s1 - 1: StageSwitch(fresh_optimizer=True) if init == "teacher" else StageSwitch(reinit=True)}

    def begin(self, model: torch.nn.Module, data: WeakData) -> StageSwitch | None:
        """With a loaded teacher (``stage1_epochs=0``): stage two's first Q from it (Alg. 1
        Require), and its weights for the student unless ``student_init=scratch``."""
        if self.hp.stage1_epochs > 0:
            return None
        teacher = load_teacher(self.hp.stage1_checkpoint, self.device)
        net = copy.deepcopy(model)
        net.load_state_dict(teacher)
        self._push(self._raw_labels(predict_log_probs(net, data.x), data)[0])
        return StageSwitch(load=teacher) if self.hp.student_init == "teacher" else None

    # -- labels ----------------------------------------------------------------------------
    def _raw_labels(self, logp: Tensor, data: WeakData) -> tuple[Tensor, dict[str, float]]:
        """This epoch's labels: the OT plan's (eq. 4/6 or 7), or the predictions when ot=False."""
        if not self.hp.ot:
            return logp.exp(), {}
        q, secs = self._ot(logp, data, None if self.hp.labels == "hard" else self.hp.lam)
        return q, {"ot_s": secs}

    def _push(self, raw: Tensor) -> None:
        """Keep the last T raw label sets; training labels are their mean (argmax if hard, eq. 6)."""
        hist = raw[None] if self.q_hist is None else torch.cat([self.q_hist, raw[None]])[-self.hp.avg_last:]
        self.q_hist = hist
        q = hist.mean(0)
        self.q = F.one_hot(q.argmax(1), q.shape[1]).float() if self.hp.labels == "hard" else q

    # -- hooks ---------------------------------------------------------------------------------
    def loss(self, model, data, idx, epoch):
        if epoch < self.hp.stage1_epochs:
            return super().loss(model, data, idx, epoch)
        x, q = self._inputs(data, idx), self.q[idx]
        if self.hp.mixup:
            x, q, _ = mixup(x, q, alpha=self.hp.mixup_alpha, rng=self.rng)
        logits = model(x)
        if self.hp.loss == "ce":
            return soft_ce(logits, q)
        return symmetric_ce(logits, q, alpha=self.hp.sce_alpha, beta=self.hp.sce_beta, A=self.hp.sce_A)

    def end_epoch(self, model, data, epoch):
        s1 = self.hp.stage1_epochs
        logp = predict_log_probs(model, data.x)
        bag, props = data.weak["bag"], data.weak["proportions"]
        out: dict[str, float] = {"prop_l1": bag_proportion_l1(logp.exp(), bag, props).mean().item(),
                                 "stage": 1.0 if epoch < s1 else 2.0, "ot_s": math.nan, "label_prop_l1": math.nan}
        self._diag = {"train_acc": logp.argmax(1)}
        if epoch >= s1 - self.hp.avg_last:  # the teacher's last T epochs seed the average
            raw, extra = self._raw_labels(logp, data)
            out.update(extra)
            # 0 for exact OT; the Sinkhorn tolerance for entropic; large without OT (Table 3 rows)
            out["label_prop_l1"] = bag_proportion_l1(raw, bag, props).max().item()
            self._push(raw)
            if self.hp.ot:
                self._diag["ot_acc"] = raw.argmax(1)
            self._diag["pseudo_acc"] = self.q.argmax(1)
        elif self._track_ot_now(epoch):
            q, out["ot_s"] = self._ot(logp, data, None)
            self._diag["ot_acc"] = q.argmax(1)
        return out
