"""Co-teaching (Han et al., "Co-teaching: Robust Training of Deep Neural Networks with
Extremely Noisy Labels", NeurIPS 2018), extended to multi-label data as paper 004
(BalanceMix) App. D describes its baseline: two networks are trained at once; each selects
the instances it believes clean and the *other* network learns from them (the cross
update of Han et al.'s Algorithm 1). Instead of a known noise rate (Han et al.'s R(T)
schedule), a two-component 1-D GMM is fitted to the per-instance losses of all training
instances (the sum of the K label-wise BCE losses), and instances whose posterior of the
small-loss component exceeds 0.5 are selected (App. D: "instance-level modeling").

A re-implementation from the papers (no code copied). Paper 004 applies RandAugment and
Mixup to all compared methods: each network's batch is the selected part of the random
batch, RandAugment'ed and mixed with a random partner from the same selected part.

Deviations, each keeping the paper's quantities:
- selection is refreshed once per epoch from the networks at the end of the previous epoch
  (one no-grad pass per network over the training set) instead of per mini-batch; BalanceMix
  (``weaklab.methods.balancemix``) does its label-wise management the same way here.
- the engine owns one network (f, evaluated and reported) and its optimizer; the peer g is
  a copy of f's architecture with its own initialisation and its own optimizer, configured
  by ``peer_optimizer`` / ``peer_lr`` / ``peer_momentum`` / ``peer_weight_decay`` /
  ``peer_adam_fused`` / ``peer_epochs`` (the study sets them to the recipe's ``train.*`` values).
- ``warmup`` epochs train both networks on every instance before the first selection
  (paper 004 warms up every method alike; Han et al. ramp R(T) over the first epochs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from weaklab.augment import check_mixup_alpha
from weaklab.methods import register_method
from weaklab.methods.balancemix import AugmentHparams, MultilabelMethod, bce_per_label, fit_gmm_1d, weighted_bce
from weaklab.methods.baselines_multilabel import random_mix
from weaklab.registry import check

Tensor = torch.Tensor
OPTIMIZERS = ("adam", "sgd")


def small_loss_instances(losses: Tensor, *, iters: int = 30) -> Tensor:
    """Posterior of the small-loss component of a 2-component GMM on per-instance losses (N,)."""
    p, _ = fit_gmm_1d(losses[None, :], torch.ones_like(losses, dtype=torch.bool)[None, :], iters=iters)
    return p[0]


@dataclass(frozen=True)
class CoteachingHparams(AugmentHparams):
    warmup: int = 5
    """epochs on all instances before the first selection (paper 004 warms up 5 epochs on VOC)"""
    mixup: bool = True
    """Mixup of the selected instances, as paper 004 applies it to every compared method"""
    mixup_alpha: float = 4.0
    """Beta(α, α) of the Mixup coefficient"""
    peer_optimizer: str = "adam"
    """optimizer of the peer network g (set equal to train.optimizer)"""
    peer_lr: float = 1e-3
    """learning rate of g (set equal to train.lr)"""
    peer_momentum: float = 0.9
    """SGD momentum of g (set equal to train.momentum)"""
    peer_weight_decay: float = 0.0
    """weight decay of g (set equal to train.weight_decay)"""
    peer_adam_fused: bool = True
    """Adam's fused kernel for g (set equal to train.adam_fused)"""
    peer_epochs: int = 0
    """cosine decay of g's learning rate to 0 over this many epochs (set to train.epochs
    under train.schedule=cosine); 0 = constant"""

    def __post_init__(self):
        super().__post_init__()
        check(isinstance(self.warmup, int) and self.warmup >= 0, "hp.warmup", self.warmup, "an integer >= 0")
        check(isinstance(self.mixup, bool), "hp.mixup", self.mixup, "True or False")
        check_mixup_alpha(self.mixup_alpha)
        check(self.peer_optimizer in OPTIMIZERS, "hp.peer_optimizer", self.peer_optimizer, "adam or sgd")
        check(isinstance(self.peer_lr, (int, float)) and self.peer_lr > 0, "hp.peer_lr", self.peer_lr,
              "a learning rate > 0")
        check(0 <= self.peer_momentum < 1, "hp.peer_momentum", self.peer_momentum, "a value in [0, 1)")
        check(self.peer_weight_decay >= 0, "hp.peer_weight_decay", self.peer_weight_decay, "a value >= 0")
        check(isinstance(self.peer_adam_fused, bool), "hp.peer_adam_fused", self.peer_adam_fused, "True or False")
        check(isinstance(self.peer_epochs, int) and self.peer_epochs >= 0, "hp.peer_epochs", self.peer_epochs,
              "an integer >= 0 (0 = constant learning rate)")


@register_method
class Coteaching(MultilabelMethod):
    """Two networks, each trained on the instances its peer's loss GMM calls clean."""

    name = "coteaching"
    Hparams = CoteachingHparams
    state_keys = ("clean_f", "clean_g")

    def init_state(self, data):
        self.peer: torch.nn.Module | None = None
        self.peer_opt = self.peer_sched = None
        self._pending: dict | None = None
        # selected instances of f and of g; all until the first selection
        self.clean_f = torch.ones(data.n, dtype=torch.bool, device=data.x.device)
        self.clean_g = self.clean_f.clone()

    def _make_peer(self, model: torch.nn.Module) -> None:
        hp = self.hp
        self.peer = model.fresh()  # f's architecture, its own initialisation from the seeded torch stream
        from weaklab.config import TrainConfig
        from weaklab.engine import make_optimizer  # the engine's own optimizer, built from g's settings

        self.peer_opt = make_optimizer(self.peer.parameters(), TrainConfig(
            optimizer=hp.peer_optimizer, lr=hp.peer_lr, momentum=hp.peer_momentum,
            weight_decay=hp.peer_weight_decay, adam_fused=hp.peer_adam_fused))
        self.peer_sched = (torch.optim.lr_scheduler.CosineAnnealingLR(self.peer_opt, T_max=hp.peer_epochs)
                           if hp.peer_epochs else None)
        if self._pending is not None:
            self.peer.load_state_dict(self._pending["peer"])
            self.peer_opt.load_state_dict(self._pending["peer_opt"])
            if self.peer_sched is not None and "peer_sched" in self._pending:
                self.peer_sched.load_state_dict(self._pending["peer_sched"])
            self._pending = None

    def _batch_loss(self, net, data, idx: Tensor) -> Tensor:
        if len(idx) == 0:  # no selected instance in this batch: nothing to learn from
            return sum(p.sum() for p in net.parameters()) * 0.0
        Y = data.weak["Y"][idx].float()
        if self.hp.mixup:
            x, y = random_mix(self, data, idx, self.hp.mixup_alpha, Y=Y)
        else:
            x, y = self.train_x(data, idx), Y
        return weighted_bce(logits=net(x), target=y)

    def loss(self, model, data, idx, epoch):
        if self.peer is None:
            self._make_peer(model)
        self.peer.train()
        # cross update: g learns from the instances f selected, f from those g selected
        for_g = idx[self.clean_f[idx]]
        if len(for_g):  # no step at all otherwise (Adam would still move g by its momentum)
            peer_loss = self._batch_loss(self.peer, data, for_g)
            self.peer_opt.zero_grad(set_to_none=True)
            peer_loss.backward()
            self.peer_opt.step()
        return self._batch_loss(model, data, idx[self.clean_g[idx]])

    def end_epoch(self, model, data, epoch):
        if self.peer is None:
            self._make_peer(model)
        if self.peer_sched is not None:
            self.peer_sched.step()
        out = {"selected_frac_f": float("nan"), "selected_frac_g": float("nan")}
        if epoch + 1 >= self.hp.warmup:
            Y = data.weak["Y"].float()
            for net, key in ((model, "clean_f"), (self.peer, "clean_g")):
                losses = bce_per_label(logits=self.logits_all(net, data.x), Y=Y).sum(1)
                setattr(self, key, small_loss_instances(losses) > 0.5)
            out = {"selected_frac_f": float(self.clean_f.float().mean()),
                   "selected_frac_g": float(self.clean_g.float().mean())}
        return out

    def diagnostics(self, data):
        """Share of f's selected instances whose given labels are all correct."""
        exact = ((data.weak["Y"] > 0.5) == (data.hidden["Y"] > 0.5)).all(1)
        sel = self.clean_f
        return {"diag_selected_exact": float(exact[sel].float().mean()) if sel.any() else float("nan"),
                "diag_all_exact": float(exact.float().mean())}

    def state_dict(self):
        d = super().state_dict()
        if self.peer is not None:
            d["peer"] = self.peer.state_dict()
            d["peer_opt"] = self.peer_opt.state_dict()
            if self.peer_sched is not None:
                d["peer_sched"] = self.peer_sched.state_dict()
        elif self._pending is not None:
            d.update(self._pending)
        return d

    def load_state_dict(self, d):
        super().load_state_dict(d)
        if "peer" in d:  # applied when the peer is built from the engine's model
            self._pending = {k: d[k] for k in ("peer", "peer_opt", "peer_sched") if k in d}
            self.peer = None
