"""Avro encoding and decoding of museflow records, fast and batch-friendly (fastavro).

Two standard framings, both readable by ordinary Avro tooling:

* **Avro single-object encoding** (no schema registry): ``C3 01`` + the 8-byte little-endian
  CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form + the Avro body.
* **Confluent Schema Registry wire format** (when a :class:`SchemaIdResolver` is given):
  ``00`` + the 4-byte big-endian schema id + the Avro body. Subjects follow the record-name
  strategy (``io.museflow.events.TransactionEvent``), because one schema serves many topics.

Decoding accepts both framings whatever the configuration, so a deployment can move between
them. Every decoding failure raises :class:`~museflow.errors.SerializationError` whose
``reason`` is a :class:`~museflow.contracts.deadletter.DeadLetterReason` value (``undecodable``,
``unknown_schema``, ``wrong_schema``); :meth:`AvroSerde.decode_many` returns such errors in
place instead of raising, so one bad record never costs the batch.

Timestamps are epoch milliseconds (``int``) in the dicts: logical types are not converted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Protocol, runtime_checkable

from fastavro import schemaless_reader, schemaless_writer

from museflow.config import TopicNames
from museflow.contracts.deadletter import DeadLetterReason
from museflow.contracts.schemas import (
    SCHEMA_NAMES,
    fingerprint,
    full_name,
    load_schema,
    parse_schema,
    schema_json,
    strip_logical_types,
)
from museflow.errors import SchemaError, SerializationError

__all__ = [
    "REGISTRY_MAGIC",
    "SINGLE_OBJECT_MAGIC",
    "AvroSerde",
    "Decoded",
    "SchemaIdResolver",
    "Serdes",
    "framing_of",
]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
REGISTRY_MAGIC = b"\x00"
_SO_HEADER_LEN = 10
_REG_HEADER_LEN = 5
_UNDECODABLE = DeadLetterReason.UNDECODABLE.value
_UNKNOWN_SCHEMA = DeadLetterReason.UNKNOWN_SCHEMA.value
_WRONG_SCHEMA = DeadLetterReason.WRONG_SCHEMA.value


@runtime_checkable
class SchemaIdResolver(Protocol):
    """A schema registry as serde needs it; :mod:`museflow.kafka.schema_registry` implements it."""

    def register(self, subject: str, schema_json: str) -> int:
        """Register (or find) ``schema_json`` under ``subject``; return its schema id."""

    def lookup(self, schema_id: int) -> str | None:
        """The schema JSON with id ``schema_id``, or None when the registry does not know it.

        Transport failures must raise (they are not the record's fault and must not dead-letter it).
        """


def framing_of(value: bytes | None) -> str:
    """``single-object``, ``registry`` or ``unknown``: which framing ``value`` starts with."""
    if value is None:
        return "unknown"
    if value[:2] == SINGLE_OBJECT_MAGIC and len(value) >= _SO_HEADER_LEN:
        return "single-object"
    if value[:1] == REGISTRY_MAGIC and len(value) >= _REG_HEADER_LEN:
        return "registry"
    return "unknown"


@dataclass(frozen=True, slots=True)
class _Writer:
    """How to read bodies written with one schema: parsed writer schema, or a foreign record name."""

    name: str
    parsed: dict[str, Any] | None
    resolve: bool


class AvroSerde:
    """Encoder/decoder of one record type; build once, reuse for every record.

    ``schema`` is the ``.avsc`` JSON. With a ``resolver`` it frames with the registry wire
    format (registering the schema on first encode); otherwise with single-object encoding.
    """

    def __init__(self, schema: Mapping[str, Any], *, resolver: SchemaIdResolver | None = None) -> None:
        self.schema: dict[str, Any] = dict(schema)
        self.full_name = full_name(schema)
        self.name = self.full_name.rsplit(".", 1)[-1]
        self.schema_json = schema_json(schema)
        self._parsed = parse_schema(strip_logical_types(self.schema), where=self.full_name)
        self.fingerprint = fingerprint(self.schema)
        self._so_header = SINGLE_OBJECT_MAGIC + self.fingerprint
        self.resolver = resolver
        self._schema_id: int | None = None
        self._by_fp: dict[bytes, _Writer] = {self.fingerprint: _Writer(self.name, self._parsed, False)}
        self._by_id: dict[int, _Writer] = {}
        self._reg_header: bytes | None = None

    @classmethod
    def for_schema(cls, name: str, *, resolver: SchemaIdResolver | None = None) -> AvroSerde:
        """The serde of museflow schema ``name`` (e.g. ``"TransactionEvent"``)."""
        return cls(load_schema(name), resolver=resolver)

    def __repr__(self) -> str:
        framing = "registry" if self.resolver is not None else "single-object"
        return f"AvroSerde({self.full_name}, {framing}, fingerprint={self.fingerprint.hex()})"

    # -- schemas this serde can read -------------------------------------------------------

    def add_writer_schema(self, schema: Mapping[str, Any]) -> None:
        """Also read data written with ``schema`` (an older version of this record)."""
        wire = parse_schema(strip_logical_types(dict(schema)), where=f"writer schema of {self.full_name}")
        if full_name(schema).rsplit(".", 1)[-1] != self.name:
            raise SchemaError(f"{full_name(schema)} is not a version of {self.full_name}")
        self._by_fp.setdefault(fingerprint(schema), _Writer(self.name, wire, True))

    def recognise(self, fingerprints: Mapping[bytes, str]) -> None:
        """Fingerprints of other museflow records, so they decode as ``wrong_schema``, not ``unknown_schema``."""
        for fp, name in fingerprints.items():
            self._by_fp.setdefault(fp, _Writer(name, None, False))

    @property
    def schema_id(self) -> int | None:
        """Registry id of this schema (registered on first use), None without a registry."""
        if self.resolver is None:
            return None
        if self._schema_id is None:
            schema_id = int(self.resolver.register(self.full_name, self.schema_json))
            self._schema_id = schema_id
            self._by_id[schema_id] = _Writer(self.name, self._parsed, False)
            self._reg_header = REGISTRY_MAGIC + schema_id.to_bytes(4, "big")
        return self._schema_id

    @property
    def header(self) -> bytes:
        """The framing prefix of everything this serde encodes."""
        schema_id = self.schema_id
        if schema_id is None:
            return self._so_header
        return REGISTRY_MAGIC + schema_id.to_bytes(4, "big")

    # -- encoding ------------------------------------------------------------------------

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Framed Avro bytes of ``record``; raises SerializationError(reason=unencodable)."""
        return self.encode_many((record,))[0]

    def encode_many(self, records: Iterable[Mapping[str, Any]]) -> list[bytes]:
        """Framed Avro bytes of each record, in order; raises on the first that does not fit."""
        header = self.header
        parsed = self._parsed
        out: list[bytes] = []
        append = out.append
        for index, record in enumerate(records):
            fo = BytesIO()
            fo.write(header)
            try:
                schemaless_writer(fo, parsed, record)
            except Exception as exc:  # fastavro raises ValueError, TypeError, KeyError, OverflowError...
                raise SerializationError(
                    f"record #{index} does not fit schema {self.full_name}: {type(exc).__name__}: {exc}; "
                    "fix the code that built it",
                    reason=DeadLetterReason.UNENCODABLE.value,
                ) from exc
            append(fo.getvalue())
        return out

    # -- decoding ------------------------------------------------------------------------

    def decode(self, value: bytes | None) -> dict[str, Any]:
        """The record in ``value``; raises :class:`SerializationError` with a reason code."""
        result = self.decode_many((value,))[0]
        if isinstance(result, SerializationError):
            raise result
        return result

    def decode_many(self, values: Iterable[bytes | None]) -> list[dict[str, Any] | SerializationError]:
        """Decode a batch; a bad element becomes a SerializationError in its place (never raises for it)."""
        header = self._so_header
        reg_header = self._reg_header or header
        parsed = self._parsed
        reader = schemaless_reader
        out: list[dict[str, Any] | SerializationError] = []
        append = out.append
        for value in values:
            if value is not None and (value[:_SO_HEADER_LEN] == header or value[:_REG_HEADER_LEN] == reg_header):
                try:
                    fo = BytesIO(value)
                    fo.seek(_SO_HEADER_LEN if value[0] else _REG_HEADER_LEN)
                    record = reader(fo, parsed, None)
                    if fo.tell() == len(value):
                        append(record)  # type: ignore[arg-type]  # a record schema reads a dict
                        continue
                except Exception as exc:
                    append(self._undecodable(value, exc))
                    continue
                append(self._trailing(value, fo.tell()))
            else:
                append(self._decode_other(value))
        return out

    def _decode_other(self, value: bytes | None) -> dict[str, Any] | SerializationError:
        """Slow path: registry framing, older writer schemas, and every kind of failure."""
        if value is None:
            return SerializationError(f"value is null where a {self.name} record was expected",
                                      reason=_UNDECODABLE)
        framing = framing_of(value)
        if framing == "single-object":
            fp = bytes(value[2:_SO_HEADER_LEN])
            writer = self._by_fp.get(fp)
            if writer is None:
                return SerializationError(
                    f"single-object fingerprint {fp.hex()} is not a known schema (expected {self.name} "
                    f"{self.fingerprint.hex()}); was it written with a newer schema this worker lacks?",
                    reason=_UNKNOWN_SCHEMA,
                )
            return self._read_body(value, _SO_HEADER_LEN, writer)
        if framing == "registry":
            schema_id = int.from_bytes(value[1:_REG_HEADER_LEN], "big")
            writer = self._writer_for_id(schema_id)
            if writer is None:
                return SerializationError(
                    f"schema registry id {schema_id} is unknown (expected {self.name}"
                    f"{'' if self.resolver is not None else '; no registry is configured'})",
                    reason=_UNKNOWN_SCHEMA,
                )
            return self._read_body(value, _REG_HEADER_LEN, writer)
        return SerializationError(
            f"{len(value)} bytes starting {bytes(value[:8]).hex() or '<empty>'} are neither Avro "
            f"single-object (c301...) nor schema-registry (00...) framed {self.name}",
            reason=_UNDECODABLE,
        )

    def _writer_for_id(self, schema_id: int) -> _Writer | None:
        found = self._by_id.get(schema_id)
        if found is not None or self.resolver is None:
            return found
        text = self.resolver.lookup(schema_id)
        if text is None:
            return None
        try:
            writer_schema = json.loads(text)
            name = full_name(writer_schema).rsplit(".", 1)[-1]
            if name != self.name:
                found = _Writer(name, None, False)
            else:
                wire = parse_schema(strip_logical_types(writer_schema), where=f"registry id {schema_id}")
                same = fingerprint(writer_schema) == self.fingerprint
                found = _Writer(name, self._parsed if same else wire, not same)
                if same and self._reg_header is None:
                    self._reg_header = REGISTRY_MAGIC + schema_id.to_bytes(4, "big")
        except (ValueError, SchemaError, AttributeError, TypeError):
            return None
        self._by_id[schema_id] = found
        return found

    def _read_body(self, value: bytes, offset: int, writer: _Writer) -> dict[str, Any] | SerializationError:
        if writer.parsed is None:
            return SerializationError(
                f"value is a {writer.name} record where a {self.name} was expected", reason=_WRONG_SCHEMA
            )
        fo = BytesIO(value)
        fo.seek(offset)
        try:
            record = schemaless_reader(fo, writer.parsed, self._parsed if writer.resolve else None)
        except Exception as exc:
            return self._undecodable(value, exc)
        if fo.tell() != len(value):
            return self._trailing(value, fo.tell())
        return record  # type: ignore[return-value]  # a record schema reads a dict

    def _undecodable(self, value: bytes, exc: Exception) -> SerializationError:
        error = SerializationError(
            f"{len(value)}-byte {self.name} body is corrupt or truncated: {type(exc).__name__}: {exc}",
            reason=_UNDECODABLE,
        )
        error.__cause__ = exc
        return error

    def _trailing(self, value: bytes, used: int) -> SerializationError:
        return SerializationError(
            f"{self.name} record ends at byte {used} of {len(value)}: trailing bytes mean corrupt data",
            reason=_UNDECODABLE,
        )


@dataclass(frozen=True, slots=True)
class Decoded:
    """A record of any museflow type, from :meth:`Serdes.decode_any`."""

    schema: str
    record: dict[str, Any]


_TOPIC_SCHEMAS = {
    "events": "TransactionEvent",
    "dlq": "DeadLetter",
    "score-log": "ScoreLogBatch",
    "labels": "Label",
    "routes": "Route",
    "deployments": "ModelDeployment",
    "quantile-maps": "QuantileMap",
    "references": "ReferenceDistribution",
    "verdicts": "ContractVerdict",
}


class Serdes:
    """One :class:`AvroSerde` per museflow schema, aware of each other (for ``wrong_schema``).

    Build with ``Serdes()`` (single-object framing) or ``Serdes(resolver)`` (registry framing);
    :func:`museflow.kafka.schema_registry.serdes_from_settings` picks from Settings.
    """

    def __init__(self, resolver: SchemaIdResolver | None = None, names: Sequence[str] = SCHEMA_NAMES) -> None:
        self.resolver = resolver
        self._serdes = {name: AvroSerde.for_schema(name, resolver=resolver) for name in names}
        known = {serde.fingerprint: name for name, serde in self._serdes.items()}
        for serde in self._serdes.values():
            serde.recognise(known)
        self._by_fp = known

    def __getitem__(self, name: str) -> AvroSerde:
        try:
            return self._serdes[name]
        except KeyError:
            raise SchemaError(f"no schema named {name!r}; known: {sorted(self._serdes)}") from None

    def __iter__(self) -> Iterator[AvroSerde]:
        return iter(self._serdes.values())

    @property
    def events(self) -> AvroSerde:
        return self._serdes["TransactionEvent"]

    @property
    def scored(self) -> AvroSerde:
        return self._serdes["ScoredEvent"]

    @property
    def score_log(self) -> AvroSerde:
        return self._serdes["ScoreLogBatch"]

    @property
    def labels(self) -> AvroSerde:
        return self._serdes["Label"]

    @property
    def dead_letters(self) -> AvroSerde:
        return self._serdes["DeadLetter"]

    @property
    def routes(self) -> AvroSerde:
        return self._serdes["Route"]

    @property
    def deployments(self) -> AvroSerde:
        return self._serdes["ModelDeployment"]

    @property
    def quantile_maps(self) -> AvroSerde:
        return self._serdes["QuantileMap"]

    @property
    def references(self) -> AvroSerde:
        return self._serdes["ReferenceDistribution"]

    @property
    def verdicts(self) -> AvroSerde:
        return self._serdes["ContractVerdict"]

    def schema_for_topic(self, topic: str, topics: TopicNames | None = None) -> str | None:
        """The schema name museflow uses on ``topic`` (prefix-aware), or None when it cannot tell."""
        prefix = (topics or TopicNames()).prefix
        base = topic[len(prefix):] if prefix and topic.startswith(prefix) else topic
        if not base.startswith("museflow."):
            return None
        rest = base[len("museflow."):]
        if rest.startswith("scores."):
            return "ScoredEvent"
        if rest.startswith("model."):
            return "TransactionEvent"
        return _TOPIC_SCHEMAS.get(rest)

    def name_of(self, value: bytes | None) -> str | None:
        """Which museflow schema wrote ``value``, from its framing alone (None when unknown)."""
        framing = framing_of(value)
        if value is None or framing == "unknown":
            return None
        if framing == "single-object":
            return self._by_fp.get(bytes(value[2:_SO_HEADER_LEN]))
        schema_id = int.from_bytes(value[1:_REG_HEADER_LEN], "big")
        for serde in self._serdes.values():
            writer = serde._writer_for_id(schema_id)
            if writer is not None:
                return writer.name if writer.name in self._serdes else None
        return None

    def decode_any(self, value: bytes | None, hint: str | None = None) -> Decoded:
        """Decode a value of any museflow type, picking the schema by its framing, else by ``hint``."""
        name = self.name_of(value) or hint
        if name is None or name not in self._serdes:
            raise SerializationError(
                f"cannot tell which museflow schema wrote {len(value or b'')} bytes starting "
                f"{bytes((value or b'')[:10]).hex() or '<empty>'}; name the schema",
                reason=_UNKNOWN_SCHEMA if framing_of(value) != "unknown" else _UNDECODABLE,
            )
        return Decoded(name, self._serdes[name].decode(value))
