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
from pedsearch.errors import Unavailable

from workers.camera.sources import SourceFrame

log = logging.getLogger("pedsearch.camera")


@dataclass
class PublishStats:
    sent: int = 0
    acked: int = 0
    failed: int = 0  # not delivered, or refused here (oversized)
    oversized: int = 0  # refused here: envelope over max_bytes
    bytes: int = 0
    per_camera: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        return self.acked / max(1e-9, time.monotonic() - self.started)


#: room beside ``kafka.max_message_bytes`` for the key and the record's framing
RECORD_OVERHEAD_BYTES = 4096


def make_producer(cfg: KafkaConfig, **overrides) -> KafkaProducer:
    """A producer that waits for all in-sync replicas and keeps per-key order."""
    try:
        return KafkaProducer(
            bootstrap_servers=cfg.bootstrap_servers.split(","),
            acks="all",
            linger_ms=5,
            retries=5,
            max_in_flight_requests_per_connection=1,  # retries must not reorder a camera's frames
            # the limit is the envelope's (what the workers accept); the producer's own check
            # also counts the key and the record's framing
            max_request_size=cfg.max_message_bytes + RECORD_OVERHEAD_BYTES,
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
        max_bytes: refuse (and count as failed) envelopes larger than this: the frame is
            skipped and the stream goes on, since one busy scene that compresses badly must
            not end a live camera. The first one is logged with what to change.
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
        self._size_warned = False

    def publish(self, sf: SourceFrame) -> bool:
        """Encode and send one frame; ``False`` if it was refused as oversized (skipped).

        A skipped frame leaves a gap in the camera's ``seq``, which the workers count as a
        frame without detections.
        """
        seq = self._seq.get(sf.camera_id, 0)
        self._seq[sf.camera_id] = seq + 1
        frame = make_frame(
            camera_id=sf.camera_id, seq=seq, image=sf.image, capture_ts_us=sf.capture_ts_us,
            quality=self.jpeg_quality, source=sf.source, truth=sf.truth,
        )
        payload = frame.SerializeToString()
        if len(payload) > self.max_bytes:
            with self._lock:
                self.stats.failed += 1
                self.stats.oversized += 1
            if not self._size_warned:  # once: at 25 fps a message per frame would flood the log
                self._size_warned = True
                log.warning(
                    "camera %s: skipped a frame of %d bytes, over the %d-byte limit (further "
                    "ones are only counted as failed): lower --jpeg-quality or the resolution, "
                    "or raise kafka.max_message_bytes on producer, broker and consumer together",
                    sf.camera_id, len(payload), self.max_bytes)
            return False
        fut = self.producer.send(self.topic, key=sf.camera_id.encode(), value=payload)
        self.stats.sent += 1
        self.stats.bytes += len(payload)
        fut.add_callback(self._on_ack, sf.camera_id)
        fut.add_errback(self._on_error, sf.camera_id)
        return True

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
