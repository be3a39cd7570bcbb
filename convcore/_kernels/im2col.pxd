from cython cimport floating
from convcore._kernels.conv_params cimport ConvParams

# im2col for one image and one group, channels [c0, c1) of the group:
# x    (Cg, H, W) channels of this image and group        IN
# col  (Cg*R*S, OH*OW) row-major, ld >= OH*OW elements     OUT
#      from row to row (more: several images side by side);
#      rows of channel c are [(c*R + r)*S + s]; only the
#      rows of [c0, c1) are written
# Channel ranges are independent, so callers may split them over threads.
cdef void im2col(const floating* x, floating* col, Py_ssize_t ld,
                 const ConvParams* p, Py_ssize_t c0, Py_ssize_t c1) noexcept nogil

# col2im: the adjoint of im2col, *adding* col into x (x must be zeroed by
# the caller for a plain scatter). Channels [c0, c1) only.
cdef void col2im(const floating* col, floating* x, const ConvParams* p,
                 Py_ssize_t c0, Py_ssize_t c1) noexcept nogil

# col2im of a column whose rows are ld >= OH*OW elements apart (one image
# of several side by side).
cdef void col2im_ld(const floating* col, Py_ssize_t ld, floating* x,
                    const ConvParams* p, Py_ssize_t c0, Py_ssize_t c1) noexcept nogil
