"""A starting worker's group listing waits out a broker that does not answer (no broker needed)."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest

from museflow.errors import BrokerError
from museflow.kafka.offsets import _groups


class FlakyAdmin:
    """``list_consumer_groups`` times out, then lists partially (an error beside the valid ones), then fully."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls = 0

    def list_consumer_groups(self, request_timeout: float) -> Future[Any]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        future: Future[Any] = Future()
        if isinstance(answer, BaseException):
            future.set_exception(answer)
        else:
            future.set_result(answer)
        return future


def listing(groups: list[str], errors: tuple[str, ...] = ()) -> SimpleNamespace:
    return SimpleNamespace(valid=[SimpleNamespace(group_id=g) for g in groups], errors=list(errors))


def test_a_timeout_and_a_partial_listing_are_asked_again_not_trusted() -> None:
    admin = FlakyAdmin([TimeoutError(), listing(["a-router"], ("broker 2: timed out",)),
                        listing(["a-router", "a-router-v1"])])
    assert _groups(admin, patience=10, pause=0) == ["a-router", "a-router-v1"]  # type: ignore[arg-type]
    assert admin.calls == 3


def test_a_listing_that_never_completes_fails_clearly() -> None:
    admin = FlakyAdmin([listing(["a-router"], ("broker 2: timed out",))])
    with pytest.raises(BrokerError, match=r"cannot list consumer groups .* broker 2: timed out"):
        _groups(admin, patience=0.05, pause=0.01)  # type: ignore[arg-type]
    assert admin.calls >= 2
