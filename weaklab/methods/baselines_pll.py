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
- ``solar`` (Wang et al. 2022): pseudo labels by entropic optimal transport between the
  samples (mass 1/n each) and the estimated class prior ``r`` (eq. 6), restricted to the
  candidates, solved by Sinkhorn-Knopp with a fixed iteration cap T over the batch plus a
  queue of the last ``q`` batches' predictions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from weaklab.methods import register_method
from weaklab.methods.pll_reg import PLLHparams, PriorPLLHparams, PseudoLabelPLL
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


@dataclass(frozen=True)
class SolarHparams(PriorPLLHparams):
    kappa: float = 3.0
    """exponent of P in the Sinkhorn kernel S * P^kappa, i.e. 1 / the entropic regularisation weight"""
    iters: int = 50
    """T, Sinkhorn-Knopp iterations per step (Solar's default 50; fixed, no convergence test)"""
    q: int = 64
    """queue length in batches: the OT problem is solved on the batch plus the last q*|B|
    predictions (capped at the training-set size, beyond which it would only hold stale copies)"""

    def __post_init__(self):
        super().__post_init__()
        check(self.kappa > 0, "hp.kappa", self.kappa, "a kernel exponent > 0")
        check(self.iters >= 1, "hp.iters", self.iters, "an integer >= 1")
        check(self.q >= 0, "hp.q", self.q, "an integer >= 0 (0 = no queue)")


@register_method
class Solar(PseudoLabelPLL):
    """Solar: Sinkhorn label refinery against the estimated prior (eq. 6), sec. 2.4 extras.

    Re-implementation from the Solar paper's description as summarised in paper 001.
    """

    name = "solar"
    Hparams = SolarHparams
    uses_prior = True
    state_keys = PseudoLabelPLL.state_keys + ("queue_logp", "queue_S", "queue_len")

    def init_state(self, data):
        super().init_state(data)
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
