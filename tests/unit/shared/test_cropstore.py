"""The crop store: a crop that is absent, in a folder's place or unreadable is a pedsearch error
naming its path (an escaped OSError would be INTERNAL in the gateway's GetDetection)."""

from __future__ import annotations

import pathlib

import grpc
import pytest

from gateway.status import code_for
from pedsearch.cropstore import CropStore
from pedsearch.errors import InvalidInput, NotFound, NotReady

REF = "gate-3/2027011508/42.jpg"


def test_round_trip_and_a_missing_crop(tmp_path):
    store = CropStore(tmp_path)
    assert store.get(store.put(REF, b"jpeg")) == b"jpeg" and store.exists(REF)
    with pytest.raises(NotFound, match="is not in the crop store"):
        store.get("gate-3/2027011508/43.jpg")


def test_a_folder_in_the_crops_place_is_not_found(tmp_path):
    (tmp_path / REF).mkdir(parents=True)
    with pytest.raises(NotFound, match="is a folder, not a crop file") as err:
        CropStore(tmp_path).get(REF)
    assert code_for(err.value) == grpc.StatusCode.NOT_FOUND


def test_an_unreadable_crop_is_failed_precondition_with_its_path(tmp_path, monkeypatch):
    store = CropStore(tmp_path)
    store.put(REF, b"jpeg")

    def denied(self):  # chmod does not stop root, who runs these tests in containers
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "read_bytes", denied)
    with pytest.raises(NotReady, match="Permission denied") as err:
        store.get(REF)
    assert str(tmp_path / REF) in err.value.message and "paths.crops_dir" in err.value.message
    assert code_for(err.value) == grpc.StatusCode.FAILED_PRECONDITION


def test_a_reference_with_a_trailing_newline_is_malformed(tmp_path):
    with pytest.raises(InvalidInput, match="malformed"):
        CropStore(tmp_path).get(REF + "\n")


@pytest.mark.parametrize("ref", ["../2026010100/7.jpg", "./2026010100/7.jpg",
                                 "..:x/2026010100/7.jpg", ".hidden/2026010100/7.jpg"])
def test_a_reference_cannot_leave_the_store(tmp_path, ref):
    """crop_ref comes from Milvus rows: '..' as the camera folder read and wrote files beside
    the store."""
    store = CropStore(tmp_path / "store")
    (tmp_path / "2026010100").mkdir()
    (tmp_path / "2026010100" / "7.jpg").write_bytes(b"secret")
    with pytest.raises(InvalidInput, match="malformed"):
        store.get(ref)
    with pytest.raises(InvalidInput, match="malformed"):
        store.put(ref, b"x")
