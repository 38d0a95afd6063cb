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
    DeadlineExceeded,
    InvalidInput,
    NotFound,
    NotReady,
    PedsearchError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

#: trailing metadata on every error status the gateway answers itself: a client tells the
#: gateway's UNAVAILABLE ("Milvus is down") from gRPC's own (the gateway cannot be reached)
ORIGIN_KEY, ORIGIN_GATEWAY = "pedsearch-origin", "gateway"
#: initial metadata of a Watch stream: the seconds it will run (its max_duration_s, or the
#: gateway's default, capped) and the most this gateway allows, so a client can say why the
#: stream ended and that a longer duration it asked for was cut
WATCH_DURATION_KEY, WATCH_MAX_KEY = "pedsearch-watch-duration-s", "pedsearch-watch-max-s"
#: the largest query image (SearchImage) the gateway takes; the client checks it before sending
MAX_IMAGE_BYTES = 8 * 1024 * 1024

#: first match wins, so a subclass comes before its base (DeadlineExceeded before Unavailable)
_CODES: tuple[tuple[type[PedsearchError], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (NotReady, grpc.StatusCode.FAILED_PRECONDITION),
    (BundleError, grpc.StatusCode.FAILED_PRECONDITION),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
)

__all__ = ["MAX_IMAGE_BYTES", "ORIGIN_GATEWAY", "ORIGIN_KEY", "WATCH_DURATION_KEY",
           "WATCH_MAX_KEY", "DeadlineExceeded", "PermissionDenied", "ResourceExhausted",
           "Unauthenticated", "code_for"]


def code_for(exc: BaseException) -> grpc.StatusCode:
    """The status code of an exception (``INTERNAL`` for anything unexpected)."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL
