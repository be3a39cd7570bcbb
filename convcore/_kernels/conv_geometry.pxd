from convcore._kernels.conv_params cimport ConvParams

# The geometry of one convolution as a Python object: floor 2 builds it once
# per checked shape (ConvSpec.params) and every conv driver (conv_direct,
# conv_depthwise, conv_gemm, winograd) reads its ConvParams, so no driver rebuilds
# the struct from tuples and shapes on each call.
cdef class ConvGeometry:
    cdef readonly ConvParams params


# Raises ValueError unless arrays of these shapes are what p describes:
# input (N, C, H, W), weight (K, C/groups, R, S), output (N, K, OH, OW).
# The drivers call it so that a geometry built for other arrays cannot send
# a kernel past their ends.
cdef int check_shapes(const ConvParams* p, const Py_ssize_t* x_shape,
                      const Py_ssize_t* w_shape, const Py_ssize_t* y_shape) except -1
