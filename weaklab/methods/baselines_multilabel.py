"""Multi-label baselines of paper 004's tables (re-implemented from the papers).

- ``bce``: "Default (BCE Loss)", eq. 1 of paper 004: sum over the K labels, mean over the batch.
- ``bce-mixup``: BCE on Mixup batches of two random instances (Table 5's "+ Random Sampler
  (≈ Mixup)" row), λ = max(l, 1-l), l ~ Beta(α, α) as in eq. 5 (the max only orders the
  pair; two random instances make it the same distribution as plain Mixup).
- ``asl``: asymmetric loss (Ben-Baruch et al. 2021), with paper 004 App. D's values
  γ+ = 0, γ- = 4, m = 0.05:
      L+ = (1 - p)^γ+ log p,   L- = p_m^γ- log(1 - p_m),   p_m = max(p - m, 0),
      loss = - sum_k [ y_k L+ + (1 - y_k) L- ].
  Paper 004 applies Mixup to every compared method except Default, so ``mixup`` is on by
  default (``hp.mixup=False`` gives the plain loss).

Every method trains on RandAugment'ed inputs (``hp.randaug``, default on), as paper 004
applies RandAugment to all methods including Default (``MultilabelMethod.train_x``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from weaklab.augment import check_mixup_alpha
from weaklab.methods import register_method
from weaklab.methods.balancemix import AugmentHparams, MultilabelMethod, mix, mix_lambda, weighted_bce
from weaklab.registry import check

Tensor = torch.Tensor


def asymmetric_loss(*, logits: Tensor, target: Tensor, gamma_pos: float, gamma_neg: float, m: float) -> Tensor:
    """ASL summed over labels, averaged over the batch; ``target`` may be soft (Mixup)."""
    z = logits.float()
    p = torch.sigmoid(z)
    log_p = F.logsigmoid(z)
    p_m = (p - m).clamp_min(0) if m > 0 else p
    log_1m_pm = torch.log((1 - p_m).clamp_min(1e-8)) if m > 0 else F.logsigmoid(-z)
    l_pos = (1 - p).pow(gamma_pos) * log_p if gamma_pos else log_p
    l_neg = p_m.pow(gamma_neg) * log_1m_pm if gamma_neg else log_1m_pm
    y = target.float()
    return -(y * l_pos + (1 - y) * l_neg).sum(1).mean()


def random_mix(method, data, idx: Tensor, alpha: float, Y: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mixup of the batch with a random partner batch (eq. 5's λ, uniform second sampler) on
    the method's training inputs (``train_x``: RandAugment'ed when ``hp.randaug``);
    ``Y`` defaults to the given labels."""
    x = method.train_x(data, idx)
    perm = torch.randperm(len(idx), device=idx.device)
    lam = torch.from_numpy(mix_lambda(alpha=alpha, size=len(idx), rng=method.rng)).to(x.device)
    Y = data.weak["Y"][idx] if Y is None else Y
    return mix(x, x[perm], lam), mix(Y, Y[perm], lam)


@register_method
class BCE(MultilabelMethod):
    """Eq. 1 of paper 004 on the given noisy multi-labels."""

    name = "bce"

    def loss(self, model, data, idx, epoch):
        return weighted_bce(logits=model(self.train_x(data, idx)), target=data.weak["Y"][idx])


@dataclass(frozen=True)
class MixupHparams(AugmentHparams):
    mixup_alpha: float = 4.0
    """Beta(α, α) of the mixing coefficient (paper 004 uses α = 4 for its mixing)"""

    def __post_init__(self):
        super().__post_init__()
        check_mixup_alpha(self.mixup_alpha)


@register_method
class BCEMixup(MultilabelMethod):
    """BCE on Mixup batches of two random instances (Table 5, "+ Random Sampler")."""

    name = "bce-mixup"
    Hparams = MixupHparams

    def loss(self, model, data, idx, epoch):
        x, y = random_mix(self, data, idx, self.hp.mixup_alpha)
        return weighted_bce(logits=model(x), target=y)


@dataclass(frozen=True)
class ASLHparams(AugmentHparams):
    gamma_pos: float = 0.0
    """γ+, focusing of positive labels (paper 004 App. D: 0)"""
    gamma_neg: float = 4.0
    """γ-, focusing of negative labels (App. D: 4)"""
    m: float = 0.05
    """probability margin shifting negatives (App. D: 0.05)"""
    mixup: bool = True
    """Mixup as paper 004 applies it to all compared methods"""
    mixup_alpha: float = 4.0
    """Beta(α, α) of the Mixup coefficient"""

    def __post_init__(self):
        super().__post_init__()
        check(isinstance(self.mixup, bool), "hp.mixup", self.mixup, "True or False")
        check(self.gamma_pos >= 0, "hp.gamma_pos", self.gamma_pos, "a focusing parameter >= 0")
        check(self.gamma_neg >= 0, "hp.gamma_neg", self.gamma_neg, "a focusing parameter >= 0")
        check(0 <= self.m < 1, "hp.m", self.m, "a probability margin in [0, 1)")
        check_mixup_alpha(self.mixup_alpha)


@register_method
class ASL(MultilabelMethod):
    """Asymmetric loss (Ben-Baruch et al. 2021) with paper 004's settings."""

    name = "asl"
    Hparams = ASLHparams

    def loss(self, model, data, idx, epoch):
        if self.hp.mixup:
            x, y = random_mix(self, data, idx, self.hp.mixup_alpha)
        else:
            x, y = self.train_x(data, idx), data.weak["Y"][idx]
        return asymmetric_loss(logits=model(x), target=y, gamma_pos=self.hp.gamma_pos,
                               gamma_neg=self.hp.gamma_neg, m=self.hp.m)
