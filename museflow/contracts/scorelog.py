"""The score log's batched records: built by the scorer, expanded into one row per score by readers.

A :data:`ScoreLogBatch <schemas/avro/ScoreLogBatch.avsc>` holds the scores one model version
computed for one (tenant, intent, role, route version) in one batch, column by column. Readers
that want scores one at a time (label join, reports, reference freezing, ``museflow tail``) use
:func:`rows`; the refit agent reads the columns directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["ROW_FIELDS", "rows"]

ROW_FIELDS = ("event_id", "tenant", "intent", "model", "model_version", "role", "served", "raw_score",
              "corrected_score", "score", "map_version", "route_version", "reference", "event_time",
              "scored_at", "features")
"""The fields of one expanded row: one score of one event."""


def rows(batches: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """One dict per score (fields :data:`ROW_FIELDS`), in batch order."""
    for batch in batches:
        features = batch.get("features") or {}
        shared = {k: batch[k] for k in ("tenant", "intent", "model", "model_version", "role", "served",
                                        "map_version", "route_version", "reference", "scored_at")}
        columns = zip(batch["event_ids"], batch["event_times"], batch["raw_scores"], batch["corrected_scores"],
                      batch["scores"], strict=True)
        for i, (event_id, event_time, raw, corrected, score) in enumerate(columns):
            yield {**shared, "event_id": event_id, "event_time": event_time, "raw_score": raw,
                   "corrected_score": corrected, "score": score,
                   "features": {name: values[i] for name, values in features.items()}}
