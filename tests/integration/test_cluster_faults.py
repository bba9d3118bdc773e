"""Faults on a three-broker cluster (RF 3, ``min.insync.replicas=2``): one short seeded schedule per guarantee.

The whole matrix is ``bench/fault_matrix.py``; this runs its CI schedule with the same harness
(seed 7: ``kill -9`` of the broker leading one events partition mid-stream, restarted after
~10 s) on a cluster the module starts, with two router+scorer workers under the bench's
supervisor, and checks every event id twice: with the bench's tally (``read_committed`` in
exactly-once mode, plus aborted reads parsed from the partition leaders' log segments) and with
the single-broker fault tests' accounting (``tests/integration/test_faults.py``).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.bench_scripts import load_bench_script
from tests.integration.test_faults import account

pytestmark = pytest.mark.slow
SEED = 7


@pytest.fixture(scope="module")
def fault_matrix() -> ModuleType:
    return load_bench_script("fault_matrix")


@pytest.fixture(scope="module")
def small_models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The demo models trained on fewer events than the session's (seconds instead of ~20 s)."""
    from museflow.demo.models import train_demo_models

    out = tmp_path_factory.mktemp("cluster-models")
    return [m.spec_path for m in train_demo_models(out, seed=SEED, n_events=60_000)]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_kill_9_of_an_events_partition_leader_mid_stream_loses_nothing(
        guarantee: str, kafka_cluster: Any, small_models: list[Path], fault_matrix: ModuleType,
        tmp_path: Path) -> None:
    fm = fault_matrix
    schedule = fm.leader_kill_schedule(SEED, fm.CI)
    result = fm.run_one(kafka_cluster, small_models, guarantee, "leader-kill", schedule, tmp_path,
                        timing=fm.CI, workers=2, rate=100.0, seed=SEED, cleanup=False)
    print(f"\n{fm.table([result])}\nactions: {result.actions}")
    assert not result.error, result.error
    assert result.actions and "leader of events" in result.actions[0], result.actions
    assert result.producer_failures == 0
    assert result.lost == 0, f"lost {result.lost_sample}"
    assert result.good_in_dlq == 0
    assert not result.crash_loop
    isolation = "read_committed" if guarantee == "exactly_once" else "read_uncommitted"
    again = account(result.settings, result.summary, isolation=isolation)
    print(again.line(f"{guarantee}, {isolation}"))
    assert again.lost == 0
    if guarantee == "exactly_once":
        assert result.duplicates == 0
        assert again.duplicates == result.input_duplicates, "copies beyond what the producer wrote twice"
        assert result.aborted_reads == 0
        assert result.open_transactions == 0
        assert result.aborted_in_log == result.uncommitted_extra, "the log parse and read_uncommitted disagree"
    else:
        assert again.duplicates >= result.duplicates  # counted and printed: a lost group session redelivers


def test_the_cli_shows_the_cluster_and_museflow_topics_need_two_in_sync_replicas(kafka_cluster: Any) -> None:
    """``museflow kafka status`` names three running nodes and an active controller; every topic museflow
    creates on the cluster has replication factor 3 and ``min.insync.replicas=2``, so an ``acks=all`` write
    survives losing its leader."""
    import json
    import uuid

    from click.testing import CliRunner
    from confluent_kafka.admin import AdminClient, ConfigResource

    from museflow.cli.main import cli
    from museflow.config import Settings
    from museflow.contracts.topics import core_topics
    from museflow.kafka.admin import ensure_topics

    shown = CliRunner().invoke(cli, ["kafka", "status", "--name", kafka_cluster.name, "--home",
                                     str(kafka_cluster.home), "--json"])
    assert shown.exit_code == 0, shown.output
    status = json.loads(shown.output)
    assert status["state"] == "running" and [n["state"] for n in status["nodes"]] == ["running"] * 3
    assert status["controller"] in (1, 2, 3) and status["bootstrap"] == kafka_cluster.bootstrap

    settings = Settings(bootstrap_servers=kafka_cluster.bootstrap, topic_prefix=f"isr{uuid.uuid4().hex[:6]}.",
                        replication_factor=3, partitions=2, metrics_enabled=False)
    specs = core_topics(settings)
    ensure_topics(settings, specs)
    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap})
    metadata = admin.list_topics(timeout=10)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, spec.name) for spec in specs]
    for resource, future in admin.describe_configs(resources).items():
        configs = future.result(timeout=10)
        assert configs["min.insync.replicas"].value == "2", resource.name
        partitions = metadata.topics[resource.name].partitions.values()
        assert all(len(p.replicas) == 3 for p in partitions), resource.name
