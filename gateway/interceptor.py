"""The one server interceptor every RPC passes: auth, rate limit, error mapping, metrics.

Order per request: bearer token (UNAUTHENTICATED / PERMISSION_DENIED), then the client's rate
limit (RESOURCE_EXHAUSTED with a ``retry-after-ms`` trailer), then the handler. Whatever the
handler raises is mapped by :func:`gateway.status.code_for`: pedsearch errors to their codes with
their message, anything else to INTERNAL with the traceback logged -- an escaped exception would
otherwise reach the client as UNKNOWN. Health and reflection pass untouched.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import grpc

from gateway.auth import TokenAuth, bearer_token, is_open, method_name
from gateway.metrics import observe
from gateway.ratelimit import RateLimiter, client_key
from gateway.status import ResourceExhausted, code_for
from pedsearch.errors import PedsearchError

log = logging.getLogger("pedsearch.gateway")


class GatewayInterceptor(grpc.ServerInterceptor):
    """Wraps the Search service's handlers.

    Args:
        auth: the token check (disabled when it has no tokens).
        limiter: the per-client rate limit, or ``None`` for none.
    """

    def __init__(self, *, auth: TokenAuth, limiter: RateLimiter | None) -> None:
        self.auth = auth
        self.limiter = limiter

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        full = handler_call_details.method
        if handler is None or is_open(full):
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)
        name = method_name(full)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, full, name, token),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, full, name, token),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler  # the Search service has no client-streaming methods

    def _admit(self, full: str, token: str | None, context: grpc.ServicerContext) -> None:
        self.auth.check(full, token)
        if self.limiter is not None and self.limiter.enabled:
            self.limiter.check(client_key(token, context.peer()))

    def _unary(self, behavior: Callable, full: str, name: str, token: str | None):
        def handle(request: Any, context: grpc.ServicerContext):
            t0 = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                self._admit(full, token, context)
                return behavior(request, context)
            except Exception as exc:  # noqa: BLE001 -- every error becomes a status, never UNKNOWN
                if _already_aborted(context):
                    raise
                code = code_for(exc)
                _abort(context, name, code, exc)
            finally:
                observe(name, code.name, time.perf_counter() - t0)

        return handle

    def _stream(self, behavior: Callable, full: str, name: str, token: str | None):
        def handle(request: Any, context: grpc.ServicerContext):
            t0 = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                self._admit(full, token, context)
                yield from behavior(request, context)
            except Exception as exc:  # noqa: BLE001
                if _already_aborted(context):
                    raise
                code = code_for(exc)
                _abort(context, name, code, exc)
            finally:
                if not context.is_active() and code == grpc.StatusCode.OK:
                    code = grpc.StatusCode.CANCELLED
                observe(name, code.name, time.perf_counter() - t0)

        return handle


def _already_aborted(context: grpc.ServicerContext) -> bool:
    """The handler ended the RPC itself with ``context.abort`` (its exception carries no news)."""
    code = context.code()
    return code is not None and code != grpc.StatusCode.OK


def _abort(context: grpc.ServicerContext, method: str, code: grpc.StatusCode,
           exc: Exception) -> None:
    """End the RPC with ``code`` (raises, as ``context.abort`` does)."""
    if isinstance(exc, PedsearchError) and code != grpc.StatusCode.INTERNAL:
        message = exc.message
        if isinstance(exc, ResourceExhausted) and exc.retry_after_s is not None:
            context.set_trailing_metadata(
                (("retry-after-ms", str(int(exc.retry_after_s * 1000))),))
    else:
        log.error("%s failed unexpectedly", method, exc_info=exc)
        message = f"internal error in {method} ({type(exc).__name__}); see the gateway's log"
    context.abort(code, message)
