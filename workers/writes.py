"""Asynchronous, ordered, bounded crop writes: embedding + crop store + Milvus off the hot loop.

The consumer thread decodes and detects; the writes of finished crops run behind it so the two
overlap. :class:`WriteQueue` hands each batch to the sink's ``start`` at once (an embedder pool
starts embedding on its actors right away) and finishes it (``finish``: embeddings ready, crop
JPEGs stored, Milvus upsert acknowledged) on one background thread, in submission order.

Ordering is what the checkpoint invariant rests on: batch ``n`` is acknowledged only after
batches ``0..n-1`` were, so "every batch submitted before this checkpoint is acknowledged" is
one comparison (:attr:`WriteQueue.acked_through`). At most ``max_inflight`` batches are in
flight; :meth:`WriteQueue.submit` blocks on the oldest beyond that, so a slow Milvus slows
consumption instead of growing memory.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from workers.pipeline import CropCandidate


class AsyncSink(Protocol):
    """A sink whose write is split in a non-blocking start and a blocking finish."""

    def start(self, crops: list[CropCandidate]) -> Any: ...

    def finish(self, handle: Any) -> int: ...


@dataclass
class WriteResult:
    """One acknowledged batch.

    Attributes:
        seq: submission number (0, 1, ...).
        crops: the batch.
        written: rows Milvus acknowledged.
        acked_at: wall clock of the acknowledgement (freshness is measured to it).
        seconds: start -> acknowledgement of this batch.
    """

    seq: int
    crops: list[CropCandidate]
    written: int
    acked_at: float
    seconds: float


class WriteQueue:
    """Ordered background writer with a bound on batches in flight.

    Args:
        sink: has ``start(crops) -> handle`` (must not block long) and ``finish(handle) -> int``
            (returns once Milvus acknowledged).
        max_inflight: batches submitted but not yet harvested before ``submit`` blocks.
    """

    def __init__(self, sink: AsyncSink, *, max_inflight: int = 4) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be >= 1, got {max_inflight}")
        self.sink = sink
        self.max_inflight = max_inflight
        # one thread: batches are acknowledged in submission order (see module docstring)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crop-writer")
        self._inflight: deque[Future] = deque()
        self.submitted = 0  # batches handed over so far
        self.acked_through = -1  # every batch with seq <= this was acknowledged and harvested

    def __len__(self) -> int:
        return len(self._inflight)

    def _run(self, seq: int, crops: list[CropCandidate], handle: Any) -> WriteResult:
        t0 = time.perf_counter()
        written = self.sink.finish(handle)
        return WriteResult(seq, crops, written, time.time(), time.perf_counter() - t0)

    def submit(self, crops: list[CropCandidate]) -> tuple[int, list[WriteResult]]:
        """Queue one batch; returns its seq and the results harvested while making room.

        Blocks (backpressure) while ``max_inflight`` batches are outstanding. A failed write
        raises here or at the next harvest.
        """
        done: list[WriteResult] = []
        while len(self._inflight) >= self.max_inflight:
            done += self._pop(block=True)
        handle = self.sink.start(crops)
        seq = self.submitted
        self.submitted += 1
        self._inflight.append(self._pool.submit(self._run, seq, crops, handle))
        return seq, done

    def _pop(self, *, block: bool) -> list[WriteResult]:
        if not self._inflight or (not block and not self._inflight[0].done()):
            return []
        result = self._inflight[0].result()  # re-raises the write's exception
        self._inflight.popleft()
        self.acked_through = result.seq
        return [result]

    def harvest(self) -> list[WriteResult]:
        """The batches acknowledged so far, oldest first, without blocking."""
        out: list[WriteResult] = []
        while True:
            got = self._pop(block=False)
            if not got:
                return out
            out += got

    def wait_through(self, seq: int) -> list[WriteResult]:
        """Block until every batch up to ``seq`` is acknowledged; returns them."""
        out: list[WriteResult] = []
        while self.acked_through < seq and self._inflight:
            out += self._pop(block=True)
        return out

    def drain(self) -> list[WriteResult]:
        """Block until every submitted batch is acknowledged."""
        return self.wait_through(self.submitted - 1)

    def close(self) -> None:
        """Stop the writer thread; batches not yet started are dropped (they are replayed)."""
        for fut in self._inflight:
            fut.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
