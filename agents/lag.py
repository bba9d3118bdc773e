"""The lag role: a Faust timer that reads true consumer lag from the broker into the worker's metrics.

Admin requests block, so each refresh runs in the default executor; scrapes in between serve
the last reading (:class:`museflow.kafka.lag.LagCollector`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import faust

from museflow.config import Settings
from museflow.kafka.lag import LagCollector
from museflow.observe.metrics import PipelineMetrics

__all__ = ["DEFAULT_INTERVAL_SECONDS", "register"]

DEFAULT_INTERVAL_SECONDS = 5.0


def register(app: faust.App, settings: Settings, metrics: PipelineMetrics, *,
             groups: Sequence[str] | None = None,
             interval: float = DEFAULT_INTERVAL_SECONDS) -> LagCollector:
    """Export ``museflow_consumer_lag{group,topic,partition}`` for ``groups``.

    By default: every consumer group of this deployment, i.e. the app id and the per-role groups
    ``<app id>-<roles>`` that split workers use, discovered on each refresh.
    """
    collector = LagCollector(settings, tuple(groups) if groups else None, registry=metrics.registry,
                             group_prefix=None if groups else settings.app_id)

    @app.timer(interval, name=f"{settings.app_id}.lag")  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def refresh_lag() -> None:
        await asyncio.get_running_loop().run_in_executor(None, collector.refresh)

    return collector
