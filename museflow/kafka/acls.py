"""The Kafka ACLs a tenant and the platform need, as data: printed as ``kafka-acls`` commands or applied.

A tenant reads its own scored topic and nothing else (other tenants' topics, the events topic,
the score log and the dead-letter topic all hold other tenants' data). The platform principal
reads and writes museflow's topics, uses the consumer groups of its app id and, in exactly-once
mode, its transactional ids. ``museflow acls`` prints or applies these rules, and
``tests/integration/test_acls.py`` proves them on a broker with KRaft's ``StandardAuthorizer``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from museflow.config import Settings
from museflow.errors import ConfigError, KafkaError
from museflow.routing import validate_name

__all__ = ["AclRule", "apply_rules", "kafka_acls_commands", "platform_rules", "tenant_rules"]

_RESOURCE_FLAGS = {"topic": "--topic", "group": "--group", "transactional-id": "--transactional-id"}


@dataclass(frozen=True)
class AclRule:
    """Allow ``principal`` the ``operations`` on one resource (a literal name or a name prefix)."""

    principal: str
    resource: str
    name: str
    operations: tuple[str, ...]
    prefixed: bool = False

    def __post_init__(self) -> None:
        if self.resource not in _RESOURCE_FLAGS:
            raise ValueError(f"unknown ACL resource type {self.resource!r}; one of {sorted(_RESOURCE_FLAGS)}")


def tenant_rules(settings: Settings, tenant: str, *, principal: str | None = None,
                 publishes: bool = False) -> list[AclRule]:
    """Read (and Describe) the tenant's scored topic with consumer groups named ``<tenant>-...``.

    ``publishes``: the tenant also writes its own events to the events topic (otherwise the
    platform's ingest principal does). Write does not let it read anyone's events.
    """
    validate_name("tenant", tenant)
    if f"{settings.app_id}-".startswith(f"{tenant}-"):
        raise ConfigError(f"tenant {tenant!r}: its consumer groups ({tenant}-*) would include the platform's "
                          f"({settings.app_id}-*), letting it join or reset them; rename the tenant or "
                          "run museflow under another MUSEFLOW_APP_ID")
    who = principal or f"User:{tenant}"
    rules = [
        AclRule(who, "topic", settings.topics.scores(tenant), ("Read", "Describe")),
        AclRule(who, "group", f"{tenant}-", ("Read",), prefixed=True),
    ]
    if publishes:
        rules.append(AclRule(who, "topic", settings.topics.events, ("Write",)))
    return rules


def platform_rules(settings: Settings, principal: str, *, create_topics: bool = True) -> list[AclRule]:
    """What museflow's own workers and CLI need: its topics, its groups, its transactional ids."""
    # DescribeConfigs: the hot loops read each output topic's max.message.bytes (oversize check).
    topic_ops = ("Read", "Write", "Describe", "DescribeConfigs") + (("Create",) if create_topics else ())
    rules = [
        AclRule(principal, "topic", settings.topics.namespace, topic_ops, prefixed=True),
        AclRule(principal, "group", settings.app_id, ("Read", "Describe"), prefixed=True),
    ]
    if settings.exactly_once:
        rules.append(AclRule(principal, "transactional-id", f"{settings.app_id}-", ("Write", "Describe"),
                             prefixed=True))
    else:  # control-plane changes are compare-and-set transactions under one id
        rules.append(AclRule(principal, "transactional-id", f"{settings.app_id}-control", ("Write", "Describe")))
    return rules


def kafka_acls_commands(rules: Iterable[AclRule], *, bootstrap: str = "broker:9092",
                        command_config: str = "admin.properties") -> list[str]:
    """One ``kafka-acls --add`` command per rule, as an operator would type it."""
    commands = []
    for rule in rules:
        parts = [f"kafka-acls --bootstrap-server {bootstrap} --command-config {command_config} --add",
                 f"  --allow-principal {rule.principal} "
                 + " ".join(f"--operation {op}" for op in rule.operations),
                 f"  {_RESOURCE_FLAGS[rule.resource]} {rule.name}"
                 + (" --resource-pattern-type prefixed" if rule.prefixed else "")]
        commands.append(" \\\n".join(parts))
    return commands


def apply_rules(settings: Settings, rules: Sequence[AclRule], *, timeout: float = 30.0) -> int:
    """Create the rules' ACL bindings with the settings' (administrator's) credentials; returns how many."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    from museflow.kafka.admin import admin_client

    resource_types = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
                      "transactional-id": ResourceType.TRANSACTIONAL_ID}
    bindings = [
        AclBinding(resource_types[rule.resource], rule.name,
                   ResourcePatternType.PREFIXED if rule.prefixed else ResourcePatternType.LITERAL,
                   rule.principal, "*", _operation(AclOperation, op), AclPermissionType.ALLOW)
        for rule in rules for op in rule.operations
    ]
    if not bindings:
        return 0
    admin = admin_client(settings)  # kept referenced until every future resolved
    futures = admin.create_acls(bindings, request_timeout=timeout)
    failed = []
    for binding, future in futures.items():
        try:
            future.result(timeout)
        except Exception as exc:  # each binding's own error, reported together
            failed.append(f"{binding.principal} {binding.operation.name} {binding.name}: {exc}")
    if failed:
        raise KafkaError("creating ACLs failed (is an authorizer configured, and are these credentials a "
                         "super user or allowed Alter on the cluster?):\n  " + "\n  ".join(failed))
    return len(bindings)


def _operation(enum: type, name: str) -> object:
    key = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(name)).upper()
    try:
        return enum[key]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unknown ACL operation {name!r}") from None
