"""Batched, on-device image augmentation: weak (crop + flip), strong (RandAugment-style),
RandAugment with per-image draws, mixup.

Every function takes a float ``(B, C, H, W)`` batch in [0, 1] on any device and draws
*per-sample* random parameters with torch's generator (seeded per trial by the engine),
so a whole batch is augmented in a few tensor ops and nothing leaves the device.

torchvision's ``transforms.v2`` classes draw one set of random parameters per call, so
on a batch tensor they would shift, rotate or erase every image identically; only the
parameter-free ops of ``transforms.v2.functional`` (autocontrast, equalize), which work
per image on batched tensors, are used from it. Geometric ops go through one
``affine_grid`` / ``grid_sample`` with a per-sample matrix instead.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

Tensor = torch.Tensor


def _uniform(n: int, lo: float, hi: float, *, device) -> Tensor:
    return torch.empty(n, device=device).uniform_(lo, hi)


def random_translate(x: Tensor, *, pad: int) -> Tensor:
    """Random crop after zero padding by ``pad`` pixels (the usual CIFAR crop), per sample."""
    if pad <= 0:
        return x
    B, C, H, W = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (B,), device=x.device)
    ox = torch.randint(0, 2 * pad + 1, (B,), device=x.device)
    rows = (oy[:, None] + torch.arange(H, device=x.device))[:, :, None]  # (B,H,1)
    cols = (ox[:, None] + torch.arange(W, device=x.device))[:, None, :]  # (B,1,W)
    b = torch.arange(B, device=x.device)[:, None, None]
    return xp.permute(0, 2, 3, 1)[b, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_hflip(x: Tensor, *, p: float = 0.5) -> Tensor:
    flip = torch.rand(x.shape[0], device=x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def weak_augment(x: Tensor, *, pad: int | None = None, flip: bool = True) -> Tensor:
    """Random crop with ``pad`` (default H/8: 4 px on 32x32, 1 px on 8x8 digits) and, if
    ``flip``, a horizontal flip (off for digits, where a mirrored 2 or 5 is another glyph)."""
    pad = max(1, x.shape[-1] // 8) if pad is None else pad
    x = random_translate(x, pad=pad)
    return random_hflip(x) if flip else x


def random_affine(x: Tensor, *, max_rotate: float = 30.0, max_shear: float = 0.3, max_translate: float = 0.25,
                  p: float = 0.5) -> Tensor:
    """Per-sample rotation (degrees), shear and translation (fraction of the side), each
    applied with probability ``p``, through one batched ``grid_sample``."""
    B, dev = x.shape[0], x.device
    on = lambda: (torch.rand(B, device=dev) < p).float()
    ang = _uniform(B, -max_rotate, max_rotate, device=dev) * on() * math.pi / 180
    sh = _uniform(B, -max_shear, max_shear, device=dev) * on()
    tx = _uniform(B, -max_translate, max_translate, device=dev) * on() * 2  # grid coords span [-1, 1]
    ty = _uniform(B, -max_translate, max_translate, device=dev) * on() * 2
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack([torch.stack([cos, -sin + sh, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


def random_color(x: Tensor, *, strength: float = 0.5, p: float = 0.5) -> Tensor:
    """Per-sample brightness and contrast factors in [1 - strength, 1 + strength], and
    solarize / autocontrast / equalize each with probability ``p / 2``."""
    # imported here: torchvision's transforms cost ~2 s of CPU at import, paid by every new
    # Ray worker and CLI call even when no method augments (benchmarks/RESULTS.md)
    from torchvision.transforms.v2 import functional as TF

    B, dev = x.shape[0], x.device
    sel = lambda q: (torch.rand(B, device=dev) < q)[:, None, None, None]
    bright = _uniform(B, 1 - strength, 1 + strength, device=dev)[:, None, None, None]
    x = torch.where(sel(p), x * bright, x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = _uniform(B, 1 - strength, 1 + strength, device=dev)[:, None, None, None]
    x = torch.where(sel(p), (x - mean) * contrast + mean, x).clamp(0, 1)
    thr = _uniform(B, 0.5, 1.0, device=dev)[:, None, None, None]
    x = torch.where(sel(p / 2) & (x >= thr), 1 - x, x)
    x = torch.where(sel(p / 2), TF.autocontrast(x), x)
    return torch.where(sel(p / 2), TF.equalize(x), x)


def cutout(x: Tensor, *, size: int) -> Tensor:
    """Zero one ``size`` x ``size`` square per sample at a random centre (may cross the border)."""
    if size <= 0:
        return x
    B, _, H, W = x.shape
    cy = torch.randint(0, H, (B,), device=x.device)[:, None, None]
    cx = torch.randint(0, W, (B,), device=x.device)[:, None, None]
    yy = torch.arange(H, device=x.device)[None, :, None]
    xx = torch.arange(W, device=x.device)[None, None, :]
    dy, dx = yy - cy + size // 2, xx - cx + size // 2
    hole = (dy >= 0) & (dy < size) & (dx >= 0) & (dx < size)
    return x * (~hole)[:, None].to(x.dtype)


def strong_augment(x: Tensor, *, flip: bool = True, cutout_frac: float = 0.25) -> Tensor:
    """Weak augmentation, then random affine, colour ops and Cutout of ``cutout_frac`` of the
    side: a batched stand-in for the RandAugment + Cutout "strong" view of PiCO/Solar."""
    x = weak_augment(x, flip=flip)
    x = random_affine(x)
    x = random_color(x)
    return cutout(x, size=max(1, int(round(cutout_frac * x.shape[-1]))))


def check_mixup_alpha(alpha, *, allowed: str = "a Beta parameter > 0") -> None:
    """``hp.mixup_alpha``, the one name of every mixing method's Beta(α, α): α > 0."""
    from weaklab.registry import check

    check(isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha > 0, "hp.mixup_alpha", alpha,
          allowed)


def mixup(x: Tensor, targets: Tensor, *, alpha: float, rng: np.random.Generator,
          dominant: bool = False) -> tuple[Tensor, Tensor, float]:
    """Mixup (Zhang et al. 2018): one ``lam ~ Beta(alpha, alpha)`` per batch (drawn from the
    caller's numpy ``rng``), partners by a random permutation; inputs and targets mix alike.
    ``dominant``: ``lam = max(l, 1 - l)`` so each mixed input is dominated by its own sample
    (Solar's mixup). The one batch-level mixup of every method (PLOT, pll-reg, Solar);
    BalanceMix's eq. 5 draws one λ per row (``weaklab.methods.balancemix.mix_lambda``)."""
    lam = float(rng.beta(alpha, alpha))
    if dominant:
        lam = max(lam, 1 - lam)
    perm = torch.randperm(x.shape[0], device=x.device)
    return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm], lam


# -- RandAugment (Cubuk et al. 2020) with per-image draws, applied per op group -------------

#: torchvision's RandAugment search space (``transforms.v2.RandAugment``, 31 magnitude bins):
#: op -> (magnitude at the top bin, whether the op takes a random sign)
RA_SPACE = {
    "identity": (0.0, False), "shear_x": (0.3, True), "shear_y": (0.3, True),
    "translate_x": (150.0 / 331.0, True), "translate_y": (150.0 / 331.0, True), "rotate": (30.0, True),
    "brightness": (0.9, True), "color": (0.9, True), "contrast": (0.9, True), "sharpness": (0.9, True),
    "posterize": (4.0, False), "solarize": (1.0, False), "autocontrast": (0.0, False), "equalize": (0.0, False),
}
RA_OPS = tuple(RA_SPACE)
RA_BINS = 31


def _ra_apply(op: str, x: Tensor, v: float) -> Tensor:
    """One RandAugment op with signed magnitude ``v`` on a uint8 batch (same parameters for
    every image of ``x``: the caller passes the group of images that drew this op and sign)."""
    from torchvision.transforms.v2 import functional as TF

    H, W = x.shape[-2:]
    if op == "shear_x":
        return TF.affine(x, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(v)), 0.0],
                         center=[0, 0])
    if op == "shear_y":
        return TF.affine(x, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(v))],
                         center=[0, 0])
    if op == "translate_x":
        return TF.affine(x, angle=0.0, translate=[int(v * W), 0], scale=1.0, shear=[0.0, 0.0])
    if op == "translate_y":
        return TF.affine(x, angle=0.0, translate=[0, int(v * H)], scale=1.0, shear=[0.0, 0.0])
    if op == "rotate":
        return TF.rotate(x, angle=v)
    if op == "brightness":
        return TF.adjust_brightness(x, 1.0 + v)
    if op == "color":
        return TF.adjust_saturation(x, 1.0 + v)
    if op == "contrast":
        return TF.adjust_contrast(x, 1.0 + v)
    if op == "sharpness":
        return TF.adjust_sharpness(x, 1.0 + v)
    if op == "posterize":
        return TF.posterize(x, int(v))
    if op == "solarize":
        return TF.solarize(x, v * 255.0)
    if op == "autocontrast":
        return TF.autocontrast(x)
    if op == "equalize":
        return TF.equalize(x)
    return x


def ra_magnitude(op: str, magnitude: int, num_bins: int = RA_BINS) -> float:
    """The unsigned value of ``op`` at bin ``magnitude`` of torchvision's RandAugment space."""
    top, _ = RA_SPACE[op]
    if op == "posterize":  # bits: 8 at bin 0 down to 4 at the top bin
        return float(round(8 - magnitude / ((num_bins - 1) / 4)))
    if op == "solarize":  # threshold fraction: 1.0 at bin 0 down to 0.0 at the top bin
        return float(torch.linspace(1.0, 0.0, num_bins)[magnitude])
    # torchvision's float32 linspace, so that the values (and images) match it exactly
    return float(torch.linspace(0.0, top, num_bins)[magnitude])


def randaugment(x: Tensor, *, num_ops: int = 2, magnitude: int = 9, generator: torch.Generator | None = None) -> Tensor:
    """RandAugment (Cubuk et al. 2020, torchvision's op space and magnitudes) with an op and
    a sign drawn **per image** in each of the ``num_ops`` rounds; every distinct (op, sign)
    is then applied once to the group of images that drew it, so a batch costs at most
    ~2 x 14 op calls per round whatever its size. ``x``: uint8, or float in [0, 1] (returned
    as float in [0, 1], quantised to 8 bits as RandAugment works on uint8 images).

    ``transforms.v2.RandAugment`` on a batch tensor draws one op for the whole batch;
    calling it per image costs ~0.2 ms an image, and per chunk of 32 images shares the draw
    within a chunk (benchmarks/RESULTS.md, "RandAugment")."""
    is_u8 = x.dtype == torch.uint8
    out = x.clone() if is_u8 else (x.clamp(0, 1) * 255).round().to(torch.uint8)
    n = out.shape[0]
    signed = torch.tensor([RA_SPACE[o][1] for o in RA_OPS], device=out.device)
    for _ in range(num_ops):
        op = torch.randint(len(RA_OPS), (n,), generator=generator, device=out.device)
        neg = torch.randint(2, (n,), generator=generator, device=out.device).bool() & signed[op]
        key = op * 2 + neg.long()
        order = torch.argsort(key, stable=True)
        keys, counts = torch.unique_consecutive(key[order], return_counts=True)
        for k, group in zip(keys.tolist(), order.split(counts.tolist())):
            name = RA_OPS[k // 2]
            if name == "identity":
                continue
            v = ra_magnitude(name, magnitude) * (-1.0 if k % 2 else 1.0)
            out[group] = _ra_apply(name, out[group], v)
    return out if is_u8 else out.float().div_(255.0)


def randaugment_chunked(x: Tensor, *, num_ops: int = 2, magnitude: int = 9, chunk: int = 32) -> Tensor:
    """The former scheme, kept for ``benchmarks/bench_randaugment.py``: torchvision's
    ``v2.RandAugment`` called once per chunk of ``chunk`` images (one draw per chunk)."""
    from torchvision.transforms import v2

    ra = v2.RandAugment(num_ops=num_ops, magnitude=magnitude)
    u8 = x if x.dtype == torch.uint8 else (x.clamp(0, 1) * 255).round().to(torch.uint8)
    aug = torch.empty_like(u8)
    for sl in torch.arange(len(u8), device=u8.device).split(chunk):
        aug[sl] = ra(u8[sl])
    return aug if x.dtype == torch.uint8 else aug.float().div_(255.0)
