"""The caller's deadline as the service reads it (a stand-in context: pure logic)."""

from __future__ import annotations

import pytest

from gateway.service import Deadline
from gateway.status import DeadlineExceeded
from pedsearch.errors import Unavailable


class Ctx:
    def __init__(self, left):
        self.left = left

    def time_remaining(self):
        return self.left


def test_remaining():
    assert Deadline(Ctx(None)).remaining() is None
    assert Deadline(Ctx(1e9)).remaining() is None  # grpc's "no deadline"
    assert Deadline(Ctx(0.25)).remaining() == 0.25
    with pytest.raises(DeadlineExceeded, match="deadline passed"):
        Deadline(Ctx(0.0)).remaining()


def test_guard_blames_the_deadline_only_when_it_passed():
    exc = Unavailable("Milvus timed out")
    assert Deadline(Ctx(3.0)).guard(exc) is exc
    guarded = Deadline(Ctx(0.0)).guard(exc)
    assert isinstance(guarded, DeadlineExceeded) and "Milvus timed out" in guarded.message
