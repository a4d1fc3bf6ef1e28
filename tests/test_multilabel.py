"""Paper 004 (BalanceMix) pure parts: data, noise protocols, sampler, mixing, GMMs, mAP, methods."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from weaklab.data import load_dataset
from weaklab.data.multilabel import VOC_CLASSES, build_digits_multi, compose_mosaics, long_tail_probs
from weaklab.methods import METHODS, method_hparams
from weaklab.methods.balancemix import (
    BalanceMixHparams, class_confidences, clean_posterior, fit_gmm_1d, instance_scores, label_weights, mix_lambda,
    relabel, sampling_probs,
)
from weaklab.methods.baselines_multilabel import asymmetric_loss
from weaklab.metrics import multilabel_metrics
from weaklab.registry import ConfigError
from weaklab.settings import make_weak_data, setting_params
from weaklab.settings.multilabel_noise import (
    MultilabelNoiseParams, mislabel, mislabel_rates, multilabel_noise, random_flip, single_positive,
)


@pytest.fixture(scope="module")
def small_multi():
    return build_digits_multi(n_train=400, n_val=150, n_test=150, split_seed=0)


def _long_tail_labels(n=20000, K=6, seed=0):
    rng = np.random.default_rng(seed)
    q = np.linspace(0.6, 0.08, K)  # per-class presence probability: unequal N_i
    return (rng.random((n, K)) < q).astype(np.float32)


# -- data ---------------------------------------------------------------------------------

def test_digits_multi_is_multilabel_long_tailed_and_seeded(small_multi):
    d = small_multi
    assert d.multilabel and d.num_classes == 10 and d.x_train.shape[1:] == (1, 16, 16)
    assert d.y_train.shape == (400, 10) and set(d.y_train.unique().tolist()) <= {0.0, 1.0}
    assert (d.y_train.sum(1) >= 1).all()  # every mosaic holds at least one digit
    counts = d.y_train.sum(0)
    assert counts[0] > 4 * counts[9] > 0  # class imbalance (ratio 20 in draw probabilities)
    assert d.y_train.sum(1).mean() < 5  # positive-negative imbalance: few positives of 10
    again = build_digits_multi(n_train=400, n_val=150, n_test=150, split_seed=0)
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.y_train, d.y_train)
    assert not torch.equal(build_digits_multi(n_train=400, n_val=150, n_test=150, split_seed=1).y_train, d.y_train)
    flat = build_digits_multi(n_train=400, n_val=150, n_test=150, imbalance_ratio=1.0).y_train.sum(0)
    assert flat.max() / flat.min() < counts.max() / counts.min()  # the ratio is configurable
    with pytest.raises(ConfigError, match="imbalance_ratio=0.5"):
        build_digits_multi(imbalance_ratio=0.5)


def test_digits_multi_cells_has_vocs_imbalances():
    from weaklab.settings.multilabel_noise import imbalance_ratios

    base, cells = load_dataset("digits-multi"), load_dataset("digits-multi-cells")
    assert cells.num_classes == 40 and cells.y_train.shape == (3000, 40) and cells.class_names[13] == "3@1"
    r0, r1 = imbalance_ratios(base.y_train.numpy()), imbalance_ratios(cells.y_train.numpy())
    # the figures of the module docstring: PN_Imb 3.7 -> 13.4 (VOC ~13), CLS_Imb ~14 for both
    assert abs(r0["pn_imb"] - 3.7) < 0.1 and abs(r1["pn_imb"] - 13.4) < 0.1
    assert abs(r0["cls_imb"] - 14.4) < 0.1 and abs(r1["cls_imb"] - 14.1) < 0.1
    # the same mosaics label by (digit, cell): folding the cells gives the digit set back
    rebuilt = build_digits_multi(labeling="digit-cell", empty_prob=0.4, imbalance_ratio=12.0)
    digits = build_digits_multi(labeling="digit", empty_prob=0.4, imbalance_ratio=12.0)
    assert torch.equal(rebuilt.x_train, digits.x_train)
    assert torch.equal(rebuilt.y_train.view(-1, 4, 10).amax(1), digits.y_train)
    with pytest.raises(ConfigError, match="labeling='cell'"):
        build_digits_multi(labeling="cell")


def test_mosaic_labels_match_cells():
    rng = np.random.default_rng(0)
    imgs = np.stack([np.full((2, 2), k + 1.0) for k in range(3)])  # class k's image is filled with k+1
    x, Y = compose_mosaics(imgs, np.arange(3), n=50, grid=2, empty_prob=0.4, class_probs=long_tail_probs(3, 4.0),
                           rng=rng)
    present = np.stack([np.isin(np.arange(1, 4), np.unique(xi)) for xi in x])
    assert np.array_equal(present.astype(np.float32), Y)
    np.testing.assert_allclose(long_tail_probs(10, 20.0)[0] / long_tail_probs(10, 20.0)[-1], 20.0)


# -- noise protocols --------------------------------------------------------------------------

def test_eq11_rates_rows_sum_to_rho_and_are_realised():
    Y = _long_tail_labels()
    rho = 0.4
    T = mislabel_rates(Y.sum(0), rho)
    np.testing.assert_allclose(T.sum(1), rho, rtol=1e-12)
    assert np.all(np.diag(T) == 0)
    N, Ni = Y.sum(), Y.sum(0)
    np.testing.assert_allclose(T[0, 3], rho * Ni[3] / (N - Ni[0]))
    noisy, moves = mislabel(Y, rho, np.random.default_rng(1))
    realised = moves / Ni[:, None]
    se = np.sqrt(T * (1 - T) / Ni[:, None])
    assert np.all(np.abs(realised - T) < 5 * se + 1e-9)
    np.testing.assert_allclose(realised.sum(1), rho, atol=5 * np.sqrt(rho * (1 - rho) / Ni).max())
    # every moved positive leaves its class: the dropped share of class i equals its row sum
    dropped = ((Y > 0.5) & (noisy < 0.5)).sum(0)
    assert np.all(dropped <= moves.sum(1))
    assert np.all(noisy[Y.sum(1) > 0].sum(1) >= 1)  # a move keeps at least one positive


def test_random_flip_rates():
    Y = _long_tail_labels(n=10000)
    noisy = random_flip(Y, 0.2, np.random.default_rng(2))
    pos, neg = Y > 0.5, Y < 0.5
    assert abs((noisy[pos] < 0.5).mean() - 0.2) < 0.01
    assert abs((noisy[neg] > 0.5).mean() - 0.2) < 0.01
    assert np.array_equal(random_flip(Y, 0.0, np.random.default_rng(0)), Y)


def test_single_positive_keeps_one_uniform_positive():
    Y = np.zeros((6000, 4), np.float32)
    Y[:, :3] = 1  # three positives each; last class never positive
    Y[:5] = 0  # instances without positives stay empty
    out = single_positive(Y, np.random.default_rng(3))
    assert np.all(out[5:].sum(1) == 1) and np.all(out[:5] == 0)
    assert np.all(out <= Y)
    share = out[5:, :3].mean(0)
    np.testing.assert_allclose(share, 1 / 3, atol=0.03)


def test_setting_is_seeded_pure_and_keeps_truth_hidden(small_multi):
    p = MultilabelNoiseParams(noise="mislabel", rho=0.4)
    a = multilabel_noise(small_multi, p, np.random.default_rng(5))
    b = multilabel_noise(small_multi, p, np.random.default_rng(5))
    assert a.kind == "multilabel" and torch.equal(a.weak["Y"], b.weak["Y"])
    assert torch.equal(a.hidden["Y"], small_multi.y_train)
    assert not torch.equal(a.weak["Y"], small_multi.y_train)
    assert torch.equal(a.evals["test"][1], small_multi.y_test)  # evaluation labels are clean
    assert a.class_groups.shape == (10,) and a.class_groups[0] == 0 and a.class_groups[9] == 2
    assert abs(a.info["pos_error_rate"] - 0.4) < 0.08
    miss = multilabel_noise(small_multi, MultilabelNoiseParams(noise="missing"), np.random.default_rng(0))
    assert (miss.weak["Y"].sum(1) == 1).all()
    cached = make_weak_data(small_multi, "multilabel-noise", p, 5)
    assert torch.equal(make_weak_data(small_multi, "multilabel-noise", p, 5).weak["Y"], cached.weak["Y"])


@pytest.mark.parametrize("values, fragment", [
    ({"noise": "swap"}, "setting.noise='swap'"),
    ({"rho": 1.5}, "setting.rho=1.5"),
    ({"rho": -0.1}, "setting.rho=-0.1"),
])
def test_bad_setting_params_are_one_line_errors(values, fragment):
    with pytest.raises(ConfigError) as e:
        setting_params("multilabel-noise", values)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_single_label_dataset_is_rejected():
    with pytest.raises(ConfigError, match="dataset='digits'.*multi-label") as e:
        multilabel_noise(load_dataset("digits"), MultilabelNoiseParams(), np.random.default_rng(0))
    assert "\n" not in str(e.value)


# -- method pieces ----------------------------------------------------------------------------

@pytest.mark.parametrize("values, fragment", [
    ({"delta": 0.5}, "hp.delta=0.5"), ({"delta": 1.01}, "hp.delta=1.01"), ({"mixup_alpha": 0.0}, "hp.mixup_alpha=0.0"),
    ({"mixup_alpha": -1}, "hp.mixup_alpha=-1"), ({"clean": False}, "hp.relabel=True"),
    ({"positives": "given"}, "hp.positives='given'"), ({"ra_ops": 15}, "hp.ra_ops=15"),
    ({"ra_magnitude": 31}, "hp.ra_magnitude=31"), ({"randaug": "yes"}, "hp.randaug='yes'"),
])
def test_bad_hparams_are_one_line_errors(values, fragment):
    with pytest.raises(ConfigError) as e:
        method_hparams("balancemix", values)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    BalanceMixHparams(delta=1.0, mixup_alpha=8)  # the paper's edges are allowed
    BalanceMixHparams(clean=False, relabel=False, ambiguous=False)


def test_sampler_probability_inverse_to_score():
    g = torch.Generator().manual_seed(0)
    Y = (torch.rand(50, 5, generator=g) < 0.3).float()
    probs = torch.rand(50, 5, generator=g)
    P, A = class_confidences(probs=probs, Y=Y)
    k = 2
    assert torch.isclose(P[k], probs[Y[:, k] == 1, k].mean())
    assert torch.isclose(A[k], (1 - probs[Y[:, k] == 0, k]).mean())
    score = instance_scores(Y=Y, P=P, A=A)
    manual = torch.tensor([sum(P[c] if Y[n, c] else A[c] for c in range(5)) for n in range(50)])
    assert torch.allclose(score, manual, atol=1e-5)
    p = sampling_probs(score)
    assert torch.isclose(p.sum(), torch.tensor(1.0))
    prod = p * score  # p ∝ 1/Score (eq. 4): the product is one constant
    assert torch.allclose(prod, prod[0].expand_as(prod), rtol=1e-5)
    # a rarely-confident class makes its instances the most likely draws
    assert p[Y[:, k] == 1].mean() > p[Y[:, k] == 0].mean() or P[k] > A[k]


def test_lambda_at_least_half():
    rng = np.random.default_rng(0)
    for alpha in (0.1, 1.0, 4.0, 8.0):
        lam = mix_lambda(alpha=alpha, size=5000, rng=rng)
        assert lam.min() >= 0.5 and lam.max() <= 1.0
    assert mix_lambda(alpha=8.0, size=5000, rng=rng).mean() < mix_lambda(alpha=1.0, size=5000, rng=rng).mean()


def test_gmm_posterior_separable_and_batched():
    g = torch.Generator().manual_seed(0)
    small = 0.1 + 0.02 * torch.randn(300, generator=g)
    large = 2.0 + 0.1 * torch.randn(100, generator=g)
    v1 = torch.cat([small, large])
    v2 = torch.cat([torch.rand(200, generator=g) * 0.05, 1 + torch.rand(200, generator=g) * 0.05])
    values = torch.stack([v1, v2, torch.zeros(400), v1])
    mask = torch.ones_like(values, dtype=torch.bool)
    mask[3, 3:] = False  # 3 points: too few to split, all clean
    p, mu = fit_gmm_1d(values, mask)
    assert (p[0, :300] > 0.99).all() and (p[0, 300:] < 0.01).all()
    assert (p[1, :200] > 0.99).all() and (p[1, 200:] < 0.01).all()
    assert (p[2] == 1).all()  # no spread: nothing to tell apart
    assert (p[3, :3] == 1).all() and (p[3, 3:] == 0).all()


def test_gmm_matches_sklearn_on_overlapping_case():
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0.3, 0.1, 400), rng.normal(0.9, 0.15, 200)])
    v = (v - v.min()) / (v.max() - v.min())
    p, _ = fit_gmm_1d(torch.tensor(v)[None].float(), torch.ones(1, 600, dtype=torch.bool), iters=300, reg=1e-6,
                      tol=1e-9)
    gm = GaussianMixture(2, reg_covar=1e-6, tol=1e-10, max_iter=500, random_state=0).fit(v[:, None])
    ref = gm.predict_proba(v[:, None])[:, gm.means_.ravel().argmin()]
    assert np.abs(p[0].numpy() - ref).max() < 0.02


def test_clean_posterior_per_class_and_polarity():
    Y = torch.tensor([[1, 0]] * 40 + [[0, 1]] * 40, dtype=torch.float32)
    losses = torch.full_like(Y, 0.05)
    losses[:5, 0] = 3.0  # five loud positives of class 0
    losses[40:45, 0] = 2.0  # five loud negatives of class 0
    losses += torch.rand(losses.shape, generator=torch.Generator().manual_seed(0)) * 0.01
    pG = clean_posterior(losses=losses, Y=Y)
    assert (pG[:5, 0] < 0.05).all() and (pG[5:40, 0] > 0.95).all()
    assert (pG[40:45, 0] < 0.05).all() and (pG[45:, 0] > 0.95).all()


def test_relabel_and_weights_eq9_eq10():
    Y = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    conf = torch.tensor([[0.01, 0.99, 0.5, 0.2]])
    clean = torch.tensor([[True, False, False, False]])
    Y2, R = relabel(Y=Y, conf=conf, clean=clean, delta=0.95)
    assert Y2.tolist() == [[1.0, 1.0, 1.0, 0.0]]  # a clean label is never touched
    assert R.tolist() == [[False, True, False, False]]
    p_G = torch.tensor([[0.9, 0.1, 0.3, 0.2]])
    w = label_weights(p_G=p_G, clean=clean, relabeled=R, ambiguous=True)
    assert torch.allclose(w, torch.tensor([[1.0, 1.0, 0.3, 0.2]]))
    assert label_weights(p_G=p_G, clean=clean, relabeled=R, ambiguous=False).tolist() == [[1.0, 1.0, 0.0, 0.0]]
    Y3, R3 = relabel(Y=Y, conf=conf, clean=clean, delta=1.0)  # δ = 1 re-labels nothing
    assert torch.equal(Y3, Y) and not R3.any()


def test_asl_reduces_to_bce_without_focusing():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(8, 5, generator=g), (torch.rand(8, 5, generator=g) < 0.4).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none").sum(1).mean()
    assert torch.isclose(asymmetric_loss(logits=z, target=y, gamma_pos=0, gamma_neg=0, m=0), bce, atol=1e-5)
    # focusing + margin shrink the loss of easy negatives
    assert asymmetric_loss(logits=z, target=y, gamma_pos=0, gamma_neg=4, m=0.05) < bce


def test_map_matches_sklearn():
    from sklearn.metrics import average_precision_score

    g = torch.Generator().manual_seed(1)
    Y = (torch.rand(200, 6, generator=g) < torch.linspace(0.5, 0.05, 6)).float()
    scores = torch.rand(200, 6, generator=g) + Y * 0.3
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    m = multilabel_metrics(scores, Y, groups)
    ap = [average_precision_score(Y[:, k].numpy(), scores[:, k].numpy()) for k in range(6)]
    assert abs(m["map"] - np.mean(ap)) < 1e-5
    assert abs(m["map_few"] - np.mean(ap[4:])) < 1e-5 and abs(m["map_many"] - np.mean(ap[:2])) < 1e-5


# -- methods through the engine ---------------------------------------------------------------

@pytest.mark.parametrize("method, hp", [
    ("balancemix", {"warmup": 1}), ("balancemix", {"warmup": 0, "minority": False, "ambiguous": False}),
    ("bce", {}), ("bce-mixup", {"randaug": False}), ("asl", {"mixup": False}),
    ("coteaching", {"warmup": 1}), ("t-estimator", {"warmup": 1}), ("ll-r", {"delta_rel": 10.0}),
    ("ll-ct", {"delta_rel": 10.0, "mixup": False}),
])
def test_methods_train_two_epochs(small_multi, method, hp):
    from weaklab.config import TrainConfig
    from weaklab.engine import train

    weak = multilabel_noise(small_multi, MultilabelNoiseParams(noise="flip", rho=0.2), np.random.default_rng(0))
    m = METHODS.get(method)(method_hparams(method, hp), num_classes=10, seed=0)
    res = train(data=weak, method=m, config=TrainConfig(arch="mlp", width=0.1, epochs=2, batch_size=64,
                                                        monitor="val_map", device="cpu"), seed=0)
    last = res.final
    assert set(res.history[0]) == set(last)  # one schema per epoch (Parquet infers it from the first row)
    assert 0 < last["test_map"] <= 1 and np.isfinite(last["train_loss"])
    assert {"test_map_many", "test_map_medium", "test_map_few"} <= set(last)
    if method == "coteaching":
        assert 0 < last["selected_frac_f"] <= 1 and 0 < last["selected_frac_g"] <= 1
        assert m.peer is not None and len(m.peer_opt.state) > 0  # the peer network was trained too
    if method == "t-estimator":
        assert (m.rho_plus > m.rho_minus).all() and np.isfinite(last["diag_rho_plus_err"])
    if method.startswith("ll-"):
        assert last["ll_rate"] == pytest.approx(hp["delta_rel"] / 100) and last["modified_frac"] > 0
    if method == "balancemix":
        assert last["gmm_s"] >= 0 and 0 <= last["diag_clean_precision"] <= 1
        assert last["clean_frac"] + last["relabel_frac"] + last["ambiguous_frac"] <= 1 + 1e-6
        assert ("sampler_max_over_min" in last) == hp.get("minority", True)
        if hp.get("minority", True):
            assert not torch.allclose(m.p_sample, torch.full_like(m.p_sample, 1 / len(m.p_sample)))


# -- VOC in the real on-disk format ------------------------------------------------------------

def write_fake_voc(root, year: str, splits: dict[str, list[list[str]]], size=(20, 16)) -> None:
    """VOCdevkit/VOC<year>/{JPEGImages, Annotations, ImageSets/Main/<split>.txt} as VOCDetection reads them."""
    from PIL import Image

    base = os.path.join(root, "VOCdevkit", f"VOC{year}")
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    rng = np.random.default_rng(0)
    n = 0
    for split, objects in splits.items():
        ids = []
        for names in objects:
            iid = f"{year}_{n:06d}"
            n += 1
            ids.append(iid)
            Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
                os.path.join(base, "JPEGImages", iid + ".jpg"))
            objs = "".join(f"<object><name>{c}</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
                           f"<xmax>5</xmax><ymax>5</ymax></bndbox></object>" for c in names)
            with open(os.path.join(base, "Annotations", iid + ".xml"), "w") as fh:
                fh.write(f"<annotation><folder>VOC{year}</folder><filename>{iid}.jpg</filename><size><width>"
                         f"{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>")
        with open(os.path.join(base, "ImageSets", "Main", f"{split}.txt"), "w") as fh:
            fh.write("\n".join(ids) + "\n")


def test_voc_loaders_read_real_format(tmp_path):
    train = [["dog", "person"], ["cat"], ["car", "car", "bus"], ["person"], ["sheep", "cow"]]
    write_fake_voc(tmp_path, "2007", {"trainval": train, "test": [["tvmonitor"], ["dog", "cat"]]})
    d = load_dataset("voc2007", root=str(tmp_path))
    assert d.multilabel and d.num_classes == 20 and d.x_train.dtype == torch.uint8
    assert d.x_train.shape[1:] == (3, 448, 448) and len(d.y_train) + len(d.y_val) == 5
    assert d.y_test[1, VOC_CLASSES.index("dog")] == 1 and d.y_test[1, VOC_CLASSES.index("cat")] == 1
    assert d.y_test.sum().item() == 3
    all_train = torch.cat([d.y_train, d.y_val])
    assert all_train.sum().item() == 8  # duplicates ("car", "car") count once
    write_fake_voc(tmp_path, "2012", {"train": train, "val": [["boat"]]})
    d12 = load_dataset("voc2012", root=str(tmp_path))
    assert d12.y_test[0, VOC_CLASSES.index("boat")] == 1
    with pytest.raises(ConfigError, match="voc2012.*ImageSets"):
        load_dataset("voc2012", root=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="--data-root"):
        load_dataset("voc2007")
