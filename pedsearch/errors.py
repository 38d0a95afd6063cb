"""One error hierarchy for the whole system.

Every error carries a ``code`` (a short stable string) and a message that says what happened
and what to do. The gateway maps these classes onto gRPC status codes; the CLI prints them and
exits non-zero. Library code raises these, never returns error strings and never ``sys.exit``s.
"""

from __future__ import annotations


class PedsearchError(Exception):
    """Root of all pedsearch errors."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(PedsearchError):
    """Configuration is missing, malformed or inconsistent."""

    code = "config"


class InvalidInput(PedsearchError):
    """A request, message, file or argument is malformed or out of range."""

    code = "invalid_input"


class NotFound(PedsearchError):
    """A named thing (detection, camera, bundle, collection) does not exist."""

    code = "not_found"


class NotReady(PedsearchError):
    """A precondition is unmet: no model bundle, no index, no collection loaded yet."""

    code = "not_ready"


class Unavailable(PedsearchError):
    """A backing service (Kafka, Milvus, Redis, Ray) cannot be reached right now; retry later."""

    code = "unavailable"


class StackError(PedsearchError):
    """An embedded server could not be started, checked or stopped."""

    code = "stack"


class BundleError(PedsearchError):
    """A model bundle is missing, corrupt or incompatible with this version of pedsearch."""

    code = "bundle"
