"""The label-join role: served scores from the score log meet delayed labels, by event id.

Two agents feed one :class:`museflow.observe.label_join.LabelJoin` (both run on this worker's event loop,
so no locking); a timer publishes the labelled-performance gauges. State is the core's bounded
in-memory store, not a Faust table: the score log is keyed ``model/tenant`` while labels are
keyed by ``event_id``, so a table would need a repartition topic as large as the score log,
and Faust's memory store keeps every key. The cost: run this role as one replica (it reads
every partition of both topics), and a restart forgets pending halves of joins.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import faust

from museflow.agents.context import agent_rejecter, readable
from museflow.config import Settings
from museflow.contracts.deadletter import DeadLetterWriter
from museflow.contracts.scorelog import rows
from museflow.kafka.schema_registry import serdes_from_settings
from museflow.observe.label_join import LabelJoin, LabelMetrics
from museflow.observe.metrics import PipelineMetrics

__all__ = ["DEFAULT_THRESHOLDS", "PUBLISH_INTERVAL_SECONDS", "register"]

log = logging.getLogger(__name__)

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5,)
PUBLISH_INTERVAL_SECONDS = 5.0
_MAX_FUTURE_SECONDS = 300.0


def _seconds(value: Any) -> float:
    """Avro timestamp-millis as decoded (datetime, or int milliseconds) to epoch seconds."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return float(value.timestamp())
    return float(value) / 1000.0


def _clamped(seconds: float) -> float:
    """A record time from the future (clock skew) must not push the window past real time."""
    return min(seconds, time.time() + _MAX_FUTURE_SECONDS)


def register(app: faust.App, settings: Settings, metrics: PipelineMetrics, *, deadletters: DeadLetterWriter,
             thresholds_for: Callable[[str], Sequence[float]] | None = None) -> LabelJoin:
    """Join ``museflow.score-log`` (served scores) with ``museflow.labels`` and export labelled performance.

    ``thresholds_for(tenant)`` gives the watch thresholds of a tenant's routes (default
    :data:`DEFAULT_THRESHOLDS`); the window and memory bound are :class:`LabelJoin`'s defaults
    (30 days, 500k pending halves). An undecodable score or label becomes a dead letter (the worker's
    ``deadletters``, shared with its other roles).
    """
    join = LabelJoin()
    label_metrics = LabelMetrics(metrics.registry, tenant_label=metrics.tenant_label)
    thresholds = thresholds_for or (lambda tenant: DEFAULT_THRESHOLDS)
    serdes = serdes_from_settings(settings)
    reject = agent_rejecter(app, deadletters, "label-join")

    @app.agent(app.topic(settings.topics.score_log), name=f"{settings.app_id}.label-join-scores")
    async def scores(stream: Any) -> None:
        async for batch in stream.take_events(settings.batch_size, within=max(settings.batch_window_seconds, 0.2)):
            for record in await readable(batch, serdes.score_log.decode_many, reject):
                if not record["served"]:
                    continue
                for row in rows([record]):
                    joined = join.add_score(row["event_id"], row["tenant"], float(row["score"]),
                                            _clamped(_seconds(row["event_time"])), cohort=row["intent"],
                                            corrected=float(row["corrected_score"]))
                    if joined is not None:
                        label_metrics.count_join(joined)

    @app.agent(app.topic(settings.topics.labels), name=f"{settings.app_id}.label-join-labels")
    async def labels(stream: Any) -> None:
        async for batch in stream.take_events(settings.batch_size, within=max(settings.batch_window_seconds, 0.2)):
            for record in await readable(batch, serdes.labels.decode_many, reject):
                joined = join.add_label(record["event_id"], bool(record["is_fraud"]),
                                        _clamped(_seconds(record["label_time"])), tenant=record["tenant"],
                                        cohort=record.get("cohort"))
                if joined is not None:
                    label_metrics.count_join(joined)

    @app.timer(PUBLISH_INTERVAL_SECONDS, name=f"{settings.app_id}.label-join-publish")  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def publish() -> None:
        join.expire(now=time.time())
        label_metrics.publish(join, thresholds)

    return join
