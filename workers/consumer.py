"""The consume -> detect -> track -> crop -> embed -> index loop, independent of Ray.

Delivery guarantee (no frame lost, no detection stored twice):

1. Frames are processed in partition order; each camera's detector/tracker/selector state lives
   in the state of the partition its frames arrive on (frames are keyed by camera id).
2. Crops are embedded and upserted into Milvus under deterministic ids, on a background writer
   (:class:`workers.writes.WriteQueue`) so that the writes overlap with decoding and detecting
   the next frames; batches are acknowledged in submission order, at most
   ``workers.max_inflight_batches`` in flight.
3. A checkpoint pickles the partitions' states (tracker, open track windows, next offset) at
   once, but saves them to Redis and commits ``next offset`` to Kafka only after Milvus
   acknowledged every batch submitted before the snapshot (crops of frames before that offset).
4. A restarted consumer restores that state and resumes at the saved offset. Replayed frames
   run through the same deterministic tracker and produce the same ids, so the upserts
   overwrite instead of duplicating.

Poison messages go to the dead-letter topic with the reason and their original
topic/partition/offset in headers, and count as processed. A record too large to forward whole
goes with a prefix of its bytes (or, if even that is refused, with its headers alone), so that
no record can stop its partition.
"""

from __future__ import annotations

import logging
import math
import pickle
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import (
    CommitFailedError, KafkaError, MessageSizeTooLargeError, RecordListTooLargeError,
)
from kafka.structs import OffsetAndMetadata

from pedsearch.config import Settings
from pedsearch.envelope import PoisonMessage, decode_frame
from pedsearch.errors import Unavailable

from workers.metrics import WorkerMetrics
from workers.pipeline import CameraPipeline, CropCandidate
from workers.writes import WriteQueue, WriteResult

log = logging.getLogger("pedsearch.workers")

STATE_KEY = "pedsearch:state:{group}:{topic}:{partition}"
STATE_FORMAT = 1
#: what a dead letter keeps of a record too large to forward whole: the envelope's small fields
#: (version, camera, seq, timestamp, size) come before the JPEG, so a prefix identifies it
DLQ_PREFIX_BYTES = 16 * 1024
#: the key of such a dead letter is cut to this (a camera id is at most 64 bytes)
DLQ_KEY_BYTES = 256
#: room the dead-letter producer leaves beside ``kafka.max_message_bytes`` for key and headers
DLQ_OVERHEAD_BYTES = 4096
_SIZE_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError)


class Sink(Protocol):
    """Embeds and stores crops: ``finish(start(crops))`` returns once Milvus acknowledged."""

    def start(self, crops: list[CropCandidate]) -> Any: ...

    def finish(self, handle: Any) -> int: ...


@dataclass
class _Checkpoint:
    """States pickled at one instant, saved and committed once batches <= ``seq`` are acked."""

    seq: int
    states: dict[TopicPartition, tuple[bytes, int]]


@dataclass
class PartitionState:
    """Per-partition processing state, snapshotted at every checkpoint."""

    next_offset: int | None = None
    cameras: dict[str, CameraPipeline] = field(default_factory=dict)
    #: where the consumer was sent on assignment (not saved): a first record below it means
    #: the broker reset the position, i.e. this snapshot is of an earlier life of the topic
    resumed_at: int | None = None

    def to_bytes(self) -> bytes:
        payload = {
            "format": STATE_FORMAT,
            "next_offset": self.next_offset,
            "cameras": {cid: cam.state_dict() for cid, cam in self.cameras.items()},
        }
        return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


FRESHNESS_SAMPLES = 20_000


@dataclass
class ConsumerStats:
    """Counters of one run, plus what benchmarks need (first/last frame times, freshness)."""

    frames: int = 0
    dead_letters: int = 0
    crops: int = 0
    commits: int = 0
    last_commit: float = 0.0
    first_frame_at: float | None = None  # wall clock when the first frame was handled
    last_frame_at: float | None = None  # wall clock when the last frame was handled
    last_write_at: float | None = None  # wall clock of the last Milvus acknowledgement
    # the crops of the frames, as opposed to those of the track windows still open when the
    # run ends (stored only then, after idle_exit_s without frames, unless tracking.idle_close_s
    # closed them first): the last acknowledgement of the former, and the write time
    # (submit -> ack) of the latter
    stream_write_at: float | None = None
    end_write_s: float = 0.0
    idle_closed: int = 0  # track windows closed early because their camera went quiet
    freshness_s: list[float] = field(default_factory=list)  # capture -> acked, first crops


class ConsumerLoop:
    """One member of the consumer group.

    Args:
        settings: the deployment configuration.
        sink: where finished crops go (embedding + Milvus + crop store), written behind the
            consume loop by a :class:`WriteQueue`.
        redis_client: holds the partition state snapshots and metric heartbeats.
        pipeline_factory: ``camera_id -> CameraPipeline`` (detector chosen per camera).
        worker_id: name in metrics and logs.
        checkpoint_interval_s: how often state is saved and offsets committed.
    """

    def __init__(
        self, *, settings: Settings, sink: Sink, redis_client,
        pipeline_factory: Callable[[str], CameraPipeline], worker_id: str = "worker-0",
        checkpoint_interval_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.kcfg = settings.kafka
        self.sink = sink
        self.redis = redis_client
        self.pipeline_factory = pipeline_factory
        self.worker_id = worker_id
        self.checkpoint_interval_s = checkpoint_interval_s
        self.metrics = WorkerMetrics(worker_id)
        self.stats = ConsumerStats()
        self.states: dict[TopicPartition, PartitionState] = {}
        self.pending: deque[CropCandidate] = deque()
        self.writes = WriteQueue(sink, max_inflight=settings.workers.max_inflight_batches)
        # the rebalance listener runs on kafka-python's IO thread: it and the consume loop
        # take turns on the pending crops, the write queue and the checkpoint
        self._lock = threading.RLock()
        self._ckpt: _Checkpoint | None = None  # snapshot waiting for its writes' acks
        self._written: OrderedDict[int, None] = OrderedDict()  # ids stored, for freshness
        self._last_flush = time.monotonic()
        self._last_ckpt = time.monotonic()
        self._last_beat = 0.0
        self._metrics_warned = -math.inf
        self._assign_error: BaseException | None = None  # restore failed in the listener
        # run() is ending on an error: batches it submitted may be lost, so closing the
        # consumer (which revokes the partitions) must not save states past them
        self._failed = False
        self._end_seq: int | None = None  # first write seq of the end-of-run window crops
        # (partition, camera) -> monotonic time of its last frame, for tracking.idle_close_s
        self._camera_seen: dict[tuple[TopicPartition, str], float] = {}
        self.consumer: KafkaConsumer | None = None
        self.dlq: KafkaProducer | None = None
        # dead letters the broker refused as too large (its limit for the dead-letter topic
        # can be below kafka.max_message_bytes): sent again with headers alone before the
        # checkpoint commits past them. Appended on kafka-python's IO thread.
        self._refused_letters: deque[tuple[bytes | None, list[tuple[str, bytes]], int]] = deque()

    # -- Kafka wiring ---------------------------------------------------------------------------
    def _connect(self) -> None:
        k = self.kcfg
        self.consumer = KafkaConsumer(
            bootstrap_servers=k.bootstrap_servers.split(","),
            group_id=k.consumer_group,
            client_id=self.worker_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=k.max_poll_records,
            max_poll_interval_ms=k.max_poll_interval_ms,
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=max(1000, k.session_timeout_ms // 3),
            fetch_max_bytes=max(k.max_message_bytes, 52428800),
            max_partition_fetch_bytes=k.max_message_bytes,
            request_timeout_ms=max(k.request_timeout_ms, k.session_timeout_ms + 5000),
        )
        self.consumer.subscribe([k.frames_topic], listener=_Rebalance(self))
        self.dlq = KafkaProducer(
            bootstrap_servers=k.bootstrap_servers.split(","), acks="all",
            max_request_size=k.max_message_bytes + DLQ_OVERHEAD_BYTES,
        )

    def close(self) -> None:
        self.writes.close()
        # a fresh queue (its thread starts on first use) if run() is called again
        self.writes = WriteQueue(self.sink, max_inflight=self.settings.workers.max_inflight_batches)
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False)
            except KafkaError:
                log.exception("closing the consumer")
        if self.dlq is not None:
            self.dlq.close(timeout=5)

    # -- state snapshots ------------------------------------------------------------------------
    def _state_key(self, tp: TopicPartition) -> str:
        return STATE_KEY.format(group=self.kcfg.consumer_group, topic=tp.topic,
                                partition=tp.partition)

    def restore(self, tp: TopicPartition) -> PartitionState:
        raw = self.redis.get(self._state_key(tp))
        state = PartitionState()
        if raw is None:
            return state
        payload = pickle.loads(raw)
        if payload.get("format") != STATE_FORMAT:
            log.warning("ignoring partition state of format %s for %s", payload.get("format"), tp)
            return state
        state.next_offset = payload["next_offset"]
        for cid, sd in payload["cameras"].items():
            cam = self.pipeline_factory(cid)
            cam.load_state_dict(sd)
            state.cameras[cid] = cam
        return state

    def on_assigned(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            try:
                state = self.restore(tp)
            except Exception as exc:  # noqa: BLE001 - raised again by run(), unwrapped
                # raised here, kafka-python would wrap it in a KafkaError that hides what it
                # was (a configuration error would look like a broker fault)
                self._assign_error = exc
                return
            self.states[tp] = state
            if state.next_offset is not None:
                # the snapshot is written before the commit, so it is never behind it; start
                # earlier if a stateful detector must re-learn from the frames before it
                replay = [c.replay_from for c in state.cameras.values()
                          if c.replay_from is not None]
                state.resumed_at = min([state.next_offset, *replay])
                self.consumer.seek(tp, state.resumed_at)
            log.info("%s: assigned %s (resume at %s)", self.worker_id, tp,
                     state.next_offset if state.next_offset is not None else "committed")
        self.metrics.assigned.set(len(self.states))
        self._publish_metrics()  # tell waiting tools at once, not at the next beat

    def on_revoked(self, partitions: list[TopicPartition]) -> None:
        # This runs on kafka-python's IO thread, where a blocking call into the consumer
        # (commit) is refused. The Redis snapshot is what a new owner resumes from (it is never
        # behind the committed offset), so writing the crops and saving the states suffices.
        with self._lock:
            self._revoke(partitions)

    def _revoke(self, partitions: list[TopicPartition]) -> None:
        if self._failed:
            log.info("%s: %s revoked after a failed run: their frames are replayed from the "
                     "last checkpoint", self.worker_id, ", ".join(map(str, partitions)))
            self._forget(partitions)
            return
        try:
            self.flush_crops()
            self._account(self.writes.drain())
            # a pending snapshot of these partitions is older than the one saved now: drop it so
            # it can never overwrite the newer state (which a new owner may already read)
            if self._ckpt is not None:
                for tp in partitions:
                    self._ckpt.states.pop(tp, None)
            self.save_states([tp for tp in partitions if tp in self.states])
        except Exception:  # noqa: BLE001 - the frames are replayed from the last snapshot
            log.exception("%s: saving state on revocation failed; frames will be replayed",
                          self.worker_id)
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.states.pop(tp, None)
        self._camera_seen = {k: v for k, v in self._camera_seen.items() if k[0] in self.states}
        self.metrics.assigned.set(len(self.states))

    # -- processing -----------------------------------------------------------------------------
    def handle(self, tp: TopicPartition, msg) -> None:
        t0 = time.perf_counter()
        state = self.states.setdefault(tp, PartitionState())
        if state.resumed_at is not None:
            if msg.offset < state.resumed_at:
                # the seek was out of range and the broker reset the position: the topic was
                # recreated (a new broker, a deleted topic), and skipping its records up to the
                # old offset as "already processed" would lose them without a word
                log.warning("%s: %s starts at offset %d, below the checkpoint's %d: the topic "
                            "was recreated since; its checkpoint is dropped and its frames "
                            "processed afresh", self.worker_id, tp, msg.offset, state.resumed_at)
                state = self.states[tp] = PartitionState()
            state.resumed_at = None
        if state.next_offset is not None and msg.offset < state.next_offset:
            self._rewarm(state, msg)  # before the checkpoint: already processed
            return
        try:
            decoded = decode_frame(msg.value, key=msg.key, require_key=True,
                                   max_bytes=self.kcfg.max_message_bytes)
            cam_id = decoded.camera_id
            if cam_id not in state.cameras:
                if (self.settings.camera(cam_id) is None
                        and self.settings.workers.unknown_cameras == "dead_letter"):
                    raise PoisonMessage(
                        "unknown_camera", f"camera {cam_id!r} is not in the configuration"
                    )
                state.cameras[cam_id] = self.pipeline_factory(cam_id)
            self.metrics.stage.labels("decode").observe(time.perf_counter() - t0)
            crops = state.cameras[cam_id].process(decoded, offset=msg.offset,
                                                  metrics=self.metrics)
            self.pending.extend(crops)
            self._camera_seen[(tp, cam_id)] = time.monotonic()
            self.stats.frames += 1
            self.stats.last_frame_at = time.time()
            if self.stats.first_frame_at is None:
                self.stats.first_frame_at = self.stats.last_frame_at
            self.metrics.frames.labels(cam_id).inc()
        except PoisonMessage as exc:
            self.dead_letter(msg, exc)
        state.next_offset = msg.offset + 1

    def _rewarm(self, state: PartitionState, msg) -> None:
        try:
            decoded = decode_frame(msg.value, key=msg.key, require_key=True,
                                   max_bytes=self.kcfg.max_message_bytes)
        except PoisonMessage:
            return  # it was dead-lettered the first time
        cam = state.cameras.get(decoded.camera_id)
        if cam is not None:
            cam.warm(decoded)

    def close_idle_windows(self) -> int:
        """Emit the open track windows of every camera quiet for ``tracking.idle_close_s``.

        A window closes on the stream time of its camera's next frame, so without this the
        best crops of a camera's last people would wait for the consumer to stop. The crops
        join :attr:`pending` like any other, so the next checkpoint writes them before it saves
        the state that no longer holds them. Returns how many windows were closed.
        """
        idle_s = self.settings.tracking.idle_close_s
        if idle_s <= 0:
            return 0
        closed = []
        with self._lock:
            for _tp, state, cam_id, cam in self._quiet_cameras(idle_s):
                if cam.has_open_windows():
                    crops = cam.close_windows()
                    self.pending.extend(crops)
                    closed.append((cam_id, len(crops)))
        for cam_id, n in closed:
            log.info("%s: camera %s sent nothing for %.0f s: stored its %d open track "
                     "window(s)", self.worker_id, cam_id, idle_s, n)
        n = sum(c for _, c in closed)
        self.stats.idle_closed += n
        return n

    def forget_quiet_cameras(self) -> list[str]:
        """Drop the pipelines of cameras quiet for ``tracking.forget_after_s`` whose windows
        are all stored (closed by :meth:`close_idle_windows` first).

        A camera taken off the network, renamed, or numbered per session would otherwise keep
        its detector's frames in memory and in every snapshot, and the seek back to its last
        frames (to re-warm the detector) would replay up to the whole retained partition at
        every restart. One that returns starts afresh: its track ids stay unique
        (:mod:`workers.tracking`). Returns the cameras forgotten.
        """
        forget_s = self.settings.tracking.forget_after_s
        if forget_s <= 0:
            return []
        gone = []
        with self._lock:
            for tp, state, cam_id, cam in self._quiet_cameras(forget_s):
                if not cam.has_open_windows():
                    del state.cameras[cam_id]
                    del self._camera_seen[(tp, cam_id)]
                    gone.append(cam_id)
        for cam_id in gone:
            log.info("%s: camera %s sent nothing for %.0f s: its tracker state is dropped (it "
                     "starts afresh if it comes back)", self.worker_id, cam_id, forget_s)
        return gone

    def _quiet_cameras(self, quiet_s: float
                       ) -> list[tuple[TopicPartition, PartitionState, str, CameraPipeline]]:
        """The cameras that sent no frame for ``quiet_s`` (wall clock), on partitions whose
        every frame is handled: a partition behind may have their frames waiting in Kafka,
        and a stall is not silence. Call with the lock held."""
        now = time.monotonic()
        quiet = []
        for tp, state in self.states.items():
            if not self._caught_up(tp, state):
                continue
            for cam_id, cam in state.cameras.items():
                # a camera restored from a snapshot counts as seen when first checked
                if now - self._camera_seen.setdefault((tp, cam_id), now) >= quiet_s:
                    quiet.append((tp, state, cam_id, cam))
        return quiet

    def _caught_up(self, tp: TopicPartition, state: PartitionState) -> bool:
        """Whether every frame of ``tp`` the broker had at the last fetch is handled."""
        if self.consumer is None or state.next_offset is None:
            return False
        try:
            high = self.consumer.highwater(tp)
        except KafkaError:  # IllegalStateError: the partition is being handed over
            return False
        return high is not None and state.next_offset >= high

    def dead_letter(self, msg, exc: PoisonMessage) -> None:
        """Send ``msg`` to the dead-letter topic; never raises because of its size.

        The original bytes go along unchanged so nothing is lost, unless the record is larger
        than ``kafka.max_message_bytes`` (a broker that accepts more than the workers do): the
        dead-letter producer would refuse it, the exception would escape :meth:`handle` before
        the offset moved on, and the worker would crash on the same record at every restart.
        Such a record goes with a prefix of its bytes and a ``pedsearch-truncated`` header
        holding its real size; the topic/partition/offset headers point at the original.
        """
        headers = [
            ("pedsearch-reason", exc.reason.encode()),
            ("pedsearch-error", exc.message.encode("utf-8", "replace")[:1000]),
            ("pedsearch-topic", msg.topic.encode()),
            ("pedsearch-partition", str(msg.partition).encode()),
            ("pedsearch-offset", str(msg.offset).encode()),
            ("pedsearch-worker", self.worker_id.encode()[:256]),
        ]
        key, value = msg.key, msg.value or b""
        size = len(value)
        if size + len(key or b"") > self.kcfg.max_message_bytes:
            headers.append(("pedsearch-truncated", str(size).encode()))
            key, value = _short_key(key), value[:DLQ_PREFIX_BYTES]
        try:
            future = self.dlq.send(self.kcfg.dlq_topic, key=key, value=value, headers=headers)
        except _SIZE_ERRORS:
            # not expected after the cut above; the headers alone always fit
            future = self.dlq.send(self.kcfg.dlq_topic, key=_short_key(key),
                                   value=b"", headers=_truncated(headers, size))
        future.add_errback(self._dead_letter_failed, msg, key, headers, size)
        self.stats.dead_letters += 1
        self.metrics.dead_letters.labels(exc.reason).inc()
        log.warning("%s: dead-lettered %s[%d]@%d: %s", self.worker_id, msg.topic, msg.partition,
                    msg.offset, exc.message)

    def _dead_letter_failed(self, msg, key: bytes | None, headers: list[tuple[str, bytes]],
                            size: int, error: BaseException) -> None:
        """Errback of a dead letter, on kafka-python's IO thread (where sending could block on
        the very buffer that thread frees): one the broker refused as too large is queued to go
        again with its headers alone; any other failure is logged."""
        if isinstance(error, _SIZE_ERRORS):
            self._refused_letters.append((_short_key(key), headers, size))
            return
        log.error("%s: dead letter of %s[%d]@%d not delivered: %s", self.worker_id, msg.topic,
                  msg.partition, msg.offset, error)

    def _flush_dead_letters(self) -> None:
        """Make the dead letters durable before their offsets commit; the ones the broker
        refused as too large go again with their headers alone."""
        self.dlq.flush(timeout=30)
        while self._refused_letters:
            key, headers, size = self._refused_letters.popleft()
            log.warning("%s: the broker refused a dead letter of %d bytes as too large; sending "
                        "its headers alone", self.worker_id, size)
            self.dlq.send(self.kcfg.dlq_topic, key=key, value=b"",
                          headers=_truncated(headers, size)).add_errback(self._headers_lost)
            self.dlq.flush(timeout=30)

    def _headers_lost(self, error: BaseException) -> None:
        log.error("%s: headers-only dead letter not delivered: %s", self.worker_id, error)

    def flush_crops(self) -> None:
        """Hand every pending crop to the writer (blocks only while too many are in flight)."""
        with self._lock:
            self._flush_crops()

    def _flush_crops(self) -> None:
        self._last_flush = time.monotonic()
        batch = self.settings.workers.milvus_batch
        while self.pending:
            crops = [self.pending.popleft() for _ in range(min(batch, len(self.pending)))]
            _, done = self.writes.submit(crops)
            self._account(done)

    def _account(self, results: list[WriteResult]) -> None:
        """Count acknowledged batches: metrics, stats, freshness of first-time crops."""
        for res in results:
            self.metrics.stage.labels("embed_index").observe(res.seconds)
            self.metrics.crops.inc(len(res.crops))
            self.stats.crops += len(res.crops)
            self.stats.last_write_at = max(self.stats.last_write_at or 0.0, res.acked_at)
            if self._end_seq is None or res.seq < self._end_seq:
                self.stats.stream_write_at = max(self.stats.stream_write_at or 0.0, res.acked_at)
            else:
                self.stats.end_write_s += res.seconds
            for c in res.crops:
                if c.id in self._written:  # a window's best replacing its early crop
                    continue
                self._written[c.id] = None
                if len(self._written) > 100_000:
                    self._written.popitem(last=False)
                age = max(0.0, res.acked_at - c.ts)
                self.metrics.freshness.observe(age)
                if len(self.stats.freshness_s) < FRESHNESS_SAMPLES:
                    self.stats.freshness_s.append(age)

    def save_states(self, partitions) -> dict[TopicPartition, OffsetAndMetadata]:
        """Snapshot the partitions' states to Redis now; returns the offsets to commit.

        Only valid once every crop of frames before each state's ``next_offset`` is acked.
        """
        offsets = {}
        for tp in partitions:
            state = self.states[tp]
            if state.next_offset is None:
                continue
            self.redis.set(self._state_key(tp), state.to_bytes())
            offsets[tp] = OffsetAndMetadata(state.next_offset, "", -1)
        return offsets

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        offsets = {tp: o for tp, o in offsets.items() if tp in self.states}
        if offsets and self.consumer is not None:
            try:
                self.consumer.commit(offsets)
            except CommitFailedError as exc:
                # a rebalance took the partitions between snapshot and commit: the new owner
                # resumes from the Redis snapshot (never behind this commit), nothing is lost
                log.warning("%s: commit refused after a rebalance (%s)", self.worker_id, exc)
                return
            self.stats.commits += 1
            self.stats.last_commit = time.time()
            self.metrics.commits.inc()

    def _complete_checkpoint(self, *, wait: bool) -> dict[TopicPartition, OffsetAndMetadata]:
        """Save the pending snapshot once its writes are acked (or wait for them).

        Returns the offsets to commit (empty while the writes are still in flight).
        """
        ck = self._ckpt
        if ck is None:
            return {}
        if self.writes.acked_through < ck.seq:
            if not wait:
                return {}
            self._account(self.writes.wait_through(ck.seq))
        self._flush_dead_letters()  # dead letters are durable before their offsets commit
        offsets = {}
        for tp, (raw, next_offset) in ck.states.items():
            if tp not in self.states:  # revoked meanwhile: its new owner has its state
                continue
            self.redis.set(self._state_key(tp), raw)
            offsets[tp] = OffsetAndMetadata(next_offset, "", -1)
        self._ckpt = None
        return offsets

    def checkpoint(self, force: bool = False) -> None:
        """Snapshot the partition states; save them and commit their offsets once acked.

        Regular checkpoints do not wait: the states are pickled now (with the crops of every
        frame handled so far handed to the writer) and saved + committed at a later call, when
        Milvus has acknowledged those crops. ``force`` writes everything and commits before it
        returns (end of work).
        """
        with self._lock:
            commits = self._checkpoint(force)
        # outside the lock: the commit needs kafka-python's IO thread, which takes the lock
        # when it runs the rebalance listener
        for offsets in commits:
            self._commit(offsets)

    def _checkpoint(self, force: bool) -> list[dict[TopicPartition, OffsetAndMetadata]]:
        self._account(self.writes.harvest())
        commits = [self._complete_checkpoint(wait=force)]
        if force:
            self.flush_crops()
            self._account(self.writes.drain())
            self._flush_dead_letters()
            commits.append(self.save_states(list(self.states)))
            self._last_ckpt = time.monotonic()
            return commits
        if self._ckpt is not None or (
                time.monotonic() - self._last_ckpt < self.checkpoint_interval_s):
            return commits
        self._last_ckpt = time.monotonic()
        self.flush_crops()
        states = {tp: (st.to_bytes(), st.next_offset) for tp, st in self.states.items()
                  if st.next_offset is not None}
        if states:
            self._ckpt = _Checkpoint(seq=self.writes.submitted - 1, states=states)
            commits.append(self._complete_checkpoint(wait=False))
        return commits

    def heartbeat(self) -> None:
        if time.monotonic() - self._last_beat < 2.0:
            return
        self._last_beat = time.monotonic()
        try:
            if self.consumer is not None and self.states:
                ends = self.consumer.end_offsets(list(self.states))
                lag = sum(max(0, ends[tp] - (s.next_offset or 0)) for tp, s in self.states.items())
                self.metrics.lag.set(lag)
        except KafkaError:
            pass
        self._publish_metrics()

    def _publish_metrics(self) -> None:
        """The heartbeat's Redis snapshot. Metrics only: a failure is a warning (at most one a
        minute); the next checkpoint, which needs Redis, stops the run if Redis is away."""
        try:
            self.metrics.publish(self.redis)
        except redis.RedisError as exc:
            if time.monotonic() - self._metrics_warned >= 60.0:
                self._metrics_warned = time.monotonic()
                log.warning("%s: cannot publish metrics to Redis (%s); `pedsearch status` "
                            "shows this worker again once Redis answers", self.worker_id, exc)

    def run(self, stop: threading.Event, *, idle_exit_s: float | None = None) -> ConsumerStats:
        """Consume until ``stop`` is set (or nothing arrived for ``idle_exit_s``)."""
        self._connect()
        self._end_seq = None
        self._assign_error = None
        self._failed = False
        last_msg = time.monotonic()
        join_grace = last_msg + 2 * (self.kcfg.max_poll_interval_ms
                                     + self.kcfg.session_timeout_ms) / 1000
        try:
            while not stop.is_set():
                batches = self.consumer.poll(timeout_ms=200,
                                             max_records=self.kcfg.max_poll_records)
                if self._assign_error is not None:  # before any of the partitions' frames
                    error = self._assign_error
                    if isinstance(error, redis.RedisError):
                        raise Unavailable(f"{self.worker_id}: cannot read the partitions' saved "
                                          f"state from Redis ({error})") from error
                    raise error
                for tp, msgs in batches.items():
                    for msg in msgs:
                        self.handle(tp, msg)
                joining = not self.states and time.monotonic() < join_grace
                if batches or joining:
                    # idle time counts once partitions are owned: a group's first join can
                    # take up to max_poll_interval_ms on the embedded broker
                    last_msg = time.monotonic()
                self.close_idle_windows()
                self.forget_quiet_cameras()
                if self.pending and (
                    len(self.pending) >= self.settings.workers.embed_batch
                    or time.monotonic() - self._last_flush >= self.settings.workers.flush_interval_s
                ):
                    self.flush_crops()
                self.checkpoint()
                self.heartbeat()
                if idle_exit_s is not None and time.monotonic() - last_msg > idle_exit_s:
                    break
            # end of work: close every open track window so its crop is stored, then commit
            self.flush_crops()
            self._end_seq = self.writes.submitted  # batches from here on hold the windows' crops
            for state in self.states.values():
                for cam in state.cameras.values():
                    self.pending.extend(cam.finish())
            self.checkpoint(force=True)
            self._publish_metrics()
        except BaseException:
            # the write queue is closed next, dropping what it still held: the states in
            # memory are ahead of what Milvus has, and only the last checkpoint is safe (a
            # snapshot still waiting for its writes' acks never will have them)
            self._failed = True
            self._ckpt = None
            raise
        finally:
            self.close()
        return self.stats


def _short_key(key: bytes | None) -> bytes | None:
    """The key a dead letter of a record too large to forward whole carries."""
    return key[:DLQ_KEY_BYTES] if key else key


def _truncated(headers: list[tuple[str, bytes]], size: int) -> list[tuple[str, bytes]]:
    """``headers`` of a dead letter sent without the original bytes (``size`` of them)."""
    return [h for h in headers if h[0] != "pedsearch-truncated"] + [
        ("pedsearch-truncated", str(size).encode())]


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: ConsumerLoop) -> None:
        self.loop = loop

    def on_partitions_revoked(self, revoked):
        self.loop.on_revoked(list(revoked))

    def on_partitions_assigned(self, assigned):
        self.loop.on_assigned(list(assigned))

