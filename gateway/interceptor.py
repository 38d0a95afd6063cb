"""The one server interceptor every RPC passes: auth, rate limit, error mapping, metrics.

Order per request: bearer token (UNAUTHENTICATED / PERMISSION_DENIED), then the client's rate
limit (RESOURCE_EXHAUSTED with a ``retry-after-ms`` trailer; the client is its verified token,
or its peer host when the gateway checks no tokens), then the request's bytes (a message
that does not parse is INVALID_ARGUMENT: grpc itself would answer INTERNAL), then the handler.
Whatever the handler raises is mapped by :func:`gateway.status.code_for`: pedsearch errors to
their codes with their message, anything else to INTERNAL with the traceback logged -- an escaped
exception would otherwise reach the client as UNKNOWN. Every error the gateway itself answers
carries the trailer ``pedsearch-origin: gateway``, so a client tells "the gateway says Milvus is
down" (UNAVAILABLE with it) from "the gateway cannot be reached" (UNAVAILABLE from gRPC, without).
Health and reflection pass untouched.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import grpc

from gateway.auth import TokenAuth, bearer_token, is_open, method_name
from gateway.metrics import observe
from gateway.ratelimit import RateLimiter, client_key
from gateway.status import ORIGIN_GATEWAY, ORIGIN_KEY, ResourceExhausted, code_for
from pedsearch.errors import InvalidInput, PedsearchError

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
        parse = _lenient(handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, full, name, token),
                request_deserializer=parse, response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, full, name, token),
                request_deserializer=parse, response_serializer=handler.response_serializer)
        return handler  # the Search service has no client-streaming methods

    def _admit(self, full: str, name: str, token: str | None, request: Any,
               context: grpc.ServicerContext) -> None:
        self.auth.check(full, token)
        if self.limiter is not None and self.limiter.enabled:
            # only a token the gateway checked names a client: with auth off, any made-up token
            # would pass, and a fresh one per request would get a fresh bucket each time
            verified = token if self.auth.enabled else None
            self.limiter.check(client_key(verified, context.peer()))
        if isinstance(request, Undecodable):
            raise InvalidInput(f"the {name} request is not a valid protobuf message "
                               f"({request.why}); build it from this gateway's .proto files")

    def _unary(self, behavior: Callable, full: str, name: str, token: str | None):
        def handle(request: Any, context: grpc.ServicerContext):
            t0 = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                self._admit(full, name, token, request, context)
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
                self._admit(full, name, token, request, context)
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


class Undecodable:
    """A request whose bytes did not parse, handed to the handler in place of the message."""

    def __init__(self, why: str) -> None:
        self.why = why


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer`` that returns :class:`Undecodable` instead of raising: grpc answers a
    deserializer's exception with INTERNAL, a status that blames the server."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 -- protobuf's DecodeError and kin
            return Undecodable(f"{type(exc).__name__}: {exc}")

    return parse


def _already_aborted(context: grpc.ServicerContext) -> bool:
    """The handler ended the RPC itself with ``context.abort`` (its exception carries no news)."""
    code = context.code()
    return code is not None and code != grpc.StatusCode.OK


def _abort(context: grpc.ServicerContext, method: str, code: grpc.StatusCode,
           exc: Exception) -> None:
    """End the RPC with ``code`` (raises, as ``context.abort`` does)."""
    trailer = [(ORIGIN_KEY, ORIGIN_GATEWAY)]
    if isinstance(exc, PedsearchError) and code != grpc.StatusCode.INTERNAL:
        message = exc.message
        if isinstance(exc, ResourceExhausted) and exc.retry_after_s is not None:
            trailer.append(("retry-after-ms", str(int(exc.retry_after_s * 1000))))
    else:
        log.error("%s failed unexpectedly", method, exc_info=exc)
        message = f"internal error in {method} ({type(exc).__name__}); see the gateway's log"
    context.set_trailing_metadata(tuple(trailer))
    context.abort(code, message)
