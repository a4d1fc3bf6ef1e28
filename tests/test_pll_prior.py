"""Paper 001 issue #13: the eq. 6 convention, the shared prior schedule, the fixed point of
eq. 5, paper 001's class groups, Solar's selection and loss, and bad input before Ray."""

import numpy as np
import pytest
import torch

from weaklab.methods.baselines_pll import solar_selection
from weaklab.methods.pll_reg import regularized_pseudo_labels, update_prior
from weaklab.registry import ConfigError
from weaklab.settings.partial import many_medium_few

BASE = {"dataset": "digits", "setting": "partial", "seed": 0, "setting.gamma": 10.0, "setting.psi": 0.3,
        "train.arch": "mlp", "train.width": 0.05, "train.epochs": 4, "train.batch_size": 64, "train.device": "cpu",
        "hp.flip": False}


def test_never_predicted_class_does_not_decay_geometrically_to_zero():
    n, c = 500, 10
    pred = torch.arange(n) % (c - 1)  # class 9 is never predicted
    for mu in (0.9, 0.99, 0.0):
        r = torch.full((c,), 1.0 / c)
        for _ in range(3000):
            r = update_prior(r=r, pred=pred, mu=mu)
        # the add-one count keeps it at its floor 1/(n + c), not mu^t -> 0
        assert r[9].item() == pytest.approx(1.0 / (n + c), rel=1e-3)
        assert r.sum().item() == pytest.approx(1.0, abs=1e-5)
    # and it never falls below that floor on the way (it starts above it)
    r, lowest = torch.full((c,), 1.0 / c), 1.0
    for _ in range(200):
        r = update_prior(r=r, pred=pred, mu=0.9)
        lowest = min(lowest, r[9].item())
    assert lowest >= 1.0 / (n + c) - 1e-9


def test_presets_and_defaults_put_09_and_099_on_the_old_prior():
    from studies import expand, get_study, resolve
    from weaklab.methods import method_hparams

    for m in ("pll-reg", "solar"):
        hp = method_hparams(m, {})
        assert (hp.mu_pre, hp.mu) == (0.9, 0.99)
    for study in ("pll-compare", "pll-lambda-m", "pll-ablation"):
        for ds, mu_pre in ((None, 0.9), ("cifar10", 0.9), ("cifar100", 0.95)):
            cfgs = [c for c in expand(resolve(get_study(study), dataset=ds)) if c["method"] in ("pll-reg", "solar")]
            assert cfgs and all((c["hp.mu_pre"], c["hp.mu"]) == (mu_pre, 0.99) for c in cfgs)
            # pll-reg and Solar share the prior schedule in every study
            keys = ("hp.pre_epochs", "hp.mu_pre", "hp.mu", "hp.reinit")
            assert len({tuple(c[k] for k in keys) for c in cfgs}) == 1


def test_eq5_fixed_point_on_the_diagonal_and_drift_at_lambda_1():
    """Feeding w back as f: lambda > 1 settles on argmax f0 r^(-M/(lam-1)); lambda = 1, M > 0 drifts to the rarest."""
    r = torch.tensor([0.5, 0.3, 0.15, 0.05])
    S = torch.ones(3, 4)
    f0 = torch.tensor([[0.60, 0.25, 0.10, 0.05],   # f0/r = 1.2, .83, .67, 1.0 -> class 0
                       [0.30, 0.50, 0.15, 0.05],   # 0.6, 1.67, 1.0, 1.0 -> class 1
                       [0.40, 0.30, 0.26, 0.04]])  # 0.8, 1.0, 1.73, 0.8 -> class 2
    expected = (f0 / r).argmax(1)
    for lam in (2.0, 3.0, 4.0):
        f = f0.clone()
        for _ in range(60):
            f = regularized_pseudo_labels(logp=f.log(), S=S, r=r, lam=lam, M=lam - 1)
        assert torch.equal(f.argmax(1), expected) and (f.max(1).values > 0.99).all()
    f = f0.clone()
    for _ in range(200):
        f = regularized_pseudo_labels(logp=f.log(), S=S, r=r, lam=1.0, M=0.5)
    assert (f.argmax(1) == 3).all()  # every sample ends on the rarest candidate


@pytest.mark.parametrize("c,sizes", [(10, (3, 3, 4)), (100, (33, 33, 34)), (3, (1, 1, 1)), (4, (1, 1, 2))])
def test_many_medium_few_is_paper_001s_split(c, sizes):
    rng = np.random.default_rng(0)
    counts = rng.permutation(np.arange(c) * 7 + 5)
    g = many_medium_few(counts)
    assert tuple(torch.bincount(g, minlength=3).tolist()) == sizes
    order = np.argsort(-counts, kind="stable")
    assert g[order].tolist() == sorted(g.tolist())  # groups follow the count order, descending


def test_many_medium_few_rejects_an_empty_group():
    with pytest.raises(ConfigError, match="group"):
        many_medium_few([10, 5])


def test_solar_selection_quota_and_confidence():
    r = torch.tensor([0.6, 0.3, 0.1])
    cls = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    w = torch.nn.functional.one_hot(cls, 3).float()
    loss = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.8, 0.2, 0.7, 0.05, 0.6, 1.0])
    probs = torch.full((10, 3), 1 / 3)
    # quotas: ceil(0.5*10*0.6)=3, ceil(0.5*10*0.3)=2, max(1, ceil(0.5))=1
    sel = solar_selection(loss=loss, w=w, probs=probs, r=r, rho=0.5, tau=0.99)
    assert torch.bincount(cls[sel], minlength=3).tolist() == [3, 2, 1]
    assert set(torch.nonzero(sel & (cls == 0)).flatten().tolist()) == {1, 3, 5}
    # a confident sample (sum_j w_ij f_ij > tau) is selected whatever its rank
    probs[0] = torch.tensor([0.995, 0.004, 0.001])
    assert solar_selection(loss=loss, w=w, probs=probs, r=r, rho=0.5, tau=0.99)[0]


def test_solar_first_epoch_is_proden_and_later_selection_binds():
    from weaklab.engine import run_trial

    sol = run_trial({**BASE, "method": "solar", "hp.rho_start": 0.1, "hp.rho_end": 0.2, "hp.ramp_epochs": 2})
    h = sol.history
    assert h[0]["selected_frac"] == 0.0  # epoch 1 trains on PRODEN's loss only (Solar's code)
    assert 0 < h[-1]["selected_frac"] < 1


def test_oracle_prior_is_the_true_prior_and_fixed():
    from weaklab.engine import build_trial, train

    t, weak, method = build_trial({**BASE, "method": "pll-reg", "hp.oracle_prior": True, "hp.pre_epochs": 1})
    res = train(data=weak, method=method, config=t.train, seed=0)
    y = weak.hidden["y"]
    true_r = torch.bincount(y, minlength=10).float() / len(y)
    assert torch.allclose(method.r, true_r) and res.final["diag_prior_l1"] == pytest.approx(0.0, abs=1e-6)


def test_reinit_with_warmup_restarts_and_ramps():
    from weaklab.engine import run_trial

    cfg = {**BASE, "train.epochs": 5, "method": "pll-reg", "hp.pre_epochs": 2, "hp.reinit": True, "hp.warmup_epochs": 2}
    h = run_trial(cfg).history
    assert [x["stage"] for x in h] == [0, 0, 1, 1, 1]
    assert [x["warmup_eta"] for x in h] == [1.0, 1.0, 0.0, 0.5, 1.0]
    # no re-initialisation: the second stage continues the same network, no warm-up
    h2 = run_trial({**cfg, "hp.reinit": False}).history
    assert all(x["warmup_eta"] == 1.0 for x in h2) and [x["stage"] for x in h2] == [0, 0, 1, 1, 1]


@pytest.mark.parametrize("sets,match", [
    ({"hp.mu": "1.0"}, "hp.mu"), ({"hp.mu_pre": "-0.1"}, "hp.mu_pre"),
    ({"hp.pre_epochs": "2"}, "hp.pre_epochs"),                      # smoke trains 2 epochs
    ({"hp.pre_epochs": "1", "hp.warmup_epochs": "2"}, "hp.warmup_epochs"),
])
def test_prior_schedule_bad_input_fails_before_ray(sets, match):
    import ray

    from weaklab.tune.runner import prepare

    was = ray.is_initialized()
    for study in ("pll-compare", "pll-ablation"):
        with pytest.raises(ConfigError, match=match):
            prepare(study, smoke=True, sets=sets)
    assert ray.is_initialized() == was


def test_empty_group_fails_before_ray():
    import ray

    from weaklab.tune.runner import prepare

    was = ray.is_initialized()
    with pytest.raises(ConfigError, match="3 classes"):
        prepare("pll-ablation", smoke=True, dataset="moons")
    assert ray.is_initialized() == was
