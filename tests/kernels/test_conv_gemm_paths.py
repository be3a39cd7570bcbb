"""The im2col + GEMM kernel's own paths, reached for sure by handing its
drivers a plan (conv_gemm.plan, with chosen decisions): forward GEMMs cut
into small-matrix pieces (gemm_cols, whatever BLAS the machine has), the
smaller column stripes that go with them, several small images side by
side in one GEMM (pieces of two images or more), and the weight gradient
accumulated transposed; against the float64 reference. Then the plan's
own rules and the scratch it counts."""
import numpy as np
import pytest

import convcore
from convcore import F
from convcore._runtime import threads as _threads
from convcore._kernels import conv_gemm
from convcore.functional._conv_spec import conv_spec

from ref_conv import conv2d_backward_ref, conv2d_ref

TOL = {np.float32: 2e-4, np.float64: 1e-11}

# (x shape, w shape, stride, padding, dilation, groups)
SHAPES = [
    ((2, 3, 23, 19), (10, 3, 5, 5), 1, 2, 1, 1),         # odd sizes, pieces split rows
    ((1, 3, 35, 35), (16, 3, 11, 11), 4, 0, 1, 1),       # batch 1, AlexNet-like stride
    ((3, 4, 17, 13), (6, 2, 3, 3), (2, 1), (1, 0), (1, 2), 2),  # groups, stride, dilation
    ((2, 8, 9, 7), (5, 8, 1, 1), 1, 0, 1, 1),            # pointwise: the input is the column
    ((2, 2, 1, 1), (3, 2, 1, 1), 1, 0, 1, 1),            # 1x1 image
    ((2, 3, 6, 5), (4, 3, 6, 5), 1, 0, 1, 1),            # kernel equal to the input
    ((9, 3, 40, 40), (8, 3, 7, 7), 2, 3, 1, 1),          # 9 images: more than 8 chunks
    ((2, 3, 120, 64), (8, 3, 7, 7), 2, 3, 1, 1),         # several stripes on both budgets
    ((9, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1),         # LeNet: 4 + 4 + 1 images per GEMM
    ((5, 4, 8, 8), (6, 2, 3, 3), 1, 1, 1, 2),            # images side by side, per group
]


def _plan(spec, threads, backward, **decisions):
    """conv_gemm's plan for spec with some decisions replaced."""
    plan = conv_gemm.plan(spec.params, threads, backward, spec.dtype.itemsize)
    plan.update(decisions)
    return plan


def _ref_out_shape(xs, ws, stride, padding, dilation, groups):
    return conv2d_ref(np.zeros(xs), np.zeros(ws), None, stride, padding, dilation, groups).shape


def _forward_with_plan(xs, ws, stride, padding, dilation, groups, threads, dtype, rng,
                       **decisions):
    """conv_gemm.forward with some of its plan's decisions replaced, and
    the float64 reference."""
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    expect = conv2d_ref(x, w, b, stride, padding, dilation, groups)
    spec = conv_spec(xs, ws, np.dtype(dtype), stride, padding, dilation, groups)
    y = np.full(spec.out_shape, np.nan, dtype)
    with _threads.blas_single():
        conv_gemm.forward(x.astype(dtype), w.astype(dtype), b.astype(dtype), y, spec.params,
                          threads, plan=_plan(spec, threads, False, **decisions))
    return y, expect


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("gemm_cols", [0, 16, 20, 48, 416])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", SHAPES)
def test_forward_in_pieces_matches_reference(xs, ws, stride, padding, dilation, groups,
                                             threads, gemm_cols, dtype, rng):
    y, expect = _forward_with_plan(xs, ws, stride, padding, dilation, groups, threads, dtype,
                                   rng, batch_parallel=True, gather_images=False,
                                   gemm_cols=gemm_cols)
    np.testing.assert_allclose(y, expect, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch_parallel", [True, False])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", SHAPES)
def test_backward_with_transposed_partials_matches_reference(
        xs, ws, stride, padding, dilation, groups, batch_parallel, dtype, rng):
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    gy = rng.standard_normal(_ref_out_shape(xs, ws, stride, padding, dilation, groups))
    gx_ref, gw_ref = conv2d_backward_ref(gy, x, w, stride, padding, dilation, groups)[:2]
    spec = conv_spec(xs, ws, np.dtype(dtype), stride, padding, dilation, groups)
    for need_x, need_w in ((True, True), (True, False), (False, True)):
        gx = np.full(xs, np.nan, dtype)
        gw = np.full(ws, np.nan, dtype)
        with _threads.blas_single():
            conv_gemm.backward(gy.astype(dtype), x.astype(dtype), w.astype(dtype), gx, gw,
                               need_x, need_w, spec.params, 2,
                               plan=_plan(spec, 2, True, batch_parallel=batch_parallel,
                                          gather_images=False, gather_weight_grad=False))
        if need_x:
            np.testing.assert_allclose(gx, gx_ref, rtol=TOL[dtype], atol=TOL[dtype] * 10)
        else:
            assert np.isnan(gx).all()  # not asked for: not touched
        if need_w:
            np.testing.assert_allclose(gw, gw_ref, rtol=TOL[dtype], atol=TOL[dtype] * 10)
        else:
            assert np.isnan(gw).all()


@pytest.fixture
def restore_threads(monkeypatch):
    monkeypatch.setattr(_threads, "GRAIN", 1)  # small layers may use 2 threads
    previous = convcore.get_num_threads()
    yield
    convcore.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_public_path_one_and_two_threads_agree(dtype, restore_threads, rng):
    """Through F.conv2d: pieces (when this BLAS has the small-matrix
    kernel) and transposed partials give the reference, and the same bits
    at 1 and 2 threads (each image on one thread, fixed chunks)."""
    xs, ws = (10, 3, 30, 30), (12, 3, 7, 7)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    results = []
    for n in (1, 2):
        convcore.set_num_threads(n)
        y = F.conv2d(x, w, stride=2, padding=3, algorithm="im2col")
        grads = F.conv2d_backward(np.cos(y), x, w, stride=2, padding=3, algorithm="im2col")
        results.append((y,) + grads)
    expect = conv2d_ref(x.astype(np.float64), w.astype(np.float64), None, 2, 3)
    np.testing.assert_allclose(results[0][0], expect, rtol=TOL[dtype], atol=TOL[dtype])
    gx_ref, gw_ref = conv2d_backward_ref(np.cos(results[0][0]).astype(np.float64),
                                         x.astype(np.float64), w.astype(np.float64), 2, 3)[:2]
    np.testing.assert_allclose(results[0][1], gx_ref, rtol=TOL[dtype], atol=TOL[dtype] * 10)
    np.testing.assert_allclose(results[0][2], gw_ref, rtol=TOL[dtype], atol=TOL[dtype] * 10)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("gemm_cols", [0, 16, 48])
@pytest.mark.parametrize("stripe_rows", [1, 3, 1000])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", SHAPES)
def test_forward_in_stripes_matches_reference(xs, ws, stride, padding, dilation, groups,
                                              threads, stripe_rows, gemm_cols, dtype, rng):
    """The stripe plan (batch 1): stripes of output rows over the threads,
    each with its own im2col and GEMM (whole or in pieces), the last one
    short; any item count, pointwise layers reading the input in place."""
    y, expect = _forward_with_plan(xs, ws, stride, padding, dilation, groups, threads, dtype,
                                   rng, batch_parallel=False, gather_images=False,
                                   gemm_cols=gemm_cols, stripe_rows=stripe_rows)
    np.testing.assert_allclose(y, expect, rtol=TOL[dtype], atol=TOL[dtype])


def test_stripe_rule():
    """Stripes of output rows when a forward has fewer items than threads
    and at least as many output pixels as output channels: a multiple of
    the threads of them, near-equal; whole GEMMs (pointwise layers, thick
    weights) at least 512 columns a stripe, or one stripe a thread.
    Otherwise none."""
    f32 = np.dtype(np.float32)

    def plan(xs, ws, stride=1, padding=0, threads=2, backward=False, small_gemm_blas=True):
        spec = conv_spec(xs, ws, f32, stride, padding, 1, 1)
        return conv_gemm.plan(spec.params, threads, backward, 4, small_gemm_blas), spec

    stem, spec = plan((1, 3, 224, 224), (64, 3, 7, 7), 2, 3)  # 112 rows, pieces
    assert stem["stripe_rows"] > 0 and stem["gemm_cols"] > 0 and stem["buffers"] == 2
    stripes = -(-112 // stem["stripe_rows"])
    assert stripes % 2 == 0 and stripes * stem["stripe_rows"] - 112 < stripes
    assert stem["column"] == 3 * 49 * (-(-stem["stripe_rows"] * 112 // 16) * 16)
    wide, _ = plan((1, 512, 28, 28), (512, 512, 3, 3), 1, 1)  # whole GEMMs
    assert wide["gemm_cols"] == 0 and wide["stripe_rows"] == 14  # 512 columns: 19 rows, capped
    assert wide["column"] == 512 * 9 * wide["stripe_rows"] * 28
    pointwise, _ = plan((1, 256, 56, 56), (64, 256, 1, 1))
    assert pointwise["gemm_cols"] == 0 and pointwise["column"] == 0
    assert pointwise["stripe_rows"] * 56 >= 512 and (-(-56 // pointwise["stripe_rows"])) % 2 == 0
    three, _ = plan((1, 3, 224, 224), (64, 3, 7, 7), 2, 3, threads=3)
    stripes = -(-112 // three["stripe_rows"])
    assert stripes >= 3 and stripes * three["stripe_rows"] - 112 < stripes
    assert plan((1, 512, 7, 7), (512, 512, 3, 3), 1, 1)[0]["stripe_rows"] == 0  # 49 < 512 pixels
    assert plan((8, 3, 224, 224), (64, 3, 7, 7), 2, 3)[0]["stripe_rows"] == 0   # by image
    assert plan((1, 3, 224, 224), (64, 3, 7, 7), 2, 3, threads=1)[0]["stripe_rows"] == 0
    assert plan((1, 3, 224, 224), (64, 3, 7, 7), 2, 3, backward=True)[0]["stripe_rows"] == 0


def test_piece_width_rule():
    """Whole 16-column vectors within 100^3 multiply-adds, at least two of
    them, only for thin weights, float32, a prange over the images and a
    BLAS with the small-matrix kernel."""
    f32 = np.dtype(np.float32)
    alexnet = conv_spec((8, 3, 227, 227), (96, 3, 11, 11), f32, 4, 0, 1, 1)
    alexnet64 = conv_spec((8, 3, 227, 227), (64, 3, 11, 11), f32, 4, 2, 1, 1)  # torchvision's
    wide = conv_spec((8, 64, 56, 56), (256, 64, 1, 1), f32, 1, 0, 1, 1)
    lenet = conv_spec((8, 6, 14, 14), (16, 6, 5, 5), f32, 1, 0, 1, 1)

    def cols(spec, threads=2, itemsize=4, small_gemm_blas=True):
        return conv_gemm.plan(spec.params, threads, False, itemsize, small_gemm_blas)["gemm_cols"]

    assert cols(alexnet64) == 32
    assert cols(alexnet) == 0  # one 16-column vector per piece: whole GEMMs win
    assert cols(lenet) == 416  # 4 images of 100 columns
    assert cols(wide) == 0     # 256 output channels: packed GEMMs
    assert cols(alexnet64, itemsize=8) == 0             # float32 only
    assert cols(alexnet64, small_gemm_blas=False) == 0  # the BLAS has no small kernel
    # 8 images, 16 threads: stripes of rows, whole GEMMs (pieces would be too narrow)
    assert cols(alexnet, threads=16) == 0
    assert conv_gemm.plan(alexnet.params, 16, False, 4, True)["stripe_rows"] > 0
    # LeNet's columns (4 x 150 x 100) and product (4 x 16 x 100) per thread
    plan = conv_gemm.plan(lenet.params, 2, False, 4, True)
    assert plan["column"] == 400 * (150 + 16) and plan["buffers"] == 2
    assert conv_gemm.scratch_bytes(lenet.params, 2, False, 4, True) == 2 * 400 * 166 * 4


def test_backward_scratch_adds_the_weight_gradient_partials():
    """A column per thread and min(N, 8) partial copies of the weights."""
    spec = conv_spec((10, 16, 20, 20), (32, 16, 3, 3), np.dtype(np.float64), 1, 1, 1, 1)
    plan = conv_gemm.plan(spec.params, 2, True, 8)
    assert not plan["gather_weight_grad"] and not plan["gather_images"]
    assert plan["partials"] == 8 * 32 * 16 * 9
    assert conv_gemm.scratch_bytes(spec.params, 2, True, 8) == (
        2 * 16 * 9 * 400 + 8 * 32 * 16 * 9) * 8
    # the gradients not asked for cost nothing
    assert conv_gemm.plan(spec.params, 2, True, 8, need_w=False)["partials"] == 0


def _at_one_and_two_threads(call):
    """call() at 1 and then 2 convcore threads; its two results, which must
    be equal to the bit."""
    results = []
    for threads in (1, 2):
        convcore.set_num_threads(threads)
        try:
            results.append(call())
        finally:
            convcore.set_num_threads(2)
    np.testing.assert_array_equal(results[0], results[1])
    return results[0]


# Weight gradients that go through conv_gemm.weight_grad_gathered: more
# output channels (times min(N, 8) partials) than output pixels.
GATHERED = [
    ((2, 32, 4, 4), (32, 32, 3, 3), 1, 1, 1, 1),
    ((1, 16, 5, 6), (32, 8, 3, 3), (2, 1), 1, (1, 2), 2),   # batch 1, groups, stride, dilation
    ((3, 20, 3, 3), (40, 20, 1, 1), 1, 0, 1, 1),            # pointwise
    ((4, 12, 2, 2), (16, 12, 3, 3), 1, 2, 2, 1),            # padding past the input
]


@pytest.mark.parametrize("shape", GATHERED, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("budget", [1, 1 << 22])             # one image a GEMM, or all
def test_gathered_weight_gradient(shape, dtype, budget, rng, monkeypatch):
    xs, ws, stride, padding, dilation, groups = shape
    spec = conv_spec(xs, ws, np.dtype(dtype), stride, padding, dilation, groups)
    assert conv_gemm.plan(spec.params, 2, True, spec.dtype.itemsize)["gather_weight_grad"]
    monkeypatch.setattr(conv_gemm, "GATHER_BUDGET_ELEMENTS", budget)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    gy = rng.standard_normal(_ref_out_shape(*shape)).astype(dtype)
    _, rw, _ = conv2d_backward_ref(gy, x, w, stride, padding, dilation, groups)
    gw = _at_one_and_two_threads(lambda: F.conv2d_backward(
        gy, x, w, stride, padding, dilation, groups, algorithm="im2col", input_grad=False)[1])
    np.testing.assert_allclose(gw, rw, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(rw).max())


def test_gathered_rule_leaves_large_images_to_the_partials():
    spec = conv_spec((32, 64, 32, 32), (64, 64, 3, 3), np.dtype(np.float32), 1, 1, 1, 1)
    assert not conv_gemm.plan(spec.params, 2, True, 4)["gather_weight_grad"]


# Forwards that go through conv_gemm.forward_gathered: small images under
# at least 128 output channels per group.
GATHERED_FORWARD = [
    ((2, 8, 5, 6), (128, 8, 3, 3), 1, 1, 1, 1),
    ((3, 16, 6, 5), (256, 8, 3, 3), (2, 1), 1, (1, 2), 2),  # groups, stride, dilation
    ((2, 4, 7, 7), (128, 4, 1, 1), 1, 0, 1, 1),             # pointwise
    ((4, 6, 2, 2), (130, 6, 3, 3), 1, 2, 2, 1),             # padding past the input
]


@pytest.mark.parametrize("shape", GATHERED_FORWARD, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("budget", [1, 1 << 22])             # one image a GEMM, or all
def test_gathered_forward(shape, dtype, budget, rng, monkeypatch):
    xs, ws, stride, padding, dilation, groups = shape
    spec = conv_spec(xs, ws, np.dtype(dtype), stride, padding, dilation, groups)
    assert conv_gemm.plan(spec.params, 2, False, spec.dtype.itemsize)["gather_images"]
    monkeypatch.setattr(conv_gemm, "GATHER_BUDGET_ELEMENTS", budget)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    ref = conv2d_ref(x, w, b, stride, padding, dilation, groups)
    y = _at_one_and_two_threads(lambda: F.conv2d(x, w, b, stride, padding, dilation, groups,
                                                 algorithm="im2col"))
    np.testing.assert_allclose(y, ref, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(ref).max())
    # one image per GEMM on the tiny budget, the whole batch on the other
    images = 1 if budget == 1 else xs[0]
    assert conv_gemm.scratch_bytes(spec.params, 2, False, x.itemsize) == (
        images * ref.shape[2] * ref.shape[3] * (ws[1] * ws[2] * ws[3] + ws[0] // groups)
        * x.itemsize)


def test_gathered_forward_rule():
    def gathers(N, C, K, S, R=3, backward=False):
        spec = conv_spec((N, C, S, S), (K, C, R, R), np.dtype(np.float32), 1, R // 2, 1, 1)
        return conv_gemm.plan(spec.params, 2, backward, 4)["gather_images"]
    assert gathers(8, 512, 512, 7) and gathers(8, 64, 128, 7)
    assert not gathers(1, 512, 512, 7)       # one image: nothing to gather
    assert not gathers(8, 64, 64, 7)         # thin weights
    assert not gathers(8, 256, 256, 28)      # big images
    # From 8x8 outputs, a GEMM per image, unless the weights pass 4 MiB.
    assert not gathers(8, 64, 128, 14) and not gathers(8, 256, 256, 8)
    assert not gathers(16, 512, 128, 14, R=1)
    assert gathers(8, 512, 512, 8) and gathers(4, 512, 512, 14)
    assert gathers(16, 1024, 256, 7, R=1)    # 7x7 outputs
    # backward-data follows the same rule
    assert gathers(8, 512, 512, 8, backward=True)
    assert not gathers(8, 256, 256, 8, backward=True)


# Gathered batches big enough for each thread to take whole images (at
# least SLAB_MACS = 2^22 multiply-adds a thread; these have 12.8M-15.9M):
# 3 images cut 1 + 2 on 2 threads, a pointwise layer 2 + 2 (1 + 1 + 2 on
# 3 threads), and two groups, each cut alike.
GATHERED_SPLIT = [
    ((3, 64, 6, 6), (256, 64, 3, 3), 1, 1, 1),
    ((4, 256, 7, 7), (256, 256, 1, 1), 1, 0, 1),
    ((3, 128, 6, 6), (512, 64, 3, 3), 1, 1, 2),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,ws,stride,padding,groups", GATHERED_SPLIT, ids=str)
def test_gathered_passes_split_by_images(xs, ws, stride, padding, groups, dtype, rng):
    """The gathered forward and backward-data, each thread with its own
    images and its own columns of the GEMM: the reference on 1, 2 and 3
    threads, and in float32 the same bits (a column cut sums every element
    alike; OpenBLAS's float64 edge kernels may differ in the last bit, as
    they do for gemm_split's slabs)."""
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    spec = conv_spec(xs, ws, np.dtype(dtype), stride, padding, 1, groups)
    gy = rng.standard_normal(spec.out_shape)
    y_ref = conv2d_ref(x, w, b, stride, padding, 1, groups)
    gx_ref = conv2d_backward_ref(gy, x, w, stride, padding, 1, groups)[0]
    runs = []
    for threads in (1, 2, 3):
        y = np.full(spec.out_shape, np.nan, dtype)
        gx = np.full(xs, np.nan, dtype)
        with _threads.blas_single():
            conv_gemm.forward(x.astype(dtype), w.astype(dtype), b.astype(dtype), y,
                              spec.params, threads,
                              plan=_plan(spec, threads, False, gather_images=True))
            conv_gemm.backward(gy.astype(dtype), x.astype(dtype), w.astype(dtype), gx,
                               np.empty(ws, dtype), True, False, spec.params, threads,
                               plan=_plan(spec, threads, True, gather_images=True))
        np.testing.assert_allclose(y, y_ref, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(y_ref).max())
        np.testing.assert_allclose(gx, gx_ref, rtol=TOL[dtype],
                                   atol=TOL[dtype] * np.abs(gx_ref).max())
        runs.append((y, gx))
    if dtype == np.float64:
        return
    for y, gx in runs[1:]:
        np.testing.assert_array_equal(y, runs[0][0])
        np.testing.assert_array_equal(gx, runs[0][1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs,ws,stride,padding,groups", [
    ((3, 16, 7, 7), (8, 16, 3, 3), 1, 1, 1),
    ((2, 6, 9, 8), (4, 3, 3, 3), 2, 1, 2),
    ((1, 4, 5, 5), (6, 4, 1, 1), 1, 0, 1),
])
def test_backward_data_gathered_matches_reference(xs, ws, stride, padding, groups, dtype, rng):
    """conv_gemm's gathered backward-data (the adjoint of the gathered
    forward) against the float64 reference, at 1 and 2 threads."""
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    spec = conv_spec(xs, ws, np.dtype(dtype), stride, padding, 1, groups)
    gy = rng.standard_normal(spec.out_shape)
    gx_ref = conv2d_backward_ref(gy, x, w, stride, padding, 1, groups)[0]
    for threads in (1, 2):
        gx = np.full(xs, np.nan, dtype)
        with _threads.blas_single():
            conv_gemm.backward(gy.astype(dtype), x.astype(dtype), w.astype(dtype), gx,
                               np.empty(ws, dtype), True, False, spec.params, threads,
                               plan=_plan(spec, threads, True, gather_images=True))
        np.testing.assert_allclose(gx, gx_ref, rtol=TOL[dtype], atol=TOL[dtype] * 10)
