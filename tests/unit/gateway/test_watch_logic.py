"""The standing-query loop on a stand-in feed (pure logic; the real Redis feed and workers are in
tests/integration/test_gateway.py)."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

from gateway.convert import FilterParams
from gateway.search import Constraint, Hit
from gateway.status import ResourceExhausted
from gateway.watch import Heartbeat, WatchQuery, WatchSlots, run_watch
from pedsearch.attributes import AttributeSchema
from pedsearch.errors import Unavailable
from pedsearch.live import LiveDetection
from pedsearch.schema import DetectionRow

SCHEMA = AttributeSchema.default()
HAT = SCHEMA.field_names().index("attr_hat_yes")
ENTRY = itertools.count(10)


class ListFeed:
    """Entries handed out in batches, one batch per read; empty reads wait ``block_ms``."""

    def __init__(self, batches):
        self.batches = list(batches)
        self.cursors = []

    def tail_id(self):
        return "5-0"

    def read(self, after, *, block_ms=1000, count=256):
        self.cursors.append(after)
        if self.batches:
            return iter(self.batches.pop(0))
        time.sleep(block_ms / 1000)
        return iter(())


def row(i, emb, *, cam="c1", ts=100, version="v1", hat=0.0):
    attrs = np.zeros(SCHEMA.dim, np.float32)
    attrs[HAT] = hat
    return LiveDetection(entry_id=f"{next(ENTRY)}-0", row=DetectionRow(
        id=i, camera_id=cam, ts_us=ts, track_id=1, frame_seq=1, box=(0, 0, 1, 1),
        det_score=1.0, crop_ref="r", model_version=version,
        embedding=np.asarray(emb, np.float32), attributes=attrs))


def query(**kw):
    base = dict(vector=np.array([1.0, 0.0], np.float32), model_version="v1", threshold=0.5,
                filter=FilterParams(), constraints=(), max_matches=0, duration_s=0.3,
                soft_weight=0.2)
    return WatchQuery(**{**base, **kw})


def events(q, feed, heartbeat_s=60.0, stopping=None):
    return list(run_watch(q, feed=feed, schema=SCHEMA, is_active=lambda: True,
                          stopping=stopping or threading.Event(), heartbeat_s=heartbeat_s))


def test_scores_filters_and_dedupes():
    first = next(ENTRY)
    feed = ListFeed([
        [row(1, [0.9, 0.1]), row(2, [0.1, 0.9]),             # 2 scores below the threshold
         row(3, [1.0, 0.0], version="v0"),                   # another model's space
         row(4, [1.0, 0.0], cam="c2"), row(5, [1.0, 0.0], ts=5)],
        [row(1, [0.9, 0.1]), row(1, [0.8, 0.2]),             # same / lower score: not again
         row(1, [1.0, 0.0])],                                # better crop: again
    ])
    out = events(query(filter=FilterParams(("c1",), 50, None)), feed)
    assert isinstance(out[0], Heartbeat) and out[0].scanned == 0
    hits = [e for e in out if isinstance(e, Hit)]
    assert [(h.id, round(h.score, 3)) for h in hits] == [(1, 0.9), (1, 1.0)]
    # each read resumes after the last entry read
    assert feed.cursors[:3] == ["5-0", f"{first + 5}-0", f"{first + 8}-0"]


def test_hard_and_soft_constraints():
    cs = (Constraint("hat", ("yes",), "hard", 0.5), Constraint("hat", ("yes",), "soft"))
    feed = ListFeed([[row(1, [0.6, 0.0], hat=0.4), row(2, [0.4, 0.0], hat=0.6)]])
    hits = [e for e in events(query(constraints=cs), feed) if isinstance(e, Hit)]
    assert [h.id for h in hits] == [2]
    assert hits[0].score == pytest.approx(0.4 + 0.2 * 0.6)


def test_max_matches_ends_the_stream():
    feed = ListFeed([[row(i, [1.0, 0.0]) for i in range(1, 6)]])
    out = events(query(max_matches=2, duration_s=30), feed)
    assert [e.id for e in out if isinstance(e, Hit)] == [1, 2]


def test_heartbeats_when_idle_and_stop():
    out = events(query(duration_s=0.35), ListFeed([]), heartbeat_s=0.1)
    beats = [e for e in out if isinstance(e, Heartbeat)]
    assert len(beats) >= 3 and all(b.scanned == 0 for b in beats)


def test_a_watch_ended_by_shutdown_says_so():
    # a stream that just ended would look like one whose duration ran out: the client would
    # not know to start it again
    stopping = threading.Event()
    stopping.set()
    gen = run_watch(query(duration_s=30), feed=ListFeed([]), schema=SCHEMA,
                    is_active=lambda: True, stopping=stopping, heartbeat_s=60.0)
    assert isinstance(next(gen), Heartbeat)
    with pytest.raises(Unavailable, match="shutting down"):
        next(gen)


def test_watch_slots():
    slots = WatchSlots(1)
    release = slots.acquire()
    with pytest.raises(ResourceExhausted, match="at most 1 Watch"):
        slots.acquire()
    release()
    release()  # idempotent: a callback and a finally may both call it
    assert slots.open == 0
    slots.acquire()
    assert slots.open == 1


def test_a_watch_matches_each_version_in_its_own_space():
    # a roll-out moves the workers from v1 to v2 while the watch runs: v2's rows are scored
    # with the query as v2 encoded it; rows of a version the gateway does not hold are skipped
    feed = ListFeed([[row(1, [1.0, 0.0]), row(2, [0.0, 1.0], version="v2"),
                      row(3, [1.0, 0.0], version="v2"), row(4, [0.0, 1.0], version="v9")]])
    asked = []

    def encode_other(version):
        asked.append(version)
        return np.array([0.0, 1.0], np.float32) if version == "v2" else None

    out = events(query(encode_other=encode_other), feed)
    assert [(h.id, h.model_version) for h in out if isinstance(h, Hit)] == [(1, "v1"), (2, "v2")]
    # v2 is encoded once and kept; v9 is asked again at each of its rows (it may be loaded yet)
    assert asked == ["v2", "v9"]


def test_a_watch_skips_the_tracks_it_is_told_to():
    # the example's own track (c1, 1) keeps matching while the person is in view: skipped;
    # the same track number on another camera is another track
    feed = ListFeed([[row(1, [1.0, 0.0]), row(2, [1.0, 0.0], cam="c2")]])
    out = events(query(skip_tracks=frozenset({("c1", 1)})), feed)
    assert [h.id for h in out if isinstance(h, Hit)] == [2]


def test_a_watch_picks_up_a_version_loaded_after_it_began():
    # the gateway loads v2 (a staged bundle) while the watch runs: the v2 row that arrives
    # before that is skipped, the one after it is matched in v2's space
    feed = ListFeed([[row(1, [0.0, 1.0], version="v2")], [row(2, [0.0, 1.0], version="v2")]])
    answers = iter([None, np.array([0.0, 1.0], np.float32)])  # not held yet, then held
    out = events(query(encode_other=lambda version: next(answers)), feed)
    assert [h.id for h in out if isinstance(h, Hit)] == [2]

def test_a_text_watch_scores_as_search_text_does():
    """(cosine + w * S_a) / (1 + w): a detection whose predicted attributes fit the caption's
    passes a threshold its cosine alone misses, and one that contradicts them falls below."""
    from gateway.search import TextQuery
    from pedsearch.attributes import latent_attribute_score

    no_hat = SCHEMA.field_names().index("attr_hat_no")

    def hat(p):  # uncertain everywhere (every logit 0) but the hat
        probs = np.full(SCHEMA.dim, 0.5, np.float32)
        probs[HAT], probs[no_hat] = p, 1 - p
        return probs

    text = TextQuery(np.array([1.0, 0.0], np.float32), SCHEMA.attribute_space(hat(0.9)[None])[0],
                     weight=1.0)
    fits, contradicts = row(1, [0.6, 0.8]), row(2, [0.6, 0.8])
    fits.row.attributes[:], contradicts.row.attributes[:] = hat(0.8), hat(0.1)
    out = events(query(vector=text, threshold=0.65, soft_weight=0.0),
                 ListFeed([[fits, contradicts]]))
    hits = [e for e in out if isinstance(e, Hit)]
    s_a = SCHEMA.attribute_space(np.stack([fits.row.attributes]))[0] @ text.attributes
    assert [h.id for h in hits] == [1]
    assert hits[0].score == pytest.approx(latent_attribute_score(0.6, float(s_a), 1.0))
    # weight 0: the cosine alone (0.6) is below the threshold for both
    cosine_only = TextQuery(text.vector, text.attributes, weight=0.0)
    out = events(query(vector=cosine_only, threshold=0.65, soft_weight=0.0),
                 ListFeed([[fits, contradicts]]))
    assert not [e for e in out if isinstance(e, Hit)]
