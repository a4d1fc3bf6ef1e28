import numpy as np
import pytest
import torch

from tests import fakes
from weaklab.data import DATASETS, load_dataset
from weaklab.registry import ConfigError


def test_digits_split_is_fixed_by_seed_and_disjoint():
    a, b = load_dataset("digits", split_seed=0), load_dataset("digits", split_seed=0)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    c = load_dataset("digits", split_seed=1)
    assert not torch.equal(a.y_train, c.y_train)
    n = len(a.y_train) + len(a.y_val) + len(a.y_test)
    assert n == 1797 and a.x_train.shape[1:] == (1, 8, 8)
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    # every class in every split (stratified)
    for y in (a.y_train, a.y_val, a.y_test):
        assert set(y.tolist()) == set(range(10))


def test_cifar10_from_official_pickles(tmp_path):
    ds = load_dataset("cifar10", root=fakes.write_cifar10(str(tmp_path)))
    assert ds.x_train.shape[1:] == (3, 32, 32) and len(ds.y_test) == 20
    assert len(ds.y_train) + len(ds.y_val) == 100 and ds.num_classes == 10


def test_cifar10_pixels_keep_channel_layout(tmp_path):
    import pickle, os
    fakes.write_cifar10(str(tmp_path))
    with open(os.path.join(tmp_path, "cifar-10-batches-py", "test_batch"), "rb") as fh:
        raw = pickle.load(fh)
    ds = load_dataset("cifar10", root=str(tmp_path))
    expected = torch.from_numpy(raw["data"][0].reshape(3, 32, 32).astype(np.float32) / 255)
    assert torch.allclose(ds.x_test[0], expected)


def test_cifar100_has_superclasses(tmp_path):
    ds = load_dataset("cifar100", root=fakes.write_cifar100(str(tmp_path)))
    assert ds.num_classes == 100 and ds.superclass is not None
    assert torch.equal(ds.superclass, torch.arange(100) // 5)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_from_idx_files(tmp_path, name, folder):
    ds = load_dataset(name, root=fakes.write_mnist(str(tmp_path), folder))
    assert ds.x_train.shape[1:] == (1, 28, 28) and len(ds.y_test) == 20


def test_svhn_from_mat_files(tmp_path):
    ds = load_dataset("svhn", root=fakes.write_svhn(str(tmp_path)))
    assert ds.x_test.shape == (10, 3, 32, 32)
    assert ds.y_train.min() >= 0 and ds.y_train.max() <= 9


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist", "fashion_mnist", "svhn"])
def test_missing_folder_names_folder_and_remedy(tmp_path, name):
    with pytest.raises(ConfigError) as e:
        load_dataset(name, root=str(tmp_path / "nowhere"))
    msg = str(e.value)
    assert "nowhere" in msg and "download" in msg and "\n" not in msg


def test_unknown_dataset_and_missing_root():
    with pytest.raises(ConfigError, match="dataset='nope'"):
        load_dataset("nope")
    with pytest.raises(ConfigError, match="--data-root"):
        load_dataset("cifar10")
    assert "digits" in DATASETS
