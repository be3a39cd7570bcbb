"""The table of the native API's typed entry points, from which the build
writes their float32 (`_f32`) and float64 (`_f64`) declarations and
bodies: setup.py expands `_kernels/native.pxd.tp`, `_kernels/native.pyx.tp`
and `convcore/native.pxd.tp` with it (Tempita, as scikit-learn's
`utils/_weight_vector.pyx.tp`). To add an entry point, add a row here and
its worker to native.pyx.tp's cimports; the ABI version goes up when a
row's meaning or signature changes.

A row is (section, name, worker, signature, contract):
    section    where native.pxd lists it (a `{{for}}` over that section)
    name       the C name without its `_f32`/`_f64` suffix
    worker     the fused-type function that the body calls, with the
               signature's parameters in order
    signature  C parameters; `T` stands for the element type (float in
               `_f32`, double in `_f64`)
    contract   the comment above the pair in native.pxd ("" when the
               section's comment says it all)

Plain Python, no convcore import: setup.py runs it before anything is
compiled, and tests compare it with the compiled module.
"""
import re
from collections import namedtuple

EntryPoint = namedtuple("EntryPoint", "section name worker signature contract")

# The element type of each suffix.
DTYPES = (("f32", "float"), ("f64", "double"))

_CONV_IMAGE = "const ConvParams* p, Py_ssize_t n"

ENTRY_POINTS = (
    # -- convolution, direct --------------------------------------------------
    EntryPoint(
        "direct", "conv2d_direct_forward", "_direct_forward",
        f"const T* x, const T* w, const T* bias, T* y, {_CONV_IMAGE}",
        "y[n] (K, OH, OW), overwritten, for one image n. No scratch."),
    EntryPoint(
        "direct", "conv2d_direct_backward_data", "_direct_backward_data",
        f"const T* grad_y, const T* w, T* grad_x, {_CONV_IMAGE}",
        "grad_x[n] (C, H, W), overwritten, for one image n. No scratch."),
    EntryPoint(
        "direct", "conv2d_direct_backward_weight", "_direct_backward_weight",
        "const T* grad_y, const T* x, T* grad_w, const ConvParams* p, "
        "Py_ssize_t k, T* scratch",
        "grad_w[k] (C/groups, R, S), overwritten, for one output channel k, summed\n"
        "over all N images in image order (so it is the same at any thread count).\n"
        "Parallelise over k. scratch: conv2d_direct_weight_scratch_size(p)\n"
        "elements, private to the calling thread."),
    # -- convolution, im2col + GEMM -------------------------------------------
    EntryPoint(
        "gemm", "conv2d_gemm_forward", "_gemm_forward",
        f"const T* x, const T* w, const T* bias, T* y, {_CONV_IMAGE}, T* col",
        "y[n] (K, OH, OW), overwritten, for one image n."),
    EntryPoint(
        "gemm", "conv2d_gemm_backward_data", "_gemm_backward_data",
        f"const T* grad_y, const T* w, T* grad_x, {_CONV_IMAGE}, T* col",
        "grad_x[n] (C, H, W), overwritten, for one image n."),
    EntryPoint(
        "gemm", "conv2d_gemm_backward_weight", "_gemm_backward_weight",
        f"const T* grad_y, const T* x, T* grad_w, {_CONV_IMAGE}, T* col",
        "grad_w (K, C/groups, R, S) += the weight gradient of image n alone: zero\n"
        "grad_w first; concurrent calls must add into different buffers (e.g. one\n"
        "partial sum per thread, added up afterwards)."),
    # -- pooling ----------------------------------------------------------------
    EntryPoint(
        "pool", "max_pool2d_plane", "max_pool_plane",
        "const T* x, T* y, int64_t* idx, const PoolParams* p",
        "y = max over each window; idx (may be NULL) = flat index h*W + w of the\n"
        "max within the input plane, -1 for a window with no tap inside the input."),
    EntryPoint(
        "pool", "adaptive_max_pool2d_plane", "adaptive_max_plane",
        "const T* x, T* y, int64_t* idx, const PoolParams* p", ""),
    EntryPoint(
        "pool", "max_pool2d_backward_plane", "max_unpool_plane",
        "const T* grad_y, const int64_t* idx, T* grad_x, Py_ssize_t in_plane, "
        "Py_ssize_t out_plane",
        "grad_x (in_plane = H*W values, overwritten) = grad_y (out_plane = OH*OW\n"
        "values) scattered through idx (each in [-1, in_plane)); serves max and\n"
        "adaptive max pooling."),
    EntryPoint(
        "pool", "avg_pool2d_plane", "avg_pool_plane",
        "const T* x, T* y, const PoolParams* p, bint count_include_pad",
        "Average pooling (zero padding; divisor per count_include_pad) and its\n"
        "gradient (grad_x overwritten)."),
    EntryPoint(
        "pool", "avg_pool2d_backward_plane", "avg_pool_backward_plane",
        "const T* grad_y, T* grad_x, const PoolParams* p, bint count_include_pad", ""),
    EntryPoint(
        "pool", "adaptive_avg_pool2d_plane", "adaptive_avg_plane",
        "const T* x, T* y, const PoolParams* p",
        "Adaptive average pooling and its gradient (grad_x overwritten)."),
    EntryPoint(
        "pool", "adaptive_avg_pool2d_backward_plane", "adaptive_avg_backward_plane",
        "const T* grad_y, T* grad_x, const PoolParams* p", ""),
    # -- batch norm -------------------------------------------------------------
    EntryPoint(
        "batch_norm", "batch_norm_channel_stats", "channel_stats",
        "const T* x, Py_ssize_t N, Py_ssize_t C, Py_ssize_t S, Py_ssize_t c, "
        "double* mean, double* var",
        "mean and biased variance of channel c (two passes: mean, then squared\n"
        "deviations from it). N * S >= 1."),
    EntryPoint(
        "batch_norm", "batch_norm_channel_grad_sums", "channel_grad_sums",
        "const T* grad_y, const T* x, Py_ssize_t N, Py_ssize_t C, Py_ssize_t S, "
        "Py_ssize_t c, double mean, double* sum_g, double* sum_gd",
        "sum_g = sum(grad_y), sum_gd = sum(grad_y * (x - mean)) over channel c."),
    # -- local response norm ----------------------------------------------------
    EntryPoint(
        "lrn", "lrn_forward_block", "lrn_forward_block",
        "const T* x, T* y, const LrnParams* p, Py_ssize_t s0, Py_ssize_t L, "
        "double* scratch",
        "y (forward) or grad_x (backward) at positions [s0, s0 + L), overwritten."),
    EntryPoint(
        "lrn", "lrn_backward_block", "lrn_backward_block",
        "const T* grad_y, const T* x, T* grad_x, const LrnParams* p, Py_ssize_t s0, "
        "Py_ssize_t L, double* scratch", ""),
)


def entry_points(section):
    """The rows of one section, in table order."""
    rows = [e for e in ENTRY_POINTS if e.section == section]
    if not rows:
        raise KeyError(f"no native entry points in section {section!r}")
    return rows


def typed_names():
    """Every generated C name (`<name>_f32`, `<name>_f64`), in table order."""
    return [f"{e.name}_{suffix}" for e in ENTRY_POINTS for suffix, _ in DTYPES]


def _parameters(entry, ctype):
    return [re.sub(r"\bT\b", ctype, p.strip()) for p in entry.signature.split(",")]


def _wrapped(head, parameters, tail, width=88):
    """`head(p1, p2, ...)tail`, parameters continued under the first one
    once a line would pass `width` columns."""
    lines, line = [], head + "("
    indent = " " * len(line)
    for i, p in enumerate(parameters):
        piece = p + ("," if i < len(parameters) - 1 else ")" + tail)
        if line.strip() and line != head + "(" and len(line) + 1 + len(piece) > width:
            lines.append(line.rstrip())
            line = indent
        line += piece if line.endswith("(") or line == indent else " " + piece
    lines.append(line)
    return "\n".join(lines)


def declaration(entry, suffix, ctype):
    """The `cdef void name_suffix(...) noexcept nogil` line(s), without the
    colon (a .pxd declaration; the .pyx adds `:` and the body)."""
    return _wrapped(f"cdef void {entry.name}_{suffix}", _parameters(entry, ctype),
                    " noexcept nogil")


def call(entry):
    """The body: the worker called with the signature's parameters."""
    names = [p.split()[-1].lstrip("*") for p in _parameters(entry, "T")]
    return f"{entry.worker}({', '.join(names)})"


def comment(text):
    """text as `# ` comment lines ("" for no text)."""
    return "".join(f"# {line}\n".replace("# \n", "#\n") for line in text.splitlines())


def declarations(section):
    """native.pxd's block for a section: each row's contract, then its
    `_f32` and `_f64` declarations."""
    return "\n".join(
        comment(e.contract) + "".join(declaration(e, s, t) + "\n" for s, t in DTYPES)
        for e in entry_points(section))


def definitions(section):
    """native.pyx's block for a section: both typed functions of each row,
    each a call of the row's worker."""
    return "\n\n".join(
        f"{declaration(e, s, t)}:\n    {call(e)}\n"
        for e in entry_points(section) for s, t in DTYPES)


def cimport_list():
    """convcore/native.pxd's cimport lines: each row's `_f32, _f64` pair."""
    return "\n".join(f"    {e.name}_f32, {e.name}_f64," for e in ENTRY_POINTS)
