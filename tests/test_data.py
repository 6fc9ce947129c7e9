"""MNIST loading: the real file, Keras's cache, and every way a data file can be wrong."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from distune.trial import data
from distune.trial import load_mnist
from distune.errors import DistuneError
from conftest import fake_mnist


def test_real_file_split_and_scaled(mnist_path):
    s = load_mnist(str(mnist_path), validation_split=0.1, seed=0)
    assert s.x_train.shape == (54000, 28, 28) and s.x_val.shape == (6000, 28, 28)
    assert s.x_test.shape == (10000, 28, 28) and s.y_test.shape == (10000,)
    assert s.x_train.dtype == np.float32 and 0.0 == s.x_train.min() and s.x_train.max() == 1.0
    assert set(np.unique(s.y_val)) == set(range(10))
    assert "x_test" not in s.for_trials()  # trials never see the test set


def test_split_is_seeded_and_disjoint(mnist_path):
    a = load_mnist(str(mnist_path), train_subset=1000, seed=3)
    b = load_mnist(str(mnist_path), train_subset=1000, seed=3)
    c = load_mnist(str(mnist_path), train_subset=1000, seed=4)
    assert np.array_equal(a.x_val, b.x_val) and not np.array_equal(a.x_val, c.x_val)
    assert len(a.x_train) + len(a.x_val) == 1000
    train_rows = {r.tobytes() for r in a.x_train}
    assert not any(r.tobytes() in train_rows for r in a.x_val)


def test_environment_variable(mnist_path, monkeypatch):
    monkeypatch.setenv("DISTUNE_MNIST", str(mnist_path))
    assert data.find_mnist(None) == mnist_path


def test_keras_cache_is_used(mnist_path, tmp_path, monkeypatch):
    monkeypatch.delenv("DISTUNE_MNIST", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert data.find_mnist(None) is None  # nothing cached: Keras's download would be next
    (tmp_path / "datasets").mkdir()
    shutil.copy(mnist_path, tmp_path / "datasets" / "mnist.npz")
    assert data.find_mnist(None) == tmp_path / "datasets" / "mnist.npz"


def test_offline_without_file_says_how_to_provide_it(tmp_path, monkeypatch):
    """The network is the one thing that cannot exist here: Keras's download is made to fail."""
    import keras

    monkeypatch.delenv("DISTUNE_MNIST", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline():
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(DistuneError, match="Keras could not download it.*Pass --data PATH"):
        load_mnist(None)


def test_missing_file():
    with pytest.raises(DistuneError, match="data.path: MNIST file not found: /no/such.npz"):
        load_mnist("/no/such.npz")


def test_not_an_npz(tmp_path):
    f = tmp_path / "mnist.npz"
    f.write_text("not a zip file")
    with pytest.raises(DistuneError, match="cannot read it as an .npz file: it is not a zip") as e:
        load_mnist(str(f))
    assert "pickle" not in str(e.value)  # numpy's advice to load it unsafely is not ours


def test_a_single_npy_array_is_not_an_npz(tmp_path):
    f = tmp_path / "x.npy"
    np.save(f, np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(DistuneError, match="x.npy: cannot read it as an .npz file: it is not a zip"):
        load_mnist(str(f))


def test_train_subset_beyond_the_training_set(tmp_path):
    f = fake_mnist(tmp_path / "m.npz", 200)
    with pytest.raises(DistuneError, match=r"data.train_subset: 1000 training images asked for, "
                                           r"but \S*m.npz has 200; use at most 200"):
        load_mnist(str(f), train_subset=1000)
    assert len(load_mnist(str(f), train_subset=200).x_train) == 180


def test_wrong_arrays(tmp_path):
    f = tmp_path / "m.npz"
    np.savez(f, images=np.zeros((2, 28, 28)))
    with pytest.raises(DistuneError, match="missing arrays x_train, y_train, x_test, y_test"):
        load_mnist(str(f))


def test_wrong_shapes(tmp_path):
    f = tmp_path / "m.npz"
    np.savez(f, x_train=np.zeros((10, 32, 32), np.uint8), y_train=np.zeros(10, np.uint8),
             x_test=np.zeros((5, 28, 28), np.uint8), y_test=np.zeros(5, np.uint8))
    with pytest.raises(DistuneError, match=r"x_train must be \(n, 28, 28\)"):
        load_mnist(str(f))


def test_bad_labels(tmp_path):
    f = tmp_path / "m.npz"
    np.savez(f, x_train=np.zeros((10, 28, 28), np.uint8), y_train=np.full(10, 12, np.uint8),
             x_test=np.zeros((5, 28, 28), np.uint8), y_test=np.zeros(5, np.uint8))
    with pytest.raises(DistuneError, match="labels outside 0..9"):
        load_mnist(str(f))
