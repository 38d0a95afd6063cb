"""Identity-disjoint splits and query/gallery splits: hand-made records, then real PETA."""

from __future__ import annotations

import collections
import pathlib
import random

import numpy as np
import pytest

from pedsearch.errors import InvalidInput
from training.datasets import ImageRecord, default_data_root
from training.datasets.peta import load_peta
from training.datasets.splits import (
    camera_codes,
    ignored_matches,
    pid_codes,
    query_gallery_split,
    split_by_identity,
    valid_matches,
)


def _rec(pid: str, n: int, camera: str | None = None, subset: str = "s") -> ImageRecord:
    return ImageRecord(path=pathlib.Path(f"/img/{pid}_{n}.jpg"), pid=pid, source="t",
                       subset=subset, camera=camera)


def _records() -> list[ImageRecord]:
    out = []
    for i in range(100):
        subset = "big" if i < 80 else "small"
        for k in range(1 + i % 3):
            out.append(_rec(f"p{i:03d}", k, camera=("a", "b", None)[k], subset=subset))
    return out


def _paths(records):
    return [str(r.path) for r in records]


def test_split_is_disjoint_complete_and_proportional():
    recs = _records()
    s = split_by_identity(recs, fractions=(0.6, 0.2, 0.2), seed=3)
    assert not s.pids("train") & s.pids("val")
    assert not s.pids("train") & s.pids("test") and not s.pids("val") & s.pids("test")
    assert sorted(_paths(s.train + s.val + s.test)) == sorted(_paths(recs))
    assert (len(s.pids("train")), len(s.pids("val")), len(s.pids("test"))) == (60, 20, 20)
    small = {r.pid for r in recs if r.subset == "small"}
    assert len(small & s.pids("train")) == 12  # stratified: 60 % of each subset


@pytest.mark.parametrize("fractions, sizes", [((0.7, 0.3, 0.0), (10, 5, 0)),
                                               ((1.0, 0.0, 0.0), (15, 0, 0))])
def test_a_split_without_a_test_share_holds_nobody_out_for_it(fractions, sizes):
    """15 identities at 70 / 30 / 0: rounding left one identity, which went to test."""
    recs = [_rec(f"p{i:02d}", 0) for i in range(15)]
    s = split_by_identity(recs, fractions=fractions, seed=0)
    assert (len(s.pids("train")), len(s.pids("val")), len(s.pids("test"))) == sizes


def test_split_is_deterministic_and_order_free():
    recs = _records()
    a = split_by_identity(recs, seed=7)
    shuffled = recs[:]
    random.Random(0).shuffle(shuffled)
    b = split_by_identity(shuffled, seed=7)
    assert a.pids("test") == b.pids("test") and a.pids("val") == b.pids("val")
    assert split_by_identity(recs, seed=8).pids("test") != a.pids("test")


def test_split_rejects_bad_fractions():
    with pytest.raises(InvalidInput):
        split_by_identity(_records(), fractions=(0.5, 0.5, 0.5))
    with pytest.raises(InvalidInput):
        split_by_identity(_records(), fractions=(1.2, -0.1, -0.1))


def test_query_gallery_rules():
    recs = [
        _rec("x", 0, "a"), _rec("x", 1, "b"),  # two cameras: a valid pair
        _rec("y", 0, "a"), _rec("y", 1, "a"),  # one camera only: no valid query
        _rec("z", 0), _rec("z", 1),  # cameras unknown: different images suffice
        _rec("w", 0, "a"),  # single image: distractor
    ]
    q = query_gallery_split(recs, seed=0)
    assert sorted(r.pid for r in q.query) == ["x", "z"]
    assert not set(_paths(q.query)) & set(_paths(q.gallery))
    assert sorted(_paths(q.query + q.gallery)) == sorted(_paths(recs))
    for query in q.query:
        assert valid_matches(query, q.gallery).any()
    assert len(query_gallery_split(recs, seed=0, distractors=False).gallery) == 2


def test_match_masks_and_codes():
    q = _rec("x", 0, "a")
    gallery = [_rec("x", 1, "a"), _rec("x", 2, "b"), _rec("x", 3), _rec("y", 0, "b")]
    assert valid_matches(q, gallery).tolist() == [False, True, True, False]
    assert ignored_matches(q, gallery).tolist() == [True, False, False, False]
    cams = camera_codes(gallery)
    assert cams[0] != cams[1] and cams[2] < 0 and cams[1] == cams[3]
    assert pid_codes(gallery).tolist() == [0, 0, 0, 1]


# -- real PETA -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def peta():
    root = default_data_root()
    if root is None or not (root / "peta").is_dir():
        pytest.skip("../shared/data not found: set PEDSEARCH_PATHS__DATA_ROOT")
    return load_peta(root)


@pytest.mark.needs_data
def test_peta_split_disjoint_and_deterministic(peta):
    a = split_by_identity(peta, seed=0)
    b = split_by_identity(peta, seed=0)
    assert _paths(a.test) == _paths(b.test) and _paths(a.train) == _paths(b.train)
    assert not a.pids("train") & a.pids("test") and not a.pids("val") & a.pids("test")
    assert not a.pids("train") & a.pids("val")
    assert len(a.train) + len(a.val) + len(a.test) == len(peta)
    for subset in ("TownCentre", "PRID", "GRID", "MIT", "i-LID"):  # every subset in every part
        for part in (a.train, a.val, a.test):
            assert any(r.subset == subset for r in part)


@pytest.mark.needs_data
def test_peta_query_gallery(peta):
    test = split_by_identity(peta, seed=0).test
    q = query_gallery_split(test, seed=0)
    assert q.query and not set(_paths(q.query)) & set(_paths(q.gallery))
    counts = collections.Counter(r.subset for r in q.query)
    assert "MIT" not in counts  # one image per MIT identity: distractors only
    assert set(counts) == {"TownCentre", "PRID", "GRID", "i-LID"}
    for query in q.query:
        partners = [g for g in q.gallery if g.pid == query.pid]
        assert partners
        if query.subset in ("PRID", "GRID"):
            assert all(g.camera != query.camera for g in partners)
    again = query_gallery_split(test, seed=0)
    assert _paths(again.query) == _paths(q.query)
    full = query_gallery_split(peta, seed=0)
    assert len(full.query) == 784  # identities with >= 2 images (and 2 cameras where known)
    assert np.unique(pid_codes(full.query)).size == 784
