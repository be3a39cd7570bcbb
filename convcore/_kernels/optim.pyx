"""Optimiser updates in one pass over each parameter: SGD (momentum,
dampening, Nesterov, weight decay) and Adam/AdamW (AMSGrad).

Written as NumPy expressions, an update makes a temporary per operation
and runs on one thread: SGD with momentum walks a parameter's size five
times, Adam ten, which for VGG's 100-million-weight classifier was three
times PyTorch's step. Here every element is read and written once, in
fixed blocks shared over the threads.

Each element goes through the same float operations, in the same order
and precision, as the NumPy expressions in convcore.optim (the scalars
cast to the parameter's dtype, as NumPy does with Python floats), so the
result is the same whichever path runs.

Preconditions (checked by convcore.optim): C-contiguous 1-D views of
arrays of equal size and one dtype.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf

# Elements per block: large enough to amortise scheduling, small enough
# to share a layer's weights over two threads.
cdef enum:
    BLOCK = 32768


cdef inline floating _sqrt(floating v) noexcept nogil:
    if floating is float:
        return sqrtf(v)
    else:
        return sqrt(v)


def sgd(floating[::1] p, const floating[::1] g, floating[::1] buf, double lr,
        double momentum, double dampening, double weight_decay, bint nesterov,
        bint first, int num_threads):
    """p -= lr * d, with d = g + weight_decay * p and, when momentum != 0,
    buf = d (first step) or momentum * buf + (1 - dampening) * d, then
    d = d + momentum * buf (Nesterov) or buf. buf is unused (size 0
    allowed) without momentum.                                  OUT: p, buf"""
    cdef Py_ssize_t n = p.shape[0], blocks = (n + BLOCK - 1) // BLOCK, b, i, hi
    cdef floating f_lr = <floating> lr, f_mom = <floating> momentum
    cdef floating f_keep = <floating> (1 - dampening), f_wd = <floating> weight_decay
    cdef floating d
    cdef bint decay = weight_decay != 0, use_mom = momentum != 0
    with nogil:
        for b in prange(blocks, schedule='static', num_threads=num_threads):
            hi = min(n, (b + 1) * BLOCK)
            for i in range(b * BLOCK, hi):
                d = g[i]
                if decay:
                    d = d + f_wd * p[i]
                if use_mom:
                    if first:
                        buf[i] = d
                    else:
                        buf[i] = f_mom * buf[i] + f_keep * d
                    if nesterov:
                        d = d + f_mom * buf[i]
                    else:
                        d = buf[i]
                p[i] = p[i] - f_lr * d


def adam(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
         floating[::1] vmax, double lr, double beta1, double beta2, double eps,
         double weight_decay, bint decoupled, double step_size, double root_correction,
         int num_threads):
    """One Adam step (convcore.optim.Adam's docstring): with decoupled
    weight decay (AdamW) p *= 1 - lr * weight_decay first, else d = g +
    weight_decay * p; m = beta1 m + (1 - beta1) d; v = beta2 v + (1 -
    beta2) d^2; with vmax (size > 0, AMSGrad) vmax = max(vmax, v) is used
    for v; p -= step_size * m / (sqrt(v) / root_correction + eps), where
    step_size = lr / (1 - beta1^t), root_correction = sqrt(1 - beta2^t).
                                                        OUT: p, m, v, vmax"""
    cdef Py_ssize_t n = p.shape[0], blocks = (n + BLOCK - 1) // BLOCK, b, i, hi
    cdef floating f_b1 = <floating> beta1, f_b2 = <floating> beta2
    cdef floating f_k1 = <floating> (1 - beta1), f_k2 = <floating> (1 - beta2)
    cdef floating f_eps = <floating> eps, f_wd = <floating> weight_decay
    cdef floating f_shrink = <floating> (1 - lr * weight_decay)
    cdef floating f_step = <floating> step_size, f_root = <floating> root_correction
    cdef floating d, vi
    cdef bint decay = weight_decay != 0, ams = vmax.shape[0] > 0
    with nogil:
        for b in prange(blocks, schedule='static', num_threads=num_threads):
            hi = min(n, (b + 1) * BLOCK)
            for i in range(b * BLOCK, hi):
                d = g[i]
                if decay:
                    if decoupled:
                        p[i] = p[i] * f_shrink
                    else:
                        d = d + f_wd * p[i]
                m[i] = f_b1 * m[i] + f_k1 * d
                vi = f_b2 * v[i] + f_k2 * (d * d)
                v[i] = vi
                if ams:   # np.maximum: NaN if either is NaN
                    if vmax[i] > vi or vmax[i] != vmax[i]:
                        vi = vmax[i]
                    vmax[i] = vi
                p[i] = p[i] - f_step * (m[i] / (_sqrt(vi) / f_root + f_eps))
