"""Small helpers shared by the layers."""
import numpy as np

from convcore.functional._validation import FLOAT_DTYPES


def layer_dtype(dtype, layer):
    """np.dtype of a layer's parameters: float32 or float64 only."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{layer}: dtype must be float32 or float64, got {dtype!r}")
    return dt


def missing_op(name):
    """Stand-in for a functional op not present in this build."""
    def op(*args, **kwargs):
        raise NotImplementedError(
            f"convcore.functional.{name} is not available in this build; the layer "
            "that needs it cannot run")
    return op


def functional(name):
    """convcore.functional.<name>, or a stand-in raising NotImplementedError.
    Looked up at call time so the layers need no import-order games."""
    import convcore.functional as F
    return getattr(F, name, None) or missing_op(name)
