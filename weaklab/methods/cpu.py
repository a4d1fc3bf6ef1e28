"""Class-wise Positive-Unlabeled (CPU) risk for quantized-label learning (paper 000, Xie, He, Lu et al.).

A re-implementation from the paper (no reference code is used). The network outputs c
one-vs-rest scores ``f(x) = [g_1(x), ..., g_c(x)]`` (sec. III). For class j the inputs
whose quantized label is j are its positive (P) data and all the others its unlabeled (U)
data; the per-class risk is the non-negative PU risk of eq. 4 with two priors (eq. 5):

    R~_pu(g_j) = pi1 * R^+_p(g_j) + max{ R^-_u(g_j) - pi2 * R^-_p(g_j), 0 }

minimised as in Algorithm 1: when the negative part ``R^-_u - pi2 R^-_p`` of a class goes
below zero, that class contributes ``-(R^-_u - pi2 R^-_p)`` instead, whose gradient pushes
the negative part back up (the non-negative correction of nnPU, Kiryo et al. 2017).
The CPU risk is the mean over classes, ``R~_cpu(f) = 1/c sum_j R~_pu(g_j)``.

The binary loss ``l(g, +-1)`` compares the one-hot binary target P with the prediction
``Q = (sigmoid(g), 1 - sigmoid(g))`` by the scaled stochastic Jensen-Shannon divergence
(sec. III, following Englesson & Azizpour 2021):

    D_SJS(P||Q) = alpha KL(P||M) + (1-alpha) KL(Q||M),   M = alpha P + (1-alpha) Q
    l = D_SJS / Z(alpha),   Z(alpha) = -(1-alpha) log(1-alpha)

with ``alpha ~ Beta(0.5, 0.5)`` restricted to (0, 0.5], drawn once per iteration. The
variant ``cpu-kl`` uses ``l = KL(P||Q)`` (binary cross-entropy, Table III's CPU-KL).
Prediction is the argmax of the class scores (normalised sigmoid scores are returned so
that the probabilities sum to one and keep that argmax).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.nn import functional as F

from weaklab.methods import Method, register_method
from weaklab.registry import ConfigError, check

Tensor = torch.Tensor

#: Beta(a, a) that alpha is drawn from (sec. III)
ALPHA_BETA = 0.5
#: alpha = 0 exactly would divide by Z(0) = 0; the scaled loss is continuous there (-> KL)
_ALPHA_FLOOR = 1e-12


def scaled_sjs(log_q: Tensor, log_1mq: Tensor, *, alpha: float) -> Tensor:
    """``D_SJS(e_t || Q) / Z(alpha)`` for a one-hot target e_t, elementwise (sec. III; Englesson eq. 1-3).

    ``log_q`` is the log predicted probability of the target, ``log_1mq`` that of everything
    else (both exact, e.g. ``logsigmoid(+-g)``). With ``M_t = alpha + (1-alpha) q`` and
    ``o = (1-q)/q``, ``M_t = q (1 + alpha o)``, so

        KL(e_t||M) = -log M_t = -log q - log(1 + alpha o)
        KL(Q||M)   = q log(q/M_t) + (1-q) log(1/(1-alpha)) = -q log(1 + alpha o) - (1-q) log(1-alpha)

    ``log(1 + alpha o) = softplus(log alpha + log_1mq - log_q)`` keeps small alpha (where
    the scaled loss tends to cross-entropy) free of cancellation.
    """
    alpha = max(alpha, _ALPHA_FLOOR)
    check(alpha < 1.0, "alpha", alpha, "a mixing weight in (0, 1)")
    log1p_ao = F.softplus(math.log(alpha) + log_1mq - log_q)
    q, one_m_q = log_q.exp(), log_1mq.exp()
    kl_p_m = -log_q - log1p_ao
    kl_q_m = -q * log1p_ao - one_m_q * math.log1p(-alpha)
    Z = -(1.0 - alpha) * math.log1p(-alpha)
    return (alpha * kl_p_m + (1.0 - alpha) * kl_q_m) / Z


def sjs_binary_losses(g: Tensor, *, alpha: float) -> tuple[Tensor, Tensor]:
    """``(l(g, +1), l(g, -1))`` elementwise for one-vs-rest scores g, by the scaled SJS."""
    # both targets in one pass over the stacked (+g, -g): half the elementwise ops of two calls
    # (benchmarks/RESULTS.md hotspot 7); logsigmoid(-g) is the other half of the same stack
    lpn = F.logsigmoid(torch.stack((g, -g)))
    out = scaled_sjs(lpn, lpn.flip(0), alpha=alpha)
    return out[0], out[1]


def kl_binary_losses(g: Tensor) -> tuple[Tensor, Tensor]:
    """``(l(g, +1), l(g, -1))`` with l = KL(P||Q) for one-hot P: binary cross-entropy (CPU-KL)."""
    return F.softplus(-g), F.softplus(g)


def draw_alpha(rng) -> float:
    """alpha ~ Beta(0.5, 0.5) restricted to (0, 0.5] (sec. III).

    Beta(0.5, 0.5) is symmetric about 1/2, so folding ``min(a, 1-a)`` yields exactly the
    Beta density truncated to (0, 0.5] (renormalised), without rejection or a clip atom.
    """
    a = float(rng.beta(ALPHA_BETA, ALPHA_BETA))
    return min(a, 1.0 - a)


def cpu_class_risks(loss_pos: Tensor, loss_neg: Tensor, y: Tensor, *, pi1: float, pi2: float) -> tuple[Tensor, Tensor]:
    """Per-class risk of Algorithm 1 (eq. 4-5) on a minibatch; returns ``(risk (c,), negative_part (c,))``.

    ``loss_pos``, ``loss_neg``: ``(B, c)`` values l(g_j(x_i), +1), l(g_j(x_i), -1); ``y``: ``(B,)``
    quantized labels. P_j = {i: y_i = j}, U_j = {i: y_i != j} (the batch split class-wise
    into P and U data, eq. 4). A class without positives (or without unlabeled inputs) in
    the batch contributes zero to that empirical mean rather than a 0/0.
    """
    P = F.one_hot(y, loss_pos.shape[1]).to(loss_pos.dtype)
    U = 1.0 - P
    n_p, n_u = P.sum(0).clamp_min(1.0), U.sum(0).clamp_min(1.0)
    R_p_pos = (P * loss_pos).sum(0) / n_p
    R_p_neg = (P * loss_neg).sum(0) / n_p
    R_u_neg = (U * loss_neg).sum(0) / n_u
    neg = R_u_neg - pi2 * R_p_neg
    risk = torch.where(neg >= 0, pi1 * R_p_pos + neg, -neg)  # Algorithm 1, lines 4-8
    return risk, neg


def cpu_risk(g: Tensor, y: Tensor, *, pi1: float, pi2: float, alpha: float | None) -> Tensor:
    """R~_cpu(f) = 1/c sum_j R~_pu(g_j) (eq. 5 / Algorithm 1); ``alpha=None`` uses KL (CPU-KL)."""
    g = g.float()
    lp, ln = kl_binary_losses(g) if alpha is None else sjs_binary_losses(g, alpha=alpha)
    risk, _ = cpu_class_risks(lp, ln, y, pi1=pi1, pi2=pi2)
    return risk.mean()


@dataclass(frozen=True)
class CPUHparams:
    pi1: float = 0.1
    """pi_p^(1), the prior on the positive term of eq. 5 (the paper: 0.1, fixed)"""
    pi2: float | None = None
    """pi_p^(2), the prior on the negative term of eq. 5; None = m/c (the paper's default,
    m from the quantized setting)"""

    def __post_init__(self):
        check(isinstance(self.pi1, (int, float)) and 0.0 < self.pi1 <= 1.0, "hp.pi1", self.pi1, "a class prior in (0, 1]")
        check(self.pi2 is None or (isinstance(self.pi2, (int, float)) and 0.0 < self.pi2 <= 1.0), "hp.pi2", self.pi2,
              "a class prior in (0, 1], or None for m/c")


@register_method
class CPU(Method):
    """CPU risk with the scaled stochastic JS loss (paper 000 eq. 4-5, Algorithm 1).

    A re-implementation from the paper (Xie, He, Lu et al., "Learning from Ambiguous Data
    with Hard Labels"); no reference code was available or used.
    """

    name = "cpu"
    consumes = ("quantized",)
    Hparams = CPUHparams
    stochastic_js: ClassVar[bool] = True

    def init_state(self, data):
        if self.hp.pi2 is not None:
            self.pi2 = float(self.hp.pi2)
        else:
            m = data.info.get("m")
            if m is None:
                raise ConfigError("hp.pi2=None is not allowed without a mix size m in the data: give hp.pi2 in (0, 1]")
            self.pi2 = min(1.0, float(m) / self.num_classes)
        self._alpha_sum, self._steps, self._neg_branch = 0.0, 0, None

    def loss(self, model, data, idx, epoch):
        g = model(data.x[idx]).float()
        alpha = draw_alpha(self.rng) if self.stochastic_js else None
        lp, ln = kl_binary_losses(g) if alpha is None else sjs_binary_losses(g, alpha=alpha)
        risk, neg = cpu_class_risks(lp, ln, data.weak["y"][idx], pi1=self.hp.pi1, pi2=self.pi2)
        # bookkeeping stays on the device: no sync in the hot loop
        branch = (neg < 0).float().mean().detach()
        self._neg_branch = branch if self._neg_branch is None else self._neg_branch + branch
        self._alpha_sum += alpha or 0.0
        self._steps += 1
        return risk.mean()

    def end_epoch(self, model, data, epoch):
        steps = max(self._steps, 1)
        out = {"pi2": self.pi2,
               "nn_branch_frac": 0.0 if self._neg_branch is None else float(self._neg_branch) / steps}
        if self.stochastic_js:
            out["alpha_mean"] = self._alpha_sum / steps
        self._alpha_sum, self._steps, self._neg_branch = 0.0, 0, None
        return out

    @torch.no_grad()
    def predict(self, model, x):
        # sigmoid(g_j) / sum_k sigmoid(g_k), in log space so saturated scores still normalise
        return torch.softmax(F.logsigmoid(model(x).float()), dim=1)


@register_method
class CPUKL(CPU):
    """CPU risk with l = KL (binary cross-entropy): Table III's CPU-KL."""

    name = "cpu-kl"
    stochastic_js = False
