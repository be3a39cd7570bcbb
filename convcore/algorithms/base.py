"""What every convolution algorithm provides, and the registry of them.

An algorithm accepts the arguments of every other and gives the same
result to float rounding; a specialised one says what it supports through
`supports(spec)`. _REGISTRY maps each name to its instance; registry.py
fills it (it imports every algorithm module, which import this one)."""
from typing import Dict, Optional


class ConvAlgorithm:
    """One way of computing a convolution; subclasses fill the kernels."""

    name: Optional[str] = None   # each subclass names itself

    def supports(self, spec):
        """(True, "") or (False, reason) for a checked ConvSpec."""
        return True, ""

    def forward(self, x, w, bias, y, spec, weight_version=None):
        """y = conv(x, w) + bias. weight_version: a token that changes
        whenever w's values may have (Parameter.version), or None; with
        it, arrays derived from w may be reused (see DerivedWeights)."""
        raise NotImplementedError

    def backward(self, grad_y, x, w, grad_x, grad_w, need_x, need_w, spec,
                 weight_version=None):
        raise NotImplementedError

    def scratch_bytes(self, spec, backward):
        """Bytes of scratch one forward (or full backward) call allocates."""
        return 0


# name -> algorithm instance, filled by registry.py. Here rather than there
# so that an algorithm can hand a case to another (Winograd falls back to
# im2col) without importing the registry that imports it.
_REGISTRY: Dict[str, ConvAlgorithm] = {}
