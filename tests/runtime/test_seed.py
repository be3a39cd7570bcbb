"""convcore.manual_seed seeds everything convcore draws from without an
explicit rng: initial weights, dropout masks (layer and functional), an
unseeded DataLoader's shuffles and augmentation. NumPy's global seed
does not (as torch.manual_seed and np.random.seed are separate)."""
import numpy as np
import pytest

import convcore
from convcore import F, init, nn
from convcore.data import Compose, DataLoader, RandomHorizontalFlip, RandomShift


def _run(seed):
    """Everything random in a small training set-up, with no rng given."""
    convcore.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5),
                          nn.Linear(3 * 4 * 4, 2))
    images = np.arange(10 * 36, dtype=np.float32).reshape(10, 1, 6, 6) / 360
    loader = DataLoader((images, np.arange(10) % 2), 4, shuffle=True,
                        transform=Compose(RandomShift(1), RandomHorizontalFlip()))
    batches = [x for x, _ in loader]
    order = loader.order(0)
    model.train()
    out = model(batches[0])
    functional = F.dropout(np.ones((3, 5)), 0.5)
    return ([p.data.copy() for p in model.parameters()], order, batches, out, functional)


def _same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        if isinstance(u, list):
            _same(u, v)
        else:
            np.testing.assert_array_equal(u, v)


def test_same_seed_same_weights_masks_shuffles_and_augmentation():
    first, second = _run(7), _run(7)
    _same(first, second)


def test_other_seed_differs_in_each_part():
    a, b = _run(7), _run(8)
    assert not np.array_equal(a[0][0], b[0][0])         # weights
    assert not np.array_equal(a[1], b[1])               # shuffle order
    assert not np.array_equal(a[4], b[4])               # F.dropout mask


def test_numpy_global_seed_does_not_seed_convcore():
    np.random.seed(0)
    a = nn.Linear(5, 5).weight.data.copy()
    np.random.seed(0)
    b = nn.Linear(5, 5).weight.data.copy()
    assert not np.array_equal(a, b)


def test_dropout_built_before_the_seed_follows_it():
    drop = nn.Dropout(0.5)
    x = np.ones((4, 8), np.float32)
    convcore.manual_seed(3)
    first = drop(x)
    convcore.manual_seed(3)
    np.testing.assert_array_equal(drop(x), first)
    assert 0 < np.count_nonzero(first) < first.size


def test_top_level_and_init_are_the_same_seed():
    assert convcore.manual_seed is init.manual_seed
    convcore.manual_seed(5)
    a = init.get_rng().random(3)
    init.manual_seed(5)
    np.testing.assert_array_equal(init.get_rng().random(3), a)


def test_explicit_seeds_are_not_affected():
    convcore.manual_seed(1)
    a = nn.Linear(3, 3, rng=11).weight.data.copy()
    loader_a = DataLoader((np.zeros((6, 1, 2, 2)), np.zeros(6, np.int64)), 2, shuffle=True,
                          seed=4)
    convcore.manual_seed(2)
    np.testing.assert_array_equal(nn.Linear(3, 3, rng=11).weight.data, a)
    loader_b = DataLoader((np.zeros((6, 1, 2, 2)), np.zeros(6, np.int64)), 2, shuffle=True,
                          seed=4)
    np.testing.assert_array_equal(loader_a.order(0), loader_b.order(0))


@pytest.mark.parametrize("seed, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError),
                                         ("3", TypeError)])
def test_bad_seeds(seed, error):
    with pytest.raises(error, match="manual_seed: seed must"):
        convcore.manual_seed(seed)


def test_numpy_integer_seed_and_return_value():
    gen = convcore.manual_seed(np.int64(9))
    assert gen is init.get_rng()
    value = gen.random()
    convcore.manual_seed(9)
    assert init.get_rng().random() == value
