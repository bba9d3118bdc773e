"""The museflow exception hierarchy.

Every error museflow raises derives from :class:`MuseflowError`; each specific error also
derives from the builtin it resembles, so ``except ValueError`` keeps working for callers
that do not know museflow::

    MuseflowError
    ├── ConfigError(ValueError)            bad settings or environment
    ├── SchemaError(ValueError)            an .avsc file that does not parse or evolve safely
    ├── SerializationError(ValueError)     bytes that cannot be encoded or decoded
    ├── ValidationError(ValueError)        a decoded record that breaks a contract
    ├── SpecError(ValueError)              a model spec that fails validation (file, field, why)
    ├── ArtifactError(ValueError)          a model artifact that is missing, altered or unloadable
    ├── RouteError(ValueError)             a route that is invalid or refers to unknown models
    ├── MapError(ValueError)               a quantile map or reference that is invalid
    ├── RefitRefused(MuseflowError)        a refit or promotion held back by a guard
    ├── BrokerError(RuntimeError)          the broker refused or failed a request
    │   └── DependencyUnavailable          a dependency (e.g. the schema registry) is down for now: retry
    └── BrokerLaunchError(RuntimeError)    the local Kafka could not be fetched, started or stopped
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "BrokerError",
    "BrokerLaunchError",
    "ConfigError",
    "ConflictError",
    "DependencyUnavailable",
    "MapError",
    "MuseflowError",
    "RefitRefused",
    "RouteError",
    "SchemaError",
    "SerializationError",
    "SpecError",
    "ValidationError",
]


class MuseflowError(Exception):
    """Root of every error museflow raises."""


class ConfigError(MuseflowError, ValueError):
    """A setting is missing, malformed or inconsistent."""


class SchemaError(MuseflowError, ValueError):
    """An Avro schema does not parse, or a change to it is not backward compatible."""


class SerializationError(MuseflowError, ValueError):
    """Bytes could not be encoded or decoded; ``reason`` is a dead-letter reason code."""

    def __init__(self, message: str, *, reason: str = "undecodable") -> None:
        super().__init__(message)
        self.reason = reason


class ValidationError(MuseflowError, ValueError):
    """A decoded record breaks a contract; ``reason`` is a dead-letter reason code."""

    def __init__(self, message: str, *, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class SpecError(MuseflowError, ValueError):
    """A model spec is invalid; the message names the file, the field and what is wrong."""


class ArtifactError(MuseflowError, ValueError):
    """A model artifact is missing, does not match its sha256, or cannot be loaded."""


class RouteError(MuseflowError, ValueError):
    """A route is malformed or names a model, tenant or reference that does not exist."""


class MapError(MuseflowError, ValueError):
    """A quantile map or reference distribution is malformed (not monotone, too few knots...)."""


class RefitRefused(MuseflowError):
    """A guard held back a map publication or a promotion; the message says which and why."""


class ConflictError(MuseflowError):
    """Another writer changed the control plane between this one's read and its write; nothing was written."""


class BrokerError(MuseflowError, RuntimeError):
    """The broker refused or failed a request (admin, produce or consume)."""


class DependencyUnavailable(BrokerError):
    """A service the pipeline needs answered 5xx/429 or could not be reached; the same call may work later.

    ``dependency`` names it (``"schema-registry"``) and ``where`` says where it is (a masked URL,
    never credentials). The hot loop pauses and retries the batch on it instead of failing.
    """

    def __init__(self, message: str, *, dependency: str, where: str = "") -> None:
        super().__init__(message)
        self.dependency = dependency
        self.where = where


class BrokerLaunchError(MuseflowError, RuntimeError):
    """The local Kafka broker could not be fetched, started, reached or stopped."""
