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


class DeadlineExceeded(Unavailable):
    """The caller's deadline passed before the answer was ready; retry with a longer one."""

    code = "deadline_exceeded"


class ResourceExhausted(Unavailable):
    """A rate limit or a concurrency bound is reached; ``retry_after_s`` says when to retry."""

    code = "resource_exhausted"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AccessDenied(PedsearchError):
    """A call was refused for its credentials (see the two subclasses)."""

    code = "access_denied"


class Unauthenticated(AccessDenied):
    """A bearer token is required and is missing or unknown."""

    code = "unauthenticated"


class PermissionDenied(AccessDenied):
    """The token is known but may not call this method."""

    code = "permission_denied"
