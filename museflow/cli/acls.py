"""``museflow acls``: the Kafka ACLs a tenant or the platform principal needs, printed or applied."""

from __future__ import annotations

import click

from museflow.config import Settings
from museflow.kafka.acls import AclRule, apply_rules, kafka_acls_commands, platform_rules, tenant_rules

__all__ = ["acls_command"]


@click.command("acls")
@click.option("--tenant", "tenants", multiple=True,
              help="A tenant to grant reading its own scored topic with consumer groups TENANT.* (repeatable); "
                   "principal User:TENANT.")
@click.option("--tenant-publishes", is_flag=True,
              help="Tenants also write their own events, each to its own ingest topic museflow.events.TENANT "
                   "only (created with --apply); the router dead-letters an event there naming another tenant.")
@click.option("--platform", "platform_principal", default=None,
              help="The principal museflow's workers and CLI run as, e.g. User:museflow.")
@click.option("--no-create", is_flag=True, help="The platform principal does not create topics (provisioned by ops).")
@click.option("--apply", "apply_now", is_flag=True,
              help="Create the ACLs on the broker with these credentials (an administrator's) instead of printing.")
@click.option("--bootstrap-servers", default=None, help="Kafka bootstrap (default: MUSEFLOW_BOOTSTRAP_SERVERS).")
def acls_command(tenants: tuple[str, ...], tenant_publishes: bool, platform_principal: str | None,
                 no_create: bool, apply_now: bool, bootstrap_servers: str | None) -> None:
    """Print the `kafka-acls` commands that let each tenant read its own scored topic and nothing else
    (consumer groups TENANT.*; tenant names hold no '.', so no tenant's groups cover another's or the
    platform's), and that let the platform principal run museflow (topics under MUSEFLOW_TOPIC_PREFIX, groups under
    MUSEFLOW_APP_ID, transactional ids in exactly-once mode). The broker needs an authorizer
    (KRaft: authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer).
    """
    if not tenants and not platform_principal:
        raise click.UsageError("name at least one --tenant or --platform PRINCIPAL")
    settings = Settings.from_env(bootstrap_servers=bootstrap_servers)
    rules: list[AclRule] = []
    if platform_principal:
        rules += platform_rules(settings, platform_principal, create_topics=not no_create)
    for tenant in tenants:
        rules += tenant_rules(settings, tenant, publishes=tenant_publishes)
    if apply_now:
        if tenant_publishes:
            from museflow.contracts.topics import ingest_topic
            from museflow.kafka.admin import ensure_topics

            ensure_topics(settings, [ingest_topic(settings, tenant) for tenant in tenants])
        created = apply_rules(settings, rules)
        click.echo(f"created {created} ACL bindings on {settings.bootstrap_servers}")
        return
    for command in kafka_acls_commands(rules, bootstrap=settings.bootstrap_servers):
        click.echo(command)
