"""BalanceMix (paper 004: Song, Kim & Lee, "Toward Robustness in Multi-label Classification:
A Data Augmentation Strategy against Imbalance and Noise", AAAI 2024).

A re-implementation from the paper (its official repository holds only a README; no code
was copied from anywhere). Symbols follow the paper:

- minority sampler (eq. 2-4): per class k the mean confidences P(k) over instances with
  ỹ_k = 1 and A(k) over those with ỹ_k = 0; Score(x, ỹ) = sum_k 1[ỹ_k=1] P(k) + 1[ỹ_k=0] A(k);
  sampling probability ∝ 1 / Score. Refreshed once per epoch (Alg. 1 line 17).
- minority-augmented mixing (eq. 5): x_mix = λ x_R + (1-λ) x_M, ỹ_mix likewise, with
  λ = max(l, 1-l), l ~ Beta(α, α): the random-sampler instance always dominates.
- label-wise management (eq. 6-10): per class k and polarity l a two-component 1-D GMM on
  the BCE losses (2K GMMs, fitted together by a batched EM in torch); p_G > 0.5 is clean
  (eq. 8). A not-clean label is re-labelled to 1 / 0 when the mean confidence over two
  RandAugment views is > δ / < 1-δ (eq. 9); the rest are ambiguous and their BCE is
  weighted by p_G (eq. 10). The reliability of a mixed label follows the random-sampler
  instance (λ >= 0.5).
- warm-up: ``warmup`` epochs of eq. 1 (plain BCE) on the minority-augmented batch (Alg. 1).

Deviations, for speed on small machines (each keeps the paper's quantities):
- label-wise management is computed once per epoch for all training labels, from the model
  at the end of the previous epoch (the GMMs are refit once per epoch anyway, Alg. 1 line
  18), instead of per mini-batch before mixing (Alg. 1 line 13). That costs three no-grad
  passes over the training set per epoch instead of three extra passes per step.
- the RandAugment views of eq. 9 (and the training inputs, as for every method here)
  draw an op and sign per image and apply each distinct op once to the group of images
  that drew it (``weaklab.augment.randaugment``), so augmentation stays batched.
- l ~ Beta(α, α) is drawn per pair (eq. 5 is written per pair), not once per batch.

Single positive labels: the paper regards every given positive as clean in the clean and
missing-label setups (Table 5 text, App. E), so eq. 8-10 manage only the given negatives
there. ``positives='auto'`` does so when every training instance has exactly one given
positive (the single-positive setup, read from the weak labels alone); ``'clean'`` always,
``'managed'`` never (the literal eq. 8-9 on both polarities, kept as an ablation: on
digits-multi it marks about half of the true single positives not clean and eq. 9 with
1 - δ = 0.45 zeroes most of them).

Ablation switches (paper Table 5): ``minority`` (eq. 4 sampler; False = a second random
sampler, i.e. Mixup), ``clean`` (eq. 8 selection; False = use all given labels),
``relabel`` (eq. 9), ``ambiguous`` (eq. 10 p_G weighting; False = ambiguous labels dropped).

Paper 004 trains every compared method with RandAugment (and Mixup, all but Default):
``randaug`` (default on) augments each epoch's training inputs, :class:`MultilabelMethod`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from weaklab.augment import check_mixup_alpha, randaugment
from weaklab.data.multilabel import as_float
from weaklab.methods import Method, eval_logits, register_method
from weaklab.registry import check
from weaklab.timing import Stopwatch

Tensor = torch.Tensor


# -- minority sampler, eq. 2-4 ------------------------------------------------------------

def class_confidences(*, probs: Tensor, Y: Tensor) -> tuple[Tensor, Tensor]:
    """P(k), A(k) of eq. 2: mean f(x)_k over ỹ_k = 1 and mean 1 - f(x)_k over ỹ_k = 0.

    A class without positives (or negatives) gets 1.0: it adds no urgency to the score."""
    pos = (Y > 0.5).float()
    neg = 1.0 - pos
    P = (probs * pos).sum(0) / pos.sum(0).clamp_min(1)
    A = ((1 - probs) * neg).sum(0) / neg.sum(0).clamp_min(1)
    P = torch.where(pos.sum(0) > 0, P, torch.ones_like(P))
    A = torch.where(neg.sum(0) > 0, A, torch.ones_like(A))
    return P, A


def instance_scores(*, Y: Tensor, P: Tensor, A: Tensor) -> Tensor:
    """Score(x, ỹ) = sum_k 1[ỹ_k = 1] P(k) + 1[ỹ_k = 0] A(k) (eq. 3), shape (N,)."""
    pos = (Y > 0.5).float()
    return pos @ P + (1 - pos) @ A


def sampling_probs(score: Tensor) -> Tensor:
    """p_sampling ∝ 1 / Score (eq. 4)."""
    inv = 1.0 / score.clamp_min(1e-12)
    return inv / inv.sum()


# -- mixing, eq. 5 --------------------------------------------------------------------------

def mix_lambda(*, alpha: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """λ = max(l, 1 - l), l ~ Beta(α, α) (eq. 5): always >= 0.5."""
    l = rng.beta(alpha, alpha, size=size)
    return np.maximum(l, 1.0 - l)


def mix(a: Tensor, b: Tensor, lam: Tensor) -> Tensor:
    """λ a + (1 - λ) b with one λ per row."""
    lam = lam.to(a.dtype).view(-1, *([1] * (a.dim() - 1)))
    return lam * a + (1 - lam) * b


# -- label-wise management, eq. 6-10 --------------------------------------------------------

def bce_per_label(*, logits: Tensor, Y: Tensor) -> Tensor:
    """BCE(f(x; ỹ_k)) of eq. 1 for every label, (N, K), unreduced."""
    return F.binary_cross_entropy_with_logits(logits.float(), Y.float(), reduction="none")


def fit_gmm_1d(values: Tensor, mask: Tensor, *, iters: int = 30, reg: float = 5e-4, tol: float = 1e-5,
               min_count: int = 4) -> tuple[Tensor, Tensor]:
    """Fit G two-component 1-D GMMs at once by EM; returns (posterior of the small-mean
    component (G, N), component means (G, 2) on the min-max-normalised scale).

    ``values`` (G, N) holds the data of every group, ``mask`` (G, N) says which entries
    belong to it, so groups of different sizes share one tensor program. Values are
    min-max normalised per group (as DivideMix does for its loss GMM) so that one variance
    floor ``reg`` fits every group. A group with fewer than ``min_count`` points or no
    spread gets posterior 1: nothing can be told apart there, so its labels stay clean.

    Measured on the 2K = 20 groups of 3000 digits-multi labels (1 thread, CPU time per
    epoch): 5 ms for this batched EM versus 0.09-0.11 s for 20 scikit-learn
    GaussianMixture(2) fits (max_iter 10 / 100; each pays its own k-means init and Python
    overhead), so the batched torch EM is used; it also runs on the GPU beside the data.
    """
    v, m = values.float(), mask.float()
    n = m.sum(1)
    inf = torch.tensor(float("inf"), device=v.device)
    vmin = torch.where(mask, v, inf).amin(1)
    vmax = torch.where(mask, v, -inf).amax(1)
    ok = (n >= min_count) & ((vmax - vmin) > 1e-8)
    span = torch.where(ok, vmax - vmin, torch.ones_like(vmax))
    z = torch.where(mask, (v - torch.where(ok, vmin, 0)[:, None]) / span[:, None], 0.0).clamp(0, 1)
    nn_ = n.clamp_min(1)
    mean = (z * m).sum(1) / nn_
    var0 = ((z - mean[:, None]) ** 2 * m).sum(1) / nn_ + reg
    # initial split at the group mean (one k-means step): low / high component
    low = m * (z <= mean[:, None]).float()
    r = torch.stack([low, m - low], 1)  # (G, 2, N) responsibilities
    mu = (r * z[:, None]).sum(2) / r.sum(2).clamp_min(1e-10)
    var = var0[:, None].expand(-1, 2).clone()
    pi = (r.sum(2) / nn_[:, None]).clamp(1e-3, 1)
    for _ in range(iters):
        logp = (-0.5 * ((z[:, None] - mu[..., None]) ** 2 / var[..., None] + torch.log(2 * math.pi * var[..., None]))
                + torch.log(pi[..., None]))
        r = torch.softmax(logp, dim=1) * m[:, None]
        nk = r.sum(2).clamp_min(1e-10)
        mu_new = (r * z[:, None]).sum(2) / nk
        var = (r * (z[:, None] - mu_new[..., None]) ** 2).sum(2) / nk + reg
        pi = (nk / nn_[:, None]).clamp_min(1e-6)
        shift = (mu_new - mu).abs().max()
        mu = mu_new
        if shift < tol:
            break
    logp = (-0.5 * ((z[:, None] - mu[..., None]) ** 2 / var[..., None] + torch.log(2 * math.pi * var[..., None]))
            + torch.log(pi[..., None]))
    post = torch.softmax(logp, dim=1)
    g = mu.argmin(1)  # the small-loss modality g of eq. 8
    p_clean = post.gather(1, g[:, None, None].expand(-1, 1, post.shape[2])).squeeze(1)
    p_clean = torch.where(ok[:, None], p_clean, torch.ones_like(p_clean))
    return p_clean * m, mu


def clean_posterior(*, losses: Tensor, Y: Tensor, iters: int = 30, reg: float = 5e-4) -> Tensor:
    """p_G(x; ỹ_k) of eq. 8 for every label (N, K): the 2K GMMs of eq. 7 (one per class and
    polarity, each on its loss set of eq. 6), fitted together."""
    pos = (Y > 0.5).T  # (K, N)
    vals = torch.cat([losses.T, losses.T], 0)
    mask = torch.cat([pos, ~pos], 0)
    p, _ = fit_gmm_1d(vals, mask, iters=iters, reg=reg)
    K = Y.shape[1]
    return (p[:K] + p[K:]).T  # each label lies in exactly one of its class's two groups


def relabel(*, Y: Tensor, conf: Tensor, clean: Tensor, delta: float) -> tuple[Tensor, Tensor]:
    """Eq. 9 on the not-clean labels: mean confidence of the two views > δ -> 1, < 1 - δ -> 0.
    Returns (refined labels, re-labelled mask R)."""
    up = ~clean & (conf > delta)
    down = ~clean & (conf < 1 - delta)
    Y2 = torch.where(up, torch.ones_like(Y), torch.where(down, torch.zeros_like(Y), Y))
    return Y2, up | down


def label_weights(*, p_G: Tensor, clean: Tensor, relabeled: Tensor, ambiguous: bool) -> Tensor:
    """Per-label weight of eq. 10: 1 on C ∪ R, p_G on the ambiguous set U (0 when ``ambiguous`` is off)."""
    sure = clean | relabeled
    return torch.where(sure, torch.ones_like(p_G), p_G if ambiguous else torch.zeros_like(p_G))


def weighted_bce(*, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """1/|B| sum_x sum_k w_k BCE (eq. 10; eq. 1 when w = 1)."""
    l = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    if weight is not None:
        l = l * weight
    return l.sum(1).mean()


# -- methods --------------------------------------------------------------------------------

@dataclass(frozen=True)
class AugmentHparams:
    """Training-input RandAugment, shared by every multi-label method (paper 004 applies
    RandAugment to all compared methods)."""

    randaug: bool = True
    """RandAugment the training inputs (paper 004's recipe for every method); False: raw inputs"""
    ra_ops: int = 2
    """RandAugment num_ops (torchvision's default)"""
    ra_magnitude: int = 9
    """RandAugment magnitude bin (0..30 of torchvision's 31)"""

    def __post_init__(self):
        check(isinstance(self.randaug, bool), "hp.randaug", self.randaug, "True or False")
        check(isinstance(self.ra_ops, int) and 0 <= self.ra_ops <= 14, "hp.ra_ops", self.ra_ops,
              "an integer in [0, 14] (RandAugment ops per image)")
        check(isinstance(self.ra_magnitude, int) and 0 <= self.ra_magnitude <= 30, "hp.ra_magnitude",
              self.ra_magnitude, "an integer in [0, 30]")


#: training sets up to this many input elements get one augmented copy per epoch (one
#: RandAugment call for all, ~28 op calls); larger ones (VOC at 448 px: 3 GB of uint8) are
#: augmented per batch
EPOCH_AUGMENT_MAX_ELEMENTS = 1 << 26


class MultilabelMethod(Method):
    """Shared plumbing of the multi-label methods: sigmoid scores, uint8-aware inputs, and
    the RandAugment'ed training inputs (:meth:`train_x`) when ``hp.randaug`` is on."""

    consumes = ("multilabel",)
    Hparams = AugmentHparams

    def batches(self, data, epoch, batch_size):
        self._x_epoch = None
        if getattr(self.hp, "randaug", False) and data.x.numel() <= EPOCH_AUGMENT_MAX_ELEMENTS:
            # one RandAugment view of every training image per epoch, as a per-image
            # transform in a data loader gives, in ~28 op calls instead of ~28 per batch
            self._x_epoch = randaugment(data.x, num_ops=self.hp.ra_ops, magnitude=self.hp.ra_magnitude)
        yield from super().batches(data, epoch, batch_size)

    def train_x(self, data, idx: Tensor) -> Tensor:
        """Training inputs of rows ``idx`` as float: this epoch's RandAugment view when
        ``hp.randaug``, else the raw images."""
        if not getattr(self.hp, "randaug", False):
            return as_float(data.x[idx])
        cached = getattr(self, "_x_epoch", None)
        if cached is not None:
            return as_float(cached[idx])
        return as_float(randaugment(data.x[idx], num_ops=self.hp.ra_ops, magnitude=self.hp.ra_magnitude))

    @torch.no_grad()
    def predict(self, model, x):
        return torch.sigmoid(model(as_float(x)).float())

    @torch.no_grad()
    def logits_all(self, model, x: Tensor, *, batch: int = 1024) -> Tensor:
        """Logits of every row of ``x`` (uint8 or float) in eval mode, bf16 on GPU."""
        return eval_logits(model, x, batch=batch, inputs=as_float, autocast=x.is_cuda)


POSITIVES = ("auto", "clean", "managed")


@dataclass(frozen=True)
class BalanceMixHparams(AugmentHparams):
    mixup_alpha: float = 4.0
    """α of eq. 5, l ~ Beta(α, α) (paper: 4.0; Table 8 searches 1, 2, 4, 8); mixup_alpha, the name every
    mixing method uses"""
    delta: float = 0.975
    """δ of eq. 9, re-labelling threshold in (0.5, 1] (paper: 0.975; 0.55 for single positive labels)"""
    warmup: int = 5
    """warm-up epochs of plain BCE on the mixed batch (paper: 5 on VOC, 10 on COCO)"""
    minority: bool = True
    """eq. 2-4 minority sampler; False: the second instance comes from a random sampler (Mixup)"""
    clean: bool = True
    """eq. 6-8 clean-label selection by the 2K GMMs; False: every given label is used as is"""
    relabel: bool = True
    """eq. 9 re-labelling of not-clean labels (needs clean)"""
    ambiguous: bool = True
    """eq. 10 p_G weighting of ambiguous labels (needs clean); False: they get weight 0"""
    positives: str = "auto"
    """given positives in eq. 8-10: 'clean' = all regarded clean (the paper's rule for the
    clean and single-positive setups), 'managed' = the literal eq. 8-9 on them too, 'auto' =
    'clean' when every training instance has exactly one given positive, else 'managed'"""
    gmm_iters: int = 30
    """EM iterations per epoch for the GMMs (stops earlier once the means move < 1e-5)"""
    pass_batch: int = 1024
    """images per no-grad forward pass of the per-epoch updates (64 for 448 px VOC)"""

    def __post_init__(self):
        super().__post_init__()
        check(self.positives in POSITIVES, "hp.positives", self.positives, f"one of {', '.join(POSITIVES)}")
        check_mixup_alpha(self.mixup_alpha, allowed="a Beta parameter > 0 (paper: 1, 2, 4, 8)")
        check(isinstance(self.delta, (int, float)) and 0.5 < self.delta <= 1.0, "hp.delta", self.delta,
              "a threshold in (0.5, 1] (paper: 0.9-1.0, or 0.55-0.9 for missing labels)")
        check(isinstance(self.warmup, int) and self.warmup >= 0, "hp.warmup", self.warmup, "an integer >= 0")
        check(self.clean or not self.relabel, "hp.relabel", self.relabel, "False unless hp.clean=True (eq. 9 "
              "re-labels only labels the GMMs did not select)")
        check(self.clean or not self.ambiguous, "hp.ambiguous", self.ambiguous, "False unless hp.clean=True")
        check(self.gmm_iters >= 1, "hp.gmm_iters", self.gmm_iters, "an integer >= 1")
        check(self.pass_batch >= 1, "hp.pass_batch", self.pass_batch, "an integer >= 1")


#: per-epoch keys of the label-wise management, reported every epoch (NaN during warm-up)
MANAGEMENT_KEYS = ("gmm_s", "relabel_s", "clean_frac", "relabel_frac", "ambiguous_frac")
DIAG_KEYS = ("diag_clean_precision", "diag_clean_recall", "diag_relabel_precision", "diag_relabel_recall",
             "diag_clean_precision_pos")


@register_method
class BalanceMix(MultilabelMethod):
    """Minority-augmented mixing (eq. 2-5) with fine-grained label-wise management (eq. 6-10)."""

    name = "balancemix"
    Hparams = BalanceMixHparams
    state_keys = ("p_sample", "Y_ref", "W", "p_G", "relabeled")

    def init_state(self, data):
        Y = data.weak["Y"].float()
        self.p_sample = torch.full((data.n,), 1.0 / data.n, device=Y.device)
        self.Y_ref = Y.clone()  # refined labels; = ỹ until the first management step
        self.W = torch.ones_like(Y)  # per-label weight of eq. 10; 1 = eq. 1
        self.p_G = None
        self.relabeled = None
        single = bool((Y.sum(1) == 1).all())
        self.keep_positives = self.hp.positives == "clean" or (self.hp.positives == "auto" and single)

    def loss(self, model, data, idx, epoch):
        # the minority partner of every random-sampler instance (eq. 4; uniform when minority is off)
        j = torch.multinomial(self.p_sample, len(idx), replacement=True)
        lam = torch.from_numpy(mix_lambda(alpha=self.hp.mixup_alpha, size=len(idx), rng=self.rng)).to(data.x.device)
        x = mix(self.train_x(data, idx), self.train_x(data, j), lam)
        y = mix(self.Y_ref[idx], self.Y_ref[j], lam)
        return weighted_bce(logits=model(x), target=y, weight=self.W[idx])  # reliability of the random instance

    def end_epoch(self, model, data, epoch):
        hp, Y = self.hp, data.weak["Y"].float()
        logits = self.logits_all(model, data.x, batch=hp.pass_batch)
        probs = torch.sigmoid(logits)
        # the same keys every epoch (NaN before the first fit): per-epoch rows share one schema
        nan = float("nan")
        out: dict[str, float] = dict.fromkeys(MANAGEMENT_KEYS, nan) if hp.clean else {}
        if hp.minority:
            P, A = class_confidences(probs=probs, Y=Y)
            self.p_sample = sampling_probs(instance_scores(Y=Y, P=P, A=A))
            out["sampler_max_over_min"] = float(self.p_sample.max() / self.p_sample.min())
        if hp.clean and epoch + 1 >= hp.warmup:  # from the first post-warm-up epoch on
            watch = Stopwatch(Y.device)
            with watch:
                self.p_G = clean_posterior(losses=bce_per_label(logits=logits, Y=Y), Y=Y, iters=hp.gmm_iters)
                if self.keep_positives:  # given positives are clean (weight 1, never re-labelled)
                    self.p_G = torch.where(Y > 0.5, torch.ones_like(self.p_G), self.p_G)
                clean = self.p_G > 0.5
            out["gmm_s"] = watch.pop()
            with watch:
                if hp.relabel:
                    self.Y_ref, self.relabeled = relabel(Y=Y, conf=self.view_confidence(model, data.x), clean=clean,
                                                         delta=hp.delta)
                else:
                    self.Y_ref, self.relabeled = Y.clone(), torch.zeros_like(clean)
            out["relabel_s"] = watch.pop()
            self.W = label_weights(p_G=self.p_G, clean=clean, relabeled=self.relabeled, ambiguous=hp.ambiguous)
            out["clean_frac"] = float(clean.float().mean())
            out["relabel_frac"] = float(self.relabeled.float().mean())
            out["ambiguous_frac"] = float((~clean & ~self.relabeled).float().mean())
        return out

    @torch.no_grad()
    def view_confidence(self, model, x: Tensor) -> Tensor:
        """1/2 (f(aug1(x)) + f(aug2(x))) of eq. 9 for every row. Both views of a chunk come from
        one RandAugment call on the chunk stacked twice (ops are drawn per image, so the two
        copies are independent views), and a chunk is the whole set when its two views fit
        ``EPOCH_AUGMENT_MAX_ELEMENTS``: RandAugment's cost is per op call, not per image
        (digits-multi: 1 call an epoch instead of 6, ~1.2 s less a BalanceMix trial). Larger sets (VOC)
        go by ``pass_batch`` rows so that full-size augmented copies never exist."""
        hp = self.hp
        chunk = len(x) if 2 * x.numel() <= EPOCH_AUGMENT_MAX_ELEMENTS else hp.pass_batch
        out = []
        for i in range(0, len(x), chunk):
            part = x[i:i + chunk]
            views = as_float(randaugment(torch.cat([part, part]), num_ops=hp.ra_ops, magnitude=hp.ra_magnitude))
            p = torch.sigmoid(self.logits_all(model, views, batch=hp.pass_batch))
            out.append(0.5 * (p[:len(part)] + p[len(part):]))
        return torch.cat(out)

    def diagnostics(self, data):
        Yc, Yn = data.hidden["Y"] > 0.5, data.weak["Y"] > 0.5
        out = {"diag_noisy_label_acc": float((Yn == Yc).float().mean()),
               "diag_refined_label_acc": float(((self.Y_ref > 0.5) == Yc).float().mean())}
        if not self.hp.clean:
            return out
        out.update(dict.fromkeys(DIAG_KEYS, float("nan")))  # one schema for every epoch
        if self.p_G is None:
            return out
        clean = self.p_G > 0.5
        correct = Yn == Yc
        if clean.any():
            out["diag_clean_precision"] = float(correct[clean].float().mean())
        pos = clean & Yn  # the selected given positives, against the share of given positives that are true
        if pos.any():
            out["diag_clean_precision_pos"] = float(correct[pos].float().mean())
        if correct.any():
            out["diag_clean_recall"] = float(clean[correct].float().mean())
        if self.relabeled.any():
            out["diag_relabel_precision"] = float(((self.Y_ref > 0.5) == Yc)[self.relabeled].float().mean())
        wrong = ~correct & ~clean
        if wrong.any():  # share of the not-selected wrong labels that re-labelling fixed
            out["diag_relabel_recall"] = float(((self.Y_ref > 0.5) == Yc)[wrong].float().mean())
        return out
