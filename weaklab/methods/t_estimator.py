"""T-estimator: a noise transition matrix per class, estimated from the network and used
for forward loss correction, as paper 004 (BalanceMix) compares against it ("T-estimator",
Li, Xia et al., "Estimating Noise Transition Matrix with Label Correlations for Noisy
Multi-Label Learning", NeurIPS 2022).

In noisy multi-label learning each class k has a 2 x 2 transition matrix
T_k[i, j] = P(ỹ_k = j | y_k = i); with ρ⁺_k = P(ỹ_k = 1 | y_k = 1) and
ρ⁻_k = P(ỹ_k = 1 | y_k = 0), the noisy posterior is

    P(ỹ_k = 1 | x) = ρ⁺_k P(y_k = 1 | x) + ρ⁻_k (1 - P(y_k = 1 | x)),

and forward correction (Patrini et al. 2017) trains the clean posterior f(x)_k by the
BCE of that noisy posterior against the given label ỹ_k.

Estimation: ``warmup`` epochs of BCE on the given labels make the network an estimate of
P(ỹ_k = 1 | x); then, per class, anchor points (Patrini et al. 2017; the
``anchor_quantile`` instead of the maximum, after Xia et al. 2019's T-revision) give
ρ⁺_k = the ``anchor_quantile`` quantile of P(ỹ_k = 1 | x) over the training set (instances
almost surely positive) and ρ⁻_k = the 1 - ``anchor_quantile`` quantile (almost surely
negative). Li et al. 2022 estimate the same per-class matrices with a sample-selection
step and the co-occurrence of labels; this re-implementation keeps their model (one
transition matrix per class, forward correction) with the anchor-point estimator, a
simplification recorded here. The matrices are estimated once, at the end of warm-up.

A re-implementation from the papers (no code copied). Paper 004 applies RandAugment and
Mixup to every compared method; the corrected loss takes Mixup's soft targets as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weaklab.augment import check_mixup_alpha
from weaklab.methods import register_method
from weaklab.methods.balancemix import AugmentHparams, MultilabelMethod
from weaklab.methods.baselines_multilabel import random_mix
from weaklab.registry import check

Tensor = torch.Tensor
EPS = 1e-6


def anchor_transition(probs: Tensor, *, quantile: float, min_gap: float = 0.05) -> tuple[Tensor, Tensor]:
    """(ρ⁺, ρ⁻) per class, (K,) each, from noisy posteriors ``probs`` (N, K) by anchor points.

    ρ⁺ is kept at least ``min_gap`` above ρ⁻: a degenerate T (ρ⁺ <= ρ⁻) would make the
    corrected posterior decrease in the clean one."""
    hi = torch.quantile(probs.float(), quantile, dim=0)
    lo = torch.quantile(probs.float(), 1.0 - quantile, dim=0)
    rho_minus = lo.clamp(0.0, 1.0 - min_gap)
    rho_plus = torch.maximum(hi, rho_minus + min_gap).clamp(max=1.0)
    return rho_plus, rho_minus


def forward_corrected_bce(*, logits: Tensor, target: Tensor, rho_plus: Tensor, rho_minus: Tensor) -> Tensor:
    """BCE of the noisy posterior ρ⁻ + (ρ⁺ - ρ⁻) σ(z) against (soft) ``target``; summed over
    labels, averaged over the batch (eq. 1's reduction)."""
    p = rho_minus + (rho_plus - rho_minus) * torch.sigmoid(logits.float())
    p = p.clamp(EPS, 1 - EPS)
    y = target.float()
    return -(y * torch.log(p) + (1 - y) * torch.log1p(-p)).sum(1).mean()


@dataclass(frozen=True)
class TEstimatorHparams(AugmentHparams):
    warmup: int = 5
    """epochs of plain BCE before T is estimated (paper 004 warms up 5 epochs on VOC)"""
    anchor_quantile: float = 0.97
    """quantile of P(ỹ_k = 1 | x) taken as ρ⁺_k (1 - it as ρ⁻_k); T-revision uses the 97th percentile"""
    mixup: bool = True
    """Mixup as paper 004 applies it to every compared method"""
    mixup_alpha: float = 4.0
    """Beta(α, α) of the Mixup coefficient"""

    def __post_init__(self):
        super().__post_init__()
        check(isinstance(self.warmup, int) and self.warmup >= 1, "hp.warmup", self.warmup,
              "an integer >= 1 (T is estimated from the warmed-up network)")
        check(isinstance(self.anchor_quantile, (int, float)) and 0.5 < self.anchor_quantile <= 1.0,
              "hp.anchor_quantile", self.anchor_quantile, "a quantile in (0.5, 1]")
        check(isinstance(self.mixup, bool), "hp.mixup", self.mixup, "True or False")
        check_mixup_alpha(self.mixup_alpha)


@register_method
class TEstimator(MultilabelMethod):
    """Per-class 2 x 2 transition matrices by anchor points, then forward loss correction."""

    name = "t-estimator"
    Hparams = TEstimatorHparams
    state_keys = ("rho_plus", "rho_minus")

    def init_state(self, data):
        self.rho_plus = self.rho_minus = None  # identity T until estimated: plain BCE

    def loss(self, model, data, idx, epoch):
        if self.hp.mixup:
            x, y = random_mix(self, data, idx, self.hp.mixup_alpha)
        else:
            x, y = self.train_x(data, idx), data.weak["Y"][idx]
        ones = torch.ones(data.num_classes, device=y.device)
        rp = ones if self.rho_plus is None else self.rho_plus
        rm = ones * 0 if self.rho_minus is None else self.rho_minus
        return forward_corrected_bce(logits=model(x), target=y, rho_plus=rp, rho_minus=rm)

    def end_epoch(self, model, data, epoch):
        if self.rho_plus is None and epoch + 1 >= self.hp.warmup:
            probs = torch.sigmoid(self.logits_all(model, data.x))
            self.rho_plus, self.rho_minus = anchor_transition(probs, quantile=self.hp.anchor_quantile)
        if self.rho_plus is None:
            return {"rho_plus_mean": float("nan"), "rho_minus_mean": float("nan")}
        return {"rho_plus_mean": float(self.rho_plus.mean()), "rho_minus_mean": float(self.rho_minus.mean())}

    def diagnostics(self, data):
        """Mean absolute error of the estimated ρ⁺, ρ⁻ against the realised label flips."""
        if self.rho_plus is None:
            return {"diag_rho_plus_err": float("nan"), "diag_rho_minus_err": float("nan")}
        Yc, Yn = data.hidden["Y"] > 0.5, data.weak["Y"] > 0.5
        pos, neg = Yc.float(), (~Yc).float()
        true_plus = (Yn.float() * pos).sum(0) / pos.sum(0).clamp_min(1)
        true_minus = (Yn.float() * neg).sum(0) / neg.sum(0).clamp_min(1)
        return {"diag_rho_plus_err": float((self.rho_plus - true_plus).abs().mean()),
                "diag_rho_minus_err": float((self.rho_minus - true_minus).abs().mean())}
