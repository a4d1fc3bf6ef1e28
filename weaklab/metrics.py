"""Evaluation metrics, vectorised in torch: accuracy and log-likelihood for single-label
splits, mAP for multi-label ones, each also per class group (many / medium / few)."""

from __future__ import annotations

import torch

Tensor = torch.Tensor
GROUPS = ("many", "medium", "few")


def classification_metrics(probs: Tensor, y: Tensor, class_groups: Tensor | None = None) -> dict[str, float]:
    """``acc`` and ``ll`` (mean log p(y|x), the paper 002 log-likelihood); per group ``acc_<group>``."""
    probs = probs.float()
    pred = probs.argmax(1)
    correct = (pred == y).float()
    ll = torch.log(probs.gather(1, y[:, None]).squeeze(1).clamp_min(1e-12))
    out = {"acc": correct.mean().item(), "ll": ll.mean().item()}
    if class_groups is not None:
        g = class_groups[y]
        for i, name in enumerate(GROUPS):
            mask = g == i
            if mask.any():
                out[f"acc_{name}"] = correct[mask].mean().item()
    return out


def average_precision(scores: Tensor, Y: Tensor) -> Tensor:
    """Per-class average precision ``(K,)`` (NaN for a class without positives); equals
    scikit-learn's ``average_precision_score`` per column when scores have no ties."""
    scores, Y = scores.float(), Y.float()
    order = scores.argsort(dim=0, descending=True)
    Ys = Y.gather(0, order)
    tp = Ys.cumsum(0)
    ranks = torch.arange(1, Y.shape[0] + 1, device=Y.device, dtype=torch.float32)[:, None]
    precision = tp / ranks
    npos = Y.sum(0)
    ap = (precision * Ys).sum(0) / npos.clamp_min(1)
    return torch.where(npos > 0, ap, torch.full_like(ap, float("nan")))


def multilabel_metrics(scores: Tensor, Y: Tensor, class_groups: Tensor | None = None) -> dict[str, float]:
    """``map`` (mean AP over classes with positives) and ``map_<group>`` per class group."""
    ap = average_precision(scores, Y)
    out = {"map": torch.nanmean(ap).item()}
    if class_groups is not None:
        for i, name in enumerate(GROUPS):
            sel = ap[class_groups == i]
            if sel.numel() and not torch.isnan(sel).all():
                out[f"map_{name}"] = torch.nanmean(sel).item()
    return out


def evaluate(probs: Tensor, y: Tensor, class_groups: Tensor | None = None) -> dict[str, float]:
    """Dispatch on the label shape: ``(N,)`` class indices or ``(N, K)`` multi-hot."""
    if y.dim() == 2:
        return multilabel_metrics(probs, y, class_groups)
    return classification_metrics(probs, y, class_groups)
