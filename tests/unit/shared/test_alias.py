"""Reading the alias: only Milvus' "alias not found" means there is none."""

from __future__ import annotations

import pytest
from pymilvus.exceptions import MilvusException

from pedsearch.config import MilvusConfig
from pedsearch.errors import Unavailable
from pedsearch.schema import ALIAS_NOT_FOUND, DetectionCollections


class Client:
    def __init__(self, error: MilvusException | None = None, name: str = "detections_v1"):
        self.error, self.name = error, name

    def describe_alias(self, alias):
        if self.error is not None:
            raise self.error
        return {"collection_name": self.name}


def test_a_missing_alias_is_none_and_any_other_error_is_unavailable():
    """A timeout read as "no alias" made a roll-out move the alias without copying the history
    behind it, and unstage the version it left."""
    cfg = MilvusConfig()
    assert DetectionCollections(Client(), cfg).resolve_alias() == "detections_v1"
    missing = MilvusException(code=ALIAS_NOT_FOUND,
                              message="alias not found[database=default][alias=detections]")
    assert DetectionCollections(Client(missing), cfg).resolve_alias() is None
    busy = MilvusException(code=1, message="rpc deadline exceeded")
    with pytest.raises(Unavailable, match="did not say which collection the alias detections "
                                          r"points at \(rpc deadline exceeded\)"):
        DetectionCollections(Client(busy), cfg).resolve_alias()
