"""DataLoader, batch transforms, class weights and stratified splits."""
import numpy as np
import pytest

from convcore.data import (ArrayDataset, Compose, DataLoader, Normalize, RandomHorizontalFlip,
                           RandomRotation, RandomShift, channel_stats, class_weights, rotate,
                           stratified_kfold, stratified_split)


def toy(n=10, c=2, h=3, w=4, seed=0):
    r = np.random.default_rng(seed)
    return r.random((n, c, h, w)).astype(np.float32), (np.arange(n) % 3).astype(np.int64)


def collect(loader):
    return [(x.copy(), y.copy()) for x, y in loader]


# ---------------------------------------------------------------- batching

@pytest.mark.parametrize("drop_last,sizes", [(False, [4, 4, 2]), (True, [4, 4])])
def test_batches_in_order(drop_last, sizes):
    x, y = toy()
    dl = DataLoader((x, y), batch_size=4, drop_last=drop_last)
    batches = collect(dl)
    assert [len(b[1]) for b in batches] == sizes and len(dl) == len(sizes)
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x[:sum(sizes)])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y[:sum(sizes)])
    assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == np.int64


def test_shuffle_is_a_seeded_permutation_per_epoch():
    x, y = toy(20)
    a = DataLoader((x, y), 6, shuffle=True, seed=7)
    b = DataLoader((x, y), 6, shuffle=True, seed=7)
    e0a, e0b, e1a = collect(a), collect(b), collect(a)
    for (xa, ya), (xb, yb) in zip(e0a, e0b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    xs = np.concatenate([b[0] for b in e0a])
    assert not np.array_equal(xs, x)                                   # shuffled
    assert sorted(map(tuple, xs.reshape(20, -1))) == sorted(map(tuple, x.reshape(20, -1)))
    assert not np.array_equal(xs, np.concatenate([b[0] for b in e1a]))  # new order each epoch
    c = DataLoader((x, y), 6, shuffle=True, seed=8)
    assert not np.array_equal(xs, np.concatenate([b[0] for b in collect(c)]))
    a.set_epoch(1)                                                     # resume
    np.testing.assert_array_equal(np.concatenate([b[0] for b in collect(a)]),
                                  np.concatenate([b[0] for b in e1a]))


def test_prefetch_gives_identical_batches_and_stops_early():
    x, y = toy(50)
    t = Compose(RandomHorizontalFlip(), RandomShift(1), RandomRotation(20))
    plain = collect(DataLoader((x, y), 8, shuffle=True, seed=1, transform=t))
    pre = DataLoader((x, y), 8, shuffle=True, seed=1, transform=t, prefetch=2)
    for (xa, ya), (xb, yb) in zip(plain, collect(pre)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    for i, _ in enumerate(pre):          # abandon an epoch half-way: must not hang
        if i == 1:
            break


def test_prefetch_forwards_errors():
    x, y = toy()

    def boom(images, rng):
        raise RuntimeError("transform failed")
    with pytest.raises(RuntimeError, match="transform failed"):
        collect(DataLoader((x, y), 4, transform=boom, prefetch=1))


def test_loader_never_modifies_data_and_dtype_option():
    x, y = toy()
    xc, yc = x.copy(), y.copy()
    t = Compose(RandomHorizontalFlip(1.0), RandomShift(1), RandomRotation(30), Normalize.fit(x))
    batches = collect(DataLoader((x, y), 3, shuffle=True, seed=0, transform=t, dtype=np.float64))
    np.testing.assert_array_equal(x, xc)
    np.testing.assert_array_equal(y, yc)
    assert batches[0][0].dtype == np.float64
    ds = ArrayDataset(x, y, ("a", "b", "c"))
    with pytest.raises(ValueError):
        ds.images[0, 0, 0, 0] = 5.0     # read-only view
    xb, _ = next(iter(DataLoader(ds, 4)))
    xb[:] = 0                           # batches are copies
    np.testing.assert_array_equal(ds.images, xc)


@pytest.mark.parametrize("kwargs,exc,fragment", [
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(batch_size=2.5), TypeError, "batch_size must be an int"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(prefetch=-1), ValueError, "prefetch"),
    (dict(transform=3), TypeError, "transform must be callable"),
    (dict(dtype=np.int32), TypeError, "dtype"),
])
def test_loader_bad_arguments(kwargs, exc, fragment):
    x, y = toy()
    with pytest.raises(exc, match=fragment):
        DataLoader((x, y), **{"batch_size": 2, **kwargs})


def test_loader_bad_data():
    x, y = toy()
    with pytest.raises(ValueError, match="10 images .* but 9 labels"):
        DataLoader((x, y[:9]))
    with pytest.raises(ValueError, match="labels must be a 1-D integer"):
        DataLoader((x, y.astype(np.float32)))
    with pytest.raises(TypeError, match="ArrayDataset or an"):
        DataLoader(x)


# ---------------------------------------------------------------- normalisation

def test_channel_stats_and_normalize():
    x, _ = toy(30, c=3)
    mean, std = channel_stats(x)
    x64 = x.astype(np.float64)
    for c in range(3):   # plain per-channel definitions
        assert mean[c] == pytest.approx(x64[:, c].mean(), rel=1e-12)
        assert std[c] == pytest.approx(x64[:, c].std(), rel=1e-12)
    norm = Normalize.fit(x)
    z = norm(x)
    assert z.dtype == np.float32 and z.shape == x.shape
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, rtol=1e-5)
    np.testing.assert_allclose(z[:, 1], (x64[:, 1] - mean[1]) / std[1], rtol=1e-5, atol=1e-6)
    # Test data reuses the training statistics, not its own.
    t = x[:5] + 1
    np.testing.assert_allclose(norm(t)[:, 0], (t[:, 0] - mean[0]) / std[0], rtol=1e-5)


def test_normalize_errors():
    with pytest.raises(ValueError, match="std > 0"):
        Normalize([0.5], [0.0])
    with pytest.raises(ValueError, match="equal length"):
        Normalize([0.5, 0.5], [1.0])
    with pytest.raises(ValueError, match="3 channels"):
        Normalize([0.5], [1.0])(np.zeros((1, 3, 2, 2), np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        channel_stats(np.zeros((1, 1, 2, 2), np.uint8))


# ---------------------------------------------------------------- augmentation

def test_flip_is_exact():
    x, _ = toy(4)
    mask = np.array([True, False, True, False])
    out = RandomHorizontalFlip().apply(x, mask)
    for i in range(4):
        expected = x[i, :, :, ::-1] if mask[i] else x[i]
        np.testing.assert_array_equal(out[i], expected)
    np.testing.assert_array_equal(RandomHorizontalFlip(1.0)(x, np.random.default_rng(0)),
                                  x[..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(0.0)(x, np.random.default_rng(0)), x)


@pytest.mark.parametrize("dy,dx", [(0, 0), (1, 0), (0, -2), (-1, 3), (2, 1), (5, 0)])
def test_shift_moves_pixels(dy, dx):
    x, _ = toy(1, c=2, h=4, w=5)
    out = RandomShift(5).apply(x, np.array([[dy, dx]]))
    h, w = 4, 5
    for yy in range(h):          # explicit loop: output(y, x) = input(y - dy, x - dx) or 0
        for xx in range(w):
            sy, sx = yy - dy, xx - dx
            want = x[0, :, sy, sx] if 0 <= sy < h and 0 <= sx < w else np.zeros(2)
            np.testing.assert_array_equal(out[0, :, yy, xx], want)


def test_random_shift_range_and_dtype():
    x = np.ones((200, 1, 6, 6))
    t = RandomShift((1, 2))
    shifts = t.sample(200, np.random.default_rng(0))
    assert shifts[:, 0].min() == -1 and shifts[:, 0].max() == 1
    assert shifts[:, 1].min() == -2 and shifts[:, 1].max() == 2
    out = t(x, np.random.default_rng(0))
    assert out.dtype == np.float64 and out.shape == x.shape
    # Each image keeps exactly (6 - |dy|) * (6 - |dx|) ones.
    np.testing.assert_array_equal(out.sum(axis=(1, 2, 3)),
                                  (6 - abs(shifts[:, 0])) * (6 - abs(shifts[:, 1])))


@pytest.mark.parametrize("interp", ["bilinear", "nearest"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rotation_identity_and_quarter_turns(interp, dtype):
    x = np.random.default_rng(1).random((3, 2, 5, 5)).astype(dtype)
    np.testing.assert_array_equal(rotate(x, [0, 0, 0], interp), x)
    out = rotate(x, [90, 180, -90], interp)
    assert out.dtype == dtype and out.shape == x.shape
    # np.rot90 with k=1 turns counter-clockwise, like a positive angle.
    np.testing.assert_allclose(out[0], np.rot90(x[0], 1, axes=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(out[1], np.rot90(x[1], 2, axes=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(out[2], np.rot90(x[2], -1, axes=(1, 2)), atol=1e-6)


def test_rotation_bilinear_small_angle_against_reference():
    """45 degrees on a 4x6 image, compared with a loop over output pixels."""
    x = np.random.default_rng(2).random((1, 1, 4, 6))
    t = np.deg2rad(45)
    cy, cx = 1.5, 2.5
    want = np.zeros((4, 6))
    for i in range(4):
        for j in range(6):
            sy = cy + np.sin(t) * (j - cx) + np.cos(t) * (i - cy)
            sx = cx + np.cos(t) * (j - cx) - np.sin(t) * (i - cy)
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                    if 0 <= yy < 4 and 0 <= xx < 6:
                        want[i, j] += wy * wx * x[0, 0, yy, xx]
    np.testing.assert_allclose(rotate(x, [45.0])[0, 0], want, rtol=1e-12, atol=1e-12)


def test_random_rotation_angles_and_errors():
    r = RandomRotation(10)
    a = r.sample(500, np.random.default_rng(0))
    assert a.min() >= -10 and a.max() <= 10 and a.min() < -9 and a.max() > 9
    with pytest.raises(ValueError, match="interpolation"):
        RandomRotation(5, interpolation="cubic")
    with pytest.raises(ValueError, match="degrees"):
        RandomRotation(-1)
    with pytest.raises(TypeError, match="Generator"):
        r(np.zeros((1, 1, 2, 2)), 0)
    with pytest.raises(ValueError, match="4-D"):
        rotate(np.zeros((2, 2)), [0])


def test_transforms_do_not_modify_input_and_are_seeded():
    x, _ = toy(6)
    xc = x.copy()
    t = Compose([RandomHorizontalFlip(), RandomShift(2), RandomRotation(15)])
    a = t(x, np.random.default_rng(5))
    b = t(x, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(x, xc)
    assert a.dtype == x.dtype and a.shape == x.shape


# ---------------------------------------------------------------- class weights, splits

def test_class_weights_balanced():
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2])
    w = class_weights(y)
    np.testing.assert_allclose(w, [12 / (3 * 4), 12 / (3 * 2), 12 / (3 * 6)])
    assert w.dtype == np.float32
    np.testing.assert_allclose((w[y]).sum(), len(y), rtol=1e-6)   # weighted count = n
    np.testing.assert_array_equal(class_weights(np.arange(4)), np.ones(4))
    with pytest.raises(ValueError, match=r"classes \[3\] have no samples"):
        class_weights(y, num_classes=4)
    with pytest.raises(ValueError, match="out of range"):
        class_weights(y, num_classes=2)
    with pytest.raises(ValueError, match="1-D integer"):
        class_weights(y.astype(float))


def test_class_weights_match_sklearn():
    sk = pytest.importorskip("sklearn.utils")
    y = np.random.default_rng(0).choice(5, 200, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    want = sk.compute_class_weight("balanced", classes=np.arange(5), y=y)
    np.testing.assert_allclose(class_weights(y, dtype=np.float64), want, rtol=1e-12)


def test_stratified_split():
    y = np.repeat(np.arange(4), [10, 20, 5, 2])
    tr, te = stratified_split(y, 0.2, seed=3)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(y)
    np.testing.assert_array_equal(np.bincount(y[te], minlength=4), [2, 4, 1, 1])
    tr2, te2 = stratified_split(y, 0.2, seed=3)
    np.testing.assert_array_equal(te, te2)
    assert not np.array_equal(te, stratified_split(y, 0.2, seed=4)[1])
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(y, 1.0)


def test_stratified_kfold():
    y = np.repeat(np.arange(3), [9, 6, 4])
    folds = stratified_kfold(y, k=3, seed=0)
    vals = np.concatenate([v for _, v in folds])
    np.testing.assert_array_equal(np.sort(vals), np.arange(len(y)))
    for tr, va in folds:
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(y)
        counts = np.bincount(y[va], minlength=3)
        assert np.all(np.abs(counts - np.array([9, 6, 4]) / 3) <= 1)
    with pytest.raises(ValueError, match="k=30 folds"):
        stratified_kfold(y, 30)
