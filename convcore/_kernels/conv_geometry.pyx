"""ConvGeometry: one convolution's ConvParams (conv_params.pxd), built once
by the functional floor and handed to the conv drivers as it is."""
from convcore._kernels.conv_params cimport ConvParams, make_params


cdef class ConvGeometry:
    """ConvParams of input (N, C, H, W), weight (K, C/groups, R, S) and
    output (N, K, OH, OW); pad_h/pad_w are the top/left padding (a larger
    bottom/right one shows in OH/OW alone). `params` reads as a dict."""

    def __init__(self, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                 Py_ssize_t K, Py_ssize_t R, Py_ssize_t S,
                 Py_ssize_t OH, Py_ssize_t OW,
                 Py_ssize_t stride_h, Py_ssize_t stride_w,
                 Py_ssize_t pad_h, Py_ssize_t pad_w,
                 Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups):
        self.params = make_params(N, C, H, W, K, R, S, OH, OW, stride_h, stride_w,
                                  pad_h, pad_w, dil_h, dil_w, groups)

    def __reduce__(self):
        cdef ConvParams p = self.params
        return ConvGeometry, (p.N, p.C, p.H, p.W, p.K, p.R, p.S, p.OH, p.OW,
                              p.stride_h, p.stride_w, p.pad_h, p.pad_w,
                              p.dil_h, p.dil_w, p.groups)

    def __repr__(self):
        return f"ConvGeometry({self.params})"


cdef int check_shapes(const ConvParams* p, const Py_ssize_t* x_shape,
                      const Py_ssize_t* w_shape, const Py_ssize_t* y_shape) except -1:
    if (x_shape[0] != p.N or x_shape[1] != p.C or x_shape[2] != p.H or x_shape[3] != p.W
            or w_shape[0] != p.K or w_shape[1] != p.C // p.groups
            or w_shape[2] != p.R or w_shape[3] != p.S
            or y_shape[0] != p.N or y_shape[1] != p.K
            or y_shape[2] != p.OH or y_shape[3] != p.OW):
        raise ValueError(
            f"convcore: arrays of shapes {_shape(x_shape)}, {_shape(w_shape)}, "
            f"{_shape(y_shape)} do not match the geometry {p[0]}")
    return 0


cdef tuple _shape(const Py_ssize_t* shape):
    return (shape[0], shape[1], shape[2], shape[3])
