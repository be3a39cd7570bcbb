"""fit()'s progress display: a tqdm bar per epoch on a terminal, one plain
line per epoch anywhere else.

A bar redraws itself with carriage returns; written into a log file or a
CI log (stderr redirected, not a TTY) that becomes hundreds of partial
lines per epoch. So when the stream is not a terminal the per-batch
updates are dropped and the epoch's summary (the bar's final postfix) is
written as one line when the epoch ends.
"""
from __future__ import annotations

import sys
from typing import IO, Any, Dict, Optional, Union

__all__ = ["epoch_progress", "EpochLine"]


class EpochLine:
    """The bar's interface (update, set_postfix, close) for a stream that is
    not a terminal: nothing per batch, one line "epoch e/E: k=v ..." at close."""

    def __init__(self, desc: str, stream: Optional[IO[str]]) -> None:
        self.desc, self.stream = desc, stream
        self.n = 0
        self.postfix: Dict[str, Any] = {}

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict: Optional[Dict[str, Any]] = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        self.postfix = dict(ordered_dict or {}, **kwargs)

    def close(self) -> None:
        if self.stream is None:
            return
        fields = ", ".join(f"{k}={v}" for k, v in self.postfix.items())
        self.stream.write(f"{self.desc}: {self.n} batches" + (f", {fields}" if fields else "")
                          + "\n")
        self.stream.flush()
        self.stream = None  # closing twice writes once, as tqdm


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def epoch_progress(total: Optional[int], epoch: int, epochs: int,
                   stream: Optional[IO[str]] = None) -> Any:
    """A tqdm bar for epoch `epoch` (from 0) of `epochs` on `stream`
    (default: sys.stderr at call time) when it is a terminal, else an
    EpochLine. `total` is the number of batches, or None when unknown."""
    stream = sys.stderr if stream is None else stream
    desc = f"epoch {epoch + 1}/{epochs}"
    if not _is_terminal(stream):
        return EpochLine(desc, stream)
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=True, file=stream,
                dynamic_ncols=True)
