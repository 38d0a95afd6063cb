"""Listen addresses of the gateway, and the address a client on the same machine dials.

Kept apart from :mod:`gateway.server` so the command-line client can use it without loading the
server (and torch).
"""

from __future__ import annotations

from pedsearch.errors import ConfigError

#: hosts that bind every interface; clients on this machine reach them on loopback
WILDCARD_HOSTS = ("0.0.0.0", "[::]", "::")


def listen_address(address: str) -> tuple[str, int]:
    """``host`` and ``port`` of a listen address ``host:port`` (``[v6]:port``; port 0 = any).

    Raises:
        ConfigError: not host:port, or a port outside 0..65535 (grpc would wrap it around).
    """
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"gateway address {address!r} must be host:port with a port in "
                          "0..65535 (0 = a free one), e.g. 127.0.0.1:50051 or 0.0.0.0:50051")
    return host, int(port)


def local_host(bind_host: str) -> str:
    """The host a client on this machine dials for a server bound to ``bind_host``."""
    return "127.0.0.1" if bind_host in WILDCARD_HOSTS else bind_host
