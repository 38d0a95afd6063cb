"""The gateway's link to Milvus: a Milvus that accepts connections and never answers holds up
only the requests that need it, each no longer than its own deadline."""

from __future__ import annotations

import threading
import time

import pytest

from gateway.server import BUNDLE_PARTS
from gateway.service import MilvusLink
from pedsearch.bundle import default_bundle_path, load_bundle
from pedsearch.config import Settings
from pedsearch.errors import Unavailable


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(default_bundle_path(), parts=BUNDLE_PARTS)


def test_a_hung_milvus_holds_up_neither_the_encoders_nor_a_request_past_its_deadline(
        bundle, monkeypatch):
    release = threading.Event()
    connects: list[float] = []

    def hung_connect(cfg):  # Milvus accepts, and answers nothing
        connects.append(cfg.timeout_s)
        release.wait(30)
        raise Unavailable("cannot reach Milvus")

    monkeypatch.setattr("gateway.service.connect", hung_connect)
    link = MilvusLink(Settings(), bundle)
    first = threading.Thread(target=lambda: pytest.raises(Unavailable, link.searcher,
                                                          timeout_s=20.0), daemon=True)
    first.start()
    while not connects:  # the first request is connecting
        time.sleep(0.01)
    t0 = time.monotonic()
    assert link.encoder().bundle is bundle  # request checks and encoding need no Milvus
    with pytest.raises(Unavailable, match="did not answer within the request's deadline"):
        link.searcher(timeout_s=0.2)  # a second request waits its own deadline, no longer
    assert time.monotonic() - t0 < 5
    # one connect for both, with the configured timeout (pymilvus keeps it for reconnects)
    assert connects == [Settings().milvus.timeout_s]
    release.set()
    first.join(5)
    # the connect failed: the next request tries again
    release.clear()
    with pytest.raises(Unavailable, match="within the request's deadline"):
        link.searcher(timeout_s=0.2)
    assert len(connects) == 2
    release.set()
