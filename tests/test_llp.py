"""Unit tests of paper 003 (PLOT): bags setting, DLLP loss, SCE, OT solvers vs POT, the method glue."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weaklab.data import Dataset
from weaklab.methods.baselines_qll import symmetric_ce
from weaklab.methods.plot import PLOT, PLOTHparams, dllp_loss, flip_crop
from weaklab.ot import bag_counts, bag_layout, ot_pseudo_labels, pot_plans, sinkhorn_batched, ssp_batched
from weaklab.registry import ConfigError
from weaklab.settings import make_weak_data, setting_params
from weaklab.settings.bags import BagParams, label_proportion_bags

torch.set_num_threads(1)


def toy_dataset(n: int = 203, K: int = 4, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 2, 2, generator=g)
    y = torch.randint(0, K, (n,), generator=g)
    return Dataset(name="toy", x_train=x, y_train=y, x_val=x[:20], y_val=y[:20], x_test=x[:20], y_test=y[:20],
                   num_classes=K)


def random_bags_case(B: int, n: int, K: int, *, seed: int, equal: bool = False):
    """Random bags (sizes 1..n unless equal), labels, exact proportions and sharp-ish log-probabilities."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.full((B,), n) if equal else torch.randint(1, n + 1, (B,), generator=g)
    bag = torch.repeat_interleave(torch.arange(B), sizes)
    y = torch.randint(0, K, (bag.numel(),), generator=g)
    props = torch.zeros(B, K, dtype=torch.float64).index_put_((bag, y), torch.ones(len(y), dtype=torch.float64),
                                                              accumulate=True) / sizes[:, None]
    logits = 2 * torch.randn(len(y), K, generator=g, dtype=torch.float64) + 2 * torch.nn.functional.one_hot(y, K)
    return bag, props, torch.log_softmax(logits, 1)


# -- setting ------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol,drop_last", [("random", False), ("random", True), ("dirichlet", False),
                                                ("dirichlet", True)])
def test_bags_disjoint_with_exact_proportions(protocol, drop_last):
    data = toy_dataset()
    params = BagParams(bag_size=16, protocol=protocol, drop_last=drop_last, alpha=0.5)
    w = label_proportion_bags(data, params, np.random.default_rng(3))
    bag, props, y = w.weak["bag"], w.weak["proportions"], w.hidden["y"]
    B = props.shape[0]
    sizes = torch.bincount(bag, minlength=B)
    assert (sizes[:-1] == 16).all() and 1 <= sizes[-1] <= 16
    assert w.n == (203 // 16) * 16 if drop_last else w.n == 203
    # disjoint: every training image appears at most once (rows of x are distinct random points)
    assert torch.unique(w.x.reshape(w.n, -1), dim=0).shape[0] == w.n
    counts = torch.zeros(B, 4).index_put_((bag, y), torch.ones(w.n), accumulate=True)
    assert torch.allclose(props * sizes[:, None], counts, atol=1e-5)
    # the hidden labels really are the labels of the stored images
    lookup = {tuple(r.tolist()): int(c) for r, c in zip(data.x_train.reshape(203, -1), data.y_train)}
    assert all(lookup[tuple(r.tolist())] == int(c) for r, c in zip(w.x.reshape(w.n, -1), y))


def test_bags_pure_function_of_rng_and_dirichlet_skews():
    data = toy_dataset(n=800)
    a = label_proportion_bags(data, BagParams(bag_size=32), np.random.default_rng(1))
    b = label_proportion_bags(data, BagParams(bag_size=32), np.random.default_rng(1))
    assert torch.equal(a.x, b.x) and torch.equal(a.weak["proportions"], b.weak["proportions"])
    d = label_proportion_bags(data, BagParams(bag_size=32, protocol="dirichlet", alpha=0.1),
                              np.random.default_rng(1))
    assert d.info["bag_purity"] > a.info["bag_purity"] + 0.2  # small alpha -> nearly pure bags


def test_bag_size_errors_are_one_line():
    with pytest.raises(ConfigError, match=r"setting.bag_size=0"):
        setting_params("bags", {"bag_size": 0})
    with pytest.raises(ConfigError, match=r"setting.bag_size=500.*203") as e:
        make_weak_data(toy_dataset(), "bags", BagParams(bag_size=500), 0, cache=False)
    assert "\n" not in str(e.value)


# -- losses -------------------------------------------------------------------------------

def test_dllp_loss_hand_case():
    # bag 0: two instances with probs (0.5,0.5) and (1,0) -> mean (0.75, 0.25); proportions (0.5, 0.5)
    # bag 1: one instance with probs (0.2, 0.8); proportions (0, 1)
    probs = torch.tensor([[0.5, 0.5], [1.0 - 1e-9, 1e-9], [0.2, 0.8]])
    logits = probs.log()
    bag = torch.tensor([0, 0, 1])
    props = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    want = ((-0.5 * math.log(0.75) - 0.5 * math.log(0.25)) + (-math.log(0.8))) / 2
    assert dllp_loss(logits, bag, props).item() == pytest.approx(want, rel=1e-5)


def test_symmetric_ce_one_hot_hand_case():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    p = torch.softmax(logits, 1)[0]
    q = torch.tensor([[1.0, 0.0, 0.0]])
    # L_CE = -log p_0 ; L_RCE = -(p_0 log 1 + (p_1 + p_2) A) with A = -4
    want = 0.1 * -math.log(p[0]) + 1.0 * 4.0 * (p[1] + p[2])
    assert symmetric_ce(logits, q, alpha=0.1, beta=1.0, A=-4.0).item() == pytest.approx(want.item(), rel=1e-5)


def test_flip_crop_keeps_shape_and_pixels():
    x = torch.rand(6, 3, 8, 8)
    out = flip_crop(x, pad=2)
    assert out.shape == x.shape
    # every output pixel is an input pixel or zero padding
    assert torch.isin(out[out != 0], x).all()


# -- OT -----------------------------------------------------------------------------------

@pytest.mark.parametrize("B,n,K,equal", [(12, 9, 3, False), (6, 32, 10, True), (3, 20, 25, False)])
def test_ssp_exact_equals_pot(B, n, K, equal):
    bag, props, logp = random_bags_case(B, n, K, seed=B + n + K, equal=equal)
    lay = bag_layout(bag)
    plan = pot_plans(logp[lay.index], lay.mask, props, lam=None)
    labels = ssp_batched(-logp[lay.index], lay.mask, bag_counts(props, lay.sizes))
    pot_labels = torch.where(lay.mask, plan.argmax(2), -1)
    assert torch.equal(labels, pot_labels)  # unique optimum a.s. for continuous costs
    obj = lambda lab: -logp[lay.index].gather(2, lab.clamp_min(0)[..., None]).squeeze(2)[lay.mask].sum()
    assert obj(labels).item() == pytest.approx(obj(pot_labels).item(), abs=1e-9)


@pytest.mark.parametrize("lam", [1.0, 3.0])
def test_sinkhorn_batched_equals_pot(lam):
    bag, props, logp = random_bags_case(10, 12, 4, seed=7)
    lay = bag_layout(bag)
    ours, err = sinkhorn_batched(logp[lay.index], lay.mask, props, lam=lam, tol=1e-9, max_iter=5000)
    ref = pot_plans(logp[lay.index], lay.mask, props, lam=lam, max_iter=5000, tol=1e-11)
    assert err.max().item() < 1e-6
    assert (ours - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("solver", ["batched", "pot"])
def test_hard_labels_meet_counts_exactly_soft_within_tolerance(solver):
    bag, props, logp = random_bags_case(8, 16, 5, seed=11)
    lay = bag_layout(bag)
    counts = bag_counts(props, lay.sizes).double()
    q = ot_pseudo_labels(logp, lay, props, lam=None, solver=solver)
    assert ((q == 0) | (q == 1)).all() and torch.allclose(q.sum(1), torch.ones(len(q), dtype=q.dtype))
    per_bag = torch.zeros_like(counts).index_add_(0, bag, q)
    assert torch.equal(per_bag, counts)
    qs = ot_pseudo_labels(logp, lay, props, lam=5.0, solver=solver, tol=1e-6)
    assert torch.allclose(qs.sum(1), torch.ones(len(qs), dtype=qs.dtype))
    per_bag = torch.zeros_like(counts).index_add_(0, bag, qs)
    # our Sinkhorn stops on this very error; POT's stopping rule is looser (its own norm, 2000 iterations)
    assert (per_bag - counts).abs().max().item() < 16 * (1e-5 if solver == "batched" else 1e-3)
    assert ((qs > 0) & (qs < 1)).any()  # soft: mass is split


def test_ot_labels_beat_argmax_on_proportions():
    """The point of eq. 4: argmax labels break the proportions, OT labels keep them."""
    bag, props, logp = random_bags_case(8, 32, 5, seed=2)
    lay = bag_layout(bag)
    counts = bag_counts(props, lay.sizes).double()
    argmax = torch.nn.functional.one_hot(logp.argmax(1), 5).double()
    off = (torch.zeros_like(counts).index_add_(0, bag, argmax) - counts).abs().sum()
    assert off > 0


# -- hyperparameters and the method glue ---------------------------------------------------

def test_plot_hparam_errors():
    with pytest.raises(ConfigError, match="hp.stage1_epochs=0.*first-stage model"):
        PLOTHparams(stage1_epochs=0)
    with pytest.raises(ConfigError, match="hp.lam=0"):
        PLOTHparams(stage1_epochs=2, lam=0.0)
    with pytest.raises(ConfigError, match="hp.stage1_checkpoint='/nonexistent'"):
        PLOTHparams(stage1_checkpoint="/nonexistent")


@pytest.mark.parametrize("student_init", ["teacher", "scratch"])
def test_plot_from_checkpoint_starts_at_teacher_with_its_ot_labels(tmp_path, student_init):
    """A loaded teacher gives stage two's first Q at ``begin``, and the engine gets its
    weights as a stage switch (none for a scratch student); the student is never touched."""
    from weaklab.models import build_model

    data = label_proportion_bags(toy_dataset(n=64), BagParams(bag_size=8), np.random.default_rng(0))
    teacher = build_model("mlp", in_shape=(1, 2, 2), num_classes=4, width=0.05)
    torch.save({"model": teacher.state_dict()}, tmp_path / "state.pt")
    m = PLOT(PLOTHparams(stage1_checkpoint=str(tmp_path), mixup=False, student_init=student_init),
             num_classes=4, seed=0)
    m.init_state(data)
    assert m.stage_switches() == {}
    student = build_model("mlp", in_shape=(1, 2, 2), num_classes=4, width=0.05)
    start = {k: v.clone() for k, v in student.state_dict().items()}
    switch = m.begin(student, data)
    assert all(torch.equal(student.state_dict()[k], v) for k, v in start.items())
    if student_init == "teacher":
        assert switch.load.keys() == teacher.state_dict().keys()
        assert all(torch.equal(switch.load[k], v) for k, v in teacher.state_dict().items())
    else:
        assert switch is None
    idx = next(iter(m.batches(data, 0, 16)))
    assert torch.isfinite(m.loss(student, data, idx, 0))
    with torch.no_grad():
        logp = torch.log_softmax(teacher(data.x), 1)
    want = ot_pseudo_labels(logp, m.layout, data.weak["proportions"], lam=None, solver="pot")
    assert torch.equal(m.q, want)


def test_two_moons_gives_the_papers_40_bags_of_50():
    from weaklab.data import load_dataset
    from weaklab.models import build_model

    d = load_dataset("moons")
    assert d.x_train.shape == (2000, 1, 1, 2) and d.num_classes == 2
    assert 0.0 <= float(d.x_train.min()) and float(d.x_train.max()) <= 1.0
    w = label_proportion_bags(d, BagParams(bag_size=50), np.random.default_rng(0))
    assert w.weak["proportions"].shape == (40, 2) and w.n == 2000
    assert build_model("mlp3", in_shape=d.input_shape, num_classes=2)(d.x_val).shape == (500, 2)


def test_dllp_diagnostic_ot_every_k_epochs():
    from weaklab.methods.plot import DLLP, DLLPHparams
    from weaklab.models import build_model

    data = label_proportion_bags(toy_dataset(n=64), BagParams(bag_size=8), np.random.default_rng(0))
    model = build_model("mlp", in_shape=(1, 2, 2), num_classes=4, width=0.05)
    m = DLLP(DLLPHparams(track_ot_every=3), num_classes=4, seed=0)
    m.init_state(data)
    solved = []
    for epoch in range(6):
        out = m.end_epoch(model, data, epoch)
        diag = m.diagnostics(data)
        solved.append(not math.isnan(out["ot_s"]))
        assert math.isnan(diag["diag_ot_acc"]) != solved[-1]
    assert solved == [False, False, True, False, False, True]  # epochs 3 and 6
    with pytest.raises(ConfigError, match=r"hp.track_ot_every=0 "):
        DLLPHparams(track_ot_every=0)
