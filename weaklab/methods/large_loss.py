"""LL-R and LL-Ct (Kim, Kim, Akata & Lee, "Large Loss Matters in Weakly Supervised
Multi-Label Classification", CVPR 2022), the missing-label baselines of paper 004
(BalanceMix). One file for the paper's two registered methods, which differ in one line.

Unobserved labels are assumed negative, which makes the problem noisy multi-label
learning; since networks memorise noisy labels late, the assumed-negative labels with the
largest losses in a mini-batch are likely false negatives. In epoch t (0-based) the
largest ``t * delta_rel`` % of the losses of assumed-negative labels of the batch are

- rejected (**LL-R**, weight 0: the paper's eq. for λ_i = 0 on the top losses), or
- temporarily corrected (**LL-Ct**: their loss is taken against label 1 in this step only,
  the given label stays 0).

Paper 004 App. D: "the only hyperparameter is Δ_rel ... modified according to our training
epochs such that the rejection (or correction) ratios at the final epoch are the same" (0.2
for 10 epochs in Kim et al., 0.1 for 20 epochs on VOC): the study sets
``delta_rel = 2 / train.epochs``. Paper 004 applies LL-R/Ct to every noise type; the labels
given as 0 are the assumed negatives under each. With Mixup (paper 004's recipe for every
method) the assumed negatives of a mixed pair are the labels both partners give as 0.

A re-implementation from the paper (no code copied).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from weaklab.augment import check_mixup_alpha
from weaklab.methods import register_method
from weaklab.methods.balancemix import AugmentHparams, MultilabelMethod
from weaklab.methods.baselines_multilabel import random_mix
from weaklab.registry import check

Tensor = torch.Tensor
MODES = ("reject", "correct")


def large_loss_mask(losses: Tensor, candidates: Tensor, rate: float) -> Tensor:
    """The ``ceil(rate * numel)`` largest losses among ``candidates`` (bool, same shape)."""
    k = min(int(math.ceil(rate * losses.numel())), int(candidates.sum()))
    mask = torch.zeros_like(candidates)
    if k <= 0:
        return mask
    top = torch.where(candidates, losses, torch.full_like(losses, -float("inf"))).flatten().topk(k).indices
    return mask.flatten().index_fill(0, top, True).view_as(candidates)


def large_loss_bce(*, logits: Tensor, target: Tensor, rate: float, mode: str) -> tuple[Tensor, Tensor]:
    """BCE summed over labels, averaged over the batch, with the top ``rate`` of the
    assumed-negative (target == 0) label losses rejected or corrected; also the share of
    labels modified."""
    z, y = logits.float(), target.float()
    losses = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    big = large_loss_mask(losses.detach(), y == 0, rate)
    if mode == "reject":
        losses = torch.where(big, torch.zeros_like(losses), losses)
    else:  # temporary correction: the label counts as positive in this step only
        losses = torch.where(big, F.binary_cross_entropy_with_logits(z, torch.ones_like(z), reduction="none"), losses)
    return losses.sum(1).mean(), big.float().mean()  # a tensor: no host sync per step


@dataclass(frozen=True)
class LargeLossHparams(AugmentHparams):
    delta_rel: float = 0.2
    """Δ_rel: percentage points per epoch by which the rejection / correction rate grows
    (Kim et al.: 0.2 for 10 epochs; paper 004: 0.1 for 20 epochs, i.e. 2 / epochs)"""
    mixup: bool = True
    """Mixup as paper 004 applies it to every compared method"""
    mixup_alpha: float = 4.0
    """Beta(α, α) of the Mixup coefficient"""

    def __post_init__(self):
        super().__post_init__()
        check(isinstance(self.delta_rel, (int, float)) and 0 <= self.delta_rel <= 100, "hp.delta_rel",
              self.delta_rel, "a percentage per epoch in [0, 100]")
        check(isinstance(self.mixup, bool), "hp.mixup", self.mixup, "True or False")
        check_mixup_alpha(self.mixup_alpha)


class _LargeLoss(MultilabelMethod):
    Hparams = LargeLossHparams
    mode = "reject"

    def init_state(self, data):
        self._modified = torch.zeros((), device=data.x.device)
        self._steps = 0

    def rate(self, epoch: int) -> float:
        """Share of a batch's labels modified in epoch ``epoch`` (0-based): none in the first."""
        return min(1.0, epoch * self.hp.delta_rel / 100.0)

    def loss(self, model, data, idx, epoch):
        if self.hp.mixup:
            x, y = random_mix(self, data, idx, self.hp.mixup_alpha)
        else:
            x, y = self.train_x(data, idx), data.weak["Y"][idx]
        loss, modified = large_loss_bce(logits=model(x), target=y, rate=self.rate(epoch), mode=self.mode)
        self._modified += modified
        self._steps += 1
        return loss

    def end_epoch(self, model, data, epoch):
        out = {"modified_frac": float(self._modified) / max(self._steps, 1), "ll_rate": self.rate(epoch)}
        self._modified.zero_()
        self._steps = 0
        return out


@register_method
class LLR(_LargeLoss):
    """LL-R: large-loss rejection of assumed-negative labels (Kim et al. 2022)."""

    name = "ll-r"
    mode = "reject"


@register_method
class LLCt(_LargeLoss):
    """LL-Ct: temporary large-loss correction of assumed-negative labels (Kim et al. 2022)."""

    name = "ll-ct"
    mode = "correct"
