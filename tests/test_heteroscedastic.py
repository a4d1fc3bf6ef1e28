import math

import pytest
import torch
from torch.nn import functional as F

from weaklab.methods import METHODS, method_hparams
from weaklab.methods.heteroscedastic import heteroscedastic_log_probs
from weaklab.models import build_model


def test_one_sample_zero_scale_is_the_softmax():
    f = torch.randn(16, 10) * 3
    lp = heteroscedastic_log_probs(f, torch.zeros_like(f), tau=1.0, samples=1)
    assert torch.allclose(lp, F.log_softmax(f, 1), atol=1e-6)


def test_temperature_scales_logits_without_noise():
    f = torch.randn(8, 5)
    lp = heteroscedastic_log_probs(f, torch.zeros_like(f), tau=2.5, samples=3)
    assert torch.allclose(lp, F.log_softmax(f / 2.5, 1), atol=1e-6)


def test_small_tau_approaches_argmax_probabilities():
    """eq. 6: as tau -> 0 the MC softmax average tends to P(argmax_k u_k = c), estimated here
    by counting argmaxes of the same reparametrised samples."""
    torch.manual_seed(0)
    f, sigma = torch.randn(4, 6), torch.rand(4, 6) + 0.5
    S = 4000
    torch.manual_seed(1)
    p = heteroscedastic_log_probs(f, sigma, tau=1e-3, samples=S, chunk=S).exp()
    torch.manual_seed(1)
    eps = torch.randn(6, S, 4).permute(1, 2, 0)  # the same draws, in the function's (K, S, B) layout
    counts = F.one_hot((f + sigma * eps).argmax(-1), 6).float().mean(0)
    assert torch.allclose(p, counts, atol=1e-3)
    assert torch.allclose(p.sum(1), torch.ones(4), atol=1e-5)


def test_tiny_tau_stays_finite_and_normalised():
    f, sigma = torch.randn(32, 10) * 10, torch.rand(32, 10) * 5
    lp = heteroscedastic_log_probs(f, sigma, tau=0.025, samples=1000)
    assert torch.isfinite(lp).all()
    assert torch.allclose(lp.exp().sum(1), torch.ones(32), atol=1e-4)


def test_gradients_flow_to_location_and_scale():
    model = build_model("mlp", in_shape=(1, 8, 8), num_classes=10, head="heteroscedastic", width=0.05)
    f, sigma = model(torch.randn(4, 1, 8, 8))
    assert (sigma > 0).all()
    lp = heteroscedastic_log_probs(f, sigma, tau=0.5, samples=10)
    F.nll_loss(lp, torch.tensor([0, 1, 2, 3])).backward()
    assert model.head.scale.weight.grad.abs().sum() > 0 and model.head.loc.weight.grad.abs().sum() > 0


def test_registered_and_validated():
    assert {"heteroscedastic", "homoscedastic"} <= set(METHODS.names())
    import pytest
    from weaklab.registry import ConfigError

    for values, match in (({"tau": 0}, "hp.tau=0"), ({"tau": -1.0}, "hp.tau"), ({"train_samples": 0}, "hp.train_samples=0"),
                          ({"eval_samples": 0}, "hp.eval_samples"), ({"temperature": 1}, "hp.temperature")):
        with pytest.raises(ConfigError, match=match):
            method_hparams("heteroscedastic", values)


def test_sigma_diagnostic_per_true_class_and_its_rank_correlation():
    """The per-class learned scale is the mean over that class's examples, and its Spearman
    correlation with the realised redraw rate is +1 when sigma grows with the rate, -1 when
    it falls; unseen examples (NaN) are skipped, a constant rate gives NaN."""
    from weaklab.methods.heteroscedastic import sigma_by_class

    y = torch.arange(5).repeat_interleave(4)  # 5 classes, 4 examples each
    redrawn = torch.zeros(20, dtype=torch.bool)
    for c in range(5):
        redrawn[4 * c:4 * c + c] = True  # class c: c of its 4 labels redrawn (rate c / 4)
    sigma = 0.1 * y.float() + 0.5
    sigma[0] = float("nan")  # not yet seen: left out of class 0's mean
    d = sigma_by_class(sigma, y, redrawn, num_classes=5)
    assert [round(d[f"diag_sigma_c{k}"], 6) for k in range(5)] == [0.5, 0.6, 0.7, 0.8, 0.9]
    assert d["diag_sigma_spearman"] == pytest.approx(1.0)
    assert sigma_by_class(-sigma, y, redrawn, num_classes=5)["diag_sigma_spearman"] == pytest.approx(-1.0)
    assert math.isnan(sigma_by_class(sigma, y, torch.zeros(20, dtype=torch.bool), num_classes=5)["diag_sigma_spearman"])
    assert math.isnan(sigma_by_class(sigma, y, None, num_classes=5)["diag_sigma_spearman"])


def test_heteroscedastic_trial_reports_sigma_per_class():
    """A short engine run (no Ray) reports one positive scale per class and a correlation in [-1, 1]."""
    from studies import STUDIES, expand, resolve
    from weaklab.engine import run_trial

    cfg = next(c for c in expand(resolve(STUDIES.get("tau-sweep"), smoke=True)) if c["method"] == "heteroscedastic")
    cfg.update({"train.epochs": 2, "train.arch": "mlp", "train.width": 0.1, "hp.eval_samples": 20})
    res = run_trial(cfg)
    for row in (res.final, res.history[0]):
        sig = [row[f"diag_sigma_c{k}"] for k in range(10)]
        assert all(s > 0 for s in sig)
        assert -1.0 <= row["diag_sigma_spearman"] <= 1.0
