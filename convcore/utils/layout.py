"""Image layouts: channels-first (NCHW, convcore's and PyTorch's) and
channels-last (NHWC, Keras' and TensorFlow's default).

The kernels compute in NCHW only. An op or layer given
`data_format="channels_last"` moves the channel axis to dim 1 on the way
in and back to the end on the way out; both moves are transposed views
(ndarray.transpose), so the one copy is the contiguous NCHW copy the op makes of
a non-contiguous input, and a chain of channels-last layers passes its
arrays along without copying them again. The output therefore has NHWC
shape but not NHWC memory order: np.ascontiguousarray makes it so when
that matters.

The names are Keras' ("channels_first", "channels_last"); PyTorch-style
"NCHW" / "NHWC" are accepted as aliases (any case)."""
import math


CHANNELS_FIRST = "channels_first"
CHANNELS_LAST = "channels_last"

_ALIASES = {"channels_first": CHANNELS_FIRST, "nchw": CHANNELS_FIRST,
            "channels_last": CHANNELS_LAST, "nhwc": CHANNELS_LAST}


def check_data_format(data_format, fn="convcore"):
    """The canonical name ("channels_first" or "channels_last") of a
    data_format argument; ValueError naming the choices otherwise."""
    if data_format is CHANNELS_FIRST or data_format is CHANNELS_LAST:
        return data_format  # the common case, without a dict lookup
    name = _ALIASES.get(data_format.lower()) if isinstance(data_format, str) else None
    if name is None:
        raise ValueError(f"{fn}: data_format must be 'channels_first' (NCHW) or "
                         f"'channels_last' (NHWC), got {data_format!r}")
    return name


def channel_axis(data_format):
    """1 for channels-first, -1 for channels-last (a canonical name)."""
    return 1 if data_format == CHANNELS_FIRST else -1


def to_channels_first(x, data_format):
    """x in `data_format` (canonical) -> a channels-first view of it."""
    if data_format == CHANNELS_FIRST or getattr(x, "ndim", 0) < 3:
        return x  # not an array: left to the op's own checks
    return x.transpose((0, x.ndim - 1) + tuple(range(1, x.ndim - 1)))


def from_channels_first(y, data_format):
    """A channels-first result -> a view in `data_format` (canonical); None
    stays None (a gradient not computed)."""
    if y is None or data_format == CHANNELS_FIRST or y.ndim < 3:
        return y
    return y.transpose((0,) + tuple(range(2, y.ndim)) + (1,))


def shape_to_channels_first(shape, data_format):
    """The channels-first shape of an array of `shape` in `data_format`."""
    if (data_format == CHANNELS_FIRST or not isinstance(shape, (tuple, list))
            or len(shape) < 3):
        return shape  # not a shape: left to the op's own checks
    shape = tuple(shape)
    return (shape[0], shape[-1]) + shape[1:-1]


def shape_from_channels_first(shape, data_format):
    """The inverse of shape_to_channels_first."""
    if data_format == CHANNELS_FIRST or len(shape) < 3:
        return tuple(shape)
    shape = tuple(shape)
    return (shape[0],) + shape[2:] + (shape[1],)


def _transpose_hint(ndim, to):
    if ndim == 4:
        return "x.transpose(0, 3, 1, 2)" if to == CHANNELS_FIRST else "x.transpose(0, 2, 3, 1)"
    return "np.moveaxis(x, -1, 1)" if to == CHANNELS_FIRST else "np.moveaxis(x, 1, -1)"


def layout_hint(shape, channels, data_format):
    """': this looks like channels-last (NHWC); pass ...' when an input of
    `shape` that lacks `channels` channels where `data_format` puts them
    has exactly that many where the other layout does; '' otherwise."""
    shape = tuple(shape)
    if len(shape) < 3:
        return ""
    if data_format == CHANNELS_FIRST and shape[-1] == channels != shape[1]:
        found, name = CHANNELS_LAST, "channels-last (NHWC)"
    elif data_format == CHANNELS_LAST and shape[1] == channels != shape[-1]:
        found, name = CHANNELS_FIRST, "channels-first (NCHW)"
    else:
        return ""
    return (f": this looks like {name}; pass data_format='{found}' or transpose "
            f"with {_transpose_hint(len(shape), data_format)}")


def channels_error(fn, channels, shape, data_format):
    """The ValueError for an input of `shape` whose channel dimension (where
    `data_format` puts it) is not `channels`, with a layout hint when the
    other layout fits."""
    shape = tuple(shape)
    where = "dim 1 (NCHW)" if data_format == CHANNELS_FIRST else "the last dim (NHWC)"
    return ValueError(f"{fn}: expected input with {channels} channels in {where}, got "
                      f"shape {shape}{layout_hint(shape, channels, data_format)}")


def refuse_other_layout(x, channels, data_format, fn):
    """Raise channels_error only when x has not `channels` channels where
    `data_format` puts them but has them where the other layout does;
    any other mismatch is left to the op's own, more specific, checks."""
    shape = getattr(x, "shape", None)
    # Layers call this on every forward: the usual, matching, case first.
    if shape is None or len(shape) < 3 or shape[channel_axis(data_format)] == channels:
        return
    if layout_hint(shape, channels, data_format):
        raise channels_error(fn, channels, shape, data_format)


# Channel counts of ordinary images: grey, RGB, RGBA.
IMAGE_CHANNELS = (1, 3, 4)


def looks_channels_last(shape):
    """Whether a 4-D image batch of `shape` is evidently (N, H, W, C): its
    last dim is an image's channel count (1, 3 or 4) and dims 1 and 2 both
    exceed 4, so that read as (N, C, H, W) it would be images of 5 or more
    channels only 1 to 4 pixels wide. Small or otherwise ambiguous shapes
    ((N, 3, 32, 3), (N, 2, 3, 4)) are taken as laid out as told."""
    return (len(shape) == 4 and shape[-1] in IMAGE_CHANNELS
            and shape[1] > max(IMAGE_CHANNELS) and shape[2] > max(IMAGE_CHANNELS))


def as_ncs(x):
    """(N, C, ...) -> its (N, C, S) view, the spatial axes as one (x is
    C-contiguous): the shape the per-channel kernels take."""
    return x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))
