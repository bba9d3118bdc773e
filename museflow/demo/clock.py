"""The demo run's clock and its stop signal: elapsed time, sleeping to a phase mark, waits that end on a stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Cancelled", "RunClock"]


class Cancelled(Exception):
    """The run is being stopped (Ctrl-C, or an error elsewhere)."""


class RunClock:
    """Seconds since the stream started, and the event every demo thread stops on."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.started_at = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def sleep_until(self, t: float) -> None:
        """Sleep until ``t`` seconds into the run; :class:`Cancelled` if the run stops first."""
        while self.elapsed() < t:
            if self.cancel.wait(min(0.25, max(0.0, t - self.elapsed()))):
                raise Cancelled

    def wait(self, predicate: Callable[[], bool], timeout: float, poll: float = 1.0) -> bool:
        """Poll ``predicate`` until it holds (True) or ``timeout`` passes (False); :class:`Cancelled` on a stop."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            if self.cancel.wait(poll):
                raise Cancelled
