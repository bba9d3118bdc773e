"""Intent routing: ``(tenant, intent) -> champion [+ shadow / canary candidates]``.

Routes are versioned records on the compacted routes topic; a :class:`RouteTable` holds every
version and serves the highest. Which candidate serves an event is decided by a keyed hash of the
event id, so a replay makes exactly the same choices.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from museflow.contracts.validation import NAME_PATTERN
from museflow.errors import RouteError

__all__ = [
    "Candidate",
    "Decision",
    "ModelRef",
    "Route",
    "RouteTable",
    "load_routes_yaml",
    "route_key",
    "validate_name",
]

_VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
_MODES = ("shadow", "canary")
_TWO_64 = float(2**64)


def validate_name(kind: str, value: str) -> str:
    """Tenant, intent and model names become topic names: lowercase, digits, '-' only."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise RouteError(
            f"{kind} {value!r} is not a valid name: use 1-63 lowercase letters, digits and '-', "
            "starting with a letter or digit (it becomes part of a topic name)"
        )
    return value


def route_key(tenant: str, intent: str) -> str:
    """The compacted-topic key of a route."""
    return f"{tenant}/{intent}"


@dataclass(frozen=True, order=True)
class ModelRef:
    """A model version: ``name@version``."""

    name: str
    version: str

    def __post_init__(self) -> None:
        validate_name("model", self.name)
        if not isinstance(self.version, str) or not _VERSION_PATTERN.fullmatch(self.version):
            raise RouteError(f"model version {self.version!r} of {self.name} is not a valid version string")

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, sep, version = str(text).partition("@")
        if not sep:
            raise RouteError(f"model reference {text!r} must look like NAME@VERSION, e.g. fraud-cnp@2")
        return cls(name, version)


@dataclass(frozen=True)
class Candidate:
    """A challenger on a route: ``shadow`` scores go to the score log only; ``canary`` serves."""

    model: ModelRef
    mode: str
    fraction: float

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise RouteError(f"candidate {self.model} has mode {self.mode!r}; use one of {_MODES}")
        if not 0.0 < self.fraction <= 1.0:
            raise RouteError(f"candidate {self.model} has fraction {self.fraction}; it must be in (0, 1]")


@dataclass(frozen=True)
class Decision:
    """What one event gets on a route: who serves it and who scores it in the shadows."""

    route: Route
    serve: ModelRef
    role: str
    shadows: tuple[ModelRef, ...]


@dataclass(frozen=True)
class Route:
    """One tenant's routing for one intent, at one version."""

    tenant: str
    intent: str
    champion: ModelRef
    version: int = 0
    candidates: tuple[Candidate, ...] = ()
    reference: str = "uniform@1"
    watch_thresholds: tuple[float, ...] = ()
    updated_at: int = 0
    updated_by: str = "museflow"
    comment: str | None = None
    deleted: bool = False
    auto_rollback: bool = False
    """Roll back to the previous route version on its own when the alert-rate watch finds a breach."""
    _salt: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate_name("tenant", self.tenant)
        validate_name("intent", self.intent)
        seen = {self.champion}
        canary_total = 0.0
        for candidate in self.candidates:
            if candidate.model in seen:
                raise RouteError(f"route {self.key}: {candidate.model} appears twice (champion or candidate)")
            seen.add(candidate.model)
            if candidate.mode == "canary":
                canary_total += candidate.fraction
        if canary_total > 1.0 + 1e-9:
            raise RouteError(f"route {self.key}: canary fractions add up to {canary_total:.3f} > 1")
        for tau in self.watch_thresholds:
            if not 0.0 <= tau <= 1.0:
                raise RouteError(f"route {self.key}: watch threshold {tau} is outside [0, 1]")
        ref_name, sep, ref_version = self.reference.partition("@")
        if not (sep and ref_name and ref_version.isdigit()):
            raise RouteError(f"route {self.key}: reference {self.reference!r} must look like NAME@VERSION "
                             "with an integer version, e.g. uniform@1")
        object.__setattr__(self, "_salt", hashlib.blake2b(self.key.encode(), digest_size=16).digest())

    @property
    def key(self) -> str:
        return route_key(self.tenant, self.intent)

    def models(self) -> tuple[ModelRef, ...]:
        """Every model version the route uses, champion first."""
        return (self.champion, *(c.model for c in self.candidates))

    def decide(self, event_id: str) -> Decision:
        """Deterministic per event id: the same id always gets the same serving model."""
        shadows = tuple(c.model for c in self.candidates if c.mode == "shadow" and self._draw(event_id, c) < c.fraction)
        u = self._draw(event_id, None)
        edge = 0.0
        for candidate in self.candidates:
            if candidate.mode == "canary":
                edge += candidate.fraction
                if u < edge:
                    return Decision(self, candidate.model, "canary", shadows)
        return Decision(self, self.champion, "champion", shadows)

    def _draw(self, event_id: str, candidate: Candidate | None) -> float:
        salt = self._salt if candidate is None else self._salt + str(candidate.model).encode()
        digest = hashlib.blake2b(event_id.encode(), digest_size=8, key=salt[:64]).digest()
        return int.from_bytes(digest, "big") / _TWO_64

    def promoted(self, candidate: ModelRef, *, by: str = "museflow", now_ms: int | None = None) -> Route:
        """The next route version with ``candidate`` as champion and the old champion gone."""
        if candidate not in {c.model for c in self.candidates}:
            raise RouteError(f"{candidate} is not a candidate on route {self.key}; candidates: "
                             f"{[str(c.model) for c in self.candidates] or 'none'}")
        return replace(
            self, champion=candidate, version=self.version + 1,
            candidates=tuple(c for c in self.candidates if c.model != candidate),
            updated_at=now_ms if now_ms is not None else int(time.time() * 1000), updated_by=by,
            comment=f"promoted {candidate} over {self.champion}",
        )

    def to_record(self) -> dict[str, Any]:
        ref_name, _, ref_version = self.reference.partition("@")
        return {
            "tenant": self.tenant, "intent": self.intent, "version": self.version,
            "champion": {"model": self.champion.name, "version": self.champion.version},
            "candidates": [
                {"model": c.model.name, "version": c.model.version, "mode": c.mode, "fraction": c.fraction}
                for c in self.candidates
            ],
            "reference": {"name": ref_name, "version": int(ref_version)},
            "watch_thresholds": list(self.watch_thresholds),
            "updated_at": self.updated_at, "updated_by": self.updated_by,
            "comment": self.comment, "deleted": self.deleted, "auto_rollback": self.auto_rollback,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Route:
        try:
            reference = record.get("reference") or {"name": "uniform", "version": "1"}
            return cls(
                tenant=record["tenant"], intent=record["intent"], version=int(record.get("version", 0)),
                champion=ModelRef(record["champion"]["model"], str(record["champion"]["version"])),
                candidates=tuple(
                    Candidate(ModelRef(c["model"], str(c["version"])), c["mode"], float(c["fraction"]))
                    for c in record.get("candidates") or ()
                ),
                reference=f"{reference['name']}@{reference['version']}",
                watch_thresholds=tuple(float(t) for t in record.get("watch_thresholds") or ()),
                updated_at=int(record.get("updated_at") or 0),
                updated_by=str(record.get("updated_by") or "museflow"),
                comment=record.get("comment"), deleted=bool(record.get("deleted", False)),
                auto_rollback=bool(record.get("auto_rollback", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, RouteError):
                raise
            raise RouteError(f"malformed route record ({type(exc).__name__}: {exc}): {dict(record)!r}") from exc


class RouteTable:
    """The routes in force and every version still on the routes topic.

    :meth:`put` takes a version's winning record (:mod:`museflow.control.state` picks it); the route in
    force is the highest version (none when that version deletes the route). :meth:`apply` is the
    incremental form for a single writer: it takes only a version above the latest.
    """

    def __init__(self, routes: Iterable[Route] = ()) -> None:
        self._routes: dict[tuple[str, str], Route] = {}
        self._versions: dict[tuple[str, str], dict[int, Route]] = {}
        for route in routes:
            self.apply(route)

    def apply(self, route: Route) -> bool:
        """Take ``route`` if it is newer than every version held; return whether it changed anything."""
        key = (route.tenant, route.intent)
        if key in self._versions and route.version <= self.latest_version(*key):
            return False
        self.put(key, route.version, route)
        return True

    def put(self, key: tuple[str, str], version: int, route: Route | None) -> Route | None:
        """Set (or with None drop) one version of a route; returns the route in force afterwards."""
        versions = self._versions.setdefault(key, {})
        if route is None:
            versions.pop(version, None)
        else:
            versions[version] = route
        if not versions:
            del self._versions[key]
            self._routes.pop(key, None)
            return None
        latest = versions[max(versions)]
        if latest.deleted:
            self._routes.pop(key, None)
            return None
        self._routes[key] = latest
        return latest

    def get(self, tenant: str, intent: str) -> Route | None:
        return self._routes.get((tenant, intent))

    def at(self, tenant: str, intent: str, version: int) -> Route | None:
        """The route as it was at ``version`` (what the router stamped), or None if that version is unknown."""
        return self._versions.get((tenant, intent), {}).get(version)

    def history(self, tenant: str, intent: str) -> list[Route]:
        versions = self._versions.get((tenant, intent), {})
        return [versions[v] for v in sorted(versions)]

    def latest_version(self, tenant: str, intent: str) -> int:
        return max(self._versions.get((tenant, intent), {0: None}), default=0)

    def has_tenant(self, tenant: str) -> bool:
        return any(t == tenant for t, _ in self._routes)

    def __iter__(self) -> Iterator[Route]:
        return iter(sorted(self._routes.values(), key=lambda r: (r.tenant, r.intent)))

    def __len__(self) -> int:
        return len(self._routes)

    def tenants(self) -> set[str]:
        return {t for t, _ in self._routes}

    def intents(self) -> set[str]:
        return {i for _, i in self._routes}

    def models(self) -> set[ModelRef]:
        return {m for route in self._routes.values() for m in route.models()}


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise RouteError(f"{name} must be true or false, got {value!r}")
    return value


def load_routes_yaml(path: str | Path | None = None, *, text: str | None = None) -> list[Route]:
    """Routes from YAML: a list under ``routes:`` (or a single mapping), with clear errors.

    Each item: ``tenant``, ``intent``, ``champion: NAME@VERSION``, optional ``candidates``
    (``- {model: NAME@VERSION, mode: shadow|canary, fraction: 0.1}``), ``reference``
    (``NAME@VERSION``, default ``uniform@1``), ``watch_thresholds``, ``auto_rollback``, ``comment``.
    """
    where = str(path) if path is not None else "<routes>"
    try:
        doc = yaml.safe_load(text if text is not None else Path(str(path)).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RouteError(f"{where}: cannot read routes YAML: {exc}") from exc
    items: Sequence[Any]
    if isinstance(doc, dict) and "routes" in doc:
        items = doc["routes"] or []
    elif isinstance(doc, dict):
        items = [doc]
    elif isinstance(doc, list):
        items = doc
    else:
        raise RouteError(f"{where}: expected a mapping with 'routes:' or a list of routes")
    routes = []
    allowed = {"tenant", "intent", "champion", "candidates", "reference", "watch_thresholds", "auto_rollback",
               "comment"}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RouteError(f"{where}: routes[{i}] must be a mapping")
        unknown = set(item) - allowed
        if unknown:
            raise RouteError(f"{where}: routes[{i}] has unknown fields {sorted(unknown)}; allowed: {sorted(allowed)}")
        try:
            candidates = []
            for j, c in enumerate(item.get("candidates") or ()):
                if not isinstance(c, dict) or "model" not in c:
                    raise RouteError(f"routes[{i}].candidates[{j}] needs model: NAME@VERSION")
                candidates.append(Candidate(ModelRef.parse(c["model"]), str(c.get("mode", "shadow")),
                                            float(c.get("fraction", 1.0))))
            routes.append(Route(
                tenant=str(item["tenant"]), intent=str(item["intent"]),
                champion=ModelRef.parse(item["champion"]), candidates=tuple(candidates),
                reference=str(item.get("reference", "uniform@1")),
                watch_thresholds=tuple(float(t) for t in item.get("watch_thresholds") or ()),
                auto_rollback=_flag(item.get("auto_rollback", False), "auto_rollback"),
                comment=item.get("comment"),
            ))
        except KeyError as exc:
            raise RouteError(f"{where}: routes[{i}] is missing required field {exc.args[0]!r}") from exc
        except RouteError as exc:
            raise RouteError(f"{where}: routes[{i}]: {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise RouteError(f"{where}: routes[{i}]: {exc}") from exc
    return routes
