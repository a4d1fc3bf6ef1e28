"""Paper 004's other baselines (Co-teaching, T-estimator, LL-R / LL-Ct), the grouped
per-image RandAugment, and BalanceMix's given-positives rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weaklab.augment import RA_OPS, _ra_apply, ra_magnitude, randaugment
from weaklab.data.multilabel import build_digits_multi
from weaklab.methods import METHODS, method_hparams
from weaklab.methods.coteaching import small_loss_instances
from weaklab.methods.large_loss import large_loss_bce, large_loss_mask
from weaklab.methods.t_estimator import anchor_transition, forward_corrected_bce
from weaklab.registry import ConfigError
from weaklab.settings.multilabel_noise import MultilabelNoiseParams, multilabel_noise


# -- RandAugment ------------------------------------------------------------------------------

def test_each_op_matches_torchvision_randaugment():
    """Every op at every sign equals torchvision's own RandAugment op at the same magnitude."""
    from torchvision.transforms import v2

    ra = v2.RandAugment(num_ops=1, magnitude=9)
    space = getattr(ra, "_AUGMENTATION_SPACE", None)
    if space is None or not hasattr(ra, "_apply_image_or_video_transform"):
        pytest.skip("torchvision's RandAugment internals moved")
    x = torch.randint(0, 256, (6, 1, 16, 16), dtype=torch.uint8)
    for op, tv_name in zip(RA_OPS, space):
        mags, signed = space[tv_name]
        m = mags(31, 16, 16)
        ref_mag = float(m[9]) if m is not None and m.ndim > 0 else 0.0
        for sign in ((1.0, -1.0) if signed else (1.0,)):
            ref = ra._apply_image_or_video_transform(x, tv_name, sign * ref_mag, interpolation=ra.interpolation,
                                                     fill=ra._fill)
            assert torch.equal(_ra_apply(op, x, sign * ra_magnitude(op, 9)), ref), (op, sign)


def test_randaugment_draws_per_image_and_keeps_dtype():
    torch.manual_seed(0)
    x = torch.rand(400, 1, 16, 16)
    same = x[:1].expand(400, -1, -1, -1).contiguous()  # one image 400 times
    out = randaugment(same, num_ops=2, magnitude=9)
    assert out.dtype == torch.float32 and out.shape == same.shape and 0 <= out.min() and out.max() <= 1
    distinct = torch.unique(out.flatten(1), dim=0).shape[0]
    assert distinct > 40  # per-image draws: many different results (one draw per 32 would give <= 13)
    u8 = (x * 255).round().to(torch.uint8)
    assert randaugment(u8, num_ops=1).dtype == torch.uint8
    assert torch.equal(randaugment(u8, num_ops=0), u8)
    torch.manual_seed(3)
    a = randaugment(x)
    torch.manual_seed(3)
    assert torch.equal(a, randaugment(x))  # seeded by torch's stream, as the engine seeds it


# -- Co-teaching ----------------------------------------------------------------------------

def test_small_loss_instances_separates_two_modes():
    g = torch.Generator().manual_seed(0)
    losses = torch.cat([torch.rand(300, generator=g) * 0.2, 2 + torch.rand(100, generator=g)])
    p = small_loss_instances(losses)
    assert (p[:300] > 0.5).all() and (p[300:] < 0.5).all()


def test_coteaching_cross_update_and_resume(small_weak):
    """f learns only from g's selection, g only from f's; the peer survives a checkpoint."""
    from weaklab.models import build_model

    hp = method_hparams("coteaching", {"warmup": 0, "mixup": False, "randaug": False})
    m = METHODS.get("coteaching")(hp, num_classes=10, seed=0)
    m.init_state(small_weak)
    torch.manual_seed(0)
    model = build_model("mlp", in_shape=(1, 16, 16), num_classes=10, width=0.1)
    idx = torch.arange(40)
    m.clean_f = torch.ones(small_weak.n, dtype=torch.bool)
    m.clean_g = torch.zeros(small_weak.n, dtype=torch.bool)  # g selected nothing: f has nothing to learn
    assert float(m.loss(model, small_weak, idx, 0).detach()) == 0.0
    peer_before = [p.detach().clone() for p in m.peer.parameters()]
    m.clean_f = torch.zeros(small_weak.n, dtype=torch.bool)  # f selected nothing: g must not move
    m.clean_g[:10] = True
    loss = m.loss(model, small_weak, idx, 0)
    assert all(torch.equal(a, b) for a, b in zip(peer_before, m.peer.parameters()))
    from weaklab.methods.balancemix import weighted_bce

    torch.testing.assert_close(loss, weighted_bce(logits=model(small_weak.x[:10]), target=small_weak.weak["Y"][:10]))
    # the peer (weights and optimizer) is restored from a checkpoint when it is rebuilt
    state = m.state_dict()
    m2 = METHODS.get("coteaching")(hp, num_classes=10, seed=1)
    m2.init_state(small_weak)
    m2.load_state_dict(state)
    m2._make_peer(model)
    assert all(torch.equal(a, b) for a, b in zip(m2.peer.state_dict().values(), state["peer"].values()))
    assert m2.peer_opt.state_dict()["state"].keys() == state["peer_opt"]["state"].keys()


@pytest.fixture(scope="module")
def small_weak():
    d = build_digits_multi(n_train=200, n_val=60, n_test=60, split_seed=0)
    return multilabel_noise(d, MultilabelNoiseParams(noise="mislabel", rho=0.4), np.random.default_rng(0))


# -- T-estimator -----------------------------------------------------------------------------

def test_anchor_transition_recovers_flip_rates():
    """Noisy posteriors ρ⁻ + (ρ⁺ - ρ⁻) P(y=1|x) with confident clean posteriors give back ρ⁺, ρ⁻."""
    rng = np.random.default_rng(0)
    clean = (rng.random((5000, 3)) < 0.3).astype(np.float32)
    rho_p, rho_m = torch.tensor([0.9, 0.6, 1.0]), torch.tensor([0.05, 0.2, 0.0])
    noisy = rho_m + (rho_p - rho_m) * torch.from_numpy(clean)
    p, m = anchor_transition(noisy, quantile=0.97)
    torch.testing.assert_close(p, rho_p)
    torch.testing.assert_close(m, rho_m)
    # a degenerate estimate keeps ρ⁺ above ρ⁻
    p, m = anchor_transition(torch.full((10, 2), 0.5), quantile=0.97)
    assert (p >= m + 0.05 - 1e-6).all()


def test_forward_correction_is_bce_under_identity_and_flattens_under_noise():
    z = torch.randn(8, 4)
    y = (torch.rand(8, 4) > 0.5).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none").sum(1).mean()
    torch.testing.assert_close(forward_corrected_bce(logits=z, target=y, rho_plus=torch.ones(4),
                                                     rho_minus=torch.zeros(4)), bce, rtol=1e-4, atol=1e-4)
    # with ρ⁺ = 0.7 (30 % of positives given as 0) a confident positive given as 0 costs at
    # most -log(0.3): forward correction caps the loss of a likely flipped label
    big = torch.full((1, 1), 8.0)
    corrected = forward_corrected_bce(logits=big, target=torch.zeros(1, 1), rho_plus=torch.zeros(1) + 0.7,
                                      rho_minus=torch.zeros(1))
    assert float(corrected) == pytest.approx(-np.log(0.3), abs=1e-3)
    assert corrected < 0.2 * torch.nn.functional.binary_cross_entropy_with_logits(big, torch.zeros(1, 1))


# -- LL-R / LL-Ct ---------------------------------------------------------------------------

def test_large_loss_mask_picks_top_candidates_only():
    losses = torch.tensor([[5.0, 1.0, 9.0], [3.0, 8.0, 0.5]])
    cand = torch.tensor([[True, True, False], [True, True, True]])
    mask = large_loss_mask(losses, cand, rate=2 / 6)  # k = 2: 8.0 and 5.0 (9.0 is not a candidate)
    assert mask.tolist() == [[True, False, False], [False, True, False]]
    assert not large_loss_mask(losses, cand, rate=0.0).any()


def test_ll_reject_and_correct():
    z = torch.tensor([[4.0, -4.0], [0.0, 3.0]])
    y = torch.tensor([[0.0, 0.0], [1.0, 0.0]])  # large negatives: (0,0) with z=4 and (1,1) with z=3
    plain, frac0 = large_loss_bce(logits=z, target=y, rate=0.0, mode="reject")
    rej, frac = large_loss_bce(logits=z, target=y, rate=0.5, mode="reject")
    cor, _ = large_loss_bce(logits=z, target=y, rate=0.5, mode="correct")
    f = torch.nn.functional.softplus
    assert float(frac0) == 0.0 and float(frac) == 0.5
    torch.testing.assert_close(rej, (f(torch.tensor(-4.0)) + f(torch.tensor(0.0))) / 2)  # kept: (0,1), (1,0)
    torch.testing.assert_close(cor, (f(torch.tensor(-4.0)) + f(torch.tensor(-4.0)) + f(torch.tensor(0.0))
                                     + f(torch.tensor(-3.0))) / 2)  # the two large ones against label 1
    assert cor < plain and rej < plain


@pytest.mark.parametrize("method, values, fragment", [
    ("coteaching", {"peer_optimizer": "rmsprop"}, "hp.peer_optimizer='rmsprop'"),
    ("coteaching", {"peer_lr": 0}, "hp.peer_lr=0"), ("coteaching", {"warmup": -1}, "hp.warmup=-1"),
    ("coteaching", {"peer_epochs": -2}, "hp.peer_epochs=-2"),
    ("t-estimator", {"anchor_quantile": 0.4}, "hp.anchor_quantile=0.4"), ("t-estimator", {"warmup": 0}, "hp.warmup=0"),
    ("ll-r", {"delta_rel": -0.1}, "hp.delta_rel=-0.1"), ("ll-ct", {"mixup_alpha": 0}, "hp.mixup_alpha=0"),
    ("bce", {"ra_ops": -1}, "hp.ra_ops=-1"),
])
def test_bad_baseline_hparams_are_one_line_errors(method, values, fragment):
    with pytest.raises(ConfigError) as e:
        method_hparams(method, values)
    assert fragment in str(e.value) and "\n" not in str(e.value)


# -- BalanceMix: given positives under single positive labels --------------------------------

@pytest.mark.parametrize("positives, kept", [("auto", True), ("clean", True), ("managed", False)])
def test_single_positive_given_positives_kept_clean(positives, kept):
    d = build_digits_multi(n_train=300, n_val=60, n_test=60, split_seed=0)
    weak = multilabel_noise(d, MultilabelNoiseParams(noise="missing"), np.random.default_rng(0))
    m = METHODS.get("balancemix")(method_hparams("balancemix", {"warmup": 0, "positives": positives,
                                                                "delta": 0.55}), num_classes=10, seed=0)
    m.init_state(weak)
    from weaklab.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", in_shape=(1, 16, 16), num_classes=10, width=0.1)
    m.end_epoch(model, weak, 0)
    pos = weak.weak["Y"] > 0.5
    assert m.keep_positives == kept
    if kept:  # every given positive is clean, weight 1, never re-labelled to 0
        assert (m.p_G[pos] == 1).all() and (m.W[pos] == 1).all() and (m.Y_ref[pos] == 1).all()
    else:  # the literal eq. 8: the positive GMM splits the given positives
        assert (m.p_G[pos] < 0.5).any()
    # multi-positive labels: 'auto' manages positives like negatives
    multi = multilabel_noise(d, MultilabelNoiseParams(noise="mislabel"), np.random.default_rng(0))
    m2 = METHODS.get("balancemix")(method_hparams("balancemix", {"positives": "auto"}), num_classes=10, seed=0)
    m2.init_state(multi)
    assert not m2.keep_positives
