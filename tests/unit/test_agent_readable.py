"""The side agents' one bad-input policy: a record of a Faust batch that does not decode is rejected."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from museflow.agents.context import readable
from museflow.errors import SerializationError


def test_undecodable_records_are_rejected_and_the_rest_kept_in_order() -> None:
    batch = [SimpleNamespace(message=SimpleNamespace(value=v)) for v in (b"a", b"bad", b"b", None)]
    rejected: list[tuple[Any, Exception]] = []

    def decode_many(values: list[bytes | None]) -> list[Any]:
        return [SerializationError(f"cannot decode {v!r}") if v in (b"bad", None) else {"v": v} for v in values]

    async def reject(event: Any, error: Exception) -> bool:
        rejected.append((event, error))
        return True

    good = asyncio.run(readable(batch, decode_many, reject))
    assert good == [{"v": b"a"}, {"v": b"b"}]
    assert [e for e, _ in rejected] == [batch[1], batch[3]]
    assert all(isinstance(err, SerializationError) for _, err in rejected)
