"""Batched, on-device image augmentation: weak (crop + flip), strong (RandAugment-style), mixup.

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


def mixup(x: Tensor, targets: Tensor, *, alpha: float, rng: np.random.Generator) -> tuple[Tensor, Tensor, float]:
    """Mixup (Zhang et al. 2018): one ``lam ~ Beta(alpha, alpha)`` per batch (drawn from the
    caller's numpy ``rng``), partners by a random permutation; inputs and targets mix alike."""
    lam = float(rng.beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], device=x.device)
    return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm], lam
