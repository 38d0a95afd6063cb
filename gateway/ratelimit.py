"""Per-client rate limit kept in Redis: a token bucket shared by every gateway replica.

A client is its bearer token (hashed, never stored in clear) when the gateway checks tokens,
else its peer host: a token nobody verified is whatever the caller chose to send, and a new one
per request would get a new, full bucket each time.
The bucket holds up to ``burst`` requests and refills at ``rate_per_s``; one Lua script reads,
refills, takes and writes the bucket atomically, with Redis' own clock, so several gateways
behind a load balancer share one limit and their clocks need not agree.

When Redis cannot be reached the limiter **fails open**: the request is served and a warning is
logged (at most every 30 s). A query service that goes down with its rate limiter's cache would
turn a Redis outage into a search outage; the limit protects capacity, it is not a security
boundary (that is the bearer token's job).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
import urllib.parse

import redis

from gateway.status import ResourceExhausted

log = logging.getLogger("pedsearch.gateway.ratelimit")

#: seconds between two "Redis down, not limiting" warnings
WARN_EVERY_S = 30.0

# KEYS[1] bucket; ARGV rate per s, burst. Returns {allowed 0|1, retry-after ms}.
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait}
"""


def client_key(token: str | None, peer: str) -> str:
    """``token:<sha256 prefix>`` for a token, else ``peer:<host>`` (port dropped).

    Pass only a token the gateway verified (None while auth is off): an unverified one is a
    key the caller picks, so it could dodge the limit by sending a new one each time.
    """
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:24]
    # grpc peers look like ipv4:127.0.0.1:5555, ipv6:%5B::1%5D:5555 (the brackets
    # percent-encoded: a URI), unix:/path
    peer = urllib.parse.unquote(peer or "")
    m = re.match(r"^(ipv4|ipv6):(\[[^\]]*\]|[^:]+):\d+$", peer)
    return "peer:" + (m.group(2) if m else (peer or "unknown"))


class RateLimiter:
    """Token bucket per client in Redis.

    Args:
        redis_url: the Redis holding the buckets.
        rate_per_s: refill rate; 0 turns the limiter off.
        burst: bucket size (requests a client may make at once).
        prefix: key namespace.
    """

    def __init__(self, redis_url: str, *, rate_per_s: float, burst: int,
                 prefix: str = "pedsearch:ratelimit") -> None:
        self.rate_per_s = float(rate_per_s)
        self.burst = int(burst)
        self.prefix = prefix
        # a hung Redis must not add seconds to every query: short timeouts, then fail open
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=0.25,
                                          socket_connect_timeout=0.25)
        self._script = self.redis.register_script(_BUCKET)
        self._warned_at = -math.inf
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0

    def check(self, client: str) -> None:
        """Take one request from ``client``'s bucket.

        Raises:
            ResourceExhausted: the bucket is empty; ``retry_after_s`` says when it has a token.
        """
        if not self.enabled:
            return
        try:
            allowed, wait_ms = self._script(keys=[f"{self.prefix}:{client}"],
                                            args=[self.rate_per_s, self.burst])
        except redis.RedisError as exc:
            self._warn(exc)
            return
        if not int(allowed):
            wait = int(wait_ms) / 1000
            raise ResourceExhausted(
                f"rate limit of {self.rate_per_s:g} requests/s (burst {self.burst}) reached for "
                f"this client; retry in {wait:.2f} s", retry_after_s=wait)

    def _warn(self, exc: Exception) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._warned_at < WARN_EVERY_S:
                return
            self._warned_at = now
        log.warning("rate limiter: Redis unreachable (%s); serving requests without a limit "
                    "until it is back", exc)

    def close(self) -> None:
        self.redis.close()
