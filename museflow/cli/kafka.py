"""``museflow kafka``: run a real single-node Apache Kafka (KRaft) locally."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from museflow.kafka.broker import LocalKafka, kafka_version, locate_distribution

__all__ = ["kafka_group"]

_err = Console(stderr=True)

_name = click.option("--name", default="default", show_default=True, help="Instance name (one data dir each).")
_home = click.option(
    "--home", type=click.Path(path_type=Path), default=None,
    help="Instance directory (default: ~/.cache/museflow/instances/NAME).",
)


@click.group("kafka")
def kafka_group() -> None:
    """Start, inspect and stop a local Apache Kafka broker (needs java >= 17)."""


@kafka_group.command("start")
@_name
@_home
@click.option("--port", default=0, show_default=True, help="Client port on 127.0.0.1 (0 = a free one).")
@click.option("--controller-port", default=0, show_default=True, help="KRaft controller port (0 = free).")
@click.option("--heap", default="768m", show_default=True, help="JVM heap size.")
@click.option("--timeout", default=90.0, show_default=True, help="Seconds to wait for the broker to answer.")
@click.option("--json", "as_json", is_flag=True, help="Print the instance as JSON.")
def start(name: str, home: Path | None, port: int, controller_port: int, heap: str, timeout: float,
          as_json: bool) -> None:
    """Start a broker (fetching Kafka once) and print its bootstrap address."""
    broker = LocalKafka(name, home=home, port=port, controller_port=controller_port, heap=heap)
    with _err.status(f"starting Kafka {kafka_version()}...") as status:
        inst = broker.start(timeout=timeout, progress=lambda msg: status.update(msg))
    if as_json:
        click.echo(json.dumps({"name": inst.name, "bootstrap": inst.bootstrap, "pid": inst.pid,
                               "data_dir": inst.data_dir, "log": inst.log_path}))
    else:
        _err.print(f"Kafka {inst.kafka_version} '{inst.name}' is up (pid {inst.pid}), log {inst.log_path}")
        _err.print(f"export MUSEFLOW_BOOTSTRAP_SERVERS={inst.bootstrap}")
        click.echo(inst.bootstrap)


@kafka_group.command("stop")
@_name
@_home
@click.option("--purge", is_flag=True, help="Also delete the instance's data directory.")
def stop(name: str, home: Path | None, purge: bool) -> None:
    """Stop a broker; also cleans up after one that crashed."""
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
    """Show whether a broker runs and answers; exit 1 if it does not."""
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


@kafka_group.command("fetch")
def fetch() -> None:
    """Fetch and verify the Kafka distribution into the cache without starting it."""
    with _err.status("locating Kafka...") as status:
        dist = locate_distribution(progress=lambda msg: status.update(msg))
    click.echo(f"Kafka {dist.version} ({dist.source}): {dist.libs_dir}")
