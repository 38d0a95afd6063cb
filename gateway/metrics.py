"""Query-side Prometheus metrics of the gateway.

- ``pedsearch_gateway_request_seconds{method}``: latency histogram per RPC (for ``Watch``, the
  stream's whole life);
- ``pedsearch_gateway_requests_total{method, code}``: finished RPCs by status code (``OK``,
  ``INVALID_ARGUMENT``, ...), so error rates per code are one query away;
- ``pedsearch_gateway_watches``: Watch streams open now;
- ``pedsearch_gateway_model_versions{version}``: 1 for each model version the gateway holds
  (its own bundles and those a roll-out staged), so a dashboard shows a roll-out reaching every
  replica.

The metrics live in one process-wide registry (several servers in one process, as in the tests,
share it). ``pedsearch gateway serve --metrics-port`` exposes them over HTTP.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

LATENCY = Histogram(
    "pedsearch_gateway_request_seconds", "Latency of gateway RPCs", ["method"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 60.0, 600.0),
)
REQUESTS = Counter(
    "pedsearch_gateway_requests", "Finished gateway RPCs by status code", ["method", "code"],
)
WATCHES = Gauge("pedsearch_gateway_watches", "Watch streams open now")
VERSIONS = Gauge("pedsearch_gateway_model_versions", "Model versions the gateway holds (1 each)",
                 ["version"])


_held: set[str] = set()


def held_versions(versions) -> None:
    """Set :data:`VERSIONS` to exactly ``versions`` (a version dropped leaves the metric)."""
    now = set(versions)
    for version in _held - now:
        VERSIONS.remove(version)
    for version in now - _held:
        VERSIONS.labels(version).set(1)
    _held.clear()
    _held.update(now)


def observe(method: str, code: str, seconds: float) -> None:
    """Record one finished RPC."""
    LATENCY.labels(method).observe(seconds)
    REQUESTS.labels(method, code).inc()


def serve_metrics(port: int, addr: str = "127.0.0.1"):
    """Start the HTTP ``/metrics`` endpoint; returns ``(server, thread)``."""
    return start_http_server(port, addr=addr, registry=REGISTRY)
