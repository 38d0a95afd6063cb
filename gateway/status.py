"""pedsearch errors -> gRPC status codes, in one place.

Every RPC of the gateway goes through :func:`code_for`; an exception that is not a
:class:`~pedsearch.errors.PedsearchError` is a bug and becomes ``INTERNAL`` with its traceback
logged -- never ``UNKNOWN``, which is what grpc answers for an escaped exception.
"""

from __future__ import annotations

import grpc

from pedsearch.errors import (
    BundleError,
    ConfigError,
    InvalidInput,
    NotFound,
    NotReady,
    PedsearchError,
    Unavailable,
)


class DeadlineExceeded(PedsearchError):
    """The caller's deadline passed before the answer was ready."""

    code = "deadline_exceeded"


class Unauthenticated(PedsearchError):
    """A bearer token is required and is missing or unknown."""

    code = "unauthenticated"


class PermissionDenied(PedsearchError):
    """The token is known but may not call this method."""

    code = "permission_denied"


class ResourceExhausted(PedsearchError):
    """A rate limit or a concurrency bound is reached; ``retry_after_s`` says when to retry."""

    code = "resource_exhausted"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


_CODES: tuple[tuple[type[PedsearchError], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (NotReady, grpc.StatusCode.FAILED_PRECONDITION),
    (BundleError, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
)


def code_for(exc: BaseException) -> grpc.StatusCode:
    """The status code of an exception (``INTERNAL`` for anything unexpected)."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL
