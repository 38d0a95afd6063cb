"""``pedsearch eval --source``: keeping one data set's images of a split."""

from __future__ import annotations

import pathlib

import pytest

from pedsearch.errors import InvalidInput
from training.cli import only_source
from training.datasets import ImageRecord


def _rec(pid: str, source: str) -> ImageRecord:
    return ImageRecord(path=pathlib.Path(f"{pid}.jpg"), pid=pid, source=source)


def test_only_source_keeps_that_data_set_in_order():
    recs = [_rec("peta/a", "peta"), _rec("s1", "synthetic"), _rec("peta/b", "peta")]
    assert [r.pid for r in only_source(recs, "peta")] == ["peta/a", "peta/b"]
    assert [r.pid for r in only_source(recs, "PETA")] == ["peta/a", "peta/b"]


def test_only_source_names_the_sources_there_are():
    with pytest.raises(InvalidInput, match="comes from 'market1501'; their sources are peta, "
                                           "synthetic"):
        only_source([_rec("peta/a", "peta"), _rec("s1", "synthetic")], "market1501")
