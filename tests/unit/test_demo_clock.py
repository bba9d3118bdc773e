"""The demo's run clock: waits end when their condition holds, when they time out, or when the run stops."""

from __future__ import annotations

import pytest

from museflow.demo.clock import Cancelled, RunClock


def test_waits_return_on_the_condition_or_the_timeout_and_stop_with_the_run() -> None:
    clock = RunClock()
    clock.start()
    assert clock.wait(lambda: True, timeout=5)
    assert not clock.wait(lambda: False, timeout=0.05, poll=0.01)
    clock.sleep_until(0.0)  # already past: returns at once
    clock.cancel.set()
    with pytest.raises(Cancelled):
        clock.sleep_until(60.0)
    with pytest.raises(Cancelled):
        clock.wait(lambda: False, timeout=60.0)
