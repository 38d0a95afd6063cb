"""Prometheus metrics of the ingest path, and their heartbeat snapshots in Redis.

Each worker process keeps its own ``CollectorRegistry``. Every few seconds it writes a JSON
snapshot of it to Redis (``pedsearch:metrics:<worker>``, expiring after ``HEARTBEAT_TTL_S``, so
a dead worker disappears); ``pedsearch status`` and the driver's Prometheus endpoint read the
snapshots of all workers, wherever in the Ray cluster they run.
"""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

KEY_PREFIX = "pedsearch:metrics:"
HEARTBEAT_TTL_S = 30
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
FRESHNESS_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 12, 20, 30, 60)


class WorkerMetrics:
    """The metrics one consumer worker updates.

    Args:
        worker_id: name of the worker, a label on the snapshot.
    """

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter("pedsearch_frames", "frames consumed", ["camera"], registry=r)
        self.detections = Counter("pedsearch_detections", "person boxes detected", registry=r)
        self.crops = Counter("pedsearch_crops_embedded", "crops embedded", registry=r)
        self.writes = Counter("pedsearch_rows_written", "rows upserted into Milvus", registry=r)
        self.dead_letters = Counter(
            "pedsearch_dead_letters", "messages sent to the dead-letter topic", ["reason"],
            registry=r,
        )
        self.commits = Counter("pedsearch_offset_commits", "Kafka offset commits", registry=r)
        self.lag = Gauge("pedsearch_consumer_lag", "messages behind the log end", registry=r)
        self.assigned = Gauge("pedsearch_assigned_partitions", "partitions owned", registry=r)
        self.stage = Histogram(
            "pedsearch_stage_seconds", "latency per stage", ["stage"], buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.freshness = Histogram(
            "pedsearch_freshness_seconds", "capture -> searchable", buckets=FRESHNESS_BUCKETS,
            registry=r,
        )

    def snapshot(self) -> dict[str, Any]:
        """Plain values: ``{"worker", "ts", "samples": {name{labels}: value}}``."""
        samples: dict[str, float] = {}
        for family in self.registry.collect():
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}"] = float(s.value)
        return {"worker": self.worker_id, "ts": time.time(), "samples": samples}

    def publish(self, redis_client) -> None:
        redis_client.set(KEY_PREFIX + self.worker_id, json.dumps(self.snapshot()),
                         ex=HEARTBEAT_TTL_S)


def read_snapshots(redis_client) -> list[dict[str, Any]]:
    """Every live worker's latest snapshot."""
    keys = sorted(redis_client.scan_iter(match=KEY_PREFIX + "*"))
    out = []
    for raw in redis_client.mget(keys) if keys else []:
        if raw:
            out.append(json.loads(raw))
    return out


def total(snapshots: list[dict[str, Any]], name: str, **labels: str) -> float:
    """Sum of sample ``name`` over workers (and over label values not given)."""
    want = [f"{k}={v}" for k, v in labels.items()]
    acc = 0.0
    for snap in snapshots:
        for key, value in snap["samples"].items():
            base, _, rest = key.partition("{")
            if base == name and all(w in rest.rstrip("}").split(",") for w in want):
                acc += value
    return acc


def histogram_quantile(snapshots: list[dict[str, Any]], name: str, q: float,
                       **labels: str) -> float | None:
    """Estimate quantile ``q`` of histogram ``name`` from its summed buckets (upper bound)."""
    buckets: dict[float, float] = {}
    want = [f"{k}={v}" for k, v in labels.items()]
    for snap in snapshots:
        for key, value in snap["samples"].items():
            base, _, rest = key.partition("{")
            if base != f"{name}_bucket":
                continue
            parts = rest.rstrip("}").split(",")
            if not all(w in parts for w in want):
                continue
            le = next(p.split("=", 1)[1] for p in parts if p.startswith("le="))
            bound = float("inf") if le in ("+Inf", "inf") else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + value
    if not buckets:
        return None
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count <= 0:
        return None
    for b in bounds:
        if buckets[b] >= q * count:
            return b
    return bounds[-1]


class SnapshotCollector:
    """Prometheus collector serving every live worker's latest Redis snapshot.

    Each sample keeps its name and labels and gains a ``worker`` label, so PromQL sums and
    ``histogram_quantile`` over ``*_bucket`` work as they would on the workers themselves.
    """

    def __init__(self, redis_client) -> None:
        self.redis = redis_client

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        families: dict[str, GaugeMetricFamily] = {}
        for snap in read_snapshots(self.redis):
            for key, value in snap["samples"].items():
                name, _, rest = key.partition("{")
                labels = dict(p.split("=", 1) for p in rest.rstrip("}").split(",") if p)
                labels["worker"] = snap["worker"]
                fam = families.get(name)
                if fam is None:
                    fam = families[name] = GaugeMetricFamily(
                        name, f"{name} per worker (from its Redis snapshot)",
                        labels=sorted(labels))
                fam.add_metric([labels.get(k, "") for k in fam._labelnames], value)
        yield from families.values()


def serve_metrics(redis_client, port: int, host: str = "127.0.0.1"):
    """Serve :class:`SnapshotCollector` on ``http://host:port/metrics``; returns the server."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    registry.register(SnapshotCollector(redis_client))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
