"""Pseudo-label regularization for imbalanced partial-label learning (paper 001, Xu, Lian et al.).

A re-implementation from the paper's text (no reference code exists or is used). Symbols
follow the paper: ``S`` the (N, c) candidate matrix, ``f`` the softmax output, ``w`` the
pseudo labels, ``r`` the estimated class prior, ``lambda`` (``hp.lam``), ``M``, ``mu``, ``rho``.

Per step (Algorithm 1): predict ``f`` on a weakly augmented batch, pseudo labels in closed
form by eq. 5, per-class small-loss selection (sec. 2.4), then cross-entropy with ``w`` +
consistency loss (strong view against ``w``) + mixup loss (Beta(4, 4)), the last two on
the selected samples. Per epoch: the prior ``r`` moves by eq. 6. A pre-estimation stage
(sec. 3.1) trains ``hp.pre_epochs`` epochs only to estimate ``r`` (moving-average weight
``hp.mu_pre``; the pseudo labels meanwhile use a uniform prior), then asks the engine to
re-initialise the network and optimizer and goes on with ``r`` (weight ``hp.mu``).

The shared machinery (:class:`PseudoLabelPLL`) also serves the baselines of
``baselines_pll.py`` (PRODEN, CC, Solar), which differ only in how ``w`` is computed (and,
for CC, in the main loss), so the ablation switches and the cost measurement
(``label_update_s``: seconds per epoch spent computing pseudo labels and updating ``r``,
timed with CUDA events on GPU) are the same for all of them.

Interpretation choices where the paper is silent (see the report of issue #4):
- the classification loss uses every sample of the batch; selection gates only the
  consistency and mixup losses, as sec. 2.4 says ("select small loss samples ... to
  perform consistency loss and mixup"); all three losses have weight 1;
- ``P`` of eq. 6 is the network's prediction restricted to the candidates (the argmax of
  ``S_ij f_ij``), recorded for each sample when it is seen during the epoch, so the prior
  update needs no extra pass over the training set;
- the selection quota is ``min(|B_k|, ceil(rho |B|))`` as written (``select_per="batch"``);
  ``select_per="class"`` uses ``ceil(rho |B_k|)`` instead.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from weaklab.augment import mixup, strong_augment, weak_augment
from weaklab.methods import Method, register_method
from weaklab.registry import check

Tensor = torch.Tensor


# -- the math, as plain functions -------------------------------------------------------------

def regularized_pseudo_labels(*, logp: Tensor, S: Tensor, r: Tensor, lam: float, M: float) -> Tensor:
    """Eq. 5: ``w_ij = S_ij f_ij^lam r_j^-M / sum_j S_ij f_ij^lam r_j^-M``, the closed-form
    minimiser of eq. 2 under constraints 3-4, computed as a masked softmax of
    ``lam log f - M log r`` (log space keeps ``f^lam`` finite for large lam)."""
    z = lam * logp - M * torch.log(r.clamp_min(1e-12))[None, :]
    return torch.softmax(z.masked_fill(S <= 0, float("-inf")), dim=1)


def update_prior(*, r: Tensor, pred: Tensor, mu: float) -> Tensor:
    """Eq. 6: ``r_j <- mu r_j + (1 - mu) (1/n) sum_i 1[j = argmax_j P_ij]``; ``pred`` holds the argmax per sample."""
    counts = torch.bincount(pred, minlength=r.shape[0]).to(r.dtype)
    return mu * r + (1 - mu) * counts / counts.sum().clamp_min(1)


def rho_at(*, epoch: int, rho_start: float, rho_end: float, ramp_epochs: int) -> float:
    """rho ramped linearly from ``rho_start`` to ``rho_end`` over the first ``ramp_epochs`` epochs (sec. 3.1)."""
    if ramp_epochs <= 0:
        return rho_end
    return rho_start + (rho_end - rho_start) * min(1.0, epoch / ramp_epochs)


def small_loss_selection(*, loss: Tensor, w: Tensor, rho: float, per: str = "batch") -> Tensor:
    """Sec. 2.4: ``B_k = {i : argmax_j w_ij = k}``; in each ``B_k`` keep the
    ``min(|B_k|, ceil(rho |B|))`` samples of smallest loss (``per="class"``: ``ceil(rho |B_k|)``).

    Vectorised: sort by loss, then stably by class, so each class is a run ordered by loss
    and a sample's rank in its class is its position minus the run's start.
    """
    B, c = w.shape
    cls = w.argmax(1)
    order = torch.argsort(loss, stable=True)
    order = order[torch.argsort(cls[order], stable=True)]
    cls_sorted = cls[order]
    counts = torch.bincount(cls, minlength=c)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(B, device=w.device) - starts[cls_sorted]
    if per == "batch":
        quota = torch.full((c,), math.ceil(rho * B - 1e-9), device=w.device, dtype=torch.long)
    else:
        quota = torch.ceil(rho * counts.double() - 1e-9).long()
    selected = torch.zeros(B, dtype=torch.bool, device=w.device)
    selected[order] = rank < quota[cls_sorted]
    return selected


class Stopwatch:
    """Accumulates the time of ``with`` blocks: CUDA events on GPU (no sync in the hot loop),
    ``perf_counter`` on CPU. ``pop()`` returns the seconds so far and resets."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._pairs: list = []
        self._s = 0.0

    def __enter__(self):
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._pairs.append((self._start, end))
        else:
            self._s += time.perf_counter() - self._t

    def pop(self) -> float:
        s = self._s
        if self._pairs:
            torch.cuda.synchronize()
            s += sum(a.elapsed_time(b) for a, b in self._pairs) / 1000.0
        self._pairs, self._s = [], 0.0
        return s


# -- hyperparameters ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PLLHparams:
    """The extras of sec. 2.4, shared by pll-reg and the baselines (each switchable, Table 2)."""

    selection: bool = True
    """per-class small-loss sample selection (Table 2 'w/o S' = False)"""
    consistency: bool = True
    """consistency loss: strong-view prediction against the weak view's pseudo labels ('CR')"""
    mixup: bool = True
    """mixup loss on the selected samples ('MU')"""
    rho_start: float = 0.2
    """selection ratio rho at the start of the ramp"""
    rho_end: float = 0.5
    """rho after the ramp (paper: 0.5 CIFAR-10-LT, 0.6 CIFAR-100-LT)"""
    ramp_epochs: int = 50
    """epochs of the linear rho ramp (paper: 50)"""
    select_per: str = "batch"
    """batch: quota ceil(rho |B|) per class as written in sec. 2.4 | class: ceil(rho |B_k|)"""
    mix_alpha: float = 4.0
    """mixup coefficient ~ Beta(mix_alpha, mix_alpha) (paper: 4)"""
    flip: bool = True
    """horizontal flips in the augmentations (off for digits)"""

    def __post_init__(self):
        for name in ("selection", "consistency", "mixup", "flip"):
            check(isinstance(getattr(self, name), bool), f"hp.{name}", getattr(self, name), "true or false")
        check(0.0 <= self.rho_start <= 1.0, "hp.rho_start", self.rho_start, "a ratio rho in [0, 1]")
        check(0.0 <= self.rho_end <= 1.0, "hp.rho_end", self.rho_end, "a ratio rho in [0, 1]")
        check(self.ramp_epochs >= 0, "hp.ramp_epochs", self.ramp_epochs, "an integer >= 0")
        check(self.select_per in ("batch", "class"), "hp.select_per", self.select_per, "batch or class")
        check(self.mix_alpha > 0, "hp.mix_alpha", self.mix_alpha, "a Beta parameter > 0")


@dataclass(frozen=True)
class PriorPLLHparams(PLLHparams):
    """Adds the estimated class prior r (eq. 6) and the pre-estimation stage (sec. 3.1)."""

    mu: float = 0.01
    """moving-average weight of the old r in eq. 6 after the pre-estimation stage (paper: 0.01)"""
    mu_pre: float = 0.1
    """mu during the pre-estimation stage (paper: 0.1 CIFAR-10-LT, 0.05 CIFAR-100-LT)"""
    pre_epochs: int = 0
    """epochs of the pre-estimation stage, then the weights are re-initialised (paper: 100/20; 0 = none)"""

    def __post_init__(self):
        super().__post_init__()
        check(0.0 <= self.mu <= 1.0, "hp.mu", self.mu, "a moving-average weight mu in [0, 1]")
        check(0.0 <= self.mu_pre <= 1.0, "hp.mu_pre", self.mu_pre, "a moving-average weight mu in [0, 1]")
        check(self.pre_epochs >= 0, "hp.pre_epochs", self.pre_epochs, "an integer >= 0 (0 = no pre-estimation)")


@dataclass(frozen=True)
class PLLRegHparams(PriorPLLHparams):
    lam: float = 3.0
    """lambda of eq. 2/5: inverse weight of the pseudo-label entropy (paper: 3 CIFAR-10-LT, 1 CIFAR-100-LT)"""
    M: float = 2.0
    """M of eq. 2/5: strength of the head-class penalty r_j^-M (paper: 2 CIFAR-10-LT, 0.5 CIFAR-100-LT)"""

    def __post_init__(self):
        super().__post_init__()
        check(self.lam > 0, "hp.lam", self.lam, "lambda > 0")
        check(self.M >= 0, "hp.M", self.M, "M >= 0")


# -- the shared method --------------------------------------------------------------------------

class PseudoLabelPLL(Method):
    """Pseudo-label PLL with the sec. 2.4 extras; subclasses define :meth:`pseudo_labels`."""

    consumes = ("partial",)
    Hparams = PLLHparams
    uses_prior = False
    state_keys = ("r", "w", "pred", "selected")

    def init_state(self, data):
        S = data.weak["S"].to(self.device).float()
        N, c = S.shape
        self.r = torch.full((c,), 1.0 / c, device=self.device)
        self.w = S / S.sum(1, keepdim=True)
        self.pred = torch.full((N,), -1, dtype=torch.long, device=self.device)
        self.selected = torch.zeros(N, dtype=torch.bool, device=self.device)
        self._timer = Stopwatch(self.device)

    # per-method pieces
    def pseudo_labels(self, *, logp: Tensor, S: Tensor, r: Tensor, idx: Tensor) -> Tensor:
        raise NotImplementedError

    def label_prior(self, epoch: int) -> Tensor:
        """The prior the pseudo labels use: uniform during the pre-estimation stage, which only
        estimates ``r`` ("run with this class prior" comes after it, sec. 3.1); ``r`` afterwards."""
        if self.uses_prior and epoch < self.hp.pre_epochs:
            return torch.full_like(self.r, 1.0 / self.r.shape[0])
        return self.r

    def main_loss(self, *, logp: Tensor, w: Tensor, S: Tensor) -> Tensor:
        """Per-sample classification loss: cross-entropy ``-sum_j w_ij log f_ij`` (sec. 2.1)."""
        return -(w * logp).sum(1)

    # schedule
    def stage_epoch(self, epoch: int) -> int:
        """Epoch counted from the start of the current stage (the rho ramp restarts after pre-estimation)."""
        pre = getattr(self.hp, "pre_epochs", 0) if self.uses_prior else 0
        return epoch - pre if epoch >= pre else epoch

    def rho(self, epoch: int) -> float:
        return rho_at(epoch=self.stage_epoch(epoch), rho_start=self.hp.rho_start, rho_end=self.hp.rho_end,
                      ramp_epochs=self.hp.ramp_epochs)

    def loss(self, model, data, idx, epoch):
        hp = self.hp
        x, S = data.x[idx], data.weak["S"][idx]
        x_weak = weak_augment(x, flip=hp.flip)
        logp = F.log_softmax(model(x_weak).float(), dim=1)
        logp_d = logp.detach()
        with self._timer:
            w = self.pseudo_labels(logp=logp_d, S=S, r=self.label_prior(epoch), idx=idx)
        self.w[idx] = w
        self.pred[idx] = logp_d.masked_fill(S <= 0, float("-inf")).argmax(1)
        per_sample = self.main_loss(logp=logp, w=w, S=S)
        total = per_sample.mean()
        if hp.selection:
            sel = small_loss_selection(loss=-(w * logp_d).sum(1), w=w, rho=self.rho(epoch), per=hp.select_per)
        else:
            sel = torch.ones(len(idx), dtype=torch.bool, device=x.device)
        self.selected[idx] = sel
        if not (hp.consistency or hp.mixup):
            return total
        # one forward pass for the strong views and the mixed inputs of the selected samples
        w_sel = w[sel]
        inputs, targets = [], []
        if hp.consistency:
            inputs.append(strong_augment(x[sel], flip=hp.flip))
            targets.append(w_sel)
        if hp.mixup:
            x_mix, w_mix, _ = mixup(x_weak[sel], w_sel, alpha=hp.mix_alpha, rng=self.rng)
            inputs.append(x_mix)
            targets.append(w_mix)
        out = F.log_softmax(model(torch.cat(inputs)).float(), dim=1)
        for part, target in zip(out.split([t.shape[0] for t in targets]), targets):
            total = total + (-(target * part).sum(1)).mean()
        return total

    def end_epoch(self, model, data, epoch):
        t0 = time.perf_counter()
        out: dict[str, float] = {}
        if self.uses_prior:
            pre = self.hp.pre_epochs
            mu = self.hp.mu_pre if epoch < pre else self.hp.mu
            seen = self.pred >= 0
            self.r = update_prior(r=self.r, pred=self.pred[seen], mu=mu)
            if pre > 0 and epoch == pre - 1:
                self.reinit_requested = True  # sec. 3.1: keep r, restart the network
            out["stage"] = float(epoch >= pre)
            out["prior_ratio"] = float(self.r.max() / self.r.min().clamp_min(1e-12))
        prior_s = time.perf_counter() - t0
        out["label_update_s"] = self._timer.pop() + prior_s
        out["prior_update_s"] = prior_s
        out["rho"] = self.rho(epoch) if self.hp.selection else 1.0
        out["selected_frac"] = float(self.selected.float().mean())
        return out

    def diagnostics(self, data):
        y = data.hidden["y"].to(self.device)
        correct = self.w.argmax(1) == y
        out = {"diag_pl_acc": float(correct.float().mean())}
        if self.selected.any():
            out["diag_sel_precision"] = float(correct[self.selected].float().mean())
        true_r = torch.bincount(y, minlength=self.num_classes).float() / len(y)
        out["diag_prior_l1"] = float((self.r - true_r).abs().sum())
        return out


@register_method
class PLLReg(PseudoLabelPLL):
    """Pseudo-label regularization (paper 001 eq. 5, prior by eq. 6, extras of sec. 2.4).

    A re-implementation from the paper. ``lam = 1, M = 0`` reduces eq. 5 to PRODEN's eq. 1.
    """

    name = "pll-reg"
    Hparams = PLLRegHparams
    uses_prior = True

    def pseudo_labels(self, *, logp, S, r, idx):
        return regularized_pseudo_labels(logp=logp, S=S, r=r, lam=self.hp.lam, M=self.hp.M)
