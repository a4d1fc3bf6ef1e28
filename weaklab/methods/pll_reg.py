"""Pseudo-label regularization for imbalanced partial-label learning (paper 001, Xu, Lian et al.).

A re-implementation from the paper's text (no reference code exists or is used). Symbols
follow the paper: ``S`` the (N, c) candidate matrix, ``f`` the softmax output, ``w`` the
pseudo labels, ``r`` the estimated class prior, ``lambda`` (``hp.lam``), ``M``, ``mu``, ``rho``.

Per step (Algorithm 1): predict ``f`` on a weakly augmented batch, pseudo labels in closed
form by eq. 5, per-class small-loss selection (sec. 2.4), then cross-entropy with ``w`` +
consistency loss (strong view against ``w``) + mixup loss (Beta(4, 4)), the last two on
the selected samples. Per epoch: the prior ``r`` moves by eq. 6 (see :func:`update_prior`
for which side ``mu`` weighs). The prior schedule (:class:`PriorPLLHparams`) is shared with
Solar: a pre-estimation stage of ``hp.pre_epochs`` epochs (old-prior weight ``hp.mu_pre``),
then ``hp.mu``; after the stage the network is either kept (``hp.reinit = False``) or
re-initialised as in sec. 3.1, optionally with a warm-up (``hp.warmup_epochs``).

The shared machinery (:class:`PseudoLabelPLL`) also serves the baselines of
``baselines_pll.py`` (PRODEN, CC, Solar), which differ in how ``w`` is computed (and,
for CC, in the main loss; Solar has its own selection and loss weighting), so the ablation
switches, the prior schedule and the cost measurement
(``label_update_s``: seconds per epoch spent computing pseudo labels and updating ``r``,
timed with CUDA events on GPU) are the same for all of them.

Interpretation choices where the paper is silent (see the report of issue #4):
- the classification loss uses every sample of the batch; selection gates only the
  consistency and mixup losses, as sec. 2.4 says ("select small loss samples ... to
  perform consistency loss and mixup"); all three losses have weight 1;
- ``P`` of eq. 6 is the network's prediction restricted to the candidates (the argmax of
  ``S_ij f_ij``) from one eval-mode pass over the unaugmented training set at the end of
  each epoch, as Solar's code estimates it;
- the selection quota is ``min(|B_k|, ceil(rho |B|))`` as written (``select_per="batch"``);
  ``select_per="class"`` uses ``ceil(rho |B_k|)`` instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from weaklab.augment import check_mixup_alpha, mixup, strong_augment, weak_augment
from weaklab.methods import Method, StageSwitch, eval_logits, register_method
from weaklab.registry import check
from weaklab.timing import Stopwatch

Tensor = torch.Tensor


# -- the math, as plain functions -------------------------------------------------------------

def regularized_pseudo_labels(*, logp: Tensor, S: Tensor, r: Tensor, lam: float, M: float) -> Tensor:
    """Eq. 5: ``w_ij = S_ij f_ij^lam r_j^-M / sum_j S_ij f_ij^lam r_j^-M``, the closed-form
    minimiser of eq. 2 under constraints 3-4, computed as a masked softmax of
    ``lam log f - M log r`` (log space keeps ``f^lam`` finite for large lam).

    Fixed point: when the network fits ``w`` and eq. 5 is applied again, the log-pseudo-labels
    evolve as ``g <- lam g`` with ``g = log f - M/(lam - 1) log r``, so for lam > 1 they settle
    on ``argmax_j S_ij f0_ij r_j^(-M/(lam-1))``, which on the diagonal ``M = lam - 1`` is the
    prior-corrected (balanced) posterior ``f0 / r``. For lam = 1 and M > 0 there is no fixed
    point: each round multiplies ``f`` by ``r^-M``, so ``w`` drifts to each sample's rarest candidate.
    """
    z = lam * logp - M * torch.log(r.clamp_min(1e-12))[None, :]
    return torch.softmax(z.masked_fill(S <= 0, float("-inf")), dim=1)


def update_prior(*, r: Tensor, pred: Tensor, mu: float) -> Tensor:
    """Eq. 6 as printed: ``r_j <- mu r_j + (1 - mu) rhat_j``, where ``mu`` weighs the OLD prior
    and ``rhat`` is this epoch's share of samples whose candidate-restricted argmax is ``j``.

    Convention: the paper prints eq. 6 with ``mu`` on the old prior but quotes Solar's values
    (0.1 / 0.05, then 0.01), which in Solar's code weigh the NEW estimate
    (``emp_dist = new * gamma + old * (1 - gamma)``). We keep the printed equation and
    translate the values, so the defaults and presets put 0.9 (0.95) and then 0.99 on the old
    prior: Solar's values in Solar's meaning. ``rhat`` uses add-one (Laplace) counts,
    ``(count_j + 1) / (n + c)``: a class nobody predicts then keeps ``r_j >= min(r_j(0), 1/(n + c))``
    instead of decaying geometrically to zero (which would make ``r_j^-M`` explode).
    """
    counts = torch.bincount(pred, minlength=r.shape[0]).to(r.dtype) + 1.0
    return mu * r + (1 - mu) * counts / counts.sum()


def ramp(*, epoch: int, length: int) -> float:
    """Linear ramp 0 -> 1 over ``length`` epochs (1 from the start when ``length`` is 0)."""
    return 1.0 if length <= 0 else min(1.0, epoch / length)


def rho_at(*, epoch: int, rho_start: float, rho_end: float, ramp_epochs: int) -> float:
    """rho ramped linearly from ``rho_start`` to ``rho_end`` over the first ``ramp_epochs`` epochs (sec. 3.1)."""
    if ramp_epochs <= 0:
        return rho_end
    return rho_start + (rho_end - rho_start) * min(1.0, epoch / ramp_epochs)


def select_by_quota(*, loss: Tensor, cls: Tensor, quota: Tensor) -> Tensor:
    """In each class ``k`` (samples with ``cls == k``) keep the ``quota[k]`` samples of smallest loss.

    Vectorised: sort by loss, then stably by class, so each class is a run ordered by loss
    and a sample's rank in its class is its position minus the run's start.
    """
    B, c = loss.shape[0], quota.shape[0]
    order = torch.argsort(loss, stable=True)
    order = order[torch.argsort(cls[order], stable=True)]
    cls_sorted = cls[order]
    counts = torch.bincount(cls, minlength=c)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(B, device=loss.device) - starts[cls_sorted]
    selected = torch.zeros(B, dtype=torch.bool, device=loss.device)
    selected[order] = rank < quota[cls_sorted]
    return selected


def small_loss_selection(*, loss: Tensor, w: Tensor, rho: float, per: str = "batch") -> Tensor:
    """Sec. 2.4: ``B_k = {i : argmax_j w_ij = k}``; in each ``B_k`` keep the
    ``min(|B_k|, ceil(rho |B|))`` samples of smallest loss (``per="class"``: ``ceil(rho |B_k|)``).
    The quota binds only for classes holding more than a ``rho`` share of the batch."""
    B, c = w.shape
    cls = w.argmax(1)
    if per == "batch":
        quota = torch.full((c,), math.ceil(rho * B - 1e-9), device=w.device, dtype=torch.long)
    else:
        quota = torch.ceil(rho * torch.bincount(cls, minlength=c).double() - 1e-9).long()
    return select_by_quota(loss=loss, cls=cls, quota=quota)


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
    mixup_alpha: float = 4.0
    """mixup coefficient ~ Beta(mixup_alpha, mixup_alpha) (paper: 4); the name PLOT uses too"""
    flip: bool = True
    """horizontal flips in the augmentations (off for digits)"""

    def __post_init__(self):
        for name in ("selection", "consistency", "mixup", "flip"):
            check(isinstance(getattr(self, name), bool), f"hp.{name}", getattr(self, name), "true or false")
        check(0.0 <= self.rho_start <= 1.0, "hp.rho_start", self.rho_start, "a ratio rho in [0, 1]")
        check(0.0 <= self.rho_end <= 1.0, "hp.rho_end", self.rho_end, "a ratio rho in [0, 1]")
        check(self.ramp_epochs >= 0, "hp.ramp_epochs", self.ramp_epochs, "an integer >= 0")
        check(self.select_per in ("batch", "class"), "hp.select_per", self.select_per, "batch or class")
        check_mixup_alpha(self.mixup_alpha)


@dataclass(frozen=True)
class PriorPLLHparams(PLLHparams):
    """Adds the estimated class prior r (eq. 6) and its schedule, shared by pll-reg and Solar:
    a pre-estimation stage (sec. 3.1; Solar's ``est_epochs``), then either no re-initialisation
    or a re-initialisation of the network (the paper's), optionally with a warm-up."""

    mu: float = 0.99
    """weight of the OLD prior in eq. 6 after the pre-estimation stage (Solar's 0.01 on the new estimate)"""
    mu_pre: float = 0.9
    """weight of the old prior during the pre-estimation stage (Solar's 0.1 / 0.05 on the new: 0.9 / 0.95)"""
    pre_epochs: int = 0
    """epochs of the pre-estimation stage (paper: 100 CIFAR-10-LT, 20 CIFAR-100-LT; 0 = none)"""
    reinit: bool = True
    """re-initialise the network and optimizer after the pre-estimation stage, keeping r (paper: yes)"""
    warmup_epochs: int = 0
    """after a re-initialisation, pll-reg blends in the PRODEN loss with weight 1 - eta_t, eta_t
    0 -> 1 over these epochs (0 = the paper's plain restart); Solar's own eta ramp uses ramp_epochs"""
    oracle_prior: bool = False
    """DIAGNOSTIC ONLY: use the true training class frequencies (hidden truth) as r, never updated;
    isolates the label update from the prior estimate. Never part of a claim."""

    def __post_init__(self):
        super().__post_init__()
        check(0.0 <= self.mu < 1.0, "hp.mu", self.mu, "a weight of the old prior mu in [0, 1) (eq. 6)")
        check(0.0 <= self.mu_pre < 1.0, "hp.mu_pre", self.mu_pre, "a weight of the old prior mu in [0, 1) (eq. 6)")
        check(self.pre_epochs >= 0, "hp.pre_epochs", self.pre_epochs, "an integer >= 0 (0 = no pre-estimation)")
        check(isinstance(self.reinit, bool), "hp.reinit", self.reinit, "true or false")
        check(self.warmup_epochs >= 0, "hp.warmup_epochs", self.warmup_epochs, "an integer >= 0")
        check(isinstance(self.oracle_prior, bool), "hp.oracle_prior", self.oracle_prior, "true or false")


def check_prior_schedule(hp: PriorPLLHparams, train) -> None:
    """Cross-checks against the training length (run before Ray by ``weaklab.study.expand``)."""
    check(hp.pre_epochs < train.epochs, "hp.pre_epochs", hp.pre_epochs,
          f"fewer epochs than training (train.epochs={train.epochs}): the prior is used after the stage")
    second = train.epochs - hp.pre_epochs
    check(hp.warmup_epochs <= second, "hp.warmup_epochs", hp.warmup_epochs,
          f"at most the second stage's {second} epochs (train.epochs - hp.pre_epochs)")


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

    @classmethod
    def check_trial(cls, hp, train) -> None:
        """Checks needing the training config too (called before Ray)."""
        if isinstance(hp, PriorPLLHparams):
            check_prior_schedule(hp, train)

    def init_state(self, data):
        S = data.weak["S"].to(self.device).float()
        N, c = S.shape
        self.r = torch.full((c,), 1.0 / c, device=self.device)
        if self.uses_prior and self.hp.oracle_prior:  # diagnostic arm: reads the hidden truth on purpose
            y = data.hidden["y"].to(self.device)
            self.r = torch.bincount(y, minlength=c).float() / len(y)
        self.w = S / S.sum(1, keepdim=True)
        self.pred = torch.full((N,), -1, dtype=torch.long, device=self.device)
        self.selected = torch.zeros(N, dtype=torch.bool, device=self.device)
        self._timer = Stopwatch(self.device)

    # per-method pieces
    def pseudo_labels(self, *, logp: Tensor, S: Tensor, r: Tensor, idx: Tensor) -> Tensor:
        raise NotImplementedError

    def label_prior(self, epoch: int) -> Tensor:
        """The prior the pseudo labels use: the running estimate ``r`` in both stages, as in
        Solar's code (the pre-estimation stage runs the full method with the moving prior)."""
        return self.r

    def main_loss(self, *, logp: Tensor, w: Tensor, S: Tensor) -> Tensor:
        """Per-sample classification loss: cross-entropy ``-sum_j w_ij log f_ij`` (sec. 2.1)."""
        return -(w * logp).sum(1)

    # schedule
    def stage_switches(self) -> dict[int, StageSwitch]:
        """Sec. 3.1: after the prior's pre-estimation stage, keep r and restart the network."""
        if not (self.uses_prior and self.hp.reinit and self.hp.pre_epochs > 0):  # PRODEN, Solar: one stage
            return {}
        return {self.hp.pre_epochs - 1: StageSwitch(reinit=True)}

    def restarted(self, epoch: int) -> bool:
        """True in the second stage of a run that re-initialised the network after pre-estimation."""
        return self.uses_prior and self.hp.reinit and 0 < self.hp.pre_epochs <= epoch

    def stage_epoch(self, epoch: int) -> int:
        """Epoch counted from the last (re)start of the network: the ramps restart with it."""
        return epoch - self.hp.pre_epochs if self.restarted(epoch) else epoch

    def rho(self, epoch: int) -> float:
        return rho_at(epoch=self.stage_epoch(epoch), rho_start=self.hp.rho_start, rho_end=self.hp.rho_end,
                      ramp_epochs=self.hp.ramp_epochs)

    def select(self, *, loss: Tensor, w: Tensor, probs: Tensor, epoch: int) -> Tensor:
        """Sec. 2.4's per-class small-loss selection (every sample without ``hp.selection``)."""
        if not self.hp.selection:
            return torch.ones(w.shape[0], dtype=torch.bool, device=w.device)
        return small_loss_selection(loss=loss, w=w, rho=self.rho(epoch), per=self.hp.select_per)

    def extras(self, model, *, x: Tensor, x_weak: Tensor, w_sel: Tensor, sel: Tensor, symmetric_mix: bool = True) -> Tensor:
        """Consistency (strong view of the selected samples against ``w``) plus mixup of the
        selected samples, in one forward pass. ``symmetric_mix=False`` draws Solar's
        ``max(l, 1 - l)`` so each mixed input is dominated by its own sample."""
        hp = self.hp
        total = torch.zeros((), device=x.device)
        if not (hp.consistency or hp.mixup) or not bool(sel.any()):
            return total
        inputs, targets = [], []
        if hp.consistency:
            inputs.append(strong_augment(x[sel], flip=hp.flip))
            targets.append(w_sel)
        if hp.mixup:
            xs, ts, _ = mixup(x_weak[sel], w_sel, alpha=hp.mixup_alpha, rng=self.rng, dominant=not symmetric_mix)
            inputs.append(xs)
            targets.append(ts)
        out = F.log_softmax(model(torch.cat(inputs)).float(), dim=1)
        for part, target in zip(out.split([t.shape[0] for t in targets]), targets):
            total = total + (-(target * part).sum(1)).mean()
        return total

    def label_batch(self, model, data, idx, epoch):
        """The batch's weak view and log-probabilities, and its pseudo labels (timed as the
        label update, stored in ``self.w``): the first step of every method's loss here."""
        x, S = data.x[idx], data.weak["S"][idx]
        x_weak = weak_augment(x, flip=self.hp.flip)
        logp = F.log_softmax(model(x_weak).float(), dim=1)
        logp_d = logp.detach()
        with self._timer:
            w = self.pseudo_labels(logp=logp_d, S=S, r=self.label_prior(epoch), idx=idx)
        self.w[idx] = w
        return x, S, x_weak, logp, logp_d, w

    def loss(self, model, data, idx, epoch):
        x, S, x_weak, logp, logp_d, w = self.label_batch(model, data, idx, epoch)
        total = self.main_loss(logp=logp, w=w, S=S).mean()
        sel = self.select(loss=-(w * logp_d).sum(1), w=w, probs=logp_d.exp(), epoch=epoch)
        self.selected[idx] = sel
        total = total + self.extras(model, x=x, x_weak=x_weak, w_sel=w[sel], sel=sel)
        eta_t = self.warmup_weight(epoch)
        if eta_t < 1.0:  # warm-up after a restart: PRODEN's loss (eq. 1) carries the fresh network
            w_pro = regularized_pseudo_labels(logp=logp_d, S=S, r=self.r, lam=1.0, M=0.0)
            total = eta_t * total + (1 - eta_t) * (-(w_pro * logp).sum(1)).mean()
        return total

    def warmup_weight(self, epoch: int) -> float:
        """eta_t of the warm-up after a re-initialisation (1 outside it)."""
        if not self.restarted(epoch) or self.hp.warmup_epochs <= 0:
            return 1.0
        return ramp(epoch=epoch - self.hp.pre_epochs, length=self.hp.warmup_epochs)

    @torch.no_grad()
    def candidate_argmax(self, model, data, batch_size: int = 1024) -> Tensor:
        """``argmax_j S_ij f_ij`` over the whole training set in eval mode, unaugmented (Solar's
        ``estimate_empirical_distribution``): the ``P`` of eq. 6."""
        logits = eval_logits(model, data.x, batch=batch_size)
        return logits.masked_fill(data.weak["S"] <= 0, float("-inf")).argmax(1)

    def end_epoch(self, model, data, epoch):
        out: dict[str, float] = {}
        watch = Stopwatch(self.device)
        with watch:
            if self.uses_prior:
                pre = self.hp.pre_epochs
                self.pred = self.candidate_argmax(model, data)
                if not self.hp.oracle_prior:
                    self.r = update_prior(r=self.r, pred=self.pred, mu=self.hp.mu_pre if epoch < pre else self.hp.mu)
                out["stage"] = float(epoch >= pre)
                out["prior_ratio"] = float(self.r.max() / self.r.min().clamp_min(1e-12))
                out["warmup_eta"] = self.warmup_weight(epoch)
        prior_s = watch.pop()
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
    See :func:`regularized_pseudo_labels` for why ``M = lam - 1`` is the natural diagonal.
    """

    name = "pll-reg"
    Hparams = PLLRegHparams
    uses_prior = True

    def pseudo_labels(self, *, logp, S, r, idx):
        return regularized_pseudo_labels(logp=logp, S=S, r=r, lam=self.hp.lam, M=self.hp.M)
