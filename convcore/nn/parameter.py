"""Parameter: a trainable array and the gradient accumulated for it."""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from convcore.utils.types import Array
from convcore.utils.validation import FLOAT_DTYPES


class Parameter:
    """A layer's trainable array.

    Attributes
    ----------
    data : ndarray, float32 or float64, updated in place by optimisers
    grad : ndarray of data's shape and dtype, or None before the first
        backward; backward passes add into it until `zero_grad()`
    requires_grad : bool; a frozen parameter (False) receives no gradient
        and optimisers skip it (transfer learning)
    version : int, read-only; changes whenever the values may have changed
        through convcore: assignment to .data, an optimiser's step() and
        Module.load_state_dict() / to(). Caches derived from the weights
        (eval-mode batch norm folded into a convolution, transformed
        Winograd weights) compare it, together with the identity of the
        .data array, to know when to recompute. A write into the array
        itself (`p.data[...] = v`, `p.data *= 2`) cannot be seen cheaply:
        call `p.bump()` after one.
    """

    __slots__ = ("_data", "grad", "requires_grad", "_version", "_grad_hooks")
    _data: Array
    grad: Optional[Array]
    requires_grad: bool
    _version: int
    _grad_hooks: Optional[List[Callable[[Parameter], Any]]]

    def __init__(self, data: ArrayLike, requires_grad: bool = True) -> None:
        data = np.asarray(data)
        if data.dtype not in FLOAT_DTYPES:
            raise TypeError(f"Parameter: data must be float32 or float64, got "
                            f"dtype {data.dtype} (shape {data.shape})")
        self._version = 0
        self._grad_hooks = None
        self.data = np.ascontiguousarray(data)
        self.grad = None
        self.requires_grad = bool(requires_grad)

    @property
    def data(self) -> Array:
        return self._data

    @data.setter
    def data(self, value: Array) -> None:
        self._data = value
        self._version += 1

    @property
    def version(self) -> int:
        """Counter bumped on every change convcore can see (see the class doc)."""
        return self._version

    def bump(self) -> None:
        """Mark .data as changed in place (optimisers call this; so should
        code that writes into .data directly), so derived caches recompute."""
        self._version += 1

    @property
    def shape(self) -> Tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def accumulate_grad(self, g: Optional[Array], *, owned: bool = False) -> None:
        """Add `g` into .grad (the first add stores a copy); ignored when frozen
        or when `g` is None (the gradient was not computed).

        owned: the caller made `g` for this call and keeps no reference to
        it (a layer's freshly computed weight gradient), so the first add
        may store `g` itself instead of a copy, when it is a writable
        C-contiguous array of the parameter's dtype."""
        if not self.requires_grad or g is None:
            return
        if g.shape != self.data.shape:
            raise ValueError(f"Parameter.accumulate_grad: gradient shape {g.shape} "
                             f"does not match parameter shape {self.data.shape}")
        if self.grad is None:
            if (owned and type(g) is np.ndarray and g.dtype == self.data.dtype
                    and g.flags.c_contiguous and g.flags.writeable and g.base is None):
                self.grad = g
            else:
                self.grad = np.array(g, dtype=self.data.dtype, copy=True, order="C")
        else:
            self.grad += g
        if self._grad_hooks:
            for hook in tuple(self._grad_hooks):
                hook(self)

    def register_post_accumulate_grad_hook(self, hook: Callable[[Parameter], Any]
                                           ) -> _HookHandle:
        """Call hook(param) after each gradient is added into .grad (as
        torch's Tensor.register_post_accumulate_grad_hook); data-parallel
        training starts averaging a layer's gradients from here while the
        backward pass goes on. Returns a handle whose remove() unregisters."""
        if not callable(hook):
            raise TypeError(f"register_post_accumulate_grad_hook: hook must be callable, "
                            f"got {type(hook).__name__}")
        if self._grad_hooks is None:
            self._grad_hooks = []
        self._grad_hooks.append(hook)
        return _HookHandle(self._grad_hooks, hook)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the accumulated gradient (None, as torch's default), or
        fill it with zeros when set_to_none=False."""
        if set_to_none or self.grad is None:
            self.grad = None
        else:
            self.grad[...] = 0

    def __repr__(self) -> str:
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}{frozen})"


class _HookHandle:
    __slots__ = ("_hooks", "_hook")

    def __init__(self, hooks: List[Callable[[Parameter], Any]],
                 hook: Callable[[Parameter], Any]) -> None:
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)
