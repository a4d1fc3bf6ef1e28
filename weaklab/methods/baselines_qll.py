"""Noise-robust loss baselines of paper 000's Table I (Xie, He, Lu et al.), on hard labels weak["y"].

Each is a re-implementation from its own paper (no reference code is used; every class
below is one), with the
defaults paper 000 lists in Table IV:

- ``ce``: cross-entropy.
- ``gce``: truncated generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018):
  ``L_q(f(x), e_y) = (1 - f_y(x)^q) / q`` (their eq. 6), truncated at ``k`` (eq. 9) and
  optimised as their eq. 11 by alternating over sample weights ``w_i = 1[f_y(x_i) > k]``
  (refreshed every ``prune_every`` epochs from ``prune_start`` on); (q, k) = (0.7, 0.5).
- ``sce``: symmetric cross-entropy (Wang et al., ICCV 2019, eq. 5-7):
  ``alpha CE + beta RCE`` with ``RCE = -sum_k p_k log q_k`` and ``log 0 := A = -4``, so
  ``RCE = -A (1 - p_y)``; (alpha, beta) = (0.1, 1.0) on CIFAR-10Q, (6.0, 0.1) on CIFAR-100Q.
- ``bootstrap``: bootstrapping (Reed et al., 2014): target ``beta t + (1-beta) z`` with
  ``z`` the model's own prediction: its argmax one-hot (hard, eq. 7) or its probabilities
  (soft, eq. 6); beta tuned in {0.1..0.9} in paper 000 (Table IV: 0.4 / 0.6 / 0.8).
- ``js``: Jensen-Shannon divergence loss (Englesson & Azizpour, NeurIPS 2021, the GJS
  paper's JS with M = 2 distributions): ``D_JS_pi(e_y, p) / Z``,
  ``Z = -(1-pi1) log(1-pi1)``, pi1 the weight of the label; paper 000 tunes pi1 in {0.1..0.9}.

They consume ``quantized`` and ``noisy`` data alike: both give one hard label per input.
"""

from __future__ import annotations


from dataclasses import dataclass

import torch
from torch.nn import functional as F

from weaklab.methods import Method, eval_logits, register_method
from weaklab.methods.cpu import scaled_sjs
from weaklab.registry import check

Tensor = torch.Tensor

CONSUMES = ("quantized", "noisy")


# -- losses: plain functions of logits and labels ---------------------------------------------

def gce_loss(logits: Tensor, y: Tensor, *, q: float, k: float = 0.0, w: Tensor | None = None) -> Tensor:
    """Mean of ``w_i (L_q(f(x_i), e_{y_i}) - L_q(k))`` (GCE eq. 6 and 11); ``w=None``: all ones.

    With k = 0 and w = 1 this is the untruncated L_q loss (eq. 6).
    """
    p_y = F.softmax(logits.float(), dim=1).gather(1, y[:, None]).squeeze(1)
    lq = (1.0 - p_y.clamp_min(1e-12) ** q) / q
    lq_k = (1.0 - k ** q) / q if k > 0 else 1.0 / q
    per = lq - lq_k if k > 0 else lq
    return per.mean() if w is None else (w * per).mean()


def symmetric_ce(logits: Tensor, target: Tensor, *, alpha: float, beta: float, A: float = -4.0) -> Tensor:
    """Symmetric cross-entropy (Wang et al. 2019, eq. 7): ``alpha CE + beta RCE`` with
    CE = -sum_k q_k log p_k and RCE = -sum_k p_k log q_k, log 0 := A (eq. 5-6), i.e. log q
    clamped below at A. ``target``: class indices (the SCE baseline) or distributions q
    (PLOT's pseudo labels, paper 003 eq. 8-9). For a hard label q is one-hot, so RCE is
    -A (1 - p_y) in closed form, computed as such (no one-hot, no log of zeros)."""
    logits = logits.float()
    if target.dtype in (torch.int64, torch.int32):
        p_y = F.softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        return alpha * F.cross_entropy(logits, target) + beta * (-A * (1.0 - p_y)).mean()
    logp = F.log_softmax(logits, dim=1)
    ce = -(target * logp).sum(1)
    rce = -(logp.exp() * torch.log(target.clamp_min(1e-30)).clamp_min(A)).sum(1)
    return (alpha * ce + beta * rce).mean()


def bootstrap_loss(logits: Tensor, y: Tensor, *, beta: float, mode: str = "hard") -> Tensor:
    """Reed et al.: cross-entropy to ``beta t + (1-beta) z``; z = onehot(argmax) (hard) or softmax (soft).

    Soft bootstrapping keeps the gradient through z: Reed et al. read it as cross-entropy
    plus a minimum-entropy term; hard z carries no gradient (argmax).
    """
    logp = F.log_softmax(logits.float(), dim=1)
    ce = -logp.gather(1, y[:, None]).squeeze(1)
    if mode == "hard":
        self_term = -logp.gather(1, logp.argmax(1, keepdim=True)).squeeze(1)
    else:
        self_term = -(logp.exp() * logp).sum(1)
    return (beta * ce + (1.0 - beta) * self_term).mean()


def js_loss(logits: Tensor, y: Tensor, *, pi1: float) -> Tensor:
    """Englesson & Azizpour's JS loss ``D_JS_pi(e_y, p) / Z`` with Z = -(1-pi1) log(1-pi1), mean over the batch.

    ``log(1 - p_y)`` is taken as the log-sum-exp of the other classes' logits minus the
    normaliser, exact even when p_y rounds to one.
    """
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=1)
    log_py = logits.gather(1, y[:, None]).squeeze(1) - lse
    others = logits.scatter(1, y[:, None], float("-inf"))
    log_1mpy = torch.logsumexp(others, dim=1) - lse
    return scaled_sjs(log_py, log_1mpy, alpha=pi1).mean()


# -- methods: thin glue -------------------------------------------------------------------------

@register_method
class CE(Method):
    """Cross-entropy on the hard (quantized or noisy) labels."""

    name = "ce"
    consumes = CONSUMES

    def loss(self, model, data, idx, epoch):
        return F.cross_entropy(model(data.x[idx]).float(), data.weak["y"][idx])


@dataclass(frozen=True)
class GCEHparams:
    q: float = 0.7
    """exponent q of L_q (GCE eq. 6); q -> 0 is CE, q = 1 is MAE"""
    k: float = 0.5
    """truncation threshold k of eq. 9 (0 = untruncated L_q)"""
    prune_start: int = 40
    """first epoch at which the weights w are pruned (GCE sec. 4: 40 of 120)"""
    prune_every: int = 10
    """epochs between weight updates after prune_start"""

    def __post_init__(self):
        check(0.0 < self.q <= 1.0, "hp.q", self.q, "an exponent in (0, 1]")
        check(0.0 <= self.k < 1.0, "hp.k", self.k, "a threshold in [0, 1)")
        check(self.prune_start >= 0, "hp.prune_start", self.prune_start, "an epoch >= 0")
        check(self.prune_every >= 1, "hp.prune_every", self.prune_every, "an integer >= 1")


@register_method
class GCE(Method):
    """Truncated L_q loss with pruning weights w (GCE eq. 9/11)."""

    name = "gce"
    consumes = CONSUMES
    Hparams = GCEHparams
    state_keys = ("w",)

    def init_state(self, data):
        self.w = torch.ones(data.n, device=data.x.device)

    def loss(self, model, data, idx, epoch):
        return gce_loss(model(data.x[idx]), data.weak["y"][idx], q=self.hp.q, k=self.hp.k, w=self.w[idx])

    def end_epoch(self, model, data, epoch):
        e = epoch + 1  # epochs completed
        if self.hp.k > 0 and e >= self.hp.prune_start and (e - self.hp.prune_start) % self.hp.prune_every == 0:
            p_y = train_probs(model, data).gather(1, data.weak["y"][:, None]).squeeze(1)
            self.w = (p_y > self.hp.k).float()
        return {"gce_kept": float(self.w.mean())}


@dataclass(frozen=True)
class SCEHparams:
    alpha: float = 0.1
    """weight of CE (SCE eq. 7)"""
    beta: float = 1.0
    """weight of reverse CE"""
    A: float = -4.0
    """log 0 in RCE (SCE sec. 3.2)"""

    def __post_init__(self):
        check(self.alpha >= 0, "hp.alpha", self.alpha, "a weight >= 0")
        check(self.beta >= 0, "hp.beta", self.beta, "a weight >= 0")
        check(self.alpha + self.beta > 0, "hp.alpha", self.alpha, "alpha + beta > 0")
        check(self.A < 0, "hp.A", self.A, "a negative stand-in for log 0")


@register_method
class SCE(Method):
    """Symmetric cross-entropy alpha CE + beta RCE."""

    name = "sce"
    consumes = CONSUMES
    Hparams = SCEHparams

    def loss(self, model, data, idx, epoch):
        return symmetric_ce(model(data.x[idx]), data.weak["y"][idx], alpha=self.hp.alpha, beta=self.hp.beta,
                            A=self.hp.A)


@dataclass(frozen=True)
class BootstrapHparams:
    beta: float = 0.8
    """weight of the given label in the target (Reed et al.: 0.8 hard, 0.95 soft)"""
    mode: str = "hard"
    """hard | soft bootstrapping"""

    def __post_init__(self):
        check(0.0 <= self.beta <= 1.0, "hp.beta", self.beta, "a weight in [0, 1]")
        check(self.mode in ("hard", "soft"), "hp.mode", self.mode, "hard or soft")


@register_method
class Bootstrap(Method):
    """Bootstrapping: cross-entropy to a mix of the label and the model's own prediction."""

    name = "bootstrap"
    consumes = CONSUMES
    Hparams = BootstrapHparams

    def loss(self, model, data, idx, epoch):
        return bootstrap_loss(model(data.x[idx]), data.weak["y"][idx], beta=self.hp.beta, mode=self.hp.mode)


@dataclass(frozen=True)
class JSHparams:
    pi1: float = 0.1
    """weight of the label distribution in D_JS_pi (Englesson & Azizpour); pi1 -> 0 is CE, -> 1 is MAE/2"""

    def __post_init__(self):
        check(0.0 < self.pi1 < 1.0, "hp.pi1", self.pi1, "a weight in (0, 1)")


@register_method
class JS(Method):
    """Jensen-Shannon divergence loss, scaled by Z(pi1)."""

    name = "js"
    consumes = CONSUMES
    Hparams = JSHparams

    def loss(self, model, data, idx, epoch):
        return js_loss(model(data.x[idx]), data.weak["y"][idx], pi1=self.hp.pi1)


@torch.no_grad()
def train_probs(model: torch.nn.Module, data, *, batch: int = 2048) -> Tensor:
    """Softmax over the whole training set in eval mode (restores the previous mode)."""
    return F.softmax(eval_logits(model, data.x, batch=batch), dim=1)
