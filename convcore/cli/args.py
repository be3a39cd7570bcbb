"""argparse `type=` checkers shared by the commands: a bad value becomes
argparse's usage message and exit status 2, never a traceback."""
import argparse
import math


def _number(convert, accept, wanted):
    """A checker that converts with `convert` and keeps values for which
    `accept(value)` holds; `wanted` says what in the error message."""
    def check(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value
    check.__name__ = wanted  # argparse names the type in some messages
    return check


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0 and math.isfinite(v), "a positive finite number")
non_negative_float = _number(float, lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0")
fraction = _number(float, lambda v: 0 < v < 1, "a fraction in (0, 1)")
