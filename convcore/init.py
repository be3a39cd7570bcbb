"""Weight initialisers with PyTorch's gain and fan semantics.

Each function fills an ndarray or a Parameter's .data in place and returns
it. `rng` is a numpy Generator, an int seed, or None for convcore's default
generator (convcore/_runtime/seed.py; reseed it with `convcore.manual_seed`,
which np.random.seed does not touch). Values are drawn in float64 and
rounded to the array's dtype, so a float32 and a float64 layer drawn from
the same seed hold the same numbers up to rounding.

Fans (torch.nn.init._calculate_fan_in_and_fan_out): for a weight of shape
(out, in, *kernel), fan_in = in * prod(kernel), fan_out = out * prod(kernel).
"""
from __future__ import annotations

import contextlib
import math
import threading
from typing import Iterator, Optional, Tuple, TypeVar

import numpy as np

from convcore._runtime import seed as _seed
from convcore.utils.types import Seed

# An ndarray or a Parameter (anything with a float ndarray .data): each
# initialiser fills it in place and returns the same object.
Tensor = TypeVar("Tensor")

_skip = threading.local()

# Draws happen in float64 chunks of this many values: the same stream as one
# big draw, without a float64 copy of a 100M-parameter layer in memory.
_CHUNK = 1 << 20


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed convcore's default generator: layer initialisation without an
    rng, dropout masks, unseeded DataLoaders (convcore.manual_seed)."""
    return _seed.manual_seed(seed)


def get_rng(rng: Seed = None) -> np.random.Generator:
    """A numpy Generator from a Generator, an int seed, or None (the default)."""
    if rng is None:
        return _seed.default_generator()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, an int seed or None, got "
                    f"{type(rng).__name__}")


def _array(tensor, fn):
    # ndarray has a .data too (its raw buffer), so test for it first
    data = tensor if isinstance(tensor, np.ndarray) else getattr(tensor, "data", tensor)
    if not isinstance(data, np.ndarray) or data.dtype.kind != "f":
        raise TypeError(f"{fn}: expected a float ndarray or Parameter, got "
                        f"{type(tensor).__name__}")
    return data


def calculate_gain(nonlinearity: str, param: Optional[float] = None) -> float:
    """torch.nn.init.calculate_gain: the std multiplier that keeps activation
    variance through the given nonlinearity."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
              "conv_transpose2d", "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def calculate_fan_in_and_fan_out(tensor: object) -> Tuple[int, int]:
    shape = _array(tensor, "calculate_fan_in_and_fan_out").shape
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need at least 2 dimensions, got "
                         f"shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Layers built inside keep zero weights instead of drawing them: for a
    model whose weights come from load_state_dict next, or for summary()
    of a large model. Thread-local."""
    previous = getattr(_skip, "on", False)
    _skip.on = True
    try:
        yield
    finally:
        _skip.on = previous


def _fill(data, draw):
    """data[...] = draw(n) in chunks, rounded to data's dtype."""
    flat = data.reshape(-1)  # data is contiguous: a view
    for start in range(0, flat.size, _CHUNK):
        stop = min(start + _CHUNK, flat.size)
        flat[start:stop] = draw(stop - start)
    return data


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0, rng: Seed = None) -> Tensor:
    data = _array(tensor, "uniform_")
    gen = get_rng(rng)
    _fill(data, lambda n: gen.uniform(a, b, size=n))
    return tensor


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, rng: Seed = None) -> Tensor:
    data = _array(tensor, "normal_")
    gen = get_rng(rng)
    _fill(data, lambda n: gen.normal(mean, std, size=n))
    return tensor


def constant_(tensor: Tensor, val: float) -> Tensor:
    _array(tensor, "constant_")[...] = val
    return tensor


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, rng: Seed = None) -> Tensor:
    """U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)): variance
    2 / (fan_in + fan_out) times gain^2 (Glorot & Bengio)."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -a, a, rng)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, rng: Seed = None) -> Tensor:
    """N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng)


def _kaiming_std(tensor, a, mode, nonlinearity, fn):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{fn}: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", rng: Seed = None) -> Tensor:
    """U(-b, b), b = gain * sqrt(3 / fan) (He et al.); torch's layer default
    is a = sqrt(5), which gives b = 1 / sqrt(fan_in)."""
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity, "kaiming_uniform_")
    return uniform_(tensor, -bound, bound, rng)


def kaiming_normal_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", rng: Seed = None) -> Tensor:
    """N(0, std^2), std = gain / sqrt(fan) (He et al.)."""
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity,
                                            "kaiming_normal_"), rng)


def default_layer_init_(weight: object, bias: object, rng: Seed = None) -> None:
    """PyTorch's reset_parameters() for Conv2d and Linear: kaiming_uniform_
    with a = sqrt(5) on the weight, bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Nothing happens inside `skip_init()`."""
    if getattr(_skip, "on", False):
        return
    rng = get_rng(rng)
    kaiming_uniform_(weight, a=math.sqrt(5), rng=rng)
    if bias is not None:
        fan_in, _ = calculate_fan_in_and_fan_out(weight)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        uniform_(bias, -bound, bound, rng)
