"""Ports of the embedded servers: probing, picking free ones, and Milvus's derived port block.

Milvus standalone listens on a dozen ports (proxy, embedded etcd client and peer, one per
coordinator and node, HTTP health/metrics). They are all derived from the one configured port,
so a second server (a test beside a user's running stack) needs a single different number and
collides nowhere: ``port + offset`` for each role in :data:`MILVUS_PORT_OFFSETS`.
"""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import Collection

from pedsearch.errors import ConfigError

#: Offset from the configured Milvus port of every port the server listens on; the keys are the
#: ``milvus-server`` flag names (``--proxy-port``, ...), plus ``etcd_peer`` for the embedded etcd
#: and ``metrics`` for the HTTP health/metrics port (9091 by default). ``index_coord`` is not
#: listened on in 2.3 (index coordination lives in the data coordinator) but keeps its place.
MILVUS_PORT_OFFSETS: dict[str, int] = {
    "proxy": 0,
    "proxy_internal": 1,
    "etcd": 2,
    "etcd_peer": 3,
    "root_coord": 4,
    "query_coord": 5,
    "query_node": 6,
    "index_coord": 7,
    "index_node": 8,
    "data_coord": 9,
    "data_node": 10,
    "metrics": 11,
}
MILVUS_PORT_SPAN = max(MILVUS_PORT_OFFSETS.values()) + 1
#: Free port blocks are picked at random between these bounds, below the kernel's usual
#: ephemeral range (32768-60999) so outgoing connections do not take them meanwhile.
BLOCK_LOW, BLOCK_HIGH = 20000, 32000


def milvus_ports(port: int) -> dict[str, int]:
    """Every port a Milvus standalone server with proxy port ``port`` listens on.

    Args:
        port: the proxy (client) port, 1..65535-11.

    Returns:
        ``{role: port}`` for each role of :data:`MILVUS_PORT_OFFSETS`, proxy first.

    Raises:
        ConfigError: ``port`` leaves no room for the derived ports.
    """
    top = 65535 - (MILVUS_PORT_SPAN - 1)
    if not 1 <= port <= top:
        raise ConfigError(
            f"stack.milvus_port={port}: Milvus also listens on the {MILVUS_PORT_SPAN - 1} ports "
            f"after it (port+1 .. port+{MILVUS_PORT_SPAN - 1}), so it must lie in 1..{top} "
            "(or be 0 to pick a free block)"
        )
    return {role: port + offset for role, offset in MILVUS_PORT_OFFSETS.items()}


def _bind_ok(host: str, port: int, *, reuse_addr: bool) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if reuse_addr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_in_use(host: str, port: int) -> bool:
    """Whether a socket (a listener, or any bound socket) holds ``host:port``: no server can bind.

    Connections lingering in TIME_WAIT do not count: the servers bind with SO_REUSEADDR.
    """
    return not _bind_ok(host, port, reuse_addr=True)


def free_port(host: str, avoid: Collection[int] = ()) -> int:
    """A port the kernel reports free on ``host`` right now, not one of ``avoid``.

    ``avoid`` holds the ports already handed to other servers that have not bound them yet:
    the kernel may give a port it just released to the next asker.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port
    raise ConfigError(f"the kernel kept offering ports already given out on {host}")


def free_port_block(
    host: str, size: int, *, rng: random.Random | None = None, tries: int = 500,
    avoid: Collection[int] = (),
) -> int:
    """The first port of ``size`` consecutive ports that are all free on ``host`` (and none of
    them in ``avoid``, see :func:`free_port`).

    Raises:
        ConfigError: no free block found after ``tries`` random picks.
    """
    rng = rng or random.Random()
    for _ in range(tries):
        base = rng.randrange(BLOCK_LOW, BLOCK_HIGH - size)
        block = range(base, base + size)
        if (not any(p in avoid for p in block)
                and all(_bind_ok(host, p, reuse_addr=False) for p in block)):
            return base
    raise ConfigError(
        f"found no {size} consecutive free ports on {host} between {BLOCK_LOW} and {BLOCK_HIGH}; "
        "set stack.milvus_port to a free block explicitly"
    )


def port_taken_message(
    *, service: str, port: int, host: str, config_key: str, flag: str, role: str = ""
) -> str:
    """What a user reads when ``port`` is taken: what holds it and the three ways to move it."""
    env = "PEDSEARCH_" + config_key.upper().replace(".", "__")
    what = f" (its {role} port, derived from {config_key})" if role else ""
    return (
        f"{service} cannot start: port {port}{what} on {host} is already in use. "
        f"Stop whatever listens there (`ss -ltnp 'sport = :{port}'` shows it, "
        f"`pedsearch stack status` shows a running stack), or move {service} to other ports: "
        f"`{config_key}: N` in the config file, {env}=N in the environment, or "
        f"`pedsearch stack up {flag} N` (0 picks free ports)."
    )


def connect_host(host: str) -> str:
    """The address clients dial for a server bound to ``host`` (a wildcard becomes loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def can_connect(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((connect_host(host), port), timeout=timeout):
            return True
    except OSError:
        return False
