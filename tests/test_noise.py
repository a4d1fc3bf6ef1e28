import numpy as np
import pytest
import torch

from weaklab.data import load_dataset
from weaklab.registry import ConfigError
from weaklab.settings import make_weak_data, setting_params
from weaklab.settings.noise import NoiseParams, PROTOCOLS, class_rates, redraw_labels


@pytest.mark.parametrize("protocol", list(PROTOCOLS) + ["uniform"])
def test_realised_redraw_rates_match_requested(protocol):
    """cleanlab-style property test: per class, the realised redraw and flip rates are
    within binomial tolerance of the requested r_c and r_c (K-1)/K."""
    K, n = 10, 20_000
    rates = class_rates(NoiseParams(protocol=protocol, rate=0.3), K)
    y = np.repeat(np.arange(K), n)
    noisy, redrawn = redraw_labels(y, rates, K, np.random.default_rng(0))
    for c in range(K):
        sel = y == c
        tol = 4 * np.sqrt(rates[c] * (1 - rates[c]) / n) + 1e-9
        assert abs(redrawn[sel].mean() - rates[c]) <= tol
        assert abs((noisy[sel] != c).mean() - rates[c] * (K - 1) / K) <= tol
        # a redrawn label lands uniformly over all classes
        if rates[c] > 0.2:
            counts = np.bincount(noisy[sel & redrawn], minlength=K) / (sel & redrawn).sum()
            assert np.all(np.abs(counts - 1 / K) < 0.03)


def test_paper_protocol_values():
    assert class_rates(NoiseParams(), 10).tolist() == [0, 0, 0, 0, 0, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert class_rates(NoiseParams(protocol="halved"), 10)[5:].tolist() == [0.1, 0.15, 0.2, 0.25, 0.3]
    assert class_rates(NoiseParams(protocol="increased"), 10)[:3].tolist() == [0, 0, 0.05]
    assert class_rates(NoiseParams(protocol="none"), 10).sum() == 0


def test_same_seed_same_labels_and_splits_corrupted(tmp_path, monkeypatch):
    monkeypatch.setenv("WEAKLAB_CACHE", str(tmp_path))
    ds = load_dataset("digits")
    p = setting_params("noise", {"protocol": "heteroscedastic"})
    a = make_weak_data(ds, "noise", p, seed=3, cache=False)
    b = make_weak_data(ds, "noise", p, seed=3)  # computed then cached
    c = make_weak_data(ds, "noise", p, seed=3)  # read back from the cache
    d = make_weak_data(ds, "noise", p, seed=4, cache=False)
    assert torch.equal(a.weak["y"], b.weak["y"]) and torch.equal(b.weak["y"], c.weak["y"])
    assert not torch.equal(a.weak["y"], d.weak["y"])
    assert torch.equal(a.hidden["y"], ds.y_train)
    # classes 0-4 untouched, noisy test split exists beside the clean one
    clean = ds.y_train < 5
    assert torch.equal(a.weak["y"][clean], ds.y_train[clean])
    assert torch.equal(a.evals["test"][1], ds.y_test)
    assert not torch.equal(a.evals["test_noisy"][1], ds.y_test)
    assert 0.05 < a.info["flip_rate"] < 0.25


def test_generator_leaves_global_rng_alone():
    ds = load_dataset("digits")
    np.random.seed(0)
    torch.manual_seed(0)
    before = (np.random.random(), torch.rand(1).item())
    np.random.seed(0)
    torch.manual_seed(0)
    make_weak_data(ds, "noise", NoiseParams(), seed=0, cache=False)
    assert (np.random.random(), torch.rand(1).item()) == before


@pytest.mark.parametrize("values,match", [({"rate": 1.5}, "setting.rate=1.5"), ({"rate": -0.1}, "setting.rate"),
                                          ({"protocol": "nope"}, "setting.protocol='nope'"),
                                          ({"bogus": 1}, "setting.bogus")])
def test_bad_noise_params(values, match):
    with pytest.raises(ConfigError, match=match):
        setting_params("noise", values)
