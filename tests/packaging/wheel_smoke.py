"""Smoke check of an installed convcore, run as a script in the environment
a wheel was installed into: by tests/packaging/test_wheel.py (a fresh
virtualenv without a compiler) and by cibuildwheel's test-command
(pyproject.toml, [tool.cibuildwheel]).

Every convolution algorithm, forward and backward, against the float64
NumPy reference of tests/reference/ref_conv.py; and OpenMP compiled in,
since a wheel built without it would run single-threaded without failing.
Exits non-zero (an AssertionError) on any mismatch; prints one line."""
import os
import sys

import numpy as np

# The reference sits in the test tree; it needs only NumPy. The script's
# own directory (not the checkout's root) is what Python puts on sys.path,
# so the convcore imported below is the installed one.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from ref_conv import conv2d_backward_ref, conv2d_ref  # noqa: E402

import convcore  # noqa: E402
from convcore._kernels import openmp_info  # noqa: E402

# (algorithm, stride, padding, groups): Winograd takes 3x3 stride 1 only.
CASES = [("direct", 2, 1, 2), ("im2col", 1, 0, 1), ("winograd", 1, 1, 1), ("auto", 1, "same", 4)]


def main():
    rng = np.random.default_rng(16)
    x = rng.standard_normal((2, 4, 9, 7))
    for algorithm, stride, padding, groups in CASES:
        w = rng.standard_normal((8, 4 // groups, 3, 3))
        b = rng.standard_normal(8)
        y = convcore.F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups,
                              algorithm=algorithm)
        np.testing.assert_allclose(y, conv2d_ref(x, w, b, stride, padding, 1, groups),
                                   rtol=1e-10, atol=1e-12, err_msg=algorithm)
        gy = rng.standard_normal(y.shape)
        got = convcore.F.conv2d_backward(gy, x, w, stride=stride, padding=padding,
                                         groups=groups, algorithm=algorithm)
        want = conv2d_backward_ref(gy, x, w, stride, padding, 1, groups)
        for name, g, r in zip(("grad_x", "grad_w", "grad_b"), got, want):
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12,
                                       err_msg=f"{algorithm} {name}")
    assert openmp_info.openmp_enabled(), "this convcore was built without OpenMP"
    print(f"convcore {convcore.__version__} from {os.path.dirname(convcore.__file__)}: "
          f"{len(CASES)} convolutions forward and backward match NumPy; OpenMP on")


if __name__ == "__main__":
    main()
