"""ReLU forward and backward, which run after every convolution of every
training step: a memory-bound stream split into fixed blocks over the
threads. Measured on a 32x64x32x32 float32 map, these beat NumPy's
np.maximum / np.where by several times; the other activations (softmax
included: NumPy's SIMD exp beats a scalar expf loop) are NumPy expressions
in convcore.functional.activations.

Preconditions (checked by convcore.functional): C-contiguous 1-D views of
arrays of equal size.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY

# Elements per relu block: large enough to amortise scheduling, small
# enough to split a feature map over two threads.
cdef enum:
    BLOCK = 16384


cdef void relu_block(const floating* x, floating* y, Py_ssize_t lo,
                     Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(lo, hi):
        # "v < 0" (not "v > 0") so that NaN passes through, as in torch.
        y[i] = 0 if x[i] < 0 else x[i]


cdef void clip_block(const floating* x, floating* y, Py_ssize_t lo,
                     Py_ssize_t hi, floating cap) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(lo, hi):
        v = x[i]  # NaN passes both tests, as in torch's hardtanh
        v = 0 if v < 0 else v
        y[i] = cap if v > cap else v


cdef void clip_backward_block(const floating* gy, const floating* y,
                              floating* gx, Py_ssize_t lo, Py_ssize_t hi,
                              floating cap) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, v
    for i in range(lo, hi):
        # torch's hardtanh_backward: no gradient at 0, cap and beyond
        g = gy[i]
        v = y[i]
        gx[i] = 0 if (v <= 0) | (v >= cap) else g


cdef void relu_backward_block(const floating* gy, const floating* y,
                              floating* gx, Py_ssize_t lo,
                              Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g
    for i in range(lo, hi):
        # torch's threshold_backward: zero where y <= 0, grad elsewhere.
        # Loading g unconditionally lets the compiler turn the choice into
        # a vector mask instead of a branch that mispredicts on half the
        # elements.
        g = gy[i]
        gx[i] = 0 if y[i] <= 0 else g


def relu(const floating[::1] x, floating[::1] y, int num_threads, double cap=INFINITY):
    """y = max(x, 0), also min(., cap) when cap is finite (ReLU6: 6);
    NaN kept.                                                        OUT: y"""
    cdef Py_ssize_t n = x.shape[0], blk, nblk = (n + BLOCK - 1) // BLOCK
    cdef bint capped = cap < INFINITY
    if n == 0:
        return
    with nogil:
        for blk in prange(nblk, schedule='static', num_threads=num_threads):
            if capped:
                clip_block(&x[0], &y[0], blk * BLOCK, min(n, (blk + 1) * BLOCK),
                           <floating> cap)
            else:
                relu_block(&x[0], &y[0], blk * BLOCK, min(n, (blk + 1) * BLOCK))


def relu_backward(const floating[::1] grad_y, const floating[::1] y,
                  floating[::1] grad_x, int num_threads, double cap=INFINITY):
    """grad_x = grad_y where y > 0 (and y < cap when finite), else 0.
                                                                OUT: grad_x"""
    cdef Py_ssize_t n = y.shape[0], blk, nblk = (n + BLOCK - 1) // BLOCK
    cdef bint capped = cap < INFINITY
    if n == 0:
        return
    with nogil:
        for blk in prange(nblk, schedule='static', num_threads=num_threads):
            if capped:
                clip_backward_block(&grad_y[0], &y[0], &grad_x[0], blk * BLOCK,
                                    min(n, (blk + 1) * BLOCK), <floating> cap)
            else:
                relu_backward_block(&grad_y[0], &y[0], &grad_x[0], blk * BLOCK,
                                    min(n, (blk + 1) * BLOCK))


cdef void tanh_backward_block(const floating* gy, const floating* y, floating* gx,
                              Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(lo, hi):
        gx[i] = gy[i] * (<floating> 1 - y[i] * y[i])   # 1.0 would compute in double


cdef void sigmoid_backward_block(const floating* gy, const floating* y, floating* gx,
                                 Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(lo, hi):
        gx[i] = gy[i] * (y[i] * (<floating> 1 - y[i]))


def output_backward(const floating[::1] grad_y, const floating[::1] y,
                    floating[::1] grad_x, str kind, int num_threads):
    """grad_x = grad_y * f'(x) from the output y = f(x): "tanh" grad_y *
    (1 - y^2), "sigmoid" grad_y * (y * (1 - y)), the operations of the
    NumPy expressions in the same order (the same bits). grad_x may be
    grad_y.                                                     OUT: grad_x"""
    cdef Py_ssize_t n = y.shape[0], blk, nblk = (n + BLOCK - 1) // BLOCK
    cdef bint sigmoid
    if kind == "sigmoid":
        sigmoid = True
    elif kind == "tanh":
        sigmoid = False
    else:
        raise ValueError(f"output_backward: unknown kind {kind!r}")
    if n == 0:
        return
    with nogil:
        for blk in prange(nblk, schedule='static', num_threads=num_threads):
            if sigmoid:
                sigmoid_backward_block(&grad_y[0], &y[0], &grad_x[0], blk * BLOCK,
                                       min(n, (blk + 1) * BLOCK))
            else:
                tanh_backward_block(&grad_y[0], &y[0], &grad_x[0], blk * BLOCK,
                                    min(n, (blk + 1) * BLOCK))
