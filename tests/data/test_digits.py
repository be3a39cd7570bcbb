"""The embedded digits data set."""
import numpy as np
import pytest

from convcore.data import DataLoader, load_dataset, load_digits, load_digits_arrays


def test_digits_shapes_ranges_and_split():
    train, test = load_digits()
    assert train.images.shape == (1438, 1, 8, 8) and test.images.shape == (359, 1, 8, 8)
    assert train.images.dtype == np.float32 and train.labels.dtype == np.int64
    for ds in (train, test):
        assert ds.images.min() == 0.0 and ds.images.max() == 1.0
        assert set(np.unique(ds.labels)) == set(range(10))
    # Stratified: each class keeps its share (178/1797 ... within one sample).
    _, labels = load_digits_arrays()
    full = np.bincount(labels)
    np.testing.assert_array_equal(test.class_counts(), np.round(full * 0.2).astype(int))
    np.testing.assert_array_equal(train.class_counts() + test.class_counts(), full)


def test_digits_split_is_deterministic_and_disjoint():
    a_train, a_test = load_digits(seed=0)
    b_train, b_test = load_digits(seed=0)
    np.testing.assert_array_equal(a_test.images, b_test.images)
    np.testing.assert_array_equal(a_train.labels, b_train.labels)
    c_train, c_test = load_digits(seed=1)
    assert not np.array_equal(a_test.images, c_test.images)
    # Every image lands in exactly one split (images + labels as one multiset).
    images, labels = load_digits_arrays()
    full = {(int(l), im.tobytes()) for im, l in zip(images.astype(np.float32) / 16, labels)}
    rows = [(int(l), im[0].tobytes()) for ds in (a_train, a_test)
            for im, l in zip(ds.images, ds.labels)]
    assert len(rows) == 1797 and set(rows) == full


def test_digits_equal_scikit_learn():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    images, labels = load_digits_arrays()
    np.testing.assert_array_equal(images, d.images)
    np.testing.assert_array_equal(labels, d.target)


def test_digits_through_loader():
    train, _ = load_dataset("digits")
    x, y = next(iter(DataLoader(train, batch_size=32, shuffle=True, seed=0)))
    assert x.shape == (32, 1, 8, 8) and y.shape == (32,)
