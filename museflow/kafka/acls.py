"""The Kafka ACLs a tenant and the platform need, as data: printed as ``kafka-acls`` commands or applied.

A tenant reads its own scored topic and nothing else (other tenants' topics, the events topic,
the score log and the dead-letter topic all hold other tenants' data). A tenant that publishes
writes only its own ingest topic ``museflow.events.<tenant>``, never the shared events topic: the
router takes the tenant from the topic and dead-letters (``tenant_mismatch``) an event there that
names another. A tenant's consumer groups are ``<tenant>.<anything>``: tenant names hold no ``.``
(:data:`~museflow.contracts.validation.NAME_PATTERN`), so no tenant's group prefix covers another's
(``acme.`` does not cover ``acme-bank.``), and a tenant whose prefix overlaps the platform's (its
app id) is refused. The platform principal
reads and writes museflow's topics, uses the consumer groups of its app id and, in exactly-once
mode, its transactional ids. ``museflow acls`` prints or applies these rules, and
``tests/integration/test_acls.py`` proves them on a broker with KRaft's ``StandardAuthorizer``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from museflow.config import Settings
from museflow.contracts.topics import ingest_topic_name
from museflow.control.routing import validate_name
from museflow.errors import BrokerError, ConfigError

E = TypeVar("E", bound=Enum)

__all__ = ["GROUP_SEPARATOR", "AclRule", "apply_rules", "kafka_acls_commands", "platform_rules",
           "tenant_group_prefix", "tenant_rules"]

GROUP_SEPARATOR = "."
"""Ends a tenant's consumer-group prefix; tenant names cannot contain it, so prefixes never nest."""

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


def tenant_group_prefix(settings: Settings, tenant: str) -> str:
    """``<tenant>.``: the prefix of the tenant's consumer groups, refused if it overlaps the platform's."""
    validate_name("tenant", tenant)
    prefix = f"{tenant}{GROUP_SEPARATOR}"
    platform = settings.app_id
    if prefix.startswith(platform) or platform.startswith(prefix):
        raise ConfigError(f"tenant {tenant!r}: its consumer groups ({prefix}*) and the platform's ({platform}*, "
                          "the app id) overlap, letting one join or reset the other's groups; rename the tenant "
                          "or run museflow under another MUSEFLOW_APP_ID")
    return prefix


def tenant_rules(settings: Settings, tenant: str, *, principal: str | None = None,
                 publishes: bool = False) -> list[AclRule]:
    """Read (and Describe) the tenant's scored topic with consumer groups named ``<tenant>.<anything>``.

    ``publishes``: the tenant also writes its own events, to its own ingest topic only (otherwise
    the platform's ingest principal writes the shared events topic). Write lets it read nothing.
    """
    group_prefix = tenant_group_prefix(settings, tenant)
    who = principal or f"User:{tenant}"
    rules = [
        AclRule(who, "topic", settings.topics.scores(tenant), ("Read", "Describe")),
        AclRule(who, "group", group_prefix, ("Read",), prefixed=True),
    ]
    if publishes:
        rules.append(AclRule(who, "topic", ingest_topic_name(settings.topics, tenant), ("Write",)))
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
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported there without __all__
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    from museflow.kafka.admin import admin_client

    resource_types = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
                      "transactional-id": ResourceType.TRANSACTIONAL_ID}
    described = {
        AclBinding(resource_types[rule.resource], rule.name,
                   ResourcePatternType.PREFIXED if rule.prefixed else ResourcePatternType.LITERAL,
                   rule.principal, "*", _operation(AclOperation, op), AclPermissionType.ALLOW):
        f"{rule.principal} {op} {rule.name}"
        for rule in rules for op in rule.operations
    }
    bindings = list(described)
    if not bindings:
        return 0
    admin = admin_client(settings)  # kept referenced until every future resolved
    futures = admin.create_acls(bindings, request_timeout=timeout)
    failed = []
    for binding, future in futures.items():
        try:
            future.result(timeout)
        except Exception as exc:  # each binding's own error, reported together
            failed.append(f"{described[binding]}: {exc}")
    if failed:
        raise BrokerError("creating ACLs failed (is an authorizer configured, and are these credentials a "
                         "super user or allowed Alter on the cluster?):\n  " + "\n  ".join(failed))
    return len(bindings)


def _operation(enum: type[E], name: str) -> E:
    """``IdempotentWrite`` -> ``enum.IDEMPOTENT_WRITE``."""
    key = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(name)).upper()
    try:
        return enum[key]
    except KeyError:
        raise ValueError(f"unknown ACL operation {name!r}") from None
