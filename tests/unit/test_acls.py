"""ACL rules as data: what a tenant and the platform get, and the README shows exactly what is printed."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from museflow.cli.acls import acls_command
from museflow.config import Settings
from museflow.errors import ConfigError, RouteError
from museflow.kafka.acls import AclRule, kafka_acls_commands, platform_rules, tenant_rules

README = Path(__file__).resolve().parents[2] / "README.md"


def test_a_tenant_reads_its_own_topic_with_its_own_groups_and_nothing_else() -> None:
    settings = Settings(topic_prefix="prod.")
    rules = tenant_rules(settings, "acme-bank")
    assert rules == [
        AclRule("User:acme-bank", "topic", "prod.museflow.scores.acme-bank", ("Read", "Describe")),
        AclRule("User:acme-bank", "group", "acme-bank-", ("Read",), prefixed=True),
    ]
    publishing = tenant_rules(settings, "acme-bank", publishes=True, principal="User:CN=acme")
    assert publishing[-1] == AclRule("User:CN=acme", "topic", "prod.museflow.events", ("Write",))
    assert all("Read" not in r.operations for r in publishing if r.name == "prod.museflow.events")


@pytest.mark.parametrize("evil", ["acme-bank.x", "globex-pay/..", "", "Acme", "*"])
def test_a_tenant_name_that_could_widen_the_grant_is_refused(evil: str) -> None:
    with pytest.raises(RouteError):
        tenant_rules(Settings(), evil)


@pytest.mark.parametrize(("app_id", "tenant"), [("museflow", "museflow"), ("scores-prod", "scores")])
def test_a_tenant_whose_groups_would_cover_the_platforms_is_refused(app_id: str, tenant: str) -> None:
    with pytest.raises(ConfigError, match="platform"):
        tenant_rules(Settings(app_id=app_id), tenant)
    assert tenant_rules(Settings(app_id=app_id), f"{tenant}x")  # a longer name is its own namespace


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
