"""Type aliases used in the public API's annotations (PEP 484).

Inputs take anything NumPy turns into an array (ArrayLike); results are
ndarrays of the input's float dtype. A `Seed` is what `rng=` accepts: a
numpy Generator, an int seed, or None for convcore's default generator.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Array", "ArrayLike", "Seed", "IntOrPair", "PathLike", "Grads", "AdaptiveSize",
           "LossValue"]

Array = np.ndarray
Seed = Union[int, np.integer, np.random.Generator, None]
IntOrPair = Union[int, Tuple[int, int]]
PathLike = Union[str, "os.PathLike[str]"]
# (grad_x, grad_weight, grad_bias or None) of a layer with weights
Grads = Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]
# an adaptive pool's output_size: an int, or (h, w) with None keeping that input size
AdaptiveSize = Union[int, Tuple[Optional[int], Optional[int]], List[Optional[int]]]
# a loss: a float for reduction "mean" and "sum", the per-element array for "none"
LossValue = Union[float, np.ndarray]
