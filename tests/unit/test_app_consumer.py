"""The Faust consumer museflow runs keeps a revoked partition's acked offsets until they are committed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from faust.types import TP

from museflow.agents.app import RevokeCommittingConsumer, create_app
from museflow.config import Settings


def test_revoke_commits_acked_offsets_before_forgetting_them(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[int], bool]:
        app = create_app(Settings(data_dir=str(tmp_path), metrics_enabled=False))
        consumer = app.consumer
        assert isinstance(consumer, RevokeCommittingConsumer)
        tp = TP("museflow.events", 3)
        consumer._acked[tp].extend([41, 42, 43])   # processed since the last periodic commit
        seen: list[int] = []

        async def app_revoke_handler(revoked: set[TP]) -> None:
            # Faust's app handler: waits for in-flight batches, then commits what is acked.
            seen.extend(consumer._acked.get(tp, []))

        consumer._on_partitions_revoked = app_revoke_handler
        await consumer.on_partitions_revoked({tp})
        return seen, tp in consumer._acked

    seen, still_tracked = asyncio.run(scenario())
    assert seen == [41, 42, 43], "the revoke handler must still see the acked offsets to commit them"
    assert not still_tracked, "a revoked partition's bookkeeping is dropped once committed"
