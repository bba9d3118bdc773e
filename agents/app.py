"""The Faust app factory: settings in, a configured ``faust.App`` out, no work at import time."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faust
from faust.transport.consumer import CONSUMER_PARTITIONS_REVOKED
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP
from faust.utils.tracing import traced_from_parent_span
from mode import Service

from museflow.config import Settings

__all__ = ["RevokeCommittingConsumer", "create_app", "run_worker"]


class RevokeCommittingConsumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer, committing what was processed before a rebalance forgets it.

    faust-streaming's ``Consumer.on_partitions_revoked`` drops the acked but not yet committed
    offsets of the revoked partitions *before* the app waits for its streams and commits. The
    rebalance protocol revokes every partition, so each rebalance (a worker joining or leaving)
    made the next owner score again everything processed since the last periodic commit (up to
    ``broker_commit_interval`` of traffic), and the batch in flight as well. This is the same
    method with the bookkeeping dropped *after* the app's revoke handler, which waits for every
    in-flight batch to be acked and commits (``stream_wait_empty=True``).
    """

    @Service.transitions_to(CONSUMER_PARTITIONS_REVOKED)
    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        span = self.app._start_span_from_rebalancing("on_partitions_revoked")
        T = traced_from_parent_span(span)
        with span:
            if self._active_partitions is not None:
                self._active_partitions.difference_update(revoked)
            self._paused_partitions.difference_update(revoked)
            await T(self._on_partitions_revoked, partitions=revoked)(revoked)
            for tp in revoked:
                self._gap.pop(tp, None)
                self._acked.pop(tp, None)
                self._acked_index.pop(tp, None)
                self._read_offset.pop(tp, None)
                self._committed_offset.pop(tp, None)


    async def subscribe(self, topics: Iterable[str]) -> None:
        """Subscribe, unless this worker has no Faust agents (a hot-roles-only worker): then stay out."""
        wanted = list(topics)
        if wanted:
            await super().subscribe(wanted)


class _Transport(aiokafka_driver.Transport):
    Consumer = RevokeCommittingConsumer


class _App(faust.App):
    def _new_transport(self) -> _Transport:
        return _Transport(self.conf.broker_consumer, self)


def _credentials(options: dict[str, Any]) -> Any:
    creds = options.get("credentials")
    if not creds:
        return None
    context = None
    if creds["protocol"] in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=creds["cafile"])
        if creds["certfile"]:
            context.load_cert_chain(creds["certfile"], creds["keyfile"])
    if creds["protocol"].startswith("SASL"):
        return faust.SASLCredentials(
            username=creds["username"], password=creds["password"],
            mechanism=creds["mechanism"], ssl_context=context,
        )
    return faust.SSLCredentials(context)


def create_app(settings: Settings, *, app_id: str | None = None) -> faust.App:
    """A ``faust.App`` wired to the settings' broker, security, batching and delivery options.

    Topics are pre-created by museflow (``topic_allow_declare=False``), values are raw bytes
    (museflow's own Avro serde decodes them in batches), and the web server is off: metrics
    are served by museflow's own Prometheus endpoint.
    """
    options = settings.faust_broker_options()
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    app = _App(
        app_id or settings.app_id,
        broker=options["broker"],
        broker_credentials=_credentials(options),
        key_serializer="raw",
        value_serializer="raw",
        producer_linger=settings.producer_linger_seconds,
        producer_acks=-1,
        producer_max_request_size=2 * 1024 * 1024,
        broker_session_timeout=settings.broker_session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, settings.broker_session_timeout_seconds / 5),
        broker_commit_interval=1.0,
        processing_guarantee=settings.processing_guarantee,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        stream_wait_empty=True,  # on rebalance and stop, finish in-flight batches and commit them (fewer duplicates)
        web_enabled=False,
        datadir=str(data_dir / "faust"),
        store="memory://",
    )
    return app


def run_worker(app: faust.App, *services: Service, loglevel: str = "warn") -> None:
    """Run ``app`` and ``services`` as a Faust worker in this process until it is stopped (SIGTERM / Ctrl-C).

    A crashed service stops the worker and exits the process with status 1.
    """
    from faust.worker import Worker

    worker = Worker(app, *services, loglevel=loglevel, quiet=True)
    # Faust's terminal spinner sets the root logger to DEBUG so it can spin on every record:
    # aiokafka then formats a debug record per produced message (a third of send's time).
    worker.spinner = None
    worker.execute_from_commandline()
