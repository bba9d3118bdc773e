"""museflow's batch loop (exactly-once) forwarding SRC to DST, able to stop dead inside an open transaction.

Run as ``python transactional_hold_app.py SRC DST MARKER HOLD_AT`` with MUSEFLOW_* settings in the
environment. Values starting with ``bad`` become dead letters, everything else is forwarded
unchanged. With ``HOLD_AT >= 0`` the transaction of batch number ``HOLD_AT`` (0-based) is left
open: its outputs and dead letters are flushed to the broker, MARKER is written with the number
of input messages in that batch and in every batch so far, and the process sleeps until it is
killed. SIGTERM stops it.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from museflow.config import Settings
from museflow.contracts.deadletter import DeadLetterReason, DeadLetterWriter
from museflow.kafka import loop as batch_loop
from museflow.kafka.schema_registry import serdes_from_settings
from museflow.runtime.pipeline import DeadLetterRequest, InMessage, OutMessage, StepResult

source, target, marker, hold_at = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
settings = Settings.from_env(processing_guarantee="exactly_once")
last_batch = processed = 0


class HoldingProducer:
    """The loop's transactional producer; the HOLD_AT-th transaction never gets to its offsets."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.transactions = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def send_offsets_to_transaction(self, *args: Any) -> None:
        if self.transactions == hold_at:
            assert self.real.flush(30) == 0, "the held batch's outputs did not reach the broker"
            marker.write_text(f"{last_batch} {processed}")
            while True:
                time.sleep(3600)
        self.transactions += 1
        self.real.send_offsets_to_transaction(*args)


make_producer = batch_loop.make_producer
batch_loop.make_producer = lambda *a, **kw: HoldingProducer(make_producer(*a, **kw))  # type: ignore[assignment]


def forward(messages: list[InMessage]) -> StepResult:
    global last_batch, processed
    last_batch = len(messages)
    processed += len(messages)
    result = StepResult()
    for m in messages:
        if (m.value or b"").startswith(b"bad"):
            result.dead.append(DeadLetterRequest(m, DeadLetterReason.INVALID_EVENT, "a bad test value"))
        else:
            result.out.append(OutMessage(target, m.key, m.value or b""))
    return result


letters = DeadLetterWriter(settings.topics.dlq, serde=serdes_from_settings(settings).dead_letters, stage="forward")
loop = batch_loop.BatchLoop(settings, "forward", [source], forward, letters, group_id=f"{settings.app_id}-forward")
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
loop.run(stop)
