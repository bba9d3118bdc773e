"""ACL rules as data: what a tenant and the platform get, and the README shows exactly what is printed."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from museflow.cli.acls import acls_command
from museflow.config import Settings
from museflow.errors import ConfigError, RouteError
from museflow.kafka.acls import AclRule, kafka_acls_commands, platform_rules, tenant_group_prefix, tenant_rules

README = Path(__file__).resolve().parents[2] / "README.md"


def test_a_tenant_reads_its_own_topic_with_its_own_groups_and_nothing_else() -> None:
    settings = Settings(topic_prefix="prod.")
    rules = tenant_rules(settings, "acme-bank")
    assert rules == [
        AclRule("User:acme-bank", "topic", "prod.museflow.scores.acme-bank", ("Read", "Describe")),
        AclRule("User:acme-bank", "group", "acme-bank.", ("Read",), prefixed=True),
    ]


def test_a_publishing_tenant_writes_only_its_own_ingest_topic() -> None:
    settings = Settings(topic_prefix="prod.")
    publishing = tenant_rules(settings, "acme-bank", publishes=True, principal="User:CN=acme")
    assert publishing[-1] == AclRule("User:CN=acme", "topic", "prod.museflow.events.acme-bank", ("Write",))
    assert [r for r in publishing if "Write" in r.operations] == [publishing[-1]]
    assert not [r for r in publishing if r.name in ("prod.museflow.events", "prod.museflow.")], \
        "no grant on the shared events topic"
    assert all("Read" not in r.operations for r in publishing if r.resource == "topic" and "events" in r.name)


def test_museflow_acls_tenant_publishes_prints_the_ingest_topic_grant() -> None:
    env = {"MUSEFLOW_BOOTSTRAP_SERVERS": "broker:9092", "MUSEFLOW_TOPIC_PREFIX": "", "MUSEFLOW_APP_ID": "museflow"}
    result = CliRunner().invoke(acls_command, ["--tenant", "acme", "--tenant", "acme-bank", "--tenant-publishes"],
                                env=env)
    assert result.exit_code == 0, result.output
    assert "--topic museflow.events.acme\n" in result.output and "--topic museflow.events.acme-bank\n" in result.output
    assert "--topic museflow.events\n" not in result.output
    assert "--group acme. --resource-pattern-type prefixed" in result.output
    assert "--group acme-bank. --resource-pattern-type prefixed" in result.output


def test_tenant_group_prefixes_never_cover_one_another() -> None:
    names = ["acme", "acme-bank", "acme-bank-eu", "a", "ac"]
    prefixes = [tenant_group_prefix(Settings(), name) for name in names]
    assert prefixes[:2] == ["acme.", "acme-bank."]
    for mine in prefixes:
        for other in prefixes:
            assert mine == other or not other.startswith(mine), (mine, other)
    # a group of acme-bank's is outside acme's prefixed grant, and the reverse
    assert not "acme-bank.risk".startswith(prefixes[0]) and not "acme.risk".startswith(prefixes[1])


@pytest.mark.parametrize("evil", ["acme-bank.x", "globex-pay/..", "", "Acme", "*"])
def test_a_tenant_name_that_could_widen_the_grant_is_refused(evil: str) -> None:
    with pytest.raises(RouteError):
        tenant_rules(Settings(), evil)


@pytest.mark.parametrize(("app_id", "tenant"), [
    ("museflow", "museflow"),         # the platform's groups museflow* cover the tenant's museflow.*
    ("museflow", "museflow-scorer"),  # ... and museflow-scorer.*
    ("museflow", "museflowx"),
    ("scores-prod", "scores-prod"),
    ("acme.prod", "acme"),            # the other direction: the tenant's acme.* covers the platform's
])
def test_a_tenant_whose_groups_overlap_the_platforms_is_refused(app_id: str, tenant: str) -> None:
    with pytest.raises(ConfigError, match="platform"):
        tenant_rules(Settings(app_id=app_id), tenant)
    with pytest.raises(ConfigError, match="platform"):
        tenant_rules(Settings(app_id=app_id), tenant, publishes=True)


@pytest.mark.parametrize(("app_id", "tenant"), [("museflow", "muse"), ("scores-prod", "scores"),
                                                ("museflow-eu", "museflow")])
def test_a_tenant_whose_groups_do_not_overlap_the_platforms_is_accepted(app_id: str, tenant: str) -> None:
    group = next(r for r in tenant_rules(Settings(app_id=app_id), tenant) if r.resource == "group")
    assert group.name == f"{tenant}." and group.prefixed
    assert not group.name.startswith(app_id) and not app_id.startswith(group.name)


def test_the_platform_gets_the_control_transactional_id_and_the_workers_ones_in_exactly_once_mode() -> None:
    at_least_once = platform_rules(Settings(app_id="mf"), "User:museflow")
    assert [r.resource for r in at_least_once] == ["topic", "group", "transactional-id"]
    assert at_least_once[-1] == AclRule("User:museflow", "transactional-id", "mf-control", ("Write", "Describe"))
    assert at_least_once[0].name == "museflow." and at_least_once[0].prefixed
    assert at_least_once[0].operations == ("Read", "Write", "Describe", "DescribeConfigs", "Create")
    assert "Create" not in platform_rules(Settings(), "User:museflow", create_topics=False)[0].operations
    eos = platform_rules(Settings(app_id="mf", processing_guarantee="exactly_once"), "User:museflow")
    assert eos[-1] == AclRule("User:museflow", "transactional-id", "mf-", ("Write", "Describe"), prefixed=True)


def test_the_readme_shows_what_museflow_acls_prints() -> None:
    runner = CliRunner()
    env = {"MUSEFLOW_BOOTSTRAP_SERVERS": "broker:9092", "MUSEFLOW_TOPIC_PREFIX": "", "MUSEFLOW_APP_ID": "museflow"}
    readme = README.read_text()
    for args in (["--tenant", "acme-bank"], ["--platform", "User:museflow"]):
        result = runner.invoke(acls_command, args, env=env)
        assert result.exit_code == 0, result.output
        assert result.output.strip() in readme, f"README is out of date for `museflow acls {' '.join(args)}`"
    assert runner.invoke(acls_command, [], env=env).exit_code != 0


def test_commands_name_each_operation_and_the_pattern_type() -> None:
    (command,) = kafka_acls_commands([AclRule("User:x", "group", "x-", ("Read",), prefixed=True)], bootstrap="b:1")
    assert command.splitlines() == [
        "kafka-acls --bootstrap-server b:1 --command-config admin.properties --add \\",
        "  --allow-principal User:x --operation Read \\",
        "  --group x- --resource-pattern-type prefixed",
    ]
