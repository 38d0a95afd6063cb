"""ConsumerLoop without Kafka: poison records of any size are dead-lettered and passed.

The dead-letter producer here applies kafka-python's own size check (its record estimate
against ``max_request_size``, raised by ``send``) and a broker's limit for the dead-letter
topic (a failed future), so what would stop a partition on a real cluster stops it here too.
"""

from __future__ import annotations

import numpy as np
import pytest
from kafka import TopicPartition
from kafka.errors import MessageSizeTooLargeError
from kafka.future import Future
from kafka.record.default_records import DefaultRecordBatchBuilder

from pedsearch.config import Settings
from pedsearch.envelope import make_frame
from workers.consumer import DLQ_OVERHEAD_BYTES, DLQ_PREFIX_BYTES, ConsumerLoop

TP = TopicPartition("frames", 0)


class Producer:
    """The dead-letter producer's size checks, without a broker."""

    def __init__(self, max_request_size: int, broker_limit: int | None = None) -> None:
        self.max_request_size = max_request_size
        self.broker_limit = broker_limit
        self.delivered: list[tuple[str, bytes | None, bytes, dict[str, bytes]]] = []
        self._inflight: list[tuple[Future, int, tuple]] = []

    def send(self, topic, key=None, value=None, headers=None):
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers or [])
        if size > self.max_request_size:
            raise MessageSizeTooLargeError(f"the message is {size} bytes")
        future = Future()
        self._inflight.append((future, size, (topic, key, value, dict(headers or []))))
        return future

    def flush(self, timeout=None):
        inflight, self._inflight = self._inflight, []
        for future, size, record in inflight:
            if self.broker_limit is not None and size > self.broker_limit:
                future.failure(MessageSizeTooLargeError("refused by the broker"))
            else:
                self.delivered.append(record)
                future.success(None)

    def close(self, timeout=None):
        pass


class Redis(dict):
    def set(self, key, value):
        self[key] = value


class Sink:
    def start(self, crops):
        return crops

    def finish(self, handle):
        return len(handle)


class Msg:
    def __init__(self, offset: int, value: bytes | None, key: bytes | None = b"cam") -> None:
        self.topic, self.partition, self.offset = TP.topic, TP.partition, offset
        self.value, self.key = value, key


def _loop(dlq: Producer) -> ConsumerLoop:
    settings = Settings()

    def no_pipeline(camera_id):
        raise AssertionError(f"a poison record reached the pipeline of {camera_id}")

    loop = ConsumerLoop(settings=settings, sink=Sink(), redis_client=Redis(),
                        pipeline_factory=no_pipeline)
    loop.dlq = dlq
    return loop


def _frame_bytes(camera_id: str = "cam") -> bytes:
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    return make_frame(camera_id=camera_id, seq=0, image=image).SerializeToString()


def test_a_record_over_the_size_limit_is_dead_lettered_truncated_and_passed():
    limit = Settings().kafka.max_message_bytes
    dlq = Producer(max_request_size=limit + DLQ_OVERHEAD_BYTES)
    loop = _loop(dlq)
    big = b"\x08\x01" + bytes(range(256)) * (5 * 1024 * 1024 // 256)  # 5 MiB, over 4 MiB
    loop.handle(TP, Msg(41, big))
    assert loop.states[TP].next_offset == 42, "the partition is stuck on the record"
    assert loop.stats.dead_letters == 1 and loop.stats.frames == 0
    loop.checkpoint(force=True)
    [(topic, key, value, headers)] = dlq.delivered
    assert topic == "frames.dlq" and key == b"cam"
    assert value == big[:DLQ_PREFIX_BYTES]
    assert headers["pedsearch-reason"] == b"too_large"
    assert headers["pedsearch-truncated"] == str(len(big)).encode()
    assert (headers["pedsearch-topic"], headers["pedsearch-partition"],
            headers["pedsearch-offset"]) == (b"frames", b"0", b"41")


def test_a_poison_record_within_the_limit_goes_whole():
    dlq = Producer(max_request_size=Settings().kafka.max_message_bytes + DLQ_OVERHEAD_BYTES)
    loop = _loop(dlq)
    loop.handle(TP, Msg(0, b"garbage"))
    loop.checkpoint(force=True)
    [(_, key, value, headers)] = dlq.delivered
    assert (key, value) == (b"cam", b"garbage")
    assert headers["pedsearch-reason"] == b"undecodable"
    assert "pedsearch-truncated" not in headers


def test_a_dead_letter_the_broker_refuses_as_too_large_goes_again_as_headers():
    # the broker's limit for the dead-letter topic is below kafka.max_message_bytes: the
    # producer accepts the record, the broker fails it when it arrives
    dlq = Producer(max_request_size=Settings().kafka.max_message_bytes + DLQ_OVERHEAD_BYTES,
                   broker_limit=64 * 1024)
    loop = _loop(dlq)
    poison = b"\xff" * (1 << 20)  # 1 MiB of garbage: undecodable
    loop.handle(TP, Msg(7, poison))
    assert loop.states[TP].next_offset == 8
    loop.checkpoint(force=True)  # the dead letters are flushed before the offsets commit
    [(_, key, value, headers)] = dlq.delivered
    assert key == b"cam" and value == b""
    assert headers["pedsearch-reason"] == b"undecodable"
    assert headers["pedsearch-truncated"] == str(len(poison)).encode()
    assert headers["pedsearch-offset"] == b"7"


@pytest.mark.parametrize("key", [None, b""])
def test_a_frame_without_a_key_is_dead_lettered(key):
    dlq = Producer(max_request_size=Settings().kafka.max_message_bytes + DLQ_OVERHEAD_BYTES)
    loop = _loop(dlq)
    frame = _frame_bytes()
    loop.handle(TP, Msg(3, frame, key=key))
    assert loop.states[TP].next_offset == 4 and loop.stats.frames == 0
    loop.checkpoint(force=True)
    [(_, _, value, headers)] = dlq.delivered
    assert headers["pedsearch-reason"] == b"missing_key"
    assert value == frame


def test_a_checkpoint_of_an_earlier_life_of_the_topic_is_dropped():
    """Resumed at the checkpoint's offset 1200, the broker hands out offset 0: the topic was
    recreated (a new broker); its records are processed, not skipped as already seen."""
    from workers.consumer import PartitionState

    dlq = Producer(max_request_size=Settings().kafka.max_message_bytes + DLQ_OVERHEAD_BYTES)
    loop = _loop(dlq)
    loop.states[TP] = PartitionState(next_offset=1200, resumed_at=1200)
    loop.handle(TP, Msg(0, b"garbage"))
    assert loop.states[TP].next_offset == 1 and loop.stats.dead_letters == 1


def test_records_replayed_below_the_checkpoint_are_not_processed_again():
    from workers.consumer import PartitionState

    dlq = Producer(max_request_size=Settings().kafka.max_message_bytes + DLQ_OVERHEAD_BYTES)
    loop = _loop(dlq)
    loop.states[TP] = PartitionState(next_offset=12, resumed_at=10)  # a replay from 10
    loop.handle(TP, Msg(10, b"garbage"))
    assert loop.states[TP].next_offset == 12 and loop.stats.dead_letters == 0
    assert loop.states[TP].resumed_at is None


def test_a_failed_run_saves_no_state_past_the_writes_it_lost():
    """Milvus fails a batch and run() ends on the error. Closing the consumer revokes its
    partitions (kafka-python calls the listener from ``close()``), after the write queue
    dropped what it held: the state saved then would claim frames whose crops were never
    written, and the restarted worker would skip them for good."""
    import threading
    from types import SimpleNamespace

    from pedsearch.errors import Unavailable
    from workers.consumer import PartitionState

    class MilvusAway(Sink):
        def finish(self, handle):
            raise Unavailable("Milvus did not answer")

    class Camera:  # a camera pipeline that finds one person in every frame
        replay_from = None

        def process(self, decoded, *, offset, metrics):
            return [SimpleNamespace(id=offset, ts=0.0)]

        def state_dict(self):
            return {}

        def has_open_windows(self):
            return False

    class Consumer:
        def __init__(self, loop):
            self.loop, self.polls = loop, 0

        def poll(self, timeout_ms, max_records):
            self.polls += 1
            if self.polls > 1:
                return {}
            self.loop.states[TP] = PartitionState()  # assigned, nothing saved before
            return {TP: [Msg(i, _frame_bytes()) for i in range(4)]}

        def highwater(self, tp):
            return 4

        def end_offsets(self, tps):
            return {tp: 4 for tp in tps}

        def close(self, autocommit=True):
            self.loop.on_revoked(list(self.loop.states))

    settings = Settings()
    settings.workers.embed_batch = 1  # every crop goes to the writer at once
    redis = Redis()
    loop = ConsumerLoop(settings=settings, sink=MilvusAway(), redis_client=redis,
                        pipeline_factory=lambda camera_id: Camera())

    def connect():
        loop.consumer = Consumer(loop)
        loop.dlq = Producer(max_request_size=settings.kafka.max_message_bytes)

    loop._connect = connect
    with pytest.raises(Unavailable, match="Milvus did not answer"):
        loop.run(threading.Event())
    assert loop.stats.frames == 4  # handled before the write failed
    assert not [k for k in redis if "state" in k], "a state was saved past the lost writes"
    assert not loop.states


def test_a_camera_quiet_for_forget_after_s_leaves_the_state_and_its_snapshot():
    """Its detector frames stayed in memory and in every snapshot, and a restart replayed the
    partition back to its last frame (to re-warm the detector) however long ago that was."""
    import pickle
    import time

    from workers.consumer import PartitionState

    class Camera:
        replay_from = 5  # where a restore would seek back to, to re-warm its detector

        def __init__(self, open_windows=False):
            self.open_windows = open_windows

        def has_open_windows(self):
            return self.open_windows

        def state_dict(self):
            return {}

    class Consumer:
        def highwater(self, tp):
            return 5_000_030

    loop = _loop(Producer(max_request_size=Settings().kafka.max_message_bytes))
    loop.consumer = Consumer()
    loop.states[TP] = PartitionState(next_offset=5_000_030, cameras={
        "gate-1": Camera(), "lobby-2": Camera(), "yard-3": Camera(open_windows=True)})
    now = time.monotonic()
    forget_s = loop.settings.tracking.forget_after_s
    loop._camera_seen = {(TP, "gate-1"): now - forget_s - 1, (TP, "lobby-2"): now - 1,
                         (TP, "yard-3"): now - forget_s - 1}
    assert loop.forget_quiet_cameras() == ["gate-1"]
    # lobby-2 is live; yard-3's windows are not stored yet (close_idle_windows does that first)
    assert set(loop.states[TP].cameras) == {"lobby-2", "yard-3"}
    assert set(pickle.loads(loop.states[TP].to_bytes())["cameras"]) == {"lobby-2", "yard-3"}
    loop.settings.tracking.forget_after_s = 0  # never
    loop._camera_seen[(TP, "lobby-2")] = now - 10**6
    assert loop.forget_quiet_cameras() == []
