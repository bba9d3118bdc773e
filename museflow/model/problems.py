"""Located problems of a model spec: collected so one SpecError reports them all, and the checks both
the spec parser and the transforms use (keys, event sources, numbers)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from museflow.errors import SpecError

__all__ = ["ATTRIBUTES_PREFIX", "Problems", "check_keys", "check_source", "is_number", "suggest"]

ATTRIBUTES_PREFIX = "attributes."
"""A feature source ``attributes.<key>`` reads the event's attributes map."""


class Problems:
    """Collects located problems so one SpecError can report all of them."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        count = len(self.items)
        lines = [f"invalid model spec {self.origin} ({count} problem{'s' if count > 1 else ''}):"]
        lines += [f"  {path}: {message}" for path, message in self.items]
        raise SpecError("\n".join(lines))


def suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_keys(p: Problems, path: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in data:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            p.add(where, f"unknown key{suggest(str(key), allowed)}; allowed keys: {', '.join(allowed)}")


def check_source(p: Problems, path: str, source: str, ftype: str | None, sources: Mapping[str, str]) -> None:
    if source.startswith(ATTRIBUTES_PREFIX):
        if not source[len(ATTRIBUTES_PREFIX):]:
            p.add(path, "attributes.<key> needs a key, e.g. attributes.velocity_1h")
        return
    kind = sources.get(source)
    if kind is None or kind == "map":
        fields_ = [k for k, v in sources.items() if v != "map"]
        p.add(path, f"{source!r} is not a field of TransactionEvent{suggest(source, fields_)}; use one of "
              f"{', '.join(fields_)} or attributes.<key>")
        return
    if kind == "string" and ftype in ("float", "int", "bool"):
        p.add(path, f"{source!r} is a string field; declare the feature as type category")
    if kind == "number" and ftype in ("category", "bool"):
        p.add(path, f"{source!r} is a numeric field; declare the feature as type float or int")
