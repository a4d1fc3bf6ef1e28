"""Partial-label baselines of paper 001's Table 1 and Table 5: PRODEN, CC and Solar.

Re-implementations from the papers' descriptions (no reference code used), on the same
machinery as ``pll-reg`` (:class:`weaklab.methods.pll_reg.PseudoLabelPLL`): paper 001 sec.
3.1 equips every baseline but PiCO with the consistency loss and mixup, so these share the
sample selection, consistency and mixup switches, and report ``label_update_s`` the same way.

- ``proden`` (Lv et al. 2020; paper 001 eq. 1): ``w_ij = S_ij f_ij / sum_j S_ij f_ij`` from
  the current prediction, the special case ``lambda = 1, M = 0`` of eq. 5.
- ``cc`` (Feng et al. 2020): the classifier-consistent risk for uniformly drawn candidate
  sets, ``-log sum_j S_ij f_ij``; its extras use the candidate-normalised prediction
  (eq. 1) as target, since CC itself has no pseudo labels. Note that the gradient of this
  risk, ``-sum_j (S_ij f_ij / sum_k S_ik f_ik) grad log f_ij``, is exactly PRODEN's with
  ``w`` recomputed from the current prediction (as eq. 1 and Algorithm 1 do), so ``cc``
  and ``proden`` here differ only by float rounding (the original PRODEN reuses the
  previous epoch's ``w``; paper 001's closed form does not).
- ``solar``: Solar's published algorithm (H. Wang, M. Xia, Y. Li, Y. Mao, L. Feng, G. Chen,
  J. Zhao, "SoLar: Sinkhorn Label Refinery for Imbalanced Partial-Label Learning",
  NeurIPS 2022, Algorithm 1 and its released training loop, github.com/hbzju/SoLar),
  re-implemented here: see :class:`Solar`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weaklab.methods import register_method
from weaklab.methods.pll_reg import PLLHparams, PriorPLLHparams, PseudoLabelPLL, ramp, select_by_quota
from weaklab.registry import check

Tensor = torch.Tensor


def proden_pseudo_labels(*, probs: Tensor, S: Tensor) -> Tensor:
    """Paper 001 eq. 1: ``w_ij = S_ij f_ij / sum_j S_ij f_ij``."""
    q = S * probs
    return q / q.sum(1, keepdim=True).clamp_min(1e-30)


def cc_loss(*, logp: Tensor, S: Tensor) -> Tensor:
    """Per-sample CC risk ``-log sum_{j in S_i} f_ij`` (Feng et al. 2020, uniform candidate sets)."""
    return -torch.logsumexp(logp.masked_fill(S <= 0, float("-inf")), dim=1)


def sinkhorn_pseudo_labels(*, logp: Tensor, S: Tensor, r: Tensor, kappa: float, iters: int) -> Tensor:
    """Solar's label refinery: ``Q = argmax <Q, log P> + (1/kappa) H(Q)`` subject to row sums
    ``1/n``, column sums ``r`` and ``Q_ij = 0`` where ``S_ij = 0``; returned row-normalised.

    Sinkhorn-Knopp on the kernel ``S * P^kappa`` for exactly ``iters``
    iterations (Solar's fixed cap T; no convergence test). A class no row may take (no
    candidate in the pool) cannot meet its marginal: its constraint is dropped, the
    relaxation Solar falls back on when the matching is infeasible.
    """
    # Probability domain after a per-row max shift (rows are rescaled by u anyway): two
    # mat-vec products per iteration instead of two logsumexps over (n, K), 5-20x faster
    # (benchmarks/RESULTS.md: 224 -> 10 ms at n=4160, K=100). float64 keeps entries up to
    # ~700/kappa nats below a row's best candidate from underflowing to 0.
    z = (kappa * logp.double()).masked_fill(S <= 0, float("-inf"))
    K = torch.exp(z - z.max(dim=1, keepdim=True).values)
    a = 1.0 / logp.shape[0]
    b = r.double().clamp_min(1e-12)
    v = torch.ones_like(b)
    for _ in range(iters):  # iterations, not samples: each is two vectorised mat-vec products
        u = a / (K @ v).clamp_min(1e-300)
        colsum = K.T @ u
        v = torch.where(colsum > 0, b / colsum.clamp_min(1e-300), torch.ones_like(v))
    Q = K * v[None, :]
    return (Q / Q.sum(dim=1, keepdim=True)).to(logp.dtype)


@register_method
class Proden(PseudoLabelPLL):
    """PRODEN (paper 001 eq. 1) with the sec. 2.4 extras. Re-implementation from the paper."""

    name = "proden"
    Hparams = PLLHparams

    def pseudo_labels(self, *, logp, S, r, idx):
        return proden_pseudo_labels(probs=logp.exp(), S=S)


@register_method
class CC(PseudoLabelPLL):
    """CC (Feng et al. 2020) with the sec. 2.4 extras. Re-implementation from the paper."""

    name = "cc"
    Hparams = PLLHparams

    def pseudo_labels(self, *, logp, S, r, idx):
        return proden_pseudo_labels(probs=logp.exp(), S=S)

    def main_loss(self, *, logp, w, S):
        return cc_loss(logp=logp, S=S)


def solar_selection(*, loss: Tensor, w: Tensor, probs: Tensor, r: Tensor, rho: float, tau: float) -> Tensor:
    """Solar's reliable-sample selection: in each class ``k`` (samples whose Sinkhorn label's
    argmax is ``k``) the ``max(1, min(|B_k|, ceil(rho |B| r_k)))`` samples of smallest loss,
    plus every sample whose confidence ``sum_j w_ij f_ij`` exceeds ``tau``."""
    B, c = w.shape
    cls = w.argmax(1)
    present = torch.bincount(cls, minlength=c)
    quota = torch.ceil(rho * B * r.double() - 1e-6).long().clamp_min(1)  # r is float32: 3.0000001 -> 3
    quota = torch.minimum(quota, present)
    sel = select_by_quota(loss=loss, cls=cls, quota=quota)
    return sel | ((w * probs).sum(1) > tau)


@dataclass(frozen=True)
class SolarHparams(PriorPLLHparams):
    kappa: float = 3.0
    """exponent of P in the Sinkhorn kernel S * P^kappa, i.e. 1 / the entropic regularisation weight (Solar's lamd)"""
    iters: int = 50
    """T, Sinkhorn-Knopp iterations per step (Solar's default 50; fixed, no convergence test)"""
    q: int = 64
    """queue length in batches: the OT problem is solved on the batch plus the last q*|B|
    predictions (capped at the training-set size, beyond which it would only hold stale copies)"""
    eta: float = 0.9
    """final weight of the Sinkhorn-label losses; the unselected samples' PRODEN loss weighs
    1 - eta_t, eta_t ramped 0 -> eta over ramp_epochs from each (re)start (Solar's eta, warmup_epoch)"""
    tau: float = 0.99
    """confidence above which a sample is selected regardless of its class quota (Solar's tau)"""

    def __post_init__(self):
        super().__post_init__()
        check(self.kappa > 0, "hp.kappa", self.kappa, "a kernel exponent > 0")
        check(self.iters >= 1, "hp.iters", self.iters, "an integer >= 1")
        check(self.q >= 0, "hp.q", self.q, "an integer >= 0 (0 = no queue)")
        check(0.0 <= self.eta <= 1.0, "hp.eta", self.eta, "a loss weight in [0, 1]")
        check(0.0 < self.tau <= 1.0, "hp.tau", self.tau, "a confidence threshold in (0, 1]")


@register_method
class Solar(PseudoLabelPLL):
    """Solar (Wang et al., NeurIPS 2022; github.com/hbzju/SoLar), re-implemented from the
    paper and its released training loop, on the shared prior schedule of pll-reg.

    Per step: Sinkhorn labels ``Q`` (:func:`sinkhorn_pseudo_labels`) for the batch against
    the prior ``r`` over the batch plus a queue; selection by :func:`solar_selection`
    (class quota ``ceil(rho |B| r_k)`` and confidence > ``tau``); the loss is
    ``eta_t (CE(Q) + consistency + mixup, on the selected) + (1 - eta_t) PRODEN on the
    unselected``, where PRODEN's labels are its stored confidences (the re-normalised
    candidate prediction of the sample's previous visit, updated after every step) and
    mixup draws ``l = max(l, 1 - l)``, l ~ Beta(4, 4). The first epoch after each (re)start
    trains on the PRODEN loss alone. Per epoch: ``r`` by eq. 6 from an eval pass (shared).
    ``hp.eta`` ramps over ``hp.ramp_epochs`` with rho, Solar's single ``warmup_epoch``.
    """

    name = "solar"
    Hparams = SolarHparams
    uses_prior = True
    state_keys = PseudoLabelPLL.state_keys + ("conf", "queue_logp", "queue_S", "queue_len")

    def init_state(self, data):
        super().init_state(data)
        self.conf = self.w.clone()  # PRODEN's confidences, uniform over the candidates at the start
        self.queue_logp = None  # allocated at the first step, when the batch size is known
        self.queue_S = None
        self.queue_len = 0  # a Python int: reading a device scalar would sync every step

    def pseudo_labels(self, *, logp, S, r, idx):
        B, c = logp.shape
        if self.queue_logp is None:
            size = min(self.hp.q * B, self.w.shape[0])
            self.queue_logp = torch.zeros((size, c), device=logp.device)
            self.queue_S = torch.zeros((size, c), device=logp.device)
        n_q = self.queue_len
        pool_logp = torch.cat([logp, self.queue_logp[:n_q]])
        pool_S = torch.cat([S, self.queue_S[:n_q]])
        w = sinkhorn_pseudo_labels(logp=pool_logp, S=pool_S, r=r, kappa=self.hp.kappa, iters=self.hp.iters)[:B]
        size = self.queue_logp.shape[0]
        if size:
            k = min(B, size)  # newest first: shift the queue back and put the batch in front
            self.queue_logp = torch.cat([logp[:k], self.queue_logp[:size - k]])
            self.queue_S = torch.cat([S[:k], self.queue_S[:size - k]])
            self.queue_len = min(self.queue_len + k, size)
        return w

    def select(self, *, loss, w, probs, epoch):
        if not self.hp.selection:
            return torch.ones(w.shape[0], dtype=torch.bool, device=w.device)
        return solar_selection(loss=loss, w=w, probs=probs, r=self.r, rho=self.rho(epoch), tau=self.hp.tau)

    def loss(self, model, data, idx, epoch):
        hp = self.hp
        x, S, x_weak, logp, logp_d, w = self.label_batch(model, data, idx, epoch)
        rn = -(self.conf[idx] * logp).sum(1)  # PRODEN loss with the stored confidences
        self.conf[idx] = proden_pseudo_labels(probs=logp_d.exp(), S=S)
        stage = self.stage_epoch(epoch)
        sel = self.select(loss=-(w * logp_d).sum(1), w=w, probs=logp_d.exp(), epoch=epoch)
        if stage < 1 or not bool(sel.any()):
            self.selected[idx] = False
            return rn.mean()
        self.selected[idx] = sel
        eta = hp.eta * ramp(epoch=stage, length=hp.ramp_epochs)
        reliable = -(w[sel] * logp[sel]).sum(1).mean()
        reliable = reliable + self.extras(model, x=x, x_weak=x_weak, w_sel=w[sel], sel=sel, symmetric_mix=False)
        unreliable = rn[~sel].mean() if bool((~sel).any()) else torch.zeros((), device=x.device)
        return eta * reliable + (1 - eta) * unreliable
