"""Resuming with a longer (or shorter) run: the schedule follows the run.

A checkpoint stores the scheduler's whole state, its length included. A
run resumed with more epochs (`convcore train --resume ... --epochs 10`
after 5) passes fit() a cosine schedule built for the new length, but
loading the checkpoint put the old length back: the learning rate reached
0 at the old end and then rose again (cosine is periodic), silently.

So the caller's length wins: the schedule is rebuilt over the caller's
T_max, continuing from the epoch the checkpoint reached, which gives the
rates a run started with that length would have had from there on and
decays smoothly to eta_min at the new end. The change is logged.
"""
from __future__ import annotations

import logging
from typing import Any, List, Optional

from convcore.optim.lr_scheduler import CosineAnnealingLR

__all__ = ["schedule_length", "keep_schedule_length"]

logger = logging.getLogger(__name__)


def schedule_length(scheduler: Any) -> Optional[int]:
    """The length (epochs) a scheduler was built for, if it has one that a
    checkpoint could overwrite (CosineAnnealingLR's T_max), else None."""
    return scheduler.T_max if isinstance(scheduler, CosineAnnealingLR) else None


def keep_schedule_length(scheduler: Any, length: Optional[int], epochs: int) -> bool:
    """After load_checkpoint restored `scheduler`: if its length differs
    from `length` (schedule_length before loading), rebuild it over
    `length` from the epoch it reached, in place, and log it. `epochs` is
    the run's total, for the message. Returns True when it rebuilt."""
    if length is None or schedule_length(scheduler) in (None, length):
        return False
    old, reached = scheduler.T_max, scheduler.last_epoch
    before = scheduler.get_last_lr()
    # last_epoch - 1: construction takes one step, landing on `reached`
    # with the closed-form rate for that epoch.
    rebuilt = CosineAnnealingLR(scheduler.optimizer, T_max=length, eta_min=scheduler.eta_min,
                                last_epoch=reached - 1)
    scheduler.load_state_dict(rebuilt.state_dict())
    logger.info("resume: the checkpoint's cosine schedule spans %d epochs, this run %d; "
                "rebuilt over T_max=%d from epoch %d: lr %s -> %s, decaying to %g at epoch %d",
                old, epochs, length, reached, _rates(before), _rates(scheduler.get_last_lr()),
                scheduler.eta_min, length)
    return True


def _rates(lrs: List[float]) -> str:
    return ", ".join(f"{lr:.4g}" for lr in lrs)
