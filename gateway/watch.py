"""Standing queries: score every newly indexed detection of the live feed against a query.

A watch remembers the feed's tail when it starts, so only detections indexed from then on are
checked. Each new row of the bundle's model version that passes the camera/time filter and the
HARD attribute constraints is scored exactly as a search scores it (cosine of the embeddings, for a
text query blended with the attribute similarity of CMAAM's Eq. 19, plus the SOFT re-ranking
bonus) and yielded when the score reaches the threshold.

Duplicates: with early emission the indexer writes a window's first crop at once and overwrites
it (same id) with the window's best crop later. A watch yields an id at most once **unless a
later write of it scores higher** -- then it is yielded again with the better score and crop, so
a client keeps the best match per id by overwriting. The ids seen are remembered up to
:data:`SEEN_MAX` (oldest forgotten first), which bounds a long watch's memory.

The stream ends when the client cancels (checked at least every second), after ``max_matches``,
at the watch's duration, or when the server stops. The number of open watches is bounded
(:class:`WatchSlots`); each open watch holds one server thread.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import redis

from gateway.convert import FilterParams, row_hit
from gateway.metrics import WATCHES
from gateway.search import Constraint, Hit, TextQuery, passes_hard, soft_bonus
from gateway.status import ResourceExhausted
from pedsearch.attributes import AttributeSchema, latent_attribute_score
from pedsearch.errors import Unavailable
from pedsearch.live import LiveFeed

#: ids a watch remembers for de-duplication
SEEN_MAX = 100_000
#: longest a blocking feed read lasts: a cancelled or stopped watch ends within this
READ_BLOCK_S = 1.0


class WatchSlots:
    """At most ``limit`` watches at once; :meth:`acquire` refuses beyond that."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open = 0
        self._lock = threading.Lock()

    def acquire(self) -> Callable[[], None]:
        """Take a slot; returns its idempotent release function.

        Raises:
            ResourceExhausted: all slots are taken.
        """
        with self._lock:
            if self._open >= self.limit:
                raise ResourceExhausted(
                    f"this gateway serves at most {self.limit} Watch streams at once; retry "
                    "later or end another watch", retry_after_s=5.0)
            self._open += 1
            WATCHES.inc()
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if not released.is_set():
                    released.set()
                    self._open -= 1
                    WATCHES.dec()

        return release

    @property
    def open(self) -> int:
        with self._lock:
            return self._open


@dataclass
class Heartbeat:
    """Nothing matched for a while: ``scanned`` new detections were checked so far."""

    scanned: int
    server_ts_us: int = field(default_factory=lambda: int(time.time() * 1e6))


@dataclass
class WatchQuery:
    """A checked standing query.

    Attributes:
        vector: ``(D,)`` unit query embedding of ``model_version``, ``(A, D)`` alternatives
            (an attribute query's concepts: a detection scores its best), or a text query's
            :class:`~gateway.search.TextQuery`, scored as a search scores it (CMAAM Eq. 19
            with the query's weight).
        threshold: a detection matches when its score is at least this.
        filter: cameras and time.
        constraints: HARD ones filter, SOFT ones add to the score.
        max_matches: 0 = unbounded.
        duration_s: the watch ends after this.
        encode_other: ``encode_other(version)`` is the same query in another model version's
            space, or ``None`` while the gateway holds no bundle of it; asked at the first row
            of each other version (again at later rows while it answers ``None``), so a watch
            goes on matching when a roll-out moves the workers to a version the gateway loaded
            after the watch began.
        skip_tracks: ``(camera_id, track_id)`` pairs whose detections are never matches (the
            track an example image comes from).
    """

    vector: np.ndarray | TextQuery
    model_version: str
    threshold: float
    filter: FilterParams
    constraints: Sequence[Constraint]
    max_matches: int
    duration_s: float
    soft_weight: float
    encode_other: Callable[[str], np.ndarray | TextQuery | None] = lambda _version: None
    skip_tracks: frozenset[tuple[str, int]] = frozenset()


def _space(query: np.ndarray | TextQuery) -> tuple[np.ndarray, TextQuery | None]:
    """``(A, D)`` query vectors, and the text query that re-ranks them (None: no re-ranking)."""
    if isinstance(query, TextQuery):
        return (np.atleast_2d(np.asarray(query.vector, np.float32)),
                query if query.weight > 0 else None)
    return np.atleast_2d(np.asarray(query, np.float32)), None


def run_watch(query: WatchQuery, *, feed: LiveFeed, schema: AttributeSchema,
              is_active: Callable[[], bool], stopping: threading.Event,
              heartbeat_s: float) -> Iterator[Hit | Heartbeat]:
    """Yield matches (:class:`Hit`) and heartbeats until the watch ends.

    The first event is a heartbeat (``scanned == 0``): the watch is established and every
    detection indexed after it is checked.

    Raises:
        Unavailable: Redis (the feed) cannot be read, or the gateway is shutting down (the
            client then knows to start the watch again elsewhere, which a stream that simply
            ended would not tell it).
    """
    fields = schema.field_names()
    # version -> (A, D) query vectors and the text query re-ranking them
    spaces = {query.model_version: _space(query.vector)}
    try:
        cursor = feed.tail_id()
    except redis.RedisError as exc:
        raise Unavailable(f"the live feed in Redis cannot be read: {exc}") from exc
    end = time.monotonic() + query.duration_s
    seen: OrderedDict[int, float] = OrderedDict()
    scanned = matches = 0
    yield Heartbeat(scanned=0)
    last_event = time.monotonic()
    while not stopping.is_set() and is_active():
        now = time.monotonic()
        if now >= end:
            return
        wait = min(READ_BLOCK_S, end - now, max(0.001, last_event + heartbeat_s - now))
        try:
            entries = list(feed.read(cursor, block_ms=max(1, int(wait * 1000))))
        except redis.RedisError as exc:
            raise Unavailable(f"the live feed in Redis cannot be read: {exc}") from exc
        for entry in entries:
            cursor = entry.entry_id
            scanned += 1
            row = entry.row
            if (row.camera_id, int(row.track_id)) in query.skip_tracks:
                continue
            space = spaces.get(row.model_version)
            if space is None:
                other = query.encode_other(row.model_version)
                if other is not None:
                    space = spaces[row.model_version] = _space(other)
            vecs, text = space or (None, None)
            if vecs is None or len(row.embedding) != vecs.shape[1]:
                continue  # a model's space the query was not encoded in: scores mean nothing
            if not query.filter.admits(row.camera_id, int(row.ts_us)):
                continue
            probs = dict(zip(fields, (float(p) for p in row.attributes)))
            if not passes_hard(probs, query.constraints):
                continue
            score = float(np.max(vecs @ np.asarray(row.embedding, np.float32)))
            if text is not None:
                s_a = schema.attribute_space(np.asarray([row.attributes], np.float32))[0]
                score = latent_attribute_score(score, float(s_a @ text.attributes), text.weight)
            score += query.soft_weight * soft_bonus(probs, query.constraints)
            if score < query.threshold:
                continue
            prev = seen.get(row.id)
            if prev is not None and score <= prev:
                continue
            seen[row.id] = score
            seen.move_to_end(row.id)
            if len(seen) > SEEN_MAX:
                seen.popitem(last=False)
            yield row_hit(row, schema, score)
            last_event = time.monotonic()
            matches += 1
            if query.max_matches and matches >= query.max_matches:
                return
        if time.monotonic() - last_event >= heartbeat_s:
            yield Heartbeat(scanned=scanned)
            last_event = time.monotonic()
    if stopping.is_set():
        raise Unavailable("the gateway is shutting down; start the watch again (on another "
                          "gateway, or on this one once it is back)")
