"""convcore.set_flush_denormal: denormal floats as zero in the kernels.

Off by default (results then match PyTorch's default bit for bit in the
denormal range). On, it sets FTZ/DAZ (convcore._kernels.fpenv) in the
calling thread and in convcore's OpenMP threads, as
torch.set_flush_denormal does for PyTorch: use it when trained weights or
gradients drift into the denormal range and steps slow down. The calling
thread's NumPy arithmetic flushes too. Threads the BLAS starts by itself
(a GEMM given several BLAS threads, when convcore runs one image at a
time) keep their own setting.
"""
from convcore._kernels import fpenv

_enabled = False


def set_flush_denormal(mode):
    """Flush denormal floats to zero in convcore's kernels (True) or not
    (False). Returns True when the CPU supports it (x86), False otherwise
    (then nothing changes)."""
    global _enabled
    if not isinstance(mode, bool):
        raise TypeError(f"set_flush_denormal: mode must be a bool, got {type(mode).__name__}")
    if not fpenv.supported():
        return False
    from convcore._runtime.threads import get_num_threads, kernel_threads
    # Every thread that may run a kernel: the pool up to the thread count
    # (kernel_threads() is 1 without OpenMP or in a forked child).
    fpenv.set_ftz(mode, min(get_num_threads(), kernel_threads()))
    _enabled = mode
    return True


def get_flush_denormal():
    """True after set_flush_denormal(True) (and until it is turned off)."""
    return _enabled


def reapply():
    """After the thread count grows: set the bits in the new threads too."""
    if _enabled:
        set_flush_denormal(True)
