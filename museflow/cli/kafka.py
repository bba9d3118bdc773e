"""``museflow kafka``: run a real Apache Kafka (KRaft) locally: one broker, or a cluster (``--brokers 3``).

A name's directory holds either one broker (``instance.json``) or a cluster (``cluster.json``);
``stop`` and ``status`` tell them apart by that, so they take no ``--brokers``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from museflow.errors import BrokerLaunchError
from museflow.kafka.broker import LocalCluster, LocalKafka, cache_root, kafka_version, locate_distribution

__all__ = ["kafka_group"]

_err = Console(stderr=True)

_name = click.option("--name", default="default", show_default=True, help="Instance name (one data dir each).")
_home = click.option(
    "--home", type=click.Path(path_type=Path), default=None,
    help="Instance directory (default: ~/.cache/museflow/instances/NAME).",
)


def _cluster(name: str, home: Path | None) -> LocalCluster | None:
    """The cluster recorded under this name's directory, or ``None`` when it holds one broker (or nothing)."""
    cluster = LocalCluster(name, home=home or cache_root() / "instances" / name)
    return cluster if cluster.layout() is not None else None


@click.group("kafka")
def kafka_group() -> None:
    """Start, inspect and stop a local Apache Kafka broker or cluster (needs java >= 17)."""


@kafka_group.command("start")
@_name
@_home
@click.option("--brokers", default=1, show_default=True,
              help="Nodes (combined broker + controller): 1, or 3+ for a cluster with RF 3 and min ISR 2.")
@click.option("--port", default=0, show_default=True,
              help="Client port on 127.0.0.1 (0 = a free one); a cluster uses PORT, PORT+1, ...")
@click.option("--controller-port", default=0, show_default=True,
              help="KRaft controller port (0 = free); a cluster uses CONTROLLER_PORT, +1, ...")
@click.option("--heap", default=None, help="JVM heap size per node.  [default: 768m, 512m per node of a cluster]")
@click.option("--timeout", default=None, type=float,
              help="Seconds to wait for the broker(s) to answer.  [default: 90, 180 for a cluster]")
@click.option("--json", "as_json", is_flag=True, help="Print the instance as JSON.")
def start(name: str, home: Path | None, brokers: int, port: int, controller_port: int, heap: str | None,
          timeout: float | None, as_json: bool) -> None:
    """Start a broker or a cluster (fetching Kafka once) and print its bootstrap address(es)."""
    if brokers != 1:
        _start_cluster(name, home, brokers, port, controller_port, heap or "512m", timeout or 180.0, as_json)
        return
    if _cluster(name, home) is not None:
        raise BrokerLaunchError(f"{name!r} is a cluster; start it with --brokers, or pick another --name")
    timeout = timeout or 90.0
    broker = LocalKafka(name, home=home, port=port, controller_port=controller_port, heap=heap or "768m")
    with _err.status(f"starting Kafka {kafka_version()}...") as status:
        inst = broker.start(timeout=timeout, progress=lambda msg: status.update(msg))
    if as_json:
        click.echo(json.dumps({"name": inst.name, "bootstrap": inst.bootstrap, "pid": inst.pid,
                               "data_dir": inst.data_dir, "log": inst.log_path}))
    else:
        _err.print(f"Kafka {inst.kafka_version} '{inst.name}' is up (pid {inst.pid}), log {inst.log_path}")
        _err.print(f"export MUSEFLOW_BOOTSTRAP_SERVERS={inst.bootstrap}")
        click.echo(inst.bootstrap)


def _start_cluster(name: str, home: Path | None, brokers: int, port: int, controller_port: int, heap: str,
                   timeout: float, as_json: bool) -> None:
    if LocalKafka(name, home=home).instance() is not None:
        raise BrokerLaunchError(f"{name!r} is a single broker; stop it first, or pick another --name")
    cluster = LocalCluster(name, home=home, size=brokers, heap=heap, port=port, controller_port=controller_port)
    recorded = cluster.layout()
    if recorded is not None and len(recorded["ports"]) != brokers:
        raise BrokerLaunchError(f"cluster {name!r} was created with {len(recorded['ports'])} nodes, not {brokers}; "
                                f"`museflow kafka stop --name {name} --purge` to start over")
    with _err.status(f"starting a {brokers}-node Kafka {kafka_version()} cluster...") as status:
        inst = cluster.start(timeout=timeout, progress=lambda msg: status.update(msg))
    if as_json:
        click.echo(json.dumps({"name": inst.name, "bootstrap": inst.bootstrap, "cluster_id": inst.cluster_id,
                               "nodes": [{"node_id": i + 1, "bootstrap": n.bootstrap, "pid": n.pid,
                                          "data_dir": n.data_dir, "log": n.log_path}
                                         for i, n in enumerate(inst.nodes)]}))
        return
    for node in inst.nodes:
        _err.print(f"node {node.name} at {node.bootstrap} (pid {node.pid}), log {node.log_path}")
    _err.print(f"Kafka cluster '{inst.name}' is up: {len(inst.nodes)} nodes, active controller node "
               f"{cluster.active_controller()}; replication factor 3, min.insync.replicas=2")
    _err.print(f"export MUSEFLOW_BOOTSTRAP_SERVERS={inst.bootstrap} MUSEFLOW_REPLICATION_FACTOR=3")
    click.echo(inst.bootstrap)


@kafka_group.command("stop")
@_name
@_home
@click.option("--purge", is_flag=True, help="Also delete the instance's data directory.")
def stop(name: str, home: Path | None, purge: bool) -> None:
    """Stop a broker or every node of a cluster; also cleans up after one that crashed."""
    cluster = _cluster(name, home)
    if cluster is not None:
        click.echo(cluster.stop())
        if purge:
            cluster.destroy()
            click.echo(f"deleted {cluster.home}")
        return
    broker = LocalKafka(name, home=home)
    click.echo(broker.stop())
    if purge:
        broker.destroy()
        click.echo(f"deleted {broker.home}")


@kafka_group.command("status")
@_name
@_home
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(name: str, home: Path | None, as_json: bool) -> None:
    """Show whether a broker (every node of a cluster) runs and answers; exit 1 if not."""
    cluster = _cluster(name, home)
    if cluster is not None:
        _cluster_status(cluster, as_json)
        return
    info = LocalKafka(name, home=home).status()
    if as_json:
        click.echo(json.dumps(info))
    elif info["state"] == "stopped":
        click.echo(f"instance {name!r}: stopped")
    else:
        click.echo(f"instance {name!r}: {info['state']} at {info['bootstrap']} (pid {info['pid']}, "
                   f"Kafka {info['kafka_version']}, data {info['data_dir']})")
    if info["state"] != "running":
        raise SystemExit(1)


def _cluster_status(cluster: LocalCluster, as_json: bool) -> None:
    info = cluster.status()
    if as_json:
        click.echo(json.dumps(info))
    else:
        click.echo(f"cluster {cluster.name!r}: {info['state']} at {info['bootstrap']} "
                   f"({info['brokers']} nodes, active controller node {info['controller']})")
        for node in info["nodes"]:
            where = f" at {node['bootstrap']} (pid {node['pid']})" if node["state"] != "stopped" else ""
            click.echo(f"  node {node['node_id']}: {node['state']}{where}")
    if info["state"] != "running":
        raise SystemExit(1)


@kafka_group.command("fetch")
def fetch() -> None:
    """Fetch and verify the Kafka distribution into the cache without starting it."""
    with _err.status("locating Kafka...") as status:
        dist = locate_distribution(progress=lambda msg: status.update(msg))
    click.echo(f"Kafka {dist.version} ({dist.source}): {dist.libs_dir}")
