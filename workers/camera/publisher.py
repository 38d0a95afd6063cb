"""Publish frames from a source to Kafka as ``Frame`` envelopes keyed by camera id."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from kafka import KafkaProducer
from kafka.errors import KafkaError

from pedsearch.config import KafkaConfig
from pedsearch.envelope import make_frame
from pedsearch.errors import InvalidInput, Unavailable

from workers.camera.sources import SourceFrame

log = logging.getLogger("pedsearch.camera")


@dataclass
class PublishStats:
    sent: int = 0
    acked: int = 0
    failed: int = 0
    bytes: int = 0
    per_camera: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        return self.acked / max(1e-9, time.monotonic() - self.started)


def make_producer(cfg: KafkaConfig, **overrides) -> KafkaProducer:
    """A producer that waits for all in-sync replicas and keeps per-key order."""
    try:
        return KafkaProducer(
            bootstrap_servers=cfg.bootstrap_servers.split(","),
            acks="all",
            linger_ms=5,
            retries=5,
            max_in_flight_requests_per_connection=1,  # retries must not reorder a camera's frames
            max_request_size=cfg.max_message_bytes,
            request_timeout_ms=cfg.request_timeout_ms,
            **overrides,
        )
    except KafkaError as exc:
        raise Unavailable(
            f"no Kafka broker at {cfg.bootstrap_servers}; start the local stack with "
            "`pedsearch stack up` or set PEDSEARCH_KAFKA__BOOTSTRAP_SERVERS"
        ) from exc


class FramePublisher:
    """Encodes :class:`SourceFrame` s as envelopes and sends them, counting acks and failures.

    Args:
        producer: a connected ``KafkaProducer``.
        topic: the frames topic.
        jpeg_quality: JPEG quality of the envelope image.
        max_bytes: refuse (and count as failed) envelopes larger than this.
    """

    def __init__(self, *, producer: KafkaProducer, topic: str, jpeg_quality: int = 85,
                 max_bytes: int = 4 * 1024 * 1024) -> None:
        self.producer = producer
        self.topic = topic
        self.jpeg_quality = jpeg_quality
        self.max_bytes = max_bytes
        self.stats = PublishStats()
        self._seq: dict[str, int] = {}
        self._lock = threading.Lock()

    def publish(self, sf: SourceFrame) -> None:
        seq = self._seq.get(sf.camera_id, 0)
        self._seq[sf.camera_id] = seq + 1
        frame = make_frame(
            camera_id=sf.camera_id, seq=seq, image=sf.image, capture_ts_us=sf.capture_ts_us,
            quality=self.jpeg_quality, source=sf.source, truth=sf.truth,
        )
        payload = frame.SerializeToString()
        if len(payload) > self.max_bytes:
            raise InvalidInput(
                f"frame of camera {sf.camera_id} is {len(payload)} bytes, over the "
                f"{self.max_bytes}-byte limit: lower the resolution or JPEG quality, or raise "
                "kafka.max_message_bytes on producer, broker and consumer together"
            )
        fut = self.producer.send(self.topic, key=sf.camera_id.encode(), value=payload)
        self.stats.sent += 1
        self.stats.bytes += len(payload)
        fut.add_callback(self._on_ack, sf.camera_id)
        fut.add_errback(self._on_error, sf.camera_id)

    def _on_ack(self, camera_id: str, _metadata) -> None:
        with self._lock:
            self.stats.acked += 1
            self.stats.per_camera[camera_id] = self.stats.per_camera.get(camera_id, 0) + 1

    def _on_error(self, camera_id: str, exc: BaseException) -> None:
        with self._lock:
            self.stats.failed += 1
        log.error("camera %s: frame not delivered: %s", camera_id, exc)

    def flush(self, timeout: float | None = 30.0) -> None:
        try:
            self.producer.flush(timeout=timeout)
        except KafkaError as exc:
            raise Unavailable(f"could not deliver buffered frames: {exc}") from exc

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.producer.close(timeout=5)
