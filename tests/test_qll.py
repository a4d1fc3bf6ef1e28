"""Quantized-label learning (paper 000): the ambiguous-data generator, the CPU risk and the loss baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from weaklab.data import Dataset
from weaklab.methods import METHODS, method_hparams
from weaklab.methods.baselines_qll import bootstrap_loss, gce_loss, js_loss, symmetric_ce
from weaklab.methods.cpu import cpu_class_risks, cpu_risk, draw_alpha, kl_binary_losses, sjs_binary_losses
from weaklab.registry import ConfigError
from weaklab.settings import WeakData, make_weak_data, setting_params
from weaklab.settings.quantized import (mixup_weights, patch_assignment, patch_masks, patch_weights, pixel_masks,
                                        quantize, rect_assignment, rect_cuts, soft_labels)

torch.set_num_threads(1)


def fake_dataset(n=120, c=5, hw=8, ch=1, seed=0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    mk = lambda k: (torch.rand(k, ch, hw, hw, generator=g), torch.arange(k) % c)
    (xtr, ytr), (xva, yva), (xte, yte) = mk(n), mk(30), mk(30)
    return Dataset("fake", xtr, ytr, xva, yva, xte, yte, num_classes=c)


# -- the generator (sec. IV, eq. 1) ---------------------------------------------------------------

def test_quantized_labels_follow_the_soft_labels():
    rng = np.random.default_rng(0)
    s_rows = np.array([[0.7, 0.3, 0, 0], [0.25, 0.25, 0.25, 0.25], [0, 0, 0.1, 0.9], [0, 1.0, 0, 0]])
    reps = 20000
    y = quantize(np.repeat(s_rows, reps, axis=0), rng).reshape(len(s_rows), reps)
    freq = np.stack([np.bincount(row, minlength=4) / reps for row in y])
    assert np.abs(freq - s_rows).max() < 0.015
    assert (freq[s_rows == 0] == 0).all()  # a class without mass is never drawn


@pytest.mark.parametrize("mix,m", [("mixup", 2), ("patchmix", 4), ("mixup", 3)])
def test_setting_soft_labels_sum_to_one_and_match_sources(mix, m, tmp_path, monkeypatch):
    monkeypatch.setenv("WEAKLAB_CACHE", str(tmp_path))
    data = fake_dataset()
    p = setting_params("quantized", {"mix": mix, "m": m, "r": 10, "grid": 4})
    w = make_weak_data(data, "quantized", p, seed=3)
    s, src, lam = w.hidden["s"].double(), w.hidden["src"], w.hidden["lam"].double()
    assert w.kind == "quantized" and w.x.shape == data.x_train.shape
    assert torch.allclose(s.sum(1), torch.ones(len(s), dtype=torch.float64), atol=1e-6)
    assert torch.allclose(lam.sum(1), torch.ones(len(s), dtype=torch.float64), atol=1e-6)
    assert (torch.sort(src, 1).values.diff(dim=1) > 0).all()  # m distinct inputs per mix
    # s is the lambda-weighted one-hot of the sources' clean labels
    expect = torch.zeros_like(s).scatter_add_(1, data.y_train[src], lam)
    assert torch.allclose(s, expect, atol=1e-6)
    # the observed label always has mass under s; val and test are the clean splits
    assert (s.gather(1, w.weak["y"][:, None]) > 0).all()
    assert torch.equal(w.evals["test"][1], data.y_test) and torch.equal(w.evals["test"][0], data.x_test)
    assert w.info["m"] == m
    if mix == "mixup":
        i = 7
        assert torch.allclose(w.x[i], (lam[i, :, None, None, None].float() * data.x_train[src[i]]).sum(0), atol=1e-6)
        assert torch.allclose(lam * 10, (lam * 10).round(), atol=1e-5)  # r * lambda is a count
    # same seed, same data (a pure function of its inputs); another seed differs
    again = make_weak_data(data, "quantized", p, seed=3, cache=False)
    assert torch.equal(again.x, w.x) and torch.equal(again.weak["y"], w.weak["y"])
    other = make_weak_data(data, "quantized", p, seed=4, cache=False)
    assert not torch.equal(other.weak["y"], w.weak["y"])


def test_mixup_weights_are_multinomial_counts():
    lam = mixup_weights(50000, m=4, r=5, rng=np.random.default_rng(1))
    assert np.allclose(lam.sum(1), 1) and np.allclose(lam * 5, np.round(lam * 5))
    assert np.abs(lam.mean(0) - 0.25).max() < 0.01
    # Var(count_i) = r p (1-p)  ->  Var(lambda_i) = p (1-p) / r
    assert abs(lam[:, 0].var() - 0.25 * 0.75 / 5) < 0.003


def test_patchmix_masks_partition_the_image():
    rng = np.random.default_rng(2)
    assign = patch_assignment(64, m=4, grid=4, rng=rng)
    M = patch_masks(assign, m=4, height=32, width=32)
    assert M.shape == (64, 4, 32, 32) and set(np.unique(M)) <= {0.0, 1.0}
    assert (M.sum(1) == 1).all()
    # constant within each 8x8 patch, and lambda is each mask's area
    blocks = M.reshape(64, 4, 4, 8, 4, 8)
    assert (blocks.min(axis=(3, 5)) == blocks.max(axis=(3, 5))).all()
    assert np.allclose(patch_weights(assign, m=4), M.mean(axis=(2, 3)))


def test_patchmix_pixels_come_from_their_patch_source(tmp_path, monkeypatch):
    monkeypatch.setenv("WEAKLAB_CACHE", str(tmp_path))
    data = fake_dataset(ch=3)
    w = make_weak_data(data, "quantized", setting_params("quantized", {"mix": "patchmix", "m": 4, "grid": 2}), seed=0)
    src = w.hidden["src"]
    for i in (0, 11):
        for (r0, c0) in ((0, 0), (0, 4), (4, 0), (4, 4)):
            patch = w.x[i, :, r0:r0 + 4, c0:c0 + 4]
            hits = [j for j in range(4) if torch.equal(patch, data.x_train[src[i, j], :, r0:r0 + 4, c0:c0 + 4])]
            assert hits, "every patch is copied from one of the m inputs"


def test_soft_labels_add_inputs_of_one_class():
    s = soft_labels(np.array([[2, 2], [0, 1]]), np.array([[0.3, 0.7], [0.5, 0.5]]), 3)
    assert np.allclose(s, [[0, 0, 1.0], [0.5, 0.5, 0]])


@pytest.mark.parametrize("values,needle", [
    ({"m": 1}, "setting.m=1"), ({"r": 0}, "setting.r=0"), ({"mix": "cutmix"}, "setting.mix='cutmix'"),
    ({"grid": 0}, "setting.grid=0"), ({"mix": "patchmix", "layout": "stripes"}, "setting.layout='stripes'"),
    ({"mix": "patchmix", "layout": "rect", "m": 5}, "setting.m=5"),
])
def test_bad_setting_params_raise_one_line(values, needle):
    with pytest.raises(ConfigError) as e:
        setting_params("quantized", values)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_grid_that_does_not_divide_the_image_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("WEAKLAB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match=r"setting.grid=3 .*8x8"):
        make_weak_data(fake_dataset(), "quantized", setting_params("quantized", {"mix": "patchmix", "grid": 3}), 0)


@pytest.mark.parametrize("key,value", [("pi1", 0.0), ("pi1", 1.5), ("pi2", -0.1), ("pi2", 2.0)])
def test_bad_priors_raise_one_line(key, value):
    for name in ("cpu", "cpu-kl"):
        with pytest.raises(ConfigError, match=rf"hp.{key}={value!r} .*\(0, 1\]"):
            method_hparams(name, {key: value})


# -- the loss l: scaled stochastic JS (sec. III) --------------------------------------------------

def sjs_reference(P: np.ndarray, Q: np.ndarray, a: float) -> float:
    """D_SJS(P||Q) / Z written out with KL sums, in float64."""
    M = a * P + (1 - a) * Q
    kl = lambda A, B: sum(x * math.log(x / y) for x, y in zip(A, B) if x > 0)
    return (a * kl(P, M) + (1 - a) * kl(Q, M)) / (-(1 - a) * math.log(1 - a))


@pytest.mark.parametrize("alpha", [0.5, 0.3, 0.1, 0.01])
@pytest.mark.parametrize("g", [-6.0, -1.0, 0.0, 0.7, 5.0])
def test_scaled_sjs_matches_the_definition(alpha, g):
    lp, ln = sjs_binary_losses(torch.tensor([g]), alpha=alpha)
    q = 1 / (1 + math.exp(-g))
    assert lp.item() == pytest.approx(sjs_reference(np.array([1.0, 0]), np.array([q, 1 - q]), alpha), rel=1e-4)
    assert ln.item() == pytest.approx(sjs_reference(np.array([0, 1.0]), np.array([q, 1 - q]), alpha), rel=1e-4)


def test_scaled_sjs_limits():
    g = torch.tensor([-3.0, 0.0, 2.0])
    # alpha = 1/2 is JS scaled by 1/(0.5 ln 2); at g = 0 the binary value is known in closed form
    js0 = 0.5 * -math.log(0.75) + 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
    assert sjs_binary_losses(torch.zeros(1), alpha=0.5)[0].item() == pytest.approx(js0 / (0.5 * math.log(2)), rel=1e-5)
    # alpha -> 0 is KL(P||Q), the CPU-KL loss (binary cross-entropy); no cancellation at tiny alpha
    for a in (1e-4, 1e-7):
        lp, ln = sjs_binary_losses(g, alpha=a)
        kp, kn = kl_binary_losses(g)
        assert torch.allclose(lp, kp, rtol=1e-3) and torch.allclose(ln, kn, rtol=1e-3)


def test_alpha_draws_are_the_truncated_beta():
    rng = np.random.default_rng(0)
    a = np.array([draw_alpha(rng) for _ in range(20000)])
    assert a.min() > 0 and a.max() <= 0.5
    # Beta(0.5, 0.5) truncated to (0, 1/2]: P(alpha <= t) = (4/pi) asin(sqrt(t))
    for t in (0.05, 0.2, 0.4):
        assert abs((a <= t).mean() - 4 / math.pi * math.asin(math.sqrt(t))) < 0.015


# -- the CPU risk (eq. 4-5, Algorithm 1) ------------------------------------------------------------

sp = lambda v: math.log1p(math.exp(v))  # softplus: l(g,+1) = sp(-g), l(g,-1) = sp(g) under KL


def test_cpu_risk_hand_computed_positive_branch():
    # two classes, three inputs; labels 0, 0, 1; KL loss (binary cross-entropy)
    g = torch.tensor([[1.0, -1.0], [0.0, 0.5], [-2.0, 2.0]])
    y = torch.tensor([0, 0, 1])
    pi1, pi2 = 0.1, 0.5
    # class 0: P = {0, 1}, U = {2}
    Rp_pos0 = (sp(-1.0) + sp(0.0)) / 2
    Rp_neg0 = (sp(1.0) + sp(0.0)) / 2
    Ru_neg0 = sp(-2.0)
    neg0 = Ru_neg0 - pi2 * Rp_neg0  # 0.1269 - 0.5 * 1.0130 < 0: Algorithm 1's else branch
    assert neg0 < 0
    r0 = -neg0
    # class 1: P = {2}, U = {0, 1}
    Rp_pos1, Rp_neg1 = sp(-2.0), sp(2.0)
    Ru_neg1 = (sp(-1.0) + sp(0.5)) / 2
    neg1 = Ru_neg1 - pi2 * Rp_neg1
    assert neg1 < 0
    risks, negs = cpu_class_risks(*kl_binary_losses(g), y, pi1=pi1, pi2=pi2)
    assert negs.tolist() == pytest.approx([neg0, neg1], rel=1e-5)
    assert risks.tolist() == pytest.approx([r0, -neg1], rel=1e-5)
    # now a prior small enough that class 0 stays on the first branch
    risks, _ = cpu_class_risks(*kl_binary_losses(g), y, pi1=pi1, pi2=0.05)
    assert risks[0].item() == pytest.approx(pi1 * Rp_pos0 + Ru_neg0 - 0.05 * Rp_neg0, rel=1e-5)
    assert cpu_risk(g, y, pi1=pi1, pi2=0.05, alpha=None).item() == pytest.approx(
        risks.mean().item(), rel=1e-6)


def test_cpu_negative_branch_gradient_pushes_the_negative_part_up():
    g = torch.tensor([[3.0, -3.0], [-3.0, 3.0], [-3.0, -3.0]], requires_grad=True)
    y = torch.tensor([0, 1, 1])
    risks, neg = cpu_class_risks(*kl_binary_losses(g), y, pi1=0.1, pi2=0.9)
    assert (neg < 0).all()
    risks.mean().backward()
    grad_risk = g.grad.clone()
    g.grad = None
    _, neg = cpu_class_risks(*kl_binary_losses(g), y, pi1=0.1, pi2=0.9)
    (-neg.mean()).backward()
    assert torch.allclose(grad_risk, g.grad)  # the branch minimises -(R_u^- - pi2 R_p^-), no pi1 term


def test_cpu_class_without_positives_in_the_batch():
    g = torch.zeros(4, 3)
    risks, neg = cpu_class_risks(*kl_binary_losses(g), torch.tensor([0, 0, 1, 1]), pi1=0.1, pi2=0.3)
    assert torch.isfinite(risks).all()
    assert risks[2].item() == pytest.approx(math.log(2))  # only R_u^- remains


# -- the baselines on known values -------------------------------------------------------------------

def test_baseline_losses_known_values():
    z = torch.zeros(2, 4)
    y = torch.tensor([0, 3])
    assert F.cross_entropy(z, y).item() == pytest.approx(math.log(4))
    # GCE: (1 - p^q)/q at p = 1/4; truncated form subtracts L_q(k) for kept samples only
    lq = (1 - 0.25 ** 0.7) / 0.7
    assert gce_loss(z, y, q=0.7).item() == pytest.approx(lq, rel=1e-6)
    w = torch.tensor([1.0, 0.0])
    assert gce_loss(z, y, q=0.7, k=0.5, w=w).item() == pytest.approx((lq - (1 - 0.5 ** 0.7) / 0.7) / 2, rel=1e-6)
    assert gce_loss(z, y, q=1.0).item() == pytest.approx(0.75)  # q = 1: MAE-like 1 - p_y
    # SCE: alpha CE + beta * (-A)(1 - p_y)
    assert symmetric_ce(z, y, alpha=0.1, beta=1.0).item() == pytest.approx(0.1 * math.log(4) + 4 * 0.75, rel=1e-6)
    # hard labels take the closed form; the same labels one-hot take the general one
    zr = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    soft = F.one_hot(y, 4).float()
    assert symmetric_ce(zr, soft, alpha=0.1, beta=1.0).item() == pytest.approx(
        symmetric_ce(zr, y, alpha=0.1, beta=1.0).item(), rel=1e-6)
    # Bootstrap: hard z is the argmax class, beta = 1 is CE
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    logp = F.log_softmax(logits, 1)[0]
    yb = torch.tensor([1])
    assert bootstrap_loss(logits, yb, beta=0.8).item() == pytest.approx(-(0.8 * logp[1] + 0.2 * logp[0]).item(), rel=1e-6)
    assert bootstrap_loss(logits, yb, beta=1.0).item() == pytest.approx(-logp[1].item(), rel=1e-6)
    ent = -(logp.exp() * logp).sum().item()
    assert bootstrap_loss(logits, yb, beta=0.6, mode="soft").item() == pytest.approx(
        -0.6 * logp[1].item() + 0.4 * ent, rel=1e-6)
    # JS: pi1 = 1/2 at uniform p over 2 classes has a closed form; pi1 -> 0 tends to CE
    js0 = 0.5 * -math.log(0.75) + 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
    assert js_loss(torch.zeros(1, 2), torch.tensor([0]), pi1=0.5).item() == pytest.approx(js0 / (0.5 * math.log(2)), rel=1e-5)
    lg = torch.tensor([[1.0, -0.5, 0.3, 2.0]])
    P = np.eye(4)[2]
    Q = F.softmax(lg, 1)[0].double().numpy()
    assert js_loss(lg, torch.tensor([2]), pi1=0.3).item() == pytest.approx(sjs_reference(P, Q, 0.3), rel=1e-4)
    assert js_loss(lg, torch.tensor([2]), pi1=1e-5).item() == pytest.approx(F.cross_entropy(lg, torch.tensor([2])).item(), rel=1e-3)


@pytest.mark.parametrize("name,values,needle", [
    ("gce", {"q": 0.0}, "hp.q=0.0"), ("gce", {"k": 1.0}, "hp.k=1.0"), ("sce", {"A": 1.0}, "hp.A=1.0"),
    ("bootstrap", {"beta": 1.5}, "hp.beta=1.5"), ("bootstrap", {"mode": "x"}, "hp.mode='x'"),
    ("js", {"pi1": 1.0}, "hp.pi1=1.0"),
])
def test_bad_baseline_hparams(name, values, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        method_hparams(name, values)


# -- methods on a tiny model --------------------------------------------------------------------------

def tiny_weak(c=5, m=2) -> WeakData:
    data = fake_dataset(c=c)
    from weaklab.settings.quantized import quantized_labels, QuantizedParams
    return quantized_labels(data, QuantizedParams(m=m), np.random.default_rng(0))


@pytest.mark.parametrize("name", ["cpu", "cpu-kl", "ce", "gce", "sce", "bootstrap", "js"])
def test_methods_train_and_predict(name):
    torch.manual_seed(0)
    weak = tiny_weak()
    cls = METHODS.get(name)
    assert "quantized" in cls.consumes
    m = cls(method_hparams(name, {}), num_classes=5, seed=0)
    m.init_state(weak)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for epoch in range(3):
        for idx in m.batches(weak, epoch, 32):
            loss = m.loss(model, weak, idx, epoch)
            assert loss.dim() == 0 and torch.isfinite(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        extra = m.end_epoch(model, weak, epoch)
        assert all(isinstance(v, float) for v in extra.values())
    p = m.predict(model, weak.evals["test"][0])
    assert torch.allclose(p.sum(1), torch.ones(len(p)), atol=1e-5)
    assert torch.equal(p.argmax(1), model(weak.evals["test"][0]).argmax(1))  # argmax of the class scores
    if name.startswith("cpu"):
        assert m.pi2 == pytest.approx(2 / 5)  # default pi2 = m / c
        assert "nn_branch_frac" in extra


def test_gce_prunes_on_schedule():
    weak = tiny_weak()
    m = METHODS.get("gce")(method_hparams("gce", {"prune_start": 2, "prune_every": 2, "k": 0.5}), num_classes=5)
    m.init_state(weak)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))
    with torch.no_grad():  # a model sure of class 0 everywhere: only label-0 samples pass p_y > k
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([10.0, 0, 0, 0, 0]))
    assert m.end_epoch(model, weak, 0)["gce_kept"] == 1.0  # epoch 1 < prune_start
    kept = m.end_epoch(model, weak, 1)["gce_kept"]  # epoch 2: prune
    assert kept == pytest.approx((weak.weak["y"] == 0).float().mean().item())
    assert torch.equal(m.w, (weak.weak["y"] == 0).float())


def test_m_defaults_to_the_papers_pairing():
    assert setting_params("quantized", {"mix": "mixup"}).m == 2
    assert setting_params("quantized", {"mix": "patchmix"}).m == 4
    assert setting_params("quantized", {"mix": "patchmix", "m": 3}).m == 3


@pytest.mark.parametrize("mix", ["mixup", "patchmix"])
def test_setting_labels_are_draws_from_their_soft_labels(mix):
    """End to end: E[s_y] over draws y ~ s is sum_k s_k^2; the realised mean must agree within noise."""
    from weaklab.settings.quantized import QuantizedParams, quantized_labels

    weak = quantized_labels(fake_dataset(n=3000, c=4), QuantizedParams(mix=mix), np.random.default_rng(5))
    s, y = weak.hidden["s"].double(), weak.weak["y"]
    s_y = s.gather(1, y[:, None]).squeeze(1)
    expect = (s ** 2).sum(1)
    se = (s_y - expect).std() / math.sqrt(len(y))
    assert abs((s_y - expect).mean().item()) < 4 * se.item()
    assert weak.info["mean_s_of_label"] == pytest.approx(s_y.mean().item(), rel=1e-5)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_rect_layout_is_m_contiguous_rectangles_around_a_central_cut(m):
    rng = np.random.default_rng(0)
    cuts = rect_cuts(200, m=m, height=8, width=8, rng=rng)
    assert cuts["cy"].min() >= 2 and cuts["cy"].max() <= 6 and cuts["cx"].min() >= 2 and cuts["cx"].max() <= 6
    assign = rect_assignment(cuts, m=m, height=8, width=8)
    M = pixel_masks(assign, m=m)
    assert np.allclose(M.sum(1), 1.0)
    area = M.mean(axis=(2, 3))
    assert (area > 0).all() and np.allclose(area.sum(1), 1.0)  # every source gets a non-empty piece
    for i in range(20):
        for j in range(m):
            rows, cols = np.nonzero(M[i, j])
            # a rectangle: its bounding box is exactly filled
            assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    if m == 4:  # quadrants around the cut point
        i = 0
        cy, cx = cuts["cy"][i], cuts["cx"][i]
        assert np.isclose(sorted(area[i])[0] * 64, min(cy, 8 - cy) * min(cx, 8 - cx))


def test_rect_layout_setting_weights_are_mask_areas(tmp_path, monkeypatch):
    monkeypatch.setenv("WEAKLAB_CACHE", str(tmp_path))
    data = fake_dataset()
    p = setting_params("quantized", {"mix": "patchmix", "layout": "rect"})
    w = make_weak_data(data, "quantized", p, seed=0)
    lam, src = w.hidden["lam"].numpy(), w.hidden["src"].numpy()
    assert np.allclose(lam.sum(1), 1.0) and ((lam * 64) % 1 < 1e-5).all()
    # pixel for pixel the mixed image is one of its m sources
    x_src = data.x_train[torch.from_numpy(src)]  # (n, m, C, H, W)
    hit = (x_src == w.x[:, None]).all(2).float()  # (n, m, H, W)
    assert (hit.sum(1) >= 1).all()
    grid = make_weak_data(data, "quantized", setting_params("quantized", {"mix": "patchmix"}), seed=0)
    assert not torch.equal(grid.x, w.x)  # the layout reaches the cache key
