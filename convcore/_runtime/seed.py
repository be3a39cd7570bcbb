"""The one generator convcore draws from when no `rng` or seed is given.

Layer initialisation (convcore.init), dropout masks (nn.Dropout and
F.dropout), and an unseeded DataLoader's shuffling and augmentation seed
all come from this NumPy Generator, so `convcore.manual_seed(s)` makes a
run repeatable. As with torch.manual_seed, NumPy's global state
(`np.random.seed`) is a different generator and does not affect it.

`manual_seed` reseeds the generator in place rather than replacing it, so
layers built before the call (a Dropout holds the generator) follow it,
as they do in PyTorch.
"""
from __future__ import annotations

import numbers

import numpy as np

_generator = np.random.default_rng()


def default_generator() -> np.random.Generator:
    """The shared numpy.random.Generator (advanced by every draw)."""
    return _generator


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed convcore's default generator with a non-negative int `seed`
    (weights drawn without rng, dropout masks, unseeded DataLoaders).
    Returns the generator, as torch.manual_seed returns its own."""
    if not isinstance(seed, numbers.Integral) or isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"manual_seed: seed must be >= 0, got {seed}")
    _generator.bit_generator.state = np.random.default_rng(int(seed)).bit_generator.state
    return _generator
