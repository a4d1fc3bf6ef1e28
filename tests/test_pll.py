"""Paper 001 pure parts: the long-tailed partial-label setting, eq. 5 / eq. 1 / eq. 6,
sample selection, Sinkhorn, augmentation, and short trainings through the engine."""

import math

import numpy as np
import pytest
import torch

from weaklab.augment import cutout, mixup, random_translate, strong_augment, weak_augment
from weaklab.data import Dataset
from weaklab.methods import method_hparams
from weaklab.methods.baselines_pll import cc_loss, proden_pseudo_labels, sinkhorn_pseudo_labels
from weaklab.methods.pll_reg import (regularized_pseudo_labels, rho_at, small_loss_selection, update_prior)
from weaklab.registry import ConfigError
from weaklab.settings import make_weak_data, setting_params
from weaklab.settings.partial import candidate_sets, long_tail_indices, long_tail_sizes


def _fake_dataset(n_per_class=200, K=10, superclass=None, name="fake"):
    y = torch.arange(K).repeat_interleave(n_per_class)
    x = torch.rand(len(y), 1, 4, 4)
    return Dataset(name=name, x_train=x, y_train=y, x_val=x[:20], y_val=y[:20], x_test=x[:30], y_test=y[:30],
                   num_classes=K, superclass=superclass)


# -- setting -------------------------------------------------------------------------------------

def test_long_tail_sizes_follow_gamma():
    sizes = long_tail_sizes(n_max=1000, gamma=100, num_classes=10)
    assert sizes[0] == 1000 and sizes[-1] == 10
    exact = 1000 * (100 ** (-1 / 9)) ** np.arange(10)  # geometric: n_1/n_2 = ... = n_{L-1}/n_L
    assert (np.abs(sizes - exact) < 1).all() and (np.diff(sizes) < 0).all()
    assert (long_tail_sizes(n_max=50, gamma=1, num_classes=5) == 50).all()


def test_setting_long_tail_counts_order_and_groups():
    data = _fake_dataset()
    w = make_weak_data(data, "partial", setting_params("partial", {"gamma": 20.0, "psi": 0.3}), 3, cache=False)
    counts = np.bincount(w.hidden["y"].numpy(), minlength=10)
    expected = long_tail_sizes(n_max=200, gamma=20, num_classes=10)
    assert sorted(counts, reverse=True) == list(expected)
    assert counts.max() / counts.min() == pytest.approx(20, rel=0.05)
    assert w.info["realised_gamma"] == pytest.approx(counts.max() / counts.min())
    # the class order is drawn from the seed, not the class index
    other = make_weak_data(data, "partial", setting_params("partial", {"gamma": 20.0, "psi": 0.3}), 4, cache=False)
    assert not np.array_equal(np.argsort(-counts), np.argsort(-np.bincount(other.hidden["y"].numpy(), minlength=10)))
    # many/medium/few as paper 001 defines them: ranks 1..3, 4..6, 7..10 by training count
    order = np.argsort(-counts, kind="stable")
    assert w.class_groups[order].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    # x rows are the kept training images, eval splits stay clean and balanced
    assert w.x.shape[0] == len(w.hidden["y"]) == counts.sum()
    assert torch.equal(w.evals["test"][1], data.y_test)


def test_candidate_sets_flip_rate_and_true_label():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 20000)
    for psi in (0.0, 0.3, 0.5, 1.0):
        S = candidate_sets(y, psi=psi, num_classes=10, rng=rng)
        assert (S[np.arange(len(y)), y] == 1).all()
        wrong = (S.sum() - len(y)) / (len(y) * 9)
        assert abs(wrong - psi) < 0.01


def test_hierarchical_flips_within_superclass_only():
    superclass = torch.arange(20).repeat_interleave(5)  # 100 classes, 20 superclasses
    data = _fake_dataset(n_per_class=20, K=100, superclass=superclass)
    w = make_weak_data(data, "partial", setting_params("partial", {"gamma": 2.0, "psi": 0.5, "hierarchical": True}),
                       0, cache=False)
    S, y = w.weak["S"], w.hidden["y"]
    same = superclass[y][:, None] == superclass[None, :]
    assert (S[~same] == 0).all() and (S[torch.arange(len(y)), y] == 1).all()
    assert abs(w.info["flip_rate"] - 0.5) < 0.05  # rate among the 4 same-superclass wrong labels
    with pytest.raises(ConfigError, match="hierarchical"):
        make_weak_data(_fake_dataset(), "partial", setting_params("partial", {"hierarchical": True}), 0, cache=False)


@pytest.mark.parametrize("key,value", [("gamma", 0.5), ("psi", -0.1), ("psi", 1.5)])
def test_setting_rejects_bad_params(key, value):
    with pytest.raises(ConfigError, match=f"setting.{key}"):
        setting_params("partial", {key: value})


def test_long_tail_indices_deterministic_per_seed():
    y = np.repeat(np.arange(5), 40)
    a, _ = long_tail_indices(y, gamma=4, num_classes=5, rng=np.random.default_rng(1))
    b, _ = long_tail_indices(y, gamma=4, num_classes=5, rng=np.random.default_rng(1))
    assert np.array_equal(a, b)


# -- eq. 5, eq. 1, eq. 6 ------------------------------------------------------------------------

def test_eq5_against_hand_computed_case():
    f = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    S = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    r = torch.tensor([0.6, 0.3, 0.1])
    w = regularized_pseudo_labels(logp=f.log(), S=S, r=r, lam=2.0, M=1.0)
    # row 0: 0.5^2/0.6 = 0.41667, 0.3^2/0.3 = 0.3, class 2 not a candidate
    a, b = 0.25 / 0.6, 0.09 / 0.3
    assert torch.allclose(w[0], torch.tensor([a / (a + b), b / (a + b), 0.0]), atol=1e-6)
    u = torch.tensor([0.01 / 0.6, 0.36 / 0.3, 0.09 / 0.1])
    assert torch.allclose(w[1], u / u.sum(), atol=1e-6)
    # a head class (large r) loses pseudo-label mass as M grows
    w0 = regularized_pseudo_labels(logp=f.log(), S=S, r=r, lam=2.0, M=0.0)
    assert w[1, 0] < w0[1, 0] and w[1, 2] > w0[1, 2]


def test_eq5_with_lambda1_M0_equals_proden():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=g) * 3
    S = (torch.rand(64, 10, generator=g) < 0.4).float()
    S[torch.arange(64), torch.randint(0, 10, (64,), generator=g)] = 1
    r = torch.softmax(torch.randn(10, generator=g), 0)
    logp = torch.log_softmax(logits, 1)
    w_reg = regularized_pseudo_labels(logp=logp, S=S, r=r, lam=1.0, M=0.0)
    w_pro = proden_pseudo_labels(probs=logp.exp(), S=S)
    assert torch.allclose(w_reg, w_pro, atol=1e-6)
    assert torch.allclose(w_reg.sum(1), torch.ones(64)) and (w_reg[S == 0] == 0).all()
    # with a uniform prior M has no effect either (sec. 2.3: balanced PLL degenerates to PRODEN)
    w_uni = regularized_pseudo_labels(logp=logp, S=S, r=torch.full((10,), 0.1), lam=1.0, M=3.0)
    assert torch.allclose(w_uni, w_pro, atol=1e-6)


def test_prior_update_eq6():
    r = torch.full((4,), 0.25)
    pred = torch.tensor([0, 0, 0, 1, 1, 2, 0, 0])  # counts 5, 2, 1, 0; add-one: 6, 3, 2, 1 of 12
    new = update_prior(r=r, pred=pred, mu=0.99)  # mu weighs the OLD prior (eq. 6 as printed)
    assert torch.allclose(new, 0.99 * r + 0.01 * torch.tensor([6.0, 3, 2, 1]) / 12)
    assert torch.allclose(update_prior(r=r, pred=pred, mu=0.0), torch.tensor([6.0, 3, 2, 1]) / 12)
    assert new.sum().item() == pytest.approx(1.0)


def test_rho_ramp():
    kw = dict(rho_start=0.2, rho_end=0.5, ramp_epochs=50)
    assert rho_at(epoch=0, **kw) == pytest.approx(0.2)
    assert rho_at(epoch=25, **kw) == pytest.approx(0.35)
    assert rho_at(epoch=50, **kw) == rho_at(epoch=500, **kw) == pytest.approx(0.5)


def test_sample_selection_counts_and_small_loss():
    # 10 samples: class 0 has 6, class 1 has 3, class 2 has 1
    cls = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    w = torch.nn.functional.one_hot(cls, 3).float()
    loss = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.8, 0.2, 0.7, 0.05, 0.6, 1.0])
    sel = small_loss_selection(loss=loss, w=w, rho=0.2, per="batch")  # quota ceil(0.2*10) = 2 per class
    assert sel.tolist() == [False, True, False, False, False, True, False, True, True, True]
    sel = small_loss_selection(loss=loss, w=w, rho=0.5, per="class")  # ceil(.5*6)=3, ceil(.5*3)=2, 1
    assert torch.bincount(cls[sel], minlength=3).tolist() == [3, 2, 1]
    assert set(torch.nonzero(sel & (cls == 0)).flatten().tolist()) == {1, 3, 5}
    assert small_loss_selection(loss=loss, w=w, rho=1.0).all()


def test_sinkhorn_matches_marginals_and_respects_candidates():
    g = torch.Generator().manual_seed(1)
    n, K = 400, 5
    logp = torch.log_softmax(torch.randn(n, K, generator=g), 1)
    S = (torch.rand(n, K, generator=g) < 0.6).float()
    S[torch.arange(n), torch.randint(0, K, (n,), generator=g)] = 1
    r = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08])
    Q = sinkhorn_pseudo_labels(logp=logp, S=S, r=r, kappa=3.0, iters=200)
    assert torch.allclose(Q.sum(1), torch.ones(n), atol=1e-5) and (Q[S == 0] == 0).all()
    assert torch.allclose(Q.mean(0), r, atol=0.02)
    # an empty class (no candidate anywhere) drops out instead of producing NaN
    S2 = S.clone()
    S2[:, 4] = 0
    S2[S2.sum(1) == 0, 0] = 1
    Q2 = sinkhorn_pseudo_labels(logp=logp, S=S2, r=r, kappa=3.0, iters=20)
    assert torch.isfinite(Q2).all() and (Q2[:, 4] == 0).all()


def test_cc_loss():
    logp = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    S = torch.tensor([[1.0, 0.0, 1.0]])
    assert cc_loss(logp=logp, S=S).item() == pytest.approx(-math.log(0.7), rel=1e-6)


@pytest.mark.parametrize("method,key,value", [
    ("pll-reg", "lam", 0.0), ("pll-reg", "M", -1.0), ("pll-reg", "mu", 1.5), ("pll-reg", "mu", 1.0),
    ("pll-reg", "rho_end", 2.0), ("proden", "rho_start", -0.1), ("solar", "mu_pre", -0.5), ("solar", "mu_pre", 1.0),
    ("solar", "iters", 0), ("solar", "eta", 1.5), ("solar", "tau", 0.0), ("pll-reg", "warmup_epochs", -1),
])
def test_hparams_reject_bad_values(method, key, value):
    with pytest.raises(ConfigError, match=f"hp.{key}="):
        method_hparams(method, {key: value})


# -- augmentation ---------------------------------------------------------------------------------

def test_augmentations_per_sample_and_shape():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    t = random_translate(x, pad=2)
    assert t.shape == x.shape
    # every output is a shifted copy of its own input: the centre 4x4 block survives somewhere
    shifts = set()
    for i in range(16):
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                if torch.equal(t[i, :, 2 + dy:6 + dy, 2 + dx:6 + dx], x[i, :, 2:6, 2:6]):
                    shifts.add((dy, dx))
    assert len(shifts) > 1  # per-sample offsets, not one for the whole batch
    s = strong_augment(x)
    assert s.shape == x.shape and torch.isfinite(s).all() and not torch.equal(s, x)
    assert weak_augment(torch.rand(4, 1, 8, 8), flip=False).shape == (4, 1, 8, 8)
    assert (cutout(torch.ones(5, 1, 16, 16), size=4) == 0).sum(dim=(1, 2, 3)).max() == 16
    xm, tm, lam = mixup(x, torch.eye(16), alpha=4.0, rng=np.random.default_rng(0))
    assert 0 < lam < 1 and torch.allclose(tm.sum(1), torch.ones(16))


# -- through the engine --------------------------------------------------------------------------

BASE = {"dataset": "digits", "setting": "partial", "seed": 0, "setting.gamma": 10.0, "setting.psi": 0.3,
        "train.arch": "mlp", "train.width": 0.05, "train.epochs": 2, "train.batch_size": 64, "train.device": "cpu",
        "hp.flip": False}


def test_pll_reg_lambda1_M0_trains_like_proden():
    from weaklab.engine import run_trial

    reg = run_trial({**BASE, "method": "pll-reg", "hp.lam": 1.0, "hp.M": 0.0})
    pro = run_trial({**BASE, "method": "proden"})
    for a, b in zip(reg.history, pro.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1e-9)
    assert reg.final["label_update_s"] > 0 and "prior_ratio" in reg.final
    # r starts uniform, so in the first epoch M has no effect yet; afterwards the moving prior acts
    pre = run_trial({**BASE, "method": "pll-reg", "hp.lam": 1.0, "hp.M": 2.0, "hp.pre_epochs": 1, "hp.reinit": False})
    assert pre.history[0]["train_loss"] == pytest.approx(pro.history[0]["train_loss"], rel=1e-4)
    assert pre.history[1]["train_loss"] != pytest.approx(pro.history[1]["train_loss"], rel=1e-4)


@pytest.mark.parametrize("method", ["pll-reg", "cc", "solar"])
def test_methods_train_and_report(method):
    from weaklab.engine import run_trial

    # Solar trains its first epoch after each (re)start on PRODEN's loss alone: keep the network
    # so that epoch 2 selects
    extra = {"pll-reg": {"hp.pre_epochs": 1}, "solar": {"hp.pre_epochs": 1, "hp.reinit": False}}.get(method, {})
    res = run_trial({**BASE, "method": method, **extra})
    f = res.final
    for key in ("test_acc", "test_acc_many", "test_acc_medium", "test_acc_few", "label_update_s",
                "diag_pl_acc", "selected_frac"):
        assert key in f and math.isfinite(f[key])
    assert 0 < f["selected_frac"] <= 1
    if extra:  # the pre-estimation stage ends after epoch 1: stage flag flips, r is no longer uniform
        assert [h["stage"] for h in res.history] == [0.0, 1.0]
        assert res.final["prior_ratio"] > 1.0
