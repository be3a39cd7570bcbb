"""convcore's messages go through `logging`, under the "convcore" logger.

Library modules log with `logging.getLogger(__name__)` and never print, so
an application decides where the messages go and which it keeps (see the
README, "Messages and logging"). Where a user asked to see them (the
command line, `fit(verbose=True)`), `console()` shows them on the current
sys.stdout for that span only: always for the command line, and for
fit(verbose=True) when the application has configured no logging at all
(an application with its own logging setup is left alone).
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import IO, Iterator, Optional

ROOT = "convcore"


class _CurrentStdout(logging.StreamHandler):
    """A StreamHandler writing to whatever sys.stdout is when a record is
    emitted (a redirect, a test's capture, /dev/null on MPI ranks > 0),
    not the stream that was current when the handler was made."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> IO[str]:
        return sys.stdout

    @stream.setter
    def stream(self, value: object) -> None:  # StreamHandler.__init__ assigns; the property decides
        pass

    def handleError(self, record: logging.LogRecord) -> None:
        # `convcore train | head`: the reader left. Let the BrokenPipeError
        # reach the command line, which ends quietly, instead of logging's
        # "--- Logging error ---" traceback on stderr.
        if isinstance(sys.exc_info()[1], BrokenPipeError):
            raise
        super().handleError(record)


def _configured(logger: Optional[logging.Logger]) -> bool:
    """True when the application set up logging: a handler on the root
    logger or on the way from `logger` up to it."""
    while logger is not None:
        if logger.handlers:
            return True
        if not logger.propagate:
            return False
        logger = logger.parent
    return False


@contextlib.contextmanager
def console(level: int = logging.INFO, *, force: bool = False) -> Iterator[None]:
    """Within the block, convcore's messages of `level` and above print as
    plain lines on sys.stdout, unless the application configured logging
    (then its handlers and levels decide; `force`: print them as well, for
    the command line, which is the application) or set the "convcore"
    logger's level itself (then that level holds)."""
    logger = logging.getLogger(ROOT)
    if _configured(logger) and not force:
        yield
        return
    handler = _CurrentStdout()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous_level = logger.level
    if previous_level == logging.NOTSET:
        logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
