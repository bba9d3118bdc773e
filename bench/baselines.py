"""The baseline programs bench/e2e.py measures museflow against, each run as its own process.

All use the museflow topology: ``events -> model topic -> tenant topic`` (two Kafka hops,
the partitions of museflow's own topics, created by the harness under the baseline's prefix).

* ``passthrough`` — bare Faust with museflow's app factory settings and delivery discipline
  (``noack_take`` batches, ``producer.send`` per message, each batch's events acked once its
  deliveries are acknowledged, up to ``batches_in_flight`` batches pending — as museflow's
  ``InFlight``); agents forward bytes unchanged. The framework's own ceiling.
* ``naive`` — a Faust scorer as a user would first write it: one event at a time, the ``avro``
  package (not fastavro), one ``booster.predict(DMatrix)`` of one row per event, ``await
  topic.send`` per event, no score log, no quantile map, no shadow.
* ``confluent`` — a bare confluent-kafka consume -> produce loop (one consumer on the events and
  model topics, one producer; offsets committed after ``flush``). The transport's ceiling.
* ``quix-pass`` — the quix-streams peer's own ceiling: an ``Application`` with its defaults
  (at-least-once, offsets committed every ``commit_interval`` = 5 s) whose StreamingDataFrames
  forward bytes unchanged. It routes exactly as ``passthrough`` does (``offset % len(targets)``,
  both hops, no decoding), so the two passthroughs differ only in the framework.
* ``quix-score`` — a scorer written the way quix-streams' docs suggest, the peer of ``naive``:
  the router hop decodes each event in a ``to_topic`` topic selector to pick the model topic
  (bytes forwarded unchanged, as ``naive``); the scorer hop decodes with a ``Deserializer``,
  scores in ``.apply()`` one message at a time (one ``booster.predict(DMatrix)`` of one row, as
  ``naive``: nothing in the docs batches) and encodes the ScoredEvent with a ``Serializer``.
  Avro goes through museflow's fastavro serde, as quix-streams' own Avro serializers use fastavro.

quixstreams pins confluent-kafka below the version museflow needs (3.28.1: ``<2.13``), so the
``quix-*`` kinds re-exec themselves under the peer venv that ``bench/peer_venv.sh`` builds
(``bench/.peer-venv``, built on first use): its own quixstreams and confluent-kafka, then
museflow's venv for everything else (same xgboost, numpy, fastavro builds).

    python bench/baselines.py KIND --bootstrap HOST:PORT --prefix P --app-id A [--models-dir D]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from museflow.config import Settings

MODELS = ("fraud-cnp", "ato")
TENANTS = ("acme-bank", "globex-pay", "initech-fin")
# What a naive user hard-codes: (tenant, intent) -> the champion model, no shadows or canaries.
NAIVE_ROUTES = {(t, i): m for t in TENANTS
                for i, m in (("card-not-present", ("fraud-cnp", "1")), ("account-takeover", ("ato", "1")))}
KINDS = ("passthrough", "naive", "confluent", "quix-pass", "quix-score")
BENCH = Path(__file__).resolve().parent
PEER_VENV = Path(os.environ.get("MUSEFLOW_PEER_VENV", BENCH / ".peer-venv"))


def passthrough(settings: Settings) -> None:
    from museflow.agents.app import create_app, run_worker

    app = create_app(settings)
    topics = settings.topics
    model_topics = [topics.model(m) for m in MODELS]
    tenant_topics = [topics.scores(t) for t in TENANTS]

    # The same delivery discipline as museflow's agents (museflow.agents.context.InFlight): a batch's events
    # are acked once its deliveries are acknowledged, with up to batches_in_flight batches pending.
    settling: set[asyncio.Future[None]] = set()

    async def settle(stream: Any, futures: list[Any], batch: Any) -> None:
        await asyncio.gather(*futures)
        for event in batch:
            await stream.ack(event)

    async def forward(stream: Any, batch: Any, targets: list[str], pending: Any) -> None:
        producer = app.producer
        futures = []
        for event in batch:
            msg = event.message
            futures.append(await producer.send(targets[msg.offset % len(targets)], msg.key, msg.value,
                                               None, None, None))
        task = asyncio.ensure_future(settle(stream, futures, batch))
        settling.add(task)
        task.add_done_callback(settling.discard)
        pending.append(task)
        while pending and (pending[0].done() or len(pending) > settings.batches_in_flight):
            await pending.popleft()

    @app.agent(app.topic(topics.events), name="bench-pass-router")
    async def route(stream: Any) -> None:
        pending: deque[Any] = deque()
        async for batch in stream.noack_take(settings.batch_size, within=settings.batch_window_seconds):
            await forward(stream, batch, model_topics, pending)

    @app.agent(app.topic(*model_topics), name="bench-pass-scorer")
    async def score(stream: Any) -> None:
        pending: deque[Any] = deque()
        async for batch in stream.noack_take(settings.batch_size, within=settings.batch_window_seconds):
            await forward(stream, batch, tenant_topics, pending)

    run_worker(app)


def naive(settings: Settings, models_dir: Path) -> None:
    import avro.io
    import avro.schema
    import xgboost as xgb

    from museflow.agents.app import create_app, run_worker
    from museflow.contracts.schemas import fingerprint, load_schema
    from museflow.contracts.serde import SINGLE_OBJECT_MAGIC
    from museflow.model.registry import ModelRegistry
    from museflow.model.scoring import posterior_correction

    event_schema = load_schema("TransactionEvent")
    scored_schema = load_schema("ScoredEvent")
    reader = avro.io.DatumReader(avro.schema.parse(json.dumps(event_schema)))
    writer = avro.io.DatumWriter(avro.schema.parse(json.dumps(scored_schema)))
    scored_header = SINGLE_OBJECT_MAGIC + fingerprint(scored_schema)
    registry = ModelRegistry()
    models = {(m.name, m.version): m for m in (registry.load(p) for p in sorted(models_dir.glob("*.yaml")))}

    def decode(value: bytes) -> dict[str, Any]:
        return reader.read(avro.io.BinaryDecoder(io.BytesIO(value[10:])))  # type: ignore[no-any-return]

    def encode(record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(scored_header)
        writer.write(record, avro.io.BinaryEncoder(out))
        return out.getvalue()

    app = create_app(settings)
    topics = settings.topics
    model_topics = {m: app.topic(topics.model(m)) for m in MODELS}
    tenant_topics = {t: app.topic(topics.scores(t)) for t in TENANTS}

    @app.agent(app.topic(topics.events), name="bench-naive-router")
    async def route(stream: Any) -> None:
        async for event in stream.events():
            record = decode(event.value)
            name, _ = NAIVE_ROUTES[(record["tenant"], record["intent"])]
            await model_topics[name].send(key=event.key, value=event.value)

    @app.agent(app.topic(*(t.get_topic_name() for t in model_topics.values())), name="bench-naive-scorer")
    async def score(stream: Any) -> None:
        async for event in stream.events():
            record = decode(event.value)
            model = models[NAIVE_ROUTES[(record["tenant"], record["intent"])]]
            row = model.features.build([record]).values
            raw = float(model.booster.predict(xgb.DMatrix(row, feature_names=list(model.spec.columns)))[0])
            p = posterior_correction(raw, model.beta)
            event_time = record["event_time"]
            now = time.time()
            event_ms = int(event_time.timestamp() * 1000) if hasattr(event_time, "timestamp") else int(event_time)
            scored = {
                "event_id": record["event_id"], "tenant": record["tenant"], "intent": record["intent"],
                "model": model.name, "model_version": model.version, "route_version": 1, "role": "champion",
                "raw_score": raw, "corrected_score": p, "score": p, "map_version": 0, "reference": "none@0",
                "event_time": event_time, "scored_at": _scored_at(event_time, now),
                "latency_ms": now * 1000 - event_ms, "timings": {},
            }
            await tenant_topics[record["tenant"]].send(key=event.key, value=encode(scored))

    run_worker(app)


def _scored_at(like: Any, now: float) -> Any:
    """The avro package wants the same type back that it read (datetime for timestamp-millis)."""
    if hasattr(like, "timestamp"):
        from datetime import UTC, datetime

        return datetime.fromtimestamp(now, UTC)
    return int(now * 1000)


def confluent(settings: Settings) -> None:
    from confluent_kafka import Consumer, Producer

    topics = settings.topics
    model_topics = [topics.model(m) for m in MODELS]
    tenant_topics = [topics.scores(t) for t in TENANTS]
    rd = settings.librdkafka_config()
    producer = Producer({**rd, "enable.idempotence": True, "acks": "all",
                         "linger.ms": max(1, int(settings.producer_linger_seconds * 1000))})
    consumer = Consumer({**rd, "group.id": settings.app_id, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topics.events, *model_topics])
    events_topic = topics.events
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    last_commit = time.monotonic()
    try:
        while not stop:
            messages = consumer.consume(settings.batch_size, settings.batch_window_seconds)
            for msg in messages:
                if msg.error():
                    raise RuntimeError(f"consume: {msg.error()}")
                targets = model_topics if msg.topic() == events_topic else tenant_topics
                while True:
                    try:
                        producer.produce(targets[msg.offset() % len(targets)], msg.value(), msg.key())
                        break
                    except BufferError:
                        producer.poll(0.01)
            producer.poll(0)
            if time.monotonic() - last_commit >= 1.0 and messages:
                producer.flush()
                consumer.commit(asynchronous=True)
                last_commit = time.monotonic()
    finally:
        producer.flush(10)
        consumer.close()


def _quix_app(settings: Settings) -> Any:
    """An Application with quix-streams' defaults, but the harness's group, broker and scratch dir."""
    from quixstreams import Application
    from quixstreams.kafka.configuration import ConnectionConfig

    # The logger object and syslog level are museflow's own; quix-streams logs by itself.
    conf = {k: v for k, v in settings.librdkafka_config().items() if k not in ("logger", "log_level")}
    return Application(broker_address=ConnectionConfig.from_librdkafka_dict(conf), consumer_group=settings.app_id,
                       auto_offset_reset="earliest", state_dir=Path(settings.data_dir) / "quix-state")


def quix_pass(settings: Settings) -> None:
    from quixstreams import message_context

    app = _quix_app(settings)
    topics = settings.topics
    raw = {"value_deserializer": "bytes", "value_serializer": "bytes"}  # keys are bytes by default
    model_topics = [app.topic(topics.model(m), **raw) for m in MODELS]
    tenant_topics = [app.topic(topics.scores(t), **raw) for t in TENANTS]

    def by_offset(targets: list[Any]) -> Any:
        """``passthrough``'s routing: the input offset picks the target (a topic selector gets no offset)."""
        return lambda *_: targets[message_context().offset % len(targets)]

    app.dataframe(app.topic(topics.events, **raw)).to_topic(by_offset(model_topics))
    for topic in model_topics:
        app.dataframe(topic).to_topic(by_offset(tenant_topics))
    app.run()


def quix_score(settings: Settings, models_dir: Path) -> None:
    import xgboost as xgb
    from quixstreams.models.serializers import Deserializer, Serializer

    from museflow.contracts.serde import Serdes
    from museflow.model.registry import ModelRegistry
    from museflow.model.scoring import posterior_correction

    serdes = Serdes()
    events_serde, scored_serde = serdes.events, serdes.scored
    registry = ModelRegistry()
    models = {(m.name, m.version): m for m in (registry.load(p) for p in sorted(models_dir.glob("*.yaml")))}

    class AvroEvent(Deserializer):
        def __call__(self, value: bytes, ctx: Any) -> dict[str, Any]:
            return events_serde.decode(value)

    class AvroScored(Serializer):
        def __call__(self, value: dict[str, Any], ctx: Any) -> bytes:
            return scored_serde.encode(value)

    app = _quix_app(settings)
    topics = settings.topics
    model_topics = {m: app.topic(topics.model(m), value_deserializer=AvroEvent(), value_serializer="bytes")
                    for m in MODELS}
    tenant_topics = {t: app.topic(topics.scores(t), value_serializer=AvroScored()) for t in TENANTS}

    def route(value: bytes, *_: Any) -> Any:
        record = events_serde.decode(value)
        return model_topics[NAIVE_ROUTES[(record["tenant"], record["intent"])][0]]

    def score(record: dict[str, Any]) -> dict[str, Any]:
        model = models[NAIVE_ROUTES[(record["tenant"], record["intent"])]]
        row = model.features.build([record]).values
        raw = float(model.booster.predict(xgb.DMatrix(row, feature_names=list(model.spec.columns)))[0])
        p = posterior_correction(raw, model.beta)
        event_ms, now = record["event_time"], time.time()  # fastavro leaves timestamp-millis as int
        return {
            "event_id": record["event_id"], "tenant": record["tenant"], "intent": record["intent"],
            "model": model.name, "model_version": model.version, "route_version": 1, "role": "champion",
            "raw_score": raw, "corrected_score": p, "score": p, "map_version": 0, "reference": "none@0",
            "event_time": event_ms, "scored_at": int(now * 1000), "latency_ms": now * 1000 - event_ms, "timings": {},
        }

    app.dataframe(app.topic(topics.events, value_deserializer="bytes", value_serializer="bytes")).to_topic(route)
    for topic in model_topics.values():
        app.dataframe(topic).apply(score).to_topic(lambda value, *_: tenant_topics[value["tenant"]])
    app.run()


def _enter_peer_venv() -> None:
    """Re-exec this command under the peer venv (built on first use); the pid stays, so the harness sees it."""
    if Path(sys.prefix).resolve() == PEER_VENV.resolve():
        return
    subprocess.run(["bash", str(BENCH / "peer_venv.sh")], check=True,
                   env={**os.environ, "MUSEFLOW_PEER_VENV": str(PEER_VENV)})
    python = str(PEER_VENV / "bin" / "python")
    os.execv(python, [python, str(Path(__file__).resolve()), *sys.argv[1:]])  # noqa: S606 - our own venv's python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--data-dir", default="/tmp/museflow-bench-baseline")
    parser.add_argument("--models-dir", type=Path)
    args = parser.parse_args()
    if args.kind in ("naive", "quix-score") and args.models_dir is None:
        parser.error(f"{args.kind} needs --models-dir")
    if args.kind.startswith("quix-"):
        _enter_peer_venv()
    settings = Settings(bootstrap_servers=args.bootstrap, topic_prefix=args.prefix, app_id=args.app_id,
                        data_dir=args.data_dir, metrics_enabled=False)
    if args.kind == "passthrough":
        passthrough(settings)
    elif args.kind == "naive":
        naive(settings, args.models_dir)
    elif args.kind == "quix-pass":
        quix_pass(settings)
    elif args.kind == "quix-score":
        quix_score(settings, args.models_dir)
    else:
        confluent(settings)


if __name__ == "__main__":
    main()
