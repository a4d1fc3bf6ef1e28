"""Every entry of the settings, archs and heads registries, each against its contract
(issue 11 part 7): a setting is a pure function of (clean data, params, numpy Generator);
an arch maps its inputs to ``out_features`` features; a head maps features to K outputs."""

import numpy as np
import pytest
import torch

from studies import STUDIES, expand, resolve
from weaklab.config import parse_trial
from weaklab.data import load_dataset
from weaklab.models import ARCHS, HEADS, build_model
from weaklab.settings import SETTINGS


def _setting_case(name: str):
    """(clean dataset, params) of the first study's smoke trial using setting ``name``."""
    for study_name in STUDIES.names():
        study = resolve(STUDIES.get(study_name), smoke=True)
        if study.setting == name:
            t = parse_trial(expand(study)[0])
            return load_dataset(t.dataset), t.setting_params
    pytest.fail(f"no study uses setting {name!r}: every setting needs a study that exercises it")


def _tensors(weak) -> dict[str, torch.Tensor]:
    return {k: v for k, v in weak.to_tensors().items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("name", SETTINGS.names())
def test_a_setting_is_pure_in_its_generator(name):
    spec = SETTINGS.get(name)
    data, params = _setting_case(name)
    before = {k: getattr(data, k).clone() for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()

    a = spec.make(data, params, np.random.default_rng(0))
    b = spec.make(data, params, np.random.default_rng(0))
    c = spec.make(data, params, np.random.default_rng(1))

    assert a.kind == spec.kind and a.n == a.x.shape[0]
    ta, tb, tc = _tensors(a), _tensors(b), _tensors(c)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), "same Generator seed, other data"
    assert any(not torch.equal(ta[k], tc[k]) for k in ta if k.startswith("weak/")), "the seed changes no weak label"
    # no global RNG is drawn from and the clean dataset is never written to
    assert torch.equal(torch.get_rng_state(), torch_state)
    np_after = np.random.get_state()
    assert np_after[0] == np_state[0] and np.array_equal(np_after[1], np_state[1]) and np_after[2:] == np_state[2:]
    assert all(torch.equal(getattr(data, k), v) for k, v in before.items())


#: a small input per arch family: 8x8 grey digits for the small nets, 32x32 RGB for ResNets
_SHAPES = {"resnet18": (3, 32, 32), "resnet50": (3, 32, 32)}


@pytest.mark.parametrize("head", HEADS.names())
@pytest.mark.parametrize("arch", ARCHS.names())
def test_every_arch_and_head_give_the_declared_shapes(arch, head):
    in_shape = _SHAPES.get(arch, (1, 8, 8))
    torch.manual_seed(0)
    net = build_model(arch, in_shape=in_shape, num_classes=5, head=head, width=0.125)
    net.eval()
    x = torch.rand(3, *in_shape)
    with torch.no_grad():
        feats = net.features(x)
        out = net(x)
    assert feats.shape == (3, net.backbone.out_features)
    outs = out if isinstance(out, tuple) else (out,)
    assert all(o.shape == (3, 5) and torch.isfinite(o).all() for o in outs)
    if head == "heteroscedastic":
        assert len(outs) == 2 and (outs[1] > 0).all(), "the scale sigma(x) is positive"


@pytest.mark.parametrize("arch", ARCHS.names())
def test_fresh_network_has_the_architecture_and_new_weights(arch):
    """``Net.fresh`` (Co-teaching's peer): the same parameter shapes, its own draw from the
    torch stream (so the seeded run is reproducible), reachable through torch.compile."""
    in_shape = _SHAPES.get(arch, (1, 8, 8))
    torch.manual_seed(0)
    net = build_model(arch, in_shape=in_shape, num_classes=5, width=0.125)
    peer = torch.compile(net).fresh()
    shapes = lambda m: [(k, tuple(v.shape)) for k, v in m.state_dict().items()]
    assert type(peer) is type(net) and shapes(peer) == shapes(net)
    weights = [k for k, v in net.state_dict().items() if v.is_floating_point() and v.numel() > 1 and "weight" in k]
    assert any(not torch.equal(net.state_dict()[k], peer.state_dict()[k]) for k in weights)
    torch.manual_seed(1)
    a = net.fresh().state_dict()
    torch.manual_seed(1)
    assert all(torch.equal(a[k], v) for k, v in net.fresh().state_dict().items())
