"""`with convcore.no_grad():` layers run forward without caching what their
backward needs (inference memory). Thread-local, so one thread's inference
does not disable another's training."""
import contextlib
import threading

_state = threading.local()


def is_grad_enabled():
    """False inside `with convcore.no_grad():` on this thread."""
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def no_grad():
    """Context manager: forward passes keep nothing for backward."""
    previous = is_grad_enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = previous
