"""WriteQueue: ordered acknowledgements, the in-flight bound, failures surface to the caller."""

from __future__ import annotations

import threading

import pytest

from workers.writes import WriteQueue


class GatedSink:
    """A stand-in sink whose ``finish`` waits for a per-batch gate (pure ordering logic)."""

    def __init__(self) -> None:
        self.gates: dict[int, threading.Event] = {}
        self.started: list[int] = []
        self.finished: list[int] = []
        self.fail: set[int] = set()

    def start(self, crops):
        key = crops[0]
        self.started.append(key)
        self.gates.setdefault(key, threading.Event())
        return key

    def finish(self, key):
        self.gates[key].wait(10)
        if key in self.fail:
            raise RuntimeError(f"milvus refused batch {key}")
        self.finished.append(key)
        return 1


def open_all(sink: GatedSink) -> None:
    for gate in sink.gates.values():
        gate.set()


def test_batches_are_acknowledged_in_submission_order() -> None:
    sink = GatedSink()
    q = WriteQueue(sink, max_inflight=8)
    for i in range(5):
        seq, done = q.submit([i])
        assert seq == i and done == []
    assert sink.started == [0, 1, 2, 3, 4]  # every batch started at once (embedding overlaps)
    assert q.harvest() == [] and q.acked_through == -1
    open_all(sink)
    results = q.drain()
    assert [r.seq for r in results] == [0, 1, 2, 3, 4]
    assert sink.finished == [0, 1, 2, 3, 4]
    assert q.acked_through == 4 and len(q) == 0
    assert all(r.written == 1 and r.crops == [r.seq] for r in results)
    q.close()


def test_submit_blocks_beyond_max_inflight() -> None:
    sink = GatedSink()
    q = WriteQueue(sink, max_inflight=2)
    q.submit([0])
    q.submit([1])
    third: dict = {}
    t = threading.Thread(target=lambda: third.setdefault("r", q.submit([2])))
    t.start()
    t.join(0.3)
    assert t.is_alive(), "a third batch was accepted with two in flight"
    assert 2 not in sink.started
    sink.gates[0].set()
    t.join(10)
    seq, done = third["r"]
    assert seq == 2 and [r.seq for r in done] == [0]
    assert q.acked_through == 0
    open_all(sink)
    sink.gates[2].set()
    assert [r.seq for r in q.drain()] == [1, 2]
    q.close()


def test_wait_through_stops_at_the_requested_batch() -> None:
    sink = GatedSink()
    q = WriteQueue(sink, max_inflight=4)
    for i in range(3):
        q.submit([i])
    sink.gates[0].set()
    sink.gates[1].set()
    assert [r.seq for r in q.wait_through(1)] == [0, 1]
    assert q.acked_through == 1 and len(q) == 1
    sink.gates[2].set()
    assert [r.seq for r in q.drain()] == [2]
    q.close()


def test_a_failed_write_raises_and_is_not_acknowledged() -> None:
    sink = GatedSink()
    sink.fail.add(1)
    q = WriteQueue(sink, max_inflight=4)
    for i in range(3):
        q.submit([i])
    open_all(sink)
    with pytest.raises(RuntimeError, match="refused batch 1"):
        q.drain()
    assert q.acked_through == 0  # the checkpoint never passes the failed batch
    q.close()


def test_max_inflight_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_inflight"):
        WriteQueue(GatedSink(), max_inflight=0)
