"""Source limits: identities with enough images, the first identities, images per identity."""

from __future__ import annotations

import pathlib

import pytest

from training.config import PetaSource
from training.data import limit_records
from training.datasets import ImageRecord


def _records(counts: dict[str, int]) -> list[ImageRecord]:
    return [ImageRecord(path=pathlib.Path(f"{pid}-{i}.jpg"), pid=pid, source="peta")
            for pid, n in counts.items() for i in range(n)]


def test_min_images_drops_single_image_identities_before_the_caps():
    recs = _records({"a": 1, "b": 3, "c": 2, "d": 5})
    out = limit_records(recs, max_ids=2, max_images_per_id=2, min_images_per_id=2)
    # a (1 image) goes first; of b, c, d the first two by pid; each capped at 2 images
    assert [r.pid for r in out] == ["b", "b", "c", "c"]


def test_no_limits_keep_everything_in_order():
    recs = _records({"b": 2, "a": 1})
    assert limit_records(recs, max_ids=None, max_images_per_id=None) == recs


def test_min_images_is_validated_in_the_config():
    assert PetaSource(type="peta", min_images_per_id=2).min_images_per_id == 2
    with pytest.raises(ValueError, match="min_images_per_id"):
        PetaSource(type="peta", min_images_per_id=0)
