"""Every worker follows the compacted control topics from the beginning, on a thread of its own.

Control topics are broadcast, not partitioned work: each worker must see every route,
deployment, map and reference, so this uses a plain assigned consumer (no group) rather than
a Faust agent, whose consumer group would split them between workers. Model loads happen
here, off the event loop. :meth:`ControlFollower.wait_caught_up` lets agents hold their first
batch until everything published before the worker started has been applied.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from museflow.config import Settings
from museflow.errors import KafkaError, MuseflowError
from museflow.kafka.clients import topic_end_offsets
from museflow.state import PipelineState

__all__ = [
    "ControlFollower",
    "control_appliers",
    "control_decoder",
    "load_control_state",
    "publish_control",
    "publish_deployment",
]

log = logging.getLogger(__name__)

Decode = Callable[[str, bytes], Mapping[str, Any]]


def control_appliers(settings: Settings, state: PipelineState) -> dict[str, Callable[[Mapping[str, Any]], Any]]:
    """Topic name -> how a decoded record of it is applied to ``state``."""
    t = settings.topics
    return {
        t.references: state.apply_reference,
        t.deployments: state.apply_deployment,
        t.routes: state.apply_route,
        t.quantile_maps: state.apply_map,
    }


class ControlFollower:
    """Reads the control topics into a :class:`PipelineState` until stopped."""

    def __init__(self, settings: Settings, state: PipelineState, decode: Decode,
                 topics: Mapping[str, Callable[[Mapping[str, Any]], Any]] | None = None) -> None:
        self.settings = settings
        self.state = state
        self.decode = decode
        self.appliers = dict(topics or control_appliers(settings, state))
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None
        self.applied = 0
        self.error: BaseException | None = None

    def start(self) -> ControlFollower:
        self._thread = threading.Thread(target=self._run, name="museflow-control", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set()

    def wait_caught_up(self, timeout: float | None = None) -> bool:
        return self._caught_up.wait(timeout)

    def _run(self) -> None:
        consumer = Consumer({
            **self.settings.librdkafka_config(),
            "group.id": f"{self.settings.app_id}-control-{threading.get_ident()}-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        })
        try:
            targets = self._assign(consumer)
            while not self._stop.is_set():
                msgs = consumer.consume(500, timeout=0.2)
                for msg in msgs:
                    if msg.error():
                        log.warning("control topic %s: %s", msg.topic(), msg.error())
                        continue
                    self._apply(msg.topic(), msg.partition(), msg.offset(), msg.value())
                    key = (msg.topic(), msg.partition())
                    if key in targets and msg.offset() + 1 >= targets[key]:
                        del targets[key]
                if not self._caught_up.is_set() and not targets:
                    self._caught_up.set()
                    log.info("control topics caught up (%d records applied)", self.applied)
        except (KafkaException, KafkaError) as exc:
            self.error = exc
            log.exception("control follower stopped")
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> dict[tuple[str, int], int]:
        """Assign every control partition from the start; return the end offsets to catch up to."""
        targets: dict[tuple[str, int], int] = {}
        assignment = []
        for topic in self.appliers:
            try:
                ends = topic_end_offsets(consumer, topic, timeout=30)  # retries a new topic's missing leader
            except KafkaError as exc:
                raise KafkaError(f"control topic {topic}: {exc}; run `museflow topics create`") from exc
            for p, (low, high) in sorted(ends.items()):
                if high > low:
                    targets[(topic, p)] = high
                assignment.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        consumer.assign(assignment)
        return targets

    def _apply(self, topic: str, partition: int, offset: int, value: bytes | None) -> None:
        if value is None:
            return
        try:
            record = self.decode(topic, value)
            self.appliers[topic](record)
            self.applied += 1
        except MuseflowError as exc:
            log.error("skipping control record %s[%d]@%d: %s", topic, partition, offset, exc)
        except Exception:
            log.exception("control record %s[%d]@%d could not be applied", topic, partition, offset)


def publish_control(settings: Settings, topic: str, key: str, value: bytes, timeout: float = 30.0) -> None:
    """Publish one control record and return once the broker acknowledged it (or raise)."""
    from museflow.kafka.clients import DeliveryReport, make_producer

    producer = make_producer(settings)
    report = DeliveryReport()
    producer.produce(topic, key=key.encode(), value=value, on_delivery=report)
    remaining = producer.flush(timeout)
    if remaining or report.failed or report.acked != 1:
        raise KafkaError(f"publishing {key!r} to {topic} on {settings.bootstrap_servers} failed: "
                         f"{report.errors or f'{remaining} message(s) not delivered within {timeout:.0f}s'}")


def load_control_state(settings: Settings, decode: Decode, *, load_models: bool = False,
                       metrics: Any = None) -> PipelineState:
    """Read every control topic to its end into a fresh state (models loaded only if asked)."""
    from pathlib import Path

    from museflow.kafka.clients import read_topic
    from museflow.metrics import PipelineMetrics

    state = PipelineState(model_dir=Path(settings.model_dir), metrics=metrics or PipelineMetrics(),
                          serves=None if load_models else frozenset())
    for topic, apply in control_appliers(settings, state).items():
        for record in read_topic(settings, topic):
            if record.value is None:
                continue
            try:
                apply(decode(topic, record.value))
            except MuseflowError as exc:
                log.error("skipping control record %s@%d: %s", topic, record.offset, exc)
    return state


def control_decoder(settings: Settings, serdes: Any) -> Decode:
    """``decode(topic, value)`` for the control topics, from a :class:`museflow.serde.Serdes`."""
    names = {t: serdes.schema_for_topic(t, settings.topics) for t in
             (settings.topics.routes, settings.topics.deployments, settings.topics.quantile_maps,
              settings.topics.references)}

    def decode(topic: str, value: bytes) -> Mapping[str, Any]:
        return dict(serdes[names[topic]].decode(value))

    return decode


def publish_deployment(settings: Settings, spec_path: str, *, by: str = "cli", action: str = "deploy") -> str:
    """Validate a spec and its artifact locally (sha256, load, warm-up), then publish the deployment.

    Snapshots are immutable: a different spec under a deployed name and version is refused;
    the same one again is a no-op. Returns what happened, in words.
    """
    import hashlib
    from pathlib import Path

    from museflow.errors import SpecError
    from museflow.kafka.admin import ensure_topics
    from museflow.kafka.schema_registry import serdes_from_settings
    from museflow.registry import ModelRegistry
    from museflow.routing import ModelRef
    from museflow.spec import dump_spec
    from museflow.topics import model_topic

    model = ModelRegistry().load(spec_path)
    spec = model.spec
    ref = ModelRef(spec.name, spec.version)
    serdes = serdes_from_settings(settings)
    state = load_control_state(settings, control_decoder(settings, serdes))
    existing = state.deployments.get(ref)
    if existing is not None and action == "deploy":
        if existing.spec_sha256 == spec.digest:
            return f"{ref} is already deployed with this spec (no change)"
        raise SpecError(
            f"{spec_path}: {ref} is already deployed with a different spec (sha256 {existing.spec_sha256[:12]}... "
            f"vs {spec.digest[:12]}...); model specs are immutable snapshots: publish it as a new version"
        )
    artifact = spec.artifact.resolve(spec.base_dir).resolve()
    record = {
        "model": spec.name, "version": spec.version, "action": action, "spec_yaml": dump_spec(spec),
        "spec_sha256": spec.digest, "artifact_uri": str(artifact), "artifact_format": spec.artifact.format,
        "artifact_sha256": hashlib.sha256(Path(artifact).read_bytes()).hexdigest(),
        "deployed_at": int(time.time() * 1000), "deployed_by": by,
    }
    ensure_topics(settings, [model_topic(settings, spec.name)])
    publish_control(settings, settings.topics.deployments, str(ref), serdes["ModelDeployment"].encode(record))
    return f"{ref} {'deployed' if action == 'deploy' else 'retired'} ({artifact})"
