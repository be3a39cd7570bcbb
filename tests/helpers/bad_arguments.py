"""The bad-argument harness, written once: a call with a bad argument raises
the documented exception (TypeError for dtypes, ValueError otherwise) with
a message that says what is wrong (API.md), and leaves the caller's arrays
as they were.

A case is either

    (call, exc, fragment)                 call() takes no arguments, or
    (fn, args, kwargs, exc, fragment)     fn(*args, **kwargs); the message
                                          must then also name fn

and a test module turns its table of cases into one parametrised test:

    BAD = [(lambda: F.relu([1.0]), TypeError, "relu: input must be a numpy.ndarray"),
           (F.max_pool2d, (X, 0), {}, ValueError, "kernel_size must be >= 1")]
    test_bad_arguments = bad_argument_test(BAD)
"""
import functools

import numpy as np
import pytest


def _normalise(case):
    """(call, exc, fragment, name) of a case; name is None when unknown."""
    if len(case) == 5:
        fn, args, kwargs, exc, fragment = case
        return functools.partial(fn, *args, **kwargs), exc, fragment, fn.__name__
    if len(case) == 3:
        call, exc, fragment = case
        return call, exc, fragment, None
    raise ValueError(f"a bad-argument case is (call, exc, fragment) or "
                     f"(fn, args, kwargs, exc, fragment), got {case!r}")


def check_bad_call(call, exc, fragment, name=None, *, unchanged=(), prefix=None):
    """call() raises exc with `fragment` (and `name`, when given) in its
    message; the message's text before the first ":" ends with one of
    `prefix` when given; the arrays in `unchanged` are not modified."""
    before = [np.array(a, copy=True) for a in unchanged]
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    assert fragment in message, f"{fragment!r} is not in the message {message!r}"
    if name is not None:
        assert name in message, f"the message {message!r} does not name {name}"
    if prefix is not None:
        assert message.split(":")[0].endswith(prefix), \
            f"the message {message!r} does not start with one of {prefix}"
    for array, copy in zip(unchanged, before):
        np.testing.assert_array_equal(array, copy)
    return message


def bad_argument_test(cases, *, before=None, unchanged=(), prefix=None, fixtures=(),
                      ids=None):
    """A test function parametrised over `cases` (see the module docstring).

    before    called first in every case (e.g. to warm a cache)
    unchanged arrays that no call may modify
    prefix    endings allowed for the message's text before the first ":"
    fixtures  fixture names the test requests (pytest.mark.usefixtures)
    ids       test ids; by default the function's name or the fragment
    """
    params = [_normalise(case) for case in cases]
    if ids is None:
        ids = [f"{name}-{i}" if name else f"{i}-{fragment}"
               for i, (_, _, fragment, name) in enumerate(params)]

    @pytest.mark.parametrize("call,exc,fragment,name", params, ids=ids)
    def test(call, exc, fragment, name):
        if before is not None:
            before()
        check_bad_call(call, exc, fragment, name, unchanged=unchanged, prefix=prefix)

    if fixtures:
        test = pytest.mark.usefixtures(*fixtures)(test)
    return test
