"""Ambiguous inputs with quantized labels (paper 000, Xie, He, Lu et al., sec. II and IV).

Every training input is a mix of ``m`` clean training inputs (``Mix(x_1..x_m; lambda)``,
sec. IV); its soft label is ``s = sum_i lambda_i onehot(y_i)`` and the only label a method
sees is one draw from ``s`` (the quantized label, eq. 1 / Definition 1).

- Mixup: ``r * lambda ~ Multinomial(r; 1/m, ..., 1/m)`` and ``x = sum_i lambda_i x_i``.
- PatchMix: binary masks ``M_i`` partition the image (``sum_i M_i = 1``) and ``lambda_i``
  is the area of ``M_i``. ``layout='grid'``: the image is cut into ``grid x grid`` patches,
  each taken from one of the ``m`` inputs uniformly at random. ``layout='rect'``: the image
  is cut at a random near-central point into ``m`` (2..4) contiguous rectangles, one per
  input (the common PatchMix/CutMix layout: halves for m = 2, a half and two quarters for
  m = 3, quadrants for m = 4).

Validation and test stay clean (the paper evaluates on the original CIFAR test set).
The soft labels, the source indices and the weights are kept in ``hidden`` for
diagnostics only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from weaklab.data import Dataset
from weaklab.registry import ConfigError, check
from weaklab.settings import WeakData, clean_evals, register_setting

MIX_TYPES = ("mixup", "patchmix")
PATCH_LAYOUTS = ("grid", "rect")
#: ``layout='rect'`` cuts one point into at most four rectangles
RECT_M = (2, 3, 4)
#: the paper's benchmarks pair each mix type with its m (CIFAR-10Q/100Q: Mixup m=2, PatchMix m=4)
PAPER_M = {"mixup": 2, "patchmix": 4}

#: samples mixed per chunk: bounds the (chunk, m, C, H, W) gather on CIFAR-size data
_CHUNK = 2048


@dataclass(frozen=True)
class QuantizedParams:
    mix: str = "mixup"
    """mixup | patchmix (sec. IV)"""
    m: int | None = None
    """inputs mixed into each ambiguous input; None = the paper's pairing (Mixup 2, PatchMix 4),
    so a study can grid over ``setting.mix`` alone"""
    r: int = 10
    """Mixup multinomial trials: r*lambda ~ Multinomial(r; 1/m..1/m). The paper does not state
    its r; 10 makes lambda a multiple of 0.1 and a pure (one-input) mix rare (2^-9 for m=2)"""
    grid: int = 4
    """PatchMix ``layout='grid'``: patches per image side (must divide the image height and width)"""
    layout: str = "grid"
    """PatchMix: grid (each of grid x grid patches from a random input) | rect (m contiguous
    rectangles cut at a random point in the central half of each side, one per input)"""

    def __post_init__(self):
        check(self.mix in MIX_TYPES, "setting.mix", self.mix, f"one of {', '.join(MIX_TYPES)}")
        if self.m is None:
            object.__setattr__(self, "m", PAPER_M[self.mix])  # resolved here so caches and columns see the value
        check(isinstance(self.m, (int, np.integer)) and self.m >= 2, "setting.m", self.m,
              "an integer >= 2 (inputs mixed per ambiguous input)")
        check(isinstance(self.r, (int, np.integer)) and self.r >= 1, "setting.r", self.r,
              "an integer >= 1 (multinomial trials)")
        check(isinstance(self.grid, (int, np.integer)) and self.grid >= 1, "setting.grid", self.grid,
              "an integer >= 1 (patches per image side)")
        check(self.layout in PATCH_LAYOUTS, "setting.layout", self.layout, f"one of {', '.join(PATCH_LAYOUTS)}")
        check(self.mix != "patchmix" or self.layout != "rect" or self.m in RECT_M, "setting.m", self.m,
              "2, 3 or 4 with setting.layout='rect' (one cut point makes at most four rectangles)")


def check_grid(grid: int, input_shape: tuple[int, ...]) -> None:
    """One-line ConfigError unless ``grid`` patches per side tile an image of ``input_shape`` (C,H,W) exactly."""
    if len(input_shape) != 3:
        raise ConfigError(f"setting.mix='patchmix' needs image inputs (C,H,W); got input shape {tuple(input_shape)}")
    H, W = input_shape[1:]
    check(H % grid == 0 and W % grid == 0, "setting.grid", grid,
          f"a number of patches per side dividing the {H}x{W} image "
          f"({', '.join(str(d) for d in range(1, min(H, W) + 1) if H % d == 0 and W % d == 0)})")


def validate_for(params: QuantizedParams, input_shape: tuple[int, ...]) -> None:
    """Checks that need the dataset's image size (the dataclass alone cannot know it)."""
    if params.mix == "patchmix" and params.layout == "grid":
        check_grid(params.grid, input_shape)
    if params.mix == "patchmix" and params.layout == "rect":
        if len(input_shape) != 3 or min(input_shape[1:]) < 2:
            raise ConfigError(f"setting.layout='rect' needs image inputs (C,H,W) of at least 2x2; got {tuple(input_shape)}")


def draw_sources(n_train: int, n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, m)`` indices of the inputs mixed into each ambiguous input, distinct within a row.

    Column 0 walks a permutation of the training set, so with ``n == n_train`` every clean
    input is the first component of exactly one mix; the others are uniform. Rows with a
    repeated index are redrawn (few: about m^2/(2 n_train) of them), so no mix is secretly
    a mix of fewer than m inputs.
    """
    if n_train < m:
        raise ConfigError(f"setting.m={m} is not allowed: at most the {n_train} training inputs")
    src = np.empty((n, m), dtype=np.int64)
    src[:, 0] = np.concatenate([rng.permutation(n_train) for _ in range(-(-n // n_train))])[:n]
    src[:, 1:] = rng.integers(0, n_train, size=(n, m - 1))
    while True:
        s = np.sort(src, axis=1)
        bad = np.flatnonzero((s[:, 1:] == s[:, :-1]).any(axis=1))
        if bad.size == 0:
            return src
        src[bad, 1:] = rng.integers(0, n_train, size=(bad.size, m - 1))


def mixup_weights(n: int, *, m: int, r: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, m)`` lambda with ``r * lambda ~ Multinomial(r; 1/m, ..., 1/m)`` (sec. IV)."""
    return rng.multinomial(r, np.full(m, 1.0 / m), size=n).astype(np.float64) / r


def patch_assignment(n: int, *, m: int, grid: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, grid, grid)`` index in [0, m) of the input each patch is taken from."""
    return rng.integers(0, m, size=(n, grid, grid))


def patch_masks(assign: np.ndarray, *, m: int, height: int, width: int) -> np.ndarray:
    """Binary masks ``M`` ``(n, m, H, W)`` from a patch assignment; ``M.sum(1) == 1`` everywhere."""
    g = assign.shape[1]
    pix = np.repeat(np.repeat(assign, height // g, axis=1), width // g, axis=2)  # (n,H,W)
    return (pix[:, None] == np.arange(m)[None, :, None, None]).astype(np.float32)


def patch_weights(assign: np.ndarray, *, m: int) -> np.ndarray:
    """lambda_i = area of mask M_i: the fraction of patches taken from input i."""
    n, g, _ = assign.shape
    counts = np.zeros((n, m))
    np.add.at(counts, (np.repeat(np.arange(n), g * g), assign.reshape(n, -1).ravel()), 1.0)
    return counts / (g * g)


def rect_cuts(n: int, *, m: int, height: int, width: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``layout='rect'``: per input a cut point ``(cy, cx)`` uniform over the central half of
    each side (so no rectangle is empty or a sliver), an orientation bit and which input
    each of the m rectangles takes (a random permutation)."""
    lo_y, hi_y = max(1, height // 4), max(1, min(height - 1, (3 * height) // 4))
    lo_x, hi_x = max(1, width // 4), max(1, min(width - 1, (3 * width) // 4))
    return {"cy": rng.integers(lo_y, hi_y + 1, size=n), "cx": rng.integers(lo_x, hi_x + 1, size=n),
            "flip": rng.integers(0, 2, size=n).astype(bool),
            "perm": rng.permuted(np.tile(np.arange(m), (n, 1)), axis=1)}


def rect_assignment(cuts: dict[str, np.ndarray], *, m: int, height: int, width: int) -> np.ndarray:
    """``(n, H, W)`` index in [0, m) of the input each pixel is taken from, for ``rect_cuts``.

    Regions before the permutation: m = 2 left | right (``flip``: top | bottom); m = 3 the
    left part whole and the right part cut at ``cy`` (``flip``: top whole, bottom cut at
    ``cx``); m = 4 the four quadrants around ``(cy, cx)``.
    """
    below = np.arange(height)[None, :, None] >= cuts["cy"][:, None, None]  # (n, H, 1)
    right = np.arange(width)[None, None, :] >= cuts["cx"][:, None, None]  # (n, 1, W)
    below, right = np.broadcast_arrays(below, right)
    flip = cuts["flip"][:, None, None]
    if m == 2:
        region = np.where(flip, below, right).astype(np.int64)
    elif m == 3:
        region = np.where(flip, np.where(below, 1 + right, 0), np.where(right, 1 + below, 0))
    elif m == 4:
        region = 2 * below.astype(np.int64) + right
    else:
        raise ConfigError(f"setting.m={m} is not allowed with setting.layout='rect': 2, 3 or 4")
    return np.take_along_axis(cuts["perm"], region.reshape(len(region), -1), axis=1).reshape(region.shape)


def pixel_masks(assign: np.ndarray, *, m: int) -> np.ndarray:
    """Binary masks ``(n, m, H, W)`` from a per-pixel assignment ``(n, H, W)``."""
    return (assign[:, None] == np.arange(m)[None, :, None, None]).astype(np.float32)


def soft_labels(y_src: np.ndarray, lam: np.ndarray, num_classes: int) -> np.ndarray:
    """``s = sum_i lambda_i onehot(y_i)`` ``(n, c)``; two inputs of one class add up."""
    n, m = y_src.shape
    s = np.zeros((n, num_classes))
    np.add.at(s, (np.repeat(np.arange(n), m), y_src.ravel()), lam.ravel())
    return s


def quantize(s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One hard label per row drawn with P(y = k) = s_k / sum_j s_j (eq. 1)."""
    cdf = np.cumsum(s, axis=1)
    u = rng.random(len(s)) * cdf[:, -1]
    # first class whose cdf reaches u; a zero-mass class never wins since its cdf equals its predecessor's
    return (cdf < u[:, None]).sum(axis=1).clip(max=s.shape[1] - 1)


def mix_inputs(x: torch.Tensor, src: np.ndarray, *, lam: np.ndarray | None = None,
               masks_of=None) -> torch.Tensor:
    """Mixup (``lam``) or PatchMix (``masks_of(rows) -> (rows, m, H, W)``) of ``x[src]``, in chunks."""
    out = torch.empty((len(src), *x.shape[1:]), dtype=x.dtype)
    for start in range(0, len(src), _CHUNK):
        rows = slice(start, start + _CHUNK)
        parts = x[torch.from_numpy(src[rows])]  # (b, m, C, H, W)
        if lam is not None:
            w = torch.from_numpy(lam[rows]).to(x.dtype)
            out[rows] = torch.einsum("bm,bm...->b...", w, parts)
        else:
            M = torch.from_numpy(masks_of(rows)).to(x.dtype)[:, :, None]  # (b, m, 1, H, W)
            out[rows] = (M * parts).sum(1)
    return out


@register_setting("quantized", kind="quantized", params=QuantizedParams)
def quantized_labels(data: Dataset, params: QuantizedParams, rng: np.random.Generator) -> WeakData:
    """Ambiguous training inputs mixed from m clean ones, each with one quantized label (paper 000 sec. IV, eq. 1)."""
    if data.multilabel:
        raise ConfigError(f"setting='quantized' is not allowed on the multi-label dataset {data.name!r}")
    validate_for(params, data.input_shape)
    x, y = data.x_train, data.y_train.numpy()
    n, m, c = len(y), params.m, data.num_classes
    src = draw_sources(n, n, m, rng)
    if params.mix == "mixup":
        lam = mixup_weights(n, m=m, r=params.r, rng=rng)
        x_mix = mix_inputs(x, src, lam=lam)
    elif params.layout == "grid":
        assign = patch_assignment(n, m=m, grid=params.grid, rng=rng)
        lam = patch_weights(assign, m=m)
        H, W = data.input_shape[1:]
        x_mix = mix_inputs(x, src, masks_of=lambda rows: patch_masks(assign[rows], m=m, height=H, width=W))
    else:
        H, W = data.input_shape[1:]
        cuts = rect_cuts(n, m=m, height=H, width=W, rng=rng)
        pick = lambda rows: {k: v[rows] for k, v in cuts.items()}
        lam = np.concatenate([pixel_masks(rect_assignment(pick(slice(i, i + _CHUNK)), m=m, height=H, width=W), m=m)
                              .mean(axis=(2, 3), dtype=np.float64) for i in range(0, n, _CHUNK)])
        x_mix = mix_inputs(x, src, masks_of=lambda rows: pixel_masks(
            rect_assignment(pick(rows), m=m, height=H, width=W), m=m))
    s = soft_labels(y[src], lam, c)
    y_q = quantize(s, rng)
    entropy = -(s * np.log(np.where(s > 0, s, 1.0))).sum(1)
    return WeakData(
        kind="quantized", num_classes=c, x=x_mix,
        weak={"y": torch.from_numpy(y_q.astype(np.int64))},
        hidden={"s": torch.from_numpy(s.astype(np.float32)), "src": torch.from_numpy(src),
                "lam": torch.from_numpy(lam.astype(np.float32))},
        evals=clean_evals(data),
        info={"m": float(m), "soft_entropy": float(entropy.mean()),
              "label_is_argmax": float((y_q == s.argmax(1)).mean()),
              "mean_s_of_label": float(s[np.arange(n), y_q].mean())},
    )
