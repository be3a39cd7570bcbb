"""Small helpers shared by the layers."""
import numpy as np

from convcore.utils.layout import CHANNELS_FIRST
from convcore.utils.validation import FLOAT_DTYPES


def layer_dtype(dtype, layer):
    """np.dtype of a layer's parameters: float32 or float64 only."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{layer}: dtype must be float32 or float64, got {dtype!r}")
    return dt


def data_format_repr(layer):
    """', data_format=...' for a layer's extra_repr; '' for the default
    channels_first."""
    if layer.data_format == CHANNELS_FIRST:
        return ""
    return f", data_format={layer.data_format!r}"

