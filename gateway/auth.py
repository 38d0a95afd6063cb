"""Optional bearer-token authorisation of the gateway's RPCs.

``gateway.tokens`` maps a token to the method names it may call (``SearchText``, ``Watch``, ...)
or ``"*"`` for all. An empty map turns authorisation off. The client sends the metadata
``authorization: Bearer <token>``. Health checks and server reflection are never guarded: a
load balancer probing health has no token.
"""

from __future__ import annotations

import hmac
from typing import Mapping, Sequence

from gateway.status import PermissionDenied, Unauthenticated

#: methods outside the Search service that stay open
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` metadata entry, if any."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def method_name(full_method: str) -> str:
    """``/pedsearch.v1.Search/SearchText`` -> ``SearchText``."""
    return full_method.rsplit("/", 1)[-1]


def is_open(full_method: str) -> bool:
    return full_method.startswith(OPEN_SERVICES)


class TokenAuth:
    """Checks a request's bearer token against ``tokens``.

    Args:
        tokens: token -> allowed method names (``"*"`` = every method); empty = no auth.
    """

    def __init__(self, tokens: Mapping[str, Sequence[str]]) -> None:
        self.tokens = {t: frozenset(m) for t, m in tokens.items()}

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)

    def check(self, full_method: str, token: str | None) -> None:
        """Raises:
        Unauthenticated: auth is on and the token is missing or unknown.
        PermissionDenied: the token may not call this method."""
        if not self.enabled or is_open(full_method):
            return
        if token is None:
            raise Unauthenticated("this gateway requires a bearer token: send the metadata "
                                  "'authorization: Bearer <token>'")
        allowed = None
        for known, methods in self.tokens.items():
            # constant-time comparison: a token must not be guessable by timing
            if hmac.compare_digest(known.encode(), token.encode()):
                allowed = methods
        if allowed is None:
            raise Unauthenticated("the bearer token is not known to this gateway")
        method = method_name(full_method)
        if "*" not in allowed and method not in allowed:
            raise PermissionDenied(f"this token may not call {method}; it may call "
                                   f"{', '.join(sorted(allowed)) or 'nothing'}")
