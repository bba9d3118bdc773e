"""Options shared by commands that talk to Kafka; they override MUSEFLOW_* settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from museflow.config import Settings

__all__ = ["kafka_options", "settings_from"]

F = TypeVar("F", bound=Callable[..., Any])


def kafka_options(func: F) -> F:
    """--bootstrap-servers and --topic-prefix, which most commands need."""
    func = click.option("--topic-prefix", default=None,
                        help="Prefix of every museflow topic [env MUSEFLOW_TOPIC_PREFIX].")(func)
    func = click.option("-b", "--bootstrap-servers", default=None,
                        help="Kafka bootstrap address [env MUSEFLOW_BOOTSTRAP_SERVERS].")(func)
    return func


def settings_from(bootstrap_servers: str | None = None, topic_prefix: str | None = None, **more: Any) -> Settings:
    return Settings.from_env(bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix, **more)
